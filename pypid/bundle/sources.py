"""What a bundle can hold and which of it ``pypid export`` chose: the package root's files
(with their yank marks, uploaders, statuses and owners from the ledger) and the mirror's
cached files (with upstream's hashes, times and marks from the cached page)."""

from __future__ import annotations

import contextlib
import os
import sqlite3
from dataclasses import dataclass, replace
from pathlib import Path

from packaging.version import InvalidVersion, Version

from pypid.bundle.manifest import BundledProject, BundleError, format_time, parse_time
from pypid.cachedb import DB_NAME
from pypid.distfile import InvalidFilenameError, hash_file, parse_filename
from pypid.index.ledger import Ledger
from pypid.mirror.holdings import holdings
from pypid.mirror.priming import Pinned
from pypid.mirror.store import MirrorStore, PageRecord
from pypid.storage import Storage


@dataclass(frozen=True, slots=True)
class Candidate:
    """One file that could go into a bundle."""

    filename: str
    project: str
    version: str
    path: Path
    size: int
    upload_time: str
    yanked: str | None = None
    uploader: str | None = None
    sha256: str | None = None  # None: read the file to know it
    local: bool = True


def local_files(root: Storage, ledger: Ledger) -> list[Candidate]:
    """Every distribution file of the package root, sorted by name."""
    ledger.catch_up()
    times = _upload_times(root.cache_dir)
    found = []
    for stat in root.iter_files():
        filename = stat.relpath.rsplit("/", 1)[-1]
        try:
            dist = parse_filename(filename)
        except InvalidFilenameError:
            continue
        known = times.get(stat.relpath)
        when = known[1] if known and known[0] == tuple(stat.identity) else stat.mtime_ns / 1e9
        found.append(Candidate(filename, dist.project, str(dist.version),
                               root.resolve(stat.relpath), stat.size, format_time(when),
                               ledger.marks.yanks.get(filename), ledger.uploader(filename)))
    return sorted(found, key=lambda c: (c.filename, c.path))


def mirrored_files(store: MirrorStore) -> list[Candidate]:
    """Every whole file the mirror's cache holds that its cached page describes."""
    found = []
    pages: dict[str, PageRecord | None] = {}
    for held in holdings(store):
        if held.project not in pages:
            pages[held.project] = store.load(held.project)
        record = pages[held.project]
        item = record.page.file(held.filename) if record is not None else None
        if item is None:
            continue
        path = store.files / held.project / held.filename
        try:
            st = os.stat(path)
        except OSError:
            continue
        when = _upstream_time(item.upload_time, st.st_mtime)
        yanked = None if item.yanked is False else ("" if item.yanked is True
                                                    else str(item.yanked))
        found.append(Candidate(held.filename, held.project, item.version, path, st.st_size,
                               format_time(when), yanked, None, item.sha256, local=False))
    return found


def project_facts(projects: set[str], ledger: Ledger,
                  store: MirrorStore | None) -> list[BundledProject]:
    """Each project's status and owners: the ledger's, else the mirrored page's status."""
    facts = []
    for name in sorted(projects):
        status, reason = ledger.marks.status(name)
        owners = tuple(sorted(ledger.owners(name) or ()))
        if status == "active" and store is not None and not owners:
            record = store.load(name)
            if record is not None:
                status, reason = record.page.status, record.page.reason
        facts.append(BundledProject(name, status, reason or "", owners))
    return facts


def choose(candidates: list[Candidate], projects: list[str],
           pins: list[Pinned]) -> list[Candidate]:
    """The files asked for: by project, by exact pin (narrowed to its hashes), or, asked
    for nothing, every local file. A local file wins over a cached one of the same name.
    BundleError names a project or pin nothing matches."""
    unique: dict[str, Candidate] = {}
    for item in candidates:
        unique.setdefault(item.filename, item)
    if not projects and not pins:
        return [c for c in unique.values() if c.local]
    chosen: dict[str, Candidate] = {}
    for project in projects:
        matched = [c for c in unique.values() if c.project == project]
        if not matched:
            raise BundleError(f"no files of project {project} here")
        chosen.update((c.filename, c) for c in matched)
    for pin in pins:
        matched = [with_sha256(c) for c in unique.values()
                   if c.project == pin.project and _same_version(c.version, pin.version)]
        if pin.hashes:
            matched = [c for c in matched if c.sha256 in pin.hashes]
        missing = pin.hashes - {c.sha256 for c in matched} if pin.exact else set()
        if not matched or missing:
            raise BundleError(f"no file of {pin.project}=={pin.version} here"
                              + (" with the listed hashes" if pin.hashes else ""))
        chosen.update((c.filename, c) for c in matched)
    return sorted(chosen.values(), key=lambda c: c.filename)


def with_sha256(item: Candidate) -> Candidate:
    if item.sha256 is not None:
        return item
    with open(item.path, "rb") as handle:
        return replace(item, sha256=hash_file(handle)[0])


def _upload_times(cache_dir: Path) -> dict[str, tuple[tuple[int, int, int], float]]:
    """relpath -> (identity, upload time) from the server's cache, opened read-only (the
    command line never writes it); empty when there is none."""
    path = cache_dir / DB_NAME
    if not path.is_file():
        return {}
    try:
        conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=5)
    except sqlite3.Error:
        return {}
    try:
        rows = conn.execute("SELECT relpath, size, mtime_ns, inode, upload_time FROM files")
        return {r[0]: ((r[1], r[2], r[3]), float(r[4])) for r in rows}
    except sqlite3.Error:
        return {}
    finally:
        with contextlib.suppress(sqlite3.Error):
            conn.close()


def _upstream_time(text: str | None, fallback: float) -> float:
    """Upstream's upload time (PEP 700, "Z"), else when the file was cached."""
    try:
        return parse_time(text) if text else fallback
    except ValueError:
        return fallback


def _same_version(a: str, b: str) -> bool:
    try:
        return Version(a) == Version(b)
    except InvalidVersion:
        return a == b


