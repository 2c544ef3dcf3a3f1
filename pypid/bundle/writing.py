"""Writing a bundle: one plain tar, each chosen file as a flat member (its own name),
then ``manifest.json``. Streamed (a file is never held in memory) and atomic: a temp
file beside the bundle, fsynced, renamed into place."""

from __future__ import annotations

import contextlib
import hashlib
import hmac
import io
import os
import secrets
import tarfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import IO

from pypid.bundle.manifest import (
    AUDIT_NAME,
    MANIFEST_NAME,
    BundledAudit,
    BundledFile,
    BundledProject,
    BundleError,
    Manifest,
    encode,
    format_time,
    member_problem,
    parse_time,
)
from pypid.bundle.sources import Candidate
from pypid.storage.incoming import fsync_dir

CHUNK = 1024 * 1024


class _Hashing(io.RawIOBase):
    """Reads a file and hashes what was read (tarfile copies exactly the member size)."""

    def __init__(self, handle: IO[bytes]) -> None:
        self.handle = handle
        self.digest = hashlib.sha256()

    def readable(self) -> bool:
        return True

    def read(self, size: int = -1) -> bytes:
        data = self.handle.read(size)
        self.digest.update(data)
        return data


def write_bundle(dest: Path, files: list[Candidate], projects: list[BundledProject],
                 progress: Callable[[Candidate], None] | None = None,
                 audit: Path | None = None) -> Manifest:
    """Write ``files`` and their manifest to ``dest`` (replaced whole, or left as it was);
    ``audit``: an audit log to carry as it is now (its lines written later stay out)."""
    dest = dest.absolute()
    temp = dest.with_name(f".{dest.name}.{secrets.token_hex(6)}.tmp")
    try:
        with open(temp, "xb") as out:
            with tarfile.open(fileobj=out, mode="w", format=tarfile.PAX_FORMAT) as tar:
                bundled = []
                for item in files:
                    bundled.append(_add(tar, item))
                    if progress is not None:
                        progress(item)
                carried = _add_audit(tar, audit) if audit is not None else None
                manifest = Manifest(tuple(bundled), tuple(projects), format_time(time.time()),
                                    carried)
                data = encode(manifest)
                tar.addfile(_member(MANIFEST_NAME, len(data), time.time()), io.BytesIO(data))
            out.flush()
            os.fsync(out.fileno())
        os.replace(temp, dest)
        fsync_dir(dest.parent)
    finally:
        with contextlib.suppress(FileNotFoundError):
            temp.unlink()
    return manifest


def _add(tar: tarfile.TarFile, item: Candidate) -> BundledFile:
    problem = member_problem(item.filename)
    if problem:
        raise BundleError(problem)
    with open(item.path, "rb") as handle:
        size = os.fstat(handle.fileno()).st_size
        reader = _Hashing(handle)
        try:
            tar.addfile(_member(item.filename, size, parse_time(item.upload_time)), reader)
        except OSError as exc:  # shrank while read
            raise BundleError(f"{item.path} changed while it was read: {exc}") from None
    sha256 = reader.digest.hexdigest()
    if item.sha256 is not None and not hmac.compare_digest(sha256, item.sha256):
        raise BundleError(f"{item.path} does not match its sha256 {item.sha256}")
    return BundledFile(item.filename, item.project, item.version, sha256, size,
                       item.upload_time, item.yanked, item.uploader)


def _add_audit(tar: tarfile.TarFile, path: Path) -> BundledAudit | None:
    """The log's whole lines as of now (a writer appends whole lines; one cut short by
    a crash is left out); None when there is no log."""
    try:
        handle = open(path, "rb")  # noqa: SIM115 - closed below
    except FileNotFoundError:
        return None
    with handle:
        data = handle.read()
    data = data[:data.rfind(b"\n") + 1]
    tar.addfile(_member(AUDIT_NAME, len(data), time.time()), io.BytesIO(data))
    return BundledAudit(hashlib.sha256(data).hexdigest(), len(data), data.count(b"\n"))


def _member(name: str, size: int, mtime: float) -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.size, info.mtime, info.mode = size, int(mtime), 0o644
    return info

