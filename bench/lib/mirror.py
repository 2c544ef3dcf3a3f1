"""The mirror benchmark (issue 15): cached mirrored pages and files against local ones, the
first byte of an uncached file against upstream's own, and many clients on one uncached
big file (how many upstream downloads, how much each worker's memory grows).

One corpus, split in two: the mirror (``upstream.mode = "cache"``) serves the
even-numbered projects from its package root, and its upstream (a second pypid) the
odd-numbered ones, so local and mirrored pages have the same shapes. The mirror runs on
the first CPU; wrk, the clients and the upstream on the second. Not a test: it prints
figures and checks the targets, and asserts no time.
"""

from __future__ import annotations

import argparse
import dataclasses
import hashlib
import http.client
import json
import os
import shutil
import statistics
import sys
import threading
import time
from pathlib import Path
from typing import Any

from bench.lib.corpus import OUT_DIR, Corpus, build_corpus, projects_for_files
from bench.lib.host import HOST, Pin, ensure_wrk, log, machine, pick_cpus
from bench.lib.probe import JSON_V1, Scenario, first_200, get, run_wrk
from bench.lib.procs import memory_of, process_tree, tree_cpu_seconds
from bench.lib.server import START_TIMEOUT, Server
from bench.lib.targets import PypidTarget
from tests.builders import make_wheel

BIG_PROJECT = "bench-mirror-big"
READ = 1024 * 1024  # a crowd client's read size
TARGETS = {"ratio": 0.8, "first_byte_ms": 50.0, "downloads": 1, "growth_mb": 20.0}


@dataclasses.dataclass
class Setup:
    local: list[str]  # projects in the mirror's own root
    mirrored: list[str]  # projects only upstream has
    local_files: list[str]  # the ~100 KB wheels of each side
    mirrored_files: list[tuple[str, str]]  # (project, file name)
    uncached: list[tuple[str, str]]  # small upstream files nobody asked for yet
    big: str  # the big wheel's file name, upstream only


def split_roots(corpus: Corpus, work: Path, big_mb: int, n_uncached: int) -> Setup:
    """Hard links of the corpus: even projects in ``work/local``, odd in ``work/upstream``,
    plus a ``big_mb`` MB wheel upstream."""
    index = {name: i for i, name in enumerate(corpus.projects)}
    side = {True: work / "local", False: work / "upstream"}
    for folder in side.values():
        folder.mkdir(parents=True)
    for f in corpus.files:
        os.link(corpus.root / f.filename, side[index[f.project] % 2 == 0] / f.filename)
    local = [p for p in corpus.projects if index[p] % 2 == 0]
    mirrored = [p for p in corpus.projects if index[p] % 2 == 1]
    by_name = {f.filename: f.project for f in corpus.files}
    big_local = [n for n in corpus.big_files if index[by_name[n]] % 2 == 0]
    big_mirrored = [(by_name[n], n) for n in corpus.big_files if index[by_name[n]] % 2 == 1]
    chosen = {p for p, _ in big_mirrored}
    uncached = [(f.project, f.filename) for f in corpus.files
                if index[f.project] % 2 == 1 and f.project not in chosen][:n_uncached]
    payload = os.urandom(big_mb * 1024 * 1024)
    big = make_wheel(side[False], BIG_PROJECT, "1.0", payload=payload).name
    return Setup(local, mirrored, big_local, big_mirrored, uncached, big)


def start(target: PypidTarget, root: Path, corpus: Corpus, work: Path, pin: Pin) -> Server:
    work.mkdir(parents=True, exist_ok=True)
    server = target.start(dataclasses.replace(corpus, root=root), work, pin)
    try:
        server.wait_listening(START_TIMEOUT)
        first_200(server, "/health", START_TIMEOUT)
        target.check_source(server)
    except BaseException:
        server.stop()
        raise
    return server


