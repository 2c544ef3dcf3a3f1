"""The in-memory view of the package root that every page is rendered from.

``load()`` scans the root once (in the gunicorn master, before workers fork),
taking hashes and metadata from the sidecar cache and computing them only for
files it has not seen. ``start_watching()`` (in each worker) then follows
changes with inotify in a background thread, so no request walks the tree or
hashes a file. Readers never lock: each change replaces dict values whole.
"""

from __future__ import annotations

import hashlib
import logging
import os
import sys
import threading
import time
import weakref
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path

from packaging.version import Version

from pypid.cachedb import CacheDB, FileRow
from pypid.distfile import (
    SDIST,
    WHEEL,
    InvalidFilenameError,
    MetadataError,
    NormalizedName,
    has_dist_suffix,
    hash_file,
    is_temp_name,
    parse_filename,
    read_core_metadata,
)
from pypid.storage import FileStat, PackageRoot
from pypid.watch import (
    IN_ATTRIB,
    IN_CLOSE_WRITE,
    IN_CREATE,
    IN_DELETE,
    IN_ISDIR,
    IN_MODIFY,
    IN_MOVED_FROM,
    IN_MOVED_TO,
    IN_Q_OVERFLOW,
    Event,
    PollingWatcher,
    Watcher,
    open_watcher,
)

log = logging.getLogger("pypid.index")

SETTLE_SECONDS = 0.25  # a created file with no further writes is taken as complete after this
WRITING_GRACE = 2.0  # a file written to within this is still being copied in
Progress = Callable[[int, int], None]


@dataclass(frozen=True, slots=True)
class FileEntry:
    """One distribution file as the pages show it.

    Kept small: 100,000 of these live in every worker. Digests are raw bytes,
    repeated strings (project, Requires-Python) are interned.
    """

    filename: str
    relpath: str
    project: NormalizedName
    version: str  # normalized PEP 440 text
    size: int
    mtime_ns: int
    inode: int
    digest: bytes  # sha256 of the file
    requires_python: str | None
    metadata_digest: bytes | None  # sha256 of a wheel's METADATA
    upload_time: float
    yanked: str | None  # None: not yanked; "" yanked with no reason

    @property
    def sha256(self) -> str:
        return self.digest.hex()

    @property
    def metadata_sha256(self) -> str | None:
        return self.metadata_digest.hex() if self.metadata_digest is not None else None

    @property
    def kind(self) -> str:
        return WHEEL if self.filename.endswith(".whl") else SDIST

    def same_file(self, stat: FileStat) -> bool:
        return (self.size, self.mtime_ns, self.inode) == (stat.size, stat.mtime_ns, stat.inode)


