"""The plain HTTP/1.1 that pypid's worker reads and writes itself: pure functions.

``parse_head`` accepts only the plain form clients send for index reads (GET or
HEAD, origin-form target, HTTP/1.1, no body, well-formed header lines, none
repeated) and says None for anything else; the worker then gives the same
bytes to gunicorn's parser, which decides (and refuses) everything unusual. So
nothing here needs to produce an error, and a head is never read two ways.
"""

from __future__ import annotations

import re
from typing import NamedTuple

NEED_MORE = -1  # no complete head yet
BARE_LF = -2  # a line ends with a bare LF: refused (parsers differ on it: smuggling)

# The plain request line: GET or HEAD, an origin-form path of unreserved characters
# (no percent escapes: the path is used as it is), an optional query, HTTP/1.1.
_REQUEST_LINE = re.compile(
    rb"(GET|HEAD) (/[A-Za-z0-9._~!$&'()*+,;=:@/-]*)(?:\?([A-Za-z0-9._~!$&'()*+,;=:@/?%-]*))?"
    rb" HTTP/1\.1")
_TOKEN = re.compile(rb"[!#$%&'*+.^_`|~0-9A-Za-z-]+")
_VALUE = re.compile(rb"[\t\x20-\x7e]*")
# Headers that make a request one for gunicorn: a body, a protocol switch.
_NOT_PLAIN = frozenset((b"content-length", b"transfer-encoding", b"expect", b"upgrade",
                        b"http2-settings", b"trailer"))


class Limits(NamedTuple):
    """gunicorn's ``limit_request_*`` settings; a head beyond them is gunicorn's to refuse."""

    line: int = 4094
    fields: int = 100
    field_size: int = 8190


GUNICORN_LIMITS = Limits()


class PlainHead(NamedTuple):
    """A request head in the plain form."""

    method: str
    path: str
    query: str  # without "?"; "" when there is none
    headers: dict[bytes, bytes]  # lower-cased names
    close: bool  # the client asked to close after the answer
    raw: bytes  # as received, without the final blank line

    def header(self, name: bytes) -> str | None:
        value = self.headers.get(name)
        return None if value is None else value.decode("ascii")


def find_head(buf: bytes | bytearray) -> int:
    """Where the first head in ``buf`` ends (the index of its CRLF CRLF), or
    ``NEED_MORE``, or ``BARE_LF`` when a line of it ends with a bare line feed.

    A bare LF is refused, not passed on: gunicorn 20.1 takes it as the end of a line
    inside a header value, so ``Host: x\nContent-Length: 44`` would hide a request in
    a body from any proxy that reads it as one header.
    """
    end = buf.find(b"\r\n\r\n")
    head = buf[:end] if end >= 0 else buf
    if head.count(b"\n") != head.count(b"\r\n"):
        return BARE_LF
    return end if end >= 0 else NEED_MORE


def parse_head(head: bytes, limits: Limits = GUNICORN_LIMITS) -> PlainHead | None:
    """A request head (without its final blank line) in the plain form, or None."""
    lines = head.split(b"\r\n")
    within = len(lines[0]) <= limits.line and len(lines) - 1 <= limits.fields
    match = _REQUEST_LINE.fullmatch(lines[0]) if within else None
    if match is None:
        return None
    headers: dict[bytes, bytes] = {}
    for line in lines[1:]:
        if len(line) + 2 > limits.field_size:  # gunicorn counts the CRLF
            return None
        name, colon, value = line.partition(b":")
        if not colon or _TOKEN.fullmatch(name) is None or _VALUE.fullmatch(value) is None:
            return None
        name = name.lower()
        if name in headers or name in _NOT_PLAIN:
            return None
        headers[name] = value.strip(b" \t")
    close = _close_asked(headers.get(b"connection"))
    if close is None:
        return None
    method, path, query = match.groups()
    return PlainHead(method.decode(), path.decode(), (query or b"").decode(), headers, close, head)


def _close_asked(connection: bytes | None) -> bool | None:
    """Does ``Connection`` ask to close? None: anything but one plain token (an
    upgrade, or a list, which gunicorn reads otherwise), for gunicorn to decide."""
    if connection is None:
        return False
    token = connection.strip().lower()
    if token not in (b"close", b"keep-alive"):
        return None
    return token == b"close"


def answer_head(status_line: str, headers: list[tuple[str, str]], *, server: bytes,
                date: bytes, close: bool) -> bytes:
    """Status line and headers, as gunicorn writes them (Server, Date, Connection first)."""
    lines = [b"HTTP/1.1 ", status_line.encode("latin-1"), b"\r\nServer: ", server,
             b"\r\nDate: ", date, b"\r\nConnection: ", b"close" if close else b"keep-alive",
             b"\r\n"]
    for name, value in headers:
        lines.append(f"{name}: {value}\r\n".encode("latin-1"))
    lines.append(b"\r\n")
    return b"".join(lines)
