"""Metrics benchmark: index page requests/s with metrics on (this checkout) and off (the
same server before metrics: ``--base``, default ``main``), and the time of a scrape.

    python bench/metrics.py [--projects 200] [--duration 5] [--rounds 2] [--base main]

One run, not a test. Builds a modest root (``bench/ui.py``'s), starts ``python -m pypid
serve`` with one worker and no access log pinned to the first CPU, and runs wrk (one
thread, pinned to the second CPU) on a project's page of the simple index, turn about:
on, off, on, off... The best round of each is compared (the least disturbed by the rest
of the machine; every round is printed, so the noise shows). Then 200 scrapes of
``/metrics`` one after the other: their median and slowest time.
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))  # the repo: bench.lib, tests

from bench.lib.host import HOST, log, pick_cpus  # noqa: E402
from bench.lib.server import Server  # noqa: E402
from bench.ui import LISTENING, _wait_ok, build, wrk  # noqa: E402

PAGE = "/simple/bench-ui-0100/"
SCRAPES = 200


def checkout(ref: str, dest: Path) -> Path:
    """The tree of ``ref`` (the server without metrics), extracted with git archive."""
    dest.mkdir()
    archive = subprocess.run(["git", "-C", str(REPO), "archive", ref, "pypid"],
                             capture_output=True, check=True, timeout=60).stdout
    subprocess.run(["tar", "-x", "-C", str(dest)], input=archive, check=True, timeout=60)
    return dest


def serve(src: Path, work: Path, root: Path, pin: list[str]) -> Server:
    config = work / "pypid.toml"
    config.write_text('[server]\nworkers = 1\n[log]\naccess_log = false\n'
                      '[upstream]\nmode = "off"\n', encoding="utf-8")
    cmd = [*pin, sys.executable, "-m", "pypid", "serve", "--config", str(config),
           "--host", HOST, "--port", "0", "--root", str(root)]
    server = Server("pypid", cmd, env={"PATH": "/usr/bin:/bin", "PYTHONPATH": str(src)},
                    cwd=work, port_regex=LISTENING, port=None)
    server.wait_listening(120)
    _wait_ok(f"http://{HOST}:{server.port}/health")
    return server


def scrape_times(base: str) -> list[float]:
    times = []
    for _ in range(SCRAPES):
        started = time.perf_counter()
        with urllib.request.urlopen(base + "/metrics", timeout=30) as resp:  # noqa: S310
            resp.read()
        times.append((time.perf_counter() - started) * 1000)
    return times


def counting_cost() -> float:
    """Nanoseconds the loop spends counting one page request (its ``_tally``, the page
    cache's hit and the clock read at the start), timed in this process: a figure the
    machine's noise hardly moves, unlike req/s."""
    from types import SimpleNamespace  # noqa: PLC0415

    from pypid.metrics import tally  # noqa: PLC0415
    from pypid.worker.loop import PypidWorker  # noqa: PLC0415

    worker = SimpleNamespace(counts=tally.tally(), routes={}, prefix="")
    head = SimpleNamespace(path=PAGE, method="GET")
    reply = SimpleNamespace(status=200)
    count, hit = tally.LOCAL, ("page_cache_hits",)
    rounds = 200_000

    def one() -> None:
        read_at = time.perf_counter()
        counts = count.counts
        counts[hit] = counts.get(hit, 0) + 1
        PypidWorker._tally(worker, head, reply, read_at)  # noqa: SLF001

    best = float("inf")
    for _ in range(5):
        started = time.perf_counter()
        for _ in range(rounds):
            one()
        best = min(best, (time.perf_counter() - started) / rounds)
    started = time.perf_counter()
    for _ in range(rounds):
        time.perf_counter()  # the loop and the call of one() itself are not the cost
    return (best - (time.perf_counter() - started) / rounds) * 1e9


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--projects", type=int, default=200)
    parser.add_argument("--duration", type=int, default=5)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--connections", type=int, default=32)
    parser.add_argument("--base", default="main", help="git ref of the server without metrics")
    args = parser.parse_args(argv)
    server_pin, client_pin = pick_cpus(True)
    rates: dict[str, list[float]] = {"on": [], "off": []}
    with tempfile.TemporaryDirectory(prefix="pypid-bench-metrics-") as tmp:
        work = Path(tmp)
        root = work / "packages"
        log(f"building {args.projects} projects in {root}")
        build(root, args.projects)
        sources = {"on": REPO, "off": checkout(args.base, work / "base")}
        for _ in range(args.rounds):
            for label, src in sources.items():
                server = serve(src, work, root, server_pin.prefix())
                try:
                    url = f"http://{HOST}:{server.port}{PAGE}"
                    urllib.request.urlopen(url, timeout=30).read()  # noqa: S310 - render once
                    rates[label].append(wrk(url, args, client_pin.prefix()))
                    log(f"metrics {label}: {rates[label][-1]:.0f} req/s")
                finally:
                    server.stop()
        server = serve(REPO, work, root, server_pin.prefix())
        try:
            times = scrape_times(f"http://{HOST}:{server.port}")
        finally:
            server.stop()
    on, off = max(rates["on"]), max(rates["off"])
    cost = counting_cost()
    print(f"\npypid metrics, {args.projects} projects, 1 worker on one CPU, wrk -t1 "
          f"-c{args.connections} -d{args.duration}s, {args.rounds} rounds each, turn about")
    print(f"{PAGE} with metrics on:  {on:8.0f} req/s (rounds: "
          f"{', '.join(f'{r:.0f}' for r in rates['on'])})")
    print(f"{PAGE} with metrics off: {off:8.0f} req/s (rounds: "
          f"{', '.join(f'{r:.0f}' for r in rates['off'])}; {args.base})")
    print(f"on / off: {on / off:.3f} (best rounds)")
    print(f"counting costs {cost:.0f} ns a page request: at {off:.0f} req/s that is "
          f"{1 / (1 + cost * 1e-9 * off):.3f} of the speed without it")
    print(f"/metrics scrape: median {statistics.median(times):.2f} ms, slowest "
          f"{max(times):.2f} ms over {SCRAPES}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
