"""Requests against a running server: probes, first-200 polling, scenarios and wrk runs."""

from __future__ import annotations

import http.client
import json
import random
import re
import statistics
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bench.lib.host import BENCH_DIR, HOST, Pin
from bench.lib.server import Server

LUA = BENCH_DIR / "wrk_paths.lua"
JSON_V1 = "application/vnd.pypi.simple.v1+json"
WRK_LINE = re.compile(r"^WRK_RESULT (\{.*\})$", re.M)


class SlowServer(RuntimeError):
    """A single request took longer than --request-timeout."""


@dataclass
class Probe:
    status: int
    content_type: str
    content_encoding: str
    size: int
    error: str = ""


def get(port: int, path: str, headers: dict[str, str] | None = None,
        timeout: float = 30.0) -> Probe:
    conn = http.client.HTTPConnection(HOST, port, timeout=timeout)
    try:
        conn.request("GET", path, headers=headers or {})
        resp = conn.getresponse()
        body = resp.read()
        return Probe(resp.status, resp.getheader("Content-Type", ""),
                     resp.getheader("Content-Encoding", ""), len(body))
    finally:
        conn.close()


def first_200(server: Server, path: str, total: float, per_request: float | None = None) -> float:
    """Seconds from spawn to the first 200 for path, polling every 10 ms.

    per_request bounds each request: one that hangs longer raises SlowServer. Without
    it a request may take what is left of ``total`` and a hang is retried.
    """
    deadline = time.perf_counter() + total
    last = ""
    while True:
        if server.proc.poll() is not None:
            raise RuntimeError(f"{server.name} exited with {server.proc.returncode}:\n"
                               f"{server.tail()}")
        assert server.port is not None
        try:
            p = get(server.port, path,
                    timeout=per_request or max(1.0, deadline - time.perf_counter()))
            if p.status == 200:
                return time.perf_counter() - server.t_spawn
            last = f"HTTP {p.status}"
        except TimeoutError as exc:
            if per_request:
                raise SlowServer(f"GET {path}: no answer within {per_request:g} s") from exc
            last = f"{type(exc).__name__}: {exc}"
        except OSError as exc:
            last = f"{type(exc).__name__}: {exc}"
        if time.perf_counter() > deadline:
            raise RuntimeError(f"{server.name}: no 200 for {path} after {total:g}s ({last})")
        time.sleep(0.01)


@dataclass
class Scenario:
    name: str
    paths: list[str]  # a path may carry its own headers: "path<TAB>Name: value<TAB>..."
    headers: dict[str, str] = field(default_factory=dict)
    expect: int = 200  # the status every request must get (304 for conditional GETs)
    connections: int | None = None  # wrk's -c for this scenario (None: --connections)


def split_path(line: str, headers: dict[str, str]) -> tuple[str, dict[str, str]]:
    """A paths-file line -> (path, headers merged with the scenario's)."""
    path, *extra = line.split("\t")
    merged = dict(headers)
    for h in extra:
        k, _, v = h.partition(":")
        merged[k.strip()] = v.strip()
    return path, merged

def validate(port: int, sc: Scenario, rng: random.Random, samples: int = 20,
             timeout: float = 30.0) -> dict[str, Any]:
    """A few plain requests: every one must get sc.expect; reports type, encoding and size."""
    paths = sc.paths if len(sc.paths) <= samples else rng.sample(sc.paths, samples)
    probes: list[tuple[str, Probe]] = []
    for line in paths:
        p, headers = split_path(line, sc.headers)
        try:
            probes.append((p, get(port, p, headers, timeout=timeout)))
        except OSError as exc:
            probes.append((p, Probe(0, "", "", 0, f"{type(exc).__name__}: {exc}")))
    bad = [f"{p} -> {pr.error or f'HTTP {pr.status}'}" for p, pr in probes
           if pr.status != sc.expect]
    first = probes[0][1]
    return {
        "ok": not bad,
        "bad": bad[:5],
        "content_type": first.content_type,
        "content_encoding": first.content_encoding,
        "bytes": round(statistics.mean(pr.size for _, pr in probes)),
    }


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


def run_wrk(port: int, sc: Scenario, workdir: Path, *, duration: float, connections: int,
            threads: int, pin: Pin, timeout: float = 10.0) -> dict[str, Any]:
    """One bounded wrk run (-d); returns its WRK_RESULT plus req/s.

    timeout: wrk's --timeout, seconds after which a response counts as an error.
    """
    paths_file = workdir / ("paths-" + re.sub(r"[^a-z0-9]+", "-", sc.name.lower()) + ".txt")
    paths_file.write_text("\n".join(sc.paths) + "\n")
    # wrk takes whole seconds only
    duration, timeout = max(1, round(duration)), max(1, round(timeout))
    cmd = [*pin.prefix(), "wrk", "-t", str(threads), "-c", str(connections),
           "-d", f"{duration}s", "--timeout", f"{timeout}s", "-s", str(LUA)]
    for k, v in sc.headers.items():
        cmd += ["-H", f"{k}: {v}"]
    cmd += [f"http://{HOST}:{port}", "--", str(paths_file)]
    proc = subprocess.run(cmd, capture_output=True, text=True,
                          timeout=duration + timeout + 60, check=False)
    m = WRK_LINE.search(proc.stdout)
    if proc.returncode != 0 or not m:
        raise RuntimeError(f"wrk failed ({proc.returncode}): {proc.stdout[-2000:]}"
                           f"{proc.stderr[-2000:]}")
    res: dict[str, Any] = json.loads(m.group(1))
    res["rps"] = res["requests"] / (res["duration_us"] / 1e6)
    res["errors"] = sum(v for k, v in res.items() if k.startswith("errors_"))
    return res

