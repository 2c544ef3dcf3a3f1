"""The local backend: the package root is a directory on disk.

Lists distribution files, resolves paths safely and receives uploads. Knows
nothing of HTTP or of the index built on top of it.
"""

from __future__ import annotations

import contextlib
import fcntl
import logging
import os
import stat as stat_module
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import IO

from pypid.distfile import has_dist_suffix, is_safe_filename, is_temp_name
from pypid.events import EventLog
from pypid.storage.base import (
    CACHE_DIRNAME,
    FileIdentity,
    FileStat,
    Shelf,
    StorageError,
    UnsafePathError,
    fetch_ahead_of,
    read_start_of,
)
from pypid.storage.incoming import UPLOAD_PREFIX, IncomingFile, fsync_dir, storage_error

log = logging.getLogger("pypid.storage")

ASIDE_PREFIX = ".pypid-removing-"  # a file being removed, until its audit line is written


class PackageRoot:
    """A directory of wheels and sdists, possibly in sub-folders.

    Dot-files, dot-folders (including pypid's own cache folder) and files that
    look like a copy in progress are never listed.
    """

    is_remote = False

    def __init__(self, root: Path) -> None:
        self.path = Path(root).absolute()
        self.where = str(self.path)  # for messages

    @property
    def cache_dir(self) -> Path:
        return self.path / CACHE_DIRNAME

    def event_log(self) -> EventLog:
        return EventLog(self.cache_dir)

    def local_copy(self, relpath: str, identity: FileIdentity) -> bool:  # noqa: ARG002
        return False  # the file is here or not: nothing to fetch

    def follow(self, relpath: str, identity: FileIdentity) -> None:  # noqa: ARG002
        return None  # nothing to download

    def last_problem(self) -> str | None:
        """A directory is asked at once: ``check_readable``."""
        return self.check_readable()

    def check_readable(self) -> str | None:
        """None when the root can be listed, else a one-line reason."""
        try:
            with os.scandir(self.path):
                pass
        except FileNotFoundError:
            return f"package root {self.path} does not exist"
        except NotADirectoryError:
            return f"package root {self.path} is not a directory"
        except PermissionError:
            return f"package root {self.path}: permission denied"
        except OSError as exc:
            return f"package root {self.path}: {exc.strerror or exc}"
        return None

    def iter_files(self, subdir: str = "") -> Iterator[FileStat]:
        """Every distribution file below ``subdir`` (relative, '' for all), with its stat.

        Plain strings, not pathlib: this walks 100,000 files at every start.
        """
        base = str(self.path)
        cut = len(base) + 1
        stack = [os.path.join(base, subdir) if subdir else base]
        while stack:
            directory = stack.pop()
            try:
                entries = os.scandir(directory)
            except (FileNotFoundError, NotADirectoryError):
                continue
            except OSError:
                if directory == base:
                    raise
                continue
            with entries:
                for entry in entries:
                    name = entry.name
                    if name[0] == ".":
                        continue
                    try:
                        if entry.is_dir(follow_symlinks=False):
                            stack.append(entry.path)
                        elif not is_temp_name(name) and has_dist_suffix(name):
                            found = self._stat_entry(entry, cut)
                            if found is not None:
                                yield found
                    except OSError:
                        continue

    def _stat_entry(self, entry: os.DirEntry[str], cut: int) -> FileStat | None:
        if entry.is_symlink() and not self._inside(Path(entry.path).resolve()):
            return None  # a link pointing out of the root is never served
        st = entry.stat()
        if not stat_module.S_ISREG(st.st_mode):
            return None
        return FileStat(entry.path[cut:], st.st_size, st.st_mtime_ns, st.st_ino)  # .of, inlined

    def stat(self, relpath: str) -> FileStat | None:
        """The current stat of one listed file, or None if it is gone or not listable."""
        path = self.resolve(relpath)
        if any(part.startswith(".") for part in Path(relpath).parts):
            return None
        name = path.name
        if is_temp_name(name) or not has_dist_suffix(name):
            return None
        try:
            if path.is_symlink() and not self._inside(path.resolve()):
                return None
            st = path.stat()
        except OSError:
            return None
        if not path.is_file():
            return None
        return FileStat.of(relpath, st)

    def resolve(self, relpath: str) -> Path:
        """The absolute path of ``relpath`` inside the root; raise UnsafePathError otherwise."""
        return self.path.joinpath(*self._parts(relpath))

    def _parts(self, relpath: str) -> list[str]:
        if not relpath or "\x00" in relpath or "\\" in relpath or relpath.startswith("/"):
            raise UnsafePathError(f"unsafe path {relpath!r}")
        parts = relpath.split("/")
        if any(part in ("", ".", "..") for part in parts):
            raise UnsafePathError(f"unsafe path {relpath!r}")
        return parts

    def directories(self) -> Iterator[str]:
        """Every visible directory below the root, as a relative path ('' is the root)."""
        yield ""
        base = str(self.path)
        cut = len(base) + 1
        stack = [base]
        while stack:
            directory = stack.pop()
            try:
                # Only the folders are kept: a list of every entry of a flat root (100,000
                # files) would fill the heap pages a worker shares with the master, un-sharing
                # them (each worker walks this at its start).
                with os.scandir(directory) as entries:
                    found = [entry.path for entry in entries if not entry.name.startswith(".")
                             and entry.is_dir(follow_symlinks=False)]
            except OSError:
                continue
            for path in found:
                stack.append(path)
                yield path[cut:]

    def open(self, relpath: str) -> IO[bytes]:
        # A string, not resolve's Path: a first start opens every file of the root.
        self._parts(relpath)
        return open(f"{self.where}/{relpath}", "rb")  # noqa: SIM115 - the caller closes it

    def read_start(self, relpath: str, limit: int,
                   on_cold: Callable[[], None] | None = None) -> bytes:
        self._parts(relpath)
        return read_start_of(f"{self.where}/{relpath}", limit, on_cold)

    def fetch_ahead(self, relpaths: Iterable[str]) -> None:
        fetch_ahead_of(f"{self.where}/{relpath}" for relpath in relpaths
                       if self._is_safe(relpath))

    def _is_safe(self, relpath: str) -> bool:
        try:
            self._parts(relpath)
        except UnsafePathError:
            return False
        return True

    def mirror_shelf(self) -> Shelf | None:
        """A package root is one node's: its mirror keeps its cache to itself."""
        return None

    def upload_time(self, stat: FileStat) -> float:
        return stat.mtime_ns / 1e9  # an import sets the mtime

    def exists(self, relpath: str) -> bool:
        return os.path.lexists(self.resolve(relpath))

    def upload_relpath(self, filename: str) -> str:
        """Uploads go to the top of the root."""
        if not is_safe_filename(filename):
            raise UnsafePathError(f"unsafe file name {filename!r}")
        return filename

    def _inside(self, resolved: Path) -> bool:
        return resolved.is_relative_to(self.path.resolve())

    def incoming(self, max_bytes: int) -> IncomingFile:
        """A new, empty file in the root's file system to receive an upload into."""
        return IncomingFile(self.path, max_bytes)

    def upload_neighbours(self, filename: str, keep: Callable[[str], bool]) -> list[str]:
        """The visible files at the top of the root (where uploads go) that ``keep`` accepts."""
        with os.scandir(self.path) as entries:
            return [entry.name for entry in entries
                    if entry.name[:1] != "." and keep(entry.name)
                    and entry.is_file(follow_symlinks=False)]

    @contextlib.contextmanager
    def publish_lock(self) -> Iterator[None]:
        """flock on the root folder itself: it needs no file, and every process (and each
        call: its own descriptor) is excluded until the holder ends or dies."""
        fd = os.open(self.path, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            yield
        finally:
            os.close(fd)  # releases the lock

    def claim(self, slot: str, filename: str) -> str | None:
        """Nothing to claim: every writer takes ``publish_lock`` first."""
        return None

    def unclaim(self, slot: str, filename: str) -> None:
        """Nothing was claimed."""

    def remove(self, relpath: str) -> None:
        path = self.resolve(relpath)
        try:
            path.unlink()
        except FileNotFoundError:
            return
        except OSError as exc:
            raise storage_error(exc, path.parent) from None
        fsync_dir(path.parent)

    @contextlib.contextmanager
    def removing(self, relpath: str) -> Iterator[None]:
        """Remove a file so that the block can still refuse it: the file is renamed to a
        dot-name beside it (no reader sees it), put back if the block raises, and
        deleted when it ends. One killed in between is settled by ``sweep_temp_files``."""
        path = self.resolve(relpath)
        aside = path.with_name(ASIDE_PREFIX + path.name)
        try:
            os.rename(path, aside)
        except FileNotFoundError:
            raise StorageError(f"{relpath} is no longer in {self.path}") from None
        except OSError as exc:
            raise storage_error(exc, path.parent) from None
        with _put_back_if_raised(aside, path):
            yield
        fsync_dir(path.parent)

    @contextlib.contextmanager
    def keeping(self, relpath: str) -> Iterator[None]:
        """Keep a file's bytes while the block replaces it: a second link beside it (the
        name ``removing`` uses, so ``sweep_temp_files`` settles one a killed process
        left), renamed back over the name if the block raises, unlinked when it ends."""
        path = self.resolve(relpath)
        aside = path.with_name(ASIDE_PREFIX + path.name)
        with contextlib.suppress(FileNotFoundError):
            aside.unlink()
        try:
            os.link(path, aside)
        except OSError as exc:
            raise storage_error(exc, path.parent) from None
        with _put_back_if_raised(aside, path):
            yield

    def sweep_temp_files(self, was_removed: Callable[[str], bool] | None = None) -> int:
        """Clear what a killed process left, in every visible folder; call before serving.

        Named upload temp files go (an overwrite stages its link beside the file it
        replaces). A file left half removed is deleted if its removal was recorded
        (``was_removed(relpath)``), else put back. Returns the temp files removed.
        """
        removed = 0
        for directory, dirnames, filenames in os.walk(self.path):
            dirnames[:] = [d for d in dirnames if not d.startswith(".")]
            for name in filenames:
                if name.startswith(UPLOAD_PREFIX):
                    with contextlib.suppress(FileNotFoundError):
                        os.unlink(os.path.join(directory, name))
                        removed += 1
                elif name.startswith(ASIDE_PREFIX):
                    self._settle_aside(directory, name, was_removed or (lambda _path: False))
        if removed:
            log.info("removed %d unfinished upload(s) from %s", removed, self.path)
        return removed

    def clear_abandoned(self) -> int:
        """Nothing: this root is no other node's (``sweep_temp_files`` clears its own)."""
        return 0

    def _settle_aside(self, directory: str, name: str,
                      was_removed: Callable[[str], bool]) -> None:
        aside = os.path.join(directory, name)
        original = os.path.join(directory, name[len(ASIDE_PREFIX):])
        relpath = os.path.relpath(original, self.path)
        try:
            if was_removed(relpath) or os.path.exists(original):
                os.unlink(aside)
                log.info("finished the interrupted removal of %s", relpath)
            else:
                os.rename(aside, original)
                log.warning("put back %s: its removal was interrupted before it was "
                            "recorded", relpath)
        except OSError as exc:
            log.warning("cannot finish the interrupted removal of %s: %s", relpath,
                        exc.strerror or exc)


@contextlib.contextmanager
def _put_back_if_raised(aside: Path, path: Path) -> Iterator[None]:
    """``aside`` goes back to ``path`` if the block raises, else it is deleted."""
    try:
        yield
    except BaseException:
        os.rename(aside, path)
        fsync_dir(path.parent)
        raise
    with contextlib.suppress(FileNotFoundError):
        aside.unlink()
