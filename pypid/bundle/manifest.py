"""A bundle's manifest (``manifest.json``, the tar's last member): what each file is and
the facts that travel with it. Pure: building, encoding and checking, no I/O."""

from __future__ import annotations

import json
import re
import time
from calendar import timegm
from dataclasses import asdict, dataclass
from typing import Any

from pypid.distfile import (
    InvalidFilenameError,
    is_normalized,
    is_safe_filename,
    parse_filename,
)
from pypid.index.records import STATUSES
from pypid.simple.pep691 import format_upload_time

FORMAT = "pypid-bundle"
FORMAT_VERSION = 1
MANIFEST_NAME = "manifest.json"
AUDIT_NAME = "audit.jsonl"  # a whole export's audit log, verbatim (see BundledAudit)
MAX_MANIFEST_BYTES = 64 * 1024 * 1024
_SHA256 = re.compile(r"[0-9a-f]{64}")
_TIME = "%Y-%m-%dT%H:%M:%S"


class BundleError(ValueError):
    """A bundle that must not be imported (or cannot be written): one line saying why."""


@dataclass(frozen=True, slots=True)
class BundledFile:
    filename: str  # also its member name: flat, one safe file name
    project: str  # normalized
    version: str
    sha256: str
    size: int
    upload_time: str  # UTC, "2024-05-01T12:00:00.000000Z"
    yanked: str | None = None  # None: not yanked; else the reason ("" for none)
    uploader: str | None = None


@dataclass(frozen=True, slots=True)
class BundledProject:
    name: str  # normalized
    status: str = "active"
    reason: str = ""
    owners: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class BundledAudit:
    """The exporting site's audit log as it was (member ``audit.jsonl``): carried by an
    export of every local file, so that a migration keeps the whole history."""

    sha256: str
    size: int
    lines: int


@dataclass(frozen=True, slots=True)
class Manifest:
    files: tuple[BundledFile, ...]
    projects: tuple[BundledProject, ...]
    created: str = ""
    audit: BundledAudit | None = None


def format_time(epoch: float) -> str:
    """Epoch seconds as a manifest's UTC time: the pages' own form (PEP 700).

    >>> format_time(0.5)
    '1970-01-01T00:00:00.500000Z'
    """
    return format_upload_time(epoch)


def parse_time_ns(text: str) -> int:
    """A manifest's UTC time as epoch nanoseconds (exact: no float on the way).

    >>> parse_time_ns('1970-01-01T00:00:01.250000Z')
    1250000000
    """
    whole, _, rest = text.removesuffix("Z").partition(".")
    if rest and (not rest.isdigit() or len(rest) > 9):
        raise ValueError(f"not a UTC time: {text!r}")
    return timegm(time.strptime(whole, _TIME)) * 10**9 + int(rest.ljust(9, "0") or 0)


def parse_time(text: str) -> float:
    """A manifest's UTC time as epoch seconds."""
    return parse_time_ns(text) / 1e9


def encode(manifest: Manifest) -> bytes:
    data = {"format": FORMAT, "version": FORMAT_VERSION, "created": manifest.created,
            "files": [asdict(f) for f in manifest.files],
            "projects": [{**asdict(p), "owners": list(p.owners)} for p in manifest.projects]}
    if manifest.audit is not None:
        data["audit"] = asdict(manifest.audit)
    return json.dumps(data, indent=1, sort_keys=False).encode() + b"\n"


def decode(data: bytes) -> Manifest:
    """The manifest in ``data``; BundleError naming the first thing that is not as expected."""
    try:
        raw = json.loads(data)
    except (ValueError, UnicodeDecodeError) as exc:
        raise BundleError(f"{MANIFEST_NAME} is not JSON: {exc}") from None
    if not isinstance(raw, dict) or raw.get("format") != FORMAT:
        raise BundleError(f"{MANIFEST_NAME} is not a pypid bundle manifest")
    if raw.get("version") != FORMAT_VERSION:
        raise BundleError(f"{MANIFEST_NAME}: unknown version {raw.get('version')!r} "
                          f"(this pypid reads version {FORMAT_VERSION})")
    files = tuple(_file(item) for item in _list(raw, "files"))
    projects = tuple(_project(item) for item in _list(raw, "projects"))
    _unique([f.filename for f in files], "file")
    _unique([p.name for p in projects], "project")
    return Manifest(files, projects, str(raw.get("created") or ""), _audit(raw.get("audit")))


