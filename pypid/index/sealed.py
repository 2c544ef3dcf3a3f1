"""The files as the master loaded them, kept outside the Python heap once workers fork.

A worker that reads a ``FileEntry`` the master made writes the entry's reference count
(and those of its strings and ints), so the memory page holding it, shared with the
master since the fork, becomes the worker's own copy. Downloads of files chosen at
random reach every page in time: at 54,307 files each worker grew by ~33 MB. And the
entries themselves, with the maps that find them, were ~36 MB of the master's heap.

``SealedFiles`` keeps the same facts in an unlinked file read with ``pread`` (the OS page
cache holds it, in no process's memory): one record per file, each project's served
files one run in page order, then the files a duplicate name keeps from being served.
Arrays sorted by hash find them (numbers, not objects: reading them writes nothing
shared): a served file by name, a file by path (only those the name does not find), a
project's run by its name. A lookup builds new entries, the caller's own. The index
lays the changes made since the seal over it (``pypid.index.layered``).
"""

from __future__ import annotations

import os
import struct
import weakref
from array import array
from collections.abc import Callable, Iterable, Iterator, Mapping
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
_READ_CHUNK = 1 << 20

Yanks = Callable[[], Mapping[str, str]]


class _Keys:
    """Places in the file by a key's hash: a table with open addressing, in two arrays.

    Arrays of numbers, not Python objects, from the first key on: a seal in a worker
    (``ReadModel.reseal_if_due``) makes no small objects by the key (those land in the
    free slots of memory the worker shares with the master, and un-share it for good),
    and reading them writes nothing shared. A place is never 0 (a record has a length):
    0 marks a free slot.
    """

    __slots__ = ("count", "hashes", "places")

    def __init__(self, expected: int = 0) -> None:
        slots = 8
        while slots < 2 * expected:
            slots <<= 1
        self._empty(slots)
        self.count = 0

    def _empty(self, slots: int) -> None:
        self.hashes = array("q", [0]) * slots
        self.places = array("Q", [0]) * slots

    def __len__(self) -> int:
        return self.count

    def add(self, key: str, place: int) -> None:
        if 2 * (self.count + 1) > len(self.places):  # at most half full: short probes
            self._grow()
        self._put(hash(key), place)
        self.count += 1

    def may_hold(self, key: str) -> bool:
        """False when no key has ``key``'s hash (so it surely is not here)."""
        return next(self.find(key), 0) != 0

    def find(self, key: str) -> Iterator[int]:
        """The places of every key with ``key``'s hash (more than one: keys share it)."""
        wanted = hash(key)
        hashes, places = self.hashes, self.places
        mask = len(places) - 1
        at = wanted & mask
        while place := places[at]:
            if hashes[at] == wanted:
                yield place
            at = (at + 1) & mask

    def _put(self, key_hash: int, place: int) -> None:
        hashes, places = self.hashes, self.places
        mask = len(places) - 1
        at = key_hash & mask
        while places[at]:
            at = (at + 1) & mask
        hashes[at] = key_hash
        places[at] = place

    def _grow(self) -> None:
        old = zip(self.hashes, self.places, strict=True)
        self._empty(2 * len(self.places))
        for key_hash, place in old:
            if place:
                self._put(key_hash, place)


