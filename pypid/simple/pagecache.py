"""Rendered pages kept as bytes (plain, and gzipped once a client asks) until the index
changes: the recent ones in memory, every one in a ``PagePack`` file when there is one.

A page is named by a ``space`` (the project pages of one media type, or "index")
and a ``name`` in it (the project; for "index", the media type), and is current
for one ``serial`` of the index.
"""

from __future__ import annotations

import gzip
import hashlib
import threading
from collections.abc import Callable, Iterable
from typing import Any

from pypid.metrics import tally
from pypid.simple.pagepack import GZIP_SUFFIX, PagePack

_HIT = ("page_cache_hits",)

MIN_GZIP_BYTES = 1024
# Per worker. Small, since a page that leaves it is read back from the pack
# (a pread) rather than rendered again. About 700 pages of ~1 KB with their replies.
MAX_BYTES = 2 * 1024 * 1024
ETAG_CHARS = 32
# One page read back from the pack in this many goes back into memory too: a page
# asked for often soon returns there, the many asked for once do not push it out.
PROMOTE_EVERY = 8
INDEX = "index"


class Page:
    """A rendered page of a ``PageCache``; its gzipped copy is made when a client
    first accepts gzip."""

    __slots__ = ("body", "etag", "replies", "_gzipped", "_cache", "_space", "_name", "_serial")

    def __init__(self, cache: PageCache, space: str, name: str, serial: int, body: bytes,
                 *, etag: str | None = None) -> None:
        self.body = body
        self.etag = etag or etag_of(body)
        # None: not made yet; b"": not worth it (small, or gzip does not shrink it)
        self._gzipped: bytes | None = None if len(body) >= MIN_GZIP_BYTES else b""
        self._cache = cache  # makes, stores and counts the gzipped copy
        self._space, self._name, self._serial = space, name, serial
        # What its users answer with it, while the cache keeps it in memory (``_keep``
        # makes it): ``SimpleAPI._page``'s replies. None: a page read for one request.
        self.replies: dict[Any, Any] | None = None

    @property
    def gzip_etag(self) -> str:
        return self.etag + "-gz"

    @property
    def weight(self) -> int:
        """The memory it holds in a cache: its bytes plus ~2,000 for its objects (key, etag,
        ~400; the replies made with it and their heads: ~1,600 for a 200 and a 304)."""
        return len(self.body) + len(self._gzipped or b"") + 2000

    def gzipped(self) -> bytes | None:
        """The gzipped body, or None when the plain one is as small."""
        gzipped = self._gzipped
        if gzipped is None:
            gzipped = self._cache.gzip(self)  # two threads may both: same bytes, no harm
        return gzipped or None


def etag_of(body: bytes) -> str:
    return hashlib.sha256(body).hexdigest()[:ETAG_CHARS]


def compress(body: bytes) -> bytes:
    """``body`` gzipped, or b"" when that is no smaller."""
    gzipped = gzip.compress(body, 6, mtime=0)
    return gzipped if len(gzipped) < len(body) else b""


class PageCache:
    """``(space, name, serial) -> Page``; a new serial for a page replaces the old one.

    Memory is bounded by the bytes it holds: past ``max_bytes`` the older half
    goes. Pages that went are read back from ``pack`` (when given) until their
    serial changes.
    """

    def __init__(self, max_bytes: int = MAX_BYTES, pack: PagePack | None = None) -> None:
        self._pages: dict[tuple[str, str], tuple[int, Page]] = {}
        self._max = max_bytes
        self._bytes = 0
        self._lock = threading.Lock()
        self.pack = pack
        self._reads = 0  # pages read back from the pack

    def peek(self, space: str, name: str, serial: int) -> Page | None:
        """The page if it is current and needs no rendering, else None."""
        cached = self._pages.get((space, name))
        if cached is not None and cached[0] == serial:
            page = cached[1]
        else:
            stored = self.pack.get(space, name, serial) if self.pack is not None else None
            if stored is None or len(stored) < ETAG_CHARS:
                return None
            page = Page(self, space, name, serial, stored[ETAG_CHARS:],
                        etag=stored[:ETAG_CHARS].decode("ascii"))
            self._reads += 1
            if self._reads % PROMOTE_EVERY == 0:
                self._keep(page)
        counts = tally.LOCAL.counts  # inline: the loop's every page passes here
        counts[_HIT] = counts.get(_HIT, 0) + 1  # type: ignore[operator]
        return page

    def get(self, space: str, name: str, serial: int, render: Callable[[], bytes]) -> Page:
        """The current page, rendered by ``render`` when neither memory nor pack has it."""
        page = self.peek(space, name, serial)
        if page is not None:
            return page
        page = Page(self, space, name, serial, render())
        tally.add("page_cache_misses")
        self._keep(page)
        if self.pack is not None:
            self.pack.put(space, name, serial, page.etag.encode("ascii") + page.body)
        return page

    def store(self, pages: Iterable[tuple[str, str, int, bytes]]) -> None:
        """Put pages (space, name, serial, body) in the pack only, not in memory: for pages
        rendered ahead."""
        if self.pack is not None:
            self.pack.put_many((space, name, serial, etag_of(body).encode("ascii") + body)
                               for space, name, serial, body in pages)

    def gzip(self, page: Page) -> bytes:
        """Make (or read back) ``page``'s gzipped copy and count it while the page is here."""
        space = page._space + GZIP_SUFFIX  # noqa: SLF001 - pages belong to their cache
        name, serial = page._name, page._serial  # noqa: SLF001
        gzipped = self.pack.get(space, name, serial) if self.pack is not None else None
        if gzipped is None:
            gzipped = compress(page.body)
            if self.pack is not None:
                self.pack.put(space, name, serial, gzipped)
        with self._lock:
            if page._gzipped is None:  # noqa: SLF001
                page._gzipped = gzipped  # noqa: SLF001
                cached = self._pages.get((page._space, name))  # noqa: SLF001
                if cached is not None and cached[1] is page and page._space != INDEX:  # noqa: SLF001
                    self._bytes += len(gzipped)
        return gzipped

    def _keep(self, page: Page) -> None:
        key = (page._space, page._name)  # noqa: SLF001 - pages belong to their cache
        if page.replies is None:
            page.replies = {}
        with self._lock:
            if key[0] == INDEX:  # a few, asked for often, costly to read back: always kept
                self._pages[key] = (page._serial, page)  # noqa: SLF001
                return
            if self._bytes + page.weight > self._max:
                # Cheap bound: forget the older half (dicts keep insertion order).
                for old in list(self._pages)[: len(self._pages) // 2 + 1]:
                    if old[0] == INDEX:
                        continue
                    dropped = self._pages.pop(old, None)
                    if dropped is not None:
                        self._bytes -= dropped[1].weight
            replaced = self._pages.get(key)
            if replaced is not None:
                self._bytes -= replaced[1].weight
            self._pages[key] = (page._serial, page)  # noqa: SLF001
            self._bytes += page.weight
