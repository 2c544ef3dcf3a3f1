"""Side by side: pypid, pypiserver and nginx on the same corpora, one table.

    python bench/run.py --compare [--quick] [--sizes 1000,10000,100000] [--rounds 3]
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
import http.client
import json
import os
import platform
import random
import resource
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
import run  # noqa: E402
from corpus import (  # noqa: E402
    OUT_DIR,
    Corpus,
    build_corpus,
    projects_for_files,
    write_static_index,  # noqa: E402
)
from run import (  # noqa: E402
    HOST,
    JSON_V1,
    START_TIMEOUT,
    NginxTarget,
    PypidTarget,
    PypiserverTarget,
    Scenario,
    Server,
    Target,
    get,
    memory_of,
    run_wrk,
    split_path,
    validate,
)

SC_SIMPLE = "/simple/"
SC_SIMPLE_GZ = "/simple/ gzip"
SC_HTML = "project html"
SC_JSON = "project json"
SC_304 = "project 304"
SC_DL = "download ~100 KB"
ORDER = [SC_SIMPLE, SC_SIMPLE_GZ, SC_HTML, SC_JSON, SC_304, SC_DL]
ETAG_SAMPLE = 2000  # projects whose ETags the conditional-GET scenario uses
QUICK = {"rounds": 1, "duration": 5.0, "warmup": 1.0, "sizes": "1000,10000"}
DEFAULT_SIZES = "1000,10000,100000"
# the targets, on one server core at "10k"
T_NGINX_PAGE, T_PYPISERVER_PAGE, T_P99_MS = 0.1, 50.0, 50.0
T_PYPISERVER_SIMPLE, T_NGINX_FILE = 20.0, 0.2
T_304_SLACK = 1.05  # "a 304 costs no more than a page": CPU/request within 5 %
# "cost per page does not grow": CPU/request at the largest size over the smallest,
# beyond what the same growth costs nginx serving static pages on this machine (caches,
# TLB, the kernel's page cache grow for every server); absolute when nginx is not run
T_GROWTH = 1.25


class SlowServer(Exception):
    """A single request took longer than --request-timeout."""


def log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


# --------------------------------------------------------------------------- /proc


CLK_TCK = os.sysconf("SC_CLK_TCK")


def tree_cpu_seconds(pids: list[int]) -> float:
    """utime + stime of these processes (all their threads), in seconds."""
    total = 0
    for p in pids:
        try:
            fields = Path(f"/proc/{p}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        total += int(fields[11]) + int(fields[12])  # fields 14 and 15 of stat(5)
    return total / CLK_TCK


STAT_FIELDS = ("user", "nice", "system", "idle", "iowait", "irq", "softirq", "steal")


def cpu_ticks() -> dict[str, list[int]]:
    """Per-CPU tick counters from /proc/stat (cpu0, cpu1, ...)."""
    out = {}
    for line in Path("/proc/stat").read_text().splitlines():
        if line.startswith("cpu") and line[3:4].isdigit():
            name, *vals = line.split()
            out[name] = [int(v) for v in vals[:len(STAT_FIELDS)]]
    return out


def cpu_shares(before: dict[str, list[int]], after: dict[str, list[int]]) -> dict[str, Any]:
    """Where each CPU's time went between two cpu_ticks(), in % (steal: the hypervisor's)."""
    out: dict[str, Any] = {}
    for cpu, a in after.items():
        d = [x - y for x, y in zip(a, before.get(cpu, a), strict=True)]
        total = sum(d) or 1
        out[cpu] = {f: round(v / total * 100, 1) for f, v in zip(STAT_FIELDS, d, strict=True)}
    return out


def cpus_allowed(pid: int) -> str | None:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("Cpus_allowed_list:"):
                return line.split(":", 1)[1].strip()
    except OSError:
        return None
    return None


def machine() -> dict[str, Any]:
    model = ""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    mem_kb = run._kb_field("/proc/meminfo", "MemTotal")
    wrk = subprocess.run(["wrk", "-v"], capture_output=True, text=True, timeout=30, check=False)
    return {
        "cpu_model": model, "cpus": os.cpu_count(),
        "mem_gb": round(mem_kb / 1024 / 1024, 1) if mem_kb else None,
        "kernel": platform.release(), "python": platform.python_version(),
        "os": _os_release(), "wrk": (wrk.stdout or wrk.stderr).split("[")[0].strip(),
    }


def _os_release() -> str:
    try:
        for line in Path("/etc/os-release").read_text().splitlines():
            if line.startswith("PRETTY_NAME="):
                return line.split("=", 1)[1].strip('"')
    except OSError:
        pass
    return platform.platform()


# --------------------------------------------------------------------------- probes


def first_200(server: Server, path: str, total: float, per_request: float) -> float:
    """Seconds from spawn to the first 200 for path; SlowServer when one request hangs."""
    deadline = time.perf_counter() + total
    last = ""
    while True:
        if server.proc.poll() is not None:
            raise RuntimeError(f"{server.name} exited with {server.proc.returncode}:\n"
                               f"{server.tail()}")
        assert server.port is not None
        try:
            p = get(server.port, path, timeout=per_request)
            if p.status == 200:
                return time.perf_counter() - server.t_spawn
            last = f"HTTP {p.status}"
        except TimeoutError as exc:
            raise SlowServer(f"GET {path}: no answer within {per_request:g} s") from exc
        except OSError as exc:
            last = f"{type(exc).__name__}: {exc}"
        if time.perf_counter() > deadline:
            raise RuntimeError(f"{server.name}: no 200 for {path} after {total:g}s ({last})")
        time.sleep(0.01)


def conditional_lines(port: int, paths: list[str], headers: dict[str, str],
                      per_request: float) -> list[str] | str:
    """'path<TAB>If-None-Match: <its ETag>' per path, or why there can be none."""
    conn = http.client.HTTPConnection(HOST, port, timeout=per_request)
    out = []
    try:
        for p in paths:
            conn.request("GET", p, headers=headers)
            resp = conn.getresponse()
            resp.read()
            if resp.status != 200:
                return f"GET {p}: HTTP {resp.status}"
            etag = resp.getheader("ETag")
            if not etag:
                return "no ETag"
            out.append(f"{p}\tIf-None-Match: {etag}")
    finally:
        conn.close()
    return out


def prime(port: int, sc: Scenario, per_request: float) -> float:
    """One request of the scenario, bounded; seconds it took."""
    path, headers = split_path(sc.paths[0], sc.headers)
    t0 = time.perf_counter()
    try:
        get(port, path, headers, timeout=per_request)
    except TimeoutError as exc:
        raise SlowServer(f"GET {path}: no answer within {per_request:g} s") from exc
    return time.perf_counter() - t0


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
    return out, missing


# --------------------------------------------------------------------------- measuring


def measure(server: Server, sc: Scenario, workdir: Path, args: argparse.Namespace, *,
            client_cpu: int | None, duration: float) -> dict[str, Any]:
    """One wrk run plus the server's CPU time and wrk's own, and the load average."""
    assert server.port is not None
    pids = server.remember_tree()
    cpu0 = tree_cpu_seconds(pids)
    ru0 = resource.getrusage(resource.RUSAGE_CHILDREN)
    load0 = os.getloadavg()[0]
    ticks0 = cpu_ticks()
    w = run_wrk(server.port, sc, workdir, duration=duration, connections=args.connections,
                threads=args.threads, cpu=client_cpu, timeout=args.request_timeout)
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


def med(values: list[float | None]) -> float | None:
    vals = [v for v in values if v is not None]
    return statistics.median(vals) if vals else None


def summarize_runs(runs: list[dict[str, Any]]) -> dict[str, Any]:
    rps = [w["rps"] for w in runs]
    m = statistics.median(rps)
    done = [w for w in runs if w["requests"]]
    return {
        "runs": len(runs), "rps": m, "rps_min": min(rps), "rps_max": max(rps),
        "spread": (max(rps) - min(rps)) / m if m else None,
        "p50_ms": med([w["p50_us"] / 1000 for w in done]),
        "p99_ms": med([w["p99_us"] / 1000 for w in done]),
        "cpu_us_per_req": med([w["cpu_us_per_req"] for w in runs]),
        "server_cpu_pct": med([w["server_cpu_pct"] for w in runs]),
        "client_cpu_pct": med([w["client_cpu_pct"] for w in runs]),
        "errors": sum(w["errors"] for w in runs),
        "errors_by_kind": {k: sum(w[k] for w in runs) for k in runs[0] if k.startswith("errors_")},
        "requests": sum(w["requests"] for w in runs),
        "loadavg": [min(w["loadavg"][0] for w in runs), max(w["loadavg"][1] for w in runs)],
    }


def measure_target(target: Target, corpus: Corpus, args: argparse.Namespace, workdir: Path, *,
                   server_cpu: int | None, client_cpu: int | None) -> dict[str, Any]:
    """Start the target, check it, run every scenario --rounds times, stop it."""
    workdir.mkdir(parents=True, exist_ok=True)
    res: dict[str, Any] = {"status": "ok", "scenarios": {}, "missing": {}}
    if isinstance(target, PypidTarget):
        res["cache_before_start"] = target.has_cache(corpus)
    per_req = args.request_timeout
    server = target.start(corpus, workdir, server_cpu)
    try:
        server.wait_listening(START_TIMEOUT)
        project_path = f"/simple/{corpus.projects[len(corpus.projects) // 2]}/"
        res["first_simple_s"] = first_200(server, "/simple/", START_TIMEOUT, per_req)
        res["first_project_s"] = first_200(server, project_path, START_TIMEOUT, per_req)
        time.sleep(1.0)  # workers may still be forking after the first answer
        tree = server.remember_tree()
        res["pinning"] = {str(p): cpus_allowed(p) for p in tree}
        res["processes"] = len(tree)
        if server_cpu is not None and any(c != str(server_cpu) for c in res["pinning"].values()):
            raise RuntimeError(f"{target.name} not pinned to CPU {server_cpu}: {res['pinning']}")
        res["mem_idle"] = memory_of(server.pid)
        assert server.port is not None
        scs, res["missing"] = build_scenarios(target.name, corpus, server.port, per_req)
        rng = random.Random(7)  # noqa: S311
        samples = 3 if isinstance(target, PypiserverTarget) else 10
        ready: list[Scenario] = []
        for sc in scs:
            check = validate(server.port, sc, rng, samples=samples, timeout=per_req)
            res["scenarios"][sc.name] = {"check": check, "runs": []}
            if check["ok"]:
                ready.append(sc)
            elif any("timed out" in b for b in check["bad"]):
                raise SlowServer(f"{sc.name}: {check['bad'][0]}")
            else:
                log(f"    {sc.name}: FAILED check: {check['bad'][:2]}")
        log(f"    up: /simple/ after {res['first_simple_s']:.1f} s, pinned "
            f"{sorted(set(res['pinning'].values()))}, {len(tree)} processes; "
            f"{len(ready)} scenarios")

        def one(sc: Scenario, duration: float) -> dict[str, Any]:
            assert server.port is not None
            prime(server.port, sc, per_req)
            w = measure(server, sc, workdir, args, client_cpu=client_cpu, duration=duration)
            if server.proc.poll() is not None:
                raise RuntimeError(f"{target.name} died during {sc.name}:\n{server.tail()}")
            return w

        for r in range(args.rounds):
            for sc in ready:
                # warm-up only where there is something to warm (pypid's page cache);
                # pypiserver gets its primed request, nginx serves files from the OS cache
                if r == 0 and args.warmup > 0 and isinstance(target, PypidTarget):
                    prime(server.port, sc, per_req)
                    run_wrk(server.port, sc, workdir, duration=args.warmup,
                            connections=args.connections, threads=args.threads,
                            cpu=client_cpu, timeout=per_req)
                w = one(sc, args.duration)
                res["scenarios"][sc.name]["runs"].append(w)
                cu = w["cpu_us_per_req"]
                c0 = w["cpu_stat"].get(f"cpu{server_cpu}", {}) if server_cpu is not None else {}
                log(f"    r{r + 1} {sc.name:<17} {w['rps']:>9.1f} req/s  p99 "
                    f"{w['p99_us'] / 1000:>8.1f} ms  {cu or 0:>8.0f} us/req  server CPU "
                    f"{w['server_cpu_pct']:.0f}%  wrk CPU {w['client_cpu_pct']:.0f}%  "
                    f"errors {w['errors']}  load {w['loadavg'][1]:.1f}  CPU{server_cpu} idle "
                    f"{c0.get('idle', 0):.0f}% softirq {c0.get('softirq', 0):.0f}% "
                    f"steal {c0.get('steal', 0):.0f}%")
        for sc in ready:  # noisy: two more runs, the median then covers all of them
            runs = res["scenarios"][sc.name]["runs"]
            s = summarize_runs(runs)
            if len(runs) >= 3 and s["spread"] is not None and s["spread"] > args.max_spread:
                log(f"    {sc.name}: spread {s['spread'] * 100:.0f}% > "
                    f"{args.max_spread * 100:.0f}%: two more runs")
                for _ in range(2):
                    runs.append(one(sc, args.duration))
                    log(f"    +  {sc.name:<17} {runs[-1]['rps']:>9.1f} req/s")
                res["scenarios"][sc.name]["reran"] = True
        for sc in ready:
            res["scenarios"][sc.name]["summary"] = summarize_runs(
                res["scenarios"][sc.name]["runs"])
        res["mem_loaded"] = memory_of(server.pid)
    except SlowServer as exc:
        res["status"] = "timeout"
        res["reason"] = str(exc)
        log(f"    {target.name}: {exc}: not measured at this size")
    except RuntimeError as exc:
        res["status"] = "failed"
        res["reason"] = str(exc).splitlines()[0]
        res["log_tail"] = list(server.lines)[-30:]
        log(f"    {target.name} FAILED: {exc}")
    finally:
        server.stop()
    res["server_log_tail"] = list(server.lines)[-15:]
    return res


# --------------------------------------------------------------------------- report


def fnum(v: float | None, unit: str = "") -> str:
    if v is None:
        return "-"
    if v >= 100:
        return f"{v:,.0f}{unit}"
    if v >= 10:
        return f"{v:.1f}{unit}"
    return f"{v:.2f}{unit}"


def fsize(n: int) -> str:
    return f"{n // 1000}k" if n % 1000 == 0 and n >= 1000 else f"{n:,}"


def cell(results: dict[str, Any], size: int, target: str, sc: str) -> dict[str, Any] | None:
    """A scenario's summary; JSON falls back to the target's HTML page (flag 'html')."""
    t = results.get(size, {}).get(target)
    if not t or t["status"] != "ok":
        return None
    e = t["scenarios"].get(sc)
    if e and "summary" in e:
        return {**e["summary"], "check": e["check"]}
    if sc == SC_JSON and target != "pypid":
        e = t["scenarios"].get(SC_HTML)
        if e and "summary" in e:
            return {**e["summary"], "check": e["check"], "as_html": True}
    return None


def why_missing(results: dict[str, Any], size: int, target: str, sc: str) -> str:
    t = results.get(size, {}).get(target)
    if t is None:
        return "not run"
    if t["status"] != "ok":
        return t["status"]
    e = t["scenarios"].get(sc)
    if e and not e["check"]["ok"]:
        return "FAILED"
    return "n/a" if sc in t.get("missing", {}) else "-"


def ratio(a: dict[str, Any] | None, b: dict[str, Any] | None) -> float | None:
    if not a or not b or not b["rps"]:
        return None
    return a["rps"] / b["rps"]


def fratio(v: float | None) -> str:
    if v is None:
        return "-"
    return f"{v:,.0f}x" if v >= 10 else f"{v:.1f}x" if v >= 1 else f"{v:.2f}x"


def render(results: dict[str, Any], meta: dict[str, Any], sizes: list[int],
           targets: list[str], labels: dict[str, str]) -> str:
    m = meta["machine"]
    lines = [
        f"pypid side by side: {m['cpu_model']}, {m['cpus']} CPUs, {m['mem_gb']} GB, "
        f"{m['os']}, Linux {m['kernel']}, Python {m['python']}",
        f"server pinned to CPU {meta['server_cpu']} (whole process tree), wrk on CPU "
        f"{meta['client_cpu']}: wrk -t{meta['threads']} -c{meta['connections']} "
        f"-d{meta['duration']:g}s --timeout {meta['request_timeout']:g}s; median of "
        f"{meta['rounds']} run(s) per figure; load average {meta['load_min']:.1f}-"
        f"{meta['load_max']:.1f} during the runs"
        + (f"; servers and wrk under nice {meta['nice']}" if meta.get("nice") else ""),
        "servers: " + "; ".join(meta["servers"][t] for t in targets if t in meta["servers"]),
        "req/s: requests per second; p99: wrk's 99th percentile latency, ms; us/req: server "
        "CPU time (all its processes) per request, microseconds",
        "",
    ]
    cols = [labels[t] for t in targets]
    head1 = f"{'scenario':<17} {'files':>5} |"
    head2 = f"{'':<17} {'':>5} |"
    for c in cols:
        head1 += f" {c:^29} |"
        head2 += f" {'req/s':>9} {'p99 ms':>9} {'us/req':>7}  |"
    ratios = []
    if "pypid" in targets and "pypiserver" in targets:
        ratios.append(("pypiserver", "pypid/pypiserver"))
    if "pypid" in targets and "nginx" in targets:
        ratios.append(("nginx", "pypid/nginx"))
    for _, name in ratios:
        head1 += f" {name:>16}"
        head2 += f" {'req/s':>16}"
    lines += [head1, head2, "-" * len(head1)]
    marks = set()
    for sc in ORDER:
        if not any(cell(results, s, t, sc) for s in sizes for t in targets):
            continue
        for size in sizes:
            row = f"{sc:<17} {fsize(size):>5} |"
            for t in targets:
                c = cell(results, size, t, sc)
                if c is None:
                    row += f" {why_missing(results, size, t, sc):^29} |"
                    continue
                mark = ""
                if c.get("as_html"):
                    mark += "h"
                if c["errors"]:
                    mark += "e"
                if c["client_cpu_pct"] and c["client_cpu_pct"] >= 90:
                    mark += "c"
                if c["spread"] is not None and c["spread"] > meta["max_spread"]:
                    mark += "~"
                marks.update(mark)
                row += (f" {fnum(c['rps']):>9} {fnum(c['p99_ms']):>9}"
                        f" {fnum(c['cpu_us_per_req']):>7}{mark:<2}|")
            p = cell(results, size, "pypid", sc)
            for other, _ in ratios:
                row += f" {fratio(ratio(p, cell(results, size, other, sc))):>16}"
            lines.append(row)
        lines.append("")
    notes = {
        "h": "h: this server has no JSON API; its HTML project page is the baseline",
        "e": "e: errors during the runs (see the list below)",
        "c": "c: wrk's own CPU was >= 90% busy: the figure may be bounded by the client",
        "~": f"~: noisy: req/s spread (max-min)/median over the runs above "
             f"{meta['max_spread'] * 100:.0f}% even after the reruns",
    }
    lines += [notes[k] for k in "hec~" if k in marks]
    for size in sizes:
        for t in targets:
            r = results.get(size, {}).get(t)
            if r and r["status"] != "ok":
                lines.append(f"{labels[t]} at {fsize(size)} files: {r['status']}: {r['reason']}")
            elif r:
                for sc, e in r["scenarios"].items():
                    s = e.get("summary")
                    if s and s["errors"]:
                        kinds = ", ".join(f"{k[7:]} {v}" for k, v in s["errors_by_kind"].items()
                                          if v)
                        lines.append(f"errors: {labels[t]} {fsize(size)} {sc}: {s['errors']} "
                                     f"of {s['requests']} ({kinds})")
    # start and memory
    lines += ["", f"{'start, memory':<17} {'files':>5} |" + "".join(
        f" {labels[t]:^28} |" for t in targets)]
    lines.append(f"{'':<17} {'':>5} |" + "".join(
        f" {'1st /simple/ s':>14} {'PSS MB':>7} {'procs':>5} |" for _ in targets))
    for size in sizes:
        row = f"{'':<17} {fsize(size):>5} |"
        for t in targets:
            r = results.get(size, {}).get(t)
            if not r or "first_simple_s" not in r:
                row += f" {(r or {}).get('status', 'not run'):^28} |"
                continue
            mem = r.get("mem_loaded") or r.get("mem_idle") or {}
            pss = mem.get("total_pss_kb")
            row += (f" {r['first_simple_s']:>14.1f} {fnum(pss / 1024 if pss else None):>7}"
                    f" {r.get('processes', 0):>5} |")
        lines.append(row)
    lines.append("(1st /simple/: seconds from spawn to the first 200; pypid "
                 + ("cold, no cache yet" if meta.get("pypid_cold") else "warm, cache kept")
                 + "; PSS: proportional set size of the server's processes after the load)")
    lines += ["", *verdicts(results, sizes, meta)]
    return "\n".join(lines)


def verdicts(results: dict[str, Any], sizes: list[int], meta: dict[str, Any]) -> list[str]:
    """PASS/FAIL per target of the issue at the reference size (others in brackets)."""
    ref = meta["reference_size"]
    checks: list[tuple[str, Any]] = []

    def rel(sc: str, other: str, floor: float, other_sc: str | None = None):
        def f(size: int) -> tuple[bool | None, str]:
            a = cell(results, size, "pypid", sc)
            b = cell(results, size, other, other_sc or sc)
            r = ratio(a, b)
            if r is None:
                return None, "not measured"
            return r >= floor, f"{fratio(r)} ({fnum(a['rps'])} vs {fnum(b['rps'])} req/s)"
        return f

    def p99(sc: str):
        def f(size: int) -> tuple[bool | None, str]:
            a = cell(results, size, "pypid", sc)
            if not a or a["p99_ms"] is None:
                return None, "not measured"
            return a["p99_ms"] < T_P99_MS, f"p99 {fnum(a['p99_ms'])} ms"
        return f

    def simple_gzip(size: int) -> tuple[bool | None, str]:
        ok, text = rel(SC_SIMPLE_GZ, "pypiserver", T_PYPISERVER_SIMPLE)(size)
        a = cell(results, size, "pypid", SC_SIMPLE_GZ)
        if a is None:
            return None, "not measured"
        enc = a["check"]["content_encoding"] or "identity"
        plain = rel(SC_SIMPLE, "pypiserver", T_PYPISERVER_SIMPLE)(size)[1]
        if ok is None:
            return None, f"{text}; Content-Encoding {enc}"
        return ok and enc == "gzip", f"{text}, Content-Encoding {enc}; uncompressed {plain}"

    def not_modified(size: int) -> tuple[bool | None, str]:
        a = cell(results, size, "pypid", SC_304)
        b = cell(results, size, "pypid", SC_HTML)
        if not a or not b or not a["cpu_us_per_req"] or not b["cpu_us_per_req"]:
            return None, "not measured"
        return (a["cpu_us_per_req"] <= b["cpu_us_per_req"] * T_304_SLACK,
                f"304 {fnum(a['cpu_us_per_req'])} vs page {fnum(b['cpu_us_per_req'])} us/req "
                f"({fnum(a['rps'])} vs {fnum(b['rps'])} req/s)")

    checks = [
        (f"project html >= {T_NGINX_PAGE}x nginx", rel(SC_HTML, "nginx", T_NGINX_PAGE)),
        (f"project json >= {T_NGINX_PAGE}x nginx (html)",
         rel(SC_JSON, "nginx", T_NGINX_PAGE, SC_HTML)),
        (f"project html >= {T_PYPISERVER_PAGE:g}x pypiserver",
         rel(SC_HTML, "pypiserver", T_PYPISERVER_PAGE)),
        (f"project json >= {T_PYPISERVER_PAGE:g}x pypiserver (html)",
         rel(SC_JSON, "pypiserver", T_PYPISERVER_PAGE, SC_HTML)),
        (f"project html p99 < {T_P99_MS:g} ms at {meta['connections']} conns", p99(SC_HTML)),
        (f"project json p99 < {T_P99_MS:g} ms at {meta['connections']} conns", p99(SC_JSON)),
        (f"/simple/ >= {T_PYPISERVER_SIMPLE:g}x pypiserver, gzip when accepted", simple_gzip),
        (f"100 KB file >= {T_NGINX_FILE}x nginx", rel(SC_DL, "nginx", T_NGINX_FILE)),
        ("304 costs no more than a page (CPU/req)", not_modified),
    ]
    out = [f"targets (pypid, one server core) at {fsize(ref)} files "
           f"({meta['projects'][str(ref)]:,} projects); other sizes in brackets:"]
    for name, f in checks:
        ok, text = f(ref)
        word = "PASS" if ok else "n/a " if ok is None else "FAIL"
        others = []
        for s in sizes:
            if s != ref:
                o, t = f(s)
                others.append(f"{fsize(s)}: {'PASS' if o else 'n/a' if o is None else 'FAIL'}"
                              + (f" {t.split(' (')[0]}" if o is not None else ""))
        out.append(f"  {word}  {name:<50} {text}" + (f"  [{'; '.join(others)}]" if others else ""))
    # cost per page must not grow with the number of files
    small, large = min(sizes), max(sizes)
    if small != large:
        machine = growth(results, "nginx", SC_HTML, small, large)
        for sc in (SC_HTML, SC_JSON):
            a, b = cell(results, small, "pypid", sc), cell(results, large, "pypid", sc)
            g = growth(results, "pypid", sc, small, large)
            if g is not None:  # then a and b are there
                limit = T_GROWTH * (machine or 1.0)
                word = "PASS" if g <= limit else "FAIL"
                name = f"{sc} cost flat from {fsize(small)} to {fsize(large)}"
                against = (f"nginx's x{machine:.2f} here, limit x{T_GROWTH} of it = x{limit:.2f}"
                           if machine else f"limit x{T_GROWTH}")
                out.append(
                    f"  {word}  {name:<50} "
                    f"{fnum(a['cpu_us_per_req'])} -> {fnum(b['cpu_us_per_req'])} us/req "
                    f"(x{g:.2f}; {against}); req/s {fnum(a['rps'])} -> {fnum(b['rps'])}")
    return out


def growth(results: dict[str, Any], target: str, sc: str, small: int,
           large: int) -> float | None:
    """CPU per request of ``target`` at ``large`` over ``small`` files, or None."""
    a, b = cell(results, small, target, sc), cell(results, large, target, sc)
    if not a or not b or not a["cpu_us_per_req"] or not b["cpu_us_per_req"]:
        return None
    return float(b["cpu_us_per_req"] / a["cpu_us_per_req"])


# --------------------------------------------------------------------------- main


def main(args: argparse.Namespace) -> int:
    t_start = time.perf_counter()
    if args.quick:
        for k in ("rounds", "duration", "warmup", "sizes"):
            if getattr(args, k) is None:
                setattr(args, k, QUICK[k])
    args.rounds = 3 if args.rounds is None else args.rounds
    args.duration = 10.0 if args.duration is None else args.duration
    args.warmup = 2.0 if args.warmup is None else args.warmup
    sizes = sorted({int(s.replace("_", "")) for s in (args.sizes or DEFAULT_SIZES).split(",")})
    names = [t.strip() for t in args.targets.split(",") if t.strip()]
    bad = set(names) - {"pypid", "pypiserver", "nginx"}
    if bad:
        raise SystemExit(f"unknown target(s): {', '.join(sorted(bad))}")
    names = [t for t in ("pypid", "pypiserver", "nginx") if t in names]
    if args.nice is None:  # see --nice: fair shares of the two CPUs on a busy machine
        args.nice = -10 if os.geteuid() == 0 else 0
    run.set_nice(args.nice)  # run.py may be __main__: set it on the module compare uses
    server_cpu, client_cpu = run.pick_cpus(args.pin)
    if args.threads is None:
        args.threads = 1 if client_cpu is not None else 2
    run.ensure_wrk()

    stamp = time.strftime("%Y%m%d-%H%M%S")
    work = OUT_DIR / f"compare-{stamp}"
    targets: dict[str, Target] = {}
    servers: dict[str, str] = {}
    src = args.src.resolve()
    dirty = _dirty(src)
    if "pypid" in names:
        # every size runs the same code even if the checkout changes meanwhile: a snapshot
        snap = work / "src"
        shutil.copytree(src / "pypid", snap / "pypid",
                        ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
        workers = args.workers or 1
        targets["pypid"] = PypidTarget(args.python, workers, snap)
        servers["pypid"] = (f"pypid {run._git_rev() or '?'}{'+changes' if dirty else ''} "
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
        "machine": machine(), "server_cpu": server_cpu, "client_cpu": client_cpu,
        "threads": args.threads, "connections": args.connections, "duration": args.duration,
        "warmup": args.warmup, "rounds": args.rounds, "request_timeout": args.request_timeout,
        "max_spread": args.max_spread, "nice": args.nice, "sizes": sizes, "targets": names,
        "servers": servers,
        "git": run._git_rev(), "pypid_uncommitted_changes": dirty,
        "loadavg_start": os.getloadavg(),
    }
    log(f"side by side: {', '.join(names)} at {', '.join(fsize(s) for s in sizes)} files; "
        f"{args.rounds} round(s) of {args.duration:g} s; server CPU {server_cpu}, "
        f"wrk CPU {client_cpu}")
    try:
        for size in sizes:
            t0 = time.perf_counter()
            n_projects = projects_for_files(size)
            corpus = build_corpus(n_projects)
            if "nginx" in names:
                write_static_index(corpus)
            projects[str(size)] = n_projects
            corpora[str(size)] = {"projects": n_projects, "files": len(corpus.files),
                                  "mb": round(corpus.total_bytes / 1e6, 1),
                                  "root": str(corpus.root), "reused": corpus.reused}
            log(f"{fsize(size)} files: {n_projects} projects, {len(corpus.files)} files, "
                f"{corpus.total_bytes / 1e6:.1f} MB ({'reused' if corpus.reused else 'built'}, "
                f"{time.perf_counter() - t0:.1f} s)")
            results[size] = {}
            for name in names:
                target = targets[name]
                if name == "pypid" and not target.has_cache(corpus):
                    pypid_cold = True
                log(f"  {labels[name]} at {fsize(size)} files")
                t1 = time.perf_counter()
                results[size][name] = measure_target(
                    target, corpus, args, work / f"{size}-{name}", server_cpu=server_cpu,
                    client_cpu=client_cpu)
                results[size][name]["seconds"] = round(time.perf_counter() - t1, 1)
                for e in results[size][name]["scenarios"].values():
                    loads.extend(x for w in e.get("runs", []) for x in w["loadavg"])
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


def _dirty(src: Path) -> list[str]:
    """Uncommitted changes under pypid/ (the code measured is then not just the commit)."""
    try:
        out = subprocess.run(["git", "-C", str(src), "status", "--porcelain", "--", "pypid"],
                             capture_output=True, text=True, timeout=30, check=True).stdout
    except (OSError, subprocess.SubprocessError):
        return []
    return [line[3:] for line in out.splitlines()]


def _pypid_threads(src: Path) -> int | str:
    try:
        text = (src / "pypid" / "server.py").read_text()
        for line in text.splitlines():
            if line.startswith("THREADS_PER_WORKER"):
                return int(line.split("=")[1].split("#")[0])
    except (OSError, ValueError):
        pass
    return "?"


if __name__ == "__main__":
    sys.exit(run.main(["--compare", *sys.argv[1:]]))
