"""The side-by-side table (pypid, pypiserver, nginx) and the performance issue's verdicts."""

from __future__ import annotations

from typing import Any

from bench.lib.stats import fnum, fratio, fsize

SC_SIMPLE = "/simple/"
SC_SIMPLE_GZ = "/simple/ gzip"
SC_HTML = "project html"
SC_JSON = "project json"
SC_304 = "project 304"
SC_DL = "download ~100 KB"
SC_DL_HUGE = "download 10 MB"
SC_HTML_MANY = "project html c256"  # the same pages at 256 connections
ORDER = [SC_SIMPLE, SC_SIMPLE_GZ, SC_HTML, SC_JSON, SC_304, SC_HTML_MANY, SC_DL, SC_DL_HUGE]
# the performance issues' targets (18: second round), on one server core at "10k"
T_NGINX_PAGE, T_PYPISERVER_PAGE, T_P99_X = 0.85, 50.0, 3.0
T_PYPISERVER_SIMPLE, T_NGINX_SIMPLE, T_NGINX_FILE, T_NGINX_HUGE = 20.0, 1.0, 0.5, 0.9
T_PSS_MB, T_COLD_S = 120.0, 3.0  # two workers, not pinned (footprint.py)
T_UPLOADS_X = 10.0  # twine's time against pypiserver's (uploads.py)
T_304_SLACK = 1.05  # "a 304 costs no more than a page": CPU/request within 5 %
# "cost per page does not grow": CPU/request at the largest size over the smallest,
# beyond what the same growth costs nginx serving static pages on this machine (caches,
# TLB, the kernel's page cache grow for every server); absolute when nginx is not run
T_GROWTH = 1.25


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
    for size in sizes:
        fp = (results.get(size, {}).get("pypid") or {}).get("footprint")
        if fp and fp.get("status") == "ok":
            lines.append(
                f"pypid with 2 workers, not pinned, {fsize(size)} files: cold start (no cache, "
                f"every core) {fp['cold_start_s']:.1f} s to /simple/ with the files in memory, "
                + (f"{fp['cold_start_disk_s']:.1f} s with nothing in memory (as after a reboot)"
                   if fp.get("cold_start_disk_s") is not None
                   else f"nothing in memory: {fp.get('cold_start_disk', 'not measured')}")
                + "; PSS idle "
                f"{fnum(fp['pss_idle_mb'])} MB, peak {fnum(fp['pss_peak_mb'])} MB "
                f"{fp['pss_peak_processes']} (master, workers) while every scenario and the "
                "gzipped pages ran")
        elif fp:
            lines.append(f"pypid with 2 workers at {fsize(size)} files: {fp.get('reason')}")
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

    def p99(sc: str, other_sc: str | None = None):
        def f(size: int) -> tuple[bool | None, str]:
            a = cell(results, size, "pypid", sc)
            b = cell(results, size, "nginx", other_sc or sc)
            if not a or a["p99_ms"] is None or not b or not b["p99_ms"]:
                return None, "not measured"
            x = a["p99_ms"] / b["p99_ms"]
            return x <= T_P99_X, (f"x{x:.1f} (p99 {fnum(a['p99_ms'])} vs "
                                  f"{fnum(b['p99_ms'])} ms)")
        return f

    def footprint(key: str, limit: float, unit: str):
        def f(size: int) -> tuple[bool | None, str]:
            fp = (results.get(size, {}).get("pypid") or {}).get("footprint") or {}
            if fp.get(key) is None:
                return None, "not measured"
            extra = (f" {fp['pss_peak_processes']} (master, workers)"
                     if key == "pss_peak_mb" else "")
            return fp[key] <= limit, f"{fnum(fp[key])} {unit}{extra}"
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

    def uploads(size: int) -> tuple[bool | None, str]:
        figures = (results.get(size, {}).get("pypid") or {}).get("uploads") or {}
        a, b = figures.get("pypid") or {}, figures.get("pypiserver") or {}
        if not a.get("median_s") or not b.get("median_s"):
            return None, "not measured"
        x = b["median_s"] / a["median_s"]
        return x >= T_UPLOADS_X, (f"x{x:.1f} ({a['median_s']:.2f} vs {b['median_s']:.2f} s "
                                  f"for {a['files']} wheels)")

    checks = [
        (f"project html >= {T_NGINX_PAGE}x nginx", rel(SC_HTML, "nginx", T_NGINX_PAGE)),
        (f"project json >= {T_NGINX_PAGE}x nginx (html)",
         rel(SC_JSON, "nginx", T_NGINX_PAGE, SC_HTML)),
        (f"project html >= {T_PYPISERVER_PAGE:g}x pypiserver",
         rel(SC_HTML, "pypiserver", T_PYPISERVER_PAGE)),
        (f"project json >= {T_PYPISERVER_PAGE:g}x pypiserver (html)",
         rel(SC_JSON, "pypiserver", T_PYPISERVER_PAGE, SC_HTML)),
        (f"project html p99 <= {T_P99_X:g}x nginx's at {meta['connections']} conns",
         p99(SC_HTML)),
        (f"project json p99 <= {T_P99_X:g}x nginx's (html)", p99(SC_JSON, SC_HTML)),
        (f"project html p99 <= {T_P99_X:g}x nginx's at 256 conns", p99(SC_HTML_MANY)),
        (f"/simple/ >= {T_PYPISERVER_SIMPLE:g}x pypiserver, gzip when accepted", simple_gzip),
        (f"/simple/ uncompressed >= {T_NGINX_SIMPLE:g}x nginx",
         rel(SC_SIMPLE, "nginx", T_NGINX_SIMPLE)),
        (f"100 KB file >= {T_NGINX_FILE}x nginx", rel(SC_DL, "nginx", T_NGINX_FILE)),
        (f"10 MB file >= {T_NGINX_HUGE}x nginx", rel(SC_DL_HUGE, "nginx", T_NGINX_HUGE)),
        (f"2 workers: peak PSS <= {T_PSS_MB:g} MB", footprint("pss_peak_mb", T_PSS_MB, "MB")),
        (f"2 workers: cold start <= {T_COLD_S:g} s, every core, files in memory",
         footprint("cold_start_s", T_COLD_S, "s to /simple/")),
        ("304 costs no more than a page (CPU/req)", not_modified),
        (f"uploads >= {T_UPLOADS_X:g}x pypiserver (twine)", uploads),
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

