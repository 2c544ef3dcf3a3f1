"""What bench/s3.py runs: a SeaweedFS store (the tests' ``tests/s3store.py``), files put
into its bucket in parallel, and pypid nodes on it or on a local root, started from
this checkout and stopped by PID."""

from __future__ import annotations

import http.client
import json
import os
import subprocess
import sys
import time
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from bench.lib.host import HOST, REPO
from bench.lib.server import Server
from bench.ui import LISTENING
from tests.s3store import BUCKET, Store, credentials_env

PUT_THREADS = 32
ADMIN = ("admin", "admin-pw")


def put_files(store: Store, prefix: str, paths: Iterable[Path],
              progress: Callable[[int], None] | None = None) -> int:
    """Put each file as ``<prefix>/<name>`` (many at once); the count put."""
    client = store.client()
    done = 0

    def put(path: Path) -> None:
        client.upload_file(str(path), BUCKET, f"{prefix}/{path.name}")

    try:
        with ThreadPoolExecutor(PUT_THREADS) as pool:
            for _ in pool.map(put, paths):
                done += 1
                if progress is not None and done % 5000 == 0:
                    progress(done)
    finally:
        client.close()
    return done


def node_config(work: Path, *, store: Store | None, prefix: str = "", workers: int = 1,
                root: Path | None = None) -> Path:
    """A node's config in ``work``: a local root (``root``) or the store's bucket."""
    work.mkdir(parents=True, exist_ok=True)
    lines = [f"[server]\nworkers = {workers}\n", "[log]\naccess_log = false\n",
             '[upstream]\nmode = "off"\n',
             f'[auth]\nhtpasswd = "{work.parent / "htpasswd"}"\nadmins = ["admin"]\n',
             f'[storage]\nroot = "{root or work / "root"}"\n']
    if store is not None:
        lines[-1] += 'backend = "s3"\n'
        lines.append(f'[storage.s3]\nendpoint = "{store.endpoint}"\nbucket = "{BUCKET}"\n'
                     f'prefix = "{prefix}"\ncache_dir = "{work / "copies"}"\n')
    cfg = work / "pypid.toml"
    cfg.write_text("".join(lines), encoding="utf-8")
    return cfg


def node_env() -> dict[str, str]:
    return {"PATH": "/usr/bin:/bin", "PYTHONPATH": str(REPO), "PYPID_BCRYPT_ROUNDS": "4",
            **credentials_env()}


def add_admin(cfg: Path) -> None:
    """The admin login the change phase yanks with (a cheap bcrypt)."""
    subprocess.run([sys.executable, "-m", "pypid", "user", "add", ADMIN[0], "--password-stdin",
                    "--config", str(cfg)], input=ADMIN[1] + "\n", text=True, check=True,
                   env=node_env(), capture_output=True, timeout=60)


def start_node(cfg: Path, pin: list[str], timeout: float = 300.0) -> Server:
    """``pypid serve`` on an ephemeral loopback port; returns once it listens."""
    cmd = [*pin, sys.executable, "-m", "pypid", "serve", "--config", str(cfg), "--host", HOST,
           "--port", "0"]
    server = Server("pypid", cmd, env=node_env(), cwd=cfg.parent, port_regex=LISTENING,
                    port=None)
    try:
        server.wait_listening(timeout)
    except BaseException:
        server.stop()
        raise
    return server


def first_ok(server: Server, path: str, timeout: float) -> float:
    """Seconds from the server's spawn to its first 200 for ``path`` (polled every 10 ms)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if server.proc.poll() is not None:
            raise RuntimeError(f"the node exited:\n{server.tail()}")
        if server.port is not None:
            try:
                status, _ = fetch(server.port, path)
                if status == 200:
                    return time.perf_counter() - server.t_spawn
            except OSError:
                pass
        time.sleep(0.01)
    raise RuntimeError(f"no 200 for {path} within {timeout}s:\n{server.tail()}")


def fetch(port: int, path: str, conn: http.client.HTTPConnection | None = None,
          **headers: str) -> tuple[int, bytes]:
    """One GET; ``conn`` is reused (keep-alive) when given."""
    own = conn is None
    conn = conn or http.client.HTTPConnection(HOST, port, timeout=30)
    try:
        conn.request("GET", path, headers=headers)
        resp = conn.getresponse()
        return resp.status, resp.read()
    finally:
        if own:
            conn.close()


def project_files(port: int, project: str,
                  conn: http.client.HTTPConnection | None = None) -> dict[str, Any]:
    status, body = fetch(port, f"/simple/{project}/", conn,
                         Accept="application/vnd.pypi.simple.v1+json")
    if status != 200:
        return {}
    return {f["filename"]: f for f in json.loads(body)["files"]}


def stream_seconds(read: Callable[[int], bytes], chunk: int = 1024 * 1024) -> tuple[int, float]:
    """(bytes, seconds) to read a body to its end in chunks."""
    started, size = time.perf_counter(), 0
    while data := read(chunk):
        size += len(data)
    return size, time.perf_counter() - started


def cpu_count() -> int:
    return len(os.sched_getaffinity(0))
