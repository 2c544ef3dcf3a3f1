"""Status, headers and body for cached pages and for files: shared by the Flask views and
the fast path, so both answer alike. Pure functions of the request's header strings."""

from __future__ import annotations

import functools
from email.utils import formatdate, parsedate_to_datetime

from pypid.simple.negotiate import TEXT_HTML
from pypid.simple.pagecache import Page

Headers = list[tuple[str, str]]

PAGE_CACHE_CONTROL = "max-age=0, must-revalidate"
FILE_MAX_AGE = 365 * 24 * 3600
VARY = "Accept, Accept-Encoding"


def content_type(media: str) -> str:
    return "text/html; charset=utf-8" if media == TEXT_HTML else media


def page_answer(page: Page, media: str, accept_encoding: str | None,
                if_none_match: str | None) -> tuple[int, Headers, bytes]:
    """A cached page: gzipped when the client accepts it, 304 when its ETag matches."""
    gzipped = page.gzipped() if accepts_gzip(accept_encoding) else None
    etag = page.gzip_etag if gzipped is not None else page.etag
    headers = [("Vary", VARY), ("ETag", f'"{etag}"'), ("Cache-Control", PAGE_CACHE_CONTROL)]
    if if_none_match and etag_matches(if_none_match, etag):
        return 304, headers, b""
    body = gzipped if gzipped is not None else page.body
    headers.append(("Content-Type", content_type(media)))
    headers.append(("Content-Length", str(len(body))))
    if gzipped is not None:
        headers.append(("Content-Encoding", "gzip"))
    return 200, headers, body


def file_answer(sha256: str, size: int, mtime: float, *, overwrite: bool,
                if_none_match: str | None, if_modified_since: str | None) -> tuple[int, Headers]:
    """A whole file (no Range): its headers, or 304 for a matching conditional request."""
    headers = [("ETag", f'"{sha256}"'), ("Last-Modified", formatdate(int(mtime), usegmt=True)),
               ("Accept-Ranges", "bytes"),
               ("Cache-Control", "max-age=0, must-revalidate" if overwrite
                else f"public, max-age={FILE_MAX_AGE}, immutable")]
    if if_none_match:
        if etag_matches(if_none_match, sha256):
            return 304, headers
    elif if_modified_since and not_modified_since(if_modified_since, mtime):
        return 304, headers
    headers.append(("Content-Type", "application/octet-stream"))
    headers.append(("Content-Length", str(size)))
    return 200, headers


@functools.lru_cache(maxsize=256)
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
