"""Changing what the index holds from the command line: yank marks, project statuses,
and reading the audit log. Every change is one line of the audit/event log, which
the running server follows (its pages show it within a poll, with no reload).
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass

from packaging.version import InvalidVersion, Version

from pypid.auth import process_user
from pypid.config import Config
from pypid.distfile import InvalidFilenameError, is_valid_project_name, normalize, parse_filename
from pypid.events import Event, EventLog
from pypid.index.records import STATUSES
from pypid.storage import PackageRoot

_SINCE = re.compile(r"\d{4}-\d{2}-\d{2}(?:[T ]\d{2}(?::\d{2}(?::\d{2}(?:\.\d+)?)?)?)?Z?")


class ManageError(Exception):
    """What the operator asked for cannot be done (one line)."""


@dataclass(frozen=True, slots=True)
class Found:
    """A distribution file in the package root."""

    filename: str
    relpath: str
    project: str  # normalized
    version: Version


def cli_user() -> str:
    """Who made a change from the command line, as the audit log names them."""
    return f"cli:{process_user()}"


class Manager:
    """The package root and the event log of one config."""

    def __init__(self, config: Config) -> None:
        self.root = PackageRoot(config.root)
        self.events = EventLog(self.root.cache_dir)

    def files(self) -> Iterator[Found]:
        """Every distribution file below the root (names that do not parse are skipped)."""
        for stat in self.root.iter_files():
            filename = stat.relpath.rsplit("/", 1)[-1]
            try:
                dist = parse_filename(filename)
            except InvalidFilenameError:
                continue
            yield Found(filename, stat.relpath, dist.project, dist.version)

    def find(self, spec: str) -> list[Found]:
        """The files a SPEC names: a file name, or PROJECT==VERSION (every file of it)."""
        if "==" in spec:
            name, _, text = spec.partition("==")
            if not is_valid_project_name(name.strip()):
                raise ManageError(f"{name.strip()!r} is not a valid project name")
            try:
                version = Version(text.strip())
            except InvalidVersion:
                raise ManageError(f"{text.strip()!r} is not a valid version") from None
            project = normalize(name.strip())
            found = [f for f in self.files() if f.project == project and f.version == version]
            if not found:
                raise ManageError(f"no release {project}=={version} in {self.root.path}")
            return sorted(found, key=lambda f: f.filename)
        found = [f for f in self.files() if f.filename == spec]
        if not found:
            raise ManageError(f"no file named {spec} in {self.root.path} "
                              "(give a file name, or PROJECT==VERSION)")
        return found[:1]

    def project(self, name: str) -> str:
        """The normalized name of a project that has files here."""
        if not is_valid_project_name(name):
            raise ManageError(f"{name!r} is not a valid project name")
        project = normalize(name)
        if not any(f.project == project for f in self.files()):
            raise ManageError(f"no project named {project} in {self.root.path}")
        return project

    # -- changes

    def yank(self, spec: str, reason: str | None) -> list[Event]:
        return [self.events.append("yank", user=cli_user(), project=found.project,
                                   file=found.filename, reason=reason or "")
                for found in self.find(spec)]

    def unyank(self, spec: str) -> list[Event]:
        return [self.events.append("unyank", user=cli_user(), project=found.project,
                                   file=found.filename)
                for found in self.find(spec)]

    def set_status(self, name: str, status: str, reason: str | None) -> Event:
        if status not in STATUSES:
            raise ManageError(f"unknown status {status!r}: use one of {', '.join(STATUSES)}")
        return self.events.append("status", user=cli_user(), project=self.project(name),
                                  status=status, reason=reason or None)

    # -- reading the log

    def audit(self, project: str | None = None, since: str | None = None) -> Iterator[Event]:
        """The log's entries, oldest first, for one project and/or from a time on."""
        wanted = normalize(project) if project else None
        start = parse_since(since) if since else None
        events, _ = self.events.read()
        for event in events:
            if wanted is not None and event.get("project") != wanted:
                continue
            if start is not None and event.time < start:
                continue
            yield event


def parse_since(text: str) -> str:
    """A time given as ``2026-12-05``, ``2026-12-05T10:30`` (UTC), ... in the log's form.

    >>> parse_since("2026-12-05"), parse_since("2026-12-05 10:30")
    ('2026-12-05', '2026-12-05T10:30')
    """
    if _SINCE.fullmatch(text.strip()) is None:
        raise ManageError(f"--since {text!r}: give a UTC date or time, e.g. 2026-12-05 or "
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
