"""The package root on disk: list distribution files, resolve paths safely.

Knows nothing of HTTP or of the index built on top of it.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from pypid.distfile import has_dist_suffix, is_temp_name

CACHE_DIRNAME = ".pypid"


class StorageError(Exception):
    """A problem with the package root that the operator must fix."""


class UnsafePathError(StorageError, ValueError):
    """A relative path that would leave the root or name a hidden file."""


@dataclass(frozen=True, slots=True)
class FileStat:
    """Identity of a file's current content: a change in any field means re-read it."""

    relpath: str
    size: int
    mtime_ns: int
    inode: int


class PackageRoot:
    """A directory of wheels and sdists, possibly in sub-folders.

    Dot-files, dot-folders (including pypid's own cache folder) and files that
    look like a copy in progress are never listed.
    """

    def __init__(self, root: Path) -> None:
        self.path = Path(root).absolute()

    @property
    def cache_dir(self) -> Path:
        return self.path / CACHE_DIRNAME

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
        """Every distribution file below ``subdir`` (relative, '' for all), with its stat."""
        start = self.path / subdir if subdir else self.path
        stack = [start]
        while stack:
            directory = stack.pop()
            try:
                entries = list(os.scandir(directory))
            except (FileNotFoundError, NotADirectoryError):
                continue
            except OSError:
                if directory == self.path:
                    raise
                continue
            for entry in entries:
                if entry.name.startswith("."):
                    continue
                try:
                    if entry.is_dir(follow_symlinks=False):
                        stack.append(Path(entry.path))
                        continue
                    if is_temp_name(entry.name) or not has_dist_suffix(entry.name):
                        continue
                    stat = self._stat_entry(entry)
                except OSError:
                    continue
                if stat is not None:
                    yield stat

    def _stat_entry(self, entry: os.DirEntry[str]) -> FileStat | None:
        path = Path(entry.path)
        if entry.is_symlink() and not self._inside(path.resolve()):
            return None  # a link pointing out of the root is never served
        st = entry.stat()
        if not entry.is_file():
            return None
        return FileStat(path.relative_to(self.path).as_posix(), st.st_size, st.st_mtime_ns,
                        st.st_ino)

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
        return FileStat(relpath, st.st_size, st.st_mtime_ns, st.st_ino)

    def resolve(self, relpath: str) -> Path:
        """The absolute path of ``relpath`` inside the root; raise UnsafePathError otherwise."""
        if not relpath or "\x00" in relpath or "\\" in relpath or relpath.startswith("/"):
            raise UnsafePathError(f"unsafe path {relpath!r}")
        parts = relpath.split("/")
        if any(part in ("", ".", "..") for part in parts):
            raise UnsafePathError(f"unsafe path {relpath!r}")
        return self.path.joinpath(*parts)

    def directories(self) -> Iterator[str]:
        """Every visible directory below the root, as a relative path ('' is the root)."""
        yield ""
        stack = [self.path]
        while stack:
            directory = stack.pop()
            try:
                entries = list(os.scandir(directory))
            except OSError:
                continue
            for entry in entries:
                if not entry.name.startswith(".") and entry.is_dir(follow_symlinks=False):
                    stack.append(Path(entry.path))
                    yield Path(entry.path).relative_to(self.path).as_posix()

    def _inside(self, resolved: Path) -> bool:
        return resolved.is_relative_to(self.path.resolve())
