"""The simple API decided once: ``SimpleAPI.decide(request) -> Reply``.

Every answer to ``GET``/``HEAD`` of ``/simple...`` and ``/packages/...`` is made
here, from the request's method, path (below any URL prefix), query and the
few headers that matter. Two transports deliver it: the Flask views (any
request) and pypid's worker loop (the requests it can answer without blocking:
``decide(..., may_block=False)`` says None for the rest, which then go to a
thread and Flask). No HTTP framework in this module.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import threading
from collections import OrderedDict
from collections.abc import Mapping
from pathlib import Path
from typing import Protocol
from urllib.parse import parse_qsl, quote

from pypid.distfile import (
    WHEEL,
    MetadataError,
    is_normalized,
    is_valid_project_name,
    normalize,
    parse_filename,
    read_core_metadata,
)
from pypid.growing import DownloadError
from pypid.index import FileEntry, Index
from pypid.simple import pep691
from pypid.simple.apart import project_list
from pypid.simple.health import health
from pypid.simple.logins import Logins
from pypid.simple.mirrored import MirrorReplies
from pypid.simple.negotiate import OFFERS, negotiate
from pypid.simple.pagecache import INDEX, Page, PageCache
from pypid.simple.render import render
from pypid.simple.reply import (
    CONTENT_TYPES,
    OCTETS,
    PAGE_CACHE_CONTROL,
    VARY,
    FilePart,
    Kind,
    Reply,
    accepts_gzip,
    byte_range,
    etag_matches,
    file_headers,
    not_modified,
    not_modified_since,
    streamed,
    text,
)

METADATA_SUFFIX = ".metadata"
_READS = frozenset(("GET", "HEAD"))
UI_PATHS = ("/projects", "/project/")
# Per worker, each entry's key and links counted in: what many clients ask for at once,
# not every wheel (it filled within ~3 minutes of the load mix at 8 MiB; bench/README.md,
# issue 18). A miss costs ~100-170 us in a thread.
METADATA_CACHE_BYTES = 4 * 1024 * 1024
FILE_REPLIES_CACHED = 1024


def _header(name: str) -> property:
    return property(lambda req: req.headers.get(name), doc=f"The {name} header, or None.")


class SimpleRequest:
    """What the simple API looks at in a request: method, path (decoded, below the URL
    prefix), raw query, the prefix as the client sees it (for Location headers), the
    headers (``get`` by lower-case name), the client's address (for the log) and, when
    the transport knows it, the origin (``scheme://host``) the client sees."""

    __slots__ = ("method", "path", "query", "script_root", "headers", "client", "origin")

    def __init__(self, method: str, path: str, query: str = "", script_root: str = "", *,
                 headers: Mapping[str, str] | None = None, client: str = "-",
                 origin: str = "") -> None:
        self.method = method
        self.path = path
        self.query = query
        self.script_root = script_root
        self.headers: Mapping[str, str] = headers if headers is not None else {}
        self.client = client
        self.origin = origin

    # The few headers that matter, read when a decision needs them.
    accept = _header("accept")
    host = _header("host")
    accept_encoding = _header("accept-encoding")
    if_none_match = _header("if-none-match")
    if_modified_since = _header("if-modified-since")
    range = _header("range")
    if_range = _header("if-range")
    authorization = _header("authorization")


class Pages(Protocol):
    """More pages answered beside the simple API (the web UI: ``pypid.simple.ui_pages``)."""

    def decide(self, req: SimpleRequest, may_block: bool) -> Reply | None: ...


class SimpleAPI:
    """Decides the simple API's answers for one app (per worker after fork)."""

    def __init__(self, index: Index, pages: PageCache, logins: Logins, *,
                 upstream_redirect: str | None, overwrite: bool,
                 mirror: MirrorReplies | None = None) -> None:
        self.index = index
        self.mirror = mirror  # upstream.mode "cache": unknown projects come from there
        self.pages = pages
        self.logins = logins
        self.upstream_redirect = upstream_redirect  # None: unknown projects are a 404
        self.overwrite = overwrite
        self.root_dir = str(index.root.path)
        self.fetches = index.root.is_remote  # files reach root_dir by local_copy
        self._file_replies: dict[str, tuple[FileEntry, Reply]] = {}
        self._metadata = _BytesLRU(METADATA_CACHE_BYTES)
        self.ui: Pages | None = None  # the web UI's pages, when the app serves them

    def decide(self, req: SimpleRequest, *, may_block: bool = True) -> Reply | None:
        """The answer, or None: not a request of the simple API (or, without
        ``may_block``, one that needs blocking work: a password check, a file read)."""
        path = req.path
        if req.method not in _READS:
            return None
        if path.startswith(("/simple/", "/packages/")) or path == "/simple":
            action = "download" if path[1] == "p" else "list"
            if action in self.logins.protect:
                refused = self._refused(req, action, may_block)
                if refused is not False:
                    return refused  # type: ignore[return-value]
            if path[-1] == "/" and path[1] == "s" and is_normalized(project := path[8:-1]):
                reply = self._page(req, "project", project, may_block)  # the usual request
            else:
                reply = self._route(req, path, may_block)
        elif path == "/health":
            reply = health(self.index, self.logins, self.mirror,
                           authorization=req.authorization, client=req.client,
                           may_block=may_block)
        elif self.ui is not None and path.startswith(UI_PATHS):
            if "list" in self.logins.protect:
                refused = self._refused(req, "list", may_block)
                if refused is not False:
                    return refused  # type: ignore[return-value]
            reply = self.ui.decide(req, may_block)
        else:
            return None
        if reply is not None and req.method == "HEAD":
            return reply.for_head()
        return reply

    def _refused(self, req: SimpleRequest, action: str, may_block: bool) -> Reply | None | bool:
        """For a protected ``action``: the refusal, None (a password check is a thread's
        work), or False: the login is good."""
        if not may_block:
            return None
        login = self.logins.authenticate(action, req.authorization, req.client)
        if isinstance(login, Reply):
            return login.for_head() if req.method == "HEAD" else login
        return False

    def unknown(self, req: SimpleRequest) -> Reply:
        """A request nothing here has a page for: 404, or 401 first when ``list`` is
        protected (an unknown URL tells nobody without a login anything either)."""
        if self.logins.needed("list"):
            login = self.logins.authenticate("list", req.authorization, req.client)
            if isinstance(login, Reply):
                return login
        return _not_found("no such page")

    def _route(self, req: SimpleRequest, path: str, may_block: bool) -> Reply | None:
        if path.startswith("/packages/"):
            name = path[10:]
            if self.mirror is not None and "/" in name:  # /packages/<project>/<file>: mirrored
                found = self.mirror.file(name, may_block)
                return (self._file_reply(req, *found, plain=_unconditional(req))
                        if isinstance(found, tuple) else found)
            if name.endswith(METADATA_SUFFIX):
                return self._metadata_of(req, name[: -len(METADATA_SUFFIX)], may_block)
            return self._file(req, name, may_block)
        if path == "/simple":
            return self._moved(req, "/simple/")
        if path == "/simple/":
            return self._page(req, INDEX, "", may_block)
        return self._project(req, path[8:], may_block)

    def _project(self, req: SimpleRequest, rest: str, may_block: bool) -> Reply | None:
        """``/simple/<rest>``: a project's page, or the way to it."""
        project = rest[:-1] if rest.endswith("/") else rest
        if "/" in project:
            return _not_found("no such page")
        if rest.endswith("/") and is_normalized(project):  # the usual case: one regex
            return self._page(req, "project", project, may_block)
        if not is_valid_project_name(project):
            return _not_found("not a valid project name")
        return self._moved(req, f"/simple/{normalize(project)}/")

    # -- pages

    def _page(self, req: SimpleRequest, space: str, project: str,
              may_block: bool) -> Reply | None:
        # The headers read here directly, not through SimpleRequest's properties: a
        # Python call each, on every page (bench/instructions.py).
        fields = req.headers
        media = negotiate(fields.get("accept"),
                          _format_param(req.query) if req.query else None)
        if media is None:
            return text(Kind.NOT_ACCEPTABLE, 406,
                        "no acceptable format; this index offers " + ", ".join(OFFERS),
                        headers=[("Vary", "Accept")])
        found = self._find_page(space, media, project, may_block)
        if not isinstance(found, Page):
            return found
        page = found
        gzipped = page.gzipped() if accepts_gzip(fields.get("accept-encoding")) else None
        etag = page.gzip_etag if gzipped is not None else page.etag
        if_none_match = fields.get("if-none-match")
        fresh = etag_matches(if_none_match, etag) if if_none_match else False
        replies, key = page.replies, None
        if replies is not None:  # a page kept in memory answers the same way: once (head too)
            key = (media, gzipped is not None, fresh)
            reply = replies.get(key)
            if reply is not None:
                return reply
        headers = [("Vary", VARY), ("ETag", f'"{etag}"'), ("Cache-Control", PAGE_CACHE_CONTROL)]
        if fresh:
            reply = Reply(Kind.PAGE, 304, headers)
        else:
            body = gzipped if gzipped is not None else page.body
            headers.append(("Content-Type", CONTENT_TYPES.get(media, media)))
            headers.append(("Content-Length", str(len(body))))
            if gzipped is not None:
                headers.append(("Content-Encoding", "gzip"))
            reply = Reply(Kind.PAGE, 200, headers, body)
        if replies is not None:
            replies[key] = reply
        return reply

    def _find_page(self, space: str, media: str, project: str,
                   may_block: bool) -> Page | Reply | None:
        """The page, an answer instead of it, or None: a thread's work (``may_block``)."""
        index = self.index
        if space == INDEX:
            return self.mirror.index_page(media) if self.mirror is not None else project_list(
                self.pages, index, media, may_block)  # None: made in a forked child
        serial = index.project_serial(project)
        if serial is None:
            if index.show_recorded(project, may_block) is None:
                return None  # stored by another worker a moment ago: a thread indexes it
            serial = index.project_serial(project)  # shown now, if it was
        if self.mirror is not None and self.mirror.answers_for(project):
            return self.mirror.page(media, project, may_block)
        if serial is None:
            return self._unknown_project(project)
        page = self.pages.peek(media, project, serial)  # here, not in a call: every page
        return page if page is not None else self._rendered_page(media, project, serial)

    def _rendered_page(self, media: str, project: str, serial: int) -> Page | Reply:
        """A project's page neither memory nor the pack has (at ``serial``, the index's)."""
        data = pep691.project_page(self.index, project)
        if data is None:
            return self._unknown_project(project)
        rendered = render(media, data)
        return self.pages.get(media, project, serial, lambda: rendered)

    def _unknown_project(self, project: str) -> Reply:
        if self.index.ledger.knows(project):
            return _not_found(f"{project!r} has no files here now")
        if self.upstream_redirect is not None:
            location = self.upstream_redirect + project + "/"
            return text(Kind.UPSTREAM, 302, f"Redirecting to {location}",
                        headers=[("Location", location)])
        return _not_found(f"no project named {project!r} here")

    def _moved(self, req: SimpleRequest, path: str) -> Reply:
        return moved(req, path)

    # -- files

    def _entry(self, filename: str, may_block: bool, stream: bool = False, *,
               sender_checks: bool = False) -> tuple[FileEntry, str] | Reply | None:
        """The index's entry for ``filename`` and its path, if the file on disk is still it.

        A file replaced by hand a moment ago is not re-hashed here (no request
        hashes): the watcher does that within a second, so the client is asked to retry.
        A remote root's file is copied here first (None: that needs ``may_block``); with
        ``stream`` (a plain GET) the answer may send it as it arrives. With
        ``sender_checks`` the file on disk is not looked at here: the caller sends
        it and checks the opened file (``FilePart.matches``), and one that changed
        goes back to ``decide`` in a thread, which looks here.
        """
        entry = self.index.file(filename)
        if entry is None:
            return _not_found("no such file here")
        if self.index.marks.status(entry.project)[0] == "quarantined":
            return _not_found(f"{entry.project} is quarantined: its files are not served")
        path = f"{self.root_dir}/{entry.relpath}"
        if sender_checks and not self.fetches:
            return entry, path
        return self._on_disk(entry, path, may_block, stream)

    def _on_disk(self, entry: FileEntry, path: str, may_block: bool,
                 stream: bool) -> tuple[FileEntry, str] | Reply | None:
        """``_entry``'s look at the file on disk (a remote root's: copied here first)."""
        try:
            st = os.stat(path)
        except OSError:
            st = None
        if self.fetches and (st is None or not entry.is_stat_of(st)):
            if not may_block:
                return None  # a download: a thread's work
            st = self._fetched(entry, path, st, stream)  # type: ignore[assignment]
        if not isinstance(st, os.stat_result):
            return _not_found("no such file here") if st is None else st
        if not entry.is_stat_of(st):
            return _changing(entry.filename)
        return entry, path

    def _fetched(self, entry: FileEntry, path: str, st: os.stat_result | None,
                 stream: bool) -> os.stat_result | Reply | None:
        """The copy of a remote root's file, brought to ``path`` (``st`` if that fails); with
        ``stream``, a reply sending the bytes as the copy gets them (else: the whole copy)."""
        if stream:
            try:
                follower = self.index.root.follow(entry.relpath, entry.identity)
            except DownloadError:
                return st
            if follower is not None:
                reply = streamed(follower, entry.filename, entry.sha256, entry.mtime_ns / 1e9,
                                 entry.size, overwrite=self.overwrite)
                return st if isinstance(reply, DownloadError) else reply
        if self.index.root.local_copy(entry.relpath, entry.identity):
            with contextlib.suppress(OSError):
                return os.stat(path)
        return st

    def _file(self, req: SimpleRequest, filename: str, may_block: bool) -> Reply | None:
        plain = _unconditional(req)
        # The loop (may_block false) sends a GET's file itself, checking what it opened.
        found = self._entry(filename, may_block, stream=plain,
                            sender_checks=not may_block and req.method == "GET")
        if found is None or isinstance(found, Reply):
            return found
        return self._file_reply(req, *found, plain=plain)

    def _file_reply(self, req: SimpleRequest, entry: FileEntry, path: str, *,
                    plain: bool) -> Reply:
        """``plain``: ``_unconditional(req)``."""
        if plain:  # the usual download: one Reply per file version, made once
            cached = self._file_replies.get(entry.filename)
            if cached is not None and (cached[0] is entry or cached[0] == entry):  # else changed
                return cached[1]
        identity = entry.identity
        mtime = entry.mtime_ns / 1e9
        headers = file_headers(entry.sha256, mtime, overwrite=self.overwrite)
        if not plain:
            if not_modified(entry.sha256, mtime, req.if_none_match, req.if_modified_since):
                # RFC 9110: a 304 carries the validators and caching headers, not Last-Modified.
                return Reply(Kind.FILE, 304, [h for h in headers if h[0] != "Last-Modified"])
            part = self._range(req, entry, mtime)
            if part is False:
                return text(Kind.FILE, 416, f"the file has {entry.size} bytes", headers=[
                    *headers, ("Content-Range", f"bytes */{entry.size}")])
            if part is not None:
                offset, length = part
                return Reply(Kind.FILE, 206, [
                    *headers, ("Content-Type", OCTETS),
                    ("Content-Range", f"bytes {offset}-{offset + length - 1}/{entry.size}"),
                    ("Content-Length", str(length))],
                    file=FilePart(path, identity, offset, length))
        reply = Reply(Kind.FILE, 200, [*headers, ("Content-Type", OCTETS),
                                       ("Content-Length", str(entry.size))],
                      file=FilePart(path, identity, 0, entry.size))
        if plain:
            if len(self._file_replies) >= FILE_REPLIES_CACHED:
                self._file_replies.clear()
            self._file_replies[entry.filename] = (entry, reply)
        return reply

    @staticmethod
    def _range(req: SimpleRequest, entry: FileEntry, mtime: float) -> tuple[int, int] | None | bool:
        """The part a ``Range`` asks for (see ``byte_range``); None when it is to be ignored."""
        if not req.range:
            return None
        if req.if_range:  # only if the client's copy is still this file
            tag = req.if_range.strip()
            same = (tag == f'"{entry.sha256}"' if tag.startswith(('"', "W/"))
                    else not_modified_since(tag, mtime))
            if not same:
                return None
        return byte_range(req.range, entry.size)

    def _metadata_of(self, req: SimpleRequest, filename: str, may_block: bool) -> Reply | None:
        found = self._entry(filename, may_block)
        if found is None or isinstance(found, Reply):
            return found
        entry, path = found
        etag = entry.metadata_sha256
        if entry.kind != WHEEL or etag is None or entry.metadata_digest is None:
            return _not_found(f"no separate metadata for {filename} (wheels only)")
        if req.if_none_match and etag_matches(req.if_none_match, etag):
            return Reply(Kind.METADATA, 304, [("ETag", f'"{etag}"')])
        data = self._read_metadata(entry, path, may_block)
        if not isinstance(data, bytes):
            return data
        return Reply(Kind.METADATA, 200, [
            ("Content-Type", OCTETS), ("Content-Length", str(len(data))),
            ("ETag", f'"{etag}"'), ("Cache-Control", PAGE_CACHE_CONTROL)], data)


    def _read_metadata(self, entry: FileEntry, path: str, may_block: bool) -> bytes | Reply | None:
        """The wheel's METADATA, checked once against the hash the index advertises and
        kept by that hash; None when that takes a read and ``may_block`` is off.

        Keyed by the hash, an entry is right for every file whose METADATA has it, and
        costs a 32-byte key instead of a path and an identity (~530 B an entry to ~360
        with a small METADATA)."""
        key = entry.metadata_digest
        data = self._metadata.get(key)
        if data is not None:
            return data
        if not may_block:
            return None
        try:
            data = read_core_metadata(Path(path), parse_filename(entry.filename)).metadata or b""
        except (OSError, MetadataError):
            return _not_found(f"cannot read the metadata of {entry.filename}")
        if hashlib.sha256(data).digest() != entry.metadata_digest:
            return _changing(entry.filename)  # replaced since it was indexed
        self._metadata.put(key, data)
        return data


def moved(req: SimpleRequest, path: str) -> Reply:
    """301 to ``path`` below the prefix, keeping the query."""
    location = req.script_root + quote(path)
    if req.query:
        location += "?" + quote(req.query, safe="=&+%;,/:")
    return text(Kind.MOVED, 301, f"Moved to {location}", headers=[("Location", location)])


def _unconditional(req: SimpleRequest) -> bool:
    """No If-None-Match, If-Modified-Since or Range: the whole file, as it is (read from
    the mapping, not through SimpleRequest's properties: a Python call each)."""
    fields = req.headers
    return not (fields.get("if-none-match") or fields.get("if-modified-since")
                or fields.get("range"))


def _not_found(message: str) -> Reply:
    return text(Kind.NOT_FOUND, 404, message)


def _changing(filename: str) -> Reply:
    """503 + Retry-After: pip and uv retry it, by which time the index has caught up."""
    return text(Kind.CHANGING, 503, f"{filename} is being replaced; retry in a second",
                headers=[("Retry-After", "1")])


def _format_param(query: str) -> str | None:
    for name, value in parse_qsl(query, keep_blank_values=True):
        if name == "format":
            return value
    return None


class _BytesLRU:
    """A thread-safe LRU map of byte strings, bounded by their size plus ``ENTRY_COST`` each
    (a 32-byte key, its slots and links, the bytes' head: ~200 B measured with 10,000
    entries, rounded up for the dict's growth)."""

    ENTRY_COST = 256

    def __init__(self, max_bytes: int) -> None:
        self._max = max_bytes
        self._items: OrderedDict[object, bytes] = OrderedDict()
        self._bytes = 0
        self._lock = threading.Lock()

    def get(self, key: object) -> bytes | None:
        with self._lock:
            data = self._items.get(key)
            if data is not None:
                self._items.move_to_end(key)
            return data

    def put(self, key: object, data: bytes) -> None:
        if len(data) > self._max // 4:
            return  # one huge entry would push out everything else
        with self._lock:
            old = self._items.pop(key, None)
            if old is not None:
                self._bytes -= len(old) + self.ENTRY_COST
            self._items[key] = data
            self._bytes += len(data) + self.ENTRY_COST
            while self._bytes > self._max:
                _, dropped = self._items.popitem(last=False)
                self._bytes -= len(dropped) + self.ENTRY_COST
