"""A loopback TCP proxy in front of the S3 store, for the proxies that hold a node's
requests or answers (``StallProxy``, ``GateProxy``): each connection is piped by
``_up`` (node to store) and ``_down`` (store to node); ``close`` ends every one."""

from __future__ import annotations

import contextlib
import socket
import threading
from collections.abc import Iterator


class TcpProxy:
    def __init__(self, target_port: int) -> None:
        self.target = ("127.0.0.1", target_port)
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
            threading.Thread(target=self._up, args=(client, store), daemon=True).start()
            threading.Thread(target=self._down, args=(store, client), daemon=True).start()

    def _up(self, source: socket.socket, sink: socket.socket) -> None:
        with piping(source, sink):
            while data := source.recv(65536):
                sink.sendall(data)

    def _down(self, source: socket.socket, sink: socket.socket) -> None:
        self._up(source, sink)


@contextlib.contextmanager
def piping(source: socket.socket, sink: socket.socket) -> Iterator[None]:
    """A pipe's life: a socket error ends it, and either end closing closes both."""
    try:
        yield
    except OSError:
        pass
    finally:
        for sock in (source, sink):
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)
