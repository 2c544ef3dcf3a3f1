"""pypid benchmark: start-up time, memory and throughput on a synthetic corpus.

    python bench/run.py [--projects 10000] [--rounds 3] [--duration 10]
                        [--connections 32] [--workers N] [--keep]

Per round: a cold start (cache removed), a warm start (cache kept), RSS/PSS of
the process tree, then one wrk run per scenario against the warm server. Every
figure printed is the median over the rounds; raw rounds go to
bench/out/results-<timestamp>.json. The server is pinned to CPU 0 and wrk to
CPU 1 when there are two or more CPUs. See bench/README.md.
"""

from __future__ import annotations

import argparse
import collections
import contextlib
import http.client
import json
import os
import platform
import random
import re
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import threading
import time
from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
from corpus import OUT_DIR, Corpus, build_corpus, write_static_index  # noqa: E402

BENCH_DIR = Path(__file__).resolve().parent
REPO = BENCH_DIR.parent
LUA = BENCH_DIR / "wrk_paths.lua"
HOST = "127.0.0.1"
JSON_V1 = "application/vnd.pypi.simple.v1+json"
START_TIMEOUT = 300.0  # seconds to wait for a server to listen / answer 200
STOP_TIMEOUT = 10.0


# --------------------------------------------------------------------------- processes


def _ppid_map() -> dict[int, int]:
    """pid -> ppid for every process we can see."""
    out: dict[int, int] = {}
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        try:
            stat = Path(entry.path, "stat").read_text()
        except OSError:
            continue
        # "pid (comm) state ppid ...": comm may hold spaces and parens
        out[int(entry.name)] = int(stat.rsplit(")", 1)[1].split()[1])
    return out


def process_tree(pid: int) -> list[int]:
    """pid and all its descendants, parent first."""
    children: dict[int, list[int]] = collections.defaultdict(list)
    for child, parent in _ppid_map().items():
        children[parent].append(child)
    tree, todo = [], [pid]
    while todo:
        p = todo.pop(0)
        tree.append(p)
        todo.extend(sorted(children.get(p, [])))
    return tree


def _kb_field(path: str, key: str) -> int | None:
    try:
        with open(path) as fh:
            for line in fh:
                if line.startswith(key + ":"):
                    return int(line.split()[1])
    except (OSError, ValueError):
        return None
    return None


def memory_of(pid: int) -> dict[str, Any]:
    """VmRSS and Pss (kB) of pid's tree: master first, then workers."""
    procs = []
    for p in process_tree(pid):
        procs.append({
            "pid": p,
            "rss_kb": _kb_field(f"/proc/{p}/status", "VmRSS"),
            "pss_kb": _kb_field(f"/proc/{p}/smaps_rollup", "Pss"),
        })
    rss = [p["rss_kb"] for p in procs if p["rss_kb"] is not None]
    pss = [p["pss_kb"] for p in procs if p["pss_kb"] is not None]
    return {
        "master": procs[0] if procs else None,
        "workers": procs[1:],
        "total_rss_kb": sum(rss),
        "total_pss_kb": sum(pss) if len(pss) == len(procs) else None,
    }


def _cmdline(pid: int) -> bytes | None:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return None


NICE = [0]  # --nice: niceness of the servers and wrk (negative: ahead of other work; root)


def set_nice(n: int) -> None:
    NICE[0] = n


def cpu_prefix(cpu: int | None) -> list[str]:
    nice = ["nice", "-n", str(NICE[0])] if NICE[0] else []
    return [*nice, "taskset", "-c", str(cpu)] if cpu is not None else nice


# --------------------------------------------------------------------------- targets


