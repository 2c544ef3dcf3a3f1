"""The event log folded into what the index needs: marks for the pages, and who owns,
uploaded and removed what.

Every process keeps its own ``Ledger`` and follows the log by offset (only new
lines are read), so a change written by any worker or by the CLI reaches every
page within a poll. The pages' part (yanks, statuses) is handed to the index
as an immutable ``Marks``; owners, uploaders and removed names are read here.
"""

from __future__ import annotations

import threading
from types import MappingProxyType

from pypid.events import Event, EventLog
from pypid.index.records import Marks


class Ledger:
    """The state the log describes, as of the last ``catch_up``."""

    def __init__(self, events: EventLog) -> None:
        self.events = events
        self._offset = 0
        self._lock = threading.Lock()
        self._yanks: dict[str, str] = {}
        self._statuses: dict[str, tuple[str, str]] = {}
        self._owners: dict[str, frozenset[str]] = {}
        self._uploaders: dict[str, str] = {}
        self._removed: dict[str, str] = {}  # file name -> sha256 of the bytes it named
        self._marks = Marks()
        self.last_seq = 0

    @property
    def marks(self) -> Marks:
        return self._marks

    def catch_up(self) -> bool:
        """Read the lines written since the last call; True when the marks changed."""
        with self._lock:
            if self.events.size() == self._offset:
                return False
            new, self._offset = self.events.read(self._offset)
            if not new:
                return False
            before = (len(self._yanks), len(self._statuses))
            touched = False
            for event in new:
                touched |= self._fold(event)
                self.last_seq = event.seq
            if touched or before != (len(self._yanks), len(self._statuses)):
                self._marks = Marks(yanks=MappingProxyType(dict(self._yanks)),
                                    statuses=MappingProxyType(dict(self._statuses)))
                return True
            return False

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
        if action in ("owner-add", "owner-remove") and project and event.get("owner"):
            owners = set(self._owners.get(project, ()))
            (owners.add if action == "owner-add" else owners.discard)(event.get("owner"))
            self._owners[project] = frozenset(owners)
        elif action in ("upload", "import") and name:
            self._uploaders[name] = event.user
            self._removed.pop(name, None)
        elif action == "remove" and name:
            self._removed[name] = event.get("sha256") or ""
            return self._yanks.pop(name, None) is not None
        return False

    # -- reading (any thread; single dict reads)

    def owners(self, project: str) -> frozenset[str]:
        return self._owners.get(project, frozenset())

    def has_owner_record(self, project: str) -> bool:
        """Was ownership of ``project`` ever recorded (even if it has none now)?"""
        return project in self._owners

    def uploader(self, filename: str) -> str | None:
        return self._uploaders.get(filename)

    def removed_sha256(self, filename: str) -> str | None:
        """The sha256 of the bytes a removed file held (its name stays taken), or None."""
        return self._removed.get(filename)

    def projects_with_owners(self) -> set[str]:
        return {project for project, owners in self._owners.items() if owners}