def warm(port: int, paths: list[str], headers: dict[str, str]) -> None:
    """Ask for every path once (mirrored pages and files into the cache); each must be 200."""
    for path in paths:
        probe = get(port, path, headers)
        if probe.status != 200:
            raise RuntimeError(f"GET {path}: HTTP {probe.status} while warming up")


def wrk_pairs(server: Server, pairs: list[tuple[str, Scenario, Scenario]], work: Path,
              args: argparse.Namespace, pin: Pin) -> list[dict[str, Any]]:
    """wrk on the local and the mirrored scenario of each pair, turn about (local first in
    even rounds, mirrored first in odd ones, as the machine's other load drifts),
    ``rounds`` times; the medians of req/s and of the server's CPU time per request."""
    assert server.port is not None
    rows = []
    for name, local, mirrored in pairs:
        runs: dict[str, list[tuple[float, float, float]]] = {"local": [], "mirrored": []}
        for turn in range(args.rounds):
            sides = [("local", local), ("mirrored", mirrored)]
            for label, scenario in sides[::-1] if turn % 2 else sides:  # neither always first
                pids = process_tree(server.pid)
                cpu = tree_cpu_seconds(pids)
                res = run_wrk(server.port, scenario, work, duration=args.duration,
                              connections=args.connections, threads=1, pin=pin)
                if res["errors"]:
                    raise RuntimeError(f"{name} {label}: wrk counted {res['errors']} errors")
                used = tree_cpu_seconds(pids) - cpu
                runs[label].append((res["rps"], used / max(res["requests"], 1) * 1e6,
                                    res["p99_us"] / 1000))
                log(f"{name} {label}: {res['rps']:,.0f} req/s")
        row: dict[str, Any] = {"scenario": name}
        for label, got in runs.items():
            row[label] = {"rps": statistics.median(r for r, _, _ in got),
                          "us_per_req": statistics.median(u for _, u, _ in got),
                          "p99_ms": statistics.median(p for _, _, p in got),
                          "rounds": [round(r) for r, _, _ in got]}
        row["ratio"] = row["mirrored"]["rps"] / row["local"]["rps"]
        rows.append(row)
    return rows


def first_byte(port: int, path: str) -> float:
    """Seconds from sending a GET to reading the first byte of the body (then read it all)."""
    conn = http.client.HTTPConnection(HOST, port, timeout=60)
    try:
        started = time.perf_counter()
        conn.request("GET", path)
        resp = conn.getresponse()
        if not resp.read(1) or resp.status != 200:
            raise RuntimeError(f"GET {path}: HTTP {resp.status}")
        took = time.perf_counter() - started
        resp.read()
        return took
    finally:
        conn.close()


def first_bytes(mirror: int, upstream: int, files: list[tuple[str, str]]) -> dict[str, Any]:
    """Per file: upstream's own first byte, then the mirror's (its page cached, the file
    not): medians in ms."""
    ups, mine = [], []
    for project, name in files:
        ups.append(first_byte(upstream, f"/packages/{name}") * 1000)
        mine.append(first_byte(mirror, f"/packages/{project}/{name}") * 1000)
    return {"files": len(files), "upstream_ms": statistics.median(ups),
            "mirror_ms": statistics.median(mine), "mirror_max_ms": max(mine),
            "extra_ms": statistics.median(m - u for m, u in zip(mine, ups, strict=True))}


def upstream_file_requests(port: int) -> float:
    """How many file requests the upstream pypid has answered (its /metrics)."""
    conn = http.client.HTTPConnection(HOST, port, timeout=30)
    try:
        conn.request("GET", "/metrics")
        text = conn.getresponse().read().decode()
    finally:
        conn.close()
    return sum(float(line.rsplit(" ", 1)[1]) for line in text.splitlines()
               if line.startswith("pypid_http_requests_total{") and 'route="file"' in line)