class Server:
    """A server process we spawned: drains its output, finds its port, stops it by PID."""

    def __init__(self, name: str, cmd: list[str], *, env: dict[str, str], cwd: Path,
                 port_regex: re.Pattern[str] | None, port: int | None) -> None:
        self.name = name
        self.cmd = cmd
        self.port = port
        self.lines: collections.deque[str] = collections.deque(maxlen=300)
        self._port_regex = port_regex
        self._listening = threading.Event()
        self.t_spawn = time.perf_counter()
        self.proc = subprocess.Popen(cmd, env=env, cwd=cwd, stdin=subprocess.DEVNULL,
                                     stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
        self.pid = self.proc.pid
        self.t_listen: float | None = None
        self._seen: dict[int, bytes | None] = {}  # tree pids seen, for cleanup
        self._reader = threading.Thread(target=self._drain, daemon=True)
        self._reader.start()
        if port_regex is None:
            self._listening.set()

    def _drain(self) -> None:
        assert self.proc.stdout is not None
        for raw in self.proc.stdout:
            line = raw.decode("utf-8", "replace").rstrip("\n")
            self.lines.append(line)
            if not self._listening.is_set() and self._port_regex is not None:
                m = self._port_regex.search(line)
                if m:
                    self.port = int(m.group(2))
                    self.t_listen = time.perf_counter() - self.t_spawn
                    self._listening.set()

    def tail(self, n: int = 30) -> str:
        return "\n".join(list(self.lines)[-n:])

    def wait_listening(self, timeout: float) -> None:
        deadline = time.perf_counter() + timeout
        while not self._listening.wait(0.05):
            if self.proc.poll() is not None:
                raise RuntimeError(f"{self.name} exited with {self.proc.returncode} before "
                                   f"listening:\n{self.tail()}")
            if time.perf_counter() > deadline:
                raise RuntimeError(f"{self.name} not listening after {timeout}s:\n{self.tail()}")

    def remember_tree(self) -> list[int]:
        tree = process_tree(self.pid)
        for p in tree:
            self._seen.setdefault(p, _cmdline(p))
        return tree

    def stop(self) -> None:
        """SIGTERM the master; SIGKILL it after a deadline; then any worker left behind."""
        with contextlib.suppress(ProcessLookupError):
            if self.proc.poll() is None:
                self.remember_tree()
                self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(STOP_TIMEOUT)
        except subprocess.TimeoutExpired:
            self.lines.append(f"[bench] {self.name} ignored SIGTERM for {STOP_TIMEOUT}s: SIGKILL")
            self.proc.kill()
            self.proc.wait(STOP_TIMEOUT)
        deadline = time.perf_counter() + STOP_TIMEOUT
        for p, cmd in self._seen.items():
            # orphaned workers normally exit by themselves; kill stragglers (same cmdline only)
            while p != self.pid and _cmdline(p) == cmd and cmd is not None:
                if time.perf_counter() > deadline:
                    with contextlib.suppress(ProcessLookupError):
                        os.kill(p, signal.SIGKILL)
                    break
                time.sleep(0.05)
        self._reader.join(2)


class Target(ABC):
    """One server implementation under test: pypid, pypiserver, nginx, http.server."""

    name: str
    label: str = ""  # column heading in the side-by-side table (default: name)

    @abstractmethod
    def start(self, corpus: Corpus, workdir: Path, cpu: int | None) -> Server: ...

    def reset_cache(self, corpus: Corpus) -> bool:
        """Make the next start cold; False when the target keeps no cache."""
        return False

    def has_cache(self, corpus: Corpus) -> bool:
        return False


class PypidTarget(Target):
    name = "pypid"
    listen = re.compile(r"Listening at: http://([^\s:]+):(\d+)")

    def __init__(self, python: str, workers: int | None, src: Path = REPO) -> None:
        self.python = python
        self.workers = workers
        self.src = src  # the directory holding the pypid package
        if workers:
            self.label = f"pypid ({workers} worker{'s' if workers > 1 else ''})"

    def cache_dir(self, corpus: Corpus) -> Path:
        return corpus.root / ".pypid"

    def reset_cache(self, corpus: Corpus) -> bool:
        shutil.rmtree(self.cache_dir(corpus), ignore_errors=True)
        return True

    def has_cache(self, corpus: Corpus) -> bool:
        return self.cache_dir(corpus).exists()

    def start(self, corpus: Corpus, workdir: Path, cpu: int | None) -> Server:
        conf = workdir / "pypid.toml"
        server = f"[server]\nworkers = {self.workers}\n" if self.workers else ""
        conf.write_text(
            f"{server}[storage]\nroot = {json.dumps(str(corpus.root))}\n"
            '[upstream]\nmode = "off"\n[log]\nlevel = "info"\naccess_log = false\n'
        )
        cmd = [*cpu_prefix(cpu), self.python, "-m", "pypid", "serve", "--config", str(conf),
               "--host", HOST, "--port", "0", "--root", str(corpus.root)]
        env = {**os.environ, "PYTHONPATH": str(self.src), "PYTHONUNBUFFERED": "1"}
        env.pop("NOTIFY_SOCKET", None)
        return Server(self.name, cmd, env=env, cwd=workdir, port_regex=self.listen, port=None)


class HttpServerTarget(Target):
    """python -m http.server on a static PEP 503 tree: validates the harness, not a contender."""

    name = "http.server"
    listen = re.compile(r"Serving HTTP on (\S+) port (\d+)")

    def __init__(self, python: str) -> None:
        self.python = python

    def start(self, corpus: Corpus, workdir: Path, cpu: int | None) -> Server:
        static = write_static_index(corpus)
        cmd = [*cpu_prefix(cpu), self.python, "-m", "http.server", "--bind", HOST,
               "--directory", str(static), "0"]
        env = {**os.environ, "PYTHONUNBUFFERED": "1"}
        return Server(self.name, cmd, env=env, cwd=workdir, port_regex=self.listen, port=None)


def free_port() -> int:
    """A port the kernel has just handed out, for servers that cannot report theirs."""
    with socket.socket() as sock:
        sock.bind((HOST, 0))
        return int(sock.getsockname()[1])


PYPISERVER_VERSION = "2.4.2"
GUNICORN_WORKERS = {
    # pypiserver runs gunicorn in-process (bottle's GunicornServer); its settings come from
    # GUNICORN_CMD_ARGS. Both were tried at 10k files; gthread was no slower and its p99 far
    # lower (see bench/README.md).
    "gthread": "--workers 1 --threads 8 -k gthread",
    "gevent": "--workers 1 --worker-connections 1000 -k gevent",
}


class PypiserverTarget(Target):
    """pypiserver from PyPI in its own venv (bench/out/venv-pypiserver): gunicorn, cached-dir.

    ``pypi-server run -p 0 -i 127.0.0.1 --server gunicorn --backend cached-dir
    --disable-fallback -a . -P . ROOT`` with GUNICORN_CMD_ARGS for one worker.
    """

    name = "pypiserver"
    listen = re.compile(r"Listening at: http://([^\s:]+):(\d+)")

    def __init__(self, venv: Path, worker: str = "gthread", python: str = sys.executable) -> None:
        self.venv = venv
        self.worker = worker
        self.python = python
        self.versions: dict[str, str] = {}

    def ensure_installed(self, log: Any = print) -> dict[str, str]:
        """Create the venv and pip install pypiserver (once); return the installed versions."""
        pip = self.venv / "bin" / "pip"
        want = [f"pypiserver[cache]=={PYPISERVER_VERSION}", "gunicorn", "passlib"]
        if self.worker == "gevent":
            want.append("gevent")
        marker = self.venv / (".bench-installed-" + "-".join(sorted(
            re.sub(r"[^a-z0-9.=]+", "_", w.lower()) for w in want)))
        if not marker.exists():
            log(f"installing {' '.join(want)} into {self.venv}")
            if not pip.exists():
                subprocess.run([self.python, "-m", "venv", str(self.venv)], check=True,
                               timeout=300)
            subprocess.run([str(pip), "install", "-q", "--disable-pip-version-check", *want],
                           check=True, timeout=900)
            marker.write_text("")
        out = subprocess.run([str(pip), "list", "--format=json", "--disable-pip-version-check"],
                             capture_output=True, text=True, check=True, timeout=120).stdout
        names = {"pypiserver", "gunicorn", "watchdog", "gevent", "passlib"}
        self.versions = {d["name"].lower(): d["version"] for d in json.loads(out)
                         if d["name"].lower() in names}
        return self.versions

    def gunicorn_args(self) -> str:
        args = GUNICORN_WORKERS[self.worker]
        # gunicorn >= 25 opens a control socket under ~/.gunicorn unless told not to
        help_text = subprocess.run([str(self.venv / "bin" / "gunicorn"), "--help"],
                                   capture_output=True, text=True, timeout=60,
                                   check=False).stdout
        if "--no-control-socket" in help_text:
            args += " --no-control-socket"
        return args

    def start(self, corpus: Corpus, workdir: Path, cpu: int | None) -> Server:
        cmd = [*cpu_prefix(cpu), str(self.venv / "bin" / "pypi-server"), "run",
               "-p", "0", "-i", HOST, "--server", "gunicorn", "--backend", "cached-dir",
               "--disable-fallback", "-a", ".", "-P", ".", str(corpus.root)]
        env = {**os.environ, "PYTHONUNBUFFERED": "1", "GUNICORN_CMD_ARGS": self.gunicorn_args()}
        for var in ("PYTHONPATH", "NOTIFY_SOCKET", "VIRTUAL_ENV"):
            env.pop(var, None)
        return Server(self.name, cmd, env=env, cwd=workdir, port_regex=self.listen, port=None)


NGINX_CONF = """\
daemon off;
master_process on;
worker_processes 1;
user root root;
pid {prefix}/nginx.pid;
error_log stderr warn;
events {{ worker_connections 4096; }}
http {{
    {types}
    default_type application/octet-stream;
    access_log off;
    sendfile on;
    tcp_nopush on;
    keepalive_timeout 65;
    keepalive_requests 1000000;
    gzip on;
    gzip_types application/vnd.pypi.simple.v1+json application/json;
    client_body_temp_path {prefix}/tmp/body;
    proxy_temp_path {prefix}/tmp/proxy;
    fastcgi_temp_path {prefix}/tmp/fastcgi;
    uwsgi_temp_path {prefix}/tmp/uwsgi;
    scgi_temp_path {prefix}/tmp/scgi;
    server {{
        listen {host}:{port};
        root {static};
        index index.html;
    }}
}}
"""


class NginxTarget(Target):
    """Debian's nginx serving ``corpus.write_static_index()``: one worker, sendfile, gzip on.

    The master (root) and its one worker run under taskset, so both sit on the server CPU.
    """

    name = "nginx"

    def __init__(self, binary: str = "nginx") -> None:
        self.binary = binary
        self.version = ""

    def ensure_installed(self, log: Any = print) -> str:
        found = shutil.which(self.binary) or (
            "/usr/sbin/nginx" if Path("/usr/sbin/nginx").exists() else None)
        if not found:
            log("nginx not found: installing nginx-light with apt-get")
            env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
            subprocess.run(["apt-get", "-o", "DPkg::Lock::Timeout=300", "install", "-y", "-q",
                            "nginx-light"], env=env, check=True, timeout=900)
            found = shutil.which(self.binary) or "/usr/sbin/nginx"
        self.binary = found
        proc = subprocess.run([found, "-v"], capture_output=True, text=True, timeout=30,
                              check=False)
        self.version = (proc.stderr or proc.stdout).strip().rsplit("/", 1)[-1]
        return self.version

    def start(self, corpus: Corpus, workdir: Path, cpu: int | None) -> Server:
        static = write_static_index(corpus)
        prefix = workdir / "nginx"
        (prefix / "tmp").mkdir(parents=True, exist_ok=True)
        port = free_port()
        mime = Path("/etc/nginx/mime.types")
        types = (f"include {mime};" if mime.exists() else
                 "types { text/html html; application/octet-stream whl gz; }")
        conf = prefix / "nginx.conf"
        conf.write_text(NGINX_CONF.format(prefix=prefix, types=types, host=HOST, port=port,
                                          static=static.resolve()))
        cmd = [*cpu_prefix(cpu), self.binary, "-p", str(prefix), "-e", "stderr",
               "-c", str(conf)]
        return Server(self.name, cmd, env=dict(os.environ), cwd=workdir, port_regex=None,
                      port=port)


# --------------------------------------------------------------------------- HTTP probes


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


def wait_200(server: Server, path: str, timeout: float) -> tuple[float, str]:
    """Seconds from spawn to the first 200 for path; polls every 10 ms."""
    deadline = time.perf_counter() + timeout
    last = ""
    while time.perf_counter() < deadline:
        if server.proc.poll() is not None:
            raise RuntimeError(f"{server.name} exited with {server.proc.returncode}:\n"
                               f"{server.tail()}")
        try:
            assert server.port is not None
            p = get(server.port, path, timeout=max(1.0, deadline - time.perf_counter()))
            if p.status == 200:
                return time.perf_counter() - server.t_spawn, last
            last = f"HTTP {p.status}"
        except OSError as exc:
            last = f"{type(exc).__name__}: {exc}"
        time.sleep(0.01)
    raise RuntimeError(f"{server.name}: no 200 for {path} after {timeout}s (last: {last})")


# --------------------------------------------------------------------------- scenarios


@dataclass
class Scenario:
    name: str
    paths: list[str]  # a path may carry its own headers: "path<TAB>Name: value<TAB>..."
    headers: dict[str, str] = field(default_factory=dict)
    expect: int = 200  # the status every request must get (304 for conditional GETs)


def split_path(line: str, headers: dict[str, str]) -> tuple[str, dict[str, str]]:
    """A paths-file line -> (path, headers merged with the scenario's)."""
    path, *extra = line.split("\t")
    merged = dict(headers)
    for h in extra:
        k, _, v = h.partition(":")
        merged[k.strip()] = v.strip()
    return path, merged


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


WRK_LINE = re.compile(r"^WRK_RESULT (\{.*\})$", re.M)


def run_wrk(port: int, sc: Scenario, workdir: Path, *, duration: float, connections: int,
            threads: int, cpu: int | None, timeout: float = 10.0) -> dict[str, Any]:
    """One bounded wrk run (-d); returns its WRK_RESULT plus req/s.

    timeout: wrk's --timeout, seconds after which a response counts as an error.
    """
    paths_file = workdir / ("paths-" + re.sub(r"[^a-z0-9]+", "-", sc.name.lower()) + ".txt")
    paths_file.write_text("\n".join(sc.paths) + "\n")
    # wrk takes whole seconds only
    duration, timeout = max(1, round(duration)), max(1, round(timeout))
    cmd = [*cpu_prefix(cpu), "wrk", "-t", str(threads), "-c", str(connections),
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


# --------------------------------------------------------------------------- one round


def settled_memory(server: Server, settle: float = 1.0) -> dict[str, Any]:
    """Memory once the workers have booted: the first 200 can come before the last fork."""
    time.sleep(settle)
    server.remember_tree()
    return memory_of(server.pid)


def timed_start(target: Target, corpus: Corpus, workdir: Path, cpu: int | None,
                project_path: str) -> tuple[Server, dict[str, Any]]:
    """Start target; seconds from spawn to listening, first 200 of /simple/, of a project."""
    server = target.start(corpus, workdir, cpu)
    try:
        server.wait_listening(START_TIMEOUT)
        t_simple, _ = wait_200(server, "/simple/", START_TIMEOUT)
        t_project, _ = wait_200(server, project_path, START_TIMEOUT)
        server.remember_tree()
    except BaseException:
        server.stop()
        raise
    return server, {"listen_s": server.t_listen, "simple_s": t_simple, "project_s": t_project}


def one_round(target: Target, corpus: Corpus, args: argparse.Namespace, workdir: Path, *,
              server_cpu: int | None, client_cpu: int | None, r: int,
              log: Any) -> dict[str, Any]:
    rng = random.Random(r)  # noqa: S311 (sampling, not crypto)
    project_path = f"/simple/{rng.choice(corpus.projects)}/"
    out: dict[str, Any] = {"round": r}

    if target.reset_cache(corpus):
        server, out["cold"] = timed_start(target, corpus, workdir, server_cpu, project_path)
        try:
            out["mem_cold"] = settled_memory(server)
        finally:
            server.stop()
        out["cache_created"] = target.has_cache(corpus)
        log(f"  cold start: {fmt_s(out['cold']['project_s'])} to a project page")

    server, out["warm"] = timed_start(target, corpus, workdir, server_cpu, project_path)
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
                            connections=args.connections, threads=args.threads, cpu=client_cpu)
                entry["wrk"] = run_wrk(server.port, sc, workdir, duration=args.duration,
                                       connections=args.connections, threads=args.threads,
                                       cpu=client_cpu)
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


# --------------------------------------------------------------------------- report


def fmt_s(s: float | None) -> str:
    return "-" if s is None else f"{s * 1000:.0f} ms" if s < 10 else f"{s:.1f} s"


def fmt_mb(kb: float | None) -> str:
    return "-" if kb is None else f"{kb / 1024:.1f} MB"


def med(values: list[float | None]) -> float | None:
    vals = [v for v in values if v is not None]
    return statistics.median(vals) if vals else None


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


# --------------------------------------------------------------------------- main


def pick_cpus(pin: bool) -> tuple[int | None, int | None]:
    cpus = sorted(os.sched_getaffinity(0))
    if not pin or len(cpus) < 2 or shutil.which("taskset") is None:
        return None, None
    return cpus[0], cpus[1]


def ensure_wrk() -> str:
    found = shutil.which("wrk")
    if found:
        return found
    print("wrk not found: installing it with apt-get", file=sys.stderr)
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    subprocess.run(["apt-get", "-o", "DPkg::Lock::Timeout=300", "install", "-y", "-q", "wrk"],
                   env=env, check=True, timeout=600)
    found = shutil.which("wrk")
    if not found:
        raise SystemExit("wrk is still missing: apt-get install wrk")
    return found


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--projects", type=int, default=10_000, help="corpus size (projects)")
    ap.add_argument("--rounds", type=int, default=None,
                    help="each figure is the median of these (default 3; 1 with --quick)")
    ap.add_argument("--duration", type=float, default=None,
                    help="seconds per wrk run (default 10; 5 with --quick)")
    ap.add_argument("--warmup", type=float, default=None,
                    help="seconds of unmeasured wrk before each run (0: none; default 2; "
                         "with --compare before a scenario's first run only)")
    ap.add_argument("--connections", type=int, default=32)
    ap.add_argument("--threads", type=int, default=None,
                    help="wrk threads (default: 1 when pinned, else 2)")
    ap.add_argument("--workers", type=int, default=None,
                    help="pypid's gunicorn workers (default: pypid's own, 2; 1 with --compare)")
    ap.add_argument("--target", choices=("pypid", "http.server"), default="pypid",
                    help="http.server: a static tree, to check the harness itself")
    ap.add_argument("--python", default=sys.executable, help="interpreter that runs the server")
    ap.add_argument("--src", type=Path, default=REPO,
                    help="directory holding the pypid package (default: this checkout)")
    ap.add_argument("--no-pin", dest="pin", action="store_false", help="no taskset pinning")
    ap.add_argument("--nice", type=int, default=None,
                    help="run servers and wrk under nice -n N. Default 0; with --compare -10 "
                         "when root: on a machine busy with other work a single-threaded "
                         "server (nginx, wrk) would otherwise get a smaller share of its CPU "
                         "than a many-threaded one")
    ap.add_argument("--keep", action="store_true",
                    help="keep the run's work dir (config, path lists) under bench/out/")
    cmp = ap.add_argument_group("side by side (--compare, see bench/compare.py)")
    cmp.add_argument("--compare", action="store_true",
                     help="pypid, pypiserver and nginx one after the other on the same "
                          "corpora; one table with the ratios")
    cmp.add_argument("--quick", action="store_true",
                     help="with --compare: 1 round, 5 s runs, sizes 1000,10000")
    cmp.add_argument("--sizes", default=None,
                     help="corpus sizes in FILES, comma-separated (default 1000,10000,100000)")
    cmp.add_argument("--targets", default="pypid,pypiserver,nginx",
                     help="which of pypid,pypiserver,nginx to run (default: all three)")
    cmp.add_argument("--pypiserver-worker", choices=("gthread", "gevent"), default="gthread",
                     help="pypiserver's gunicorn worker class (GUNICORN_CMD_ARGS)")
    cmp.add_argument("--request-timeout", type=float, default=30.0,
                     help="bound on any single probe request; a server slower than this at a "
                          "size is reported as 'timeout' there (default 30 s)")
    cmp.add_argument("--max-spread", type=float, default=0.25,
                     help="rerun a scenario (2 more runs) when (max-min)/median of its req/s "
                          "exceeds this (default 0.25)")
    return ap.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    # SIGTERM (timeout, kill) unwinds like Ctrl-C, so the finally blocks stop our servers
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    if args.compare or args.quick:
        import compare  # noqa: PLC0415 (bench/ is on sys.path)
        return compare.main(args)
    args.rounds = 3 if args.rounds is None else args.rounds
    args.duration = 10 if args.duration is None else args.duration
    args.warmup = 2 if args.warmup is None else args.warmup
    set_nice(args.nice or 0)
    server_cpu, client_cpu = pick_cpus(args.pin)
    if args.threads is None:
        args.threads = 1 if client_cpu is not None else 2
    ensure_wrk()

    def log(msg: str) -> None:
        print(msg, file=sys.stderr, flush=True)

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
                rounds.append(one_round(target, corpus, args, workdir, server_cpu=server_cpu,
                                        client_cpu=client_cpu, r=r, log=log))
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
        "workers": args.workers, "server_cpu": server_cpu, "client_cpu": client_cpu,
        "corpus": {"projects": len(corpus.projects), "files": len(corpus.files),
                   "mb": corpus.total_bytes / 1e6, "build_seconds": corpus.build_seconds,
                   "root": str(corpus.root)},
        "host": {"python": platform.python_version(), "kernel": platform.release(),
                 "cpus": os.cpu_count(),
                 # other work on the machine skews every figure: the 1-min load average
                 "loadavg_before": load_before, "loadavg_after": os.getloadavg()[0]},
        "git": _git_rev(),
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


def _git_rev() -> str | None:
    with contextlib.suppress(OSError, subprocess.SubprocessError):
        return subprocess.run(["git", "-C", str(REPO), "rev-parse", "--short", "HEAD"],
                              capture_output=True, text=True, timeout=10,
                              check=True).stdout.strip()
    return None


if __name__ == "__main__":
    sys.exit(main())
