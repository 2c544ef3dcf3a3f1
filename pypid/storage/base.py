"""What every storage backend offers the index: file listings, identities, safe paths, uploads.

The local directory (``local.PackageRoot``) is the first backend; another
(an S3 bucket) implements the same ``Storage`` protocol.
"""

from __future__ import annotations

import errno
import os
import stat as stat_module
from collections.abc import Callable, Iterable, Iterator
from contextlib import AbstractContextManager
from dataclasses import dataclass
from pathlib import Path
from typing import IO, TYPE_CHECKING, NamedTuple, Protocol

if TYPE_CHECKING:
    from pypid.events import AuditLog
    from pypid.growing import Follower

CACHE_DIRNAME = ".pypid"


class StorageError(Exception):
    """A problem with the package root that the operator must fix."""


class UnsafePathError(StorageError, ValueError):
    """A relative path that would leave the root or name a hidden file."""


class TooLargeError(StorageError):
    """An incoming file passed its size limit."""


class NoSpaceError(StorageError):
    """The package root's file system is full."""


class UnavailableError(StorageError):
    """The store cannot be reached now (a bucket down or overloaded): try again later."""


class FileIdentity(NamedTuple):
    """One version of a file's content: a change in any field means "read it again".

    A link or rename keeps all three, so an upload's identity is known before
    it is published.
    """

    size: int
    mtime_ns: int
    inode: int

    @classmethod
    def of(cls, st: os.stat_result) -> FileIdentity:
        return cls(st.st_size, st.st_mtime_ns, st.st_ino)


@dataclass(frozen=True, slots=True)
class FileStat:
    """A listed file and the identity of its current content."""

    relpath: str
    size: int
    mtime_ns: int
    inode: int

    @property
    def identity(self) -> FileIdentity:
        return FileIdentity(self.size, self.mtime_ns, self.inode)

    @classmethod
    def of(cls, relpath: str, st: os.stat_result) -> FileStat:
        return cls(relpath, *FileIdentity.of(st))


class Incoming(Protocol):
    """An upload being received (see ``local.IncomingFile``)."""

    def stat_as(self, relpath: str) -> FileStat: ...

    def sync(self) -> None: ...

    def publish(self, relpath: str, *, overwrite: bool) -> FileStat: ...


class Shelf(Protocol):
    """A store shared by every node for the mirror's cache (``s3shelf.BucketShelf``):
    objects by the relative path they have below ``upstream.cache_root``."""

    def open(self, relpath: str) -> IO[bytes] | None: ...

    def read(self, relpath: str) -> bytes | None: ...

    def put_bytes(self, relpath: str, data: bytes, *, replace: bool) -> None: ...

    def put_file(self, relpath: str, path: Path, *, replace: bool = False) -> None: ...


class Storage(Protocol):
    """Where the distribution files live. Relative paths use '/' and never start with '.'."""

    is_remote: bool
    """False: the files are in ``path`` (a directory watched for changes). True: they are
    elsewhere (a bucket); ``local_copy`` brings one to ``path``, changes come by the log."""

    @property
    def path(self) -> Path:
        """A local directory standing for the root (logs, the cache folder's parent)."""
        ...

    @property
    def cache_dir(self) -> Path:
        """This node's folder for rebuildable caches."""
        ...

    @property
    def where(self) -> str:
        """Where the files are, for messages (a folder, or s3://bucket/prefix)."""
        ...

    def event_log(self) -> AuditLog:
        """The audit/event log that belongs with these files."""
        ...

    def local_copy(self, relpath: str, identity: FileIdentity) -> bool:
        """Make ``<path>/<relpath>`` hold that version of the file, if it can (it may
        download: call it where blocking is allowed). A local root has nothing to fetch."""
        ...

    def follow(self, relpath: str, identity: FileIdentity) -> Follower | None:
        """The download of that version to ``<path>/<relpath>``, to send as it arrives
        (started here or joined); None when there is nothing to download. DownloadError
        when it cannot be started."""
        ...

    def check_readable(self) -> str | None:
        """None when the files can be listed, else a one-line reason."""
        ...

    def last_problem(self) -> str | None:
        """``check_readable`` as this node's processes last found it, asking nothing
        remote (for the master, which serves no request)."""
        ...

    def iter_files(self, subdir: str = "") -> Iterator[FileStat]:
        """Every distribution file below ``subdir`` ('' for all)."""
        ...

    def stat(self, relpath: str) -> FileStat | None:
        """One listed file now, or None if it is gone or not listable."""
        ...

    def directories(self) -> Iterator[str]:
        """Every folder that may hold files, relative ('' is the root)."""
        ...

    def resolve(self, relpath: str) -> Path:
        """A local path holding ``relpath``'s bytes; UnsafePathError for a path outside."""
        ...

    def open(self, relpath: str) -> IO[bytes]:
        """Read one file's bytes."""
        ...

    def read_start(self, relpath: str, limit: int,
                   on_cold: Callable[[], None] | None = None) -> bytes:
        """Up to ``limit`` bytes from the start of one file (``read_start_of``; ``on_cold``
        is called before it waits for a disk)."""
        ...

    def fetch_ahead(self, relpaths: Iterable[str]) -> None:
        """Have these files read into memory in the background, for reads soon after
        (``fetch_ahead_of``); a no-op where the files are not on a local disk."""
        ...

    def mirror_shelf(self) -> Shelf | None:
        """Where the mirror shares what it fetched with the other nodes (None: nowhere)."""
        ...

    def upload_time(self, stat: FileStat) -> float:
        """When the file was uploaded (epoch seconds), asked after ``open``: its mtime, or a
        bucket object's LastModified unless an import stated another."""
        ...

    def upload_relpath(self, filename: str) -> str:
        """Where a new upload named ``filename`` goes; UnsafePathError for a bad name."""
        ...

    def exists(self, relpath: str) -> bool:
        """Is anything at ``relpath`` (even what ``stat`` would not list)?"""
        ...

    def incoming(self, max_bytes: int) -> Incoming:
        """A new, empty file to receive an upload into."""
        ...

    def upload_neighbours(self, filename: str, keep: Callable[[str], bool]) -> list[str]:
        """Relative paths of the visible files, in the folder an upload named ``filename``
        goes to, whose names ``keep`` accepts."""
        ...

    def claim(self, slot: str, filename: str) -> str | None:
        """After ``filename`` was stored: make it the one file of release ``slot`` (a text
        every spelling shares) across nodes. None when it is, else the file that holds
        the slot (the caller removes ``filename``). A local root: None (its publish lock
        already excludes every other writer)."""
        ...

    def unclaim(self, slot: str, filename: str) -> None:
        """``filename``'s upload failed after its claim, or the file was removed: free the
        slot again (only if the claim names it and it is not stored)."""
        ...

    def publish_lock(self) -> AbstractContextManager[None]:
        """Held by one upload at a time, in every process: a check and a publish in it
        cannot be interleaved with another's."""
        ...

    def remove(self, relpath: str) -> None:
        """Delete one file durably; a file already gone is no error."""
        ...

    def removing(self, relpath: str) -> AbstractContextManager[None]:
        """Remove one file unless the block raises (then it is back as it was)."""
        ...

    def keeping(self, relpath: str) -> AbstractContextManager[None]:
        """Keep one file's bytes while the block replaces it: if the block raises, they
        are back under its name; the name is never missing meanwhile."""
        ...

    def sweep_temp_files(self, was_removed: Callable[[str], bool] | None = None) -> int:
        """Clear what a killed process left (before serving); the temp files removed."""
        ...

    def clear_abandoned(self) -> int:
        """While serving, now and then: clear what other nodes, killed, left in a shared
        store (a bucket's unfinished multipart uploads); a local root has none: 0."""
        ...


