"""One download of a file however many ask, streamed to all of them while it is written:
the part file rendezvous the mirror's upstream files and the S3 backend's copies share.

The rendezvous is a part file beside the final file. Whoever takes its exclusive
``flock`` first downloads (in a thread of its own, so a client that leaves does not
stop it); everyone else, in this process or another worker, follows the file as it
grows. The downloader renames the part to the final name only once the download is
checked (same inode: followers read on), or unlinks it; releasing the lock tells
the followers which. A follower never sends the last byte before that: a bad or
short file never reaches a client whole.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import time
from collections.abc import Callable, Iterator
from pathlib import Path

# Bytes per read and per relayed chunk. Each thread relaying a download holds one; chunks
# above glibc's mmap threshold (128 KiB) raise that threshold and then stay behind in the
# per-thread malloc arenas, so a crowd grew a worker by several times more (bench/mirror.py).
CHUNK = 64 * 1024
POLL = 0.005  # seconds between looks at a growing file
FIRST_POLL = 0.0005  # the first looks for its first bytes: upstream on a LAN answers in ~1 ms
MAX_FAILURES = 1000  # remembered reasons of failed downloads, per process


class DownloadError(Exception):
    """A download could not be made; ``status`` is the client's answer (502; 504: a timeout)."""

    def __init__(self, message: str, status: int = 502) -> None:
        super().__init__(message)
        self.status = status


class BrokenDownload(Exception):
    """The download failed after bytes were sent: the client's connection must be cut."""


class Downloads:
    """This process's downloads into part files: who failed and why (by the part's inode)."""

    def __init__(self, source: str, idle_limit: float,
                 error: type[DownloadError] = DownloadError) -> None:
        self.source = source  # "upstream", "the store": named in the errors
        self.idle_limit = idle_limit  # seconds a follower waits for progress
        self.error = error  # the type of the errors it makes (the mirror's: UpstreamError)
        self._failures: dict[int, DownloadError] = {}

    def follow(self, final: Path, part: Path, is_done: Callable[[], bool],
               start: Callable[[int, Path], None]) -> Follower | None:
        """A Follower of ``final``'s download, or None when ``is_done()`` (the file is there).
        Nobody downloading: ``start(fd, part)`` is called with the part opened and locked,
        and must run ``download`` in a thread (which closes ``fd``)."""
        for _ in range(5):  # each round: someone else renamed or removed the part meanwhile
            if is_done():
                return None
            fd = os.open(part, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                return Follower(fd, final, self)
            if not is_path_of(fd, part):
                os.close(fd)
                continue
            if is_done():
                unlink_if(part, fd)
                os.close(fd)
                return None
            os.ftruncate(fd, 0)  # a dead downloader's leftovers
            try:
                reader = os.open(part, os.O_RDONLY | os.O_CLOEXEC)
                start(fd, part)
            except BaseException:
                unlink_if(part, fd)
                os.close(fd)
                raise
            return Follower(reader, final, self)
        raise self.error(f"{final.name}: the cache keeps changing under this download")

    def download(self, fd: int, part: Path, final: Path, write: Callable[[int], None], *,
                 kept: Callable[[], None], failed: Callable[[DownloadError], None]) -> None:
        """In the downloader's thread: ``write(fd)`` fills the part (DownloadError or OSError
        if it cannot), which is then renamed to ``final`` and ``kept()`` called; else the
        part goes and ``failed(error)`` is called. Either before ``fd`` is closed (which
        tells the followers how it ended)."""
        ino = os.fstat(fd).st_ino
        try:
            write(fd)
            os.rename(part, final)
            kept()
        except (DownloadError, OSError) as exc:
            error = exc if isinstance(exc, DownloadError) else self.error(
                f"cannot store {final.name}: {exc.strerror or exc}")
            if len(self._failures) >= MAX_FAILURES:
                self._failures.clear()
            self._failures[ino] = error
            unlink_if(part, fd)
            failed(error)
        finally:
            os.close(fd)  # releases the lock: the followers see how it ended

    def why(self, ino: int) -> DownloadError:
        return self._failures.get(ino) or self.error(f"the download from {self.source} failed")


class Follower:
    """One client's view of a download: the part file opened, read as it grows."""

    def __init__(self, fd: int, final: Path, downloads: Downloads) -> None:
        self._fd = fd
        self._final = final
        self._downloads = downloads
        self._idle_limit = downloads.idle_limit
        self._ino = os.fstat(fd).st_ino

    def first_bytes(self) -> DownloadError | None:
        """Wait until the download has bytes or has ended; its error if it failed first."""
        deadline = time.monotonic() + self._idle_limit
        delay = FIRST_POLL
        while time.monotonic() < deadline:
            done = self._finished()
            if os.fstat(self._fd).st_size > 0 or (done and self._succeeded()):
                return None
            if done:
                return self._why()
            time.sleep(delay)
            delay = min(delay * 1.5, 0.05)
        return self._stalled()

    def whole(self) -> DownloadError | None:
        """Wait for the download's end (closes this follower); its error if it failed."""
        try:
            size, idle_since = -1, time.monotonic()
            while not self._finished():
                grown = os.fstat(self._fd).st_size
                if grown != size:
                    size, idle_since = grown, time.monotonic()
                elif time.monotonic() - idle_since > self._idle_limit:
                    return self._stalled()
                time.sleep(POLL * 4)
            return None if self._succeeded() else self._why()
        finally:
            self.close()

    def chunks(self) -> Iterator[bytes]:
        """The file's bytes as they arrive; BrokenDownload if it turns out bad."""
        fd, pos = self._fd, 0
        try:
            idle_since = time.monotonic()
            while True:
                done = self._finished()
                size = os.fstat(fd).st_size
                if done and not self._succeeded():
                    raise BrokenDownload(str(self._why()))
                end = size if done else size - 1  # the last byte waits for the check
                if pos < end:
                    data = os.pread(fd, min(CHUNK, end - pos), pos)
                    if not data:
                        raise BrokenDownload("the partial file shrank")
                    pos += len(data)
                    idle_since = time.monotonic()
                    yield data
                elif done:
                    return
                elif time.monotonic() - idle_since > self._idle_limit:
                    raise BrokenDownload(str(self._stalled()))
                else:
                    time.sleep(POLL)
        finally:
            self.close()

    def close(self) -> None:
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1

    def _finished(self) -> bool:
        try:
            fcntl.flock(self._fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
        except BlockingIOError:
            return False
        fcntl.flock(self._fd, fcntl.LOCK_UN)
        return True

    def _succeeded(self) -> bool:
        try:
            return os.stat(self._final).st_ino == self._ino
        except OSError:
            return False

    def _why(self) -> DownloadError:
        return self._downloads.why(self._ino)

    def _stalled(self) -> DownloadError:
        return self._downloads.error(f"{self._downloads.source} made no progress in "
                                     f"{self._idle_limit:g}s", 504)


def write_all(fd: int, chunk: bytes | bytearray | memoryview) -> None:
    view = memoryview(chunk)
    while view:
        view = view[os.write(fd, view):]


def is_path_of(fd: int, path: Path) -> bool:
    try:
        return os.stat(path).st_ino == os.fstat(fd).st_ino
    except OSError:
        return False


def unlink_if(path: Path, fd: int) -> None:
    """Remove ``path`` if it is still the file open as ``fd``."""
    if is_path_of(fd, path):
        with contextlib.suppress(OSError):
            os.unlink(path)
