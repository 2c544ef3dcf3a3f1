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
"""

from __future__ import annotations

import ctypes
import logging
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
