"""pypid as installed, beside the side-by-side runs: its default two workers, not pinned.

A cold start (no cache) timed to the first 200 of ``/simple/``, with every core the
machine has (the start reads new files in a pool of processes, one per core): first
with nothing in memory, as after a reboot (the page cache dropped: root only), then with
the corpus's files in memory, as just after they were copied in (read through first:
this VM pages out page cache idle for a minute, so without that the figure would depend
on how long the runs before took). That second server stays up: the
proportional set size (PSS) of the master and both workers sampled every 0.2 s while
every scenario of ``--compare``, the gzipped project pages, downloads of every file of
the corpus in random order and ``/metrics`` scrapes are asked for in turn: the peak over
the whole load is the figure (issue 18: at most 120 MB at 10k files). The random
downloads and the scrapes read every file's entry, the reads that once un-shared the
memory workers inherit (+33 MB and +11 MB a worker at 54,307 files).
"""

from __future__ import annotations

import argparse
import random
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from bench.lib.corpus import Corpus
from bench.lib.host import Pin, drop_page_cache, log, read_through
from bench.lib.probe import JSON_V1, Scenario, first_200, run_wrk
from bench.lib.procs import memory_of
from bench.lib.server import START_TIMEOUT
from bench.lib.targets import PypidTarget

WORKERS = 2
SAMPLE_EVERY = 0.2  # seconds between two PSS samples


class PeakPss:
    """A thread reading the PSS of a process tree until stopped; keeps the peak."""

    def __init__(self, pid: int) -> None:
        self.pid = pid
        self.peak_mb = 0.0
        self.peak_processes: list[float] = []
        self.samples = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.is_set():
            self.sample()
            self._stop.wait(SAMPLE_EVERY)

    def sample(self) -> float | None:
        mem = memory_of(self.pid)
        total = mem["total_pss_kb"]
        if total is None:
            return None
        self.samples += 1
        if total / 1024 > self.peak_mb:
            self.peak_mb = total / 1024
            self.peak_processes = [round((p["pss_kb"] or 0) / 1024, 1)
                                   for p in [mem["master"], *mem["workers"]]]
        return float(total / 1024)

    def __enter__(self) -> PeakPss:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()


def measure_footprint(python: str, src: Path, corpus: Corpus,
                      scenarios_for: Callable[[int], list[Scenario]], *, workdir: Path,
                      args: argparse.Namespace) -> dict[str, Any]:
    """Cold start and peak PSS of pypid with two workers (see the module docstring);
    ``scenarios_for(port)``: the side-by-side scenarios for the server on that port."""
    workdir.mkdir(parents=True, exist_ok=True)
    target = PypidTarget(python, WORKERS, src, name="pypid-footprint")
    pin = Pin(None, args.nice)
    res: dict[str, Any] = {"workers": WORKERS, "status": "ok"}
    target.reset_cache(corpus)
    if (problem := drop_page_cache()) is None:
        server = target.start(corpus, workdir, pin)
        try:
            server.wait_listening(START_TIMEOUT)
            res["cold_start_disk_s"] = first_200(server, "/simple/", START_TIMEOUT,
                                                 args.request_timeout)
        except RuntimeError as exc:
            res["cold_start_disk"] = str(exc).splitlines()[0]
        finally:
            server.stop()
        target.reset_cache(corpus)
    else:
        res["cold_start_disk"] = problem
    read_through([corpus.root / f.filename for f in corpus.files])
    server = target.start(corpus, workdir, pin)
    try:
        server.wait_listening(START_TIMEOUT)
        res["cold_start_s"] = first_200(server, "/simple/", START_TIMEOUT, args.request_timeout)
        if server.wait_pages_rendered(START_TIMEOUT):  # the steady state, not the first renders
            res["pages_rendered_s"] = time.perf_counter() - server.t_spawn
        time.sleep(1.0)  # the workers' own start (each watches the root)
        assert server.port is not None
        scenarios = scenarios_for(server.port)
        gzip = {"Accept-Encoding": "gzip"}
        html = [sc for sc in scenarios if sc.name == "project html"]
        extra = [Scenario(f"{sc.name} gzip", sc.paths, {**sc.headers, **gzip}) for sc in html]
        extra += [Scenario("project json gzip", sc.paths, {"Accept": JSON_V1, **gzip})
                  for sc in html]
        every_file = [f"/packages/{f.filename}" for f in corpus.files]
        random.Random(2).shuffle(every_file)  # noqa: S311 (sampling)
        extra += [Scenario("download every file", every_file),
                  Scenario("metrics", ["/metrics"], connections=2)]
        duration = max(1.0, args.duration / 2)
        with PeakPss(server.pid) as peak:
            res["pss_idle_mb"] = peak.sample()
            for sc in [*scenarios, *extra]:
                run_wrk(server.port, sc, workdir, duration=duration,
                        connections=sc.connections or args.connections, threads=2, pin=pin,
                        timeout=args.request_timeout)
                if server.proc.poll() is not None:
                    raise RuntimeError(f"pypid died during {sc.name}:\n{server.tail()}")
            res["pss_end_mb"] = peak.sample()
        res["pss_peak_mb"] = peak.peak_mb
        res["pss_peak_processes"] = peak.peak_processes
        res["samples"] = peak.samples
        disk = (f"{res['cold_start_disk_s']:.1f} s" if "cold_start_disk_s" in res
                else res.get("cold_start_disk"))
        log(f"    two workers, not pinned: cold start {res['cold_start_s']:.1f} s to /simple/ "
            f"(nothing in memory: {disk}); "
            f"PSS idle {res['pss_idle_mb']:.1f} MB, peak {peak.peak_mb:.1f} MB "
            f"{peak.peak_processes} over {len(scenarios) + len(extra)} scenarios "
            f"({peak.samples} samples)")
    except RuntimeError as exc:
        res["status"], res["reason"] = "failed", str(exc).splitlines()[0]
        log(f"    footprint FAILED: {exc}")
    finally:
        server.stop()
    return res
