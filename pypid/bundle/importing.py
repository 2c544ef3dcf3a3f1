"""Importing a bundle: every member checked against the manifest before anything is
added (all or nothing), then each new file stored as a local file with its upload time
(linked into a package root, or created conditionally in a bucket), and one audit line
per file and per mark the bundle carries.

A bundle of a whole site carries its audit log (``audit.jsonl``). Imported into a
bucket whose log is empty (a migration), that log becomes the bucket's, verbatim, so
the history, uploaders, owners, marks and statuses move with their hash chain; the
import's own lines follow it. Anywhere else it is left out, and the marks, statuses
and owners are written as new lines."""

from __future__ import annotations

import contextlib
import hashlib
import hmac
import os
import tarfile
import tempfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO

from pypid.bundle.manifest import (
    AUDIT_NAME,
    MANIFEST_NAME,
    MAX_MANIFEST_BYTES,
    BundledFile,
    BundleError,
    Manifest,
    decode,
    member_problem,
    parse_time_ns,
)
from pypid.distfile import hash_file
from pypid.events import check_chain
from pypid.manage import Actor, ManageError, Manager
from pypid.manage.catalog import Found
from pypid.storage.s3 import BucketRoot
from pypid.storage.s3log import BucketLog
from pypid.storage.s3upload import BucketIncoming

CHUNK = 1024 * 1024


@dataclass
class Report:
    """What an import did, for the command to print."""

    imported: list[str] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)  # the same bytes were here already
    marks: list[str] = field(default_factory=list)  # yank, status, owner lines written
    notes: list[str] = field(default_factory=list)  # owners that could not be added
    history: int = 0  # lines of the bundle's audit log made this site's log


