"""Managing what the index holds: yank, unyank, remove, status, owners, the audit log.

``manager`` makes the changes (for the command line and the HTTP API alike),
``rights`` says who may, ``catalog`` finds the files a change names, ``reading``
shows the log. ``for_cli`` and ``for_server`` put one together.
"""

from __future__ import annotations

import logging
from pathlib import Path

from pypid.auth import Htpasswd, process_user
from pypid.config import Config
from pypid.distfile import InvalidFilenameError, parse_filename
from pypid.events import EventLogError
from pypid.index.ledger import Ledger
from pypid.index.model import ReadModel
from pypid.manage.catalog import Found, IndexCatalog, RootCatalog
from pypid.manage.manager import Changed, Manager, UploadGate
from pypid.manage.reading import describe, entries, parse_since
from pypid.manage.rights import (
    Actor,
    ConflictError,
    ForbiddenError,
    ManageError,
    NotFoundError,
    Policy,
)
from pypid.storage import Storage
from pypid.storage.select import open_storage

log = logging.getLogger("pypid.manage")

__all__ = ["Actor", "ConflictError", "ForbiddenError", "Found", "ManageError", "Manager",
           "NotFoundError", "Policy", "UploadGate", "cli_actor", "describe", "entries",
           "for_cli", "for_server", "parse_since", "prepare_root", "report_ownerless"]


def prepare_root(root: Storage) -> None:
    """Before serving: a torn last audit line cut (and logged), and what killed uploads
    and removals left cleared: a file half removed goes if its removal was recorded,
    else it is put back."""
    events = root.event_log()
    try:
        events.repair()
    except EventLogError as exc:
        log.warning("cannot repair the audit log: %s", exc)
    ledger: Ledger | None = None

    def was_removed(relpath: str) -> bool:
        nonlocal ledger
        if ledger is None:
            ledger = Ledger(events)
            ledger.catch_up()
        name = relpath.rsplit("/", 1)[-1]
        try:
            project = parse_filename(name).project
        except InvalidFilenameError:
            return False
        return name in ledger.removed(project)

    root.sweep_temp_files(was_removed)


def report_ownerless(manager: Manager) -> None:
    """One start-up line naming how many projects nobody owns yet."""
    if not manager.policy.project_owners:
        return
    ownerless = manager.ownerless()
    if ownerless:
        shown = ", ".join(ownerless[:5]) + (", ..." if len(ownerless) > 5 else "")
        log.info("%d project(s) have no owner yet (%s): the next upload with a login claims "
                 "each; or: pypid owner add PROJECT USER", len(ownerless), shown)


def policy(config: Config) -> Policy:
    return Policy(frozenset(config.auth.admins), config.auth.project_owners)


def cli_actor() -> Actor:
    """Whoever runs the command line: an admin (they can write the server's files anyway),
    named ``cli:<unix user>`` in the log."""
    return Actor(f"cli:{process_user()}", None, admin=True)


def for_cli(config: Config) -> Manager:
    """The command line's manager: the root walked on disk, its own ledger."""
    root = open_storage(config)
    events = root.event_log()
    return Manager(root, events, Ledger(events), RootCatalog(root), policy=policy(config),
                   users=Htpasswd(Path(config.auth.htpasswd)).users,
                   overwrite=config.storage.overwrite)


def for_server(config: Config, index: ReadModel, htpasswd: Htpasswd,
               changed: Changed) -> Manager:
    """The server's manager: the live index, whose ledger it shares."""
    ledger = index.ledger
    return Manager(index.root, ledger.events, ledger, IndexCatalog(index),
                   policy=policy(config), users=htpasswd.users,
                   overwrite=config.storage.overwrite, changed=changed)
