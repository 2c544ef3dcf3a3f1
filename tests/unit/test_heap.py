"""The worker's heap trimmer (pypid.heap): it gives freed pages back, on its own thread."""

from __future__ import annotations

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