class SealedFiles:
    """The files as of the seal: served ones by name, every one by path, by project.

    Reads raise OSError when the file cannot be read (closed, a failing disk): the
    caller decides what a lookup that could not be made means.
    """

    __slots__ = ("__weakref__", "_closer", "_fd", "_names", "_paths", "_projects",
                 "_paths_count", "_served_end", "_yanks")

    def __init__(self, fd: int, names: _Keys, paths: _Keys, projects: _Keys, *,
                 served_end: int, paths_count: int, yanks: Yanks) -> None:
        self._fd = fd
        self._names = names
        self._paths = paths
        self._projects = projects
        self._served_end = served_end  # records past it: files a duplicate keeps unserved
        self._paths_count = paths_count
        self._yanks = yanks  # the marks now: a record's yank mark is never stale
        # The file goes with the table: a reload (SIGHUP) lets the previous index go.
        self._closer = weakref.finalize(self, os.close, fd)

    @classmethod
    def write(cls, directory: Path, projects: Iterable[tuple[FileEntry, ...]],
              unserved: Iterable[FileEntry], yanks: Yanks, *, file_count: int = 0,
              project_count: int = 0) -> SealedFiles:
        """Write each project's served files (in their order), then the ``unserved`` ones,
        to a new unlinked file in ``directory`` (OSError if it cannot be written, and
        struct.error for a value no record holds: the caller goes on without).
        ``file_count``, ``project_count``: about how many (the tables are made that big at once)."""
        fd = unlinked_file(directory, ".files-")
        try:
            writer = _Writer(fd)
            names, paths, runs = _Keys(file_count), _Keys(), _Keys(project_count)
            for files in projects:
                start = writer.offset
                for entry in files:
                    place = writer.add(entry)
                    names.add(entry.filename, place)
                    if entry.relpath != entry.filename:
                        paths.add(entry.relpath, place)
                if files:
                    runs.add(files[0].project, start << _SHIFT | (writer.offset - start))
            served_end, count = writer.offset, len(names)
            for entry in unserved:
                paths.add(entry.relpath, writer.add(entry))
                count += 1
            writer.flush()
            return cls(fd, names, paths, runs, served_end=served_end,
                       paths_count=count, yanks=yanks)
        except BaseException:
            os.close(fd)
            raise

    # -- served files, by name

    def served_count(self) -> int:
        return len(self._names)

    def may_serve(self, filename: str) -> bool:
        return self._names.may_hold(filename)

    def find(self, filename: str) -> FileEntry | None:
        """The entry served for ``filename`` at the seal, or None."""
        for place in self._names.find(filename):
            entry = self._read_one(place)
            if entry.filename == filename:
                return entry
        return None

    def served_names(self) -> Iterator[str]:
        return (entry.filename for entry in self._entries(0, self._served_end))

    # -- every file, by path

    def path_count(self) -> int:
        return self._paths_count

    def may_hold_path(self, relpath: str) -> bool:
        return self._paths.may_hold(relpath) or self._names.may_hold(relpath)

    def at_path(self, relpath: str) -> FileEntry | None:
        """The entry sealed at ``relpath``, served or not, or None."""
        for place in self._paths.find(relpath):
            entry = self._read_one(place)
            if entry.relpath == relpath:
                return entry
        found = self.find(relpath)  # most files: the path is the name
        return found if found is not None and found.relpath == relpath else None

    def relpaths(self) -> Iterator[str]:
        return (entry.relpath for entry in self._entries(0, None))

    # -- projects

    def project_count(self) -> int:
        return len(self._projects)

    def may_hold_project(self, project: str) -> bool:
        return self._projects.may_hold(project)

    def project(self, project: str) -> tuple[FileEntry, ...] | None:
        """The project's served files at the seal, in page order, or None."""
        for place in self._projects.find(project):
            start, length = place >> _SHIFT, place & _LENGTH_MASK
            files = tuple(self._entries(start, start + length))
            if files and files[0].project == project:
                return files
        return None

    def runs(self) -> Iterator[tuple[NormalizedName, tuple[FileEntry, ...]]]:
        """Every project's served files, in the table's order: one pass over the file."""
        run: list[FileEntry] = []
        for entry in self._entries(0, self._served_end):
            if run and entry.project != run[0].project:
                yield run[0].project, tuple(run)
                run = []
            run.append(entry)
        if run:
            yield run[0].project, tuple(run)

    def projects(self) -> Iterator[NormalizedName]:
        last = None
        for entry in self._entries(0, self._served_end):
            if entry.project != last:
                last = entry.project
                yield last

    def close(self) -> None:
        self._fd = -1
        self._closer()

    # -- reading

    def _read_one(self, place: int) -> FileEntry:
        length = place & _LENGTH_MASK
        data = os.pread(self._fd, length, place >> _SHIFT)
        if len(data) != length:
            raise OSError(f"the sealed file table is shorter than its index ({len(data)} "
                          f"bytes read of {length})")
        return _entry(data, 0, self._yanks())[0]

    def _entries(self, start: int, end: int | None) -> Iterator[FileEntry]:
        """The records from ``start`` to ``end`` (None: the end of the file), in order."""
        yanks = self._yanks()
        buffer, at, offset = b"", 0, start  # buffer: the file's bytes from offset on
        while True:
            while at + _HEAD.size <= len(buffer) and (end is None or offset + at < end):
                if at + _HEAD.size + sum(_HEAD.unpack_from(buffer, at)[:5]) > len(buffer):
                    break  # the record goes on past what was read
                entry, at = _entry(buffer, at, yanks)
                yield entry
            if end is not None and offset + at >= end:
                return
            read_from = offset + len(buffer)
            want = _READ_CHUNK if end is None else min(_READ_CHUNK, end - read_from)
            more = os.pread(self._fd, want, read_from) if want > 0 else b""
            if not more:
                if at < len(buffer) or end is not None:
                    raise OSError("the sealed file table ends inside a record")
                return
            buffer, offset, at = buffer[at:] + more, offset + at, 0


class _Writer:
    """Records appended to the table's file in batches; ``add`` gives each one's place."""

    def __init__(self, fd: int) -> None:
        self.fd = fd
        self.offset = 0
        self._batch = bytearray()  # one buffer, not a bytes object a record (see _Keys)

    def add(self, entry: FileEntry) -> int:
        record = _record(entry)
        place = self.offset << _SHIFT | len(record)
        self.offset += len(record)
        self._batch += record
        if len(self._batch) >= _WRITE_BATCH:
            self.flush()
        return place

    def flush(self) -> None:
        write_all(self.fd, self._batch)
        self._batch = bytearray()


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


def _entry(data: bytes, at: int, yanks: Mapping[str, str]) -> tuple[FileEntry, int]:
    """The record at ``at`` in ``data``, and where the next one starts."""
    (name_len, relpath_len, project_len, version_len, requires_len, size, mtime_ns, inode,
     upload_time, digest, has_requires, has_meta, meta) = _HEAD.unpack_from(data, at)
    at += _HEAD.size
    name = data[at:at + name_len].decode("utf-8", "surrogateescape")
    at += name_len
    relpath = data[at:at + relpath_len].decode("utf-8", "surrogateescape") or name
    at += relpath_len
    project = data[at:at + project_len].decode("utf-8")
    at += project_len
    version = data[at:at + version_len].decode("utf-8")
    at += version_len
    requires = data[at:at + requires_len].decode("utf-8") if has_requires else None
    at += requires_len
    return FileEntry(filename=name, relpath=relpath, project=NormalizedName(project),
                     version=version, size=size, mtime_ns=mtime_ns, inode=inode,
                     digest=digest, requires_python=requires,
                     metadata_digest=meta if has_meta else None, upload_time=upload_time,
                     yanked=yanks.get(name)), at
