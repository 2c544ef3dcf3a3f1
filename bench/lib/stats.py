"""Medians over runs and the number formats of the bench's tables."""

from __future__ import annotations

import statistics
from typing import Any


def med(values: list[float | None]) -> float | None:
    """The median of the values that are there, or None."""
    vals = [v for v in values if v is not None]
    return statistics.median(vals) if vals else None


def summarize_runs(runs: list[dict[str, Any]]) -> dict[str, Any]:
    """Medians (req/s, latency, CPU per request) and sums (errors) over wrk runs."""
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


def fratio(v: float | None) -> str:
    if v is None:
        return "-"
    return f"{v:,.0f}x" if v >= 10 else f"{v:.1f}x" if v >= 1 else f"{v:.2f}x"


def fmt_s(s: float | None) -> str:
    return "-" if s is None else f"{s * 1000:.0f} ms" if s < 10 else f"{s:.1f} s"


def fmt_mb(kb: float | None) -> str:
    return "-" if kb is None else f"{kb / 1024:.1f} MB"

