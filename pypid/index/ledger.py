"""The event log folded into the facts that are not files' bytes.

Yank marks and project statuses (what the pages show, handed to the index as an
immutable ``Marks``), and what governance decides with: each project's owners,
each file's uploader, and the names of removed files (a name never means two
different files).

Every process keeps its own ``Ledger`` and follows the log by offset (only new
lines are read), so a change written by any worker or by the CLI reaches every
page within a poll. A decision that must see every change before it (an upload
claiming a project) calls ``catch_up`` under the storage's publish lock.
"""

from __future__ import annotations

import sys
import threading
from collections.abc import Callable, Mapping
from types import MappingProxyType

from pypid.events import ANONYMOUS, AuditLog, Event
from pypid.index.hashed import HashedValues
from pypid.index.records import Marks

_NONE: Mapping[str, str] = MappingProxyType({})
FILE_ACTIONS = frozenset(("upload", "import", "remove"))


def is_login(user: str) -> bool:
    """A user who logged in over HTTP (not the CLI, not an anonymous upload)."""
    return bool(user) and user != ANONYMOUS and not user.startswith("cli:")


class Ledger:
    """What the log describes, as of the last ``catch_up``."""

    def __init__(self, events: AuditLog) -> None:
        self.events = events
        self._offset = 0
        self._lock = threading.Lock()
        self._yanks: dict[str, str] = {}
        self._statuses: dict[str, tuple[str, str]] = {}
        self._marks = Marks()
        # project -> its owners; a project in here was claimed (maybe no owner is left)
        self._owners: dict[str, set[str]] = {}
        self._uploaders = HashedValues()  # file name -> login, of every file ever uploaded
        self._removed: dict[str, dict[str, str]] = {}  # project -> {file name: sha256}
        # project -> uploaded, not removed since, and not yet shown by the index when it
        # last sealed (``forget_indexed``)
        self._recorded: dict[str, set[str]] = {}
        # A remote root learns of new and removed files from the log: its lines of files,
        # collected here (None: not collected) for ``take_file_events``.
        self._file_events: list[Event] | None = None

    @property
    def marks(self) -> Marks:
        return self._marks

    @property
    def position(self) -> int:
        """How far into the log the ledger has read: goes up with every change it folds."""
        return self._offset

    def behind(self) -> bool:
        """Has the log lines this ledger has not read (cheap: a stat)?"""
        return self.events.size() != self._offset

    def catch_up(self) -> bool:
        """Read the lines written since the last call; True when the marks changed."""
        with self._lock:
            if self.events.size() == self._offset:
                return False
            new, self._offset = self.events.read(self._offset)
            changed = False
            for event in new:
                changed |= self._fold(event)
                if self._file_events is not None and event.action in FILE_ACTIONS:
                    self._file_events.append(event)
            if changed:
                self._marks = Marks(yanks=MappingProxyType(dict(self._yanks)),
                                    statuses=MappingProxyType(dict(self._statuses)))
            return changed

    def collect_file_events(self) -> None:
        """From now on, keep the upload, import and remove lines for ``take_file_events``."""
        with self._lock:
            if self._file_events is None:
                self._file_events = []

    def take_file_events(self) -> list[Event]:
        """The file lines read since the last call, oldest first."""
        with self._lock:
            taken, self._file_events = self._file_events or [], (
                None if self._file_events is None else [])
            return taken

    # -- governance's questions (answers as of the last catch_up)

    def owners(self, project: str) -> frozenset[str] | None:
        """The project's owners; None if ownership was never recorded (the next upload
        by a login claims it). An empty set: claimed, but only admins are left."""
        owners = self._owners.get(project)
        return None if owners is None else frozenset(owners)

    def knows(self, project: str) -> bool:
        """Did this index ever hold the project (owners recorded, or files removed)? Such a
        name is never sent upstream, even with no files left (dependency confusion)."""
        return project in self._owners or project in self._removed

    def is_claimed(self, project: str) -> bool:
        return project in self._owners

    def claimed(self) -> frozenset[str]:
        return frozenset(self._owners)

    def uploader(self, filename: str) -> str | None:
        return self._uploaders.get(filename)

    def recorded(self, project: str) -> frozenset[str]:
        """The file names the log says were uploaded (or imported) to the project and not
        removed since, less those the index showed when ``forget_indexed`` was last called:
        what another process stored a moment ago, before any watcher saw it."""
        return frozenset(self._recorded.get(project, ()))

    def forget_indexed(self, indexed: Callable[[str], bool]) -> None:
        """Let go of the recorded names ``indexed`` says the index shows (it answers for
        them from now on; the index calls this when it seals). Otherwise every process
        would keep the name of every file ever uploaded, for good."""
        with self._lock:
            for project, names in list(self._recorded.items()):
                left = {name for name in names if not indexed(name)}
                if left:
                    self._recorded[project] = left
                else:
                    del self._recorded[project]

    def removed(self, project: str) -> Mapping[str, str]:
        """The project's removed files: name -> sha256 (names that stay taken)."""
        removed = self._removed.get(project)
        return MappingProxyType(removed) if removed else _NONE

    # -- folding

    def _fold(self, event: Event) -> bool:
        """Apply one event; True when it changed a mark (a page changes)."""
        action, name, project = event.action, event.get("file"), event.get("project")
        if action == "yank" and name:
            self._yanks[name] = event.get("reason") or ""
            return True
        if action == "unyank" and name:
            return self._yanks.pop(name, None) is not None
        if action == "status" and project:
            status = event.get("status") or "active"
            if status == "active":
                return self._statuses.pop(project, None) is not None
            self._statuses[project] = (status, event.get("reason") or "")
            return True
        if project:
            self._fold_governance(event, project, name)
        return False

    def _fold_governance(self, event: Event, project: str, name: str | None) -> None:
        action, user = event.action, sys.intern(event.user)
        if action in ("upload", "import") and name:
            self._recorded.setdefault(project, set()).add(name)
            removed = self._removed.get(project)
            if removed is not None:
                removed.pop(name, None)
            if is_login(user):
                self._uploaders.set(name, user)
                if project not in self._owners:
                    self._owners[project] = {user}  # the first upload claims the project
        elif action == "remove" and name:
            self._recorded.get(project, set()).discard(name)
            self._removed.setdefault(project, {})[name] = event.get("sha256") or ""
        elif action == "owner-add" and event.get("owner"):
            self._owners.setdefault(project, set()).add(sys.intern(event.get("owner")))
        elif action == "owner-remove" and event.get("owner"):
            self._owners.setdefault(project, set()).discard(event.get("owner"))