def crowd(mirror: Server, upstream_port: int, name: str, clients: int,
          timeout: float) -> dict[str, Any]:
    """``clients`` threads ask the mirror at once for one uncached file; every body is
    checked; each worker's RSS and PSS are sampled every 50 ms meanwhile."""
    assert mirror.port is not None
    path = f"/packages/{BIG_PROJECT}/{name}"
    before = {w["pid"]: w for w in memory_of(mirror.pid)["workers"]}
    peak = {pid: dict(w) for pid, w in before.items()}
    downloads_before = upstream_file_requests(upstream_port)
    results: list[tuple[int, str, int]] = []
    gate = threading.Barrier(clients)
    done = threading.Event()

    def client() -> None:
        try:
            gate.wait(timeout)
            conn = http.client.HTTPConnection(HOST, mirror.port, timeout=timeout)
            conn.request("GET", path)
            resp = conn.getresponse()
            digest, size = hashlib.sha256(), 0
            while chunk := resp.read(READ):
                digest.update(chunk)
                size += len(chunk)
            conn.close()
            results.append((resp.status, digest.hexdigest(), size))
        except (OSError, http.client.HTTPException, threading.BrokenBarrierError) as exc:
            results.append((0, f"{type(exc).__name__}: {exc}", 0))

    def sampler() -> None:
        while not done.wait(0.05):
            for w in memory_of(mirror.pid)["workers"]:
                top = peak.setdefault(w["pid"], dict(w))
                for key in ("rss_kb", "pss_kb"):
                    if w[key] is not None and (top[key] is None or w[key] > top[key]):
                        top[key] = w[key]

    watcher = threading.Thread(target=sampler, daemon=True)
    watcher.start()
    started = time.perf_counter()
    threads = [threading.Thread(target=client, daemon=True) for _ in range(clients)]
    for thread in threads:
        thread.start()
    deadline = time.monotonic() + timeout
    for thread in threads:
        thread.join(max(0.1, deadline - time.monotonic()))
    took = time.perf_counter() - started
    done.set()
    watcher.join(5)
    after = {w["pid"]: w for w in memory_of(mirror.pid)["workers"]}
    growth = {pid: {key: ((peak[pid][key] or 0) - (w[key] or 0)) / 1024
                    for key in ("rss_kb", "pss_kb")}
              for pid, w in before.items() if pid in peak}
    return {"clients": clients, "seconds": took, "answers": len(results),
            "statuses": sorted({s for s, _, _ in results}), "digests": {d for _, d, _ in results},
            "bytes": {b for _, _, b in results},
            "downloads": upstream_file_requests(upstream_port) - downloads_before,
            "growth_mb": growth, "replaced": sorted(set(after) ^ set(before))}


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(prog="bench/mirror.py", description=__doc__.splitlines()[0])
    ap.add_argument("--files", type=int, default=1000, help="corpus size in files (1000)")
    ap.add_argument("--rounds", type=int, default=3, help="wrk runs per scenario and side (3)")
    ap.add_argument("--duration", type=int, default=5, help="seconds of each wrk run (5)")
    ap.add_argument("--connections", type=int, default=32, help="wrk connections (32)")
    ap.add_argument("--workers", type=int, default=2, help="the mirror's workers (2)")
    ap.add_argument("--first-bytes", type=int, default=20,
                    help="uncached files whose first byte is timed (20)")
    ap.add_argument("--big-mb", type=int, default=50, help="the crowd's file, MB (50)")
    ap.add_argument("--clients", type=int, default=50, help="the crowd's clients (50)")
    ap.add_argument("--timeout", type=float, default=300.0,
                    help="seconds the crowd may take in all (300)")
    ap.add_argument("--python", default=sys.executable,
                    help="the Python that runs both servers (this one)")
    ap.add_argument("--parts", default="wrk,first,crowd",
                    help="which parts to run, of wrk,first,crowd (all)")
    ap.add_argument("--no-pin", dest="pin", action="store_false", help="no taskset")
    ap.add_argument("--keep", action="store_true", help="keep bench/out/mirror-<stamp>/")
    return ap.parse_args(argv)


