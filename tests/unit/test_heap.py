"""The worker's heap trimmer (pypid.heap): it gives freed pages back, on its own thread."""

from __future__ import annotations

import subprocess
import sys
import time

from pypid import heap


def _rss_kb() -> int:
    with open("/proc/self/status") as status:
        return next(int(line.split()[1]) for line in status if line.startswith("VmRSS:"))


def test_trim_gives_freed_pages_back() -> None:
    # Freed blocks held in place by one live block after them: no top-of-heap trim
    # can release them, only malloc_trim's walk.
    held = []
    for _ in range(4000):
        held.append((bytearray(16 * 1024), bytearray(64)))
    fresh = [small for _, small in held]
    del held
    before = _rss_kb()
    assert heap.trim() is True  # glibc: Debian's and every CI machine's
    assert _rss_kb() < before - 16 * 1024, "under 16 MB of ~64 MB freed came back"
    del fresh


def test_trimmer_runs_until_stopped() -> None:
    trimmer = heap.Trimmer(every=0.01).start()
    try:
        deadline = time.monotonic() + 5
        while trimmer.trims < 3 and time.monotonic() < deadline:
            time.sleep(0.01)
        assert trimmer.trims >= 3
    finally:
        trimmer.stop()
    assert not trimmer._thread.is_alive()  # noqa: SLF001 - stop() waited for it


_LARGE_BLOCKS = """
import sys
from pypid import heap

def rss_kb():
    with open("/proc/self/status") as status:
        return next(int(line.split()[1]) for line in status if line.startswith("VmRSS:"))

if sys.argv[1] == "apart":
    assert heap.keep_large_blocks_apart()
big = bytearray(8 << 20)
del big  # glibc would now take blocks below 8 MB from its heaps
before = rss_kb()
blocks = [bytearray(256 * 1024) for _ in range(48)]
blocks.append(bytearray(4096))  # glibc's, above them: holds the top of the heap
del blocks[:48]
print(rss_kb() - before)
"""


def _grown_kb(mode: str) -> int:
    done = subprocess.run([sys.executable, "-c", _LARGE_BLOCKS, mode], check=True,
                          capture_output=True, text=True, timeout=60)
    return int(done.stdout)


def test_large_blocks_go_back_when_freed() -> None:
    """After one large free glibc takes blocks below that size from its heaps, where they
    stay once freed (12 MB here); kept apart, each is unmapped when freed."""
    assert _grown_kb("heaps") > 8 * 1024  # what the fix is for (glibc's behaviour)
    assert _grown_kb("apart") < 4 * 1024


_HOLES = """
import sys
from pypid import heap

made, large = [], []
for i in range(60_000):  # 80-byte blocks, pools full; 512-byte ones in pools between
    made.append(bytes(40 + i % 2))
    large.append(bytes(470))
del made[::2]  # every other one freed: free slots all through those pools
del large  # ~1,900 pools wholly free, in arenas the small ones keep
before = heap.pool_stats()
taken = heap.fill_free_blocks()
after = heap.pool_stats()
heap.release_placeholders()  # a reload: the next app's load takes that memory again
released = heap.pool_stats()
print(before.free_blocks[80], taken, after.free_blocks[80], before.free_pools, after.free_pools,
      released.free_pools)
"""


def test_the_free_memory_of_pymalloc_is_taken_before_a_fork() -> None:
    """What a worker would allocate into, copying the master's pages."""
    done = subprocess.run([sys.executable, "-c", _HOLES], check=True, capture_output=True,
                          text=True, timeout=60)
    free_before, taken, free_after, pools_before, pools_after, pools_released = map(
        int, done.stdout.split())
    assert free_before >= 29_000  # a few reused meanwhile
    assert taken >= free_before
    assert free_after < 1_000  # what the fill's own work left behind
    assert pools_after < 64 <= pools_before  # a new arena's, at most
    assert pools_released >= pools_before
