"""The ``pypid export`` and ``pypid import`` commands: carry files, with their marks,
statuses and owners, to a network with no connection."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

from pypid.bundle import BundleError
from pypid.bundle.importing import Bundle, import_bundle
from pypid.bundle.sources import choose, local_files, mirrored_files, project_facts
from pypid.bundle.writing import write_bundle
from pypid.config import load_config
from pypid.distfile import normalize
from pypid.events import EventLogError
from pypid.index.ledger import Ledger
from pypid.manage import ManageError, cli_actor, for_cli
from pypid.mirror.lockfiles import read_lock
from pypid.mirror.priming import Pinned, PrimingError, read_requirements
from pypid.mirror.store import MirrorStore
from pypid.storage import StorageError
from pypid.storage.select import open_storage

EXIT_OK = 0
EXIT_FAILURE = 1
EXIT_USAGE = 2
MB = 1024 * 1024
MakeCommand = Callable[..., argparse.ArgumentParser]


def add_commands(commands: Any, command: MakeCommand) -> None:
    """Add ``export`` and ``import`` to ``commands`` with the CLI's own ``command`` helper."""
    export = command(
        commands, "export", "write a tar bundle of files and their facts for an offline network",
        "Write one tar file holding the chosen files and a manifest (sha256, size, upload\n"
        "time, yank marks, uploader; each project's status and owners). Local files and,\n"
        "with upstream.mode = \"cache\", the mirror's cached files. Nothing chosen: every\n"
        "local file, and the audit log (a whole site, e.g. to move it into a bucket).\n"
        "A lock file gives exactly the files it lists.",
        "examples:\n  pypid export site.tar\n  pypid export site.tar --project demo\n"
        "  pypid export site.tar -r requirements.txt --lock uv.lock")
    export.add_argument("bundle", metavar="BUNDLE", help="the tar file to write")
    export.add_argument("--project", action="append", default=[], metavar="P",
                        help="every file of project P (may be given several times)")
    export.add_argument("-r", "--requirement", action="append", default=[], metavar="FILE",
                        help="a requirements file of == pins (may be given several times)")
    export.add_argument("--lock", action="append", default=[], metavar="FILE",
                        help="a pylock.toml or uv.lock: exactly the files it lists")
    export.set_defaults(handler=_export)
    importing = command(
        commands, "import", "add a bundle's files, marks, statuses and owners",
        "Check every member of the bundle against its manifest (sha256, size, safe flat\n"
        "names) before adding anything, then add the new files as local files with their\n"
        "upload times, and the yank marks, statuses and owners (users that exist here).\n"
        "A name taken here by other bytes refuses the whole bundle; the same bytes are\n"
        "skipped, so importing a bundle twice changes nothing. With storage.backend =\n"
        "\"s3\" the files go into the bucket; a whole site's audit log becomes the\n"
        "bucket's log when that is empty (a migration keeps its history).",
        "example:\n  pypid import site.tar")
    importing.add_argument("bundle", metavar="BUNDLE", help="the tar file to read")
    importing.set_defaults(handler=_import)


def _export(args: argparse.Namespace) -> int:
    config = load_config(args.config)
    try:
        pins: list[Pinned] = [p for f in args.requirement for p in read_requirements(Path(f))]
        pins += [p for f in args.lock for p in read_lock(Path(f))]
    except PrimingError as exc:
        print(f"pypid: {exc}", file=sys.stderr)
        return EXIT_USAGE
    root = open_storage(config)
    ledger = Ledger(root.event_log())
    candidates = local_files(root, ledger)
    store = None
    if config.upstream.mode == "cache":
        store = MirrorStore(Path(config.upstream.cache_root))
        candidates += mirrored_files(store)
    try:
        chosen = choose(candidates, [normalize(p) for p in args.project], pins)
        if not chosen:
            print(f"pypid: nothing to export: {root.where} holds no files", file=sys.stderr)
            return EXIT_FAILURE
        facts = project_facts({item.project for item in chosen}, ledger, store)
        # Every local file: a whole site (a migration) also carries its audit log.
        whole = not (args.project or pins) and not root.is_remote
        audit = Path(ledger.events.path) if whole else None
        manifest = write_bundle(Path(args.bundle), chosen, facts, audit=audit)
    except BundleError as exc:
        print(f"pypid: {exc}", file=sys.stderr)
        return EXIT_FAILURE
    size = sum(item.size for item in manifest.files)
    carried = f", the audit log ({manifest.audit.lines} lines)" if manifest.audit else ""
    print(f"wrote {args.bundle}: {len(manifest.files)} files ({size} bytes), "
          f"{len(manifest.projects)} projects{carried}")
    return EXIT_OK


def _import(args: argparse.Namespace) -> int:
    config = load_config(args.config)
    max_bytes = config.storage.max_upload_mb * MB
    try:
        with Bundle(Path(args.bundle), max_bytes) as bundle:
            manager = for_cli(config)
            report = import_bundle(bundle, manager, cli_actor(), max_bytes)
    except (BundleError, ManageError, EventLogError, StorageError) as exc:
        print(f"pypid: {args.bundle}: {exc}", file=sys.stderr)
        return EXIT_FAILURE
    if report.history:
        print(f"the bundle's audit log ({report.history} lines) is this site's log now")
    for name in report.imported:
        print(f"imported {name}")
    for mark in report.marks:
        print(mark)
    for note in report.notes:
        print(f"pypid: skipped: {note}", file=sys.stderr)
    print(f"{len(report.imported)} files imported, {len(report.skipped)} already here")
    return EXIT_OK
