"""A TCP proxy in front of the S3 store that holds, once, the first request whose bytes
hold a marker (such as ``b"partNumber="``: a part of a multipart upload), so that a node
stays in the middle of that request for as long as a test needs. Loopback only; every
wait is bounded; ``close`` ends every connection."""

from __future__ import annotations

import socket
import threading

from tests.integration.tcpproxy import TcpProxy, piping

HOLD_LIMIT = 120.0  # seconds a held request waits before the proxy lets it go itself


class StallProxy(TcpProxy):
    def __init__(self, target_port: int, marker: bytes) -> None:
        self.marker = marker
        self.stalled = threading.Event()  # a request is held (from then on all pass)
        super().__init__(target_port)

    def _up(self, source: socket.socket, sink: socket.socket) -> None:
        tail = b""
        with piping(source, sink):
            while data := source.recv(65536):
                if not self.stalled.is_set():
                    seen = tail + data
                    if self.marker in seen:
                        self.stalled.set()
                        self._closed.wait(HOLD_LIMIT)  # hold: nothing more goes through
                        break
                    tail = seen[-len(self.marker):]
                sink.sendall(data)

    def _down(self, source: socket.socket, sink: socket.socket) -> None:
        super()._up(source, sink)
