"""Reading one file's facts (sha256, Requires-Python, METADATA's hash): the index's only
expensive step, done once per file version and kept in the cache."""

from __future__ import annotations

import gc
import hashlib
import signal
from collections.abc import Callable
from typing import Any, NamedTuple

from pypid.cachedb import FileRow
from pypid.distfile import (
    DistFile,
    InvalidFilenameError,
    MetadataError,
    hash_file,
    parse_filename,
    read_core_metadata,
)
from pypid.storage import FileStat, Storage

WHOLE_BELOW = 8 * 1024 * 1024  # a smaller file is read at once: one read, zip reads from memory


class Examined(NamedTuple):
    """The row to cache (None: nothing to cache), and why the file cannot be served, if so."""

    row: FileRow | None
    problem: str | None = None
    unusable: bool = False  # True: do not read this version of the file again


def examine(root: Storage, stat: FileStat, old: FileRow | None,
            on_cold: Callable[[], None] | None = None) -> Examined:
    """Hash and read one file; ``old`` is its previous row (a touched file keeps its time).

    The file is opened once; below WHOLE_BELOW it is read whole (``read_start``), so
    the archive's reads and seeks (hundreds for a zip) cost no system call. ``on_cold``:
    called before the read waits for the disk (``ReadAhead.fetch``).
    """
    filename = stat.relpath.rsplit("/", 1)[-1]
    try:
        dist = parse_filename(filename)
    except InvalidFilenameError as exc:
        return Examined(None, f"ignoring {stat.relpath}: {exc.reason}")
    try:
        if stat.size < WHOLE_BELOW:
            source = root.read_start(stat.relpath, stat.size + 1, on_cold)  # +1: growing?
            if len(source) != stat.size:
                return Examined(None)  # still being written: the next event brings it back
            sha256 = hashlib.sha256(source).hexdigest()
            meta = read_core_metadata(source, dist)
        else:
            with root.open(stat.relpath) as handle:
                sha256, size = hash_file(handle)
                if size != stat.size:
                    return Examined(None)
                meta = read_core_metadata(handle, dist)
    except OSError as exc:
        return Examined(None, f"ignoring {stat.relpath}: cannot read it ({exc.strerror or exc})",
                        unusable=True)
    except MetadataError as exc:
        row = FileRow(stat.relpath, *stat.identity, None, None, None,
                      stat.mtime_ns / 1e9, exc.reason)
        return Examined(row, f"ignoring {stat.relpath}: {exc.reason}", unusable=True)
    upload_time = root.upload_time(stat)
    if old is not None and old.relpath == stat.relpath and old.sha256 == sha256:
        upload_time = old.upload_time  # same bytes, only touched: keep the first time
    return Examined(described(stat, sha256, meta.metadata, meta.requires_python, upload_time,
                              dist=dist))


def described(stat: FileStat, sha256: str, metadata: bytes | None,
              requires_python: str | None, upload_time: float, *,
              dist: DistFile | None = None) -> FileRow:
    """The cache row of a readable distribution file (``dist``: its parsed name, if known)."""
    if dist is None:
        dist = parse_filename(stat.relpath.rsplit("/", 1)[-1])
    meta_sha = hashlib.sha256(metadata).hexdigest() if metadata is not None else None
    return FileRow(stat.relpath, *stat.identity, sha256, requires_python,
                   meta_sha, upload_time, None, dist.project, str(dist.version))


# -- in a process of the cold start's pool (see ``pypid.index.loading``)

_pool_root: list[Storage] = []  # the root a pool process reads, set when it starts


def start_pool_process(root: Storage) -> None:
    """A pool process's initializer: the root it reads from (inherited across the fork).

    Ctrl-C reaches the whole process group: the master stops the pool, so its
    processes need not print a traceback each.
    """
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    gc.enable()  # forked while the master's load had it off
    _pool_root[:] = [root]


# What crosses between the master and a pool process, as plain tuples (pickling a
# dataclass costs ten times more): a file to read (relpath, size, mtime_ns, inode, its
# old row), and what reading it found (the row's fields after the four the master has
# already, problem, unusable).
Task = tuple[str, int, int, int, FileRow | None]
Found = tuple[tuple[Any, ...] | None, str | None, bool]


def examine_many(files: list[Task]) -> list[Found]:
    """``examine`` for a chunk of files: one task, one message each way, for many files."""
    root = _pool_root[0]
    ahead = ReadAhead(root, files)
    out: list[Found] = []
    for at, (relpath, size, mtime_ns, inode, old) in enumerate(files):
        ahead.at = at
        row, problem, unusable = examine(root, FileStat(relpath, size, mtime_ns, inode), old,
                                         ahead.fetch)
        out.append((None if row is None else row.fields()[4:], problem, unusable))
    return out


AHEAD_FILES = 64  # files of a chunk asked of the disk ahead of the one read ...
AHEAD_BYTES = 32 * 1024 * 1024  # ... and at most this many bytes of them


class ReadAhead:
    """The next files of a chunk, asked of the disk together when a read finds its file
    not in memory (after a reboot, or once the kernel has reclaimed the pages): one small
    file after another, each read waits for the disk in turn; asked together, the disk
    serves them at once (the corpus of 54,307 files: 2.3 s -> 0.8 s to read in two
    processes). A file found in memory asks for nothing: a warm start pays only the
    probe (``read_start_of``). Only
    files read whole are asked (below WHOLE_BELOW): a bigger one is hashed as it is read,
    with the kernel's own read-ahead, and asking for all of it at once would only fill
    memory with what is read seconds later."""

    __slots__ = ("asked", "at", "files", "root")

    def __init__(self, root: Storage, files: list[Task]) -> None:
        self.root, self.files = root, files
        self.at = 0  # the file being read
        self.asked = 0  # files before this one were asked for (or read) already

    def fetch(self) -> None:
        files = self.files
        start = stop = max(self.at + 1, self.asked)
        end = min(len(files), self.at + 1 + AHEAD_FILES)
        total = 0
        while stop < end and total < AHEAD_BYTES:
            total += files[stop][1]
            stop += 1
        self.asked = stop
        if start < stop:
            self.root.fetch_ahead(task[0] for task in files[start:stop]
                                  if task[1] < WHOLE_BELOW)


def task(stat: FileStat, old: FileRow | None) -> Task:
    return stat.relpath, stat.size, stat.mtime_ns, stat.inode, old


def found(stat: FileStat, result: Found) -> Examined:
    """The master's side of ``examine_many``: the result as ``examine`` gives it (a row
    describes the stat it was read for)."""
    fields, problem, unusable = result
    if fields is None:
        return Examined(None, problem, unusable)
    row = FileRow(stat.relpath, stat.size, stat.mtime_ns, stat.inode, *fields)
    return Examined(row, problem, unusable)
