"""Storing an upload so that every worker shows it at once: ``publish``.

The cache row is written before the file is linked into place, so every
worker's watcher applies the file from the row the moment it appears: no
hashing, no settle delay, no window in which another worker says 404 (or sends
the name upstream). If the link fails, the row is removed again.

"Already exists" means another file holds the same release slot (see
``slots``), decided under the storage's publish lock so that two spellings
uploaded at once cannot both win.
"""

from __future__ import annotations

import contextlib
import sqlite3
import time
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Protocol

from pypid.distfile import hash_file
from pypid.index.examine import described
from pypid.index.slots import holders, release_slot, slot_name
from pypid.storage import Incoming, NoSpaceError, StorageError

if TYPE_CHECKING:
    from pypid.cachedb import FileRow
    from pypid.index.model import ReadModel as Index

SQLITE_FULL = 13  # "database or disk is full"
SQLITE_IOERR_SHMSIZE = 4874  # a first connection could not make its -shm file: a full disk
NO_SPACE = (SQLITE_FULL, SQLITE_IOERR_SHMSIZE)


class Gate(Protocol):
    """What decides and records an upload beside the bytes (governance), called under
    the publish lock so that no other upload or removal comes between."""

    def admit(self, filename: str, sha256: str) -> None:
        """Before anything is stored: raise to refuse the upload."""

    def record(self, filename: str, sha256: str, size: int) -> None:
        """Once the file is in place: raise to take it away again (the upload fails)."""


@dataclass(frozen=True, slots=True)
class Published:
    """What ``publish`` did: stored the file, or found its slot held by another file."""

    stored: bool
    size: int = 0
    holder: str | None = None  # not stored: the file name holding the slot
    holder_sha256: str | None = None  # not stored: the holder's sha256 (None: unreadable)


def publish(index: Index, incoming: Incoming, filename: str, *, sha256: str,
            metadata: bytes | None, requires_python: str | None, overwrite: bool,
            upload_time: float | None = None, gate: Gate | None = None) -> Published:
    """Make ``incoming`` the file ``filename`` (``sha256``, read from it already) and show it.

    Without ``overwrite`` a slot already held is never taken (two racing uploads
    cannot both win); the caller compares ``holder_sha256``. With it, the upload
    replaces every file holding the slot. Raises UnsafePathError for a bad name
    (InvalidFilenameError for one that is no distribution), StorageError when the
    bytes cannot be kept. ``gate`` admits and records the upload (its errors pass through).
    """
    root = index.root
    relpath = root.upload_relpath(filename)
    incoming.sync()
    with root.publish_lock():
        if gate is not None:
            gate.admit(filename, sha256)
        # The gate caught the log up: its uploads stand in for a scan of the upload folder.
        held = holders(index, filename, None if gate is None
                       else index.ledger.recorded(release_slot(filename).project))
        if not held or overwrite:
            if held and held[0].rsplit("/", 1)[-1] == filename:
                relpath = held[0]  # replaced where it is (maybe a sub-folder)
            row = described(incoming.stat_as(relpath), sha256, metadata, requires_python,
                            time.time() if upload_time is None else upload_time)
            return _link(index, incoming, row, [p for p in held if p != relpath],
                         overwrite=overwrite, gate=gate, sha256=sha256)
    return Published(False, holder=held[0].rsplit("/", 1)[-1],
                     holder_sha256=_sha256_of(index, held[0]))


def _link(index: Index, incoming: Incoming, row: FileRow, replaced: list[str], *,
          overwrite: bool, gate: Gate | None, sha256: str) -> Published:
    """Under the publish lock: the row, the link, the claim of the release slot (which
    decides between nodes: ``Storage.claim``), the record, then the other spellings go.
    A failed link restores the row it replaced (a file replaced in place keeps its upload
    time); a failed record takes the new file away again, and puts back the bytes of a
    file it replaced in place (kept aside until then)."""
    try:
        old_row = index.cache.get(row.relpath)
    except sqlite3.Error as exc:  # a first connection on a full disk fails here
        raise _cache_error(index, exc) from None
    _put_row(index, row)
    in_place = overwrite and gate is not None and index.root.exists(row.relpath)
    with index.root.keeping(row.relpath) if in_place else contextlib.nullcontext():
        try:
            stat = incoming.publish(row.relpath, overwrite=overwrite)
        except (FileExistsError, StorageError) as exc:
            _restore_row(index, row, old_row)
            if isinstance(exc, StorageError):
                raise
            return Published(False, holder=row.relpath.rsplit("/", 1)[-1],  # copied in by hand
                             holder_sha256=_sha256_of(index, row.relpath))
        if stat.identity != row.identity:
            # A bucket names the version (ETag, time) only once it holds it; its time is
            # the upload time every node reads from it.
            row = replace(row, size=stat.size, mtime_ns=stat.mtime_ns, inode=stat.inode,
                          upload_time=stat.mtime_ns / 1e9)
            _put_row(index, row)
        name = row.relpath.rsplit("/", 1)[-1]
        claim = None if overwrite else slot_name(name)
        try:
            holder = index.root.claim(claim, name) if claim else None
            if holder is None and gate is not None:
                gate.record(name, sha256, stat.size)
        except BaseException:
            if not in_place:  # else the old bytes go back over the new
                with contextlib.suppress(StorageError):
                    index.root.remove(row.relpath)
                    if claim:
                        index.root.unclaim(claim, name)
            with contextlib.suppress(sqlite3.Error):
                _restore_row(index, row, old_row)
            raise
        if holder is not None:  # another spelling was stored in the same instant
            index.root.remove(row.relpath)
            _restore_row(index, row, old_row)
            return Published(False, holder=holder)
    for old in replaced:
        index.root.remove(old)
    with index.lock:
        index.show(stat, row)
        for old in replaced:
            index.hide(old, forget=True)
    return Published(True, size=stat.size)


def _put_row(index: Index, row: FileRow) -> None:
    try:
        index.cache.put([row])
    except sqlite3.Error as exc:  # the cache shares the root's disk
        raise _cache_error(index, exc) from None


def _cache_error(index: Index, exc: sqlite3.Error) -> StorageError:
    if getattr(exc, "sqlite_errorcode", None) in NO_SPACE:
        return NoSpaceError(f"no space left on the disk of {index.cache.directory}")
    return StorageError(f"cannot record the upload in {index.cache.directory}: {exc}")


def _restore_row(index: Index, row: FileRow, old_row: FileRow | None) -> None:
    index.cache.forget([(row.relpath, row.identity)])
    if old_row is not None:
        index.cache.put([old_row])


def _sha256_of(index: Index, relpath: str) -> str | None:
    """The holder's sha256: the index's when it describes the file as it is, else read."""
    entry = index.entry_at(relpath)
    stat = index.root.stat(relpath) if entry is not None else None
    if entry is not None and stat is not None and entry.same_file(stat):
        return entry.sha256
    try:
        with index.root.open(relpath) as handle:
            return hash_file(handle)[0]
    except OSError:
        return None
