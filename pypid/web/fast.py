"""Answers for the hot requests (cached index pages, whole-file downloads) without Flask.

``HotAnswers`` is the one place that decides them, from the request's method,
path and a few header strings; two callers use it: ``FastPath``, WSGI
middleware in front of the Flask app, and pypid's gunicorn worker
(``pypid.worker``), which answers straight from its event loop. Everything it
cannot answer from memory (a first render, a Range request, a query string, a
login, an unknown name, a 404) goes on to the Flask app. It answers exactly as
the Flask views do (see answers.py); it only skips routing, request objects and
context pushes, which cost more than the answer.
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from dataclasses import dataclass
from typing import TYPE_CHECKING

from flask import Flask

from pypid.distfile import is_normalized
from pypid.simple import pep691
from pypid.simple.answers import Headers, file_answer, page_answer
from pypid.simple.negotiate import negotiate
from pypid.simple.pagecache import INDEX
from pypid.simple.render import render
from pypid.web.state import Services

if TYPE_CHECKING:
    from _typeshed.wsgi import StartResponse, WSGIApplication, WSGIEnvironment

BLOCK_SIZE = 256 * 1024
REASONS = {200: "200 OK", 304: "304 Not Modified"}


@dataclass(frozen=True, slots=True)
class Hot:
    """A whole answer: status, headers, then ``body`` or, for a GET of a file, ``file``."""

    status: int
    headers: Headers
    body: bytes = b""
    file: str | None = None  # absolute path, sent after the headers
    identity: tuple[int, int, int] | None = None  # the file's (size, mtime_ns, inode)

    def same_file(self, fd: int) -> bool:
        """Is the opened ``fd`` still the file this answer describes (not replaced since)?"""
        return _identity(os.fstat(fd)) == self.identity


class HotAnswers:
    """Answers the requests an index mostly gets, or says None: Flask's turn."""

    def __init__(self, svc: Services) -> None:
        self.svc = svc
        protect = svc.config.auth.protect
        self.pages_open = "list" not in protect
        self.files_open = "download" not in protect
        self.root_dir = str(svc.index.root.path)
        self._file_headers: dict[tuple[str, int, int], Headers] = {}

    def answer(self, method: str, path: str, *, accept: str | None, accept_encoding: str | None,
               if_none_match: str | None, if_modified_since: str | None,
               ranged: bool) -> Hot | None:
        """``path`` is below any URL prefix; the request has no query string and no body."""
        if method not in {"GET", "HEAD"}:
            return None
        if path.startswith("/simple/"):
            if self.pages_open:
                return self._page(path, method, accept, accept_encoding, if_none_match)
        elif path.startswith("/packages/") and self.files_open and not ranged:
            return self._file(path[10:], method, if_none_match, if_modified_since)
        return None

    def _page(self, path: str, method: str, accept: str | None, accept_encoding: str | None,
              if_none_match: str | None) -> Hot | None:
        media = negotiate(accept)
        if media is None:
            return None
        index = self.svc.index
        index.start_watching()
        if path == "/simple/":
            space, name = INDEX, media
            serial: int | None = index.projects_serial
        else:
            space, name = media, path[8:-1]
            if not path.endswith("/") or "/" in name or not is_normalized(name):
                return None
            serial = index.project_serial(name)
        if serial is None:
            return None  # unknown here: Flask says 404 or redirects upstream
        page = self.svc.pages.peek(space, name, serial)
        if page is None:
            data = pep691.index_page(index) if space == INDEX else pep691.project_page(index, name)
            if data is None:
                return None
            page = self.svc.pages.get(space, name, serial, lambda: render(media, data))
        status, headers, body = page_answer(page, media, accept_encoding, if_none_match)
        return Hot(status, headers, b"" if method == "HEAD" else body)

    def _file(self, filename: str, method: str, if_none_match: str | None,
              if_modified_since: str | None) -> Hot | None:
        index = self.svc.index
        index.start_watching()
        entry = index.file(filename)
        if entry is None:
            return None
        path = f"{self.root_dir}/{entry.relpath}"
        identity = (entry.size, entry.mtime_ns, entry.inode)
        try:
            current = _identity(os.stat(path))
        except OSError:
            current = None
        if current != identity:
            return None  # changing or gone: Flask answers (503 or 404)
        key = (entry.filename, entry.mtime_ns, entry.inode)
        conditional = bool(if_none_match or if_modified_since)
        cached = None if conditional else self._file_headers.get(key)
        if cached is not None:
            status, headers = 200, cached
        else:
            status, headers = file_answer(
                entry.sha256, entry.size, entry.mtime_ns / 1e9,
                overwrite=self.svc.config.storage.overwrite, if_none_match=if_none_match,
                if_modified_since=if_modified_since)
            if status == 200 and not conditional:
                if len(self._file_headers) > 4096:
                    self._file_headers.clear()
                self._file_headers[key] = headers
        if status == 304 or method == "HEAD":
            return Hot(status, headers)
        return Hot(status, headers, file=path, identity=identity)


class FastPath:
    """WSGI middleware in front of the Flask app (behind the prefix and proxy layers)."""

    def __init__(self, app: Flask, inner: WSGIApplication) -> None:
        self.inner = inner
        self.hot = HotAnswers(app.extensions["pypid"])

    def __call__(self, environ: WSGIEnvironment, start_response: StartResponse) -> Iterable[bytes]:
        if environ.get("QUERY_STRING"):
            return self.inner(environ, start_response)
        hot = self.hot.answer(environ.get("REQUEST_METHOD", ""), environ.get("PATH_INFO", ""),
                              accept=environ.get("HTTP_ACCEPT"),
                              accept_encoding=environ.get("HTTP_ACCEPT_ENCODING"),
                              if_none_match=environ.get("HTTP_IF_NONE_MATCH"),
                              if_modified_since=environ.get("HTTP_IF_MODIFIED_SINCE"),
                              ranged="HTTP_RANGE" in environ)
        if hot is None:
            return self.inner(environ, start_response)
        if hot.file is None:
            start_response(REASONS[hot.status], list(hot.headers))
            return [hot.body] if hot.body else []
        return self._send_file(hot, hot.file, environ, start_response)

    def _send_file(self, hot: Hot, path: str, environ: WSGIEnvironment,
                   start_response: StartResponse) -> Iterable[bytes]:
        try:
            handle = open(path, "rb", buffering=0)  # noqa: SIM115 - the server closes it
        except OSError:
            return self.inner(environ, start_response)
        if not hot.same_file(handle.fileno()):  # replaced since the answer was made
            handle.close()
            return self.inner(environ, start_response)
        start_response(REASONS[hot.status], list(hot.headers))
        wrapper = environ.get("wsgi.file_wrapper")
        if wrapper is not None:
            return wrapper(handle, BLOCK_SIZE)  # type: ignore[no-any-return]  # sendfile
        return _chunks(handle)


def _identity(st: os.stat_result) -> tuple[int, int, int]:
    return st.st_size, st.st_mtime_ns, st.st_ino


def _chunks(handle: object) -> Iterable[bytes]:
    with handle:  # type: ignore[attr-defined]
        while chunk := handle.read(BLOCK_SIZE):  # type: ignore[attr-defined]
            yield chunk
