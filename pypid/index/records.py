"""What the index holds: one ``FileEntry`` per file, and the ``Marks`` that are not files."""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType

from pypid.distfile import SDIST, WHEEL, NormalizedName
from pypid.storage import FileIdentity, FileStat


@dataclass(frozen=True, slots=True)
class FileEntry:
    """One distribution file as the pages show it.

    Kept small: there is one per file in every worker. Digests are raw bytes,
    repeated strings (project, Requires-Python) are interned.
    """

    filename: str
    relpath: str
    project: NormalizedName
    version: str  # normalized PEP 440 text
    size: int
    mtime_ns: int
    inode: int
    digest: bytes  # sha256 of the file
    requires_python: str | None
    metadata_digest: bytes | None  # sha256 of a wheel's METADATA
    upload_time: float
    yanked: str | None  # None: not yanked; "" yanked with no reason

    @property
    def sha256(self) -> str:
        return self.digest.hex()

    @property
    def metadata_sha256(self) -> str | None:
        return self.metadata_digest.hex() if self.metadata_digest is not None else None

    @property
    def kind(self) -> str:
        return WHEEL if self.filename.endswith(".whl") else SDIST

    @property
    def identity(self) -> FileIdentity:
        """The file version this entry describes."""
        return FileIdentity(self.size, self.mtime_ns, self.inode)

    def is_stat_of(self, st: os.stat_result) -> bool:
        """Is ``st`` this entry's version of the file? (No allocation: every download asks.)"""
        # A negative inode: a bucket's object, whose local copy's mtime names its version.
        return ((st.st_ino == self.inode or self.inode < 0) and st.st_size == self.size
                and st.st_mtime_ns == self.mtime_ns)

    def same_file(self, stat: FileStat) -> bool:
        return self.identity == stat.identity


STATUSES = ("active", "archived", "quarantined", "deprecated")  # PEP 792
_EMPTY: Mapping[str, str] = MappingProxyType({})
_NO_STATUSES: Mapping[str, tuple[str, str]] = MappingProxyType({})


@dataclass(frozen=True, slots=True)
class Marks:
    """The facts about files and projects that pages show and the files do not hold.

    Yank marks (file name -> reason, "" for none) and PEP 792 statuses other than
    active (project -> (status, reason)). Immutable: a change is a whole new
    snapshot, given to ``Index.apply_marks``.
    """

    yanks: Mapping[str, str] = field(default_factory=lambda: _EMPTY)
    statuses: Mapping[str, tuple[str, str]] = field(default_factory=lambda: _NO_STATUSES)

    def changed_files(self, other: Marks) -> set[str]:
        """File names whose marks differ between the two snapshots."""
        old, new = self.yanks, other.yanks
        return {name for name in old.keys() | new.keys() if old.get(name) != new.get(name)}

    def changed_projects(self, other: Marks) -> set[str]:
        """Projects whose status differs between the two snapshots."""
        old, new = self.statuses, other.statuses
        return {name for name in old.keys() | new.keys() if old.get(name) != new.get(name)}

    def status(self, project: str) -> tuple[str, str]:
        return self.statuses.get(project, ("active", ""))
