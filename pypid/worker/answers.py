"""What the worker's loop answers on its own, before the simple API is asked."""

from __future__ import annotations

from pypid.http1 import PlainHead
from pypid.simple.reply import Kind, text

MAX_HEAD = 32 * 1024  # a longer request head is refused (431), as nginx's defaults do
BUSY = text(Kind.DENIED, 503, "the server is busy; retry in a second",
            headers=[("Retry-After", "1")])
BARE_LF_HEAD = text(Kind.ERROR, 400, "Bad Request: a line of the request head ends with a "
                    "bare LF (HTTP wants CRLF)")
HEAD_TOO_LARGE = text(Kind.ERROR, 431, f"the request head is larger than {MAX_HEAD} bytes")
# Replies that name this server's URL (a Location, the UI's links), which a trusted
# proxy's headers change: the app answers those (a tuple: no Enum hashing).
LOCATED = (Kind.MOVED, Kind.UPSTREAM, Kind.UI)
_FORWARDED = ("x-forwarded-", "forwarded")


def forwarded(head: PlainHead) -> bool:
    """Does the request carry proxy headers (which the Flask side applies, or strips)?"""
    return any(name.startswith(_FORWARDED) for name in head.headers)
