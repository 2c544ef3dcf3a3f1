"""Reading the audit log: filters, ``--since`` times, one readable line per entry."""

from __future__ import annotations

import re
from collections.abc import Iterator

from pypid.distfile import normalize
from pypid.events import AuditLog, Event
from pypid.manage.rights import ManageError

_SINCE = re.compile(r"\d{4}-\d{2}-\d{2}(?:[T ]\d{2}(?::\d{2}(?::\d{2}(?:\.\d+)?)?)?)?Z?")


def entries(events: AuditLog, project: str | None = None, since: str | None = None, *,
            label: str = "--since") -> Iterator[Event]:
    """The log's entries, oldest first, for one project and/or from a time on."""
    wanted = normalize(project) if project else None
    start = parse_since(since, label) if since else None
    for event in events.scan():
        if wanted is not None and event.get("project") != wanted:
            continue
        if start is not None and event.time < start:
            continue
        yield event


def parse_since(text: str, label: str = "--since") -> str:
    """A time given as ``2026-12-05``, ``2026-12-05T10:30`` (UTC), ... in the log's form.

    >>> parse_since("2026-12-05"), parse_since("2026-12-05 10:30")
    ('2026-12-05', '2026-12-05T10:30')
    """
    if _SINCE.fullmatch(text.strip()) is None:
        raise ManageError(f"{label} {text!r}: give a UTC date or time, e.g. 2026-12-05 or "
                          "2026-12-05T10:30")
    return text.strip().rstrip("Z").replace(" ", "T")


def describe(event: Event) -> str:
    """One readable line for an entry."""
    parts = [f"{event.seq:>6}", event.time, event.user, event.client or "-", event.action]
    for key in ("project", "file", "status", "owner", "size"):
        value = event.get(key)
        if value is not None:
            parts.append(f"{key}={value}")
    if event.get("sha256"):
        parts.append(f"sha256={event.get('sha256')[:12]}")
    if event.get("reason"):
        parts.append(f"reason={event.get('reason')!r}")
    return " ".join(str(part) for part in parts)
