"""Reading one file's facts (sha256, Requires-Python, METADATA's hash): the index's only
expensive step, done once per file version and kept in the cache."""

from __future__ import annotations

import hashlib
from typing import NamedTuple

from pypid.cachedb import FileRow
from pypid.distfile import (
    InvalidFilenameError,
    MetadataError,
    hash_file,
    parse_filename,
    read_core_metadata,
)
from pypid.storage import FileStat, Storage


class Examined(NamedTuple):
    """The row to cache (None: nothing to cache), and why the file cannot be served, if so."""

    row: FileRow | None
    problem: str | None = None
    unusable: bool = False  # True: do not read this version of the file again


def examine(root: Storage, stat: FileStat, old: FileRow | None) -> Examined:
    """Hash and read one file; ``old`` is its previous row (a touched file keeps its time)."""
    filename = stat.relpath.rsplit("/", 1)[-1]
    try:
        dist = parse_filename(filename)
    except InvalidFilenameError as exc:
        return Examined(None, f"ignoring {stat.relpath}: {exc.reason}")
    path = root.resolve(stat.relpath)
    try:
        with root.open(stat.relpath) as handle:
            sha256, size = hash_file(handle)
        meta = read_core_metadata(path, dist)
    except OSError as exc:
        return Examined(None, f"ignoring {stat.relpath}: cannot read it ({exc.strerror or exc})",
                        unusable=True)
    except MetadataError as exc:
        row = FileRow(stat.relpath, *stat.identity, None, None, None,
                      stat.mtime_ns / 1e9, exc.reason)
        return Examined(row, f"ignoring {stat.relpath}: {exc.reason}", unusable=True)
    if size != stat.size:
        return Examined(None)  # still being written: the next event brings it back
    upload_time = stat.mtime_ns / 1e9
    if old is not None and old.relpath == stat.relpath and old.sha256 == sha256:
        upload_time = old.upload_time  # same bytes, only touched: keep the first time
    return Examined(described(stat, sha256, meta.metadata, meta.requires_python, upload_time))


def described(stat: FileStat, sha256: str, metadata: bytes | None,
              requires_python: str | None, upload_time: float) -> FileRow:
    """The cache row of a readable distribution file."""
    dist = parse_filename(stat.relpath.rsplit("/", 1)[-1])
    meta_sha = hashlib.sha256(metadata).hexdigest() if metadata is not None else None
    return FileRow(stat.relpath, *stat.identity, sha256, requires_python,
                   meta_sha, upload_time, None, dist.project, str(dist.version))
