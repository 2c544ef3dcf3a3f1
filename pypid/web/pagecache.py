"""Rendered pages kept as bytes (plain and gzipped) until the index changes."""

from __future__ import annotations

import gzip
import hashlib
import threading
from collections.abc import Callable, Hashable
from dataclasses import dataclass

MIN_GZIP_BYTES = 1024
MAX_ENTRIES = 20_000


@dataclass(frozen=True, slots=True)
class Page:
    body: bytes
    etag: str
    gzipped: bytes | None

    @property
    def gzip_etag(self) -> str:
        return self.etag + "-gz"


def make_page(body: bytes) -> Page:
    etag = hashlib.sha256(body).hexdigest()[:32]
    gzipped = gzip.compress(body, 6, mtime=0) if len(body) >= MIN_GZIP_BYTES else None
    if gzipped is not None and len(gzipped) >= len(body):
        gzipped = None
    return Page(body, etag, gzipped)


class PageCache:
    """``(key, serial) -> Page``; a new serial for a key replaces the old page."""

    def __init__(self, max_entries: int = MAX_ENTRIES) -> None:
        self._pages: dict[Hashable, tuple[int, Page]] = {}
        self._max = max_entries
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
        with self._lock:
            if len(self._pages) >= self._max:
                # Cheap bound: forget the older half (dicts keep insertion order).
                for old in list(self._pages)[: self._max // 2]:
                    self._pages.pop(old, None)
            self._pages[key] = (serial, page)
        return page
