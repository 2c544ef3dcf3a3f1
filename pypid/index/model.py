"""The read model every page is rendered from: projects and their files, in memory.

``loading`` fills it once (in the gunicorn master, before workers fork);
``follow`` (in each worker) keeps it current from a background thread, so no
request walks the tree or hashes a file; ``live.Index`` puts the three together.
Readers never lock: each change replaces map values whole. Writers (the
watcher thread, an upload) hold ``lock``. Facts that are not files (yank
marks) arrive through ``apply_marks`` only.

The maps hold every file's entry until ``seal_files`` (the master's last step before
workers fork); from then on they hold the changes only, laid over the sealed table.
"""

from __future__ import annotations

import contextlib
import logging
import os
import struct
import sys
import threading
import weakref
from bisect import insort
from collections.abc import Callable, Iterable, Iterator, Mapping, MutableMapping
from dataclasses import replace
from pathlib import Path
from typing import TypeVar, cast

from packaging.version import Version

from pypid.cachedb import CacheDB, FileRow
from pypid.distfile import InvalidFilenameError, NormalizedName, parse_filename
from pypid.index.examine import Examined, examine
from pypid.index.layered import Base, Layered
from pypid.index.ledger import Ledger
from pypid.index.records import FileEntry, Marks
from pypid.index.sealed import SealedFiles
from pypid.storage import FileIdentity, FileStat, Storage

log = logging.getLogger("pypid.index")

Progress = Callable[[int, int], None]
RECENT_FILES = 1024  # sealed lookups a process keeps while the index does not change
RECENT_PROJECTS = 256
RECENT_PROJECT_FILES = 32  # a project with more files is read again each time (memory)
# Files and projects changed since the seal before they are sealed too (``reseal_if_due``)
RESEAL_AFTER = 2048


_T = TypeVar("_T")


