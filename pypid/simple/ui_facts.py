"""What the web UI shows of projects: gathered from the index, the ledger (owners,
uploaders) and each file's metadata (summary, README, Requires-Dist), which is read
once per file version and kept, bounded.
"""

from __future__ import annotations

import re
import threading
from collections import OrderedDict
from dataclasses import dataclass

from packaging.version import InvalidVersion, Version

from pypid.distfile import MetadataError, normalize, parse_filename, read_metadata
from pypid.index import FileEntry, Index
from pypid.storage import FileIdentity

DESCRIPTION_KEPT = 512 * 1024  # characters of a README kept (and rendered); the rest is cut
ABOUT_CACHED = 4096  # files whose metadata facts are kept, per worker ...
ABOUT_CACHED_CHARS = 16 * 1024 * 1024  # ... and their READMEs' characters together
_REQUIREMENT_NAME = re.compile(r"\s*([A-Za-z0-9][A-Za-z0-9._-]*)")


@dataclass(frozen=True, slots=True)
class About:
    """What one file's metadata says about its release."""

    name: str  # as the author spells it ("" when absent)
    summary: str
    description: str  # the README, cut at DESCRIPTION_KEPT characters
    description_length: int  # its whole length in characters
    content_type: str  # Description-Content-Type ("" when absent)
    requires: tuple[str, ...]  # normalized names from Requires-Dist

    @property
    def description_cut(self) -> bool:
        return self.description_length > len(self.description)


NOTHING = About("", "", "", 0, "", ())


def parse_about(data: bytes) -> About:
    r"""The facts of a METADATA or PKG-INFO (RFC 822 style headers, the README as body or
    as the older ``Description`` header).

    >>> about = parse_about(b"Name: A_b\nSummary: Hi\nRequires-Dist: X.y>=1; extra == 't'"
    ...                     b"\n\nRead me")
    >>> about.name, about.summary, about.requires, about.description
    ('A_b', 'Hi', ('x-y',), 'Read me')
    """
    text = data.decode("utf-8", "replace")
    head, _, body = text.replace("\r\n", "\n").partition("\n\n")
    fields: dict[str, str] = {}
    requires: list[str] = []
    key = None
    for line in head.split("\n"):
        if line[:1] in (" ", "\t"):
            if key is not None:  # a continuation line
                fields[key] += "\n" + line
            continue
        name, sep, value = line.partition(":")
        key = name.strip().lower() if sep else None
        if key == "requires-dist":
            match = _REQUIREMENT_NAME.match(value)
            if match and (req := normalize(match.group(1))) not in requires:
                requires.append(req)
            key = None
        elif key is not None and key not in fields:
            fields[key] = value.strip()
        else:
            key = None
    description = body.strip("\n") or _header_description(fields.get("description", ""))
    return About(
        name=" ".join(fields.get("name", "").split()),
        summary=" ".join(fields.get("summary", "").split()),
        description=description[:DESCRIPTION_KEPT], description_length=len(description),
        content_type=" ".join(fields.get("description-content-type", "").split()),
        requires=tuple(requires))


def _header_description(value: str) -> str:
    """An older ``Description:`` header: continuation lines start with ``        |``."""
    lines = value.split("\n")
    rest = [line.strip()[1:] if line.strip().startswith("|") else line.strip()
            for line in lines[1:]]
    return "\n".join([lines[0], *rest]).strip("\n")


@dataclass(frozen=True, slots=True)
class FileView:
    entry: FileEntry
    uploader: str | None


@dataclass(frozen=True, slots=True)
class Release:
    version: str
    files: tuple[FileView, ...]

    @property
    def yanked(self) -> bool:
        """Every file of it yanked (PEP 592: the release is, then)."""
        return all(f.entry.yanked is not None for f in self.files)

    @property
    def upload_time(self) -> float:
        return min(f.entry.upload_time for f in self.files)


@dataclass(frozen=True, slots=True)
class ProjectView:
    """One project's page: ``release`` is the one shown (the latest, or the one asked for)."""

    name: str  # normalized
    title: str  # as the metadata spells it
    latest: str
    release: Release
    about: About
    releases: tuple[Release, ...]  # newest first
    status: tuple[str, str]
    owners: tuple[str, ...]
    used_by: tuple[str, ...]
    requires_here: frozenset[str]  # the release's requirements that are projects here

    @property
    def quarantined(self) -> bool:
        return self.status[0] == "quarantined"


@dataclass(frozen=True, slots=True)
class Row:
    """One project in the list."""

    name: str
    latest: str
    summary: str
    status: str


