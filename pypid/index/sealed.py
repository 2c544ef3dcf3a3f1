"""The files as the master loaded them, for workers to look up without touching its objects.

A worker that reads a ``FileEntry`` the master made writes the entry's reference count
(and those of its strings and ints), so the memory page holding it, shared with the
master since the fork, becomes the worker's own copy. Downloads of files chosen at
random reach every page in time: at 54,307 files each worker grew by ~33 MB.

``SealedFiles`` keeps the same facts outside the Python heap: one record per file in an
unlinked file read with ``pread`` (the OS page cache holds it, in no process's memory),
found through two arrays sorted by the name's hash (numbers, not objects: reading them
writes nothing shared). A lookup builds a new entry, the caller's own. Changes after the
seal are the index's (``ReadModel``) to answer first.
"""

from __future__ import annotations

import os
import struct
import weakref
from array import array
from bisect import bisect_left
from collections.abc import Iterable, Mapping
from pathlib import Path

from pypid.cachedb import unlinked_file
from pypid.distfile import NormalizedName
from pypid.growing import write_all
from pypid.index.records import FileEntry

# name, relpath (0: the name), project, version, requires_python lengths (32 bits: a
# Requires-Python is bounded only by METADATA's size); size, mtime_ns, inode,
# upload_time, sha256, has Requires-Python, METADATA's sha256 (flag, then 32 bytes)
_HEAD = struct.Struct("<IIIIIqqqd32sBB32s")
_ZEROS = bytes(32)
_SHIFT = 32  # place = offset << 32 | length
_LENGTH_MASK = (1 << _SHIFT) - 1
_WRITE_BATCH = 1 << 20


class SealedFiles:
    """``filename -> FileEntry`` as of the seal; None for a name it does not hold."""

    __slots__ = ("__weakref__", "_closer", "_fd", "_hashes", "_places")

    def __init__(self, fd: int, hashes: array[int], places: array[int]) -> None:
        self._fd = fd
        self._hashes = hashes
        self._places = places
        # The file goes with the table: a reload (SIGHUP) lets the previous index go.
        self._closer = weakref.finalize(self, os.close, fd)

    @classmethod
    def write(cls, directory: Path, entries: Iterable[FileEntry]) -> SealedFiles:
        """Write every entry's record to a new unlinked file in ``directory`` (OSError if
        it cannot be written: the caller goes on without)."""
        fd = unlinked_file(directory, ".files-")
        try:
            rows: list[tuple[int, int]] = []
            batch: list[bytes] = []
            offset = pending = 0
            for entry in entries:
                record = _record(entry)
                rows.append((hash(entry.filename), offset << _SHIFT | len(record)))
                offset += len(record)
                batch.append(record)
                pending += len(record)
                if pending >= _WRITE_BATCH:
                    write_all(fd, b"".join(batch))
                    batch, pending = [], 0
            write_all(fd, b"".join(batch))
            rows.sort()
            return cls(fd, array("q", (h for h, _ in rows)), array("Q", (p for _, p in rows)))
        except BaseException:
            os.close(fd)
            raise

    def __len__(self) -> int:
        return len(self._hashes)

    def may_hold(self, filename: str) -> bool:
        """False when no sealed name has ``filename``'s hash (so it surely is not here)."""
        key = hash(filename)
        at = bisect_left(self._hashes, key)
        return at < len(self._hashes) and self._hashes[at] == key

    def find(self, filename: str, yanks: Mapping[str, str]) -> FileEntry | None:
        """The entry sealed for ``filename`` (its yank mark from ``yanks``), or None."""
        key = hash(filename)
        hashes = self._hashes
        at = bisect_left(hashes, key)
        while at < len(hashes) and hashes[at] == key:  # more than one: names share a hash
            place = self._places[at]
            length = place & _LENGTH_MASK
            try:
                data = os.pread(self._fd, length, place >> _SHIFT)
            except OSError:
                return None
            if len(data) == length:
                entry = _entry(data, yanks)
                if entry.filename == filename:
                    return entry
            at += 1
        return None

    def close(self) -> None:
        self._fd = -1
        self._closer()


def _record(entry: FileEntry) -> bytes:
    name = entry.filename.encode("utf-8", "surrogateescape")
    relpath = (b"" if entry.relpath == entry.filename
               else entry.relpath.encode("utf-8", "surrogateescape"))
    project = entry.project.encode("utf-8")
    version = entry.version.encode("utf-8")
    requires = (entry.requires_python or "").encode("utf-8")
    meta = entry.metadata_digest
    head = _HEAD.pack(len(name), len(relpath), len(project), len(version), len(requires),
                      entry.size, entry.mtime_ns, entry.inode, entry.upload_time,
                      entry.digest, entry.requires_python is not None, meta is not None,
                      meta or _ZEROS)
    return b"".join((head, name, relpath, project, version, requires))


def _entry(data: bytes, yanks: Mapping[str, str]) -> FileEntry:
    (name_len, relpath_len, project_len, version_len, requires_len, size, mtime_ns, inode,
     upload_time, digest, has_requires, has_meta, meta) = _HEAD.unpack_from(data)
    at = _HEAD.size
    name = data[at:at + name_len].decode("utf-8", "surrogateescape")
    at += name_len
    relpath = data[at:at + relpath_len].decode("utf-8", "surrogateescape") or name
    at += relpath_len
    project = data[at:at + project_len].decode("utf-8")
    at += project_len
    version = data[at:at + version_len].decode("utf-8")
    at += version_len
    requires = data[at:at + requires_len].decode("utf-8") if has_requires else None
    return FileEntry(filename=name, relpath=relpath, project=NormalizedName(project),
                     version=version, size=size, mtime_ns=mtime_ns, inode=inode,
                     digest=digest, requires_python=requires,
                     metadata_digest=meta if has_meta else None, upload_time=upload_time,
                     yanked=yanks.get(name))
