"""Distribution files: parse wheel and sdist names, normalize project names, hash, read metadata.

Everything here is pure except ``read_core_metadata`` and ``hash_file``, kept at
the bottom. Errors subclass ValueError and name the file.
"""

from __future__ import annotations

import hashlib
import re
import tarfile
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import IO, NewType

from packaging.utils import canonicalize_name, parse_wheel_filename
from packaging.version import InvalidVersion, Version

NormalizedName = NewType("NormalizedName", str)

WHEEL = "wheel"
SDIST = "sdist"
# What pip can install from an index (pip's own archive list); eggs are not installable.
SDIST_SUFFIXES = (".tar.gz", ".tgz", ".zip", ".tar.bz2", ".tbz", ".tar.xz", ".txz", ".tar")
DIST_SUFFIXES = (".whl", *SDIST_SUFFIXES)
TEMP_SUFFIXES = (".tmp", ".part", ".partial", ".crdownload", ".swp", "~")
MAX_METADATA_BYTES = 8 * 1024 * 1024

_NAME_RE = re.compile(r"^([A-Z0-9]|[A-Z0-9][A-Z0-9._-]*[A-Z0-9])$", re.IGNORECASE)
_NORMALIZED_RE = re.compile(r"^[a-z0-9]([a-z0-9-]*[a-z0-9])?$")
_UNSAFE_CHARS_RE = re.compile(r"[\x00-\x1f\x7f/\\]")
# PEP 427 escapes every component of a wheel name down to these characters.
_WHEEL_NAME_RE = re.compile(r"^[A-Za-z0-9_.!+-]+\.whl$")
MAX_FILENAME_BYTES = 255  # NAME_MAX on Linux file systems


class InvalidFilenameError(ValueError):
    """A file name that is not a wheel or sdist name we can index."""

    def __init__(self, filename: str, reason: str) -> None:
        super().__init__(f"{filename!r}: {reason}")
        self.filename = filename
        self.reason = reason


class MetadataError(ValueError):
    """An archive whose core metadata cannot be read."""

    def __init__(self, filename: str, reason: str) -> None:
        super().__init__(f"{filename!r}: {reason}")
        self.filename = filename
        self.reason = reason


@dataclass(frozen=True, slots=True)
class DistFile:
    """What a distribution's file name says about it."""

    filename: str
    project: NormalizedName
    version: Version
    kind: str  # WHEEL or SDIST


@dataclass(frozen=True, slots=True)
class CoreMetadata:
    """A file's core metadata: the wheel's METADATA bytes (None for sdists) and Requires-Python."""

    metadata: bytes | None
    requires_python: str | None
    name: str | None


def normalize(name: str) -> NormalizedName:
    """The PEP 503 form of a project name.

    >>> normalize("Foo.Bar__baz")
    'foo-bar-baz'
    """
    return NormalizedName(canonicalize_name(name))


def is_valid_project_name(name: str) -> bool:
    """Is ``name`` a valid project name (PEP 508)?

    >>> [is_valid_project_name(n) for n in ("foo_bar", "-foo", "a\\r")]
    [True, False, False]
    """
    return bool(_NAME_RE.match(name))


def is_normalized(name: str) -> bool:
    """Is ``name`` already in PEP 503 form?"""
    return bool(_NORMALIZED_RE.match(name))


def is_safe_filename(filename: str) -> bool:
    """Could ``filename`` be a single, visible file in the package root?

    >>> [is_safe_filename(n) for n in ("a-1.0.tar.gz", "../a", ".a", "a\\x00", "")]
    [True, False, False, False, False]
    """
    return (
        bool(filename)
        and filename not in (".", "..")
        and not filename.startswith(".")
        and not _UNSAFE_CHARS_RE.search(filename)
    )


def is_temp_name(filename: str) -> bool:
    """Files being written (by pypid or a copy in progress) that the index must not show."""
    return filename.startswith(".") or filename.endswith(TEMP_SUFFIXES)


def has_dist_suffix(filename: str) -> bool:
    """Does the name end like a distribution file (the index considers only these)?

    Case matters, as it does to pip: ``foo-1.0.WHL`` is not a wheel to it.
    """
    return filename.endswith(DIST_SUFFIXES)


def parse_filename(filename: str) -> DistFile:
    """Parse a wheel or sdist file name; raise InvalidFilenameError.

    Legacy sdist names such as ``systemd-python-234.tar.gz`` are understood:
    the version starts at the first ``-<digit>`` after which the rest is a
    valid PEP 440 version.

    >>> d = parse_filename("Foo_Bar-1.0.post1-py3-none-any.whl")
    >>> (d.project, str(d.version), d.kind)
    ('foo-bar', '1.0.post1', 'wheel')
    >>> str(parse_filename("systemd-python-234.tar.gz").project)
    'systemd-python'
    """
    if not is_safe_filename(filename):
        raise InvalidFilenameError(filename, "not a plain file name")
    if len(filename.encode("utf-8", "surrogateescape")) > MAX_FILENAME_BYTES:
        raise InvalidFilenameError(filename, f"longer than {MAX_FILENAME_BYTES} bytes")
    if filename.endswith(".whl"):
        if not _WHEEL_NAME_RE.match(filename):
            raise InvalidFilenameError(filename, "a wheel name has only letters, digits and _.!+-")
        try:
            name, version, _build, _tags = parse_wheel_filename(filename)
        except ValueError as exc:  # InvalidWheelFilename, InvalidVersion
            raise InvalidFilenameError(filename, f"invalid wheel name ({exc})") from None
        return DistFile(filename, NormalizedName(name), version, WHEEL)
    for suffix in SDIST_SUFFIXES:
        if filename.endswith(suffix):
            stem = filename[: -len(suffix)]
            project, version = _split_sdist_stem(filename, stem)
            return DistFile(filename, project, version, SDIST)
    raise InvalidFilenameError(filename, "not a wheel or sdist (unknown extension)")