class Facts:
    """Views of the index's projects for the UI, thread-safe."""

    def __init__(self, index: Index) -> None:
        self.index = index
        self._abouts: OrderedDict[tuple[str, FileIdentity], About] = OrderedDict()
        self._about_chars = 0
        # Summary and requirements of every file read: small, kept for all (the list and
        # "used by" span every project, more than the README cache holds).
        self._briefs: dict[tuple[str, FileIdentity], tuple[str, tuple[str, ...]]] = {}
        self._lock = threading.Lock()
        self._used_by: dict[str, tuple[str, ...]] = {}
        self._used_by_serial = -1

    def project(self, name: str, version: str | None = None) -> ProjectView | None:
        """The project's view (at ``version``, normalized text); None if it or the version
        is not here."""
        releases = self.releases(name)
        if not releases:
            return None
        latest = latest_release(releases)
        release = latest if version is None else next(
            (r for r in releases if r.version == version), None)
        if release is None:
            return None
        ledger = self.index.ledger
        about = self.about_release(release)
        return ProjectView(
            name=name, title=about.name or name, latest=latest.version, release=release,
            about=about, releases=releases, status=self.index.marks.status(name),
            owners=tuple(sorted(ledger.owners(name) or ())), used_by=self.used_by(name),
            requires_here=frozenset(r for r in about.requires if self.index.files(r)))

    def releases(self, name: str) -> tuple[Release, ...]:
        """The project's releases, newest first (the index keeps files in version order)."""
        files = self.index.files(name) or ()
        uploader = self.index.ledger.uploader
        by_version: dict[str, list[FileView]] = {}
        for entry in files:
            by_version.setdefault(entry.version, []).append(
                FileView(entry, uploader(entry.filename)))
        return tuple(Release(v, tuple(f)) for v, f in reversed(by_version.items()))

    def rows(self) -> list[Row]:
        """Every project with its latest version and summary."""
        rows = []
        for name in self.index.projects():
            releases = self.releases(name)
            if releases:
                latest = latest_release(releases)
                rows.append(Row(name, latest.version, self.brief_of_release(latest)[0],
                                self.index.marks.status(name)[0]))
        return rows

    def brief_of_release(self, release: Release) -> tuple[str, tuple[str, ...]]:
        """(summary, requirements) of the release, as ``about_release`` says them."""
        for view in sorted(release.files, key=lambda f: f.entry.kind != "wheel"):
            brief = self.brief(view.entry)
            if brief != ("", ()):
                return brief
        return "", ()

    def brief(self, entry: FileEntry) -> tuple[str, tuple[str, ...]]:
        """(summary, requirements) of one file, read once and kept while it is here."""
        brief = self._briefs.get((entry.relpath, entry.identity))
        if brief is None:
            about = self.about(entry)
            brief = (about.summary, about.requires)
        return brief

    def about_release(self, release: Release) -> About:
        """What the release's metadata says: a wheel's first, else an sdist's."""
        ordered = sorted(release.files, key=lambda f: f.entry.kind != "wheel")
        for view in ordered:
            about = self.about(view.entry)
            if about is not NOTHING:
                return about
        return NOTHING

    def about(self, entry: FileEntry) -> About:
        """The file's metadata facts (NOTHING when it has none or cannot be read)."""
        key = (entry.relpath, entry.identity)
        with self._lock:
            about = self._abouts.get(key)
            if about is not None:
                self._abouts.move_to_end(key)
                return about
        try:
            with self.index.root.open(entry.relpath) as handle:
                data = read_metadata(handle, parse_filename(entry.filename))
        except (OSError, MetadataError):
            data = None
        about = parse_about(data) if data else NOTHING
        with self._lock:
            if len(self._briefs) > 2 * self.index.file_count() + 1024:
                self._briefs.clear()  # mostly files gone or replaced: read again as asked
            self._briefs[key] = (about.summary, about.requires)
            if key not in self._abouts:
                self._abouts[key] = about
                self._about_chars += len(about.description)
            while len(self._abouts) > ABOUT_CACHED or self._about_chars > ABOUT_CACHED_CHARS:
                self._about_chars -= len(self._abouts.popitem(last=False)[1].description)
        return about

    def used_by(self, name: str) -> tuple[str, ...]:
        """Projects here whose latest release's wheels require ``name``."""
        serial = self.index.serial
        if serial != self._used_by_serial:
            found: dict[str, set[str]] = {}
            for project in self.index.projects():
                releases = self.releases(project)
                if not releases:
                    continue
                for view in latest_release(releases).files:
                    if view.entry.kind == "wheel":
                        for required in self.brief(view.entry)[1]:
                            if required != project:
                                found.setdefault(required, set()).add(project)
            self._used_by = {k: tuple(sorted(v)) for k, v in found.items()}
            self._used_by_serial = serial
        return self._used_by.get(name, ())


def latest_release(releases: tuple[Release, ...]) -> Release:
    """The newest release not wholly yanked, a final release before a pre-release (as pip
    picks); the newest of all when every one is yanked."""
    live = [r for r in releases if not r.yanked] or list(releases)
    return next((r for r in live if not _is_prerelease(r.version)), live[0])


def _is_prerelease(version: str) -> bool:
    try:
        return Version(version).is_prerelease
    except InvalidVersion:
        return False
