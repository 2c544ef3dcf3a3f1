"""Upstream files into the cache: one download however many ask, streamed to all of them
while it is stored, kept only when its sha256 is upstream's.

The rendezvous is the partial file ``.<filename>.part`` beside the cached file.
Whoever takes its exclusive ``flock`` first downloads (in a thread of its own,
so a client that leaves does not stop it); everyone else, in this process or
another worker, follows the file as it grows. The downloader renames the part to
the final name only after the hash matched (same inode: followers read on), or
unlinks it; releasing the lock tells the followers which. A follower never
sends the last byte before that: a bad file never reaches a client whole.

With a shelf (``MirrorStore``: the S3 bucket's shared cache), the download reads the
shelf's copy when there is one, checked the same way, and else upstream, whose
checked file is then put on the shelf for the other nodes.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import hashlib
import hmac
import logging
import os
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import IO

from pypid.mirror.policy import parse_upload_time
from pypid.mirror.store import MirrorStore
from pypid.mirror.translate import UpstreamFile
from pypid.mirror.upstream import Upstream, UpstreamError

log = logging.getLogger("pypid.mirror")

# Bytes per read and per relayed chunk. Each thread relaying a download holds one; chunks
# above glibc's mmap threshold (128 KiB) raise that threshold and then stay behind in the
# per-thread malloc arenas, so a crowd grew a worker by several times more (bench/mirror.py).
CHUNK = 64 * 1024
POLL = 0.005  # seconds between looks at a growing file
FIRST_POLL = 0.0005  # the first looks for its first bytes: upstream on a LAN answers in ~1 ms
MAX_UNSIZED_BYTES = 16 * 1024**3  # a file upstream gives no size for


class BrokenDownload(Exception):
    """The download failed after bytes were sent: the client's connection must be cut."""


class Follower:
    """One client's view of a download: the part file opened, read as it grows."""

    def __init__(self, fd: int, final: Path, idle_limit: float,
                 failure: dict[int, UpstreamError]) -> None:
        self._fd = fd
        self._final = final
        self._idle_limit = idle_limit
        self._failure = failure  # inode -> why its download failed (this process's)
        self._ino = os.fstat(fd).st_ino

    def first_bytes(self) -> UpstreamError | None:
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
        return UpstreamError(f"upstream made no progress in {self._idle_limit:g}s", 504)

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
                end = size if done else size - 1  # the last byte waits for the hash
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
                    raise BrokenDownload(f"upstream made no progress in {self._idle_limit:g}s")
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

    def _why(self) -> UpstreamError:
        return self._failure.get(self._ino) or UpstreamError("upstream download failed")