class ReadModel:
    """Projects and files below one package root."""

    def __init__(self, root: Storage, cache: CacheDB | None = None) -> None:
        self.root = root
        self.cache = cache if cache is not None else CacheDB(root.cache_dir)
        self._by_path: MutableMapping[str, FileEntry] = {}
        self._by_filename: MutableMapping[str, FileEntry] = {}  # the one served
        self._stored_bytes = 0  # of _by_filename's entries, kept as they change
        self._by_project: MutableMapping[NormalizedName, tuple[FileEntry, ...]] = {}
        # Its keys are _by_project's: asked instead, they read nothing sealed. Typed by
        # str so that a page's lookup needs no NormalizedName() call (a Python frame).
        self._project_serial: dict[str, int] = {}
        # A project's files by name while they change (during a load, or one change);
        # otherwise _by_project alone holds them, which costs far less memory.
        self._changing: dict[NormalizedName, dict[str, FileEntry]] = {}
        self._duplicate_paths: dict[str, set[str]] = {}  # filename -> every relpath holding it
        self._loading = False  # reindex each project once, at the end of the load
        self._to_reindex: set[NormalizedName] = set()
        self._unusable: dict[str, FileIdentity] = {}  # not read again until the file changes
        self._warned: set[tuple[str, str]] = set()
        self._marks = Marks()
        self.ledger = Ledger(root.event_log())
        self._serial = 0
        self.projects_serial = 0
        # Why the files shown may not be the root's now (None: they are): a node started
        # while its store was away serves its cache until the store answers.
        self.behind: str | None = None
        # After ``seal_files``: the files as sealed, under the maps' changes since.
        self._sealed: SealedFiles | None = None
        self._recent: dict[str, tuple[int, FileEntry | None]] = {}  # sealed reads, by serial
        self._recent_projects: dict[str, tuple[int, tuple[FileEntry, ...] | None]] = {}
        self._reseal_after = RESEAL_AFTER  # raised after a seal that failed
        self.lock = threading.RLock()
        reset = weakref.WeakMethod(self._reset_after_fork)
        os.register_at_fork(after_in_child=lambda: (method := reset()) and method())

    # -- reading (request threads; no locks)

    def projects(self) -> list[NormalizedName]:
        return cast("list[NormalizedName]", sorted(self._project_serial))

    def project_count(self) -> int:
        return len(self._project_serial)

    def file_count(self) -> int:
        return len(self._by_filename)

    def stored_bytes(self) -> int:
        """Kept as files come and go: a sum over the entries would read every one, and in
        a worker each read un-shares the memory holding it (a /metrics scrape cost 11 MB
        a worker at 54,307 files)."""
        return self._stored_bytes

    def files(self, project: str) -> tuple[FileEntry, ...] | None:
        if self._sealed is None:
            return self._by_project.get(NormalizedName(project))
        return self._sealed_read(self._recent_projects, RECENT_PROJECTS,
                                 self._project_files, project, RECENT_PROJECT_FILES)

    @property
    def serial(self) -> int:
        """Goes up with every change of any project's files, marks or status."""
        return self._serial

    def project_serial(self, project: str) -> int | None:
        return self._project_serial.get(project)

    def file(self, filename: str) -> FileEntry | None:
        """The entry served for ``filename`` (the first of its paths, when several hold it)."""
        if self._sealed is None:
            return self._by_filename.get(filename)
        return self._sealed_read(self._recent, RECENT_FILES, self._by_filename.get, filename)

    def _sealed_read(self, recent: dict[str, tuple[int, _T | None]], most: int,
                     read: Callable[[str], _T | None], key: str,
                     keep_below: int | None = None) -> _T | None:
        """``read(key)``, kept in ``recent`` while the index does not change (a read of
        the sealed table saved), unless it has ``keep_below`` items or more. A table that
        cannot be read raises OSError (nothing kept): a server's fault, never an answer
        that the file or project is not here."""
        serial = self._serial  # read first: a change meanwhile makes the memo stale
        known = recent.get(key)
        if known is not None and known[0] == serial:
            return known[1]
        value = read(key)
        if keep_below is not None and value is not None and len(value) >= keep_below:  # type: ignore[arg-type]
            return value
        if len(recent) >= most:
            recent.clear()
        recent[key] = (serial, value)
        return value

    def _project_files(self, project: str) -> tuple[FileEntry, ...] | None:
        """The project's files now: as sealed, with the changes made since."""
        found = self._by_project.get(NormalizedName(project))
        if not isinstance(found, _ChangedFiles):
            return found
        sealed = self._sealed
        at_seal = sealed.project(project) if sealed is not None else None
        return found.applied_to(at_seal or ()) or None

    @property
    def sealed(self) -> bool:
        """The files were sealed (in the master, before the workers forked): a worker
        shares that process's memory, and reads the files from the sealed table."""
        return self._sealed is not None

    def seal_files(self) -> bool:
        """Move the files into a table outside the heap (see ``pypid.index.sealed``): the
        master's last step before workers fork, and again in any process once many
        files changed since (``reseal_if_due``). The maps keep only the changes made
        after it. False when the table cannot be made (an unwritable cache folder, a
        full disk): the maps keep what they hold then."""
        if not self.cache.on_disk:
            return False  # said at start: the cache folder cannot be written
        with self.lock:
            unserved = [self._by_path[path] for name, paths in self._duplicate_paths.items()
                        for path in sorted(paths) if path != self._served_path(name)]
            projects: Iterable[tuple[FileEntry, ...]] = self._by_project.values()
            again = False
            if self._sealed is not None and isinstance(self._by_project, Layered):
                projects, again = _projects_now(self._sealed, self._by_project), True
            try:  # again: in a child, as this process's memory is likely shared (a worker)
                sealed = SealedFiles.write(self.cache.directory, projects, unserved,
                                           _yanks_of(self), file_count=len(self._by_path),
                                           project_count=len(self._project_serial),
                                           apart=again)
            except (OSError, struct.error) as exc:
                log.warning("cannot write the file table in %s (%s); %s",
                            self.cache.directory, exc,
                            "workers read the index's entries instead, un-sharing their "
                            "memory" if self._sealed is None else
                            "the files changed since the last one stay in memory")
                return False
            self._sealed = sealed
            self._recent, self._recent_projects = {}, {}
            self._by_filename = Layered(Base(sealed.find, sealed.may_serve,
                                             sealed.served_names, sealed.served_count()))
            self._by_path = Layered(Base(sealed.at_path, sealed.may_hold_path,
                                         sealed.relpaths, sealed.path_count()))
            self._by_project = Layered(Base(sealed.project, sealed.may_hold_project,  # type: ignore[arg-type]
                                            sealed.projects, sealed.project_count()))
            # A table replaced here is closed when the last map over it goes (its
            # finalizer): a reader in another thread may be in the middle of one.
        self.ledger.forget_indexed(self._by_filename.__contains__)
        return True

    def reseal_if_due(self) -> bool:
        """Seal again once ``RESEAL_AFTER`` files and projects changed since the last seal
        (the watcher calls this between changes). Their entries would otherwise stay in
        this process's heap for good: ~0.7 KB a file in each process that follows the
        root, +18 MB an hour across two workers and the master under 3 uploads a second.
        A seal reads the table once and writes the next (~0.17 s at 54,307 files) under
        the lock; readers do not wait for it."""
        by_path, by_project = self._by_path, self._by_project
        if (self._loading or not isinstance(by_path, Layered)
                or not isinstance(by_project, Layered)):
            return False
        changes = by_path.changes() + by_project.changes()
        if changes < self._reseal_after:
            return False
        if self.seal_files():
            self._reseal_after = RESEAL_AFTER
            return True
        self._reseal_after = 2 * changes  # not again at every change: once twice as many
        return False

    def _served_path(self, filename: str) -> str | None:
        served = self._by_filename.get(filename)
        return served.relpath if served is not None else None

    def path(self, entry: FileEntry) -> Path:
        return self.root.resolve(entry.relpath)

    def _reset_after_fork(self) -> None:
        """In a new child: a lock held by another thread at fork time would stay held."""
        self.lock = threading.RLock()

    def close_sealed(self) -> None:
        """Close the sealed table's file: the index is done with (its reads fail now)."""
        if self._sealed is not None:
            self._sealed.close()

    # -- changes (callers hold the lock, or run before any thread exists)

    def apply_marks(self, marks: Marks) -> None:
        """Take a new snapshot of the facts that are not files: the one way they enter.
        Cheap when nothing changed: the ledger makes a new snapshot only on a change."""
        if marks is self._marks:
            return
        if marks == self._marks:
            self._marks = marks  # the same facts: next time, the identity check suffices
            return
        with self.lock:
            changed = self._marks.changed_files(marks)
            projects = self._marks.changed_projects(marks)
            self._marks = marks
            for name in changed:
                entry = self._by_filename.get(name)
                if entry is not None:
                    self._put(replace(entry, yanked=marks.yanks.get(name)))
            for project in projects:  # its page shows the status: render it again
                if project in self._project_serial:
                    self._changing_files(NormalizedName(project))
                    self._touch(NormalizedName(project))

    @property
    def marks(self) -> Marks:
        return self._marks

    def show_recorded(self, project: str, may_block: bool = True) -> bool | None:
        """Show now the files the event log says were uploaded to ``project`` and this
        process has not indexed: another worker stored them a moment ago and this one's
        watcher is behind (a client that uploads, then installs at once, must find them;
        a mirror must not send the name upstream meanwhile). True when it shows any;
        None when that needs the disk and ``may_block`` is false."""
        ledger = self.ledger
        if ledger.behind():
            if not may_block:
                return None
            ledger.catch_up()
        missing = [name for name in ledger.recorded(project) if self.file(name) is None]
        if not missing:
            return False
        if not may_block:
            return None
        for name in missing:
            self.refresh(self.root.upload_relpath(name))
        return self.project_serial(project) is not None

    def catch_up_now(self) -> None:
        """Before a decision about files: see every change made anywhere (see live.Index)."""

    def refresh(self, relpath: str) -> None:
        """Bring one path up to date: added, changed or removed."""
        try:
            stat = self.root.stat(relpath)
        except ValueError:
            return
        with self.lock:
            if stat is None:
                self.hide(relpath, forget=True)
            else:
                self.update(stat)

    def update(self, stat: FileStat) -> None:
        """Show the file as it is now, reading it only if neither index nor cache knows it."""
        current = self._by_path.get(stat.relpath)
        if current is not None and current.same_file(stat):
            return
        if self._unusable.get(stat.relpath) == stat.identity:
            return
        row = self.cache.get(stat.relpath)
        if row is None or row.identity != stat.identity:
            row = self.examine(stat, row)
            if row is None:
                self.hide(stat.relpath)
                return
            self.cache.put([row])
        self.show(stat, row)

    def examine(self, stat: FileStat, old: FileRow | None) -> FileRow | None:
        """Read one file's facts; warn (once) about a file that cannot be served."""
        return self.examined(stat, examine(self.root, stat, old))

    def examined(self, stat: FileStat, found: Examined) -> FileRow | None:
        """Take note of what reading ``stat``'s file found (here or in another process)."""
        if found.problem is not None:
            self.warn_once(stat.relpath, found.problem)
        if found.unusable:
            self._unusable[stat.relpath] = stat.identity
        return found.row

    def show(self, stat: FileStat, row: FileRow) -> FileEntry | None:
        """Serve ``stat``'s file as ``row`` describes it (None: the row says it is unusable)."""
        if row.error is not None or row.sha256 is None:
            self._unusable[stat.relpath] = stat.identity
            self.warn_once(stat.relpath, f"ignoring {stat.relpath}: {row.error}")
            self.hide(stat.relpath)
            return None
        filename = stat.relpath.rsplit("/", 1)[-1]
        project, version = row.project, row.version
        if project is None or version is None:  # parsed once, when first seen; else now
            try:
                dist = parse_filename(filename)
            except InvalidFilenameError:
                return None
            project, version = dist.project, str(dist.version)
        self._unusable.pop(stat.relpath, None)
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
            upload_time=row.upload_time, yanked=self._marks.yanks.get(filename))
        self._put(entry)
        return entry

    def hide(self, relpath: str, forget: bool = False) -> None:
        """Stop serving ``relpath``; ``forget``: the file is gone, so is its cache row."""
        self._unusable.pop(relpath, None)
        entry = self._by_path.pop(relpath, None)
        if entry is None:
            return
        if forget:
            self.cache.forget([(relpath, entry.identity)])
        remaining: set[str] = set()
        paths = self._duplicate_paths.get(entry.filename)
        if paths is not None:
            paths.discard(relpath)
            remaining = set(paths)
            if len(paths) <= 1:
                del self._duplicate_paths[entry.filename]
        holder = self._by_filename.get(entry.filename)
        if holder is not None and holder.relpath == relpath:
            if remaining:
                self._set_winner(self._by_path[min(remaining)])
            else:
                self._unset_winner(entry)

    def show_only(self, stats: Iterable[FileStat]) -> None:
        """Show exactly the files of a full listing, each as it is now; hide the rest."""
        seen = set()
        for stat in stats:
            self.update(stat)
            seen.add(stat.relpath)
        for relpath in [p for p in self._by_path if p not in seen]:
            self.hide(relpath, forget=True)
        self.keep_unusable_only(seen)

    def entry_at(self, relpath: str) -> FileEntry | None:
        return self._by_path.get(relpath)

    def relpaths(self, prefix: str = "") -> list[str]:
        """The served paths starting with ``prefix`` (a snapshot)."""
        return [p for p in self._by_path if p.startswith(prefix)]

    def keep_unusable_only(self, seen: set[str]) -> None:
        """Forget the unusable files that no longer exist (after a full rescan)."""
        for relpath in [p for p in self._unusable if p not in seen]:
            del self._unusable[relpath]

    @contextlib.contextmanager
    def loading(self) -> Iterator[None]:
        """Many changes in a row (a load): each project is re-sorted once, at the end."""
        self._loading = True
        try:
            yield
        finally:
            self._loading = False
            # One serial for the whole load: every project shares one int object, so a
            # worker's lookups write to no page it shares with the master (refcounts).
            # Given out once the maps hold the load (see ``_reindex``).
            serial = self._serial + 1
            for project in self._to_reindex:
                self._reindex(project, serial)
            self._serial = serial
            self._to_reindex.clear()
            self._changing.clear()

    def warn_once(self, relpath: str, message: str) -> None:
        if (relpath, message) not in self._warned:
            self._warned.add((relpath, message))
            log.warning("%s", message)

    # -- the maps

    def _put(self, entry: FileEntry) -> None:
        self._by_path[entry.relpath] = entry
        holder = self._by_filename.get(entry.filename)
        if holder is None or holder.relpath == entry.relpath:
            self._set_winner(entry)
            return
        paths = self._duplicate_paths.setdefault(entry.filename, {holder.relpath})
        paths.add(entry.relpath)
        winner = min(paths)
        self.warn_once(entry.filename, f"{entry.filename} is in the root more than once "
                       f"({', '.join(sorted(paths))}); serving {winner}")
        if winner == entry.relpath:
            self._set_winner(entry)

    def _set_winner(self, entry: FileEntry) -> None:
        yanked = self._marks.yanks.get(entry.filename)
        if entry.yanked != yanked:  # a copy in another folder, made before a mark changed
            entry = replace(entry, yanked=yanked)
            self._by_path[entry.relpath] = entry
        replaced = self._by_filename.get(entry.filename)
        if replaced is not None:
            self._stored_bytes -= replaced.size
        self._by_filename[entry.filename] = entry
        self._stored_bytes += entry.size
        self._changing_files(entry.project)[entry.filename] = entry
        self._touch(entry.project)

    def _unset_winner(self, entry: FileEntry) -> None:
        self._stored_bytes -= self._by_filename.pop(entry.filename).size
        self._changing_files(entry.project).pop(entry.filename, None)
        self._touch(entry.project)

    def _changing_files(self, project: NormalizedName) -> dict[str, FileEntry]:
        files = self._changing.get(project)
        if files is None:
            known = self._project_files(project)
            files = {e.filename: e for e in known} if known else {}  # a new project: {}
            self._changing[project] = files
        return files

    def _touch(self, project: NormalizedName) -> None:
        if self._loading:
            self._to_reindex.add(project)
        else:
            self._reindex(project)

    def _reindex(self, project: NormalizedName, serial: int | None = None) -> None:
        """Sort the project's changed files into ``_by_project``; then a new serial (unless
        ``serial`` is given: the caller's, given out after), the project's serial and the
        project list's. In that order: a reader keeps what it read under the serial it
        saw first (``_sealed_read``, the page cache), so a map must change before the
        serial that says it did."""
        files = self._changing.get(project) if self._loading else self._changing.pop(project, None)
        if files is None:
            return  # nothing changed since the last reindex
        known = project in self._project_serial
        if files:
            ordered = tuple(  # one file (most projects): no Version parsed
                in_page_order(files.values()) if len(files) > 1 else files.values())
            at_seal = self._sealed.project(project) if self._sealed is not None else None
            self._by_project[project] = (ordered if at_seal is None  # type: ignore[assignment]
                                         else _ChangedFiles.between(at_seal, ordered))
        elif known:
            del self._by_project[project]
        if serial is None:
            self._serial += 1
            serial = self._serial
        if files:
            self._project_serial[project] = serial
        elif known:
            del self._project_serial[project]
        if bool(files) != known:  # the project list changed: after what it is made from
            self.projects_serial += 1


