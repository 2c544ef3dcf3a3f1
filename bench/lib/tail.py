"""What makes the tail: pypid's worker loop timed from inside, under wrk.

    python bench/tail.py [--files 54307] [--connections 256] [--duration 10] [--src DIR]

One worker (pinned to the first CPU, wrk to the second) runs with its loop
instrumented by ``serve_instrumented`` (this module, imported in the server): every
turn of the loop (from ``select`` returning to the next ``select``) is timed in wall
time, in the loop thread's own CPU time and in the other threads' CPU time, with its
number of events and the CPU time garbage collection took inside it; every collection
(``gc.callbacks``) is timed; and every answer's wait in the loop, from being queued
to being sent, is measured in loop CPU time. CPU times do not grow when other
processes take the CPU, so the figures hold on a busy machine where wrk's p99 does
not: "not running" (wall minus CPU) is the time the loop was preempted or waited.
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import selectors
import shutil
import statistics
import sys
import time
from array import array
from pathlib import Path
from typing import Any

OUT_ENV = "PYPID_BENCH_TAIL_OUT"  # the server writes its figures to this file


def serve_instrumented() -> None:
    """In the server process: instrument pypid's worker loop, then run ``pypid serve``."""
    import runpy  # noqa: PLC0415 - only in the server

    from pypid.worker import loop  # noqa: PLC0415

    out = os.environ[OUT_ENV]
    turns: list[tuple[float, ...]] = []
    gcs: list[tuple[int, float]] = []
    waits = array("d")
    queued: dict[int, float] = {}
    state = {"gc_start": 0.0, "gc_in_turn": 0.0, "dumped": time.monotonic()}

    def on_gc(phase: str, info: dict[str, Any]) -> None:
        if phase == "start":
            state["gc_start"] = time.thread_time()
            return
        spent = time.thread_time() - state["gc_start"]
        state["gc_in_turn"] += spent
        gcs.append((info["generation"], round(spent * 1e6, 1)))

    def dump() -> None:
        with open(out + ".tmp", "w") as fh:
            json.dump({"turns": turns, "gcs": gcs, "waits": sorted(waits),
                       "frozen": gc.get_freeze_count()}, fh)
        os.replace(out + ".tmp", out)

    class TimedSelector(selectors.DefaultSelector):  # type: ignore[misc,valid-type]
        started: tuple[float, float, float] | None = None
        events = 0

        def select(self, timeout: float | None = None) -> list[Any]:
            wall, mine, process = time.perf_counter(), time.thread_time(), time.process_time()
            if self.started is not None:
                w0, m0, p0 = self.started
                loop_cpu = mine - m0
                turns.append((round((wall - w0) * 1e6, 1), self.events,
                              round(state["gc_in_turn"] * 1e6, 1), round(loop_cpu * 1e6, 1),
                              round((process - p0 - loop_cpu) * 1e6, 1)))
            if time.monotonic() - state["dumped"] > 1.0:
                state["dumped"] = time.monotonic()
                dump()
            ready = super().select(timeout)
            self.started = (time.perf_counter(), time.thread_time(), time.process_time())
            self.events = len(ready)
            state["gc_in_turn"] = 0.0
            return ready

    worker = loop.PypidWorker
    run, queue, push_out = worker.run, worker._queue, worker._push_out

    def run_counted(self: Any) -> None:
        gc.callbacks.append(on_gc)  # in the worker only: the master's load is not the tail
        run(self)

    def queue_timed(self: Any, conn: Any, *parts: bytes) -> None:
        queued.setdefault(conn.fd, time.thread_time())
        queue(self, conn, *parts)

    def push_out_timed(self: Any, conn: Any) -> bool | None:
        sent = push_out(self, conn)
        if sent:
            at = queued.pop(conn.fd, None)
            if at is not None:
                waits.append((time.thread_time() - at) * 1e6)
        return sent

    loop.selectors.DefaultSelector = TimedSelector  # type: ignore[misc]
    worker.run, worker._queue, worker._push_out = run_counted, queue_timed, push_out_timed
    sys.argv[0] = "pypid"
    runpy.run_module("pypid", run_name="__main__", alter_sys=True)


def quantile(values: list[float], q: float) -> float:
    return values[min(len(values) - 1, int(len(values) * q))] if values else 0.0


