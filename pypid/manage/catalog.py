"""Finding the files a change names: a file name, or ``PROJECT==VERSION``.

The server asks its index (in memory, current); the command line walks the
package root (it has no index, and must not write the server's caches).
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Protocol

from packaging.version import InvalidVersion, Version

from pypid.distfile import (
    InvalidFilenameError,
    hash_file,
    is_valid_project_name,
    normalize,
    parse_filename,
)
from pypid.index.model import ReadModel
from pypid.index.records import FileEntry
from pypid.manage.rights import ManageError, NotFoundError
from pypid.storage import Storage


@dataclass(frozen=True, slots=True)
class Found:
    """A distribution file the index holds."""

    filename: str
    relpath: str
    project: str  # normalized
    version: Version
    size: int
    sha256: str | None = None  # None: not known without reading the file


class Catalog(Protocol):
    def files(self) -> Iterator[Found]: ...

    def projects(self) -> set[str]: ...

    def has_project(self, project: str) -> bool: ...

    def project_files(self, project: str) -> list[Found]: ...

    def file(self, filename: str) -> Found | None: ...


class RootCatalog:
    """The package root as it is on disk."""

    def __init__(self, root: Storage) -> None:
        self.root = root

    def files(self) -> Iterator[Found]:
        for stat in self.root.iter_files():
            filename = stat.relpath.rsplit("/", 1)[-1]
            try:
                dist = parse_filename(filename)
            except InvalidFilenameError:
                continue
            yield Found(filename, stat.relpath, dist.project, dist.version, stat.size)

    def projects(self) -> set[str]:
        return {found.project for found in self.files()}

    def has_project(self, project: str) -> bool:
        return any(found.project == project for found in self.files())

    def project_files(self, project: str) -> list[Found]:
        return [found for found in self.files() if found.project == project]

    def file(self, filename: str) -> Found | None:
        return next((found for found in self.files() if found.filename == filename), None)


class IndexCatalog:
    """The server's read model: current, and it knows every file's sha256."""

    def __init__(self, index: ReadModel) -> None:
        self.index = index

    def files(self) -> Iterator[Found]:
        self.index.catch_up_now()
        for project in self.index.projects():
            yield from self.project_files(project)

    def projects(self) -> set[str]:
        self.index.catch_up_now()
        return set(self.index.projects())

    def has_project(self, project: str) -> bool:
        self.index.catch_up_now()
        return self.index.project_serial(project) is not None

    def project_files(self, project: str) -> list[Found]:
        self.index.catch_up_now()
        return [_found(entry) for entry in self.index.files(project) or ()]

    def file(self, filename: str) -> Found | None:
        self.index.catch_up_now()
        entry = self.index.file(filename)
        return None if entry is None else _found(entry)


def _found(entry: FileEntry) -> Found:
    return Found(entry.filename, entry.relpath, entry.project, Version(entry.version),
                 entry.size, entry.sha256)


def project_name(name: str) -> str:
    """The normalized name (ManageError if it is not a valid project name)."""
    if not is_valid_project_name(name.strip()):
        raise ManageError(f"{name.strip()!r} is not a valid project name")
    return normalize(name.strip())


def find(catalog: Catalog, spec: str, where: str) -> list[Found]:
    """The files a SPEC names: a file name, or PROJECT==VERSION (every file of it)."""
    if "==" in spec:
        name, _, text = spec.partition("==")
        project = project_name(name)
        try:
            version = Version(text.strip())
        except InvalidVersion:
            raise ManageError(f"{text.strip()!r} is not a valid version") from None
        return release(catalog, project, version, where)
    found = catalog.file(spec)
    if found is None:
        raise NotFoundError(f"no file named {spec} in {where} "
                            "(give a file name, or PROJECT==VERSION)")
    return [found]


def release(catalog: Catalog, project: str, version: Version, where: str) -> list[Found]:
    """Every file of one release (NotFoundError if there is none)."""
    found = [f for f in catalog.project_files(project) if f.version == version]
    if not found:
        raise NotFoundError(f"no release {project}=={version} in {where}")
    return sorted(found, key=lambda f: f.filename)


def sha256_of(root: Storage, found: Found) -> str:
    """The file's sha256: known to the index, else read."""
    if found.sha256 is not None:
        return found.sha256
    with root.open(found.relpath) as handle:
        return hash_file(handle)[0]
