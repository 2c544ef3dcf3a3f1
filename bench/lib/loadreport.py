"""The load run's figures: latency per kind, failures, memory over time, and the verdict."""

from __future__ import annotations

import math
import re
from typing import Any

from bench.lib.loaddrive import Tally
from bench.lib.sampler import Sample, slope

LOG_TROUBLE = re.compile(r"\[(ERROR|CRITICAL)\]|\bERROR\b|Traceback|WORKER TIMEOUT")


def percentile(sorted_values: list[float], p: float) -> float:
    """Nearest-rank percentile of an ascending list.

    >>> percentile([1.0, 2.0, 3.0, 4.0], 50)
    2.0
    """
    return sorted_values[max(0, math.ceil(p / 100 * len(sorted_values)) - 1)]


def kinds(tally: Tally) -> list[dict[str, Any]]:
    """Per request kind: count, failures, statuses seen, p50/p95/p99/max latency (ms)."""
    rows = []
    names = sorted(tally.requests)
    for name in names:
        lat = sorted(tally.latencies.get(name, []))
        statuses = {s: n for (k, s), n in sorted(tally.statuses.items()) if k == name}
        row: dict[str, Any] = {"kind": name, "requests": tally.requests[name],
                               "failed": tally.failures[name], "statuses": statuses}
        for p in (50, 95, 99):
            row[f"p{p}_ms"] = percentile(lat, p) * 1000 if lat else None
        top = tally.slowest.get(name, lat[-1] if lat else None)  # kept latencies may be a sample
        row["max_ms"] = top * 1000 if top is not None else None
        rows.append(row)
    return rows