def report(figures: dict[str, Any]) -> list[str]:
    """The loop's turns, collections and answer waits, in lines."""
    turns = figures["turns"]
    if not turns:
        return ["no turns recorded"]
    walls = sorted(t[0] for t in turns)
    cpus = sorted(t[3] for t in turns)
    waits = figures["waits"]
    slow = sorted(turns, key=lambda t: -t[0])[: max(1, len(turns) // 100)]
    wall = sum(t[0] for t in slow)
    loop_cpu = sum(t[3] for t in slow)
    in_gc = sum(t[2] for t in slow)
    others = sum(t[4] for t in slow)
    lines = [
        f"turns of the loop: {len(turns):,}, {statistics.mean(t[1] for t in turns):.0f} events "
        f"each on average (max {max(t[1] for t in turns)}); objects frozen before the fork: "
        f"{figures['frozen']:,}",
        f"  wall per turn       p50 {quantile(walls, .5):7.0f}  p99 {quantile(walls, .99):7.0f}"
        f"  max {walls[-1]:8.0f} us",
        f"  loop CPU per turn   p50 {quantile(cpus, .5):7.0f}  p99 {quantile(cpus, .99):7.0f}"
        f"  max {cpus[-1]:8.0f} us",
        f"  an answer's wait in the loop (loop CPU, queued to sent): p50 "
        f"{quantile(waits, .5):.0f}  p99 {quantile(waits, .99):.0f}  max "
        f"{waits[-1] if waits else 0:.0f} us",
        f"  the slowest 1% of turns ({len(slow)}): {wall / 1e3:.1f} ms wall = loop CPU "
        f"{loop_cpu / 1e3:.1f} ms (GC {in_gc / 1e3:.1f} ms of it) + other threads' CPU "
        f"{others / 1e3:.1f} ms + not running {(wall - loop_cpu - others) / 1e3:.1f} ms",
        f"  all turns: loop CPU {sum(cpus) / 1e6:.2f} s, other threads' CPU "
        f"{sum(t[4] for t in turns) / 1e6:.2f} s, wall {sum(walls) / 1e6:.2f} s",
    ]
    by_gen: dict[int, list[float]] = {}
    for generation, spent in figures["gcs"]:
        by_gen.setdefault(generation, []).append(spent)
    for generation, spent in sorted(by_gen.items()):
        spent.sort()
        lines.append(f"  GC generation {generation}: {len(spent)} collections, median "
                     f"{quantile(spent, .5):.0f} us, max {spent[-1]:.0f} us, total "
                     f"{sum(spent) / 1e3:.1f} ms")
    if not by_gen:
        lines.append("  GC: no collection in the worker")
    return lines


def main(argv: list[str] | None = None) -> int:
    from bench.lib.corpus import build_corpus, projects_for_files  # noqa: PLC0415
    from bench.lib.host import REPO, log, pick_cpus  # noqa: PLC0415
    from bench.lib.probe import Scenario, first_200, run_wrk  # noqa: PLC0415
    from bench.lib.server import START_TIMEOUT  # noqa: PLC0415
    from bench.lib.targets import PypidTarget  # noqa: PLC0415

    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--files", type=int, default=54_307)
    ap.add_argument("--connections", type=int, default=256)
    ap.add_argument("--duration", type=float, default=10.0)
    ap.add_argument("--python", default=sys.executable)
    ap.add_argument("--src", type=Path, default=REPO)
    args = ap.parse_args(argv)
    corpus = build_corpus(projects_for_files(args.files))
    server_pin, client_pin = pick_cpus(True)
    work = REPO / "bench" / "out" / f"tail-{time.strftime('%Y%m%d-%H%M%S')}"
    work.mkdir(parents=True)
    out = work / "figures.json"
    target = PypidTarget(args.python, 1, args.src,
                         launch="import bench.lib.tail as t; t.serve_instrumented()",
                         env={OUT_ENV: str(out), "PYTHONPATH": f"{args.src}{os.pathsep}{REPO}"})
    server = target.start(corpus, work, server_pin)
    try:
        server.wait_listening(START_TIMEOUT)
        first_200(server, "/simple/", START_TIMEOUT)
        assert server.port is not None
        pages = Scenario("project html", [f"/simple/{p}/" for p in corpus.projects],
                         {"Accept": "text/html"})
        w = run_wrk(server.port, pages, work, duration=args.duration,
                    connections=args.connections, threads=1, pin=client_pin)
        time.sleep(1.5)  # the server writes its figures once a second
    finally:
        server.stop()
    log(f"wrk: {w['rps']:,.0f} req/s, p50 {w['p50_us'] / 1000:.2f} ms, p99 "
        f"{w['p99_us'] / 1000:.2f} ms at {args.connections} connections "
        f"(load average {os.getloadavg()[0]:.1f})")
    print("\n".join(report(json.loads(out.read_text()))))
    shutil.rmtree(work, ignore_errors=True)
    return 0
