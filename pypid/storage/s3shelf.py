"""The mirror's shared cache in a bucket: what ``upstream.mode = "cache"`` fetched (pages'
records, files, wheels' METADATA), under ``<prefix>.pypid/mirror/<relpath>``, where
``relpath`` is the same as below a node's ``cache_root``.

A tier between a node's own cache and upstream: a file one node fetched is served by
every other node without a second upstream download, and survives a node's cache
being wiped. Files and metadata are created conditionally (``If-None-Match: *``: the
first node's bytes stay; the caller checked their sha256 before sharing them, and a
reader checks them again). Page records are replaced, the last revalidation wins.
A store that fails is a cache miss (logged), never an error: upstream is still there.
"""

from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import IO, Any

from pypid.storage.s3client import (
    BucketPlace,
    Clients,
    client_errors,
    is_missing,
    is_taken,
    reason,
)

log = logging.getLogger("pypid.mirror")

SHELF_DIR = ".pypid/mirror/"
WARN_EVERY = 60.0  # seconds between warnings that the store failed


class BucketShelf:
    """The mirror's objects in one bucket place."""

    def __init__(self, clients: Clients, place: BucketPlace) -> None:
        self.clients = clients
        self.place = place
        self._warned_at = float("-inf")

    def _key(self, relpath: str) -> str:
        return f"{self.place.top}{SHELF_DIR}{relpath}"

    def open(self, relpath: str) -> IO[bytes] | None:
        """The object's body to read (the caller closes it), or None when it is not there."""
        try:
            answer = self.clients.plain().get_object(Bucket=self.place.bucket,
                                                     Key=self._key(relpath))
        except client_errors() as exc:
            self._failed(exc, f"read {relpath}")
            return None
        body: IO[bytes] = answer["Body"]
        return body

    def read(self, relpath: str) -> bytes | None:
        """A small object's bytes, or None."""
        body = self.open(relpath)
        if body is None:
            return None
        try:
            with body:
                return body.read()
        except client_errors() as exc:
            self._failed(exc, f"read {relpath}")
            return None

    def put_bytes(self, relpath: str, data: bytes, *, replace: bool) -> None:
        """Store ``data``; without ``replace`` an object already there stays."""
        self._put(relpath, {"Body": data, "ContentLength": len(data)}, replace=replace)

    def put_file(self, relpath: str, path: Path, *, replace: bool = False) -> None:
        """Store the file at ``path``; without ``replace`` an object already there stays."""
        try:
            with open(path, "rb") as handle:
                size = handle.seek(0, 2)
                handle.seek(0)
                self._put(relpath, {"Body": handle, "ContentLength": size}, replace=replace)
        except OSError as exc:
            log.warning("mirror: cannot share %s in the bucket: %s", relpath, exc)

    def _put(self, relpath: str, body: dict[str, Any], *, replace: bool) -> None:
        client = self.clients.plain() if replace else self.clients.create_only()
        try:
            client.put_object(Bucket=self.place.bucket, Key=self._key(relpath),
                              ContentType="application/octet-stream", **body)
        except client_errors() as exc:
            if not is_taken(exc):
                self._failed(exc, f"share {relpath}")

    def _failed(self, exc: BaseException, doing: str) -> None:
        if is_missing(exc):
            return
        now = time.monotonic()
        if now - self._warned_at > WARN_EVERY:
            self._warned_at = now
            log.warning("mirror: %s: cannot %s in the bucket (%s); using this node's cache "
                        "and upstream", self.place.describe(), doing, reason(exc))
