"""The bulk load: the whole root compared with the cache, in the master before workers fork.

The files the cache does not know are read in a pool of processes, one per
core, in chunks (a task costs two pickled messages, so one per file would cost more
than reading a small file); the master shows their rows and writes them to the cache
as the chunks come back.
"""

from __future__ import annotations

import contextlib
import gc
import logging
import multiprocessing
import os
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import Executor, ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from typing import TYPE_CHECKING

from pypid.cachedb import FileRow
from pypid.index.examine import (
    Examined,
    ReadAhead,
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
CHUNK_MIN, CHUNK_MAX = 16, 256  # files per task

ToRead = list[tuple[FileStat, FileRow | None]]
Scan = tuple[int, int]  # what a scan of the root found: (files, fingerprint)


def load(index: Index, progress: Callable[[int, int], None] | None = None,
         processes: int | None = None) -> Scan:
    """Scan the whole root; hash only what the cache does not already know.

    A file whose cached row still matches its identity costs one stat; the rest
    are read (``progress(done, total)`` as they are) and their rows cached.
    ``processes``: how many read them (default: one per usable core). Returns
    the scan's ``fingerprint``: the index is current while the root still has it.
    """
    index.ledger.catch_up()
    index.apply_marks(index.ledger.marks)
    with no_gc(), index.loading():
        stats = {stat.relpath: stat for stat in index.root.iter_files()}
        scan = fingerprint(stats.values())
        to_read: ToRead = []
        gone: list[FileRow] = []
        for row in index.cache.iter_files():
            stat = stats.pop(row.relpath, None)
            if stat is None:
                gone.append(row)
            elif row.identity == stat.identity:
                index.show(stat, row)
            else:
                to_read.append((stat, row))
        to_read.extend((stat, None) for stat in stats.values())
        del stats
        new_rows = []
        for done, (stat, found) in enumerate(_examined(index, to_read, processes), 1):
            row = index.examined(stat, found)
            if row is not None:
                new_rows.append(row)
                index.show(stat, row)
            if len(new_rows) >= BATCH_ROWS:
                index.cache.put(new_rows)
                new_rows = []
            if progress is not None:
                progress(done, len(to_read))
        index.cache.put(new_rows)
        index.cache.forget((row.relpath, row.identity) for row in gone)
    log.info("indexed %d files of %d projects in %s (%d new or changed)",
             index.file_count(), index.project_count(), index.root.path, len(to_read))
    return scan


@contextlib.contextmanager
def no_gc() -> Iterator[None]:
    """No cyclic collection while the load (and the server's build around it) makes the
    index: its objects hold no cycles, and at 100,000 files full collections walking all
    of them again and again cost ~0.1 s of the start (the server collects once after,
    before the fork). Nested uses leave it as the outer one found it."""
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


def _examined(index: Index, to_read: ToRead, processes: int | None
              ) -> Iterator[tuple[FileStat, Examined]]:
    """What reading each file found, in order: in a pool when there are many and
    more than one core, else (or when the pool cannot run) here."""
    if processes is None:
        usable = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else 1
        processes = min(usable, POOL_MAX)
    done = 0
    # A bucket's client must not cross a fork (its connections would be shared).
    if processes > 1 and len(to_read) >= POOL_FROM and not index.root.is_remote:
        size = max(CHUNK_MIN, min(CHUNK_MAX, len(to_read) // (processes * 8) or 1))
        tasks = [task(stat, old) for stat, old in to_read]
        chunks = [tasks[at:at + size] for at in range(0, len(tasks), size)]
        del tasks
        try:
            with _pool(index, processes) as pool:
                for results in pool.map(examine_many, chunks):
                    for result in results:
                        stat = to_read[done][0]
                        yield stat, found(stat, result)
                        done += 1
        except (OSError, BrokenProcessPool) as exc:  # no pool here (sandbox, memory): alone
            log.warning("cannot read files in parallel (%s); reading the rest in one process",
                        exc)
    rest = to_read[done:]
    ahead = ReadAhead(index.root, [task(stat, old) for stat, old in rest])
    for at, (stat, old) in enumerate(rest):
        ahead.at = at
        yield stat, examine(index.root, stat, old, ahead.fetch)


def _pool(index: Index, processes: int) -> Executor:
    """Forked processes: they inherit the imported modules and the root, so start at once."""
    return ProcessPoolExecutor(processes, mp_context=multiprocessing.get_context("fork"),
                               initializer=start_pool_process, initargs=(index.root,))