def run(args: argparse.Namespace) -> dict[str, Any]:
    ensure_wrk()
    corpus = build_corpus(projects_for_files(args.files))
    server_pin, client_pin = pick_cpus(args.pin)
    stamp = time.strftime("%Y%m%d-%H%M%S")
    work = OUT_DIR / f"mirror-{stamp}"
    setup = split_roots(corpus, work, args.big_mb, args.first_bytes)
    log(f"corpus {corpus.root}: {len(setup.local)} local projects, {len(setup.mirrored)} "
        f"upstream; work dir {work}")
    servers: list[Server] = []
    try:
        upstream = start(PypidTarget(args.python, 1, name="upstream"), work / "upstream",
                         corpus, work / "upstream-run", client_pin)
        servers.append(upstream)
        settings = (f'mode = "cache"\nurl = "http://{HOST}:{upstream.port}/simple/"\n'
                    f'cache_root = {json.dumps(str(work / "cache"))}\nfile_hosts = []')
        mirror = start(PypidTarget(args.python, args.workers, name="mirror", upstream=settings),
                       work / "local", corpus, work / "mirror-run", server_pin)
        servers.append(mirror)
        assert mirror.port is not None and upstream.port is not None
        log("warming: every page (HTML, JSON) and the ~100 KB files, once")
        for accept in ("text/html", JSON_V1):
            warm(mirror.port, [f"/simple/{p}/" for p in setup.local + setup.mirrored],
                 {"Accept": accept})
        warm(mirror.port, [f"/packages/{n}" for n in setup.local_files]
             + [f"/packages/{p}/{n}" for p, n in setup.mirrored_files], {})
        warm(mirror.port, [f"/simple/{p}/" for p, _ in setup.uncached] + [
            f"/simple/{BIG_PROJECT}/"], {})  # their pages: only the files are uncached
        pairs = []
        for label, accept in (("project page, HTML", "text/html"), ("project page, JSON",
                                                                    JSON_V1)):
            pairs.append((label, *(Scenario(f"{label} {side}", [f"/simple/{p}/" for p in ps],
                                            {"Accept": accept})
                                   for side, ps in (("local", setup.local),
                                                    ("mirrored", setup.mirrored)))))
        pairs.append(("~100 KB file",
                      Scenario("file local", [f"/packages/{n}" for n in setup.local_files]),
                      Scenario("file mirrored", [f"/packages/{p}/{n}"
                                                 for p, n in setup.mirrored_files])))
        started = time.monotonic()
        load = os.getloadavg()[0]
        parts = set(args.parts.split(","))
        rows = wrk_pairs(mirror, pairs, work, args, client_pin) if "wrk" in parts else []
        firsts = herd = None
        if "first" in parts:
            log(f"first byte of {len(setup.uncached)} uncached files")
            firsts = first_bytes(mirror.port, upstream.port, setup.uncached)
        if "crowd" in parts:
            log(f"{args.clients} clients, one uncached {args.big_mb} MB file")
            herd = crowd(mirror, upstream.port, setup.big, args.clients, args.timeout)
        return {"rows": rows, "first_bytes": firsts, "crowd": herd, "args": vars(args),
                "corpus": {"files": len(corpus.files), "local": len(setup.local),
                           "mirrored": len(setup.mirrored)},
                "cpus": (server_pin.cpu, client_pin.cpu), "machine": machine(),
                "load": (load, os.getloadavg()[0]), "measured_s": time.monotonic() - started}
    finally:
        for server in reversed(servers):
            server.stop()
        if not args.keep:
            shutil.rmtree(work, ignore_errors=True)


def verdict(ok: bool) -> str:
    return "PASS" if ok else "FAIL"