# Linux's "only what is in memory" read flag (0: none here, or the file system said no).
_nowait = [getattr(os, "RWF_NOWAIT", 0) if hasattr(os, "preadv") else 0]
PROBE_BELOW = 1024 * 1024  # a bigger file is read as it comes: its own read-ahead serves it


def read_start_of(path: str, limit: int, on_cold: Callable[[], None] | None = None) -> bytes:
    """Up to ``limit`` bytes from the start of the file at ``path``: a first start reads
    every small file whole this way (no file object, and on a local disk one ``read``
    instead of two: ~3 us a file instead of ~7-11). A short read (a network file
    system's) is read on until ``limit - 1`` bytes or the end.

    ``on_cold``: called once, before waiting for the disk, when the file's bytes are not
    all in memory already (the caller then has the next files fetched: ``fetch_ahead_of``).
    Finding out takes no more system calls: the read itself takes only what memory
    holds (``RWF_NOWAIT``; into a buffer, then copied: ~0.9 us a file more), and the rest
    is read on after the call.
    """
    fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    try:
        data = None
        if on_cold is not None and _nowait[0] and limit <= PROBE_BELOW:
            data = _read_in_memory(fd, limit)
            if (data is None or len(data) < limit - 1) and _nowait[0]:
                on_cold()  # none or part of it in memory (or a file shorter than asked)
        if data is None:
            data = os.read(fd, limit)
        if 0 < len(data) < limit - 1:
            parts = [data]
            got = len(data)
            while got < limit - 1:
                more = os.read(fd, limit - got)
                if not more:
                    break
                parts.append(more)
                got += len(more)
            data = b"".join(parts)
        return data
    finally:
        os.close(fd)


def _read_in_memory(fd: int, limit: int) -> bytes | None:
    """What of the file's first ``limit`` bytes memory holds, read at the file's offset
    (which moves on as a ``read`` would); None: none of them. Where the file system cannot
    say, a plain read (and plain reads from then on)."""
    buffer = bytearray(limit)
    try:
        got = os.preadv(fd, [buffer], -1, _nowait[0])  # -1: at the file's own offset
    except BlockingIOError:
        return None
    except OSError as exc:
        if exc.errno not in (errno.EOPNOTSUPP, errno.EINVAL, errno.ENOSYS):
            raise
        if stat_module.S_ISREG(os.fstat(fd).st_mode):  # not only an odd file (a FIFO)
            _nowait[0] = 0
        return os.read(fd, limit)
    return bytes(memoryview(buffer)[:got])


def fetch_ahead_of(paths: Iterable[str]) -> None:
    """Ask the kernel to read these files into memory in the background. A disk (a
    virtual one most of all) serves many requests at once far faster than one after
    another: on a cold cache 54,307 small files took 2.3 s to read one at a time in two
    processes, 0.8 s with each process asking 64 ahead (bench/README). Best effort: a
    file that cannot be opened is skipped (its own read will say why)."""
    if not hasattr(os, "posix_fadvise"):
        return
    for path in paths:
        try:
            fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC | os.O_NONBLOCK)  # a FIFO: no wait
        except OSError:
            continue
        try:
            os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_WILLNEED)
        except OSError:
            pass
        finally:
            os.close(fd)
