"""The bulk load: the whole root compared with the cache, in the master before workers fork.

The files the cache does not know are read in a pool of processes, one per
core, in chunks (a task costs two pickled messages, so one per file would cost more
than reading a small file); the master shows their rows and writes them to the cache
as the chunks come back.
"""

from __future__ import annotations

import collections
import contextlib
import gc
import logging
import multiprocessing
import os
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import Executor, Future, ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from typing import TYPE_CHECKING

from pypid.cachedb import FileRow
from pypid.index.examine import (
    Examined,
    Found,
    examine,
    examine_many,
    found,
    start_pool_process,
    task,
)
from pypid.storage import FileStat

if TYPE_CHECKING:
    from pypid.index.model import ReadModel as Index

log = logging.getLogger("pypid.index")

BATCH_ROWS = 2000  # new rows written to the cache per transaction
POOL_FROM = 256  # fewer files to read than this: read here, no processes
# The master's share of each file (show it, cache its row) is about a quarter of a
# reader's: it keeps up with a few readers; more only cost memory and forks.
POOL_MAX = 8
CHUNK = 128  # files per task: ~5 ms of reading, sent as the scan finds them

ToRead = list[tuple[FileStat, FileRow | None]]
Scan = tuple[int, int]  # what a scan of the root found: (files, fingerprint)


def load(index: Index, progress: Callable[[int, int], None] | None = None,
         processes: int | None = None) -> Scan:
    """Scan the whole root; hash only what the cache does not already know.

    A file whose cached row still matches its identity costs one stat; the rest
    are read (``progress(done, total)`` as they are) and their rows cached: by a
    pool of processes (``processes``, default one per usable core) that starts
    reading while the scan goes on. Returns the scan's ``fingerprint``: the index
    is current while the root still has it.
    """
    index.ledger.catch_up()
    index.apply_marks(index.ledger.marks)
    with _no_gc(), index.loading(), _Readers(index, processes) as readers:
        gone: list[FileRow] = []
        if not index.cache.has_rows():  # a first start: each file is sent as soon as found
            for stat in index.root.iter_files():
                readers.add(stat, None)
            scan = fingerprint(stat for stat, _ in readers.to_read)
        else:  # the cache's rows one at a time, against the listing (held once in memory)
            stats = {stat.relpath: stat for stat in index.root.iter_files()}
            scan = fingerprint(stats.values())
            for row in index.cache.iter_files():
                stat = stats.pop(row.relpath, None)
                if stat is None:
                    gone.append(row)
                elif row.identity == stat.identity:
                    index.show(stat, row)
                else:
                    readers.add(stat, row)
            for stat in stats.values():
                readers.add(stat, None)
            del stats
        new_rows = []
        total = len(readers.to_read)
        for done, (stat, result) in enumerate(readers.results(), 1):
            row = index.examined(stat, result)
            if row is not None:
                new_rows.append(row)
                index.show(stat, row)
            if len(new_rows) >= BATCH_ROWS:
                index.cache.put(new_rows)
                new_rows = []
            if progress is not None:
                progress(done, total)
        index.cache.put(new_rows)
        index.cache.forget((row.relpath, row.identity) for row in gone)
    log.info("indexed %d files of %d projects in %s (%d new or changed)",
             index.file_count(), index.project_count(), index.root.path, total)
    return scan


@contextlib.contextmanager
def _no_gc() -> Iterator[None]:
    """No cyclic collection while the load builds the index: its objects hold no cycles,
    and at 100,000 files full collections walking all of them took ~0.5 s of the start
    (the server collects once after, before the fork)."""
    enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if enabled:
            gc.enable()


