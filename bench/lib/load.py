"""The load run (``python bench/load.py``): one worker (``--workers``), 100 clients, a mix of
reads and uploads.

Starts pypid on its own hard-linked copy of a corpus, with a login for uploads, drives
it for ``--seconds`` while sampling its memory every second, prints the figures and
exits 1 on any failed request, a worker RSS or a PSS of master and workers that keeps
growing after the warm-up, a replaced worker or errors in the server's log. See
bench/README.md.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from bench.lib.corpus import OUT_DIR, Corpus, build_corpus, projects_for_files
from bench.lib.host import HOST, REPO, Pin, log, machine, pick_cpus
from bench.lib.httpclient import Connection, request_bytes
from bench.lib.loaddrive import Driver
from bench.lib.loadmix import HTML, READ_WEIGHTS, UPLOAD_PROJECTS, Mix, basic_auth
from bench.lib.loadreport import LOG_TROUBLE, kinds, memory, table, verdict
from bench.lib.probe import JSON_V1, first_200
from bench.lib.sampler import Sampler, as_dicts, sample
from bench.lib.server import START_TIMEOUT, Server
from bench.lib.targets import PypidTarget

USER, PASSWORD = "loader", "load-run-password"
HEAP_LOG_HOOK = Path(__file__).resolve().parent / "heaplog"  # its sitecustomize.py
MAX_ETAGS = 2000  # projects whose ETags are fetched for the conditional requests


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--files", type=int, default=1000, help="corpus size in files (default 1000)")
    ap.add_argument("--seconds", type=float, default=180, help="length of the load (default 180)")
    ap.add_argument("--workers", type=int, default=1,
                    help="pypid workers (default 1); the PSS of master and every worker is "
                         "sampled")
    ap.add_argument("--warmup", type=float, default=None,
                    help="seconds at the start left out of the RSS trend (default: a quarter "
                         "of --seconds, at most 30)")
    ap.add_argument("--clients", type=int, default=100, help="concurrent clients (default 100)")
    ap.add_argument("--uploaders", type=int, default=4,
                    help="how many of the clients upload instead of reading (default 4)")
    ap.add_argument("--upload-rate", type=float, default=3.0,
                    help="uploads per second, all uploaders together (default 3)")
    ap.add_argument("--upload-mix", default="8,1,1", metavar="NEW,IDENTICAL,CONFLICT",
                    help="relative weights of new files, byte-identical re-uploads (200) and "
                         "other bytes under a stored name (409) (default 8,1,1)")
    ap.add_argument("--upload-projects", type=int, default=UPLOAD_PROJECTS, metavar="N",
                    help="new files go to N projects in turn, loadtest-0 .. loadtest-N-1: "
                         "few projects make their pages grow all run, many keep them small "
                         f"(default {UPLOAD_PROJECTS})")
    ap.add_argument("--reads", default=None, metavar="KIND,KIND",
                    help="only these read kinds (names as in the table, e.g. 'download "
                         "random,/metrics'), to find which one makes memory grow (default: "
                         "all)")
    ap.add_argument("--max-growth-mb", type=float, default=16.0,
                    help="each worker's RSS, and the PSS of master and workers together, may "
                         "rise this much after the warm-up (fitted line; default 16)")
    ap.add_argument("--timeout", type=float, default=30.0,
                    help="seconds one request may take before it counts as failed (default 30)")
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--python", default=sys.executable, help="interpreter that runs the server")
    ap.add_argument("--src", type=Path, default=REPO,
                    help="directory holding the pypid package (default: this checkout)")
    ap.add_argument("--no-pin", dest="pin", action="store_false", help="no taskset pinning")
    ap.add_argument("--nice", type=int, default=0, help="niceness of server and clients")
    ap.add_argument("--heap-log", type=Path, default=None, metavar="DIR",
                    help="each worker logs its heap to DIR/PID.log every minute "
                         "(bench/lib/heaplog: PSS, malloc, SQLite, pymalloc)")
    ap.add_argument("--heap-trace", action="store_true",
                    help="with --heap-log: tracemalloc in each worker too, the lines that "
                         "grew most to DIR/PID.tm every 5 minutes (slows the server)")
    ap.add_argument("--keep", action="store_true",
                    help="keep the work dir and the run's package root (uploaded files)")
    ap.add_argument("--glibc-malloc", action="store_true",
                    help="glibc's malloc as it comes, not as the systemd unit sets it "
                         "(its Environment= lines: no per-thread caches, two arenas)")
    args = ap.parse_args(argv)
    if args.workers < 1:
        ap.error("--workers: at least 1")
    if args.upload_projects < 1:
        ap.error("--upload-projects: at least 1")
    try:
        new, same, other = (float(w) for w in args.upload_mix.split(","))
    except ValueError:
        ap.error("--upload-mix: three numbers, e.g. 8,1,1")
    if new <= 0 or min(same, other) < 0:
        ap.error("--upload-mix: new files need a weight above 0")
    args.upload_mix = (new, same, other)
    if args.reads is not None:
        args.reads = [k.strip() for k in args.reads.split(",") if k.strip()]
        unknown = [k for k in args.reads if k not in READ_WEIGHTS]
        if unknown or not args.reads:
            ap.error(f"--reads: unknown kind(s) {unknown}; known: {', '.join(READ_WEIGHTS)}")
    if args.heap_trace and args.heap_log is None:
        ap.error("--heap-trace: needs --heap-log DIR")
    if args.warmup is None:
        args.warmup = min(30.0, args.seconds / 4)
    return args


def heap_log_env(args: argparse.Namespace) -> dict[str, str]:
    """The server's environment for ``--heap-log`` (none without it)."""
    if args.heap_log is None:
        return {}
    args.heap_log.mkdir(parents=True, exist_ok=True)
    path = os.pathsep.join(map(str, (HEAP_LOG_HOOK, args.src.resolve(), REPO)))  # REPO: bench.lib
    return {"PYTHONPATH": path,
            "PYPID_HEAP_LOG": str(args.heap_log.resolve()),
            "PYPID_HEAP_LOG_TRACE": "1" if args.heap_trace else "0"}


