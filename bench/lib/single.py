"""One target, several rounds: cold and warm start, memory, one wrk run per scenario.

Every figure printed is the median over the rounds; raw rounds go to
bench/out/results-<timestamp>.json. See bench/README.md.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import random
import shutil
import time
from pathlib import Path
from typing import Any

from bench.lib.corpus import OUT_DIR, Corpus, build_corpus
from bench.lib.host import Pin, ensure_wrk, git_rev, log, pick_cpus
from bench.lib.probe import JSON_V1, Scenario, first_200, run_wrk, validate
from bench.lib.procs import memory_of
from bench.lib.server import START_TIMEOUT, Server
from bench.lib.stats import fmt_mb, fmt_s, med
from bench.lib.targets import HttpServerTarget, PypidTarget, Target


def scenarios(corpus: Corpus, rng: random.Random) -> list[Scenario]:
    html = {"Accept": "text/html"}
    projects = [f"/simple/{p}/" for p in corpus.projects]
    rng.shuffle(projects)
    wheels = [f"/packages/{f.filename}.metadata" for f in corpus.files
              if f.filename.endswith(".whl")]
    n = len(projects)
    return [
        Scenario("/simple/ html", ["/simple/"], html),
        Scenario("/simple/ html gzip", ["/simple/"], {**html, "Accept-Encoding": "gzip"}),
        Scenario("/simple/ json", ["/simple/"], {"Accept": JSON_V1}),
        Scenario(f"project json (random of {n})", projects, {"Accept": JSON_V1}),
        Scenario(f"project html (random of {n})", projects, html),
        Scenario(f"core-metadata (random of {len(wheels)})", wheels),
        Scenario("download ~100 KB wheel", [f"/packages/{f}" for f in corpus.big_files]),
    ]


def settled_memory(server: Server, settle: float = 1.0) -> dict[str, Any]:
    """Memory once the workers have booted: the first 200 can come before the last fork."""
    time.sleep(settle)
    server.remember_tree()
    return memory_of(server.pid)


def timed_start(target: Target, corpus: Corpus, workdir: Path, pin: Pin,
                project_path: str) -> tuple[Server, dict[str, Any]]:
    """Start target; seconds from spawn to listening, first 200 of /simple/, of a project."""
    server = target.start(corpus, workdir, pin)
    try:
        server.wait_listening(START_TIMEOUT)
        t_simple = first_200(server, "/simple/", START_TIMEOUT)
        t_project = first_200(server, project_path, START_TIMEOUT)
        server.remember_tree()
    except BaseException:
        server.stop()
        raise
    return server, {"listen_s": server.t_listen, "simple_s": t_simple, "project_s": t_project}


def one_round(target: Target, corpus: Corpus, args: argparse.Namespace, workdir: Path, *,
              server_pin: Pin, client_pin: Pin, r: int) -> dict[str, Any]:
    """Cold start (when the target keeps a cache), warm start, memory, every scenario."""
    rng = random.Random(r)  # noqa: S311 (sampling, not crypto)
    project_path = f"/simple/{rng.choice(corpus.projects)}/"
    out: dict[str, Any] = {"round": r}

    if target.reset_cache(corpus):
        server, out["cold"] = timed_start(target, corpus, workdir, server_pin, project_path)
        try:
            out["mem_cold"] = settled_memory(server)
        finally:
            server.stop()
        out["cache_created"] = target.has_cache(corpus)
        log(f"  cold start: {fmt_s(out['cold']['project_s'])} to a project page")

    server, out["warm"] = timed_start(target, corpus, workdir, server_pin, project_path)
    log(f"  warm start: {fmt_s(out['warm']['project_s'])} to a project page")
    try:
        out["mem_idle"] = settled_memory(server)
        out["scenarios"] = {}
        assert server.port is not None
        for sc in scenarios(corpus, random.Random(1)):  # noqa: S311
            check = validate(server.port, sc, rng)
            entry: dict[str, Any] = {"check": check}
            if not check["ok"]:
                log(f"  {sc.name}: SKIPPED, {check['bad']}")
            else:
                if args.warmup > 0:
                    run_wrk(server.port, sc, workdir, duration=args.warmup,
                            connections=args.connections, threads=args.threads, pin=client_pin)
                entry["wrk"] = run_wrk(server.port, sc, workdir, duration=args.duration,
                                       connections=args.connections, threads=args.threads,
                                       pin=client_pin)
                w = entry["wrk"]
                log(f"  {sc.name}: {w['rps']:.0f} req/s, p50 {w['p50_us'] / 1000:.1f} ms, "
                    f"p99 {w['p99_us'] / 1000:.1f} ms, errors {w['errors']}")
            if server.proc.poll() is not None:
                raise RuntimeError(f"server died during {sc.name}:\n{server.tail()}")
            out["scenarios"][sc.name] = entry
        out["mem_loaded"] = memory_of(server.pid)
        out["server_log_tail"] = list(server.lines)[-20:]
    finally:
        server.stop()
    return out


def summarize(rounds: list[dict[str, Any]]) -> dict[str, Any]:
    """Median (and min/max) over rounds of every figure."""
    summary: dict[str, Any] = {"start": {}, "memory": {}, "scenarios": {}}
    for kind in ("cold", "warm"):
        for key in ("listen_s", "simple_s", "project_s"):
            vals = [r[kind][key] for r in rounds if kind in r]
            if vals:
                summary["start"][f"{kind}.{key}"] = med(vals)
    for kind in ("mem_cold", "mem_idle", "mem_loaded"):
        rs = [r[kind] for r in rounds if kind in r]
        if not rs:
            continue
        summary["memory"][kind] = {
            "master_rss_kb": med([m["master"]["rss_kb"] for m in rs if m["master"]]),
            "worker_rss_kb": med([w["rss_kb"] for m in rs for w in m["workers"]]),
            "workers": med([len(m["workers"]) for m in rs]),
            "total_rss_kb": med([m["total_rss_kb"] for m in rs]),
            "total_pss_kb": med([m["total_pss_kb"] for m in rs]),
        }
    names = list(rounds[0].get("scenarios", {}))
    for name in names:
        entries = [r["scenarios"][name] for r in rounds if name in r.get("scenarios", {})]
        runs = [e["wrk"] for e in entries if "wrk" in e]
        check = entries[0]["check"]
        s: dict[str, Any] = {"check": check, "runs": len(runs)}
        if runs:
            rps = [w["rps"] for w in runs]
            s.update({
                "rps": med(rps), "rps_min": min(rps), "rps_max": max(rps),
                "p50_ms": med([w["p50_us"] / 1000 for w in runs]),
                "p99_ms": med([w["p99_us"] / 1000 for w in runs]),
                "errors": sum(w["errors"] for w in runs),
                "requests": sum(w["requests"] for w in runs),
            })
        summary["scenarios"][name] = s
    return summary


def table(summary: dict[str, Any], meta: dict[str, Any]) -> str:
    lines = [
        f"pypid bench: target {meta['target']}, {meta['corpus']['projects']} projects, "
        f"{meta['corpus']['files']} files ({meta['corpus']['mb']:.1f} MB), "
        f"{meta['rounds']} round(s), medians",
        f"server CPU {meta['server_cpu']}, wrk CPU {meta['client_cpu']}, "
        f"wrk -t{meta['threads']} -c{meta['connections']} -d{meta['duration']:g}s, "
        f"workers {meta['workers'] or 'default'}, load average before/after "
        f"{meta['host']['loadavg_before']:.1f}/{meta['host']['loadavg_after']:.1f} "
        f"(other processes share these CPUs)",
        "",
        f"{'scenario':<34} {'req/s':>8} {'spread':>7} {'p50 ms':>8} {'p99 ms':>8} "
        f"{'errors':>7} {'bytes':>9}  type/encoding",
    ]
    for name, s in summary["scenarios"].items():
        c = s["check"]
        kind = (c["content_type"].split(";")[0] + (f" {c['content_encoding']}"
                                                   if c["content_encoding"] else ""))
        if "rps" not in s:
            lines.append(f"{name:<34} {'FAILED':>8}  {c['bad'][0]} ({len(c['bad'])} of "
                         f"the sampled paths failed)")
            continue
        spread = (s["rps_max"] - s["rps_min"]) / s["rps"] * 100 if s["rps"] else 0
        lines.append(
            f"{name:<34} {s['rps']:>8.0f} {spread:>6.0f}% {s['p50_ms']:>8.2f} "
            f"{s['p99_ms']:>8.2f} {s['errors']:>7} {c['bytes']:>9}  {kind}"
        )
    lines += ["", f"{'start (spawn ->)':<20} {'listening':>10} {'/simple/ 200':>13} "
                  f"{'project 200':>12}"]
    for kind in ("cold", "warm"):
        st = summary["start"]
        if f"{kind}.project_s" in st:
            lines.append(f"{kind:<20} {fmt_s(st[f'{kind}.listen_s']):>10} "
                         f"{fmt_s(st[f'{kind}.simple_s']):>13} "
                         f"{fmt_s(st[f'{kind}.project_s']):>12}")
    lines += ["", f"{'memory':<28} {'master RSS':>11} {'worker RSS':>11} {'workers':>8} "
                  f"{'total RSS':>10} {'total PSS':>10}"]
    labels = {"mem_cold": "after cold start (idle)", "mem_idle": "after warm start (idle)",
              "mem_loaded": "after load"}
    for kind, m in summary["memory"].items():
        lines.append(f"{labels[kind]:<28} {fmt_mb(m['master_rss_kb']):>11} "
                     f"{fmt_mb(m['worker_rss_kb']):>11} {m['workers'] or 0:>8.0f} "
                     f"{fmt_mb(m['total_rss_kb']):>10} {fmt_mb(m['total_pss_kb']):>10}")
    return "\n".join(lines)


def run(args: argparse.Namespace) -> int:
    """The single-target run: rounds, then the table on stdout and the JSON file."""
    args.rounds = 3 if args.rounds is None else args.rounds
    args.duration = 10 if args.duration is None else args.duration
    args.warmup = 2 if args.warmup is None else args.warmup
    server_pin, client_pin = pick_cpus(args.pin, args.nice or 0)
    if args.threads is None:
        args.threads = 1 if client_pin.cpu is not None else 2
    ensure_wrk()

    t0 = time.perf_counter()
    corpus = build_corpus(args.projects)
    log(f"corpus {corpus.root}: {len(corpus.projects)} projects, {len(corpus.files)} files, "
        f"{'reused' if corpus.reused else 'built'} "
        f"({time.perf_counter() - t0:.1f}s; first build {corpus.build_seconds:.1f}s)")

    target: Target = (PypidTarget(args.python, args.workers, args.src.resolve())
                      if args.target == "pypid"
                      else HttpServerTarget(args.python))
    stamp = time.strftime("%Y%m%d-%H%M%S")
    workdir = OUT_DIR / f"run-{stamp}"
    workdir.mkdir(parents=True, exist_ok=True)
    rounds: list[dict[str, Any]] = []
    load_before = os.getloadavg()[0]
    failure = None
    try:
        for r in range(1, args.rounds + 1):
            log(f"round {r}/{args.rounds} ({target.name})")
            try:
                rounds.append(one_round(target, corpus, args, workdir, server_pin=server_pin,
                                        client_pin=client_pin, r=r))
            except RuntimeError as exc:  # a server that fails: report it, keep finished rounds
                failure = f"round {r}: {exc}"
                log(f"FAILED {failure}")
                break
    finally:
        if not args.keep:
            shutil.rmtree(workdir, ignore_errors=True)
    if not rounds:
        return 1

    summary = summarize(rounds)
    meta = {
        "target": target.name, "rounds": args.rounds, "duration": args.duration,
        "warmup": args.warmup, "connections": args.connections, "threads": args.threads,
        "workers": args.workers, "server_cpu": server_pin.cpu, "client_cpu": client_pin.cpu,
        "corpus": {"projects": len(corpus.projects), "files": len(corpus.files),
                   "mb": corpus.total_bytes / 1e6, "build_seconds": corpus.build_seconds,
                   "root": str(corpus.root)},
        "host": {"python": platform.python_version(), "kernel": platform.release(),
                 "cpus": os.cpu_count(),
                 # other work on the machine skews every figure: the 1-min load average
                 "loadavg_before": load_before, "loadavg_after": os.getloadavg()[0]},
        "git": git_rev(),
    }
    text = table(summary, meta)
    if failure:
        text += f"\n\nonly {len(rounds)} round(s) finished; {failure.splitlines()[0]}"
    print(text)
    result = OUT_DIR / f"results-{stamp}.json"
    result.write_text(json.dumps({"meta": meta, "summary": summary, "rounds": rounds,
                                  "failure": failure, "table": text}, indent=1))
    log(f"\nwrote {result}")
    return 1 if failure else 0

