"""Upstream's project page (PEP 691 JSON, or PEP 503 HTML) read into plain records, checked.

Pure: bytes in, ``UpstreamPage`` out. Whatever upstream sends is untrusted: a
file whose name is unsafe, belongs to another project, has no sha256 or links
to a host that is neither upstream's nor in ``file_hosts`` is left out and named
in ``UpstreamPage.refused`` (the caller logs it); a page that cannot be read at
all raises ``PageError``.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from html.parser import HTMLParser
from typing import Any
from urllib.parse import unquote, urldefrag, urljoin, urlsplit

from pypid.distfile import (
    InvalidFilenameError,
    has_dist_suffix,
    is_safe_filename,
    normalize,
    parse_filename,
)

JSON_MEDIA = "application/vnd.pypi.simple.v1+json"
STATUSES = ("active", "archived", "quarantined", "deprecated")
_SHA256 = re.compile(r"[0-9a-f]{64}")
MAX_FILES = 200_000  # more links than any real project has: a hostile page


class PageError(ValueError):
    """Upstream's page cannot be used at all."""


@dataclass(frozen=True, slots=True)
class UpstreamFile:
    """One file as upstream lists it, with the absolute URL to fetch it from."""

    filename: str
    version: str
    url: str
    sha256: str
    requires_python: str | None = None
    metadata_sha256: str | None = None  # PEP 658, when upstream gives its hash
    yanked: bool | str = False
    size: int | None = None
    upload_time: str | None = None  # PEP 700 text, as upstream wrote it (UTC, "Z")

    def as_record(self) -> dict[str, Any]:
        return {"filename": self.filename, "version": self.version, "url": self.url,
                "sha256": self.sha256, "requires-python": self.requires_python,
                "metadata-sha256": self.metadata_sha256, "yanked": self.yanked,
                "size": self.size, "upload-time": self.upload_time}

    @classmethod
    def from_record(cls, record: dict[str, Any]) -> UpstreamFile:
        return cls(record["filename"], record["version"], record["url"], record["sha256"],
                   record["requires-python"], record["metadata-sha256"], record["yanked"],
                   record["size"], record["upload-time"])


@dataclass(frozen=True, slots=True)
class UpstreamPage:
    """A project as upstream shows it: files in upstream's order, and its PEP 792 status."""

    project: str
    files: tuple[UpstreamFile, ...]
    status: str = "active"
    reason: str = ""
    refused: tuple[str, ...] = field(default=(), compare=False)  # why links were left out

    def file(self, filename: str) -> UpstreamFile | None:
        for item in self.files:
            if item.filename == filename:
                return item
        return None


def read_page(body: bytes, content_type: str, page_url: str, project: str,
              allowed_hosts: frozenset[str]) -> UpstreamPage:
    """Upstream's answer for ``project`` (normalized) as an ``UpstreamPage``.

    ``page_url`` resolves relative links; a link must be http(s) to one of
    ``allowed_hosts`` (upstream's host and ``file_hosts``).
    """
    media = content_type.split(";", maxsplit=1)[0].strip().lower()
    if media == JSON_MEDIA:
        raw_files, status, reason = _json_files(body)
    elif media in ("text/html", "application/vnd.pypi.simple.v1+html"):
        raw_files, status, reason = _html_files(body)
    else:
        raise PageError(f"upstream answered {media or 'no Content-Type'}, not a simple page")
    if len(raw_files) > MAX_FILES:
        raise PageError(f"upstream listed {len(raw_files)} files: more than {MAX_FILES}")
    files: list[UpstreamFile] = []
    refused: list[str] = []
    seen: set[str] = set()
    for raw in raw_files:
        try:
            item = _checked_file(raw, page_url, project, allowed_hosts)
        except ValueError as exc:
            refused.append(str(exc))
            continue
        if item is not None and item.filename not in seen:
            seen.add(item.filename)
            files.append(item)
    return UpstreamPage(project, tuple(files), status, reason, tuple(refused))


def _json_files(body: bytes) -> tuple[list[dict[str, Any]], str, str]:
    try:
        page = json.loads(body)
    except (ValueError, RecursionError) as exc:  # RecursionError: nesting as a weapon
        raise PageError(f"upstream's page is not JSON: {str(exc)[:200]}") from None
    if not isinstance(page, dict) or not isinstance(page.get("files"), list):
        raise PageError("upstream's JSON page has no list of files")
    status, reason = "active", ""
    marker = page.get("project-status")
    if isinstance(marker, dict) and marker.get("status") in STATUSES:
        status = marker["status"]
        reason = marker["reason"] if isinstance(marker.get("reason"), str) else ""
    return [f for f in page["files"] if isinstance(f, dict)], status, reason


