"""The ``pypid`` commands that change or show what the index holds: ``yank``,
``unyank``, ``remove``, ``status``, ``owner`` and ``audit``. Each change is one
audit-log line naming the Unix user (``cli:root``); the running server shows it
within two seconds, with no reload."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable
from typing import Any

from pypid.config import load_config
from pypid.events import EventLogError
from pypid.index.records import STATUSES
from pypid.manage import ManageError, Manager, cli_actor, describe, for_cli
from pypid.storage import StorageError

EXIT_OK = 0
EXIT_FAILURE = 1
MakeCommand = Callable[..., argparse.ArgumentParser]


def add_commands(commands: Any, command: MakeCommand) -> None:
    """Add the commands to ``commands`` with the CLI's own ``command`` helper."""
    for name, handler, help_, description, epilog in (
        ("yank", _yank, "mark files as yanked (PEP 592): installers skip them unless pinned",
         "Yank a file, or every file of a release. pip and uv then pick another version,\n"
         "except for a requirement that pins exactly this one (==).",
         "examples:\n  pypid yank demo==2.0 --reason 'breaks on Python 3.13'\n"
         "  pypid yank demo-2.0-py3-none-any.whl"),
        ("unyank", _unyank, "take yank marks back",
         "Remove the yank mark of a file, or of every file of a release.",
         "example:\n  pypid unyank demo==2.0"),
    ):
        marks = command(commands, name, help_, description, epilog)
        marks.add_argument("spec", metavar="SPEC", help="a file name, or PROJECT==VERSION")
        if name == "yank":
            marks.add_argument("--reason", default="", help="shown to installers (default: none)")
        marks.set_defaults(handler=handler)

    remove = command(
        commands, "remove", "delete files; their names stay taken",
        "Delete a file, or every file of a release (asks first on a terminal). The name\n"
        "stays taken: an upload of other bytes under it is refused (409) unless\n"
        "[storage] overwrite is on; the same bytes restore it.",
        "examples:\n  pypid remove demo==2.0\n  pypid remove demo-2.0.tar.gz --yes")
    remove.add_argument("spec", metavar="SPEC", help="a file name, or PROJECT==VERSION")
    remove.add_argument("--yes", action="store_true", help="do not ask")
    remove.set_defaults(handler=_remove)

    owner = command(
        commands, "owner", "who owns a project (may upload to it and manage it)",
        "Owners and admins ([auth] admins) may upload to a project, yank, remove and set\n"
        "its status. A project's first upload makes the uploader its owner.",
        "examples:\n  pypid owner add demo alice\n  pypid owner remove demo bob\n"
        "  pypid owner list")
    owner.add_argument("what", metavar="add|remove|list", choices=("add", "remove", "list"))
    owner.add_argument("project", metavar="PROJECT", nargs="?")
    owner.add_argument("user", metavar="USER", nargs="?")
    owner.set_defaults(handler=_owner)

    status = command(
        commands, "status", "set a project's status (PEP 792)",
        "archived and quarantined projects take no uploads; a quarantined project lists\n"
        "and serves no files; deprecated is a notice; active undoes them.",
        "examples:\n  pypid status demo archived --reason 'use demo2'\n  pypid status demo active")
    status.add_argument("project", metavar="PROJECT")
    status.add_argument("status", metavar="STATUS", choices=STATUSES,
                        help=" | ".join(STATUSES))
    status.add_argument("--reason", help="why (shown on the project's page)")
    status.set_defaults(handler=_status)

    audit = command(
        commands, "audit", "print the audit log (every change, who made it, from where)",
        "Print the log, oldest first; --verify checks its hash chain instead (exit 1 and\n"
        "the first broken line if it was altered).",
        "examples:\n  pypid audit --project demo --since 2026-12-01\n  pypid audit --json\n"
        "  pypid audit --verify")
    audit.add_argument("--project", metavar="P", help="only this project's entries")
    audit.add_argument("--since", metavar="TIME", help="from this UTC date or time on")
    audit.add_argument("--json", action="store_true", help="the entries as stored, one per line")
    audit.add_argument("--verify", action="store_true", help="check the hash chain")
    audit.set_defaults(handler=_audit)


def _manager(args: argparse.Namespace) -> Manager:
    return for_cli(load_config(args.config))


def _guarded(run: Callable[[argparse.Namespace], int]) -> Callable[[argparse.Namespace], int]:
    """ManageError and a log that cannot take the change: one line, exit 1."""
    def handler(args: argparse.Namespace) -> int:
        try:
            return run(args)
        except (ManageError, EventLogError, StorageError) as exc:
            print(f"pypid: {exc}", file=sys.stderr)
            return EXIT_FAILURE
    return handler


@_guarded
def _yank(args: argparse.Namespace) -> int:
    for event in _manager(args).yank(cli_actor(), args.spec, args.reason):
        reason = f" ({event.get('reason')})" if event.get("reason") else ""
        print(f"yanked {event.get('file')}{reason}")
    return EXIT_OK


@_guarded
def _unyank(args: argparse.Namespace) -> int:
    for event in _manager(args).unyank(cli_actor(), args.spec):
        print(f"unyanked {event.get('file')}")
    return EXIT_OK


@_guarded
def _remove(args: argparse.Namespace) -> int:
    manager = _manager(args)
    files = manager.find(args.spec)
    if not args.yes and sys.stdin.isatty():
        names = "\n  ".join(found.filename for found in files)
        answer = input(f"remove these files from {manager.where}?\n  {names}\n[y/N] ")
        if answer.strip().lower() not in ("y", "yes"):
            print("nothing removed")
            return EXIT_FAILURE
    for event in manager.remove(cli_actor(), files):
        print(f"removed {event.get('file')}")
    return EXIT_OK


@_guarded
def _owner(args: argparse.Namespace) -> int:
    manager = _manager(args)
    if args.what == "list":
        if args.user is not None:
            raise ManageError("owner list takes at most a PROJECT")
        projects = [manager.project(args.project)] if args.project else manager.projects()
        for project in projects:
            owners = manager.owners(project)
            shown = "(no owner yet)" if owners is None else " ".join(sorted(owners)) or "(none)"
            print(f"{project}: {shown}")
        return EXIT_OK
    if args.project is None or args.user is None:
        raise ManageError(f"usage: pypid owner {args.what} PROJECT USER")
    if args.what == "add":
        event = manager.add_owner(cli_actor(), args.project, args.user)
        if event is None:
            print(f"{args.user} already owns {manager.project(args.project)}")
        else:
            print(f"{args.user} now owns {event.get('project')}")
        return EXIT_OK
    event = manager.remove_owner(cli_actor(), args.project, args.user)
    print(f"{args.user} no longer owns {event.get('project')}")
    return EXIT_OK


@_guarded
def _status(args: argparse.Namespace) -> int:
    event = _manager(args).set_status(cli_actor(), args.project, args.status,
                                      args.reason)
    print(f"{event.get('project')} is {event.get('status')}")
    return EXIT_OK


@_guarded
def _audit(args: argparse.Namespace) -> int:
    manager = _manager(args)
    if args.verify:
        count, problem = manager.events.verify()
        if problem is not None:
            print(f"{manager.events.path}: {problem}", file=sys.stderr)
            return EXIT_FAILURE
        print(f"{manager.events.path}: {count} entries, the chain is intact")
        return EXIT_OK
    for event in manager.audit(cli_actor(), args.project, args.since):
        print(event.line.decode() if args.json else describe(event))
    return EXIT_OK
