"""bench/load.py and bench/governance.py are scripts, not tests: here that they start and
know their options, that the generated audit log is a valid chain, and the load run's
parts that need no server: the PSS of a process tree, the memory trend and verdict, the
request mix."""

from __future__ import annotations

import collections
import os
import random
import subprocess
import sys
from pathlib import Path

import pytest

from bench.lib import loaddrive
from bench.lib.corpus import Corpus, DistFile
from bench.lib.governance import write_log
from bench.lib.instructions import instructions
from bench.lib.load import unit_environment
from bench.lib.loaddrive import Tally
from bench.lib.loadmix import Mix, basic_auth
from bench.lib.loadreport import kinds as kinds_of
from bench.lib.loadreport import memory, trend, verdict
from bench.lib.sampler import Sample, children, tree_pss
from pypid.events import EventLog

REPO = Path(__file__).resolve().parents[2]


@pytest.mark.parametrize(("script", "options"), [
    ("load.py", ("--seconds", "--files", "--clients", "--upload-rate", "--max-growth-mb",
                 "--workers", "--heap-log", "--heap-trace", "--glibc-malloc")),
    ("governance.py", ("--baseline", "--entries", "--page-files", "--yanked", "--rounds")),
    ("instructions.py", ("--requests", "--warmup", "--src", "--no-nginx", "--scenarios")),
])
def test_help_runs(script: str, options: tuple[str, ...]) -> None:
    proc = subprocess.run([sys.executable, str(REPO / "bench" / script), "--help"],
                          capture_output=True, text=True, timeout=60, check=False)
    assert proc.returncode == 0, proc.stderr
    for option in options:
        assert option in proc.stdout


def test_governance_writes_a_log_that_verifies(tmp_path: Path) -> None:
    """The bench's generated log (written directly, not appended) is a valid chain."""
    write_log(tmp_path / "log", 2000)
    assert EventLog(tmp_path / "log").verify() == (2000, None)


def test_the_load_runs_pypid_with_the_units_malloc_settings() -> None:
    assert unit_environment() == {"GLIBC_TUNABLES": "glibc.malloc.tcache_count=0",
                                  "MALLOC_ARENA_MAX": "2"}


def test_instructions_reads_the_count_of_a_callgrind_dump(tmp_path: Path) -> None:
    dump = tmp_path / "pypid.1.1"
    dump.write_text("version: 1\ncreator: callgrind-3.19.0\nevents: Ir\nsummary: 254577090\n"
                    "fn=(1) main\n1 5\ntotals: 254577090\n")
    assert instructions(dump) == 254_577_090


# --- the soak's parts (issue 18): PSS of a process tree, the trend and verdict, the mix ---

def _fake_proc(root: Path, pid: int, *, pss: int | None, rss: int = 1000,
               children: tuple[int, ...] = (), tasks: int = 1) -> None:
    """/proc/<pid> as the sampler reads it: smaps_rollup, status, task/*/children."""
    d = root / str(pid)
    d.mkdir(parents=True)
    if pss is not None:
        (d / "smaps_rollup").write_text(
            "55d0c0000000-7ffc00000000 ---p 00000000 00:00 0    [rollup]\n"
            f"Rss:                {rss} kB\nPss:                {pss} kB\n"
            "Private_Dirty:        7 kB\n")
    (d / "status").write_text(f"Name:\tpython\nVmRSS:\t{rss} kB\nThreads:\t3\n")
    for n in range(tasks):  # children split over threads: each lists those it forked
        task = d / "task" / str(pid + n)
        task.mkdir(parents=True)
        (task / "children").write_text(" ".join(str(c) for c in children[n::tasks]) + " ")


def test_tree_pss_sums_master_and_every_child(tmp_path: Path) -> None:
    _fake_proc(tmp_path, 10, pss=2048, children=(30, 20), tasks=2)
    _fake_proc(tmp_path, 20, pss=1024, rss=4096)
    _fake_proc(tmp_path, 30, pss=512)
    assert children(10, tmp_path) == [20, 30]
    master, workers, total = tree_pss(10, tmp_path)
    assert master == 2048
    assert workers == [[20, 4096, 1024, 7], [30, 1000, 512, 7]]
    assert total == 2048 + 1024 + 512


def test_tree_pss_is_none_when_a_child_is_gone(tmp_path: Path) -> None:
    _fake_proc(tmp_path, 10, pss=2048, children=(20, 30))
    _fake_proc(tmp_path, 20, pss=1024)  # 30 exited between the listing and the read
    master, workers, total = tree_pss(10, tmp_path)
    assert (master, total) == (2048, None)
    assert workers[1] == [30, None, None, None]


def test_tree_pss_of_this_process_and_a_real_child() -> None:
    """On the real /proc: a child shows up with a PSS, and the sum adds up."""
    child = subprocess.Popen([sys.executable, "-c", "import sys; sys.stdin.read()"],
                             stdin=subprocess.PIPE)
    try:
        master, workers, total = tree_pss(os.getpid())
        mine = [w for w in workers if w[0] == child.pid]
        assert mine
        assert master
        assert mine[0][2]
        if total is not None:  # None only if another child of ours ended meanwhile
            assert total == master + sum(w[2] or 0 for w in workers)
    finally:
        assert child.stdin is not None
        child.stdin.close()
        child.wait(30)


