"""An upload being received into the package root's file system: ``IncomingFile``, and
the durable-write helpers the local backend shares with it."""

from __future__ import annotations

import contextlib
import errno
import hashlib
import os
import secrets
from pathlib import Path
from typing import IO

from pypid.storage.base import FileStat, NoSpaceError, StorageError, TooLargeError

UPLOAD_PREFIX = ".pypid-upload-"  # named temp files (only where O_TMPFILE is missing)
FILE_MODE = 0o644


class Digests:
    """md5, sha256 and blake2b-256 of a stream, fed chunk by chunk."""

    def __init__(self) -> None:
        self._hashes = {
            "md5": hashlib.md5(usedforsecurity=False),
            "sha256": hashlib.sha256(),
            "blake2_256": hashlib.blake2b(digest_size=32),
        }
        self.size = 0

    def update(self, chunk: bytes) -> None:
        for digest in self._hashes.values():
            digest.update(chunk)
        self.size += len(chunk)

    def hexdigest(self, name: str) -> str:
        return self._hashes[name].hexdigest()


class IncomingFile:
    """An upload being received: hashed and size-checked as it is written.

    It lives in the root's file system as an unnamed ``O_TMPFILE`` (a killed
    worker leaves nothing behind) or, where that is unsupported, as a dot-file
    that ``sweep_temp_files`` removes at the next start. ``publish`` links it
    into place (no overwrite: two racing uploads cannot both win) or renames it
    over the old file (overwrite). It has the file-object methods Werkzeug's
    form parser needs.
    """

    def __init__(self, directory: Path, max_bytes: int) -> None:
        self.directory = directory
        self.max_bytes = max_bytes
        self.digests = Digests()
        self.name: str | None = None  # set for a named temp file only
        try:
            self._fd = os.open(directory, os.O_TMPFILE | os.O_RDWR | os.O_CLOEXEC, 0o600)
        except (AttributeError, OSError) as exc:
            if isinstance(exc, OSError) and exc.errno not in (errno.EOPNOTSUPP, errno.EISDIR,
                                                              errno.EINVAL, errno.ENOENT):
                raise storage_error(exc, directory) from None
            self.name = str(directory / f"{UPLOAD_PREFIX}{secrets.token_hex(8)}")
            try:
                self._fd = os.open(self.name, os.O_CREAT | os.O_EXCL | os.O_RDWR | os.O_CLOEXEC,
                                   0o600)
            except OSError as exc2:
                raise storage_error(exc2, directory) from None
        self._pos = 0
        self._synced = False
        self.published = False

    @property
    def size(self) -> int:
        return self.digests.size

    # -- what Werkzeug's multipart parser calls

    def write(self, data: bytes) -> int:
        if self.digests.size + len(data) > self.max_bytes:
            raise TooLargeError(f"the file is larger than {self.max_bytes // (1024 * 1024)} MiB")
        self.digests.update(data)
        view = memoryview(data)
        try:
            while view:
                written = os.pwrite(self._fd, view, self._pos)
                self._pos += written
                view = view[written:]
        except OSError as exc:
            raise storage_error(exc, self.directory) from None
        return len(data)

    def seek(self, offset: int, whence: int = 0) -> int:
        self._pos = os.lseek(self._fd, offset, whence)
        return self._pos

    def tell(self) -> int:
        return self._pos

    def read(self, size: int = -1) -> bytes:
        if size < 0:
            size = max(self.digests.size - self._pos, 0)
        data = os.pread(self._fd, size, self._pos)
        self._pos += len(data)
        return data

    def flush(self) -> None:
        pass

    def readable(self) -> bool:
        return True

    def writable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def fileno(self) -> int:
        return self._fd

    @property
    def closed(self) -> bool:
        return self._fd < 0

    def close(self) -> None:
        """Werkzeug closes part streams after parsing; the data stays until ``discard``."""

    # -- what pypid calls

    def stat_as(self, relpath: str) -> FileStat:
        """The stat ``relpath`` will have once published (a link or rename keeps it)."""
        return FileStat.of(relpath, os.fstat(self._fd))

    def reopen(self) -> IO[bytes]:
        """An independent reader of the received bytes (own offset), for validation."""
        if self.name is not None:
            return open(self.name, "rb")  # noqa: SIM115 - the caller closes it
        return open(f"/proc/self/fd/{self._fd}", "rb")  # noqa: SIM115

    def sync(self) -> None:
        """Make the received bytes durable (before any lock is taken: this is the slow part)."""
        if not self._synced:
            try:
                os.fchmod(self._fd, FILE_MODE)
                os.fsync(self._fd)
            except OSError as exc:
                raise storage_error(exc, self.directory) from None
            self._synced = True

    def publish(self, relpath: str, *, overwrite: bool) -> FileStat:
        """Make the received bytes ``relpath`` (below the root), durably and atomically.

        Raise FileExistsError when it exists and ``overwrite`` is off.
        """
        self.sync()
        final = self.directory / relpath
        dir_fd = -1
        staged: str | None = None  # a link of ours to remove if the rename fails
        try:
            dir_fd = os.open(final.parent, os.O_RDONLY | os.O_DIRECTORY)
            source = self.name or f"/proc/self/fd/{self._fd}"
            if overwrite:
                if self.name is None:  # an unnamed file needs a name to be renamed
                    staged = f"{UPLOAD_PREFIX}{secrets.token_hex(8)}"
                    _link(source, staged, dir_fd)
                    source = str(final.parent / staged)
                os.replace(source, final)
                staged = None
            else:
                _link(source, final.name, dir_fd)  # fails, atomically, when final exists
                if self.name is not None:
                    os.unlink(self.name)
            self.name = None
            self.published = True
            os.fsync(dir_fd)
            st = os.fstat(self._fd)
        except FileExistsError:
            raise
        except OSError as exc:
            raise storage_error(exc, final.parent) from None
        finally:
            if staged is not None:
                with contextlib.suppress(OSError):
                    os.unlink(staged, dir_fd=dir_fd)
            if dir_fd >= 0:
                os.close(dir_fd)
        return FileStat.of(relpath, st)

    def discard(self) -> None:
        """Close and, unless published, remove the received bytes."""
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1
        if self.name is not None and not self.published:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(self.name)
            self.name = None


def _link(source: str, name: str, dir_fd: int) -> None:
    """linkat(AT_SYMLINK_FOLLOW): a dir fd makes Python call linkat, which can follow
    /proc/self/fd/N to an O_TMPFILE inode (plain link() would not)."""
    os.link(source, name, dst_dir_fd=dir_fd, follow_symlinks=True)


def fsync_dir(directory: Path) -> None:
    fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def storage_error(exc: OSError, directory: Path) -> StorageError:
    if exc.errno in (errno.ENOSPC, errno.EDQUOT):
        return NoSpaceError(f"no space left on the disk of {directory}")
    if exc.errno in (errno.EACCES, errno.EPERM, errno.EROFS):
        return StorageError(f"cannot write to {directory}: {exc.strerror}")
    return StorageError(f"cannot store the file in {directory}: {exc.strerror or exc}")

