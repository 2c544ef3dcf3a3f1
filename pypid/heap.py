"""The C heap of a long-running pypid process: hand freed pages back to the system.

glibc's malloc keeps memory a process freed, in the middle of its heaps, for later
mallocs. A worker frees much in sizes that rarely fit again (pages of a growing
project, metadata that left its cache, request and upload buffers), so its RSS
climbed ~1.5 MB a minute under uploads while what it held did not (bench/README.md,
issue 18: 17 to 29 MB free inside its heaps within six minutes). ``malloc_trim``
gives every whole free page back (``MADV_DONTNEED``); it takes a millisecond or two
on a heap of hundreds of MB and holds each arena's lock only while it walks it.

Blocks of 128 KiB and more (rendered pages, page-file reads, upload buffers) are
better never in the heaps at all: glibc maps each one on its own and unmaps it when
freed, but after such a free it raises that threshold to the freed size (up to
32 MiB), and from then on those blocks come from the heaps and stay there. A worker
under uploads held ~30 MB more that way. ``keep_large_blocks_apart`` fixes the
threshold, which also stops the raising (bench/README.md, "An hour at 54,307 files").

Python's small objects live in pymalloc's pools (16 KiB), in arenas of 1 MiB. Loading
the index frees hundreds of thousands of them in the master (the entries a seal moves
to a file): ~1,500 pools left wholly free (~25 MB) and free slots all through the
others, in arenas that still hold live objects, so never given back. All of it stays
resident, and a worker's new objects go there first. pymalloc takes a new pool from
the fullest arena that has one free, so a worker's pools wander from master arena to
master arena, and each first write copies a page it shared with the master: ~0.15 MB
a minute in each worker, for hours (bench/README.md). ``fill_free_blocks`` takes that
memory in the master before the fork, with placeholders nothing reads; the workers
then allocate in arenas of their own. The pages were resident already: the master
grows by ~1.5 MB at 54,307 files.
"""

from __future__ import annotations

import ctypes
import logging
import os
import re
import sys
import tempfile
import threading
from collections.abc import Callable

log = logging.getLogger("pypid.heap")

TRIM_EVERY = 10.0  # seconds, in a worker
MMAP_THRESHOLD = 128 * 1024  # glibc's own starting value, kept from now on
_M_MMAP_THRESHOLD = -3  # mallopt's parameter number (malloc.h)


def _find_trim() -> Callable[[int], int] | None:
    try:
        trim = ctypes.CDLL(None).malloc_trim
    except (OSError, AttributeError):  # not glibc (musl, macOS): nothing to give back this way
        return None
    trim.argtypes = [ctypes.c_size_t]
    trim.restype = ctypes.c_int
    return trim  # type: ignore[no-any-return]


_TRIM = _find_trim()


def keep_large_blocks_apart(threshold: int = MMAP_THRESHOLD) -> bool:
    """Map every block of ``threshold`` bytes or more on its own, for good (see the module);
    False where the C library cannot be told."""
    try:
        mallopt = ctypes.CDLL(None).mallopt
    except (OSError, AttributeError):
        return False
    mallopt.argtypes = [ctypes.c_int, ctypes.c_int]
    mallopt.restype = ctypes.c_int
    return bool(mallopt(_M_MMAP_THRESHOLD, threshold))


_POOL_ROW = re.compile(rb"^\s*(\d+)\s+(\d+)\s+(\d+)\s+(\d+)\s+(\d+)\s*$", re.MULTILINE)
_FREE_POOLS = re.compile(rb"(\d+) unused pools \* (\d+) bytes")
_BYTES_HEAD = sys.getsizeof(b"")  # a bytes object of n bytes asks for this + n
_LARGEST = 512  # pymalloc's largest block; larger objects come from malloc
_POOL_HEAD = 48  # a pool's header (CPython 3.11 to 3.13)
_placeholders: list[bytes] = []


class PoolStats:
    """What ``sys._debugmallocstats`` says of pymalloc's pools."""

    def __init__(self, free_blocks: dict[int, int], free_pools: int, pool_size: int) -> None:
        self.free_blocks = free_blocks  # by block size: free blocks in partly used pools
        self.free_pools = free_pools  # pools with no block in use (or never used)
        self.pool_size = pool_size


def pool_stats() -> PoolStats | None:
    """None where the interpreter cannot say (not CPython, or a report this does not read)."""
    report = getattr(sys, "_debugmallocstats", None)
    if report is None:
        return None
    sys.stderr.flush()
    saved = os.dup(2)
    try:
        with tempfile.TemporaryFile() as out:
            os.dup2(out.fileno(), 2)
            try:
                report()  # writes to the C library's stderr
            finally:
                os.dup2(saved, 2)
            out.seek(0)
            text = out.read()
    finally:
        os.close(saved)
    rows = _POOL_ROW.findall(text)
    pools = _FREE_POOLS.search(text)
    if not rows or pools is None:
        return None
    return PoolStats({int(size): int(avail) for _, size, _, _, avail in rows},
                     int(pools.group(1)), int(pools.group(2)))


def fill_free_blocks() -> int:
    """Take pymalloc's free memory with placeholders nothing reads (see the module): the
    free blocks of partly used pools, in the sizes a bytes object can fill, then the
    free pools. How many placeholders; call it in the master, just before fork."""
    stats = pool_stats()
    if stats is None:
        return 0
    taken = 0
    for size, count in sorted(stats.free_blocks.items()):
        length = size - _BYTES_HEAD
        if length < 2 or count <= 0:  # the smallest sizes: no bytes object fits them
            continue
        _placeholders.extend(bytes(length) for _ in range(count))
        taken += count
    per_pool = (stats.pool_size - _POOL_HEAD) // _LARGEST
    count = stats.free_pools * per_pool
    _placeholders.extend(bytes(_LARGEST - _BYTES_HEAD) for _ in range(count))
    return taken + count


def release_placeholders() -> None:
    """Let the placeholders go, before a reload builds the next app: its load then takes
    that memory first, instead of the master growing by an app's size at every reload."""
    _placeholders.clear()


def trim() -> bool:
    """Give the heap's free pages back now; False where the C library cannot."""
    if _TRIM is None:
        return False
    _TRIM(0)  # ctypes lets go of the GIL for the call
    return True


class Trimmer:
    """A daemon thread that calls ``trim()`` every ``every`` seconds until stopped."""

    def __init__(self, every: float = TRIM_EVERY) -> None:
        self.every = every
        self.trims = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="pypid-heap", daemon=True)

    def start(self) -> Trimmer:
        if _TRIM is not None:
            self._thread.start()
        return self

    def _run(self) -> None:
        while not self._stop.wait(self.every):
            try:
                trim()
            except Exception:  # noqa: BLE001 - memory housekeeping must never stop a worker
                log.exception("giving the heap's free memory back failed; not trying again")
                return
            self.trims += 1

    def stop(self) -> None:
        """Stop, and wait for a trim under way to end."""
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join()
