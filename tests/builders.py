"""Build real, installable wheels and sdists: the one builder of tests, bench/ and e2e.

Stdlib only (no pytest, no pypid import), so a script run by path can use it too:
put the repo root on ``sys.path`` and ``from tests.builders import make_wheel``.

The output is deterministic: the same arguments give the same bytes (fixed zip and tar
timestamps, sorted entries, gzip header without name or time).

Sdists carry an in-tree PEP 517 backend (``_inbackend.py``, ``requires = []``,
``backend-path = ["."]``), so pip and uv build them with build isolation and no network.
"""

from __future__ import annotations

import base64
import gzip
import hashlib
import io
import re
import tarfile
import zipfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

__all__ = [
    "BACKEND_SOURCE", "make_sdist", "make_wheel", "normalize", "sdist_bytes", "wheel_bytes",
    "wheel_name_part",
]

# 2020-01-01T00:00:00Z, for every archive member.
ZIP_DATE_TIME = (2020, 1, 1, 0, 0, 0)
TAR_MTIME = 1577836800


def normalize(name: str) -> str:
    """PEP 503 normalized project name (``Foo_Bar.baz`` -> ``foo-bar-baz``)."""
    return re.sub(r"[-_.]+", "-", name).lower()


def wheel_name_part(name: str) -> str:
    """The name as wheel and sdist filenames spell it (``Foo-Bar`` -> ``foo_bar``)."""
    return re.sub(r"[-_.]+", "_", name).lower()


def _metadata(
    name: str, version: str, requires_python: str | None, requires_dist: Sequence[str],
    description: tuple[str, str] | None = None,
) -> str:
    lines = [
        "Metadata-Version: 2.1",
        f"Name: {name}",
        f"Version: {version}",
        f"Summary: Test distribution {name} {version}",
    ]
    if requires_python is not None:
        lines.append(f"Requires-Python: {requires_python}")
    lines += [f"Requires-Dist: {req}" for req in requires_dist]
    if description is not None:  # (content type, README): the body, as Metadata 2.1 has it
        lines.append(f"Description-Content-Type: {description[0]}")
        return "\n".join(lines) + "\n\n" + description[1]
    return "\n".join(lines) + "\n\n"


def _module_source(name: str, version: str) -> str:
    return f'"""Test module of {name}."""\n\n__version__ = "{version}"\n'


def _record_hash(data: bytes) -> str:
    digest = base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=")
    return "sha256=" + digest.decode("ascii")


def _zip_bytes(members: dict[str, bytes], stored: frozenset[str] = frozenset()) -> bytes:
    """A zip of members in insertion order (RECORD stays last); ``stored`` ones uncompressed."""
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as zf:
        for arcname, data in members.items():
            info = zipfile.ZipInfo(arcname, date_time=ZIP_DATE_TIME)
            info.external_attr = 0o644 << 16
            info.compress_type = zipfile.ZIP_STORED if arcname in stored else zipfile.ZIP_DEFLATED
            zf.writestr(info, data)
    return buf.getvalue()


def _tar_gz_bytes(members: dict[str, bytes]) -> bytes:
    raw = io.BytesIO()
    with tarfile.open(fileobj=raw, mode="w", format=tarfile.PAX_FORMAT) as tf:
        for arcname in sorted(members):
            data = members[arcname]
            info = tarfile.TarInfo(arcname)
            info.size = len(data)
            info.mtime = TAR_MTIME
            info.mode = 0o644
            info.uid = info.gid = 0
            info.uname = info.gname = ""
            tf.addfile(info, io.BytesIO(data))
    out = io.BytesIO()
    with gzip.GzipFile(filename="", mode="wb", fileobj=out, mtime=0) as gz:
        gz.write(raw.getvalue())
    return out.getvalue()


def _expand_tags(tag: str) -> list[str]:
    py, abi, plat = tag.split("-")
    return [f"{p}-{a}-{s}" for p in py.split(".") for a in abi.split(".") for s in plat.split(".")]


def wheel_bytes(
    name: str,
    version: str,
    *,
    requires_python: str | None = None,
    requires_dist: Sequence[str] = (),
    payload: bytes | None = None,
    tag: str = "py3-none-any",
    module_source: str | None = None,
    description: tuple[str, str] | None = None,
) -> tuple[str, bytes]:
    """``(filename, bytes)`` of the wheel make_wheel writes, for callers that write their own.

    The payload is stored, not deflated: it is meant to be bulk (often random) bytes, and
    deflating megabytes of them only costs time.
    """
    part = wheel_name_part(name)
    dist_info = f"{part}-{version}.dist-info"
    wheel_text = "Wheel-Version: 1.0\nGenerator: pypid-tests-builders\nRoot-Is-Purelib: true\n"
    wheel_text += "".join(f"Tag: {t}\n" for t in _expand_tags(tag))
    source = _module_source(name, version) if module_source is None else module_source
    members: dict[str, bytes] = {f"{part}/__init__.py": source.encode()}
    if payload is not None:
        members[f"{part}/payload.bin"] = payload
    members[f"{dist_info}/METADATA"] = _metadata(
        name, version, requires_python, requires_dist, description
    ).encode("utf-8")
    members[f"{dist_info}/WHEEL"] = wheel_text.encode()
    record = "".join(f"{n},{_record_hash(d)},{len(d)}\n" for n, d in members.items())
    record += f"{dist_info}/RECORD,,\n"
    members[f"{dist_info}/RECORD"] = record.encode()
    data = _zip_bytes(members, stored=frozenset({f"{part}/payload.bin"}))
    return f"{part}-{version}-{tag}.whl", data


