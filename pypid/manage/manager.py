"""Every change to what the index holds besides an upload's bytes, decided once for the
command line and the HTTP API: yank, unyank, remove, status, owners.

Each change is checked (``Policy``), then written as one audit/event-log line,
which is what makes it count: the line is fsynced before the change is applied,
and a log that cannot take it (a full disk) refuses the change. A removal takes
the file away only once its line is written. Uploads pass through ``UploadGate``.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator
from typing import Any

from packaging.version import Version

from pypid.events import AuditLog, Event
from pypid.index.ledger import Ledger
from pypid.index.records import STATUSES
from pypid.index.slots import release_slot, slot_name
from pypid.manage.catalog import Catalog, Found, find, project_name, release, sha256_of
from pypid.manage.reading import entries
from pypid.manage.rights import (
    Actor,
    ConflictError,
    ForbiddenError,
    ManageError,
    NotFoundError,
    Policy,
)
from pypid.storage import Storage, StorageError

log = logging.getLogger("pypid.manage")

Changed = Callable[[list[str]], None]  # relpaths removed (maybe none): apply the change now


class Manager:
    """The changes of one package root, its event log and its folded ledger."""

    def __init__(self, root: Storage, events: AuditLog, ledger: Ledger, catalog: Catalog, *,
                 policy: Policy, users: Callable[[], list[str]], overwrite: bool = False,
                 changed: Changed | None = None) -> None:
        self.root = root
        self.events = events
        self.ledger = ledger
        self.catalog = catalog
        self.policy = policy
        self.overwrite = overwrite  # [storage] overwrite: a removed name may be reused
        self._users = users  # the htpasswd file's users, read when asked
        self._changed = changed
        self.where = root.where

    # -- what the index holds

    def find(self, spec: str) -> list[Found]:
        return find(self.catalog, spec, self.where)

    def release(self, name: str, version: Version) -> list[Found]:
        return release(self.catalog, project_name(name), version, self.where)

    def project(self, name: str) -> str:
        """The normalized name of a project here (with files, or with owners recorded)."""
        project = project_name(name)
        self.ledger.catch_up()
        # A cheap look at each: a whole list of Found (a version parsed per file) was made
        # here for a yes or no.
        if not self.ledger.is_claimed(project) and not self.catalog.has_project(project):
            raise NotFoundError(f"no project named {project} in {self.where}")
        return project

    def owners(self, project: str) -> frozenset[str] | None:
        self.ledger.catch_up()
        return self.ledger.owners(project)

    def projects(self) -> list[str]:
        """Every project with files or with owners recorded."""
        self.ledger.catch_up()
        return sorted(self.catalog.projects() | self.ledger.claimed())

    def ownerless(self) -> list[str]:
        """Projects with files whose ownership was never recorded (the next upload claims)."""
        self.ledger.catch_up()
        return sorted(self.catalog.projects() - self.ledger.claimed())

    # -- changes

    def yank(self, actor: Actor, spec: str, reason: str | None) -> list[Event]:
        files = self._allowed(actor, "yank files of", self.find(spec))
        return self._append_each(actor, "yank", files, reason=reason or "")

    def unyank(self, actor: Actor, spec: str) -> list[Event]:
        files = self._allowed(actor, "unyank files of", self.find(spec))
        return self._append_each(actor, "unyank", files)

    def remove(self, actor: Actor, files: list[Found]) -> list[Event]:
        """Delete the files; each one's line is written before it goes."""
        files = self._allowed(actor, "remove files of", files)
        done: list[Event] = []
        removed: list[str] = []
        try:
            with self.root.publish_lock():  # no upload comes between the check and the end
                for found in files:
                    if not self.root.exists(found.relpath):  # a racing removal took it
                        raise NotFoundError(f"no file named {found.filename} in {self.where}")
                    sha256 = sha256_of(self.root, found)
                    with self.root.removing(found.relpath):
                        done.append(self._append(actor, "remove", project=found.project,
                                                 file=found.filename, sha256=sha256,
                                                 size=found.size))
                    removed.append(found.relpath)
                    self._free_claim(found.filename)
        finally:
            self._applied(removed)
        return done

    def _free_claim(self, filename: str) -> None:
        """A removed file's release claim (a bucket's) goes with it: another spelling of the
        release may be uploaded at once, as on a local root. A claim left (the store failed
        here) is void once stale anyway."""
        try:
            self.root.unclaim(slot_name(filename), filename)
        except StorageError as exc:
            log.warning("removed %s, but its release claim stays until it is stale: %s",
                        filename, exc)

    def set_status(self, actor: Actor, name: str, status: str, reason: str | None) -> Event:
        if status not in STATUSES:
            raise ManageError(f"unknown status {status!r}: use one of {', '.join(STATUSES)}")
        project = self.project(name)
        self.policy.check(actor, "set the status of", project, self.ledger.owners(project))
        event = self._append(actor, "status", project=project, status=status,
                             reason=reason or None)
        self._applied([])
        return event

    def add_owner(self, actor: Actor, name: str, user: str) -> Event | None:
        """Make ``user`` an owner; None if they are one already."""
        self.policy.check_admin(actor, "managing owners")
        project = self.project(name)
        if user not in self._users():
            raise ManageError(f"no user named {user!r} (add them first: pypid user add {user})")
        if user in (self.ledger.owners(project) or ()):
            return None
        return self._append(actor, "owner-add", project=project, owner=user)

    def remove_owner(self, actor: Actor, name: str, user: str) -> Event:
        self.policy.check_admin(actor, "managing owners")
        project = self.project(name)
        if user not in (self.ledger.owners(project) or ()):
            raise NotFoundError(f"{user} is not an owner of {project}")
        return self._append(actor, "owner-remove", project=project, owner=user)

    def user_changed(self, actor: Actor, action: str, user: str) -> Event:
        """A line for ``pypid user add/remove`` (the htpasswd file is already changed)."""
        return self._append(actor, action, owner=user)

    def upload_gate(self, actor: Actor, *, checked: bool = True) -> UploadGate:
        """The gate of one upload; ``checked`` False: uploads need no login, so anyone
        may upload (the project's status and removed names still hold)."""
        return UploadGate(self, actor, checked)

    # -- reading the log

    def audit(self, actor: Actor, project: str | None = None, since: str | None = None,
              *, label: str = "--since") -> Iterator[Event]:
        """The log's entries, oldest first, for one project and/or from a time on."""
        self.policy.check_admin(actor, "reading the audit log")
        return entries(self.events, project, since, label=label)

    # -- inside

    def _allowed(self, actor: Actor, doing: str, files: list[Found]) -> list[Found]:
        self.ledger.catch_up()
        for project in sorted({found.project for found in files}):
            self.policy.check(actor, doing, project, self.ledger.owners(project))
        return files

    def _append_each(self, actor: Actor, action: str, files: list[Found],
                     **fields: Any) -> list[Event]:
        try:
            return [self._append(actor, action, project=found.project, file=found.filename,
                                 **fields) for found in files]
        finally:
            self._applied([])

    def _append(self, actor: Actor, action: str, **fields: Any) -> Event:
        return self.events.append(action, user=actor.user, client=actor.client, **fields)

    def _applied(self, removed: list[str]) -> None:
        self.ledger.catch_up()
        if self._changed is not None:
            self._changed(removed)


