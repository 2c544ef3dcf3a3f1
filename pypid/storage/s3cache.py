"""This node's bounded read-through copy of a bucket's files: ``<directory>/<relpath>``.

A copy is written to a dot-named temp file beside its place and renamed in, with
the object's mtime (see ``s3client.file_stat``), so "is this copy that version"
is one ``stat``: the same test the server makes of a local root's file. Past
``max_bytes`` the least recently used copies go (a copy being sent stays readable
through its open descriptor).
"""

from __future__ import annotations

import contextlib
import logging
import os
import secrets
import threading
import time
from collections.abc import Iterable
from pathlib import Path

from pypid.storage.base import FileStat, StorageError
from pypid.storage.incoming import UPLOAD_PREFIX

log = logging.getLogger("pypid.storage")

TEMP_PREFIX = ".pypid-copy-"
EVICT_TO = 0.9  # of max_bytes, so that one fill does not evict again at once


class FileCache:
    """Copies of objects; safe to share between processes (each keeps its own tally)."""

    def __init__(self, directory: Path, max_bytes: int) -> None:
        self.directory = directory
        self.max_bytes = max_bytes
        self._lock = threading.Lock()
        self._total: int | None = None  # bytes held, counted on first use

    def path(self, relpath: str) -> Path:
        return self.directory.joinpath(*relpath.split("/"))

    def holds(self, stat: FileStat) -> bool:
        """Is the copy of ``stat.relpath`` that version of the object?"""
        try:
            st = os.stat(self.path(stat.relpath))
        except OSError:
            return False
        return st.st_size == stat.size and st.st_mtime_ns == stat.mtime_ns

    def fill(self, stat: FileStat, chunks: Iterable[bytes]) -> Path:
        """Write ``chunks`` (the object ``stat`` describes) as its copy; StorageError on failure."""
        final = self.path(stat.relpath)
        temp = final.with_name(f"{TEMP_PREFIX}{secrets.token_hex(6)}")
        try:
            final.parent.mkdir(parents=True, exist_ok=True)
            with open(temp, "wb") as handle:
                for chunk in chunks:
                    handle.write(chunk)
            self.stamp(temp, stat)
            os.replace(temp, final)
        except OSError as exc:
            with contextlib.suppress(OSError):
                temp.unlink()
            raise StorageError(f"cannot keep a copy in {self.directory}: "
                               f"{exc.strerror or exc}") from None
        self._added(stat.size)
        return final

    @staticmethod
    def stamp(path: Path, stat: FileStat) -> None:
        """Give a copy the object's mtime (and now as its last use)."""
        os.utime(path, ns=(time.time_ns(), stat.mtime_ns))

    def adopt(self, stat: FileStat) -> None:
        """A copy put in place by someone else (an upload's own bytes): count it."""
        self._added(stat.size)

    def drop(self, relpath: str) -> None:
        with contextlib.suppress(FileNotFoundError):
            self.path(relpath).unlink()

    def sweep(self) -> int:
        """Remove the copies and upload spools a killed process left; call before serving."""
        removed = 0
        for directory, _dirs, names in os.walk(self.directory):
            for name in names:
                if name.startswith((TEMP_PREFIX, UPLOAD_PREFIX)):
                    with contextlib.suppress(OSError):
                        os.unlink(os.path.join(directory, name))
                        removed += 1
        return removed

    def _added(self, size: int) -> None:
        with self._lock:
            if self._total is None:
                self._total = sum(size for _path, size, _used in self._copies())
            else:
                self._total += size
            if self._total > self.max_bytes:
                self._total = self._evict()

    def _copies(self) -> list[tuple[str, int, float]]:
        found = []
        for directory, dirs, names in os.walk(self.directory):
            dirs[:] = [d for d in dirs if not d.startswith(".")]
            for name in names:
                if name.startswith("."):
                    continue
                path = os.path.join(directory, name)
                with contextlib.suppress(OSError):
                    st = os.stat(path)
                    found.append((path, st.st_size, st.st_atime))
        return found

    def _evict(self) -> int:
        """Remove the least recently used copies down to EVICT_TO; the bytes left."""
        copies = sorted(self._copies(), key=lambda copy: copy[2])
        total = sum(size for _path, size, _used in copies)
        goal = int(self.max_bytes * EVICT_TO)
        evicted = 0
        for path, size, _used in copies:
            if total <= goal:
                break
            with contextlib.suppress(FileNotFoundError):
                os.unlink(path)
            total -= size
            evicted += 1
        if evicted:
            log.info("s3 cache %s: evicted %d least recently used copies", self.directory,
                     evicted)
        return total
