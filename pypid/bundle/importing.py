"""Importing a bundle: every member checked against the manifest before anything is
added (all or nothing), then each new file linked into the package root as a local
file with its upload time, and one audit line per file and per mark the bundle carries."""

from __future__ import annotations

import contextlib
import hashlib
import hmac
import os
import tarfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO

from pypid.bundle.manifest import (
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
from pypid.manage import Actor, ManageError, Manager
from pypid.manage.catalog import Found
from pypid.storage.local import PackageRoot

CHUNK = 1024 * 1024


@dataclass
class Report:
    """What an import did, for the command to print."""

    imported: list[str] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)  # the same bytes were here already
    marks: list[str] = field(default_factory=list)  # yank, status, owner lines written
    notes: list[str] = field(default_factory=list)  # owners that could not be added


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
    if not isinstance(manager.root, PackageRoot):
        raise BundleError('pypid import needs storage.backend = "local"')
    new, same = plan(bundle, manager)
    report = Report(skipped=same)
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
    if not isinstance(root, PackageRoot):  # import_bundle checked
        raise BundleError('pypid import needs storage.backend = "local"')
    incoming = root.incoming(max_bytes)
    try:
        bundle.copy(item, incoming.write)
        sha256 = incoming.digests.hexdigest("sha256")
        if not hmac.compare_digest(sha256, item.sha256):
            raise BundleError(f"{item.filename}: changed while it was imported; stopped")
        when = parse_time_ns(item.upload_time)
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
