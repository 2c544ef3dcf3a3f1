"""Rendered pages kept as bytes (plain, and gzipped once a client asks) until the index
changes."""

from __future__ import annotations

import gzip
import hashlib
import threading
from collections.abc import Callable, Hashable

MIN_GZIP_BYTES = 1024
MAX_BYTES = 24 * 1024 * 1024  # per worker: pages re-render in microseconds when evicted


class Page:
    """A rendered page; its gzipped copy is made when a client first accepts gzip."""

    __slots__ = ("body", "etag", "_gzipped", "_cache", "_key")

    def __init__(self, body: bytes) -> None:
        self.body = body
        self.etag = hashlib.sha256(body).hexdigest()[:32]
        # None: not made yet; b"": not worth it (small, or gzip does not shrink it)
        self._gzipped: bytes | None = None if len(body) >= MIN_GZIP_BYTES else b""
        self._cache: PageCache | None = None  # counts the gzipped copy when it is made
        self._key: Hashable = None

    @property
    def gzip_etag(self) -> str:
        return self.etag + "-gz"

    @property
    def weight(self) -> int:
        """The memory it holds in a cache: its bytes plus ~400 for its objects (key, etag, ...)."""
        return len(self.body) + len(self._gzipped or b"") + 400

    def gzipped(self) -> bytes | None:
        """The gzipped body, or None when the plain one is as small."""
        gzipped = self._gzipped
        if gzipped is None:
            gzipped = gzip.compress(self.body, 6, mtime=0)
            if len(gzipped) >= len(self.body):
                gzipped = b""
            # Two threads may both compress: the same bytes, no harm.
            if self._cache is not None:
                self._cache.grew(self._key, self, gzipped)
            else:
                self._gzipped = gzipped
        return gzipped or None


def make_page(body: bytes) -> Page:
    return Page(body)


class PageCache:
    """``(key, serial) -> Page``; a new serial for a key replaces the old page.

    Bounded by the bytes it holds: past ``max_bytes`` the older half goes.
    """

    def __init__(self, max_bytes: int = MAX_BYTES) -> None:
        self._pages: dict[Hashable, tuple[int, Page]] = {}
        self._max = max_bytes
        self._bytes = 0
        self._lock = threading.Lock()

    def peek(self, key: Hashable, serial: int) -> Page | None:
        """The cached page for ``key`` if it is still current, else None."""
        cached = self._pages.get(key)
        return cached[1] if cached is not None and cached[0] == serial else None

    def get(self, key: Hashable, serial: int, render: Callable[[], bytes]) -> Page:
        cached = self._pages.get(key)
        if cached is not None and cached[0] == serial:
            return cached[1]
        page = make_page(render())
        page._cache, page._key = self, key  # noqa: SLF001 - the cache counts its bytes
        with self._lock:
            if self._bytes + page.weight > self._max:
                # Cheap bound: forget the older half (dicts keep insertion order).
                for old in list(self._pages)[: len(self._pages) // 2 + 1]:
                    dropped = self._pages.pop(old, None)
                    if dropped is not None:
                        self._bytes -= dropped[1].weight
            replaced = self._pages.get(key)
            if replaced is not None:
                self._bytes -= replaced[1].weight
            self._pages[key] = (serial, page)
            self._bytes += page.weight
        return page

    def grew(self, key: Hashable, page: Page, gzipped: bytes) -> None:
        """``page`` got its gzipped copy: count it while the page is here."""
        with self._lock:
            if page._gzipped is None:  # noqa: SLF001
                page._gzipped = gzipped  # noqa: SLF001
                cached = self._pages.get(key)
                if cached is not None and cached[1] is page:
                    self._bytes += len(gzipped)