def table(res: dict[str, Any]) -> str:
    a, c = res["args"], res["corpus"]
    lines = [f"pypid mirror: {c['files']} files; {c['local']} projects local, {c['mirrored']} "
             f"from upstream (a second pypid on loopback); the mirror: {a['workers']} workers "
             f"on CPU {res['cpus'][0]}, wrk -t1 -c{a['connections']} -d{a['duration']}s on "
             f"CPU {res['cpus'][1]}, median of {a['rounds']} rounds, turn about; load average "
             f"{res['load'][0]:.1f} -> {res['load'][1]:.1f}", "",
             f"{'scenario':20} {'local req/s':>12} {'mirrored req/s':>15} {'ratio':>6}  "
             f"{'server us/req: local, mirrored, ratio':>38}  target (req/s ratio)"]
    for row in res["rows"]:
        loc, mir = row["local"], row["mirrored"]
        lines.append(f"{row['scenario']:20} {loc['rps']:12,.0f} {mir['rps']:15,.0f} "
                     f"{row['ratio']:5.2f}x  {loc['us_per_req']:18.1f} {mir['us_per_req']:9.1f} "
                     f"{loc['us_per_req'] / mir['us_per_req']:6.2f}x  >= {TARGETS['ratio']}x "
                     f"{verdict(row['ratio'] >= TARGETS['ratio'])}")
    for row in res["rows"]:  # every round, so the noise shows
        lines.append(f"  rounds, {row['scenario']}: local " + ", ".join(
            f"{r:,}" for r in row["local"]["rounds"]) + "; mirrored " + ", ".join(
            f"{r:,}" for r in row["mirrored"]["rounds"]))
    lines.append("")
    f = res["first_bytes"]
    if f is not None:
        extra_ok = f["extra_ms"] <= TARGETS["first_byte_ms"]
        lines.append(f"first byte of an uncached file, median of {f['files']}: upstream's own "
                     f"{f['upstream_ms']:.1f} ms, through the mirror {f['mirror_ms']:.1f} ms "
                     f"(slowest {f['mirror_max_ms']:.1f}): +{f['extra_ms']:.1f} ms, target <= "
                     f"+{TARGETS['first_byte_ms']:g} ms {verdict(extra_ok)}")
    h = res["crowd"]
    if h is None:
        return "\n".join(lines)
    whole = h["statuses"] == [200] and h["answers"] == h["clients"] and len(h["digests"]) == 1
    lines.append(f"{h['clients']} clients at once, one uncached {a['big_mb']} MB file: "
                 f"{h['answers']} answers, statuses {h['statuses']}, "
                 f"{'every body whole and the same' if whole else 'BODIES DIFFER OR FAILED'}, "
                 f"in {h['seconds']:.1f} s; upstream downloads {h['downloads']:g} (target "
                 f"{TARGETS['downloads']}) {verdict(whole and h['downloads'] == 1)}")
    for pid, g in h["growth_mb"].items():
        worst = max(g["rss_kb"], g["pss_kb"])
        lines.append(f"  worker {pid}: peak growth RSS {g['rss_kb']:+.1f} MB, PSS "
                     f"{g['pss_kb']:+.1f} MB (target < {TARGETS['growth_mb']:g} MB) "
                     f"{verdict(worst < TARGETS['growth_mb'])}")
    if h["replaced"]:
        lines.append(f"  workers replaced during the crowd: {h['replaced']}")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    began = time.monotonic()
    res = run(args)
    text = table(res)
    print(text)
    print(f"\n(the whole run took {time.monotonic() - began:.0f} s)")
    if res["crowd"] is not None:
        res["crowd"]["digests"] = sorted(res["crowd"]["digests"])
        res["crowd"]["bytes"] = sorted(res["crowd"]["bytes"])
    out = OUT_DIR / f"mirror-{time.strftime('%Y%m%d-%H%M%S')}.json"
    out.write_text(json.dumps({**res, "table": text}, indent=1, default=str))
    log(f"wrote {out}")
    return 0
