"""Real pypid nodes on one bucket, for the S3 tests: their configs and users, starting
them, stopping them (SIGTERM) or killing them (SIGKILL, master and workers), and a
bounded load loop of reads. Every process is stopped by its PID."""

from __future__ import annotations

import base64
import contextlib
import functools
import http.client
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

from tests.integration.harness import REPO_ROOT, STARTED, STOP_TIMEOUT, launch, stop, write_config
from tests.integration.helpers import Server, at_once
from tests.integration.test_uploads import BOUNDARY
from tests.s3store import BUCKET, SECRET_KEY, Store, credentials_env

PASSWORDS = {"alice": "alice-pw", "admin": "admin-pw"}


def cli(cfg: Path, *args: str, stdin: str | None = None) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, **credentials_env(), "PYTHONPATH": str(REPO_ROOT)}
    return subprocess.run([sys.executable, "-m", "pypid", *args, "--config", str(cfg)],
                          input=stdin, capture_output=True, text=True, env=env, timeout=60,
                          check=False)


def auth(user: str) -> dict[str, str]:
    token = base64.b64encode(f"{user}:{PASSWORDS[user]}".encode()).decode()
    return {"Authorization": f"Basic {token}"}


def call(node: Server, method: str, path: str, user: str | None = None,
         body: bytes | None = None, headers: dict[str, str] | None = None,
         conn: http.client.HTTPConnection | None = None) -> tuple[int, str, bytes]:
    conn = conn or http.client.HTTPConnection(node.host, node.port, timeout=60)
    try:
        conn.request(method, path, body=body, headers={**(auth(user) if user else {}),
                                                       **(headers or {})})
        resp = conn.getresponse()
        return resp.status, resp.reason, resp.read()
    finally:
        conn.close()


UPLOAD_HEADERS = {"Content-Type": f"multipart/form-data; boundary={BOUNDARY}"}


def upload_at_once(sends: list[tuple[Server, bytes]]) -> list[tuple[int, str, bytes]]:
    """POST each upload body to its node as alice, all released at one instant by a
    barrier (connections opened first); every answer, in order."""
    conns = [http.client.HTTPConnection(node.host, node.port, timeout=60) for node, _ in sends]
    for conn in conns:
        conn.connect()
    answers = at_once([functools.partial(call, node, "POST", "/", "alice", body,
                                         UPLOAD_HEADERS, conn=conn)
                       for (node, body), conn in zip(sends, conns, strict=True)])
    done = [answer for answer in answers if isinstance(answer, tuple)]
    assert len(done) == len(sends), answers
    return done


@dataclass
class Cluster:
    """Nodes sharing ``store``'s bucket under one prefix; ``nodes[i]`` runs ``configs[i]``."""

    store: Store
    nodes: list[Server]
    configs: list[Path]
    work: Path
    prefix: str
    env: dict[str, str] = field(default_factory=dict)  # added to each node's environment

    @property
    def dist(self) -> Path:
        return self.work / "dist"

    def add_node(self, endpoint: str, *, workers: int = 2) -> int:
        """One more node's config (started by ``start``), its store at ``endpoint``."""
        cfg = self.work / f"node{len(self.configs) + 1}" / "pypid.toml"
        write_node_config(cfg, endpoint, self.prefix, workers=workers,
                          htpasswd=self.work / "htpasswd")
        self.configs.append(cfg)
        return len(self.configs) - 1

    def start(self, i: int, *, health: int | None = 200,
              env: dict[str, str] | None = None) -> Server:
        """(Re)start node ``i`` (its log: a new file each time); ``health``: the /health
        status to wait for (None: any answer); ``env``: added to its environment."""
        cfg = self.configs[i]
        logs = len(list(cfg.parent.glob("server*.log")))
        server = launch(cfg, cfg.parent / "root", log=cfg.parent / f"server-{logs}.log",
                        extra_env={**credentials_env(), **self.env, **(env or {})},
                        health=health)
        STARTED.append(server)
        if i < len(self.nodes):
            self.nodes[i] = server
        else:
            self.nodes.append(server)
        return server

    def kill(self, i: int) -> None:
        """SIGKILL node ``i`` (see ``kill_node``)."""
        kill_node(self.nodes[i].proc)


