"""The plain HTTP/1.1 that pypid's worker reads and writes itself: pure functions.

``parse_head`` accepts only the plain form clients send for index reads (GET or
HEAD, origin-form target, HTTP/1.1, no body, well-formed header lines, none
repeated) and says None for anything else; the worker then gives the same
bytes to gunicorn's parser, which decides (and refuses) everything unusual. So
nothing here needs to produce an error, and a head is never read two ways.
"""

from __future__ import annotations

import re
from typing import NamedTuple, TypeVar

NEED_MORE = -1  # no complete head yet
BARE_LF = -2  # a line ends with a bare LF: refused (parsers differ on it: smuggling)

# The plain request line: GET or HEAD, an origin-form path of unreserved characters
# (no percent escapes: the path is used as it is), an optional query, HTTP/1.1.
# Matched against the head decoded as latin-1 (one byte, one character): anything
# outside ASCII fails these patterns, so the text is the bytes.
_REQUEST_LINE = re.compile(
    r"(GET|HEAD) (/[A-Za-z0-9._~!$&'()*+,;=:@/-]*)(?:\?([A-Za-z0-9._~!$&'()*+,;=:@/?%-]*))?"
    r" HTTP/1\.1")
# A header line: a token, a colon (the first: a token has none), a value of visible
# ASCII, spaces and tabs.
_FIELD_LINE = re.compile(r"([!#$%&'*+.^_`|~0-9A-Za-z-]+):([\t\x20-\x7e]*)")
# Headers that make a request one for gunicorn: a body, a protocol switch.
_NOT_PLAIN = frozenset(("content-length", "transfer-encoding", "expect", "upgrade",
                        "http2-settings", "trailer"))


MEMO_ENTRIES = 256  # blocks, and lines, a memo keeps; past it, it starts again
# Lines that differ from one resource to the next (a validator, a range): not kept, nor
# a block holding one, so that they do not push out what repeats.
_PER_RESOURCE = frozenset(("if-none-match", "if-modified-since", "if-range", "range"))
_PER_RESOURCE_NAMES = {name.encode(): name for name in _PER_RESOURCE}
_PER_RESOURCE_FIRST = frozenset((b"I", b"i", b"R", b"r"))  # a cheap first look
MEMO_BLOCK_BYTES = 2048  # a longer block or line is read each time (bounds the memory)


_K = TypeVar("_K", str, bytes)
_V = TypeVar("_V")


class HeadMemo:
    """``parse_head``'s memo, one per caller: header blocks already read (a block's
    bytes -> its headers and close, or None: not plain) and, for a block not seen
    whole (an If-None-Match differs from page to page), its lines (a line -> its
    lower-cased name and value, or None). A validator or a range, and a block with
    one, are read each time: they seldom come twice."""

    __slots__ = ("blocks", "lines")

    def __init__(self) -> None:
        self.blocks: dict[bytes, tuple[dict[str, str], bool] | None] = {}
        self.lines: dict[str, tuple[str, str] | None] = {}


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


def parse_head(head: bytes, limits: Limits = GUNICORN_LIMITS,
               memo: HeadMemo | None = None) -> PlainHead | None:
    """A request head (without its final blank line) in the plain form, or None.

    ``memo`` (the caller's, always used with the same ``limits``) keeps header
    blocks already read, by their bytes: a client sends the same block with every
    request but for the request line, and reading one cost more than the rest of
    a page's answer (a pip head: ~66k instructions, bench/instructions.py). Its
    values are shared: a ``PlainHead``'s headers are never changed.
    """
    end = head.find(b"\r\n")
    if end < 0:
        end = len(head)
    line = head[:end].decode("latin-1")
    match = _REQUEST_LINE.fullmatch(line) if len(line) <= limits.line else None
    if match is None:
        return None
    block = head[end:]
    if memo is None:
        fields = _read_fields(block, limits, None)
    elif block in memo.blocks:  # bytes keep their hash: one hashing
        fields = memo.blocks[block]
    else:
        fields = _read_new_block(block, limits, memo)
    if fields is None:
        return None
    headers, close = fields
    method, path, query = match.groups()
    return PlainHead(method, path, query or "", headers, close=close, raw=head)


