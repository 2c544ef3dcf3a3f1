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
# Matched against the head decoded as latin-1 (one byte, one character): anything
# outside ASCII fails these patterns, so the text is the bytes.
_REQUEST_LINE = re.compile(
    r"(GET|HEAD) (/[A-Za-z0-9._~!$&'()*+,;=:@/-]*)(?:\?([A-Za-z0-9._~!$&'()*+,;=:@/?%-]*))?"
    r" HTTP/1\.1")
_TOKEN = re.compile(r"[!#$%&'*+.^_`|~0-9A-Za-z-]+")
_VALUE = re.compile(r"[\t\x20-\x7e]*")
# Headers that make a request one for gunicorn: a body, a protocol switch.
_NOT_PLAIN = frozenset(("content-length", "transfer-encoding", "expect", "upgrade",
                        "http2-settings", "trailer"))


class Limits(NamedTuple):
    """gunicorn's ``limit_request_*`` settings; a head beyond them is gunicorn's to refuse."""

    line: int = 4094
    fields: int = 100
    field_size: int = 8190


GUNICORN_LIMITS = Limits()


class PlainHead:
    """A request head in the plain form."""

    __slots__ = ("method", "path", "query", "headers", "close", "raw")

    def __init__(self, method: str, path: str, query: str, headers: dict[str, str], *,
                 close: bool, raw: bytes) -> None:
        self.method = method
        self.path = path
        self.query = query  # without "?"; "" when there is none
        self.headers = headers  # lower-case names, values stripped
        self.close = close  # the client asked to close after the answer
        self.raw = raw  # as received, without the final blank line


def find_head(buf: bytes | bytearray) -> int:
    """Where the first head in ``buf`` ends (the index of its CRLF CRLF), or
    ``NEED_MORE``, or ``BARE_LF`` when no head ends yet and a line ends with a bare LF.
    A complete head that ``parse_head`` refuses must be checked with ``bare_lf``.

    A bare LF is refused, not passed on: gunicorn 20.1 takes it as the end of a line
    inside a header value, so ``Host: x\nContent-Length: 44`` would hide a request in
    a body from any proxy that reads it as one header.
    """
    end = buf.find(b"\r\n\r\n")
    if end >= 0:
        # A bare LF before it makes the head not plain: see bare_lf (only then looked for).
        return end
    return BARE_LF if bare_lf(buf, len(buf)) else NEED_MORE


def bare_lf(buf: bytes | bytearray, end: int) -> bool:
    """Does a line of ``buf[:end]`` end with a bare LF?"""
    return buf.count(b"\n", 0, end) != buf.count(b"\r\n", 0, end)


def parse_head(head: bytes, limits: Limits = GUNICORN_LIMITS) -> PlainHead | None:
    """A request head (without its final blank line) in the plain form, or None."""
    lines = head.decode("latin-1").split("\r\n")
    within = len(lines[0]) <= limits.line and len(lines) - 1 <= limits.fields
    match = _REQUEST_LINE.fullmatch(lines[0]) if within else None
    if match is None:
        return None
    headers: dict[str, str] = {}
    for line in lines[1:]:
        if len(line) + 2 > limits.field_size:  # gunicorn counts the CRLF
            return None
        name, colon, value = line.partition(":")
        if not colon or _TOKEN.fullmatch(name) is None or _VALUE.fullmatch(value) is None:
            return None
        key = name.lower()
        if key in headers or key in _NOT_PLAIN:
            return None
        headers[key] = value.strip(" \t")
    # Does Connection ask to close? Anything but one plain token (an upgrade, or a
    # list, which gunicorn reads otherwise) is gunicorn's to decide.
    connection = headers.get("connection")
    close = False
    if connection is not None:
        option = connection.strip().lower()
        if option not in ("close", "keep-alive"):
            return None
        close = option == "close"
    method, path, query = match.groups()
    return PlainHead(method, path, query or "", headers, close=close, raw=head)


def common_headers(server: bytes, date: bytes, close: bool) -> bytes:
    """The headers every answer starts with, as gunicorn writes them (the loop makes
    these once a second)."""
    return (b"\r\nServer: " + server + b"\r\nDate: " + date + b"\r\nConnection: "
            + (b"close" if close else b"keep-alive") + b"\r\n")


def answer_head(status_line: str, headers: list[tuple[str, str]], common: bytes) -> bytes:
    """Status line and headers: ``common`` (see ``common_headers``) first, then ``headers``."""
    text = "".join([f"{name}: {value}\r\n" for name, value in headers])
    return b"HTTP/1.1 " + status_line.encode("latin-1") + common + text.encode("latin-1") + \
        b"\r\n"