def _sample(t: float, master: int, workers: list[tuple[int, int]], cpu: float = 0.0) -> Sample:
    """One second of the sampler: PSS in MB of master and of (pid, PSS MB) workers."""
    rows: list[list[int | None]] = [[pid, mb * 1024 * 2, mb * 1024, 0] for pid, mb in workers]
    total = master * 1024 + sum(mb * 1024 for _, mb in workers)
    return Sample(t=t, master_rss_kb=master * 1024 * 2, worker_pid=workers[0][0],
                  worker_rss_kb=workers[0][1] * 1024 * 2, worker_fds=10, worker_threads=3,
                  cpu_s=cpu, master_pss_kb=master * 1024, workers=rows, tree_pss_kb=total)


def test_trend_warm_peak_end_and_slope_per_hour() -> None:
    # 0..9 s warm-up climbing to 50, then +1 MB per minute for an hour, sampled every 60 s
    points = [(float(t), 40.0 + t) for t in range(10)]
    points += [(10.0 + 60 * m, 50.0 + m) for m in range(61)]
    t = trend(points, warmup=10, seconds=3610)
    assert t is not None
    assert (t["warm"], t["peak"], t["end"]) == (50.0, 110.0, 110.0)
    assert t["slope_mb_per_hour"] == pytest.approx(60.0)
    assert t["growth_mb"] == pytest.approx(60.0)
    assert t["late_slope_mb_per_hour"] == pytest.approx(60.0)  # a leak keeps its slope


def test_flat_tree_passes_and_a_growing_one_fails() -> None:
    tally = Tally()
    tally.requests["/simple/"] = 10
    flat = [_sample(t, 20, [(100, 30), (101, 30)]) for t in range(0, 120)]
    mem = memory(flat, warmup=30, seconds=120, workers=2)
    assert mem["pss"]["pss_mb"]["tree"]["end"] == 80.0
    assert set(mem["pss"]["pss_mb"]) == {"master", "worker 1", "worker 2", "tree"}
    assert verdict(tally, mem, max_growth_mb=16, server_alive=True, log_trouble=[],
                   workers=2) == []
    # the second worker grows 1 MB every 3 s: 30 MB after the warm-up, RSS and tree PSS
    leak = [_sample(t, 20, [(100, 30), (101, 30 + t // 3)]) for t in range(0, 120)]
    mem = memory(leak, warmup=30, seconds=120, workers=2)
    why = verdict(tally, mem, max_growth_mb=16, server_alive=True, log_trouble=[], workers=2)
    assert any(w.startswith("PSS of master and workers grew") for w in why), why
    assert any(w.startswith("worker 2 RSS grew") for w in why), why
    assert mem["pss"]["pss_mb"]["worker 2"]["slope_mb_per_hour"] == pytest.approx(1200, rel=0.01)


def test_a_replaced_worker_is_counted_as_one_replacement() -> None:
    samples = [_sample(t, 20, [(100, 30), (101 if t < 50 else 205, 30)]) for t in range(100)]
    mem = memory(samples, warmup=10, seconds=100, workers=2)
    assert mem["worker_pids"] == [100, 101, 205]
    why = verdict(Tally(), mem, max_growth_mb=16, server_alive=True, log_trouble=[], workers=2)
    assert why == ["1 worker(s) replaced (pids [100, 101, 205])"]


def _corpus() -> Corpus:
    files = [DistFile(f"p{i}", f"p{i}-1.0-py3-none-any.whl", "0" * 64, 1000 + i, None)
             for i in range(50)]
    files.append(DistFile("p0", "p0-1.0.tar.gz", "0" * 64, 777, None))
    return Corpus(50, Path("/nonexistent"), Path("/nonexistent"),
                  [f"p{i}" for i in range(50)], files, [files[0].filename], 0.0, True)


def test_random_downloads_reach_every_kind_of_file_and_metrics_are_rare() -> None:
    mix = Mix(_corpus(), 8080, {("/simple/p0/", "text/html"): '"e"'}, basic_auth("u", "p"))
    rng = random.Random(7)  # noqa: S311 (a mix, not crypto)
    asks = [mix.read(rng) for _ in range(20_000)]
    by_kind = collections.Counter(a.kind for a in asks)
    assert 0 < by_kind["/metrics"] < by_kind["download random"] / 4
    random_paths = {a.raw.split(b" ")[1] for a in asks if a.kind == "download random"}
    assert len(random_paths) == 51  # every file of the corpus, the sdist too
    only = Mix(_corpus(), 8080, {}, basic_auth("u", "p"), reads=["/metrics"])
    assert {only.read(rng).kind for _ in range(50)} == {"/metrics"}
    sdist = next(a for a in asks if a.raw.startswith(b"GET /packages/p0-1.0.tar.gz "))
    assert (sdist.status, sdist.length) == (200, 777)
    scrape = next(a for a in asks if a.kind == "/metrics")
    assert scrape.raw.startswith(b"GET /metrics HTTP/1.1")
    assert (scrape.status, scrape.media) == (200, "text/plain")


def test_latencies_past_the_cap_are_a_sample_and_the_max_is_exact(
        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(loaddrive, "KEEP_LATENCIES", 100)
    tally = Tally()
    for i in range(1000):
        tally.requests["k"] += 1
        tally.answered["k"] += 1
        tally.latency("k", 0.001 * i)
    assert len(tally.latencies["k"]) == 100
    assert tally.slowest["k"] == pytest.approx(0.999)
    assert kinds_of(tally)[0]["max_ms"] == pytest.approx(999)
