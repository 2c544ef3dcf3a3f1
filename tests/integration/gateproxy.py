"""A TCP proxy in front of the S3 store that, once ``hold_after(n)`` is called, lets at
most ``n`` more bytes of each connection's answers through and holds the rest until
``release``, so that a node stays in the middle of a download for as long as a test
needs; it keeps what the node sent, to count its requests. Loopback only; every wait is
bounded; ``close`` ends every connection."""

from __future__ import annotations

import re
import socket
import threading

from tests.integration.tcpproxy import TcpProxy, piping

HOLD_LIMIT = 120.0  # seconds a held answer waits before the proxy lets it go itself


class GateProxy(TcpProxy):
    def __init__(self, target_port: int) -> None:
        self.held = threading.Event()  # an answer is being held
        self._open = threading.Event()
        self._open.set()
        self._limit = 0
        self._sent = bytearray()  # every byte the node sent to the store
        super().__init__(target_port)

    def hold_after(self, limit: int) -> None:
        self._limit = limit
        self._open.clear()

    def release(self) -> None:
        self._open.set()

    def requests(self, method: str, name: str) -> int:
        """How many ``method`` requests for a path ending in ``name`` the node sent."""
        with self._lock:
            sent = bytes(self._sent)
        pattern = rb"(?m)^" + method.encode() + rb" /\S*/" + re.escape(name.encode()) + rb"[ ?]"
        return len(re.findall(pattern, sent))

    def close(self) -> None:
        self._open.set()
        super().close()

    def _up(self, source: socket.socket, sink: socket.socket) -> None:
        with piping(source, sink):
            while data := source.recv(65536):
                with self._lock:
                    self._sent += data
                sink.sendall(data)

    def _down(self, source: socket.socket, sink: socket.socket) -> None:
        left: int | None = None  # bytes this connection may still pass while held
        with piping(source, sink):
            while data := source.recv(65536):
                if not self._open.is_set():
                    left = self._limit if left is None else left
                    if len(data) > left:
                        sink.sendall(data[:left])
                        data, left = data[left:], 0
                        self.held.set()
                        self._open.wait(HOLD_LIMIT)
                    else:
                        left -= len(data)
                sink.sendall(data)