class Bundle:
    """An open bundle whose members all match its manifest (checked when opened)."""

    def __init__(self, path: Path, max_bytes: int) -> None:
        try:
            self.tar = tarfile.open(path, "r:*")  # noqa: SIM115 - closed by close()
        except tarfile.TarError as exc:
            raise BundleError(f"not a tar file ({type(exc).__name__})") from None
        try:
            self.members = self._members()
            self.manifest = self._manifest()
            self._check(max_bytes)
        except BaseException:
            self.tar.close()
            raise

    def close(self) -> None:
        self.tar.close()

    def __enter__(self) -> Bundle:
        return self

    def __exit__(self, *_: object) -> None:
        self.close()

    def _members(self) -> dict[str, tarfile.TarInfo]:
        members: dict[str, tarfile.TarInfo] = {}
        try:
            infos = self.tar.getmembers()
        except (tarfile.TarError, OSError) as exc:
            raise BundleError(f"the bundle is damaged: {exc}") from None
        for info in infos:
            problem = member_problem(info.name)
            if problem:
                raise BundleError(problem)
            if not info.isreg():
                raise BundleError(f"member {info.name!r} is not a regular file "
                                  "(links, devices and folders are refused)")
            if info.name in members:
                raise BundleError(f"member {info.name!r} appears twice")
            members[info.name] = info
        return members

    def _manifest(self) -> Manifest:
        info = self.members.get(MANIFEST_NAME)
        if info is None:
            raise BundleError(f"the bundle has no {MANIFEST_NAME}")
        if info.size > MAX_MANIFEST_BYTES:
            raise BundleError(f"{MANIFEST_NAME} is larger than {MAX_MANIFEST_BYTES} bytes")
        return decode(self._read_all(info))

    def _check(self, max_bytes: int) -> None:
        """Every file the manifest lists is a member of its size and sha256, and nothing more."""
        listed = {f.filename: f for f in self.manifest.files}
        for name in self.members:
            if name == AUDIT_NAME and self.manifest.audit is not None:
                continue
            if name != MANIFEST_NAME and name not in listed:
                raise BundleError(f"member {name!r} is not in {MANIFEST_NAME}")
        for item in self.manifest.files:
            info = self.members.get(item.filename)
            if info is None:
                raise BundleError(f"{item.filename}: listed in {MANIFEST_NAME} but missing")
            if info.size != item.size:
                raise BundleError(f"{item.filename}: {info.size} bytes, {MANIFEST_NAME} says "
                                  f"{item.size}")
            if item.size > max_bytes:
                raise BundleError(f"{item.filename}: larger than storage.max_upload_mb")
            digest = hashlib.sha256()
            self.copy(item, digest.update)
            if not hmac.compare_digest(digest.hexdigest(), item.sha256):
                raise BundleError(f"{item.filename}: sha256 {digest.hexdigest()} does not "
                                  f"match {MANIFEST_NAME} ({item.sha256})")
        self.history()

    def history(self) -> list[bytes]:
        """The audit log the bundle carries, its lines checked (size, sha256, chain)."""
        audit = self.manifest.audit
        if audit is None:
            return []
        info = self.members.get(AUDIT_NAME)
        if info is None or info.size != audit.size:
            raise BundleError(f"{AUDIT_NAME}: missing or not the size {MANIFEST_NAME} says")
        data = self._read_all(info)
        if not hmac.compare_digest(hashlib.sha256(data).hexdigest(), audit.sha256):
            raise BundleError(f"{AUDIT_NAME}: sha256 does not match {MANIFEST_NAME}")
        if data and not data.endswith(b"\n"):
            raise BundleError(f"{AUDIT_NAME}: its last line is unfinished")
        lines = data.split(b"\n")[:-1]
        problem = (check_chain(lines) if len(lines) == audit.lines else
                   f"{len(lines)} lines, {MANIFEST_NAME} says {audit.lines}")
        if problem is not None:
            raise BundleError(f"{AUDIT_NAME}: {problem}")
        return lines

    def copy(self, item: BundledFile, write: Callable[[bytes], object]) -> None:
        """Feed the member's bytes to ``write``, chunk by chunk."""
        try:
            with self._open(self.members[item.filename]) as handle:
                while chunk := handle.read(CHUNK):
                    write(chunk)
        except (tarfile.TarError, OSError) as exc:
            raise BundleError(f"{item.filename}: cannot read it from the bundle: {exc}") from None

    def _open(self, info: tarfile.TarInfo) -> IO[bytes]:
        handle = self.tar.extractfile(info)
        if handle is None:  # not a regular member: refused when opened
            raise BundleError(f"member {info.name!r} is not a regular file")
        return handle

    def _read_all(self, info: tarfile.TarInfo) -> bytes:
        try:
            with self._open(info) as handle:
                return handle.read()
        except (tarfile.TarError, OSError) as exc:
            raise BundleError(f"{info.name}: cannot read it from the bundle: {exc}") from None


def plan(bundle: Bundle, manager: Manager) -> tuple[list[BundledFile], list[str]]:
    """(files to add, files already here with the same bytes); BundleError for a name
    taken here by other bytes (a file, or a removed file whose name stays taken)."""
    here: dict[str, Found] = {}
    for found in manager.catalog.files():
        here.setdefault(found.filename, found)
    manager.ledger.catch_up()
    new, same = [], []
    for item in bundle.manifest.files:
        found = here.get(item.filename)
        if found is not None:
            with manager.root.open(found.relpath) as handle:
                sha256 = hash_file(handle)[0]
            if sha256 != item.sha256:
                raise BundleError(f"{item.filename}: the name is taken here by other bytes "
                                  f"(sha256 {sha256})")
            same.append(item.filename)
            continue
        removed = manager.ledger.removed(item.project).get(item.filename)
        if removed is not None and removed != item.sha256 and not manager.overwrite:
            raise BundleError(f"{item.filename}: the name is taken here by a removed file "
                              "with other bytes (a name never means two files)")
        new.append(item)
    return new, same


def import_bundle(bundle: Bundle, manager: Manager, actor: Actor, max_bytes: int) -> Report:
    """Add the bundle's new files, then its yank marks, statuses and owners."""
    new, same = plan(bundle, manager)
    report = Report(skipped=same)
    _adopt_history(bundle, manager, report)
    for item in new:
        _add_file(bundle, manager, actor, item, max_bytes)
        report.imported.append(item.filename)
    manager.ledger.catch_up()
    _marks(bundle.manifest, manager, actor, report)
    return report


