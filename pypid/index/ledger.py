"""The event log folded into what the pages need: yank marks and project statuses.

Every process keeps its own ``Ledger`` and follows the log by offset (only new
lines are read), so a change written by any worker or by the CLI reaches every
page within a poll. The result is handed to the index as an immutable ``Marks``.
(Owners, uploaders and removed names join when something reads them: issue 14.)
"""

from __future__ import annotations

import threading
from types import MappingProxyType

from pypid.events import Event, EventLog
from pypid.index.records import Marks


class Ledger:
    """The marks the log describes, as of the last ``catch_up``."""

    def __init__(self, events: EventLog) -> None:
        self.events = events
        self._offset = 0
        self._lock = threading.Lock()
        self._yanks: dict[str, str] = {}
        self._statuses: dict[str, tuple[str, str]] = {}
        self._marks = Marks()

    @property
    def marks(self) -> Marks:
        return self._marks

    def catch_up(self) -> bool:
        """Read the lines written since the last call; True when the marks changed."""
        with self._lock:
            if self.events.size() == self._offset:
                return False
            new, self._offset = self.events.read(self._offset)
            changed = False
            for event in new:
                changed |= self._fold(event)
            if changed:
                self._marks = Marks(yanks=MappingProxyType(dict(self._yanks)),
                                    statuses=MappingProxyType(dict(self._statuses)))
            return changed

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
        return False