UNIT = REPO / "packaging" / "systemd" / "pypid.service"


def unit_environment(unit: Path = UNIT) -> dict[str, str]:
    """The ``Environment=`` the systemd unit gives pypid (``NAME=value`` words; the unit
    quotes none), so that the load runs pypid as installed."""
    env: dict[str, str] = {}
    for line in unit.read_text().splitlines():
        if line.startswith("Environment="):
            for word in line.removeprefix("Environment=").split():
                name, _, value = word.partition("=")
                env[name] = value
    return env


def add_user(python: str, src: Path, workdir: Path, htpasswd: Path) -> None:
    """The upload login, added by ``pypid user add`` itself (bcrypt, default cost)."""
    conf = workdir / "users.toml"
    conf.write_text(f"[auth]\nhtpasswd = {json.dumps(str(htpasswd))}\n")
    env = {**os.environ, "PYTHONPATH": str(src)}
    proc = subprocess.run([python, "-m", "pypid", "user", "add", USER, "--password-stdin",
                           "--config", str(conf)], input=PASSWORD + "\n", env=env,
                          capture_output=True, text=True, timeout=60, check=False)
    if proc.returncode != 0:
        raise RuntimeError(f"pypid user add failed: {proc.stdout}{proc.stderr}")


async def fetch_etags(port: int, corpus: Corpus, rng: random.Random) -> dict[tuple[str, str], str]:
    """(path, Accept) -> ETag of project pages, for the conditional (304) requests."""
    projects = corpus.projects if len(corpus.projects) <= MAX_ETAGS else rng.sample(
        corpus.projects, MAX_ETAGS)
    conn = Connection(port, 30.0)
    out = {}
    try:
        for project in projects:
            for accept in (HTML, JSON_V1):
                path = f"/simple/{project}/"
                reply = await conn.request(request_bytes("GET", path, f"{HOST}:{port}",
                                                         {"Accept": accept}))
                if reply.status != 200 or "etag" not in reply.headers:
                    raise RuntimeError(f"GET {path} ({accept}): HTTP {reply.status}, "
                                       f"ETag {reply.headers.get('etag')!r}")
                out[(path, accept)] = reply.headers["etag"]
    finally:
        await conn.close()
    return out


def pin_self(pin: Pin) -> None:
    """Run this process (the clients) where the client pin says."""
    if pin.cpu is not None:
        os.sched_setaffinity(0, {pin.cpu})
    if pin.nice:
        os.nice(pin.nice)


