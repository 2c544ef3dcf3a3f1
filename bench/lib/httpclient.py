"""A small asyncio HTTP/1.1 client for the load run: keep-alive, Content-Length and chunked.

One ``Connection`` per simulated client, requests one after the other (closed loop,
as pip and twine use a connection). Written on asyncio streams so that 100 clients
fit in one process on one CPU; stdlib only, no dependency to install.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from dataclasses import dataclass

from bench.lib.host import HOST

READ_LIMIT = 1 << 20  # longest head line / chunk-size line we accept


class StaleConnection(ConnectionError):
    """A kept-alive connection the server had closed before it sent a byte of the answer."""


@dataclass
class Reply:
    status: int
    headers: dict[str, str]  # lower-case names; a repeated header keeps its last value
    body: bytes
    seconds: float  # from the first byte written to the last byte of the body read


class Connection:
    """A keep-alive connection to the server that reconnects when it has to."""

    def __init__(self, port: int, timeout: float) -> None:
        self.port = port
        self.timeout = timeout
        self._reader: asyncio.StreamReader | None = None
        self._writer: asyncio.StreamWriter | None = None
        self._used = False  # has this connection answered a request yet?
        self.last_used = 0.0
        self.previous = ""  # what the last request on it was, for the report

    async def close(self) -> None:
        writer, self._reader, self._writer = self._writer, None, None
        if writer is not None:
            writer.close()
            with contextlib.suppress(OSError, asyncio.TimeoutError):
                await asyncio.wait_for(writer.wait_closed(), 1.0)

    async def request(self, raw: bytes, *, head: bool = False) -> Reply:
        """Send one whole request (head and body) and read its answer, bounded by timeout.

        Raises StaleConnection when a reused connection ends before any answer byte
        (the server's keep-alive deadline passed): the caller may retry it once.
        """
        if self._writer is None:
            self._reader, self._writer = await asyncio.wait_for(
                asyncio.open_connection(HOST, self.port, limit=READ_LIMIT), self.timeout)
            self._used = False
        reused = self._used
        t0 = time.perf_counter()
        try:
            reply = await asyncio.wait_for(self._exchange(raw, head, reused), self.timeout)
        except BaseException:
            await self.close()
            raise
        reply.seconds = time.perf_counter() - t0
        self._used = True
        self.last_used = time.monotonic()
        if reply.headers.get("connection", "").lower() == "close":
            await self.close()
        return reply

    async def _exchange(self, raw: bytes, head: bool, reused: bool) -> Reply:
        assert self._reader is not None and self._writer is not None
        reader = self._reader
        try:
            self._writer.write(raw)
            await self._writer.drain()
            status_line = await reader.readuntil(b"\r\n")
        except (ConnectionResetError, BrokenPipeError, asyncio.IncompleteReadError) as exc:
            got = getattr(exc, "partial", b"")
            if reused and not got:
                raise StaleConnection(f"kept-alive connection closed: {exc!r}") from exc
            raise
        status = int(status_line.split(b" ", 2)[1])
        headers: dict[str, str] = {}
        for line in (await reader.readuntil(b"\r\n\r\n")).decode("latin-1").split("\r\n"):
            name, sep, value = line.partition(":")
            if sep:
                headers[name.strip().lower()] = value.strip()
        if head or status in (204, 304) or status < 200:
            body = b""
        elif "chunked" in headers.get("transfer-encoding", "").lower():
            body = await _read_chunked(reader)
        elif "content-length" in headers:
            body = await reader.readexactly(int(headers["content-length"]))
        else:  # delimited by the end of the connection
            body = await reader.read()
            headers["connection"] = "close"
        return Reply(status, headers, body, 0.0)


async def _read_chunked(reader: asyncio.StreamReader) -> bytes:
    parts = []
    while True:
        size = int((await reader.readuntil(b"\r\n")).split(b";", 1)[0].strip(), 16)
        if size == 0:
            while (await reader.readuntil(b"\r\n")) != b"\r\n":  # trailers
                pass
            return b"".join(parts)
        parts.append(await reader.readexactly(size))
        await reader.readexactly(2)


def request_bytes(method: str, path: str, host: str, headers: dict[str, str],
                  body: bytes = b"") -> bytes:
    """The bytes of one HTTP/1.1 request; Content-Length is added when there is a body."""
    lines = [f"{method} {path} HTTP/1.1", f"Host: {host}"]
    lines += [f"{k}: {v}" for k, v in headers.items()]
    if body or method in ("POST", "PUT"):
        lines.append(f"Content-Length: {len(body)}")
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + body
