"""Rendered pages kept as bytes (plain and gzipped) until the index changes."""

from __future__ import annotations

import gzip
import hashlib
import threading
from collections.abc import Callable, Hashable
from dataclasses import dataclass

MIN_GZIP_BYTES = 1024
MAX_BYTES = 24 * 1024 * 1024  # per worker: pages re-render in microseconds when evicted


@dataclass(frozen=True, slots=True)
class Page:
    body: bytes
    etag: str
    gzipped: bytes | None

    @property
    def gzip_etag(self) -> str:
        return self.etag + "-gz"

    @property
    def weight(self) -> int:
        """Roughly the memory it holds."""
        return len(self.body) + len(self.gzipped or b"") + 200


def make_page(body: bytes) -> Page:
    etag = hashlib.sha256(body).hexdigest()[:32]
    gzipped = gzip.compress(body, 6, mtime=0) if len(body) >= MIN_GZIP_BYTES else None
    if gzipped is not None and len(gzipped) >= len(body):
        gzipped = None
    return Page(body, etag, gzipped)


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
