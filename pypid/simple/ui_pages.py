"""The web UI's pages decided like the index's: ``/projects/`` and ``/project/<name>/[<version>/]``.

A rendered page is kept per origin (its ``pip install`` line names this server
as the client sees it) and answered from memory, by the worker's loop too, until
anything the UI shows may have changed: any project's files, marks or status (the
index's serial; the list and "used by" span projects) or the event log (owners,
uploaders). Rendering (Jinja, readme_renderer) is the ``Renderer``'s, given by the
web layer; it runs only where blocking is allowed.
"""

from __future__ import annotations

import re
from typing import Protocol
from urllib.parse import parse_qsl

from packaging.version import InvalidVersion, Version

from pypid.distfile import is_normalized, is_valid_project_name, normalize
from pypid.index import Index
from pypid.simple.core import SimpleRequest, moved
from pypid.simple.pagecache import PageCache
from pypid.simple.reply import PAGE_CACHE_CONTROL, Kind, Reply, accepts_gzip, etag_matches, text
from pypid.simple.ui_facts import Facts, ProjectView, Row

CACHE_BYTES = 8 * 1024 * 1024  # per worker
QUERY_MAX = 100  # characters of ?q= looked at
HTML = "text/html; charset=utf-8"
# What the loop believes of a Host header; anything else goes to the app, which fixes it.
_PLAIN_HOST = re.compile(r"(?:[A-Za-z0-9.-]{1,253}|\[[0-9A-Fa-f:.]{2,45}\])(?::[0-9]{1,5})?")


class Renderer(Protocol):
    """Makes the pages' bytes (the web layer's templates)."""

    def listing(self, rows: list[Row], query: str, origin: str) -> bytes: ...

    def project(self, view: ProjectView, origin: str) -> bytes: ...

    def headers(self) -> list[tuple[str, str]]:
        """Headers every page carries (Content-Security-Policy, ...)."""
        ...


class UIPages:
    """Decides the UI's requests for one app (per worker after fork)."""

    def __init__(self, index: Index, renderer: Renderer, *, cache_bytes: int = CACHE_BYTES) -> None:
        self.index = index
        self.facts = Facts(index)
        self.renderer = renderer
        self.pages = PageCache(max_bytes=cache_bytes)  # in memory only: pages are small
        self._headers = [("Content-Type", HTML), ("Cache-Control", PAGE_CACHE_CONTROL),
                         ("Vary", "Accept-Encoding"), *renderer.headers()]

    def decide(self, req: SimpleRequest, may_block: bool) -> Reply | None:
        """The answer to a ``/projects...`` or ``/project/...`` request (login checked), or
        None when it takes rendering and ``may_block`` is off."""
        path = req.path
        if path == "/projects":
            return moved(req, "/projects/")
        if path == "/projects/":
            query = _query(req.query)
            return self._page(req, "list?" + query, may_block, lambda origin: (
                self.renderer.listing(_matching(self.facts.rows(), query), query, origin)))
        if not path.startswith("/project/"):
            return _not_found("no such page")
        return self._project(req, path[9:].split("/"), may_block)

    def _project(self, req: SimpleRequest, parts: list[str], may_block: bool) -> Reply | None:
        """``/project/<parts>``: a project's page, or the way to it."""
        found = _canonical(req, parts)
        if isinstance(found, Reply):
            return found
        name, version = found
        files = self.index.files(name)
        if not files:
            return _not_found(f"no project named {name!r} here")
        if version and not any(entry.version == version for entry in files):
            # 1.0.0 is the release 1.0 (as pip compares them): the way to its page
            wanted = Version(version)
            same = next((e.version for e in files if _version(e.version) == wanted), None)
            if same is None:
                return _not_found(f"no version {version} of {name} here")
            return moved(req, f"/project/{name}/{same}/")

        def render(origin: str) -> bytes | None:
            view = self.facts.project(name, version or None)
            return self.renderer.project(view, origin) if view is not None else None

        return self._page(req, f"project/{name}/{version}", may_block, render)

    def _page(self, req: SimpleRequest, key: str, may_block: bool,
              render: _Render) -> Reply | None:
        origin = req.origin or _loop_origin(req)
        if origin is None:
            return None  # an unusual Host: the app's proxy layer knows what to make of it
        # Read before rendering: a change meanwhile makes a later stamp, not a stale page.
        stamp = (self.index.serial << 64) | self.index.ledger.position
        page = self.pages.peek(origin, key, stamp)
        if page is None:
            if not may_block:
                return None
            body = render(origin + req.script_root)
            if body is None:
                return _not_found("no such version of this project here")
            page = self.pages.get(origin, key, stamp, lambda: body)
        gzipped = page.gzipped() if accepts_gzip(req.accept_encoding) else None
        etag = page.gzip_etag if gzipped is not None else page.etag
        headers = [*self._headers, ("ETag", f'"{etag}"')]
        if req.if_none_match and etag_matches(req.if_none_match, etag):
            return Reply(Kind.UI, 304, headers[1:])
        body = gzipped if gzipped is not None else page.body
        headers.append(("Content-Length", str(len(body))))
        if gzipped is not None:
            headers.append(("Content-Encoding", "gzip"))
        return Reply(Kind.UI, 200, headers, body)


class _Render(Protocol):
    def __call__(self, origin: str) -> bytes | None: ...


def _canonical(req: SimpleRequest, parts: list[str]) -> Reply | tuple[str, str]:
    """(project, version or "") of a canonical ``/project/<parts>``; else 301 or 404."""
    if len(parts) > 3 or (len(parts) == 3 and parts[2]) or not parts[0]:
        return _not_found("no such page")
    name = parts[0]
    if not is_valid_project_name(name):
        return _not_found("not a valid project name")
    version = parts[1] if len(parts) > 1 else ""
    canonical = _canonical_version(version)
    if canonical is None:
        return _not_found("not a valid version")
    if not is_normalized(name) or canonical != version or len(parts) != (3 if version else 2):
        return moved(req, f"/project/{normalize(name)}/" + (f"{canonical}/" if canonical else ""))
    return name, version


def _loop_origin(req: SimpleRequest) -> str | None:
    """``http://HOST`` from a plain Host header (the loop serves plain HTTP only)."""
    host = req.host
    if not host or _PLAIN_HOST.fullmatch(host) is None:
        return None
    return "http://" + host


def _query(raw: str) -> str:
    """The ``q`` parameter, trimmed and bounded."""
    for name, value in parse_qsl(raw, keep_blank_values=True):
        if name == "q":
            return " ".join(value.split())[:QUERY_MAX]
    return ""


def _matching(rows: list[Row], query: str) -> list[Row]:
    """The rows whose name or summary holds every word of ``query`` (any case; ``-``, ``_``
    and ``.`` alike in names)."""
    words = query.lower().split()
    if not words:
        return rows
    return [row for row in rows
            if all(normalize(w) in row.name or w in row.summary.lower() for w in words)]


def _version(text: str) -> Version | None:
    try:
        return Version(text)
    except InvalidVersion:
        return None


def _canonical_version(version: str) -> str | None:
    """The normalized text of ``version`` ("" for none); None when it is not a version."""
    if not version:
        return ""
    try:
        return str(Version(version))
    except InvalidVersion:
        return None


def _not_found(message: str) -> Reply:
    return text(Kind.NOT_FOUND, 404, message)
