"""Slow clients downloading a big file must not block page requests."""

from __future__ import annotations

import os
import socket
import threading
import time
from pathlib import Path

import pytest

from tests.builders import make_sdist, make_wheel
from tests.integration.harness import start_server, stop
from tests.integration.helpers import get

pytestmark = pytest.mark.server
SLOW_CLIENTS = 24  # more than the 16 threads two workers once had


def test_pages_answer_while_slow_clients_download(tmp_path: Path) -> None:
    root = tmp_path / "packages"
    root.mkdir()
    big = make_wheel(root, "big", "1.0", payload=os.urandom(4 * 1024 * 1024))
    make_sdist(root, "small", "1.0")
    server = start_server(tmp_path / "srv", root)
    stop_at = time.monotonic() + 8  # every loop below is bounded by this
    started = threading.Barrier(SLOW_CLIENTS + 1, timeout=10)
    done = threading.Event()

    def slow_download() -> None:
        with socket.create_connection((server.host, server.port), timeout=10) as sock:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
            sock.sendall(f"GET {server.prefix}/packages/{big.name} HTTP/1.1\r\n"
                         f"Host: x\r\n\r\n".encode())
            sock.recv(1024)  # the download has begun: a server thread is now busy with it
            started.wait()
            while not done.is_set() and time.monotonic() < stop_at and sock.recv(1024):
                time.sleep(0.05)  # about 20 KB/s

    clients = [threading.Thread(target=slow_download, daemon=True) for _ in range(SLOW_CLIENTS)]
    try:
        for client in clients:
            client.start()
        started.wait()
        latencies = []
        for _ in range(20):
            begin = time.monotonic()
            assert get(server.url("/simple/small/")).status == 200
            latencies.append(time.monotonic() - begin)
        assert max(latencies) < 1.0, latencies
    finally:
        done.set()
        for client in clients:
            client.join(timeout=10)
        stop(server.proc)
