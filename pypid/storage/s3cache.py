"""This node's bounded read-through copy of a bucket's files: ``<directory>/<relpath>``.

A copy is written to a dot-named temp file beside its place and renamed in, with
the object's mtime (see ``s3client.file_stat``), so "is this copy that version"
is one ``stat``: the same test the server makes of a local root's file. Past
``max_bytes`` the least recently used copies go (a copy being sent stays readable
through its open descriptor).

A copy clients wait for is downloaded once per node (``follow``): into the part file
``.pypid-copy-<name>.part``, which every request for it, in any worker, reads as it
grows (``pypid.growing``); it becomes the copy only once it has all the object's
bytes, and is dropped if the download breaks.
"""

from __future__ import annotations

import contextlib
import fcntl
import logging
import os
import secrets
import threading
import time
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

from pypid.growing import CHUNK, DownloadError, Downloads, Follower, write_all
from pypid.storage.base import FileStat, StorageError
from pypid.storage.incoming import UPLOAD_PREFIX
from pypid.storage.s3client import READ_TIMEOUT

log = logging.getLogger("pypid.storage")

TEMP_PREFIX = ".pypid-copy-"
EVICT_TO = 0.9  # of max_bytes, so that one fill does not evict again at once
PART_SUFFIX = ".part"


class FileCache:
    """Copies of objects; safe to share between processes (each keeps its own tally)."""

    def __init__(self, directory: Path, max_bytes: int) -> None:
        self.directory = directory
        self.max_bytes = max_bytes
        self._lock = threading.Lock()
        self._total: int | None = None  # bytes held, counted on first use
        self.downloads = Downloads("the store", READ_TIMEOUT + 5)

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

    def follow(self, want: FileStat,
               get: Callable[[], tuple[FileStat, Any]]) -> Follower | None:
        """A Follower of the download of ``want`` into its copy, started here (``get()``:
        the object's stat and its body to read, or DownloadError) if no process of this
        node runs one; None when the copy is that version already."""
        final = self.path(want.relpath)
        final.parent.mkdir(parents=True, exist_ok=True)

        def start(fd: int, part: Path) -> None:
            threading.Thread(target=self._download, args=(fd, part, want, get),
                             name=f"s3 copy {final.name}", daemon=True).start()

        return self.downloads.follow(
            final, final.with_name(f"{TEMP_PREFIX}{final.name}{PART_SUFFIX}"),
            lambda: self.holds(want), start)

    def _download(self, fd: int, part: Path, want: FileStat,
                  get: Callable[[], tuple[FileStat, Any]]) -> None:
        def read(body: Any) -> bytes:
            try:
                return body.read(CHUNK)  # type: ignore[no-any-return]
            except Exception as exc:  # noqa: BLE001 - botocore's and urllib3's, by version
                raise DownloadError(f"reading {want.relpath} from the store broke off: "
                                    f"{exc}") from None

        def write(fd: int) -> None:
            got, body = get()
            try:
                if got.identity != want.identity:
                    raise DownloadError(f"{want.relpath} is another version in the store "
                                        "now", 404)
                total = 0
                while chunk := read(body):
                    total += len(chunk)
                    if total > want.size:
                        raise DownloadError(f"{want.relpath} has more than its {want.size} "
                                            "bytes in the store")
                    write_all(fd, chunk)
            finally:
                body.close()
            if total != want.size:
                raise DownloadError(f"{want.relpath}: the store sent {total} of its "
                                    f"{want.size} bytes")
            os.utime(fd, ns=(time.time_ns(), want.mtime_ns))  # as ``stamp``

        def failed(error: DownloadError) -> None:
            log.warning("s3 cache: %s: %s; nothing kept", want.relpath, error)

        self.downloads.download(fd, part, self.path(want.relpath), write,
                                kept=lambda: self._added(want.size), failed=failed)

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
        """Remove the copies and upload spools a killed process left; call before serving
        (a part file a live download holds locked stays)."""
        removed = 0
        for directory, _dirs, names in os.walk(self.directory):
            for name in names:
                path = os.path.join(directory, name)
                if name.startswith((TEMP_PREFIX, UPLOAD_PREFIX)) and not _downloading(path):
                    with contextlib.suppress(OSError):
                        os.unlink(path)
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


def _downloading(path: str) -> bool:
    """Is ``path`` a part file whose download runs (its lock taken)?"""
    if not path.endswith(PART_SUFFIX):
        return False
    try:
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    except OSError:
        return False
    try:
        fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
    except BlockingIOError:
        return True
    finally:
        os.close(fd)
    return False