def _add_file(bundle: Bundle, manager: Manager, actor: Actor, item: BundledFile,
              max_bytes: int) -> None:
    """Receive the member into a temp file in the root's file system (checked again: the
    bundle may have changed since), give it its upload time and owner, link it in."""
    root = manager.root
    # Into a bucket: spooled in TMPDIR, no node copy (the CLI may be root on a node).
    incoming = (BucketIncoming(root, max_bytes, spool=Path(tempfile.gettempdir()),
                               keep_copy=False)
                if isinstance(root, BucketRoot) else root.incoming(max_bytes))
    try:
        bundle.copy(item, incoming.write)
        sha256 = incoming.digests.hexdigest("sha256")
        if not hmac.compare_digest(sha256, item.sha256):
            raise BundleError(f"{item.filename}: changed while it was imported; stopped")
        when = parse_time_ns(item.upload_time)
        if isinstance(incoming, BucketIncoming):
            incoming.upload_time_ns = when  # kept with the object (LastModified is the store's)
        else:
            fd = incoming.fileno()
            os.utime(fd, ns=(when, when))
            _same_owner_as_root(fd, root.path)
        relpath = root.upload_relpath(item.filename)
        with root.publish_lock():
            try:
                incoming.publish(relpath, overwrite=False)
            except FileExistsError:
                raise BundleError(f"{item.filename}: appeared here while importing; "
                                  "stopped") from None
            try:
                manager.events.append("import", user=actor.user, client=actor.client,
                                      project=item.project, file=item.filename,
                                      sha256=item.sha256, size=item.size)
            except BaseException:
                root.remove(relpath)  # a file without its line does not count
                raise
    finally:
        incoming.discard()


def _adopt_history(bundle: Bundle, manager: Manager, report: Report) -> None:
    """The bundle's audit log becomes a bucket's empty log (see the module's docstring)."""
    if bundle.manifest.audit is None:
        return
    manager.ledger.catch_up()
    if not manager.root.is_remote or manager.ledger.position:
        where = "a bucket" if manager.root.is_remote else "a package root"
        report.notes.append(f"the bundle's audit log ({bundle.manifest.audit.lines} lines) "
                            f"was not carried over: {where}'s log is taken over only when "
                            "it is empty and in a bucket")
        return
    if not isinstance(manager.events, BucketLog):
        raise BundleError("this site's audit log cannot take over another")
    lines = bundle.history()
    manager.events.adopt(lines)
    report.history = len(lines)
    manager.ledger.catch_up()


def _marks(manifest: Manifest, manager: Manager, actor: Actor, report: Report) -> None:
    """The yank marks, statuses and owners, each written only when it is not so already
    (a second import of the same bundle writes nothing)."""
    yanks = manager.ledger.marks.yanks
    for item in manifest.files:
        if item.yanked is not None and yanks.get(item.filename) != item.yanked:
            manager.events.append("yank", user=actor.user, client=actor.client,
                                  project=item.project, file=item.filename,
                                  reason=item.yanked)
            report.marks.append(f"yanked {item.filename}")
    manager.ledger.catch_up()
    for project in manifest.projects:
        if manager.ledger.marks.status(project.name) != (project.status, project.reason):
            with _noted(report, project.name):
                manager.set_status(actor, project.name, project.status, project.reason)
                report.marks.append(f"{project.name} is {project.status}")
        for owner in project.owners:
            with _noted(report, project.name):
                if manager.add_owner(actor, project.name, owner) is not None:
                    report.marks.append(f"{owner} owns {project.name}")
    manager.ledger.catch_up()


@contextlib.contextmanager
def _noted(report: Report, project: str) -> Iterator[None]:
    """A mark that cannot be applied here (a user this site lacks) is noted, not fatal."""
    try:
        yield
    except ManageError as exc:
        report.notes.append(f"{project}: {exc}")


def _same_owner_as_root(fd: int, root: Path) -> None:
    """Running as root: the file belongs to the package root's owner (the service's user),
    like every other file the command line writes there."""
    if os.geteuid() != 0:
        return
    st = os.stat(root)
    os.fchown(fd, st.st_uid, st.st_gid)