def make_wheel(dest_dir: Path, name: str, version: str, **options: Any) -> Path:
    """Write ``<name_part>-<version>-<tag>.whl`` into dest_dir and return its path.

    ``options`` are wheel_bytes's. The wheel holds ``<import_name>/__init__.py``
    (``module_source``, by default one that sets ``__version__``),
    ``<import_name>/payload.bin`` when payload is given, and a dist-info with METADATA,
    WHEEL and a RECORD of real hashes.
    """
    return _write(Path(dest_dir), *wheel_bytes(name, version, **options))


def _write(dest_dir: Path, filename: str, data: bytes) -> Path:
    dest_dir.mkdir(parents=True, exist_ok=True)
    path = dest_dir / filename
    path.write_bytes(data)
    return path


# The in-tree build backend shipped inside every sdist. It reads PKG-INFO and packages the
# ``<import_name>/`` folder with zipfile; stdlib only, so ``requires = []`` is enough.
BACKEND_SOURCE = '''\
"""Minimal in-tree PEP 517 backend (written by pypid's tests/builders.py)."""

import base64
import hashlib
import io
import os
import re
import tarfile
import zipfile
from email.parser import HeaderParser

_DATE_TIME = (2020, 1, 1, 0, 0, 0)


def _pkg_info():
    with open("PKG-INFO", encoding="utf-8") as f:
        text = f.read()
    msg = HeaderParser().parsestr(text)
    part = re.sub(r"[-_.]+", "_", msg["Name"]).lower()
    return text, part, msg["Version"]


def _module_files(part):
    out = {}
    for root, dirs, files in os.walk(part):
        dirs.sort()
        for fn in sorted(files):
            if fn.endswith((".pyc", ".pyo")):
                continue
            path = os.path.join(root, fn)
            with open(path, "rb") as f:
                out[path.replace(os.sep, "/")] = f.read()
    return out


def _dist_info_files(text, part, version):
    wheel = "Wheel-Version: 1.0\\nGenerator: _inbackend\\nRoot-Is-Purelib: true\\n"
    wheel += "Tag: py3-none-any\\n"
    di = "%s-%s.dist-info" % (part, version)
    return di, {di + "/METADATA": text.encode("utf-8"), di + "/WHEEL": wheel.encode()}


def get_requires_for_build_wheel(config_settings=None):
    return []


def get_requires_for_build_sdist(config_settings=None):
    return []


def prepare_metadata_for_build_wheel(metadata_directory, config_settings=None):
    text, part, version = _pkg_info()
    di, files = _dist_info_files(text, part, version)
    for name, data in files.items():
        path = os.path.join(metadata_directory, name)
        os.makedirs(os.path.dirname(path), exist_ok=True)
        with open(path, "wb") as f:
            f.write(data)
    return di


def build_wheel(wheel_directory, config_settings=None, metadata_directory=None):
    text, part, version = _pkg_info()
    di, meta = _dist_info_files(text, part, version)
    members = _module_files(part)
    members.update(meta)
    record = ""
    for name, data in members.items():
        digest = base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=")
        record += "%s,sha256=%s,%d\\n" % (name, digest.decode(), len(data))
    record += di + "/RECORD,,\\n"
    members[di + "/RECORD"] = record.encode()
    filename = "%s-%s-py3-none-any.whl" % (part, version)
    with zipfile.ZipFile(os.path.join(wheel_directory, filename), "w", zipfile.ZIP_DEFLATED) as zf:
        for name, data in members.items():
            info = zipfile.ZipInfo(name, date_time=_DATE_TIME)
            info.external_attr = 0o644 << 16
            info.compress_type = zipfile.ZIP_DEFLATED
            zf.writestr(info, data)
    return filename


def build_sdist(sdist_directory, config_settings=None):
    text, part, version = _pkg_info()
    base = "%s-%s" % (part, version)
    members = _module_files(part)
    for fn in ("PKG-INFO", "pyproject.toml", "_inbackend.py"):
        with open(fn, "rb") as f:
            members[fn] = f.read()
    filename = base + ".tar.gz"
    with tarfile.open(os.path.join(sdist_directory, filename), "w:gz") as tf:
        for name in sorted(members):
            info = tarfile.TarInfo(base + "/" + name)
            info.size = len(members[name])
            info.mode = 0o644
            tf.addfile(info, io.BytesIO(members[name]))
    return filename
'''

PYPROJECT = """\
[build-system]
requires = []
build-backend = "_inbackend"
backend-path = ["."]
"""


def sdist_bytes(
    name: str,
    version: str,
    *,
    requires_python: str | None = None,
    requires_dist: Sequence[str] = (),
    fmt: str = "tar.gz",
) -> tuple[str, bytes]:
    """``(filename, bytes)`` of the sdist make_sdist writes."""
    if fmt not in ("tar.gz", "zip"):
        raise ValueError(f"unsupported sdist format: {fmt!r}")
    part = wheel_name_part(name)
    base = f"{part}-{version}"
    members = {
        f"{base}/PKG-INFO": _metadata(name, version, requires_python, requires_dist).encode(),
        f"{base}/pyproject.toml": PYPROJECT.encode(),
        f"{base}/_inbackend.py": BACKEND_SOURCE.encode(),
        f"{base}/{part}/__init__.py": _module_source(name, version).encode(),
    }
    data = _tar_gz_bytes(members) if fmt == "tar.gz" else _zip_bytes(members)
    return f"{base}.{fmt}", data


def make_sdist(dest_dir: Path, name: str, version: str, **options: Any) -> Path:
    """Write ``<name_part>-<version>.<fmt>`` (fmt "tar.gz" or "zip") into dest_dir.

    ``options`` are sdist_bytes's. Members live under ``<name_part>-<version>/``:
    PKG-INFO, pyproject.toml, _inbackend.py and ``<import_name>/__init__.py``.
    """
    return _write(Path(dest_dir), *sdist_bytes(name, version, **options))