def memory(samples: list[Sample], warmup: float, seconds: float,
           workers: int = 1) -> dict[str, Any]:
    """RSS of worker and master: start, end of warm-up, max, end; growth trend after warm-up.

    The trend is the least-squares line through the worker's RSS from the end of the
    warm-up to the end of the load: its rise over that span is ``growth_mb``.
    """
    worker = [(s.t, s.worker_rss_kb / 1024) for s in samples if s.worker_rss_kb is not None]
    after = [(t, mb) for t, mb in worker if warmup <= t <= seconds + 1]
    out: dict[str, Any] = {
        "samples": len(samples),
        "worker_pids": worker_pids(samples),
        "master_rss_mb": _span([s.master_rss_kb for s in samples]),
        "fds_max": max((s.worker_fds or 0 for s in samples), default=0),
        "threads_max": max((s.worker_threads or 0 for s in samples), default=0),
    }
    if len(after) < 2:
        return out
    fit = slope(after)
    late = slope(after[len(after) // 2:])  # a warm-up flattens out; a leak keeps its slope
    span = after[-1][0] - after[0][0]
    out.update({
        "worker_rss_mb": {"start": worker[0][1], "warm": after[0][1],
                          "max": max(mb for _, mb in worker), "end": after[-1][1]},
        "slope_mb_per_min": None if fit is None else fit * 60,
        "late_slope_mb_per_min": None if late is None else late * 60,
        "growth_mb": None if fit is None else fit * span,
        "fit_span_s": span,
    })
    out["pss"] = pss(samples, warmup, seconds, workers)
    return out


def worker_pids(samples: list[Sample]) -> list[int]:
    """Every worker pid seen: a replaced worker shows up with a new one."""
    pids = {s.worker_pid for s in samples if s.worker_pid is not None}
    pids.update(w[0] for s in samples for w in s.workers if w[0] is not None)
    return sorted(pids)


def trend(points: list[tuple[float, float]], warmup: float,
          seconds: float) -> dict[str, float | None] | None:
    """MB over time: at the end of the warm-up, peak (whole run), end, and the least-squares
    line through the points after the warm-up (slope in MB/hour, rise over that span; and
    the slope of the last half of them alone)."""
    after = [(t, mb) for t, mb in points if warmup <= t <= seconds + 1]
    if not points or not after:
        return None
    fit = slope(after) if len(after) > 1 else None
    late = slope(after[len(after) // 2:]) if len(after) > 3 else None
    span = after[-1][0] - after[0][0]
    return {"warm": after[0][1], "peak": max(mb for _, mb in points), "end": after[-1][1],
            "slope_mb_per_hour": None if fit is None else fit * 3600,
            # a cache filling up flattens out; a leak keeps its slope
            "late_slope_mb_per_hour": None if late is None else late * 3600,
            "growth_mb": None if fit is None else fit * span}


def pss(samples: list[Sample], warmup: float, seconds: float, workers: int) -> dict[str, Any]:
    """PSS (and the workers' RSS) of master, each worker and the tree: ``trend()`` of each.

    Workers are told apart by rank (the n-th lowest pid of a sample): a replaced worker's
    successor carries on its line, and the replacement is a failure of its own.
    """
    def mb(kb: int | None) -> float | None:
        return None if kb is None else kb / 1024

    series: dict[str, list[tuple[float, float]]] = {"master": [], "tree": []}
    rss: dict[str, list[tuple[float, float]]] = {}
    for s in samples:
        if (m := mb(s.master_pss_kb)) is not None:
            series["master"].append((s.t, m))
        if (tree := mb(s.tree_pss_kb)) is not None and len(s.workers) == workers:
            series["tree"].append((s.t, tree))
        for rank, (_, rss_kb, pss_kb, _) in enumerate(s.workers, 1):
            if (w := mb(pss_kb)) is not None:
                series.setdefault(f"worker {rank}", []).append((s.t, w))
            if (r := mb(rss_kb)) is not None:
                rss.setdefault(f"worker {rank}", []).append((s.t, r))
    order = ["master", *sorted(k for k in series if k.startswith("worker")), "tree"]
    return {"workers": workers,
            "pss_mb": {k: trend(series[k], warmup, seconds) for k in order if series[k]},
            "rss_mb": {k: trend(v, warmup, seconds) for k, v in sorted(rss.items())}}


def _span(values: list[int | None]) -> dict[str, float] | None:
    vals = [v / 1024 for v in values if v is not None]
    if not vals:
        return None
    return {"start": vals[0], "max": max(vals), "end": vals[-1]}


def verdict(tally: Tally, mem: dict[str, Any], *, max_growth_mb: float,
            server_alive: bool, log_trouble: list[str], workers: int = 1) -> list[str]:
    """Why the run failed (empty: it passed).

    Memory fails when the fitted line after the warm-up rises more than ``max_growth_mb``:
    the first worker's RSS (as with one worker from the start), any other worker's RSS,
    or the PSS of the whole tree (master and workers).
    """
    why = []
    failed = sum(tally.failures.values())
    if failed:
        why.append(f"{failed} failed request(s)")
    if mem.get("growth_mb") is None:
        why.append("too few memory samples after the warm-up")
    elif mem["growth_mb"] > max_growth_mb:
        why.append(f"worker RSS grew {mem['growth_mb']:.1f} MB after the warm-up "
                   f"(bound {max_growth_mb:g} MB)")
    trends = mem.get("pss") or {}
    for name, t in (trends.get("rss_mb") or {}).items():
        if name != "worker 1" and t and (t["growth_mb"] or 0) > max_growth_mb:
            why.append(f"{name} RSS grew {t['growth_mb']:.1f} MB after the warm-up "
                       f"(bound {max_growth_mb:g} MB)")
    tree = (trends.get("pss_mb") or {}).get("tree")
    if tree is None or tree["growth_mb"] is None:
        why.append("too few PSS samples of the whole tree after the warm-up")
    elif tree["growth_mb"] > max_growth_mb:
        why.append(f"PSS of master and workers grew {tree['growth_mb']:.1f} MB after the "
                   f"warm-up ({tree['slope_mb_per_hour']:+.1f} MB/hour; bound "
                   f"{max_growth_mb:g} MB)")
    if len(mem["worker_pids"]) > workers:
        why.append(f"{len(mem['worker_pids']) - workers} worker(s) replaced "
                   f"(pids {mem['worker_pids']})")
    if not server_alive:
        why.append("the server exited")
    if log_trouble:
        why.append(f"{len(log_trouble)} error line(s) in the server log")
    return why


def _ms(v: float | None) -> str:
    return "-" if v is None else f"{v:.1f}" if v < 100 else f"{v:,.0f}"


def table(meta: dict[str, Any], *, rows: list[dict[str, Any]], tally: Tally,
          mem: dict[str, Any], cpu: dict[str, Any], why: list[str],
          log_trouble: list[str]) -> str:
    total = sum(r["requests"] for r in rows)
    lines = [
        f"pypid load: {meta['workers']} worker{'s' if meta['workers'] > 1 else ''}, "
        f"{meta['clients']} clients "
        f"({meta['clients'] - meta['uploaders']} readers, {meta['uploaders']} uploaders at "
        f"{meta['upload_rate']:g}/s to {meta.get('upload_projects', 20)} projects), "
        f"{tally.seconds:.0f} s (warm-up {meta['warmup']:g} s), "
        f"{meta['projects']} projects / {meta['files']} files; malloc "
        f"{meta.get('malloc', 'as glibc sets it')}",
        f"{meta['cpu_model']}, {meta['cpus']} CPUs; server on CPU {meta['server_cpu']}, "
        f"clients on CPU {meta['client_cpu']}; load average before/after "
        f"{meta['load_before']:.1f}/{meta['load_after']:.1f} (other work shares these CPUs)",
        "",
        f"{'kind':<18} {'requests':>9} {'failed':>7} {'p50 ms':>8} {'p95 ms':>8} "
        f"{'p99 ms':>8} {'max ms':>8}  statuses",
    ]
    for r in rows:
        statuses = " ".join(f"{s}:{n}" for s, n in r["statuses"].items())
        lines.append(f"{r['kind']:<18} {r['requests']:>9,} {r['failed']:>7} "
                     f"{_ms(r['p50_ms']):>8} {_ms(r['p95_ms']):>8} {_ms(r['p99_ms']):>8} "
                     f"{_ms(r['max_ms']):>8}  {statuses}")
    lines += [
        f"{'all':<18} {total:>9,} {sum(tally.failures.values()):>7}",
        "",
        f"throughput {total / tally.seconds:,.0f} req/s; re-sent on a closed keep-alive "
        f"connection: {sum(tally.retries.values())}; "
        f"server CPU {cpu['server_pct']:.0f}% of one core "
        f"({cpu['server_us_per_req']:,.0f} us/request), client CPU {cpu['client_pct']:.0f}%",
    ]
    rss, master = mem.get("worker_rss_mb"), mem.get("master_rss_mb")
    if rss:
        lines.append(
            f"worker RSS MB: start {rss['start']:.1f}, after warm-up {rss['warm']:.1f}, "
            f"max {rss['max']:.1f}, end {rss['end']:.1f}; trend after warm-up "
            f"{mem['slope_mb_per_min']:+.2f} MB/min (its last half "
            f"{mem['late_slope_mb_per_min'] or 0:+.2f}), {mem['growth_mb']:+.1f} MB over "
            f"{mem['fit_span_s']:.0f} s (bound {meta['max_growth_mb']:g} MB)")
    if master:
        lines.append(f"master RSS MB: start {master['start']:.1f}, max {master['max']:.1f}, "
                     f"end {master['end']:.1f}")
    lines.append(f"worker descriptors max {mem['fds_max']}, threads max {mem['threads_max']} "
                 f"(the first worker), worker pids {mem['worker_pids']}")
    lines += pss_lines(mem.get("pss"), meta)
    if tally.retries:
        lines += ["", "re-sent (kind, after the answer before it on that connection):",
                  *(f"  {n:>5}  {k}" for k, n in tally.retries.most_common(10))]
    if tally.examples:
        lines += ["", "first failures:", *("  " + e for e in tally.examples)]
    if log_trouble:
        lines += ["", "server log:", *("  " + line for line in log_trouble[:10])]
    lines += ["", "FAIL: " + "; ".join(why) if why else "PASS: 0 failed requests, RSS and PSS flat"]
    return "\n".join(lines)


def pss_lines(trends: dict[str, Any] | None, meta: dict[str, Any]) -> list[str]:
    """The PSS table: per process and for the tree, and the other workers' RSS."""
    if not trends:
        return []

    def num(v: float | None, fmt: str = ".1f") -> str:
        return "-" if v is None else format(v, fmt)

    lines = ["", f"{'PSS MB':<10} {'warm-up':>8} {'peak':>8} {'end':>8} {'MB/hour':>8} "
                 f"{'last half':>9} {'rise':>7}  (fitted after the warm-up; bound for the "
                 f"tree's rise {meta['max_growth_mb']:g} MB)"]
    for name, t in trends["pss_mb"].items():
        if t:
            lines.append(f"{name:<10} {t['warm']:>8.1f} {t['peak']:>8.1f} {t['end']:>8.1f} "
                         f"{num(t['slope_mb_per_hour'], '+.1f'):>8} "
                         f"{num(t['late_slope_mb_per_hour'], '+.1f'):>9} "
                         f"{num(t['growth_mb'], '+.1f'):>7}")
    for name, t in trends["rss_mb"].items():
        if t and name != "worker 1":
            lines.append(f"{name} RSS MB: after warm-up {t['warm']:.1f}, peak {t['peak']:.1f}, "
                         f"end {t['end']:.1f}, {num(t['slope_mb_per_hour'], '+.1f')} MB/hour")
    return lines
