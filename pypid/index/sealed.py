"""The files as the master loaded them, kept outside the Python heap once workers fork.

A worker that reads a ``FileEntry`` the master made writes the entry's reference count
(and those of its strings and ints), so the memory page holding it, shared with the
master since the fork, becomes the worker's own copy. Downloads of files chosen at
random reach every page in time: at 54,307 files each worker grew by ~33 MB. And the
entries themselves, with the maps that find them, were ~36 MB of the master's heap.

``SealedFiles`` keeps the same facts in an unlinked file read with ``pread`` (the OS page
cache holds it, in no process's memory): one record per file, each project's served
files one run in page order, then the files a duplicate name keeps from being served.
Hash tables after the records, in the same file, find them: a served file by name, a
file by path (only those the name does not find), a project's run by its name. A lookup
builds new entries, the caller's own. The index
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
from pypid.forked import made_apart
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
_SLOT = struct.Struct("=qq")  # hash, place: native order, the file never leaves the process
_PROBE_SLOTS = 4  # read at once: at most half full, a probe seldom needs more
# What finds a written table: each key table's offset, slots, count; where the served
# records end, where all records end, how many files
_LAYOUT = struct.Struct("<12q")
SEAL_TIMEOUT = 120.0  # seconds a child may take to write the table (0.17 s at 54,307 files)
_READ_CHUNK = 1 << 20

Yanks = Callable[[], Mapping[str, str]]


class _KeyTable:
    """Places in the file by a key's hash, while a seal fills them: a table with open
    addressing, one array of (hash, place) pairs.

    Numbers, not Python objects, from the first key on: a seal in a worker
    (``ReadModel.reseal_if_due``) makes no small object by the key (those land in the
    free slots of memory the worker shares with the master, and un-share it for good).
    A place is never 0 (a record has a length): 0 marks a free slot. Once filled, the
    table goes into the file (``stored``) and leaves memory.
    """

    __slots__ = ("count", "pairs")

    def __init__(self, expected: int = 0) -> None:
        slots = 8
        while slots < 2 * expected:
            slots <<= 1
        self.pairs = _empty(slots)
        self.count = 0

    def add(self, key: str, place: int) -> None:
        if 2 * (self.count + 1) > len(self.pairs) // 2:  # at most half full: short probes
            self._grow()
        self._put(hash(key), place)
        self.count += 1

    def _put(self, key_hash: int, place: int) -> None:
        pairs = self.pairs
        mask = len(pairs) // 2 - 1
        at = key_hash & mask
        while pairs[2 * at + 1]:
            at = (at + 1) & mask
        pairs[2 * at] = key_hash
        pairs[2 * at + 1] = place

    def _grow(self) -> None:
        old = self.pairs
        self.pairs = _empty(len(old))  # twice the slots: two numbers a slot
        for at in range(1, len(old), 2):
            if old[at]:
                self._put(old[at - 1], old[at])

    def stored(self, writer: _Writer) -> _Keys:
        """The table, written after the records ``writer`` wrote; this one is emptied."""
        offset = writer.offset
        writer.add_bytes(memoryview(self.pairs).cast("B"))
        keys = _Keys(offset, len(self.pairs) // 2, self.count)
        self.pairs, self.count = _empty(0), 0
        return keys


def _empty(slots: int) -> array[int]:
    return array("q", [0]) * (2 * slots)


class _Keys:
    """A filled ``_KeyTable`` in the sealed file: probes read a few slots with ``pread``.

    In the file, not the heap: the table is the OS page cache's to keep, where a worker
    that seals again does not hold its own copy (~3 MB at 54,307 files) beside the
    master's. A probe costs one ``pread`` (~1 µs), once a download.
    """

    __slots__ = ("count", "offset", "slots")

    def __init__(self, offset: int, slots: int, count: int) -> None:
        self.offset = offset
        self.slots = slots  # a power of two
        self.count = count

    def __len__(self) -> int:
        return self.count

    def find(self, fd: int, key: str) -> Iterator[int]:
        """The places of every key with ``key``'s hash (more than one: keys share it)."""
        wanted = hash(key)
        mask = self.slots - 1
        at = wanted & mask
        while True:
            many = min(_PROBE_SLOTS, self.slots - at)
            size = many * _SLOT.size
            data = os.pread(fd, size, self.offset + at * _SLOT.size)
            if len(data) != size:
                raise OSError(f"the sealed file table is shorter than its key table "
                              f"({len(data)} bytes read of {size})")
            for key_hash, place in _SLOT.iter_unpack(data):
                if not place:
                    return
                if key_hash == wanted:
                    yield place
            at = (at + many) & mask

    def may_hold(self, fd: int, key: str) -> bool:
        """False when no key has ``key``'s hash (so it surely is not here)."""
        return next(self.find(fd, key), 0) != 0