def _split_sdist_stem(filename: str, stem: str) -> tuple[NormalizedName, Version]:
    for match in re.finditer(r"-(?=\d)", stem):
        name, version_text = stem[: match.start()], stem[match.end():]
        if not is_valid_project_name(name):
            continue
        try:
            return normalize(name), Version(version_text)
        except InvalidVersion:
            continue
    raise InvalidFilenameError(filename, "no <name>-<version> in the sdist name")


def parse_requires_python(metadata: bytes) -> tuple[str | None, str | None]:
    r"""(Requires-Python, Name) from core metadata headers; None where absent.

    A plain scan of the header block (RFC 822 style, with continuation lines):
    the email package is ten times slower, and this runs for every new file.

    >>> parse_requires_python(b"Metadata-Version: 2.1\nName: x\nRequires-Python: >=3.8\n\nbody")
    ('>=3.8', 'x')
    """
    found: dict[str, str] = {}
    current = None
    for line in metadata.decode("utf-8", "replace").splitlines():
        if not line.strip():
            break  # the end of the headers
        if line[0] in " \t":
            if current is not None:
                found[current] += " " + line.strip()
            continue
        key, sep, value = line.partition(":")
        current = key.strip().lower() if sep else None
        if current in ("requires-python", "name") and current not in found:
            found[current] = value.strip()
        else:
            current = None
    return (_clean_header(found.get("requires-python")), _clean_header(found.get("name")))


def _clean_header(value: object) -> str | None:
    if value is None:
        return None
    text = " ".join(str(value).split())
    return text or None


class Digests:
    """md5, sha256 and blake2b-256 of a stream, fed chunk by chunk."""

    def __init__(self) -> None:
        self._hashes = {
            "md5": hashlib.md5(usedforsecurity=False),
            "sha256": hashlib.sha256(),
            "blake2_256": hashlib.blake2b(digest_size=32),
        }
        self.size = 0

    def update(self, chunk: bytes) -> None:
        for digest in self._hashes.values():
            digest.update(chunk)
        self.size += len(chunk)

    def hexdigest(self, name: str) -> str:
        return self._hashes[name].hexdigest()


# -- I/O: the only functions here that touch the file system


def hash_file(handle: IO[bytes], chunk_size: int = 1024 * 1024) -> tuple[str, int]:
    """(sha256 hex, size) of an open binary file, read to its end."""
    digest = hashlib.sha256()
    size = 0
    while chunk := handle.read(chunk_size):
        digest.update(chunk)
        size += len(chunk)
    return digest.hexdigest(), size


def read_core_metadata(path: Path | IO[bytes], dist: DistFile) -> CoreMetadata:
    """Read a wheel's ``.dist-info/METADATA`` (exact bytes) or an sdist's ``PKG-INFO``.

    ``path`` is a path or an open binary file (an upload being checked).

    Raise MetadataError when the archive is broken or holds no metadata. Sdist
    metadata is used only for Requires-Python: it is not served (PEP 658 allows
    it only when trustworthy).
    """
    try:
        reader = _wheel_metadata if dist.kind == WHEEL else _sdist_pkg_info
        data = reader(path, dist)
    except (OSError, zipfile.BadZipFile, tarfile.TarError, EOFError, ValueError) as exc:
        if isinstance(exc, MetadataError):
            raise
        raise MetadataError(dist.filename, f"unreadable archive ({exc})") from None
    if data is None:
        if dist.kind == WHEEL:
            raise MetadataError(dist.filename, "no .dist-info/METADATA in the wheel")
        return CoreMetadata(None, None, None)
    requires, name = parse_requires_python(data)
    return CoreMetadata(data if dist.kind == WHEEL else None, requires, name)


def _wheel_metadata(path: Path | IO[bytes], dist: DistFile) -> bytes | None:
    with zipfile.ZipFile(path) as archive:
        candidates = [
            info for info in archive.infolist()
            if info.filename.count("/") == 1 and info.filename.endswith(".dist-info/METADATA")
        ]
        if not candidates:
            return None
        # Several dist-info folders: take the one named after this project.
        candidates.sort(key=lambda info: normalize(info.filename.split("-", 1)[0]) != dist.project)
        info = candidates[0]
        if info.file_size > MAX_METADATA_BYTES:
            raise MetadataError(dist.filename, "METADATA is implausibly large")
        return archive.read(info)


def _sdist_pkg_info(path: Path | IO[bytes], dist: DistFile) -> bytes | None:
    if dist.filename.endswith(".zip"):
        with zipfile.ZipFile(path) as archive:
            for info in archive.infolist():
                if info.filename.count("/") == 1 and info.filename.endswith("/PKG-INFO"):
                    return archive.read(info)[:MAX_METADATA_BYTES]
        return None
    source = {"name": path} if isinstance(path, Path) else {"fileobj": path}
    with tarfile.open(mode="r:*", **source) as archive:  # type: ignore[call-overload]
        for member in archive:
            top_level = member.name.count("/") == 1
            if member.isfile() and top_level and member.name.endswith("/PKG-INFO"):
                handle = archive.extractfile(member)
                return handle.read(MAX_METADATA_BYTES) if handle else None
    return None
