"""What the simple API answers: one ``Reply`` (status, complete headers, body or file part),
whichever transport sends it, and the pure header logic both share.

Every header a reply carries is decided here, Content-Type and Content-Length
included, so that the worker's loop and the Flask views send the same bytes.
"""

from __future__ import annotations

import enum
import functools
import logging
import os
import re
from collections.abc import Iterator
from dataclasses import dataclass, field, replace
from email.utils import formatdate, parsedate_to_datetime
from http import HTTPStatus

from pypid.growing import BrokenDownload, DownloadError, Follower
from pypid.simple.negotiate import TEXT_HTML
from pypid.storage import FileIdentity

Headers = list[tuple[str, str]]

log = logging.getLogger("pypid.simple")

PAGE_CACHE_CONTROL = "max-age=0, must-revalidate"
FILE_MAX_AGE = 365 * 24 * 3600
VARY = "Accept, Accept-Encoding"
PLAIN = "text/plain; charset=utf-8"
OCTETS = "application/octet-stream"
_RANGE = re.compile(r"[Bb][Yy][Tt][Ee][Ss]=([0-9]{1,18})?-([0-9]{1,18})?")
REALM = 'Basic realm="pypid", charset="UTF-8"'


class Kind(enum.Enum):
    """What a reply is, for the transports (and logs) that treat kinds differently."""

    PAGE = "page"  # an index page, or a 304 for one
    UI = "ui"  # a web UI page for people (or a 304): it names this server's URL
    FILE = "file"  # a distribution file (200, 206, 304, 416)
    METADATA = "metadata"  # a wheel's METADATA (PEP 658)
    MOVED = "moved"  # 301 to the canonical URL
    UPSTREAM = "upstream"  # 302 to the upstream index
    NOT_FOUND = "not found"
    NOT_ACCEPTABLE = "not acceptable"
    CHANGING = "changing"  # 503: the file is being replaced; retry
    DENIED = "denied"  # 401, 403 or 429
    WRONG_METHOD = "wrong method"  # 405
    HEALTH = "health"  # /health
    ERROR = "error"  # any other refusal


@dataclass(slots=True)
class FilePart:
    """Bytes of a file to send after the headers: ``length`` from ``offset``.

    ``identity`` is the file's identity when the reply was made;
    a sender opens the file, checks it is still that file, and sends no more
    than ``length`` (a file growing meanwhile must not lengthen the body).
    """

    path: str
    identity: FileIdentity
    offset: int
    length: int

    def matches(self, fd: int) -> bool:
        """Is the opened ``fd`` still the file this part was decided for (and still in the
        root: a descriptor kept open outlives a removal)?"""
        st, identity = os.fstat(fd), self.identity
        return ((st.st_ino == identity.inode or identity.inode < 0)  # see FileEntry.is_stat_of
                and st.st_size == identity.size and st.st_mtime_ns == identity.mtime_ns
                and st.st_nlink > 0)


class BrokenStream(Exception):
    """A streamed body went bad after its head was sent: the connection must be cut
    before the body is complete, so that the client cannot take it for whole."""


class Relay:
    """A download's bytes (``pypid.growing``) as a reply's stream; closing it (a HEAD, a
    client gone) lets go of the download's file even if it was never read."""

    def __init__(self, follower: Follower, filename: str) -> None:
        self._follower = follower
        self._chunks = follower.chunks()
        self._filename = filename

    def __iter__(self) -> Iterator[bytes]:
        return self

    def __next__(self) -> bytes:
        try:
            return next(self._chunks)
        except BrokenDownload as exc:
            log.debug("%s: cut the client off before the end: %s", self._filename, exc)
            raise BrokenStream(str(exc)) from None

    def close(self) -> None:
        self._chunks.close()
        self._follower.close()


def streamed(follower: Follower, filename: str, sha256: str, mtime: float, size: int | None,
             *, overwrite: bool) -> Reply | DownloadError:
    """A 200 sending a download's bytes as they arrive (no ranges until it is whole), once
    it has its first; the download's error (the follower closed) if it failed before."""
    error = follower.first_bytes()
    if error is not None:
        follower.close()
        return error
    headers = [h for h in file_headers(sha256, mtime, overwrite=overwrite)
               if h[0] != "Accept-Ranges"]
    headers.append(("Content-Type", OCTETS))
    if size is not None:
        headers.append(("Content-Length", str(size)))
    return Reply(Kind.FILE, 200, headers, stream=Relay(follower, filename))


@dataclass(slots=True)
class Reply:
    """Read-only once made (not frozen: one is made per request, and frozen costs)."""

    kind: Kind
    status: int
    headers: Headers
    body: bytes = b""
    file: FilePart | None = None
    reason: str = ""  # the status line's phrase, when not the standard one
    # A body made while it is sent (a mirrored file on its way from upstream); it may
    # raise BrokenStream. Only for blocking transports: decide(may_block=False) never
    # makes one.
    stream: Iterator[bytes] | None = None
    # Its head as the worker's loop sends it, around the per-second common headers
    # (``pypid.http1.answer_parts``): made at the first send, for a reply sent many times.
    encoded: tuple[bytes, bytes] | None = field(default=None, repr=False, compare=False)

    @property
    def status_line(self) -> str:
        """``"200 OK"``, or the status with this reply's own reason phrase."""
        if self.reason:
            return f"{self.status} {self.reason}"
        return _status_line(self.status)

    def for_head(self) -> Reply:
        """The same headers, no body (HEAD)."""
        if self.stream is not None:
            close = getattr(self.stream, "close", None)
            if close is not None:
                close()
        if self.body or self.file or self.stream:
            return replace(self, body=b"", file=None, stream=None)
        return self


