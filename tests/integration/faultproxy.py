"""A small HTTP proxy in front of a test upstream that misbehaves on demand: slow, hang,
answer 500, drop the connection mid-file, or serve bytes that do not match their hash.

Loopback only; every wait is bounded. ``mode`` applies to file requests
(``/packages/...``); ``page_mode`` to everything else.
"""

from __future__ import annotations

import http.client
import socket
import time
from collections import Counter

from tests.integration.loopserver import LoopbackServer, read_head

HANG_LIMIT = 30.0  # seconds a hung answer waits before the proxy gives up itself
PASS, SLOW, HANG, FAIL, DROP, CORRUPT = "pass", "slow", "hang", "500", "drop", "corrupt"


class FaultProxy(LoopbackServer):
    def __init__(self, upstream_host: str, upstream_port: int) -> None:
        self.target = (upstream_host, upstream_port)
        self.mode = PASS
        self.page_mode = PASS
        self.html_only = False  # ask upstream for PEP 503 HTML, as if it had no JSON
        self.requests: Counter[str] = Counter()
        self.finished: Counter[str] = Counter()  # answers sent to their end, by path
        super().__init__()

    def url(self, path: str = "/simple/") -> str:
        return f"http://127.0.0.1:{self.port}{path}"

    def handle(self, conn: socket.socket) -> None:
        conn.settimeout(HANG_LIMIT)
        try:
            with conn:
                head = read_head(conn)
                if head is None:
                    return
                lines = head[0]
                _method, path, _ = lines[0].split(" ", 2)
                headers = dict(line.split(": ", 1) for line in lines[1:] if ": " in line)
                self.requests[path] += 1
                mode = self.mode if path.startswith("/packages/") else self.page_mode
                self._answer(conn, path, headers, mode)
        except OSError:
            pass

    def _answer(self, conn: socket.socket, path: str, headers: dict[str, str],
                mode: str) -> None:
        if mode == HANG:
            deadline = time.monotonic() + HANG_LIMIT
            while not self._stop.is_set() and time.monotonic() < deadline:
                time.sleep(0.05)
            return
        if mode == FAIL:
            conn.sendall(b"HTTP/1.1 500 Internal Server Error\r\nContent-Length: 5\r\n"
                         b"Connection: close\r\n\r\nboom\n")
            return
        keep = {k: v for k, v in headers.items()
                if k.lower() in ("accept", "if-none-match", "if-modified-since", "range")}
        if self.html_only:
            keep = {"Accept": "text/html"}
        upstream = http.client.HTTPConnection(*self.target, timeout=10)
        try:
            upstream.request("GET", path, headers=keep)
            response = upstream.getresponse()
            out = [f"HTTP/1.1 {response.status} {response.reason}"]
            out += [f"{k}: {v}" for k, v in response.getheaders()
                    if k.lower() not in ("connection", "keep-alive", "transfer-encoding")]
            out.append("Connection: close")
            body = response.read()
        finally:
            upstream.close()
        conn.sendall(("\r\n".join(out) + "\r\n\r\n").encode("latin-1"))
        if mode == DROP:
            conn.sendall(body[: len(body) // 2])
            conn.shutdown(socket.SHUT_RDWR)
            return
        if mode == CORRUPT and body:
            body = bytes([body[0] ^ 0xFF]) + body[1:]
        if mode == SLOW:
            for start in range(0, len(body), 64 * 1024):
                conn.sendall(body[start:start + 64 * 1024])
                time.sleep(0.02)
            self.finished[path] += 1
            return
        conn.sendall(body)
        self.finished[path] += 1