def _read_new_block(block: bytes, limits: Limits,
                    memo: HeadMemo) -> tuple[dict[str, str], bool] | None:
    """A block the memo has not kept whole. Validator and range lines at its end
    (which vary from one request to the next: pip revalidating its cached pages) are
    read each time; the block before them is one of its own, read once and kept.
    Such a line anywhere else: every line is read (from the lines memo)."""
    others, varying = _split_varying(block)
    if not varying:
        return _read_and_keep(block, limits, memo)
    if others.count(b"\r\n") + len(varying) > limits.fields:
        return None
    fields = memo.blocks[others] if others in memo.blocks else _read_and_keep(
        others, limits, memo)
    if fields is None:
        return None
    headers = dict(fields[0])  # the kept block's dict is shared: never changed
    for key, line in varying:
        if len(line) + 2 > limits.field_size or key in headers:
            return None
        value = line[len(key) + 1:].decode("latin-1")
        if not (value.isascii() and value.isprintable()):  # a tab, a control character
            field = _read_line(line.decode("latin-1"))
            if field is None:
                return None
            value = field[1]
        headers[key] = value.strip(" \t")
    return headers, fields[1]


def _split_varying(block: bytes) -> tuple[bytes, list[tuple[str, bytes]]]:
    """``block`` without the validator and range lines it ends with, and those lines
    as (lower-cased name, line), last first. At most one line a name is taken (a fifth
    is a name twice: the block keeps it, and its reading refuses it), so a head of many
    such lines is cut at most four times."""
    varying: list[tuple[str, bytes]] = []
    for _ in _PER_RESOURCE:
        cut = block.rfind(b"\r\n")  # no start/end arguments: those cost more than the cut
        line = block[cut + 2:]
        if cut < 0 or line[:1] not in _PER_RESOURCE_FIRST:
            break
        name, colon, _ = line.partition(b":")
        key = _PER_RESOURCE_NAMES.get(name.lower()) if colon else None
        if key is None:
            break
        varying.append((key, line))
        block = block[:cut]
    return block, varying


def _read_and_keep(block: bytes, limits: Limits,
                   memo: HeadMemo) -> tuple[dict[str, str], bool] | None:
    fields = _read_fields(block, limits, memo.lines)
    if fields is None or _PER_RESOURCE.isdisjoint(fields[0]):
        _keep(memo.blocks, block, fields)
    return fields


def _keep(memo: dict[_K, _V], key: _K, value: _V) -> None:
    if len(key) <= MEMO_BLOCK_BYTES:
        if len(memo) >= MEMO_ENTRIES:
            memo.clear()
        memo[key] = value


def _read_fields(block: bytes, limits: Limits, lines_memo: dict[str, tuple[str, str] | None]
                 | None) -> tuple[dict[str, str], bool] | None:
    """The header lines (``block``: the head from the request line's CRLF on) as a
    dict, and whether the client asks to close; None when they are not plain."""
    lines = block.decode("latin-1").split("\r\n")[1:]
    if len(lines) > limits.fields:
        return None
    headers: dict[str, str] = {}
    for line in lines:
        if len(line) + 2 > limits.field_size:  # gunicorn counts the CRLF
            return None
        if lines_memo is None:
            field = _read_line(line)
        elif line in lines_memo:
            field = lines_memo[line]
        else:
            field = _read_line(line)
            if field is None or field[0] not in _PER_RESOURCE:
                _keep(lines_memo, line, field)
        if field is None or field[0] in headers:
            return None
        headers[field[0]] = field[1]
    # Does Connection ask to close? Anything but one plain token (an upgrade, or a
    # list, which gunicorn reads otherwise) is gunicorn's to decide.
    connection = headers.get("connection")
    close = False
    if connection is not None:
        option = connection.strip().lower()
        if option not in ("close", "keep-alive"):
            return None
        close = option == "close"
    return headers, close


def _read_line(line: str) -> tuple[str, str] | None:
    """A header line's lower-cased name and value, or None: not plain."""
    match = _FIELD_LINE.fullmatch(line)
    if match is None:
        return None
    name, value = match.groups()
    key = name.lower()
    return None if key in _NOT_PLAIN else (key, value.strip(" \t"))


def common_headers(server: bytes, date: bytes, close: bool) -> bytes:
    """The headers every answer starts with, as gunicorn writes them (the loop makes
    these once a second)."""
    return (b"\r\nServer: " + server + b"\r\nDate: " + date + b"\r\nConnection: "
            + (b"close" if close else b"keep-alive") + b"\r\n")


def answer_parts(status_line: str, headers: list[tuple[str, str]]) -> tuple[bytes, bytes]:
    """An answer's head but for ``common`` (see ``common_headers``), which goes between the
    two: the status line, then ``headers`` and the blank line. A reply sent many times
    keeps these (``Reply.encoded``)."""
    # map and join, not a comprehension: no Python frame, no string a header
    text = "\r\n".join(map(": ".join, headers))
    return (b"HTTP/1.1 " + status_line.encode("latin-1"),
            text.encode("latin-1") + (b"\r\n\r\n" if headers else b"\r\n"))