class Fetcher:
    """Starts or joins the download of one upstream file into the cache."""

    def __init__(self, upstream: Upstream, store: MirrorStore,
                 on_stored: Callable[[], None] | None = None) -> None:
        self.upstream = upstream
        self.store = store
        self._on_stored = on_stored  # after each file kept (eviction)
        self._failures: dict[int, UpstreamError] = {}
        self._bad_shared: set[Path] = set()  # shelf copies that failed their check here

    def follow(self, final: Path, item: UpstreamFile) -> Follower | None:
        """A Follower of ``final``'s download (started here if nobody runs one), or None
        when ``final`` is in the cache already."""
        self.store.make_dir(final.parent)
        part = final.with_name(f".{final.name}.part")
        for _ in range(5):  # each round: someone else renamed or removed the part meanwhile
            if final.exists():
                return None
            fd = os.open(part, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                return Follower(fd, final, self.upstream.timeout + 5, self._failures)
            if not _is_path_of(fd, part):
                os.close(fd)
                continue
            if final.exists():
                _unlink_if(part, fd)
                os.close(fd)
                return None
            os.ftruncate(fd, 0)  # a dead downloader's leftovers
            self.store.adopt(part)
            reader = os.open(part, os.O_RDONLY | os.O_CLOEXEC)
            threading.Thread(target=self._download, args=(fd, part, final, item),
                             name=f"mirror {final.name}", daemon=True).start()
            return Follower(reader, final, self.upstream.timeout + 5, self._failures)
        raise UpstreamError(f"{final.name}: the cache keeps changing under this download")

    def _download(self, fd: int, part: Path, final: Path, item: UpstreamFile) -> None:
        """Fetch ``item`` into the locked ``part``, then keep it as ``final`` or drop it."""
        ino = os.fstat(fd).st_ino
        shared = None if final in self._bad_shared else self.store.shared_file(final)
        try:
            if shared is not None:
                self._copy_shared(fd, item, shared, final)
            else:
                self._copy(fd, item)
            uploaded = parse_upload_time(item.upload_time)
            if uploaded is not None:  # Last-Modified: when upstream got it
                os.utime(fd, (time.time(), uploaded))
            os.rename(part, final)
            if shared is None:  # upstream's, checked: the other nodes need not fetch it
                self.store.share_file(final, replace=final in self._bad_shared)
                self._bad_shared.discard(final)
            if self._on_stored is not None:
                self._on_stored()
        except (UpstreamError, OSError) as exc:
            error = exc if isinstance(exc, UpstreamError) else UpstreamError(
                f"cannot store {item.filename}: {os.strerror(exc.errno or errno.EIO)}")
            log.warning("mirror: %s: %s; nothing kept", item.filename, error)
            self._failures[ino] = error
            if len(self._failures) > 1000:
                self._failures.clear()
            _unlink_if(part, fd)
        finally:
            os.close(fd)  # releases the lock: the followers see how it ended

    def _copy(self, fd: int, item: UpstreamFile) -> None:
        fetched = self.upstream.open(item.url)
        response = fetched.response

        def read() -> bytes:
            try:
                return response.read1(CHUNK)  # type: ignore[no-any-return]
            except TimeoutError:
                raise UpstreamError(f"upstream made no progress in "
                                    f"{self.upstream.timeout:g}s", 504) from None
            except OSError as exc:
                raise UpstreamError(f"the download broke off: {exc}") from None

        try:
            if fetched.status != 200:
                raise UpstreamError(f"upstream answered {fetched.status} for {item.filename}")
            _take(fd, item, read)
        finally:
            response.close()

    def _copy_shared(self, fd: int, item: UpstreamFile, body: IO[bytes], final: Path) -> None:
        """The shelf's copy; one that fails (or fails its check) is not asked again here:
        the next request goes upstream (and replaces it on the shelf)."""
        def read() -> bytes:
            try:
                return body.read(CHUNK)
            except Exception as exc:  # noqa: BLE001 - botocore's and urllib3's, by version
                raise UpstreamError(f"reading the bucket's copy broke off: {exc}") from None

        try:
            _take(fd, item, read)
        except UpstreamError as exc:
            log.warning("mirror: the bucket's copy of %s: %s", item.filename, exc)
            self._bad_shared.add(final)
            raise
        finally:
            body.close()


def _take(fd: int, item: UpstreamFile, read: Callable[[], bytes]) -> None:
    """Write ``read``'s chunks to ``fd``; UpstreamError unless they are ``item`` (its
    declared size, its sha256)."""
    limit = item.size if item.size is not None else MAX_UNSIZED_BYTES
    digest, total = hashlib.sha256(), 0
    while chunk := read():
        total += len(chunk)
        if total > limit:
            raise UpstreamError(f"{item.filename} is larger than its declared size "
                                f"({limit} bytes): refused")
        digest.update(chunk)
        view = memoryview(chunk)
        while view:
            view = view[os.write(fd, view):]
    if item.size is not None and total != item.size:
        raise UpstreamError(f"{item.filename} has {total} bytes, upstream declared {item.size}")
    if not hmac.compare_digest(digest.hexdigest(), item.sha256):
        raise UpstreamError(f"{item.filename}: sha256 {digest.hexdigest()} is not "
                            f"upstream's {item.sha256}")


def _is_path_of(fd: int, path: Path) -> bool:
    try:
        return os.stat(path).st_ino == os.fstat(fd).st_ino
    except OSError:
        return False


def _unlink_if(path: Path, fd: int) -> None:
    """Remove ``path`` if it is still the file open as ``fd``."""
    if _is_path_of(fd, path):
        with contextlib.suppress(OSError):
            os.unlink(path)