class SealedFiles:
    """The files as of the seal: served ones by name, every one by path, by project.

    Reads raise OSError when the file cannot be read (closed, a failing disk): the
    caller decides what a lookup that could not be made means.
    """

    __slots__ = ("__weakref__", "_closer", "_fd", "_names", "_paths", "_projects",
                 "_paths_count", "_records_end", "_served_end", "_yanks")

    def __init__(self, fd: int, names: _Keys, paths: _Keys, projects: _Keys, *,
                 served_end: int, records_end: int, paths_count: int, yanks: Yanks) -> None:
        self._fd = fd
        self._names = names
        self._paths = paths
        self._projects = projects
        self._served_end = served_end  # records past it: files a duplicate keeps unserved
        self._records_end = records_end  # the key tables follow
        self._paths_count = paths_count
        self._yanks = yanks  # the marks now: a record's yank mark is never stale
        # The file goes with the table: a reload (SIGHUP) lets the previous index go.
        self._closer = weakref.finalize(self, os.close, fd)

    @classmethod
    def write(cls, directory: Path, projects: Iterable[tuple[FileEntry, ...]],
              unserved: Iterable[FileEntry], yanks: Yanks, *, file_count: int = 0,
              project_count: int = 0, apart: bool = False) -> SealedFiles:
        """Write each project's served files (in their order), then the ``unserved`` ones,
        to a new unlinked file in ``directory`` (OSError if it cannot be written, and
        struct.error for a value no record holds: the caller goes on without).
        ``file_count``, ``project_count``: about how many (the tables are made that big at
        once). ``apart``: in a forked child (``pypid.forked``), whose allocations leave this
        process's memory as it was; here if that fails."""
        fd = unlinked_file(directory, ".files-")
        try:
            def write() -> bytes:
                return _LAYOUT.pack(*_write_into(fd, projects, unserved, file_count,
                                                 project_count))

            numbers = _LAYOUT.unpack(made_apart(write, "the file table", SEAL_TIMEOUT)
                                     if apart else write())
            names, paths, runs = (_Keys(*numbers[at:at + 3]) for at in (0, 3, 6))
            served_end, records_end, count = numbers[9:]
            return cls(fd, names, paths, runs, served_end=served_end, records_end=records_end,
                       paths_count=count, yanks=yanks)
        except BaseException:
            os.close(fd)
            raise

    # -- served files, by name

    def served_count(self) -> int:
        return len(self._names)

    def may_serve(self, filename: str) -> bool:
        return self._names.may_hold(self._fd, filename)

    def find(self, filename: str) -> FileEntry | None:
        """The entry served for ``filename`` at the seal, or None."""
        for place in self._names.find(self._fd, filename):
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
        fd = self._fd
        return self._paths.may_hold(fd, relpath) or self._names.may_hold(fd, relpath)

    def at_path(self, relpath: str) -> FileEntry | None:
        """The entry sealed at ``relpath``, served or not, or None."""
        for place in self._paths.find(self._fd, relpath):
            entry = self._read_one(place)
            if entry.relpath == relpath:
                return entry
        found = self.find(relpath)  # most files: the path is the name
        return found if found is not None and found.relpath == relpath else None

    def relpaths(self) -> Iterator[str]:
        return (entry.relpath for entry in self._entries(0, self._records_end))

    # -- projects

    def project_count(self) -> int:
        return len(self._projects)

    def may_hold_project(self, project: str) -> bool:
        return self._projects.may_hold(self._fd, project)

    def project(self, project: str) -> tuple[FileEntry, ...] | None:
        """The project's served files at the seal, in page order, or None."""
        for place in self._projects.find(self._fd, project):
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

    def _entries(self, start: int, end: int) -> Iterator[FileEntry]:
        """The records from ``start`` to ``end``, in order."""
        yanks = self._yanks()
        buffer, at, offset = b"", 0, start  # buffer: the file's bytes from offset on
        while True:
            while at + _HEAD.size <= len(buffer) and offset + at < end:
                if at + _HEAD.size + sum(_HEAD.unpack_from(buffer, at)[:5]) > len(buffer):
                    break  # the record goes on past what was read
                entry, at = _entry(buffer, at, yanks)
                yield entry
            if offset + at >= end:
                return
            read_from = offset + len(buffer)
            want = min(_READ_CHUNK, end - read_from)
            more = os.pread(self._fd, want, read_from) if want > 0 else b""
            if not more:
                raise OSError("the sealed file table ends inside a record")
            buffer, offset, at = buffer[at:] + more, offset + at, 0


class _Writer:
    """Records appended to the table's file in batches; ``add`` gives each one's place."""

    def __init__(self, fd: int) -> None:
        self.fd = fd
        self.offset = 0
        self._batch = bytearray()  # one buffer, not a bytes object a record (see _KeyTable)

    def add(self, entry: FileEntry) -> int:
        record = _record(entry)
        place = self.offset << _SHIFT | len(record)
        self.offset += len(record)
        self._batch += record
        if len(self._batch) >= _WRITE_BATCH:
            self.flush()
        return place

    def add_bytes(self, data: memoryview) -> None:
        self.flush()
        write_all(self.fd, data)
        self.offset += len(data)

    def flush(self) -> None:
        write_all(self.fd, self._batch)
        self._batch = bytearray()


def _write_into(fd: int, projects: Iterable[tuple[FileEntry, ...]],
                unserved: Iterable[FileEntry], file_count: int,
                project_count: int) -> tuple[int, ...]:
    """``SealedFiles.write``'s work, into ``fd`` from its start: the numbers that find what
    it wrote (see ``_LAYOUT``)."""
    os.ftruncate(fd, 0)  # a child that failed may have written part of it
    os.lseek(fd, 0, os.SEEK_SET)
    writer = _Writer(fd)
    names, paths = _KeyTable(file_count), _KeyTable()
    runs = _KeyTable(project_count)
    for files in projects:
        start = writer.offset
        for entry in files:
            place = writer.add(entry)
            names.add(entry.filename, place)
            if entry.relpath != entry.filename:
                paths.add(entry.relpath, place)
        if files:
            runs.add(files[0].project, start << _SHIFT | (writer.offset - start))
    served_end, count = writer.offset, names.count
    for entry in unserved:
        paths.add(entry.relpath, writer.add(entry))
        count += 1
    records_end = writer.offset
    keys = [table.stored(writer) for table in (names, paths, runs)]
    writer.flush()
    return (*(n for k in keys for n in (k.offset, k.slots, k.count)), served_end,
            records_end, count)


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
