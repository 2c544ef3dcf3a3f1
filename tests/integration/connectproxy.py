"""A small forward proxy on loopback, as a company network puts in front of PyPI: CONNECT
tunnels (https targets) and absolute-form GETs (http targets), each recorded with the
Proxy-Authorization it carried; ``refuse`` answers 403 to everything.

Targets on loopback only; threads; every wait bounded.
"""

from __future__ import annotations

import contextlib
import socket
import ssl
import threading
from dataclasses import dataclass
from urllib.parse import urlsplit

from tests.integration.loopserver import LoopbackServer, read_head

IDLE_LIMIT = 30.0  # seconds a connection may go silent before the proxy drops it


@dataclass(frozen=True)
class Seen:
    method: str
    target: str  # "127.0.0.1:PORT" for CONNECT, the absolute URL for GET
    authorization: str | None


class ConnectProxy(LoopbackServer):
    def __init__(self) -> None:
        self.seen: list[Seen] = []
        self.refuse = False
        super().__init__()

    def url(self, login: str = "") -> str:
        return f"http://{login + '@' if login else ''}127.0.0.1:{self.port}"

    def handle(self, conn: socket.socket) -> None:
        conn.settimeout(IDLE_LIMIT)
        with conn, contextlib.suppress(OSError, ValueError):
            head = read_head(conn)
            if head is None:
                return
            lines, rest = head
            method, target, version = lines[0].split(" ", 2)
            fields = dict(line.split(": ", 1) for line in lines[1:] if ": " in line)
            auth = next((v for k, v in fields.items() if k.lower() == "proxy-authorization"),
                        None)
            self.seen.append(Seen(method, target, auth))
            if self.refuse:
                conn.sendall(b"HTTP/1.1 403 Forbidden\r\nContent-Length: 0\r\n"
                             b"Connection: close\r\n\r\n")
                return
            if method == "CONNECT":
                host, _, port = target.rpartition(":")
                upstream = open_loopback(host, int(port))
                conn.sendall(b"HTTP/1.1 200 Connection established\r\n\r\n")
            else:
                parts = urlsplit(target)
                upstream = open_loopback(parts.hostname or "", parts.port or 80)
                path = parts.path + ("?" + parts.query if parts.query else "")
                kept = [line for line in lines[1:]
                        if not line.lower().startswith("proxy-authorization:")]
                upstream.sendall("\r\n".join([f"{method} {path} {version}", *kept]).encode(
                    "latin-1") + b"\r\n\r\n" + rest)
            with upstream:
                pipe(conn, upstream)


def open_loopback(host: str, port: int) -> socket.socket:
    if host != "127.0.0.1":
        raise ValueError(f"not a loopback target: {host}")
    return socket.create_connection((host, port), timeout=IDLE_LIMIT)


def pipe(client: socket.socket, upstream: socket.socket) -> None:
    """Bytes both ways until either side closes."""
    def copy(src: socket.socket, dst: socket.socket) -> None:
        with contextlib.suppress(OSError):
            while data := src.recv(65536):
                dst.sendall(data)
        with contextlib.suppress(OSError):
            dst.shutdown(socket.SHUT_WR)

    back = threading.Thread(target=copy, args=(upstream, client), daemon=True)
    back.start()
    copy(client, upstream)
    back.join(timeout=IDLE_LIMIT)


class TlsFront(LoopbackServer):
    """TLS on loopback in front of a plain HTTP server (``target_port``): an https
    upstream for the mirror, with the certificate ``cert``/``key`` (for 127.0.0.1)."""

    def __init__(self, target_port: int, cert: str, key: str) -> None:
        self.target_port = target_port
        self._context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        self._context.load_cert_chain(cert, key)
        super().__init__()

    def handle(self, conn: socket.socket) -> None:
        conn.settimeout(IDLE_LIMIT)
        with contextlib.suppress(OSError), \
                self._context.wrap_socket(conn, server_side=True) as tls, \
                open_loopback("127.0.0.1", self.target_port) as upstream:
            pipe(tls, upstream)