def _checked_file(raw: dict[str, Any], page_url: str, project: str,
                  allowed_hosts: frozenset[str]) -> UpstreamFile | None:
    """The file, or None for one pip cannot install anyway (an egg, an .exe); ValueError
    says why a link is refused."""
    filename = raw.get("filename")
    if not isinstance(filename, str) or not is_safe_filename(filename) or ".." in filename:
        raise ValueError(f"unsafe file name {str(filename)[:100]!r}")
    if not has_dist_suffix(filename):
        return None  # old PyPI projects list eggs and installers: not refused, just not ours
    try:
        dist = parse_filename(filename)
    except InvalidFilenameError as exc:
        raise ValueError(str(exc)) from None
    if dist.project != normalize(project):
        raise ValueError(f"{filename}: belongs to {dist.project}, not {project}")
    url = raw.get("url")
    if not isinstance(url, str):
        raise ValueError(f"{filename}: no URL")
    url = urldefrag(urljoin(page_url, url))[0]
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or (parts.hostname or "") not in allowed_hosts:
        raise ValueError(f"{filename}: links to {parts.hostname or url!r}, "
                         "neither upstream nor one of upstream.file_hosts")
    hashes = raw.get("hashes")
    sha256 = hashes.get("sha256") if isinstance(hashes, dict) else None
    if not isinstance(sha256, str) or not _SHA256.fullmatch(sha256.lower()):
        raise ValueError(f"{filename}: no sha256 to check it against")
    return UpstreamFile(
        filename=filename, version=str(dist.version), url=url, sha256=sha256.lower(),
        requires_python=_text(raw.get("requires-python")),
        metadata_sha256=_metadata_hash(raw), yanked=_yanked(raw.get("yanked")),
        size=_size(raw.get("size")), upload_time=_upload_time(raw.get("upload-time")))


def _text(value: object) -> str | None:
    return value if isinstance(value, str) and value and len(value) < 1000 else None


def _metadata_hash(raw: dict[str, Any]) -> str | None:
    for key in ("core-metadata", "data-dist-info-metadata", "dist-info-metadata"):
        value = raw.get(key)
        if isinstance(value, dict) and isinstance(value.get("sha256"), str):
            digest = value["sha256"].lower()
            return digest if _SHA256.fullmatch(digest) else None
    return None


def _yanked(value: object) -> bool | str:
    if isinstance(value, str):
        return value[:1000] or True
    return value is True


def _size(value: object) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) and value >= 0 else None


_UPLOAD_TIME = re.compile(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d{1,6})?Z")


def _upload_time(value: object) -> str | None:
    return value if isinstance(value, str) and _UPLOAD_TIME.fullmatch(value) else None


# -- PEP 503 HTML, for an upstream with no JSON


def _html_files(body: bytes) -> tuple[list[dict[str, Any]], str, str]:
    parser = _Anchors()
    try:
        parser.feed(body.decode("utf-8", "replace"))
        parser.close()
    except (ValueError, AssertionError) as exc:  # html.parser on pathological input
        raise PageError(f"upstream's HTML page cannot be read: {exc}") from None
    return parser.files, parser.status, parser.reason


class _Anchors(HTMLParser):
    """The anchors of a PEP 503 page as PEP 691 file dicts, and PEP 792's meta tags."""

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.files: list[dict[str, Any]] = []
        self.status, self.reason = "active", ""
        self._open: dict[str, Any] | None = None
        self._text: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        values = {name: value for name, value in attrs}
        if tag == "meta":
            if values.get("name") == "pypi:project-status" and values.get("content") in STATUSES:
                self.status = values["content"] or "active"
            elif values.get("name") == "pypi:project-status-reason":
                self.reason = values.get("content") or ""
        elif tag == "a" and values.get("href") and len(self.files) <= MAX_FILES:
            self._open, self._text = _html_file(values), []

    def handle_data(self, data: str) -> None:
        if self._open is not None:
            self._text.append(data)

    def handle_endtag(self, tag: str) -> None:
        if tag == "a" and self._open is not None:
            href_name = unquote(urlsplit(self._open["url"]).path.rsplit("/", 1)[-1])
            self._open["filename"] = "".join(self._text).strip() or href_name
            self.files.append(self._open)
            self._open = None


def _html_file(values: dict[str, str | None]) -> dict[str, Any]:
    href = values["href"] or ""
    url, fragment = urldefrag(href)
    algorithm, _, digest = fragment.partition("=")
    metadata = values.get("data-core-metadata") or values.get("data-dist-info-metadata")
    meta_hash = metadata.partition("=")[2] if metadata and metadata.startswith("sha256=") else None
    size = values.get("data-size")
    yanked = values.get("data-yanked")
    return {
        "url": url,
        "hashes": {algorithm: digest} if algorithm == "sha256" else {},
        "requires-python": values.get("data-requires-python"),
        "core-metadata": {"sha256": meta_hash} if meta_hash else False,
        "yanked": False if yanked is None else (yanked or True),
        "size": int(size) if size and size.isdigit() else None,
        "upload-time": values.get("data-upload-time"),
    }