def write_node_config(cfg: Path, endpoint: str, prefix: str, *, workers: int,
                      htpasswd: Path, overwrite: bool = False) -> None:
    cfg.parent.mkdir(parents=True, exist_ok=True)
    write_config(cfg, cfg.parent / "root", url_prefix="", upstream="off", settings={
        "server": {"workers": workers},
        "storage": {"backend": "s3", "overwrite": overwrite},
        "storage.s3": {"endpoint": endpoint, "bucket": BUCKET, "prefix": prefix,
                       "cache_dir": str(cfg.parent / "copies")},
        "auth": {"htpasswd": str(htpasswd), "admins": ["admin"]},
    })


@contextlib.contextmanager
def running_nodes(store: Store, work: Path, count: int, *, prefix: str, workers: int = 2,
                  env: dict[str, str] | None = None, overwrite: bool = False
                  ) -> Iterator[Cluster]:
    """``count`` nodes (``work/node1`` ...) with the users of PASSWORDS, all stopped at
    the end, whatever happens; their logs must never show the store's secret."""
    configs = [work / f"node{i + 1}" / "pypid.toml" for i in range(count)]
    for cfg in configs:
        write_node_config(cfg, store.endpoint, prefix, workers=workers,
                          htpasswd=work / "htpasswd", overwrite=overwrite)
    for user, password in PASSWORDS.items():
        done = cli(configs[0], "user", "add", user, "--password-stdin", stdin=password + "\n")
        assert done.returncode == 0, done.stderr
    cluster = Cluster(store, [], configs, work, prefix, dict(env or {}))
    try:
        for i in range(count):
            cluster.start(i)
        yield cluster
    finally:
        for node in cluster.nodes:
            stop(node.proc)
    for node in cluster.nodes:
        assert SECRET_KEY not in node.log_text()


def kill_node(proc: subprocess.Popen[bytes]) -> None:
    """SIGKILL a node's gunicorn master (a PID we started) and then the workers it had
    forked, as a power cut would; wait until they are all gone."""
    workers = children_of(proc.pid)
    with contextlib.suppress(ProcessLookupError):
        os.kill(proc.pid, signal.SIGKILL)
    for pid in workers:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
    proc.wait(timeout=STOP_TIMEOUT)
    deadline = time.monotonic() + STOP_TIMEOUT
    while any(_running(pid) for pid in workers):
        assert time.monotonic() < deadline, f"workers {workers} outlived SIGKILL"
        time.sleep(0.05)


def children_of(pid: int) -> list[int]:
    """The PIDs whose parent is ``pid`` (from /proc)."""
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            with contextlib.suppress(OSError, ValueError, IndexError):
                fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
                if int(fields[1]) == pid:
                    found.append(int(entry.name))
    return found


def _running(pid: int) -> bool:
    """Alive and not a zombie (an orphan waits for init to reap it)."""
    try:
        return (Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]) != "Z"
    except (OSError, IndexError):
        return False


class ReadLoad:
    """Threads GETting ``paths`` from ``nodes`` in turn, each bounded in count and time,
    until stopped; every answer other than 200, and every error, is a failure."""

    def __init__(self, nodes: list[Server], paths: list[str], *, threads: int = 4,
                 max_requests: int = 20_000, max_seconds: float = 120.0) -> None:
        self.nodes, self.paths = nodes, paths
        self.max_requests, self.deadline = max_requests, time.monotonic() + max_seconds
        self.done = 0
        self.failures: list[str] = []
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._threads = [threading.Thread(target=self._run, args=(i,), daemon=True)
                         for i in range(threads)]

    def __enter__(self) -> ReadLoad:
        for thread in self._threads:
            thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        for thread in self._threads:
            thread.join(timeout=30)

    def wait_for(self, count: int) -> None:
        """Until ``count`` requests were answered (bounded by the load's own limits)."""
        while self.done < count:
            assert time.monotonic() < self.deadline and any(
                t.is_alive() for t in self._threads), f"the load stopped at {self.done}"
            time.sleep(0.02)

    def _run(self, offset: int) -> None:
        for turn in range(offset, offset + self.max_requests):
            if self._stop.is_set() or time.monotonic() > self.deadline:
                return
            node = self.nodes[turn % len(self.nodes)]
            path = self.paths[(turn // len(self.nodes)) % len(self.paths)]
            try:
                status, reason, _ = call(node, "GET", path)
                problem = None if status == 200 else f"{status} {reason}"
            except (OSError, http.client.HTTPException) as exc:
                problem = f"{type(exc).__name__}: {exc}"
            with self._lock:
                self.done += 1
                if problem is not None:
                    self.failures.append(f"{node.url(path)}: {problem}")
