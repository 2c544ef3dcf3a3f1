"""Side by side: pypid, pypiserver and nginx on the same corpora, one table.

    python bench/run.py --compare [--quick | --smoke] [--sizes 1000,10000,100000] [--rounds 3]
                                  [--duration 10] [--workers 1] [--targets ...]

For each corpus size (in FILES; corpora are built and cached by projects, see
corpus.projects_for_files) the three servers run one after the other, each pinned to
the same server CPU (taskset, whole process tree) while wrk runs on the other CPU:

* pypid from this checkout, ``--workers 1`` unless told otherwise;
* pypiserver 2.4.2 from PyPI in bench/out/venv-pypiserver: gunicorn (one gthread
  worker, GUNICORN_CMD_ARGS), cached-dir backend (watchdog), fallback off;
* nginx (Debian's) serving the static PEP 503 tree written beside the corpus
  (corpus.write_static_index), one worker, sendfile, gzip on, access_log off.

A server is started once per size; a "round" is one pass over its scenarios, so every
figure is the median of ``--rounds`` wrk runs (-d seconds each, one connection count)
taken at different moments. A scenario whose req/s spread (max-min)/median exceeds
``--max-spread`` gets two more runs and the median of all. Before every measured run
one request primes the server (pypiserver's cached-dir loses its listing whenever a
file is opened, so its listing would otherwise be rebuilt inside the measurement).

Every figure also carries the server's CPU time per request (utime+stime of its whole
process tree over the run, from /proc): the cost of a request, much less sensitive to
other load on the machine than req/s.

Progress goes to stderr, the table to stdout, everything to bench/out/compare-<stamp>.json.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import resource
import shutil
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bench.lib.corpus import OUT_DIR, Corpus, build_corpus, projects_for_files, write_static_index
from bench.lib.footprint import measure_footprint
from bench.lib.host import Pin, dirty, ensure_wrk, git_rev, log, machine, pick_cpus
from bench.lib.probe import (
    JSON_V1,
    Scenario,
    SlowServer,
    conditional_lines,
    first_200,
    prime,
    run_wrk,
    validate,
)
from bench.lib.procs import cpu_shares, cpu_ticks, cpus_allowed, memory_of, tree_cpu_seconds
from bench.lib.report import (
    SC_304,
    SC_DL,
    SC_DL_HUGE,
    SC_HTML,
    SC_HTML_MANY,
    SC_JSON,
    SC_SIMPLE,
    SC_SIMPLE_GZ,
    render,
)
from bench.lib.server import START_TIMEOUT, Server
from bench.lib.stats import fsize, summarize_runs
from bench.lib.targets import NginxTarget, PypidTarget, PypiserverTarget, Target
from bench.lib.uploads import UPLOAD_FILES, measure_uploads

ETAG_SAMPLE = 2000  # projects whose ETags the conditional-GET scenario uses
MANY_CONNECTIONS = 256  # the tail-latency scenario's wrk connections
QUICK = {"rounds": 1, "duration": 5.0, "warmup": 1.0, "sizes": "1000,10000"}
# --smoke: proves the harness works in seconds; its figures mean nothing
SMOKE = {"rounds": 1, "duration": 1.0, "warmup": 0.0, "sizes": "200"}
DEFAULT_SIZES = "1000,10000,100000"


def settle_args(args: argparse.Namespace) -> list[int]:
    """Fill the defaults --quick / --smoke leave open; return the sizes (in files)."""
    preset = SMOKE if args.smoke else QUICK if args.quick else {}
    for k, v in preset.items():
        if getattr(args, k) is None:
            setattr(args, k, v)
    args.rounds = 3 if args.rounds is None else args.rounds
    args.duration = 10.0 if args.duration is None else args.duration
    args.warmup = 2.0 if args.warmup is None else args.warmup
    if args.nice is None:  # see --nice: fair shares of the two CPUs on a busy machine
        args.nice = -10 if os.geteuid() == 0 else 0
    return sorted({int(s.replace("_", "")) for s in (args.sizes or DEFAULT_SIZES).split(",")})


def pins(args: argparse.Namespace) -> tuple[Pin, Pin]:
    """(server, wrk) placement; also settles --threads and makes sure wrk is there."""
    server_pin, client_pin = pick_cpus(args.pin, args.nice)
    if args.threads is None:
        args.threads = 1 if client_pin.cpu is not None else 2
    ensure_wrk()
    return server_pin, client_pin


def size_corpus(size: int, *, static: bool = False) -> tuple[Corpus, dict[str, Any]]:
    """The cached corpus of at least ``size`` files, and what the report says about it."""
    t0 = time.perf_counter()
    n_projects = projects_for_files(size)
    corpus = build_corpus(n_projects)
    if static:
        write_static_index(corpus)
    log(f"{fsize(size)} files: {n_projects} projects, {len(corpus.files)} files, "
        f"{corpus.total_bytes / 1e6:.1f} MB ({'reused' if corpus.reused else 'built'}, "
        f"{time.perf_counter() - t0:.1f} s)")
    return corpus, {"projects": n_projects, "files": len(corpus.files),
                    "mb": round(corpus.total_bytes / 1e6, 1), "root": str(corpus.root),
                    "reused": corpus.reused}


def snapshot(src: Path, work: Path) -> Path:
    """A copy of src's pypid package: every size runs the same code even if src changes."""
    snap = work / "src"
    shutil.copytree(src / "pypid", snap / "pypid",
                    ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
    return snap


# --------------------------------------------------------------------------- scenarios


def build_scenarios(kind: str, corpus: Corpus, port: int,
                    per_request: float) -> tuple[list[Scenario], dict[str, str]]:
    """The scenarios this target can answer, plus why the others are missing."""
    html = {"Accept": "text/html"}
    projects = [f"/simple/{p}/" for p in corpus.projects]
    random.Random(1).shuffle(projects)  # noqa: S311 (sampling)
    out = [
        Scenario(SC_SIMPLE, ["/simple/"], html),
        Scenario(SC_SIMPLE_GZ, ["/simple/"], {**html, "Accept-Encoding": "gzip"}),
        Scenario(SC_HTML, projects, html),
    ]
    missing: dict[str, str] = {}
    if kind == "pypid":
        out.append(Scenario(SC_JSON, projects, {"Accept": JSON_V1}))
    else:
        missing[SC_JSON] = "no JSON (HTML is the baseline)"
    if kind in ("pypid", "nginx"):
        lines = conditional_lines(port, projects[:ETAG_SAMPLE], html, per_request)
        if isinstance(lines, str):
            missing[SC_304] = lines
        else:
            out.append(Scenario(SC_304, lines, html, expect=304))
    else:
        missing[SC_304] = "no ETag"
    out.append(Scenario(SC_DL, [f"/packages/{f}" for f in corpus.big_files]))
    if corpus.huge_files:
        out.append(Scenario(SC_DL_HUGE, [f"/packages/{f}" for f in corpus.huge_files]))
    if kind in ("pypid", "nginx"):
        out.append(Scenario(SC_HTML_MANY, projects, html, connections=MANY_CONNECTIONS))
    else:  # about 25 pages/s at 10k files: 256 connections would only wait
        missing[SC_HTML_MANY] = f"not run at {MANY_CONNECTIONS} connections"
    return out, missing



# --------------------------------------------------------------------------- measuring


def measure(server: Server, sc: Scenario, workdir: Path, args: argparse.Namespace, *,
            client_pin: Pin, duration: float) -> dict[str, Any]:
    """One wrk run plus the server's CPU time and wrk's own, and the load average."""
    assert server.port is not None
    pids = server.remember_tree()
    cpu0 = tree_cpu_seconds(pids)
    ru0 = resource.getrusage(resource.RUSAGE_CHILDREN)
    load0 = os.getloadavg()[0]
    ticks0 = cpu_ticks()
    w = run_wrk(server.port, sc, workdir, duration=duration,
                connections=sc.connections or args.connections,
                threads=args.threads, pin=client_pin, timeout=args.request_timeout)
    ru1 = resource.getrusage(resource.RUSAGE_CHILDREN)
    w["cpu_stat"] = cpu_shares(ticks0, cpu_ticks())
    cpu = tree_cpu_seconds(pids) - cpu0
    secs = w["duration_us"] / 1e6
    w["server_cpu_s"] = cpu
    w["server_cpu_pct"] = cpu / secs * 100
    w["cpu_us_per_req"] = cpu / w["requests"] * 1e6 if w["requests"] else None
    w["client_cpu_pct"] = ((ru1.ru_utime + ru1.ru_stime) - (ru0.ru_utime + ru0.ru_stime)) \
        / secs * 100
    w["loadavg"] = [load0, os.getloadavg()[0]]
    if not w["requests"]:
        w["rps"] = 0.0
    return w



@dataclass
class Live:
    """A started, checked target: its server, its results so far, the scenarios it answers."""

    target: Target
    server: Server
    workdir: Path
    res: dict[str, Any]
    ready: list[Scenario] = field(default_factory=list)

    def check(self, corpus: Corpus, args: argparse.Namespace, server_cpu: int | None) -> None:
        """Listening, first 200s, pinning, idle memory, and which scenarios answer right."""
        server, res, per_req = self.server, self.res, args.request_timeout
        server.wait_listening(START_TIMEOUT)
        project_path = f"/simple/{corpus.projects[len(corpus.projects) // 2]}/"
        res["first_simple_s"] = first_200(server, "/simple/", START_TIMEOUT, per_req)
        res["first_project_s"] = first_200(server, project_path, START_TIMEOUT, per_req)
        if isinstance(self.target, PypidTarget):
            res["imported_from"] = str(self.target.check_source(server))
            # every page in the shared file before measuring (see Server.pages_rendered)
            res["pages_rendered"] = server.wait_pages_rendered(START_TIMEOUT)
        time.sleep(1.0)  # workers may still be forking after the first answer
        tree = server.remember_tree()
        res["pinning"] = {str(p): cpus_allowed(p) for p in tree}
        res["processes"] = len(tree)
        if server_cpu is not None and any(c != str(server_cpu) for c in res["pinning"].values()):
            raise RuntimeError(f"{self.target.name} not pinned to CPU {server_cpu}: "
                               f"{res['pinning']}")
        res["mem_idle"] = memory_of(server.pid)
        assert server.port is not None
        kind = "pypid" if isinstance(self.target, PypidTarget) else self.target.name
        scs, res["missing"] = build_scenarios(kind, corpus, server.port, per_req)
        rng = random.Random(7)  # noqa: S311
        samples = 3 if isinstance(self.target, PypiserverTarget) else 10
        for sc in scs:
            check = validate(server.port, sc, rng, samples=samples, timeout=per_req)
            res["scenarios"][sc.name] = {"check": check, "runs": []}
            if check["ok"]:
                self.ready.append(sc)
            elif any("timed out" in b for b in check["bad"]):
                raise SlowServer(f"{sc.name}: {check['bad'][0]}")
            else:
                log(f"    {sc.name}: FAILED check: {check['bad'][:2]}")
        log(f"    up: /simple/ after {res['first_simple_s']:.1f} s, pinned "
            f"{sorted(set(res['pinning'].values()))}, {len(tree)} processes; "
            f"{len(self.ready)} scenarios"
            + (f"; pypid from {res['imported_from']}" if "imported_from" in res else ""))

    def run(self, sc: Scenario, args: argparse.Namespace, client_pin: Pin, r: int,
            server_cpu: int | None) -> dict[str, Any]:
        """One measured run of sc (after its warm-up in round 0); appended to the results."""
        port, per_req = self.server.port, args.request_timeout
        assert port is not None
        # warm-up only where there is something to warm (pypid's page cache);
        # pypiserver gets its primed request, nginx serves files from the OS cache
        if r == 0 and args.warmup > 0 and isinstance(self.target, PypidTarget):
            prime(port, sc, per_req)
            run_wrk(port, sc, self.workdir, duration=args.warmup,
                    connections=sc.connections or args.connections,
                    threads=args.threads, pin=client_pin, timeout=per_req)
        w = self.once(sc, args, client_pin)
        self.res["scenarios"][sc.name]["runs"].append(w)
        cu = w["cpu_us_per_req"]
        c0 = w["cpu_stat"].get(f"cpu{server_cpu}", {}) if server_cpu is not None else {}
        log(f"    r{r + 1} {sc.name:<17} {w['rps']:>9.1f} req/s  p99 "
            f"{w['p99_us'] / 1000:>8.1f} ms  {cu or 0:>8.0f} us/req  server CPU "
            f"{w['server_cpu_pct']:.0f}%  wrk CPU {w['client_cpu_pct']:.0f}%  "
            f"errors {w['errors']}  load {w['loadavg'][1]:.1f}  CPU{server_cpu} idle "
            f"{c0.get('idle', 0):.0f}% softirq {c0.get('softirq', 0):.0f}% "
            f"steal {c0.get('steal', 0):.0f}%")
        return w

    def once(self, sc: Scenario, args: argparse.Namespace, client_pin: Pin) -> dict[str, Any]:
        assert self.server.port is not None
        prime(self.server.port, sc, args.request_timeout)
        w = measure(self.server, sc, self.workdir, args, client_pin=client_pin,
                    duration=args.duration)
        if self.server.proc.poll() is not None:
            raise RuntimeError(f"{self.target.name} died during {sc.name}:\n"
                               f"{self.server.tail()}")
        return w

    def finish(self, args: argparse.Namespace, client_pin: Pin) -> None:
        """Rerun the noisy scenarios (two more runs), then summarize each and read memory."""
        for sc in self.ready:
            runs = self.res["scenarios"][sc.name]["runs"]
            s = summarize_runs(runs)
            if len(runs) >= 3 and s["spread"] is not None and s["spread"] > args.max_spread:
                log(f"    {sc.name}: spread {s['spread'] * 100:.0f}% > "
                    f"{args.max_spread * 100:.0f}%: two more runs")
                for _ in range(2):
                    runs.append(self.once(sc, args, client_pin))
                    log(f"    +  {sc.name:<17} {runs[-1]['rps']:>9.1f} req/s")
                self.res["scenarios"][sc.name]["reran"] = True
        self.summarize()

    def summarize(self) -> None:
        """Each measured scenario's summary, and the memory after the load."""
        for sc in self.ready:
            entry = self.res["scenarios"][sc.name]
            if entry["runs"]:
                entry["summary"] = summarize_runs(entry["runs"])
        self.res["mem_loaded"] = memory_of(self.server.pid)

    def failed(self, exc: RuntimeError) -> None:
        """Record why the target stopped counting at this size."""
        if isinstance(exc, SlowServer):
            self.res["status"], self.res["reason"] = "timeout", str(exc)
            log(f"    {self.target.name}: {exc}: not measured at this size")
        else:
            self.res["status"], self.res["reason"] = "failed", str(exc).splitlines()[0]
            self.res["log_tail"] = list(self.server.lines)[-30:]
            log(f"    {self.target.name} FAILED: {exc}")

    def stop(self) -> None:
        self.server.stop()
        self.res["server_log_tail"] = list(self.server.lines)[-15:]


def start_live(target: Target, corpus: Corpus, workdir: Path, server_pin: Pin) -> Live:
    """Spawn the target's server; nothing is checked yet (Live.check)."""
    workdir.mkdir(parents=True, exist_ok=True)
    res: dict[str, Any] = {"status": "ok", "scenarios": {}, "missing": {}}
    if isinstance(target, PypidTarget):
        res["cache_before_start"] = target.has_cache(corpus)
    return Live(target, target.start(corpus, workdir, server_pin), workdir, res)


def measure_target(target: Target, corpus: Corpus, args: argparse.Namespace, workdir: Path, *,
                   server_pin: Pin, client_pin: Pin) -> dict[str, Any]:
    """Start the target, check it, run every scenario --rounds times, stop it."""
    live = start_live(target, corpus, workdir, server_pin)
    try:
        live.check(corpus, args, server_pin.cpu)
        for r in range(args.rounds):
            for sc in live.ready:
                live.run(sc, args, client_pin, r, server_pin.cpu)
        live.finish(args, client_pin)
    except RuntimeError as exc:
        live.failed(exc)
    finally:
        live.stop()
    return live.res


# --------------------------------------------------------------------------- main


def main(args: argparse.Namespace) -> int:
    """The side-by-side run: every size, every target, one table on stdout."""
    t_start = time.perf_counter()
    sizes = settle_args(args)
    names = [t.strip() for t in args.targets.split(",") if t.strip()]
    bad = set(names) - {"pypid", "pypiserver", "nginx"}
    if bad:
        raise SystemExit(f"unknown target(s): {', '.join(sorted(bad))}")
    names = [t for t in ("pypid", "pypiserver", "nginx") if t in names]
    server_pin, client_pin = pins(args)

    stamp = time.strftime("%Y%m%d-%H%M%S")
    work = OUT_DIR / f"compare-{stamp}"
    targets: dict[str, Target] = {}
    servers: dict[str, str] = {}
    src = args.src.resolve()
    changes = dirty(src)
    if "pypid" in names:
        snap = snapshot(src, work)
        workers = args.workers or 1
        targets["pypid"] = PypidTarget(args.python, workers, snap)
        servers["pypid"] = (f"pypid {git_rev() or '?'}{'+changes' if changes else ''} "
                            f"(snapshot of {src}), gunicorn with pypid's worker, {workers} "
                            f"worker(s) x {_pypid_threads(snap)} threads")
    if "pypiserver" in names:
        ps = PypiserverTarget(OUT_DIR / "venv-pypiserver", args.pypiserver_worker, args.python)
        v = ps.ensure_installed(log)
        targets["pypiserver"] = ps
        servers["pypiserver"] = (f"pypiserver {v.get('pypiserver')} (gunicorn {v.get('gunicorn')}"
                                 f", {ps.gunicorn_args()}; cached-dir, watchdog "
                                 f"{v.get('watchdog')})")
    if "nginx" in names:
        ng = NginxTarget()
        targets["nginx"] = ng
        servers["nginx"] = (f"nginx {ng.ensure_installed(log)} (static PEP 503 tree, 1 worker, "
                            "sendfile, gzip on level 1, access_log off)")
    labels = {n: (targets[n].label or n) for n in names}

    results: dict[int, dict[str, Any]] = {}
    projects: dict[str, int] = {}
    corpora: dict[str, Any] = {}
    loads: list[float] = []
    pypid_cold = False
    meta: dict[str, Any] = {
        "command": " ".join([Path(sys.executable).name, *sys.argv]),
        "machine": machine(), "server_cpu": server_pin.cpu, "client_cpu": client_pin.cpu,
        "threads": args.threads, "connections": args.connections, "duration": args.duration,
        "warmup": args.warmup, "rounds": args.rounds, "request_timeout": args.request_timeout,
        "max_spread": args.max_spread, "nice": args.nice, "sizes": sizes, "targets": names,
        "servers": servers,
        "git": git_rev(), "pypid_uncommitted_changes": changes,
        "loadavg_start": os.getloadavg(),
    }
    log(f"side by side: {', '.join(names)} at {', '.join(fsize(s) for s in sizes)} files; "
        f"{args.rounds} round(s) of {args.duration:g} s; server CPU {server_pin.cpu}, "
        f"wrk CPU {client_pin.cpu}")
    try:
        for size in sizes:
            corpus, corpora[str(size)] = size_corpus(size, static="nginx" in names)
            projects[str(size)] = corpora[str(size)]["projects"]
            results[size] = {}
            for name in names:
                target = targets[name]
                if name == "pypid" and not target.has_cache(corpus):
                    pypid_cold = True
                log(f"  {labels[name]} at {fsize(size)} files")
                t1 = time.perf_counter()
                results[size][name] = measure_target(
                    target, corpus, args, work / f"{size}-{name}", server_pin=server_pin,
                    client_pin=client_pin)
                results[size][name]["seconds"] = round(time.perf_counter() - t1, 1)
                for e in results[size][name]["scenarios"].values():
                    loads.extend(x for w in e.get("runs", []) for x in w["loadavg"])
            if "pypid" in names and args.footprint:
                log(f"  pypid with its default two workers at {fsize(size)} files")
                results[size]["pypid"]["footprint"] = measure_footprint(
                    args.python, targets["pypid"].src, corpus,  # type: ignore[attr-defined]
                    lambda port, c=corpus: build_scenarios("pypid", c, port,
                                                           args.request_timeout)[0],
                    workdir=work / f"{size}-footprint", args=args)
            if args.uploads and {"pypid", "pypiserver"} <= set(names):  # a ratio needs both
                log(f"  uploads (twine, {UPLOAD_FILES} wheels) at {fsize(size)} files")
                uploads = measure_uploads(targets, corpus, work / f"{size}-uploads",
                                          rounds=args.rounds, server_pin=server_pin,
                                          client_pin=client_pin, python=args.python)
                if "pypid" in results[size]:
                    results[size]["pypid"]["uploads"] = uploads
    finally:
        if not args.keep:
            shutil.rmtree(work, ignore_errors=True)

    meta.update({
        "projects": projects, "corpora": corpora, "pypid_cold": pypid_cold,
        "reference_size": 10_000 if 10_000 in sizes else max(sizes),
        "load_min": min(loads) if loads else os.getloadavg()[0],
        "load_max": max(loads) if loads else os.getloadavg()[0],
        "loadavg_end": os.getloadavg(),
        "wall_seconds": round(time.perf_counter() - t_start, 1),
    })
    text = render(results, meta, sizes, names, labels)
    text += (f"\n\nwall time {meta['wall_seconds'] / 60:.1f} min; corpora: "
             + ", ".join(f"{fsize(int(k))} = {v['projects']:,} projects / {v['files']:,} files "
                         f"/ {v['mb']} MB" for k, v in corpora.items()))
    print(text)
    out = OUT_DIR / f"compare-{stamp}.json"
    out.write_text(json.dumps({"meta": meta, "results": {str(k): v for k, v in results.items()},
                               "table": text}, indent=1))
    log(f"\nwrote {out}")
    failed = [f"{n}@{s}" for s, r in results.items() for n, v in r.items()
              if v["status"] == "failed"]
    return 1 if failed else 0


def _pypid_threads(src: Path) -> int | str:
    try:
        text = (src / "pypid" / "server.py").read_text()
        for line in text.splitlines():
            if line.startswith("THREADS_PER_WORKER"):
                return int(line.split("=")[1].split("#")[0])
    except (OSError, ValueError):
        pass
    return "?"
