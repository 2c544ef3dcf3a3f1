"""Upstream files into the cache: one download however many ask, streamed to all of them
while it is stored, kept only when its sha256 is upstream's.

The rendezvous is the partial file ``.<filename>.part`` beside the cached file, and
the followers read it as it grows (``pypid.growing``, which the S3 backend's copies
share): the part is renamed to the cached file only after the hash matched, so a
bad file never reaches a client whole.

With a shelf (``MirrorStore``: the S3 bucket's shared cache), the download reads the
shelf's copy when there is one, checked the same way, and else upstream, whose
checked file is then put on the shelf for the other nodes.
"""

from __future__ import annotations

import hashlib
import hmac
import logging
import os
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import IO

from pypid.growing import CHUNK, DownloadError, Downloads, Follower, write_all
from pypid.mirror.policy import parse_upload_time
from pypid.mirror.store import MirrorStore
from pypid.mirror.translate import UpstreamFile
from pypid.mirror.upstream import Upstream, UpstreamError

log = logging.getLogger("pypid.mirror")

MAX_UNSIZED_BYTES = 16 * 1024**3  # a file upstream gives no size for


class Fetcher:
    """Starts or joins the download of one upstream file into the cache."""

    def __init__(self, upstream: Upstream, store: MirrorStore,
                 on_stored: Callable[[], None] | None = None) -> None:
        self.upstream = upstream
        self.store = store
        self._on_stored = on_stored  # after each file kept (eviction)
        self.downloads = Downloads("upstream", upstream.timeout + 5, UpstreamError)
        self._bad_shared: set[Path] = set()  # shelf copies that failed their check here

    def follow(self, final: Path, item: UpstreamFile) -> Follower | None:
        """A Follower of ``final``'s download (started here if nobody runs one), or None
        when ``final`` is in the cache already."""
        self.store.make_dir(final.parent)

        def start(fd: int, part: Path) -> None:
            self.store.adopt(part)
            threading.Thread(target=self._download, args=(fd, part, final, item),
                             name=f"mirror {final.name}", daemon=True).start()

        return self.downloads.follow(final, final.with_name(f".{final.name}.part"),
                                     final.exists, start)

    def _download(self, fd: int, part: Path, final: Path, item: UpstreamFile) -> None:
        """Fetch ``item`` into the locked ``part``, then keep it as ``final`` or drop it."""
        shared = None if final in self._bad_shared else self.store.shared_file(final)

        def write(fd: int) -> None:
            if shared is not None:
                self._copy_shared(fd, item, shared, final)
            else:
                self._copy(fd, item)
            uploaded = parse_upload_time(item.upload_time)
            if uploaded is not None:  # Last-Modified: when upstream got it
                os.utime(fd, (time.time(), uploaded))

        def kept() -> None:
            if shared is None:  # upstream's, checked: the other nodes need not fetch it
                self.store.share_file(final, replace=final in self._bad_shared)
                self._bad_shared.discard(final)
            if self._on_stored is not None:
                self._on_stored()

        def failed(error: DownloadError) -> None:
            log.warning("mirror: %s: %s; nothing kept", item.filename, error)

        self.downloads.download(fd, part, final, write, kept=kept, failed=failed)

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
        write_all(fd, chunk)
    if item.size is not None and total != item.size:
        raise UpstreamError(f"{item.filename} has {total} bytes, upstream declared {item.size}")
    if not hmac.compare_digest(digest.hexdigest(), item.sha256):
        raise UpstreamError(f"{item.filename}: sha256 {digest.hexdigest()} is not "
                            f"upstream's {item.sha256}")

