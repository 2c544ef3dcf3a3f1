"""The mirror's disk cache under ``cache_root``: one JSON record per mirrored page
(``pages/<project>.json``, with upstream's validators) and the files
(``files/<project>/<filename>``). Everything here is a cache: deleting it loses
nothing but time. No path is made from upstream's text without checking that it
stays under the root.

With a ``shelf`` (the bucket of ``storage.backend = "s3"``), what one node fetched is
shared: pages and METADATA missing here are looked for there (and kept here once
found), and what is saved here is put there too. Files: ``shared_file``/``share_file``
(``fetch`` checks their sha256 either way).
"""

from __future__ import annotations

import contextlib
import functools
import json
import logging
import os
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

from pypid.distfile import is_normalized, is_safe_filename
from pypid.mirror.translate import UpstreamFile, UpstreamPage
from pypid.storage import Shelf

log = logging.getLogger("pypid.mirror")

PROJECTS_RESCAN = 1.0  # seconds the list of mirrored projects is reused


class UnsafeNameError(ValueError):
    """A project or file name that must not become a path."""


@dataclass(frozen=True)
class PageRecord:
    """A mirrored page and when upstream last confirmed it (``checked``, epoch seconds)."""

    page: UpstreamPage
    etag: str
    last_modified: str
    checked: float

    @functools.cached_property
    def serial(self) -> int:
        """Changes whenever the page may render differently (this process only)."""
        return hash((self.page, self.etag, self.last_modified)) & 0x7FFFFFFFFFFF


class MirrorStore:
    """Pages and files of the mirror below ``root``."""

    def __init__(self, root: Path, shelf: Shelf | None = None) -> None:
        self.root = root
        self.shelf = shelf
        self.pages = root / "pages"
        self.files = root / "files"
        self._projects: tuple[float, list[str]] = (0.0, [])
        self._listings: dict[str, tuple[float, list[str]]] = {}
        self._lock = threading.Lock()

    # -- pages

    def load(self, project: str) -> PageRecord | None:
        """The stored record of ``project``, or None (none, or unreadable: a cache)."""
        path = self._page_path(project)
        try:
            data = path.read_bytes()
        except FileNotFoundError:
            data = self.shared_bytes(path)
            if data is None:
                return None
            with contextlib.suppress(OSError):
                self._write(path, data)
        except OSError as exc:
            log.warning("mirror: ignoring unreadable cached page %s: %s", path, exc)
            return None
        try:
            raw = json.loads(data)
            page = UpstreamPage(project, tuple(UpstreamFile.from_record(f) for f in raw["files"]),
                                raw["status"], raw["reason"])
            return PageRecord(page, raw["etag"], raw["last-modified"], float(raw["checked"]))
        except (ValueError, KeyError, TypeError) as exc:
            log.warning("mirror: ignoring unreadable cached page %s: %s", path, exc)
            return None

    def save(self, record: PageRecord) -> None:
        page = record.page
        data: dict[str, Any] = {
            "project": page.project, "status": page.status, "reason": page.reason,
            "etag": record.etag, "last-modified": record.last_modified,
            "checked": record.checked, "files": [f.as_record() for f in page.files]}
        path, encoded = self._page_path(page.project), json.dumps(data).encode()
        self._write(path, encoded)
        if self.shelf is not None:  # the latest revalidation wins
            self.shelf.put_bytes(self._relpath(path), encoded, replace=True)

    def remove(self, project: str) -> None:
        with contextlib.suppress(OSError):
            self._page_path(project).unlink()

    def projects(self) -> list[str]:
        """The projects the cache holds a page of (rescanned at most once a second)."""
        now = time.monotonic()
        scanned, names = self._projects
        if now - scanned < PROJECTS_RESCAN:
            return names
        try:
            with os.scandir(self.pages) as entries:
                found = sorted(e.name[:-5] for e in entries
                               if e.name.endswith(".json") and is_normalized(e.name[:-5]))
        except OSError:
            found = []
        self._projects = (now, found)
        return found

    def _page_path(self, project: str) -> Path:
        if not is_normalized(project):
            raise UnsafeNameError(f"not a normalized project name: {project!r}")
        return self.pages / f"{project}.json"

    # -- files

    def file_path(self, project: str, filename: str) -> Path:
        """Where ``project``'s ``filename`` is cached; refuses names that would leave the root."""
        if not is_normalized(project) or not is_safe_filename(filename) or ".." in filename:
            raise UnsafeNameError(f"unsafe mirrored file name: {project}/{filename[:100]!r}")
        path = self.files / project / filename
        if path.parent.parent != self.files:  # belt and braces: one level, no escapes
            raise UnsafeNameError(f"unsafe mirrored file name: {project}/{filename[:100]!r}")
        return path

    def cached_files(self, project: str) -> list[str]:
        """The names of ``project``'s files the cache holds whole."""
        try:
            return sorted(n for n in os.listdir(self.files / project) if n[0] != ".")
        except OSError:
            return []

    def recent_files(self, project: str) -> list[str]:
        """``cached_files``, rescanned at most once a second (offline pages ask every time)."""
        now = time.monotonic()
        seen = self._listings.get(project)
        if seen is not None and now - seen[0] < PROJECTS_RESCAN:
            return seen[1]
        names = self.cached_files(project)
        if len(self._listings) > 4096:
            self._listings.clear()
        self._listings[project] = (now, names)
        return names

    def put_bytes(self, path: Path, data: bytes, *, share: bool = True) -> None:
        """A small cached file (a wheel's METADATA), written whole or not at all."""
        self._write(path, data)
        if share and self.shelf is not None:
            self.shelf.put_bytes(self._relpath(path), data, replace=False)

    # -- the shelf (none: these find nothing and keep nothing)

    def shared_bytes(self, path: Path) -> bytes | None:
        """The shelf's copy of a small cached file below the root, or None."""
        return self.shelf.read(self._relpath(path)) if self.shelf is not None else None

    def shared_file(self, path: Path) -> IO[bytes] | None:
        """The shelf's copy of a cached file to read (the caller closes it), or None."""
        return self.shelf.open(self._relpath(path)) if self.shelf is not None else None

    def share_file(self, path: Path, *, replace: bool = False) -> None:
        """Put a file just cached (its sha256 checked) on the shelf; without ``replace``
        unless it is there already."""
        if self.shelf is not None:
            self.shelf.put_file(self._relpath(path), path, replace=replace)

    def _relpath(self, path: Path) -> str:
        return path.relative_to(self.root).as_posix()

    def make_dir(self, path: Path) -> None:
        """``path`` and its parents below the root, owned like the root: a folder that
        ``pypid mirror add`` (root) makes must stay writable for the service."""
        missing = []
        folder = path
        while not folder.is_dir() and folder != folder.parent:
            missing.append(folder)
            folder = folder.parent
        for folder in reversed(missing):
            with contextlib.suppress(FileExistsError):
                folder.mkdir()
            self.adopt(folder)

    def adopt(self, path: Path) -> None:
        """Give ``path`` the root's owner when running as root (no-op otherwise)."""
        if os.geteuid() != 0:
            return
        with contextlib.suppress(OSError):
            st = os.stat(self.root)
            os.chown(path, st.st_uid, st.st_gid)

    def _write(self, path: Path, data: bytes) -> None:
        self.make_dir(path.parent)
        temp = path.with_name(f".{path.name}.{os.getpid()}.{threading.get_ident()}.tmp")
        try:
            with open(temp, "wb") as handle:
                handle.write(data)
            self.adopt(temp)
            os.replace(temp, path)
        finally:
            if temp.exists():
                temp.unlink()