def member_problem(name: str) -> str | None:
    """Why ``name`` cannot be a bundle member (None: it can): flat, one safe file name.

    >>> [member_problem(n) for n in ("a-1.0.tar.gz", "../a", "x/a-1.0.tar.gz")]
    [None, "unsafe member name '../a'", "unsafe member name 'x/a-1.0.tar.gz'"]
    """
    special = name in (MANIFEST_NAME, AUDIT_NAME)
    if not special and (not is_safe_filename(name) or ".." in name):
        return f"unsafe member name {name[:200]!r}"
    return None


def _list(raw: dict[str, Any], key: str) -> list[dict[str, Any]]:
    items = raw.get(key)
    if not isinstance(items, list) or not all(isinstance(i, dict) for i in items):
        raise BundleError(f"{MANIFEST_NAME}: {key!r} is not a list of objects")
    return items


def _text(item: dict[str, Any], key: str, *, optional: bool = False) -> Any:
    value = item.get(key)
    if value is None and optional:
        return None
    if not isinstance(value, str):
        what = str(item.get("filename") or item.get("name"))[:100]
        raise BundleError(f"{MANIFEST_NAME}: {key!r} of {what!r} is not text")
    return value


def _file(item: dict[str, Any]) -> BundledFile:
    filename = _text(item, "filename")
    if member_problem(filename) or filename in (MANIFEST_NAME, AUDIT_NAME):
        raise BundleError(f"{MANIFEST_NAME}: unsafe file name {filename[:200]!r}")
    try:
        dist = parse_filename(filename)
    except InvalidFilenameError as exc:
        raise BundleError(f"{MANIFEST_NAME}: {filename}: {exc.reason}") from None
    sha256, size = _text(item, "sha256"), item.get("size")
    if not _SHA256.fullmatch(sha256):
        raise BundleError(f"{MANIFEST_NAME}: {filename}: sha256 is not 64 lowercase hex digits")
    if not isinstance(size, int) or isinstance(size, bool) or size < 0:
        raise BundleError(f"{MANIFEST_NAME}: {filename}: size is not a whole number of bytes")
    if _text(item, "project") != dist.project:
        raise BundleError(f"{MANIFEST_NAME}: {filename}: project is not {dist.project}")
    upload_time = _text(item, "upload_time")
    try:
        parse_time(upload_time)
    except ValueError:
        raise BundleError(f"{MANIFEST_NAME}: {filename}: upload_time {upload_time[:40]!r} "
                          "is not a UTC time") from None
    return BundledFile(filename, dist.project, _text(item, "version"), sha256, size,
                       upload_time, _text(item, "yanked", optional=True),
                       _text(item, "uploader", optional=True))


def _audit(item: object) -> BundledAudit | None:
    if item is None:
        return None
    if not isinstance(item, dict):
        raise BundleError(f"{MANIFEST_NAME}: 'audit' is not an object")
    sha256, size, lines = item.get("sha256"), item.get("size"), item.get("lines")
    if not isinstance(sha256, str) or not _SHA256.fullmatch(sha256):
        raise BundleError(f"{MANIFEST_NAME}: audit: sha256 is not 64 lowercase hex digits")
    for key, value in (("size", size), ("lines", lines)):
        if not isinstance(value, int) or isinstance(value, bool) or value < 0:
            raise BundleError(f"{MANIFEST_NAME}: audit: {key} is not a whole number")
    return BundledAudit(sha256, size, lines)


def _project(item: dict[str, Any]) -> BundledProject:
    name = _text(item, "name")
    if not is_normalized(name):
        raise BundleError(f"{MANIFEST_NAME}: {name[:100]!r} is not a normalized project name")
    status = _text(item, "status")
    if status not in STATUSES:
        raise BundleError(f"{MANIFEST_NAME}: {name}: unknown status {status[:40]!r}")
    owners = item.get("owners")
    if not isinstance(owners, list) or not all(isinstance(o, str) for o in owners):
        raise BundleError(f"{MANIFEST_NAME}: {name}: owners is not a list of names")
    return BundledProject(name, status, _text(item, "reason", optional=True) or "",
                          tuple(owners))


def _unique(names: list[str], what: str) -> None:
    seen: set[str] = set()
    for name in names:
        if name in seen:
            raise BundleError(f"{MANIFEST_NAME}: {what} {name!r} is listed twice")
        seen.add(name)
