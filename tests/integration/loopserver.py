"""A TCP server on a loopback port that hands each connection to ``handle`` in a thread of
its own: the base of the tests' proxies and fronts. ``close`` stops accepting."""

from __future__ import annotations

import socket
import threading


class LoopbackServer:
    def __init__(self) -> None:
        self._sock = socket.create_server(("127.0.0.1", 0))
        self.port: int = self._sock.getsockname()[1]
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._serve, daemon=True)
        self._thread.start()

    def close(self) -> None:
        if self._stop.is_set():
            return
        self._stop.set()
        self._sock.close()
        self._thread.join(timeout=5)

    def handle(self, conn: socket.socket) -> None:
        raise NotImplementedError

    def _serve(self) -> None:
        self._sock.settimeout(0.2)
        while not self._stop.is_set():
            try:
                conn, _ = self._sock.accept()
            except (TimeoutError, OSError):
                continue
            threading.Thread(target=self.handle, args=(conn,), daemon=True).start()


def read_head(conn: socket.socket) -> tuple[list[str], bytes] | None:
    """An HTTP request head's lines (the request line first) and the bytes read past it;
    None when the client closed first."""
    head = b""
    while b"\r\n\r\n" not in head and len(head) < 65536:
        data = conn.recv(4096)
        if not data:
            return None
        head += data
    raw, _, rest = head.partition(b"\r\n\r\n")
    return raw.decode("latin-1").split("\r\n"), rest