class UploadGate:
    """Admits one upload (status, rights, removed names) and records it, under the
    publish lock: the first upload to an unclaimed project claims it, and a second
    racing one sees that claim."""

    def __init__(self, manager: Manager, actor: Actor, checked: bool) -> None:
        self.manager = manager
        self.actor = actor
        self.checked = checked

    def admit(self, filename: str, sha256: str) -> None:
        ledger = self.manager.ledger
        ledger.catch_up()
        slot = release_slot(filename)
        project = slot.project
        status, reason = ledger.marks.status(project)
        if status in ("archived", "quarantined"):
            why = f": {reason}" if reason else ""
            raise ForbiddenError(f"{project} is {status}{why}; it takes no uploads")
        if self.checked:
            self.manager.policy.check(self.actor, "upload to", project, ledger.owners(project))
        for name, old_sha256 in ledger.removed(project).items():
            if old_sha256 != sha256 and not self.manager.overwrite \
                    and _same_slot(name, slot):
                raise ConflictError(f"File already exists: {name} (it was removed; "
                                    "its name stays taken)")

    def record(self, filename: str, sha256: str, size: int) -> None:
        project = release_slot(filename).project
        self.manager.events.append("upload", user=self.actor.user, client=self.actor.client,
                                   project=project, file=filename, sha256=sha256, size=size)
        self.manager.ledger.catch_up()


def _same_slot(name: str, slot: Any) -> bool:
    try:
        return release_slot(name) == slot
    except ValueError:
        return False