def _yanks_of(model: ReadModel) -> Callable[[], Mapping[str, str]]:
    """The model's yank marks as they are when asked (a weak reference: the sealed table
    must not keep a reloaded index alive)."""
    ref = weakref.ref(model)

    def yanks() -> Mapping[str, str]:
        found = ref()
        return found.marks.yanks if found is not None else {}
    return yanks


def _page_order(entry: FileEntry) -> tuple[Version, str]:
    return Version(entry.version), entry.filename


def in_page_order(files: Iterable[FileEntry]) -> list[FileEntry]:
    """``files`` sorted as pages list them: by version, then name. Each version is parsed
    once (a version's wheels and sdist share it), and none for files of one version (a
    start sorts every project: ~0.05 s of its serial part at 29,000 projects)."""
    files = list(files)
    versions = {entry.version for entry in files}
    if len(versions) == 1:
        return sorted(files, key=_filename)
    parsed = {version: Version(version) for version in versions}
    return sorted(files, key=lambda entry: (parsed[entry.version], entry.filename))


def _filename(entry: FileEntry) -> str:
    return entry.filename


class _ChangedFiles:
    """A sealed project's files as changed since the seal: only the changed ones, by name
    (None: gone). The index keeps this, not the project's whole list, for a sealed
    project that changes: a project uploaded to all day (nightly builds) would hold
    every one of its files in every process, ~0.45 KB each, until the next seal and
    again after it."""

    __slots__ = ("by_name",)

    def __init__(self, by_name: dict[str, FileEntry | None]) -> None:
        self.by_name = by_name

    @classmethod
    def between(cls, at_seal: tuple[FileEntry, ...],
                now: tuple[FileEntry, ...]) -> _ChangedFiles:
        was = {entry.filename: entry for entry in at_seal}
        by_name: dict[str, FileEntry | None] = {
            entry.filename: entry for entry in now if was.get(entry.filename) != entry}
        if len(now) - len(by_name) != len(was):  # some went
            kept = {entry.filename for entry in now}
            by_name.update((name, None) for name in was if name not in kept)
        return cls(by_name)

    def applied_to(self, at_seal: Iterable[FileEntry]) -> tuple[FileEntry, ...]:
        """The files now, in page order, given the ones sealed (in page order)."""
        by_name = self.by_name
        files = [entry for entry in at_seal if entry.filename not in by_name]
        for entry in by_name.values():
            if entry is not None:
                insort(files, entry, key=_page_order)
        return tuple(files)


def _projects_now(sealed: SealedFiles,
                  by_project: Layered[NormalizedName, tuple[FileEntry, ...]]
                  ) -> Iterator[tuple[FileEntry, ...]]:
    """Every project's files as they are now, for the next seal: one pass over the table,
    then the projects changed since it."""
    changed = dict(by_project.changed())  # few: the projects changed since the seal
    for project, files in sealed.runs():
        if project not in changed:
            yield files
    for project, change in changed.items():
        files = (change.applied_to(sealed.project(project) or ())
                 if isinstance(change, _ChangedFiles) else change)
        if files:
            yield files
