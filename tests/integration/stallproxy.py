"""A TCP proxy in front of the S3 store that holds, once, the first request whose bytes
hold a marker (such as ``b"partNumber="``: a part of a multipart upload), so that a node
stays in the middle of that request for as long as a test needs. Loopback only; every
wait is bounded; ``close`` ends every connection."""

from __future__ import annotations

import contextlib
import socket
import threading

HOLD_LIMIT = 120.0  # seconds a held request waits before the proxy lets it go itself


class StallProxy:
    def __init__(self, target_port: int, marker: bytes) -> None:
        self.target = ("127.0.0.1", target_port)
        self.marker = marker
        self.stalled = threading.Event()  # a request is held (from then on all pass)
        self._closed = threading.Event()
        self._sockets: list[socket.socket] = []
        self._lock = threading.Lock()
        self._server = socket.create_server(("127.0.0.1", 0))
        self.endpoint = f"http://127.0.0.1:{self._server.getsockname()[1]}"
        threading.Thread(target=self._accept, daemon=True).start()

    def close(self) -> None:
        self._closed.set()
        with self._lock:
            for sock in [self._server, *self._sockets]:
                with contextlib.suppress(OSError):
                    sock.shutdown(socket.SHUT_RDWR)
                with contextlib.suppress(OSError):
                    sock.close()

    def _accept(self) -> None:
        while not self._closed.is_set():
            try:
                client, _ = self._server.accept()
                store = socket.create_connection(self.target, timeout=10)
            except OSError:
                continue
            store.settimeout(None)
            with self._lock:
                self._sockets += [client, store]
            threading.Thread(target=self._pipe, args=(client, store, True), daemon=True).start()
            threading.Thread(target=self._pipe, args=(store, client, False),
                             daemon=True).start()

    def _pipe(self, source: socket.socket, sink: socket.socket, scan: bool) -> None:
        tail = b""
        try:
            while True:
                data = source.recv(65536)
                if not data:
                    break
                if scan and not self.stalled.is_set():
                    seen = tail + data
                    if self.marker in seen:
                        self.stalled.set()
                        self._closed.wait(HOLD_LIMIT)  # hold: nothing more goes through
                        break
                    tail = seen[-len(self.marker):]
                sink.sendall(data)
        except OSError:
            pass
        finally:
            for sock in (source, sink):
                with contextlib.suppress(OSError):
                    sock.shutdown(socket.SHUT_RDWR)
