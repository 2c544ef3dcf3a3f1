"""Storing an upload so that every worker shows it at once: ``publish``.

The cache row is written before the file is linked into place, so every
worker's watcher applies the file from the row the moment it appears: no
hashing, no settle delay, no window in which another worker says 404 (or sends
the name upstream). If the link fails, the row is removed again.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import TYPE_CHECKING

from pypid.distfile import hash_file
from pypid.index.examine import described
from pypid.storage import Incoming, StorageError

if TYPE_CHECKING:
    from pypid.index.model import ReadModel as Index


@dataclass(frozen=True, slots=True)
class Published:
    """What ``publish`` did: stored the file, or found its name held by a file."""

    stored: bool
    size: int = 0
    holder_sha256: str | None = None  # not stored: the holder's sha256 (None: unreadable)


def publish(index: Index, incoming: Incoming, filename: str, *, sha256: str,
            metadata: bytes | None, requires_python: str | None, overwrite: bool,
            upload_time: float | None = None) -> Published:
    """Make ``incoming`` the file ``filename`` (``sha256``, read from it already) and show it.

    Without ``overwrite`` a name already taken is never replaced (two racing
    uploads cannot both win); the caller compares ``holder_sha256``. Raises
    UnsafePathError for a bad name, StorageError when the bytes cannot be kept.
    """
    root = index.root
    existing = index.file(filename)
    if existing is not None and not overwrite:
        return Published(False, holder_sha256=existing.sha256)
    relpath = existing.relpath if existing is not None else root.upload_relpath(filename)
    if not overwrite and root.exists(relpath):  # not indexed yet (copied in a moment ago)
        return Published(False, holder_sha256=_sha256_of(index, relpath))
    row = described(incoming.stat_as(relpath), sha256, metadata, requires_python,
                    time.time() if upload_time is None else upload_time)
    index.cache.put([row])
    try:
        stat = incoming.publish(relpath, overwrite=overwrite)
    except FileExistsError:  # a racing upload won
        index.cache.forget([(row.relpath, row.identity)])
        return Published(False, holder_sha256=_sha256_of(index, relpath))
    except StorageError:
        index.cache.forget([(row.relpath, row.identity)])
        raise
    with index.lock:
        index.show(stat, row)
    return Published(True, size=stat.size)


def _sha256_of(index: Index, relpath: str) -> str | None:
    try:
        with index.root.open(relpath) as handle:
            return hash_file(handle)[0]
    except OSError:
        return None