def load_cached(index: Index, problem: str) -> None:
    """The store cannot be listed (``problem``): show the files the cache describes, as
    they were when this node last saw them, with the marks of the log's local copy, and
    say so in one line. The follower lists the store once it answers."""
    index.ledger.catch_up()
    index.apply_marks(index.ledger.marks)
    with index.loading():
        for row in index.cache.iter_files():
            index.show(FileStat(row.relpath, row.size, row.mtime_ns, row.inode), row)
    files, projects = index.file_count(), index.project_count()
    if files:
        index.behind = (f"started while the store was away: serving the {files} files of "
                        f"{projects} projects this node held then")
        log.warning("%s; %s, until the store answers", problem, index.behind)
    else:
        index.behind = "started while the store was away, with no copy of its index"
        log.warning("%s; this node has never read the bucket: it serves nothing until "
                    "the store answers (then it starts by itself)", problem)


def fingerprint(stats: Iterable[FileStat]) -> Scan:
    """The files and their identities, in two numbers (in any order; the same in every
    process forked from this one, which shares its string hashes)."""
    count = total = 0
    for stat in stats:
        count += 1
        total += hash((stat.relpath, stat.size, stat.mtime_ns, stat.inode))
    return count, total & 0xFFFF_FFFF_FFFF_FFFF


class _Readers:
    """Reads the files ``add`` is given: in a pool of processes once there are enough of
    them (and more than one core, and a local root), chunk by chunk as they are added;
    otherwise, or when the pool cannot run, here. ``results`` gives them in order."""

    def __init__(self, index: Index, processes: int | None) -> None:
        if processes is None:
            usable = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else 1
            processes = min(usable, POOL_MAX)
        self.index, self.processes = index, processes
        # A bucket's client must not cross a fork (its connections would be shared).
        self.parallel = processes > 1 and not index.root.is_remote
        self.to_read: ToRead = []
        self.pool: Executor | None = None
        self.futures: collections.deque[Future[list[Found]]] = collections.deque()
        self.sent = 0  # files of to_read sent to the pool

    def add(self, stat: FileStat, old: FileRow | None) -> None:
        self.to_read.append((stat, old))
        if self.parallel and len(self.to_read) - self.sent >= CHUNK and (
                self.pool is not None or len(self.to_read) >= POOL_FROM):
            self._send()

    def _send(self) -> None:
        chunk = [task(stat, old) for stat, old in self.to_read[self.sent:self.sent + CHUNK]]
        try:
            if self.pool is None:
                self.pool = _pool(self.index, self.processes)
            self.futures.append(self.pool.submit(examine_many, chunk))
        except (OSError, BrokenProcessPool, RuntimeError) as exc:
            self._alone(exc)
            return
        self.sent += len(chunk)

    def _alone(self, exc: BaseException) -> None:
        log.warning("cannot read files in parallel (%s); reading the rest in one process",
                    exc)
        self.parallel = False

    def results(self) -> Iterator[tuple[FileStat, Examined]]:
        while self.parallel and self.pool is not None and self.sent < len(self.to_read):
            self._send()  # the last, shorter chunks
        done = 0
        try:
            while self.futures:
                # Let go of each chunk's results once shown: kept to the end, the tuples of
                # all of them (~40 MB at 54,307 files) left holes in the master's heap
                # among the index's objects, heap the workers then inherit.
                results = self.futures.popleft().result()
                for result in results:
                    yield self.to_read[done][0], found(result)
                    done += 1
                del results
        except (OSError, BrokenProcessPool) as exc:  # no pool here (sandbox, memory): alone
            self._alone(exc)
        for stat, old in self.to_read[done:]:
            yield stat, examine(self.index.root, stat, old)

    def __enter__(self) -> _Readers:
        return self

    def __exit__(self, *exc: object) -> None:
        if self.pool is not None:
            self.pool.shutdown(wait=True, cancel_futures=True)


def _pool(index: Index, processes: int) -> Executor:
    """Forked processes: they inherit the imported modules and the root, so start at once."""
    return ProcessPoolExecutor(processes, mp_context=multiprocessing.get_context("fork"),
                               initializer=start_pool_process, initargs=(index.root,))
