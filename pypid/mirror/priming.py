"""``pypid mirror add``: which upstream files a requirements file or specs name, fetched into
the cache (checked like any download) with their metadata, and pinned.

Only exact pins select files: ``name==version`` (every file of that release, for
every platform), narrowed to the listed ``--hash=sha256:...`` values when a
requirements line gives some (pip's hash-checking mode).
"""

from __future__ import annotations

import contextlib
import re
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

from packaging.requirements import InvalidRequirement, Requirement
from packaging.version import InvalidVersion, Version

from pypid.distfile import normalize
from pypid.mirror.holdings import pin
from pypid.mirror.service import Mirror
from pypid.mirror.translate import UpstreamFile
from pypid.mirror.upstream import UpstreamError

_HASH = re.compile(r"--hash[= ]sha256:([0-9a-fA-F]{64})")


class PrimingError(ValueError):
    """A spec or requirements line that names no exact release, or a release upstream lacks."""


@dataclass(frozen=True)
class Pinned:
    """One release asked for: its project, version, and the allowed hashes (empty: any).
    ``exact``: every hash must be found upstream (a lock file lists exactly its files)."""

    project: str
    version: str
    hashes: frozenset[str] = field(default=frozenset())
    exact: bool = False


def parse_spec(text: str, hashes: Iterable[str] = ()) -> Pinned:
    """``name==version`` (extras and markers are allowed and ignored).

    >>> parse_spec("Requests[socks]==2.32.3 ; python_version>'3'")
    Pinned(project='requests', version='2.32.3', hashes=frozenset(), exact=False)
    """
    try:
        requirement = Requirement(text)
    except InvalidRequirement as exc:
        raise PrimingError(f"{text!r}: {exc}") from None
    specs = list(requirement.specifier)
    if len(specs) != 1 or specs[0].operator not in ("==", "===") or "*" in specs[0].version:
        raise PrimingError(f"{text!r}: pin one release with ==, e.g. {requirement.name}==1.0")
    return Pinned(normalize(requirement.name), specs[0].version,
                  frozenset(h.lower() for h in hashes))


def read_requirements(path: Path) -> list[Pinned]:
    """The pinned requirements of a requirements file (pip's format, ``==`` pins only)."""
    pins = []
    for number, line in enumerate(_logical_lines(path.read_text("utf-8")), 1):
        hashes = _HASH.findall(line)
        spec = _HASH.sub("", line).strip()
        if not spec:
            continue
        if spec.startswith("-"):
            raise PrimingError(f"{path}: line {number}: options such as {spec.split()[0]} "
                               "are not supported; list pinned requirements")
        try:
            pins.append(parse_spec(spec, hashes))
        except PrimingError as exc:
            raise PrimingError(f"{path}: line {number}: {exc}") from None
    return pins


def _logical_lines(text: str) -> Iterator[str]:
    """Lines with comments removed and backslash continuations joined."""
    pending = ""
    for raw in text.splitlines():
        line = re.sub(r"(^|\s)#.*$", "", raw).rstrip()
        if line.endswith("\\"):
            pending += line[:-1] + " "
            continue
        yield pending + line
        pending = ""
    if pending:
        yield pending


def select(mirror: Mirror, wanted: Pinned) -> list[UpstreamFile]:
    """The upstream files of one pinned release (raises PrimingError when there are none)."""
    record = mirror.record(wanted.project)
    if record is None:
        raise PrimingError(f"upstream has no project named {wanted.project}")
    files = [item for item in record.page.files
             if _same_version(item.version, wanted.version)
             and (not wanted.hashes or item.sha256 in wanted.hashes)]
    if not files:
        raise PrimingError(f"upstream has no files of {wanted.project}=={wanted.version}"
                           + (" with the given hashes" if wanted.hashes else ""))
    missing = wanted.hashes - {item.sha256 for item in files} if wanted.exact else set()
    if missing:
        raise PrimingError(f"upstream has no file of {wanted.project}=={wanted.version} with "
                           f"sha256 {sorted(missing)[0]} ({len(missing)} missing)")
    return files


def fetch_and_pin(mirror: Mirror, project: str, item: UpstreamFile) -> bool:
    """Download ``item`` (unless cached) and its metadata, then pin it; True if downloaded."""
    path = mirror.store.file_path(project, item.filename)
    follower = mirror.fetcher.follow(path, item)
    downloaded = follower is not None
    if follower is not None:
        error = follower.first_bytes()
        if error is not None:
            follower.close()
            raise error
        for _ in follower.chunks():
            pass  # BrokenDownload when it turns out bad
    if item.metadata_sha256:
        # The file is what matters; its metadata is fetched again when asked for.
        with contextlib.suppress(UpstreamError):
            mirror.metadata(path.with_name(path.name + ".metadata"), item)
    pin(mirror.store, project, item.filename)
    return downloaded


def _same_version(a: str, b: str) -> bool:
    try:
        return Version(a) == Version(b)
    except InvalidVersion:
        return a == b
