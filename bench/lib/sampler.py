"""Once a second, what /proc says about a running server: RSS, PSS, descriptors, threads, CPU.

A thread of its own, so a busy client event loop cannot delay the samples. PSS (the
``Pss:`` line of ``/proc/PID/smaps_rollup``) divides each shared page among the processes
mapping it, so master plus workers add up to what the tree really holds; RSS counts a
page the workers share with the master once in each.
"""

from __future__ import annotations

import os
import threading
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from bench.lib.procs import kb_field, process_tree, tree_cpu_seconds


@dataclass
class Sample:
    t: float  # seconds since the sampler started
    master_rss_kb: int | None
    worker_pid: int | None  # the (first) worker; a new pid means the worker was replaced
    worker_rss_kb: int | None
    worker_fds: int | None
    worker_threads: int | None
    cpu_s: float  # utime + stime of the server's whole tree so far
    master_pss_kb: int | None = None
    # every worker (child of the master), by pid: [pid, rss_kb, pss_kb, private_dirty_kb]
    workers: list[list[int | None]] = field(default_factory=list)
    tree_pss_kb: int | None = None  # master + workers; None when a reading failed


def children(pid: int, proc: Path = Path("/proc")) -> list[int]:
    """The children of ``pid`` (forked by any of its threads), by pid."""
    out: set[int] = set()
    try:
        tasks = list((proc / str(pid) / "task").iterdir())
    except OSError:
        return []
    for task in tasks:
        try:
            out.update(int(c) for c in (task / "children").read_text().split())
        except (OSError, ValueError):
            continue
    return sorted(out)


def smaps_rollup(pid: int, proc: Path = Path("/proc")) -> dict[str, int]:
    """The kB fields of ``/proc/PID/smaps_rollup`` (Rss, Pss, Private_Dirty, ...); {} if gone."""
    out = {}
    try:
        text = (proc / str(pid) / "smaps_rollup").read_text()
    except OSError:
        return out
    for line in text.splitlines():
        parts = line.split()
        if len(parts) == 3 and parts[2] == "kB":
            out[parts[0].rstrip(":")] = int(parts[1])
    return out


def tree_pss(master: int, proc: Path = Path("/proc")) -> tuple[int | None, list[list[int | None]],
                                                              int | None]:
    """PSS (kB) of ``master``, [pid, rss, pss, private_dirty] of each child, and their sum.

    The sum is None when any of them could not be read (a worker replaced in between).
    """
    mine = smaps_rollup(master, proc).get("Pss")
    workers: list[list[int | None]] = []
    for child in children(master, proc):
        roll = smaps_rollup(child, proc)
        rss = kb_field(str(proc / str(child) / "status"), "VmRSS")
        workers.append([child, rss, roll.get("Pss"), roll.get("Private_Dirty")])
    parts = [mine, *(w[2] for w in workers)]
    total = None if any(p is None for p in parts) else sum(p for p in parts if p is not None)
    return mine, workers, total


def _count_fds(pid: int) -> int | None:
    try:
        return len(os.listdir(f"/proc/{pid}/fd"))
    except OSError:
        return None


def sample(master: int, t: float) -> Sample:
    tree = process_tree(master)
    worker = tree[1] if len(tree) > 1 else None
    master_pss, workers, total = tree_pss(master)
    return Sample(
        t=t,
        master_rss_kb=kb_field(f"/proc/{master}/status", "VmRSS"),
        worker_pid=worker,
        worker_rss_kb=kb_field(f"/proc/{worker}/status", "VmRSS") if worker else None,
        worker_fds=_count_fds(worker) if worker else None,
        worker_threads=kb_field(f"/proc/{worker}/status", "Threads") if worker else None,
        cpu_s=tree_cpu_seconds(tree),
        master_pss_kb=master_pss,
        workers=workers,
        tree_pss_kb=total,
    )


class Sampler:
    """Samples ``master``'s tree every ``interval`` seconds until stop()."""

    def __init__(self, master: int, interval: float = 1.0) -> None:
        self.master = master
        self.interval = interval
        self.samples: list[Sample] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="sampler", daemon=True)
        self.t0 = time.monotonic()

    def start(self) -> Sampler:
        self.t0 = time.monotonic()
        self._thread.start()
        return self

    def stop(self) -> list[Sample]:
        self._stop.set()
        self._thread.join(5)
        self.samples.append(sample(self.master, time.monotonic() - self.t0))
        return self.samples

    def _run(self) -> None:
        tick = 0
        while not self._stop.is_set():
            self.samples.append(sample(self.master, time.monotonic() - self.t0))
            tick += 1
            self._stop.wait(max(0.0, self.t0 + tick * self.interval - time.monotonic()))


def slope(points: list[tuple[float, float]]) -> float | None:
    """Least-squares slope of (x, y) points, or None for fewer than two distinct x.

    >>> slope([(0, 1), (1, 3), (2, 5)])
    2.0
    """
    if len(points) < 2:
        return None
    n = len(points)
    mx = sum(x for x, _ in points) / n
    my = sum(y for _, y in points) / n
    sxx = sum((x - mx) ** 2 for x, _ in points)
    if sxx == 0:
        return None
    return sum((x - mx) * (y - my) for x, y in points) / sxx


def as_dicts(samples: list[Sample]) -> list[dict[str, Any]]:
    return [asdict(s) for s in samples]