class Index:
    """Projects and files below one package root, kept current by a watcher thread."""

    def __init__(self, root: PackageRoot, cache: CacheDB | None = None) -> None:
        self.root = root
        self.cache = cache if cache is not None else CacheDB(root.cache_dir)
        self._by_path: dict[str, FileEntry] = {}
        self._by_filename: dict[str, FileEntry] = {}
        self._by_project: dict[NormalizedName, tuple[FileEntry, ...]] = {}
        self._project_serial: dict[NormalizedName, int] = {}
        # A project's files by name while they change (during a load, or one change);
        # otherwise _by_project alone holds them: 100,000 files would cost ~10 MB here.
        self._members: dict[NormalizedName, dict[str, FileEntry]] = {}
        self._dupes: dict[str, set[str]] = {}
        self._bulk = False
        self._dirty: set[NormalizedName] = set()
        self._bad: dict[str, tuple[int, int, int]] = {}
        self._logged: set[tuple[str, str]] = set()
        self._yanks: dict[str, str] = {}
        self._serial = 0
        self.projects_serial = 0
        self._lock = threading.RLock()
        reset = weakref.WeakMethod(self._reset_after_fork)
        os.register_at_fork(after_in_child=lambda: (method := reset()) and method())
        self._watching = False  # in this process (a fork clears it)
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    # -- reading (request threads; no locks)

    def projects(self) -> list[NormalizedName]:
        return sorted(self._by_project)

    def project_count(self) -> int:
        return len(self._by_project)

    def file_count(self) -> int:
        return len(self._by_filename)

    def files(self, project: str) -> tuple[FileEntry, ...] | None:
        return self._by_project.get(NormalizedName(project))

    def project_serial(self, project: str) -> int | None:
        return self._project_serial.get(NormalizedName(project))

    def file(self, filename: str) -> FileEntry | None:
        return self._by_filename.get(filename)

    def path(self, entry: FileEntry) -> Path:
        return self.root.resolve(entry.relpath)

    # -- loading (the master, before fork)

    def load(self, progress: Progress | None = None) -> None:
        """Scan the whole root; hash only what the cache does not already know."""
        self._yanks = self.cache.yanks()
        self._bulk = True
        stats = {stat.relpath: stat for stat in self.root.iter_files()}
        todo: list[tuple[FileStat, FileRow | None]] = []
        gone: list[FileRow] = []
        for row in self.cache.iter_files():
            stat = stats.pop(row.relpath, None)
            if stat is None:
                gone.append(row)
            elif _row_matches(row, stat):
                self._apply_row(stat, row)
            else:
                todo.append((stat, row))
        todo.extend((stat, None) for stat in stats.values())
        del stats
        new_rows = []
        for done, (stat, old) in enumerate(todo, 1):
            row = self._examine(stat, old)
            if row is not None:
                new_rows.append(row)
                self._apply_row(stat, row)
            if len(new_rows) >= 500:
                self.cache.put(new_rows)
                new_rows = []
            if progress is not None:
                progress(done, len(todo))
        self.cache.put(new_rows)
        self.cache.forget(gone)
        self._bulk = False
        for project in self._dirty:
            self._reindex(project)
        self._dirty.clear()
        self._members.clear()
        log.info("indexed %d files of %d projects in %s (%d new or changed)",
                 self.file_count(), self.project_count(), self.root.path, len(todo))

    def close(self) -> None:
        """Stop watching and drop this thread's cache connection."""
        self._stop.set()
        self.cache.close()

    # -- recording a file pypid wrote itself (uploads)

    def expect(self, stat: FileStat, sha256: str, metadata: bytes | None,
               requires_python: str | None, upload_time: float) -> FileRow:
        """Write the facts of a file about to be linked into place (an upload).

        Written before the file appears, so that every worker sees them the
        moment its watcher sees the file: no hashing, no settling delay, no
        window in which another worker says 404 (or sends the name upstream).
        """
        meta_sha = hashlib.sha256(metadata).hexdigest() if metadata is not None else None
        dist = parse_filename(stat.relpath.rsplit("/", 1)[-1])
        row = FileRow(stat.relpath, stat.size, stat.mtime_ns, stat.inode, sha256,
                      requires_python, meta_sha, upload_time, None, dist.project,
                      str(dist.version))
        self.cache.put([row])
        return row

    def unexpect(self, row: FileRow) -> None:
        """The expected file never appeared (a lost race, an error): drop its facts."""
        self.cache.forget([row])

    def record(self, stat: FileStat, row: FileRow) -> FileEntry | None:
        """Show a file this process just stored (its row came from ``expect``)."""
        with self._lock:
            return self._apply_row(stat, row)

    # -- watching (each worker, after fork)

    def start_watching(self) -> None:
        """Follow changes in this process from now on; catch up with what changed since load.

        Safe to call on every request: it acts once per process (so once per
        forked worker), watching first and then re-checking every file, so
        nothing that changed in between is missed.
        """
        if self._watching:
            return
        with self._lock:
            if self._watching:
                return
            self._watching = True
            self._stop = threading.Event()
            watcher = self._watch_all(open_watcher(self.root.path))
            # The catch-up scan runs in the thread: a worker answers at once from the
            # snapshot it was forked with, and is current within a second or so.
            self._thread = threading.Thread(target=self._watch_loop, args=(watcher,),
                                            name="pypid-watch", daemon=True)
            self._thread.start()

    def _reset_after_fork(self) -> None:
        """In a new child: a lock held by another thread at fork time would stay held,
        and the parent's watcher thread does not exist here."""
        self._lock = threading.RLock()
        self._watching = False

    def _watch_all(self, watcher: Watcher, under: str = "") -> Watcher:
        try:
            for directory in self.root.directories():
                if not under or directory == under or directory.startswith(under + "/"):
                    watcher.add_directory(directory)
        except OSError as exc:  # ENOSPC: the inotify watch limit
            log.warning("cannot watch %s (%s); polling it every second instead",
                        self.root.path, exc)
            watcher.close()
            watcher = PollingWatcher(self.root.path)
            for directory in self.root.directories():
                watcher.add_directory(directory)
        return watcher

    def _watch_loop(self, watcher: Watcher) -> None:
        try:
            self._resync()
        except Exception as exc:  # noqa: BLE001 - the loop below recovers
            self._recover(exc)
        pending: dict[str, float] = {}
        writing: dict[str, float] = {}
        data_version = -1  # first check reloads yank marks committed before this thread began
        next_db_check = time.monotonic()
        while not self._stop.is_set():
            try:
                events = watcher.read(0.1)
                now = time.monotonic()
                watcher = self._sort_events(watcher, events, pending, writing, now)
                due = [p for p, t in pending.items()
                       if t <= now and now - writing.get(p, -WRITING_GRACE) >= WRITING_GRACE
                       or t <= now - 10 * WRITING_GRACE]
                for relpath in due:
                    del pending[relpath]
                    writing.pop(relpath, None)
                    self.refresh(relpath)
                if now >= next_db_check:
                    next_db_check = now + 1.0
                    version = self.cache.data_version()
                    if version != data_version:
                        data_version = version
                        self._reload_yanks()
            except Exception as exc:  # the watcher must outlive any one bad event
                self._recover(exc)
        watcher.close()

    def _recover(self, exc: Exception) -> None:
        """After an error in the watcher: wait, then re-check the root (if it is there)."""
        log.warning("index watcher: %s: %s; re-checking %s", type(exc).__name__, exc,
                    self.root.path)
        log.debug("traceback", exc_info=exc)
        self._stop.wait(1.0)
        problem = self.root.check_readable()
        if problem is not None:
            self._log_once("", problem + "; serving the files indexed before")
            return
        try:
            self._resync()
        except Exception as again:  # noqa: BLE001 - retried on the next error
            log.warning("index watcher: rescan failed: %s", again)

    def _sort_events(self, watcher: Watcher, events: list[Event], pending: dict[str, float],
                     writing: dict[str, float], now: float) -> Watcher:
        for event in events:
            if event.mask & IN_Q_OVERFLOW:
                self._resync()
            elif event.mask == 0:  # the poller: this directory changed
                self._rescan_directory(event.directory)
            elif event.name.startswith("."):
                continue
            elif event.mask & IN_ISDIR:
                if event.mask & (IN_CREATE | IN_MOVED_TO):
                    watcher = self._watch_all(watcher, event.relpath)
                    self._rescan_directory(event.relpath, recursive=True)
                elif event.mask & (IN_DELETE | IN_MOVED_FROM):
                    self._drop_under(event.relpath)
            elif event.mask & (IN_CREATE | IN_MOVED_TO) and self._known_now(event.relpath):
                pending.pop(event.relpath, None)  # an upload, announced in the cache
                writing.pop(event.relpath, None)
            elif event.mask & (IN_CLOSE_WRITE | IN_MOVED_TO | IN_DELETE | IN_MOVED_FROM):
                pending[event.relpath] = now
                writing.pop(event.relpath, None)
            elif event.mask & IN_MODIFY:
                writing[event.relpath] = now
                pending.setdefault(event.relpath, now + SETTLE_SECONDS)
            elif event.mask & (IN_CREATE | IN_ATTRIB):
                pending.setdefault(event.relpath, now + SETTLE_SECONDS)
        return watcher

    def _known_now(self, relpath: str) -> bool:
        """Apply a new file at once if the cache already describes it exactly."""
        if not has_dist_suffix(relpath) or is_temp_name(relpath.rsplit("/", 1)[-1]):
            return False
        row = self.cache.get(relpath)
        if row is None or row.error is not None:
            return False
        try:
            stat = self.root.stat(relpath)
        except ValueError:
            return False
        if stat is None or not _row_matches(row, stat):
            return False
        with self._lock:
            current = self._by_path.get(relpath)
            if current is None or not current.same_file(stat):
                self._apply_row(stat, row)
        return True

    def refresh(self, relpath: str) -> None:
        """Bring one path up to date: added, changed or removed."""
        try:
            stat = self.root.stat(relpath)
        except ValueError:
            return
        with self._lock:
            if stat is None:
                self._drop(relpath, forget=True)
                return
            self._update(stat)

    def _update(self, stat: FileStat) -> None:
        current = self._by_path.get(stat.relpath)
        if current is not None and current.same_file(stat):
            return
        if self._bad.get(stat.relpath) == (stat.size, stat.mtime_ns, stat.inode):
            return
        row = self.cache.get(stat.relpath)
        if row is None or not _row_matches(row, stat):
            row = self._examine(stat, row)
            if row is None:
                self._drop(stat.relpath)
                return
            self.cache.put([row])
        self._apply_row(stat, row)

    def _resync(self) -> None:
        """Compare every file with what the index holds (start of watching, overflow)."""
        with self._lock:
            seen = set()
            for stat in self.root.iter_files():
                self._update(stat)
                # Keep the index's own string, not the scan's: 100,000 new strings would
                # stay in the worker's RSS after the scan (the allocator keeps their pages).
                entry = self._by_path.get(stat.relpath)
                seen.add(entry.relpath if entry is not None else stat.relpath)
            for relpath in [p for p in self._by_path if p not in seen]:
                self._drop(relpath, forget=True)
            for relpath in [p for p in self._bad if p not in seen]:
                del self._bad[relpath]
            self._reload_yanks()

    def _rescan_directory(self, directory: str, recursive: bool = False) -> None:
        with self._lock:
            seen = set()
            for stat in self.root.iter_files(directory):
                if recursive or "/" not in stat.relpath[len(directory) + 1 if directory else 0:]:
                    seen.add(stat.relpath)
                    self._update(stat)
            prefix = directory + "/" if directory else ""
            for relpath in [p for p in self._by_path if p.startswith(prefix) and p not in seen
                            and (recursive or "/" not in p[len(prefix):])]:
                self._drop(relpath, forget=True)

    def _drop_under(self, directory: str) -> None:
        with self._lock:
            for relpath in [p for p in self._by_path if p.startswith(directory + "/")]:
                self._drop(relpath, forget=True)

    def _reload_yanks(self) -> None:
        yanks = self.cache.yanks()
        if yanks == self._yanks:
            return
        with self._lock:
            changed = {name for name in set(yanks) | set(self._yanks)
                       if yanks.get(name) != self._yanks.get(name)}
            self._yanks = yanks
            for name in changed:
                entry = self._by_filename.get(name)
                if entry is not None:
                    self._put(replace(entry, yanked=yanks.get(name)))

    # -- examining one file (hash + metadata): the only expensive step

    def _examine(self, stat: FileStat, old: FileRow | None) -> FileRow | None:
        filename = stat.relpath.rsplit("/", 1)[-1]
        try:
            dist = parse_filename(filename)
        except InvalidFilenameError as exc:
            self._log_once(stat.relpath, f"ignoring {stat.relpath}: {exc.reason}")
            return None
        path = self.root.resolve(stat.relpath)
        try:
            with open(path, "rb") as handle:
                sha256, size = hash_file(handle)
            meta = read_core_metadata(path, dist)
        except OSError as exc:
            self._log_once(stat.relpath, f"ignoring {stat.relpath}: cannot read it "
                           f"({exc.strerror or exc})")
            self._bad[stat.relpath] = (stat.size, stat.mtime_ns, stat.inode)
            return None
        except MetadataError as exc:
            self._log_once(stat.relpath, f"ignoring {stat.relpath}: {exc.reason}")
            self._bad[stat.relpath] = (stat.size, stat.mtime_ns, stat.inode)
            return FileRow(stat.relpath, stat.size, stat.mtime_ns, stat.inode, None, None, None,
                           stat.mtime_ns / 1e9, exc.reason)
        if size != stat.size:
            return None  # still being written: the next event brings it back
        meta_sha = hashlib.sha256(meta.metadata).hexdigest() if meta.metadata is not None else None
        upload_time = stat.mtime_ns / 1e9
        if old is not None and old.relpath == stat.relpath and old.sha256 == sha256:
            upload_time = old.upload_time  # same bytes, only touched: keep the first time
        return FileRow(stat.relpath, stat.size, stat.mtime_ns, stat.inode, sha256,
                       meta.requires_python, meta_sha, upload_time, None, dist.project,
                       str(dist.version))

    def _log_once(self, relpath: str, message: str) -> None:
        if (relpath, message) not in self._logged:
            self._logged.add((relpath, message))
            log.warning("%s", message)

    # -- the maps (callers hold the lock, or run before any thread exists)

    def _apply_row(self, stat: FileStat, row: FileRow) -> FileEntry | None:
        if row.error is not None or row.sha256 is None:
            self._bad[stat.relpath] = (stat.size, stat.mtime_ns, stat.inode)
            self._log_once(stat.relpath, f"ignoring {stat.relpath}: {row.error}")
            self._drop(stat.relpath)
            return None
        filename = stat.relpath.rsplit("/", 1)[-1]
        project, version = row.project, row.version
        if project is None or version is None:  # parsed once, when first seen; else now
            try:
                dist = parse_filename(filename)
            except InvalidFilenameError:
                return None
            project, version = dist.project, str(dist.version)
        self._bad.pop(stat.relpath, None)
        is_wheel = filename.endswith(".whl")
        entry = FileEntry(
            filename=filename,
            relpath=filename if filename == stat.relpath else stat.relpath,
            project=NormalizedName(sys.intern(project)), version=sys.intern(version),
            size=stat.size,
            mtime_ns=stat.mtime_ns, inode=stat.inode, digest=bytes.fromhex(row.sha256),
            requires_python=sys.intern(row.requires_python) if row.requires_python else None,
            metadata_digest=(bytes.fromhex(row.metadata_sha256)
                             if is_wheel and row.metadata_sha256 else None),
            upload_time=row.upload_time, yanked=self._yanks.get(filename))
        self._put(entry)
        return entry

    def _put(self, entry: FileEntry) -> None:
        self._by_path[entry.relpath] = entry
        holder = self._by_filename.get(entry.filename)
        if holder is None or holder.relpath == entry.relpath:
            self._set_winner(entry)
            return
        paths = self._dupes.setdefault(entry.filename, {holder.relpath})
        paths.add(entry.relpath)
        winner = min(paths)
        self._log_once(entry.filename, f"{entry.filename} is in the root more than once "
                       f"({', '.join(sorted(paths))}); serving {winner}")
        if winner == entry.relpath:
            self._set_winner(entry)

    def _drop(self, relpath: str, forget: bool = False) -> None:
        self._bad.pop(relpath, None)
        entry = self._by_path.pop(relpath, None)
        if entry is None:
            return
        if forget:
            self.cache.forget([FileRow(relpath, entry.size, entry.mtime_ns, entry.inode,
                                       None, None, None, 0.0)])
        remaining: set[str] = set()
        paths = self._dupes.get(entry.filename)
        if paths is not None:
            paths.discard(relpath)
            remaining = set(paths)
            if len(paths) <= 1:
                del self._dupes[entry.filename]
        holder = self._by_filename.get(entry.filename)
        if holder is not None and holder.relpath == relpath:
            if remaining:
                self._set_winner(self._by_path[min(remaining)])
            else:
                self._unset_winner(entry)

    def _set_winner(self, entry: FileEntry) -> None:
        self._by_filename[entry.filename] = entry
        self._members_of(entry.project)[entry.filename] = entry
        self._touch(entry.project)

    def _unset_winner(self, entry: FileEntry) -> None:
        del self._by_filename[entry.filename]
        self._members_of(entry.project).pop(entry.filename, None)
        self._touch(entry.project)

    def _members_of(self, project: NormalizedName) -> dict[str, FileEntry]:
        members = self._members.get(project)
        if members is None:
            members = {e.filename: e for e in self._by_project.get(project, ())}
            self._members[project] = members
        return members

    def _touch(self, project: NormalizedName) -> None:
        if self._bulk:
            self._dirty.add(project)
        else:
            self._reindex(project)

    def _reindex(self, project: NormalizedName) -> None:
        members = self._members.get(project) if self._bulk else self._members.pop(project, None)
        if members is None:
            return  # nothing changed since the last reindex
        self._serial += 1
        if members:
            if project not in self._by_project:
                self.projects_serial += 1
            self._by_project[project] = tuple(
                sorted(members.values(), key=lambda e: (Version(e.version), e.filename)))
            self._project_serial[project] = self._serial
        elif project in self._by_project:
            del self._by_project[project]
            self._project_serial.pop(project, None)
            self.projects_serial += 1


def _row_matches(row: FileRow, stat: FileStat) -> bool:
    return (row.size, row.mtime_ns, row.inode) == (stat.size, stat.mtime_ns, stat.inode)