@functools.lru_cache(maxsize=64)
def _status_line(status: int) -> str:
    return f"{status} {HTTPStatus(status).phrase}"


def text(kind: Kind, status: int, message: str, *, reason: bool = False,
         headers: Headers | None = None) -> Reply:
    """A one-line plain-text reply; with ``reason`` the line is the status phrase too."""
    line = reason_phrase(message) if reason else " ".join(message.split())
    body = (line + "\n").encode()
    return Reply(kind, status, [*(headers or []), ("Content-Type", PLAIN),
                                ("Content-Length", str(len(body)))], body,
                 reason=line if reason else "")


def reason_phrase(message: str) -> str:
    """``message`` made safe for an HTTP status line: one line, latin-1, no control characters.

    >>> reason_phrase("File already exists: ☃.whl\\r\\nX: y")
    'File already exists: ?.whl X: y'
    """
    flat = " ".join(message.split())
    flat = "".join(c if 32 <= ord(c) < 127 or 160 <= ord(c) <= 255 else "?" for c in flat)
    return flat[:200]


CONTENT_TYPES = {TEXT_HTML: "text/html; charset=utf-8"}  # a media type's, when not itself


def content_type(media: str) -> str:
    return CONTENT_TYPES.get(media, media)


def file_headers(sha256: str, mtime: float, *, overwrite: bool) -> Headers:
    """The validators and caching headers every answer about a file carries."""
    return [("ETag", f'"{sha256}"'), ("Last-Modified", formatdate(int(mtime), usegmt=True)),
            ("Accept-Ranges", "bytes"),
            ("Cache-Control", "max-age=0, must-revalidate" if overwrite
             else f"public, max-age={FILE_MAX_AGE}, immutable")]


def not_modified(etag: str, mtime: float | None, if_none_match: str | None,
                 if_modified_since: str | None) -> bool:
    """RFC 9110's conditional GET: If-None-Match decides when present, else If-Modified-Since."""
    if if_none_match:
        return etag_matches(if_none_match, etag)
    return bool(if_modified_since) and mtime is not None and not_modified_since(
        if_modified_since or "", mtime)


@functools.lru_cache(maxsize=256)  # clients send few distinct Accept-Encoding headers
def accepts_gzip(header: str | None) -> bool:
    """Does ``Accept-Encoding`` allow gzip?

    >>> accepts_gzip("gzip, deflate"), accepts_gzip("gzip;q=0"), accepts_gzip(None)
    (True, False, False)
    """
    for item in (header or "").split(","):
        coding, *params = (part.strip() for part in item.split(";"))
        if coding.lower() not in ("gzip", "x-gzip"):
            continue
        for param in params:
            name, _, value = param.partition("=")
            if name.strip().lower() == "q":
                try:
                    return float(value) > 0
                except ValueError:
                    return False
        return True
    return False


def etag_matches(header: str, etag: str) -> bool:
    """Weak comparison, as If-None-Match wants.

    >>> etag_matches('W/"abc", "def"', "abc"), etag_matches("*", "x"), etag_matches('"a"', "b")
    (True, True, False)
    """
    if header == f'"{etag}"':  # the usual: the one tag this server sent
        return True
    for item in header.split(","):
        tag = item.strip()
        if tag == "*":
            return True
        tag = tag.removeprefix("W/").strip('"')
        if tag == etag:
            return True
    return False


def not_modified_since(header: str, mtime: float) -> bool:
    try:
        since = parsedate_to_datetime(header).timestamp()
    except (TypeError, ValueError, IndexError, OverflowError):
        return False
    return int(mtime) <= since


def byte_range(header: str, size: int) -> tuple[int, int] | None | bool:
    """One range of ``Range: bytes=...`` as (offset, length); None: ignore the header
    (malformed, or several ranges: the whole file is a valid answer); False: unsatisfiable.

    >>> byte_range("bytes=0-9", 100), byte_range("bytes=-22", 100), byte_range("bytes=90-", 100)
    ((0, 10), (78, 22), (90, 10))
    >>> byte_range("bytes=100-", 100), byte_range("bytes=0-1,5-6", 100), byte_range("x", 100)
    (False, None, None)
    """
    match = _RANGE.fullmatch(header.strip())
    if match is None or not (match.group(1) or match.group(2)):
        return None
    first, last = match.groups()
    if not first:  # the last N bytes
        length = min(int(last), size)
        return (size - length, length) if length > 0 else False
    start = int(first)
    if last and int(last) < start:
        return None
    if start >= size:
        return False
    end = min(int(last), size - 1) if last else size - 1
    return start, end - start + 1