def run(args: argparse.Namespace) -> int:
    corpus = build_corpus(projects_for_files(args.files))
    log(f"corpus {corpus.root}: {len(corpus.projects)} projects, {len(corpus.files)} files")
    server_pin, client_pin = pick_cpus(args.pin, args.nice)
    stamp = time.strftime("%Y%m%d-%H%M%S")
    workdir = OUT_DIR / f"load-{stamp}"
    workdir.mkdir(parents=True)
    tag = f"load-{stamp}"  # uploads land in this run's own root, never in the cached corpus
    htpasswd = workdir / "htpasswd"
    target = PypidTarget(args.python, args.workers, args.src.resolve(), root_tag=tag,
                         settings=f"[auth]\nhtpasswd = {json.dumps(str(htpasswd))}\n",
                         env={**({} if args.glibc_malloc else unit_environment()),
                              **heap_log_env(args)})
    server: Server | None = None
    try:
        add_user(args.python, args.src.resolve(), workdir, htpasswd)
        server = target.start(corpus, workdir, server_pin)
        server.wait_listening(START_TIMEOUT)
        first_200(server, "/simple/", START_TIMEOUT)
        target.check_source(server)
        assert server.port is not None
        log(f"pypid listening on {server.port} (pid {server.pid}); fetching ETags")
        etags = asyncio.run(fetch_etags(server.port, corpus, random.Random(args.seed)))  # noqa: S311
        pin_self(client_pin)
        mix = Mix(corpus, server.port, etags, basic_auth(USER, PASSWORD), args.upload_mix,
                  reads=args.reads, upload_projects=args.upload_projects)
        driver = Driver(mix, server.port, clients=args.clients, uploaders=args.uploaders,
                        upload_rate=args.upload_rate, seconds=args.seconds,
                        timeout=args.timeout, seed=args.seed)
        log(f"load: {args.clients} clients for {args.seconds:g} s")
        load_before, own_before = os.getloadavg()[0], os.times()
        cpu_before = sample(server.pid, 0.0).cpu_s
        sampler = Sampler(server.pid).start()
        tally = driver.run()
        samples = sampler.stop()
        own = os.times()
        alive = server.proc.poll() is None
        trouble = [line for line in server.lines if LOG_TROUBLE.search(line)]
    finally:
        if server is not None:
            server.stop()
        if not args.keep:
            shutil.rmtree(workdir, ignore_errors=True)
            shutil.rmtree(corpus.dir / "roots" / tag, ignore_errors=True)
            (corpus.dir / "roots" / f"{tag}.complete").unlink(missing_ok=True)

    total = sum(tally.requests.values())
    client_s = (own.user + own.system) - (own_before.user + own_before.system)
    server_s = samples[-1].cpu_s - cpu_before
    cpu = {"server_pct": server_s / tally.seconds * 100,
           "client_pct": client_s / tally.seconds * 100,
           "server_us_per_req": server_s / max(total, 1) * 1e6}
    host = machine_info()
    meta = {"workers": args.workers, "clients": args.clients, "uploaders": args.uploaders,
            "upload_rate": args.upload_rate, "upload_projects": args.upload_projects,
            "reads": args.reads, "warmup": args.warmup,
            "malloc": "glibc's defaults" if args.glibc_malloc else "as the unit sets it",
            "seconds": args.seconds,
            "projects": len(corpus.projects), "files": len(corpus.files),
            "max_growth_mb": args.max_growth_mb, "server_cpu": server_pin.cpu,
            "client_cpu": client_pin.cpu, "load_before": load_before,
            "load_after": os.getloadavg()[0], **host}
    rows = kinds(tally)
    mem = memory(samples, args.warmup, args.seconds, args.workers)
    why = verdict(tally, mem, max_growth_mb=args.max_growth_mb, server_alive=alive,
                  log_trouble=trouble, workers=args.workers)
    text = table(meta, rows=rows, tally=tally, mem=mem, cpu=cpu, why=why,
                 log_trouble=trouble)
    print(text)
    result = OUT_DIR / f"load-{stamp}.json"
    result.write_text(json.dumps({
        "meta": meta, "kinds": rows, "memory": mem, "cpu": cpu, "failures": tally.examples,
        "retries": dict(tally.retries), "samples": as_dicts(samples), "server_log": trouble,
        "verdict": why, "table": text}, indent=1))
    log(f"\nwrote {result}")
    return 1 if why else 0


def machine_info() -> dict[str, Any]:
    m = machine()
    return {"cpu_model": m["cpu_model"], "cpus": m["cpus"]}


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    # SIGTERM unwinds like Ctrl-C, so the finally block stops our server
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    return run(args)
