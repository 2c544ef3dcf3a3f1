"""A thin WSGI path for the hot requests: cached index pages and whole-file downloads.

Everything it cannot answer from memory (a first render, a Range request, a
query string, a login, an unknown name, a 404) goes on to the Flask app. It
answers exactly as the Flask views do (see answers.py); it only skips
routing, request objects and context pushes, which cost more than the answer.
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from typing import TYPE_CHECKING

from flask import Flask

from pypid.distfile import is_normalized
from pypid.web.answers import file_answer, page_answer
from pypid.web.negotiate import negotiate
from pypid.web.render import render
from pypid.web.state import Services

if TYPE_CHECKING:
    from _typeshed.wsgi import StartResponse, WSGIApplication, WSGIEnvironment

BLOCK_SIZE = 256 * 1024
_REASONS = {200: "200 OK", 304: "304 Not Modified"}


class FastPath:
    """WSGI middleware in front of the Flask app (behind the prefix and proxy layers)."""

    def __init__(self, app: Flask, inner: WSGIApplication) -> None:
        self.inner = inner
        self.svc: Services = app.extensions["pypid"]
        protect = self.svc.config.auth.protect
        self.pages_open = "list" not in protect
        self.files_open = "download" not in protect
        self.root_dir = str(self.svc.index.root.path)
        self._file_headers: dict[tuple[str, int, int], list[tuple[str, str]]] = {}

    def __call__(self, environ: WSGIEnvironment, start_response: StartResponse) -> Iterable[bytes]:
        method = environ.get("REQUEST_METHOD")
        if method in ("GET", "HEAD") and not environ.get("QUERY_STRING"):
            path: str = environ.get("PATH_INFO", "")
            if path.startswith("/simple/") and self.pages_open:
                answer = self._page(path, environ, start_response, method)
                if answer is not None:
                    return answer
            elif path.startswith("/packages/") and self.files_open:
                answer = self._file(path[10:], environ, start_response, method)
                if answer is not None:
                    return answer
        return self.inner(environ, start_response)

    def _page(self, path: str, environ: WSGIEnvironment, start_response: StartResponse,
              method: str) -> Iterable[bytes] | None:
        media = negotiate(environ.get("HTTP_ACCEPT"))
        if media is None:
            return None
        index = self.svc.index
        index.start_watching()
        if path == "/simple/":
            key: tuple[str, ...] = ("index", media)
            serial: int | None = index.projects_serial
        else:
            name = path[8:-1]
            if not path.endswith("/") or "/" in name or not is_normalized(name):
                return None
            key = ("project", name, media)
            serial = index.project_serial(name)
        if serial is None:
            return None  # unknown here: Flask says 404 or redirects upstream
        page = self.svc.pages.peek(key, serial)
        if page is None:
            data = index.index_page() if key[0] == "index" else index.project_page(key[1])
            if data is None:
                return None
            page = self.svc.pages.get(key, serial, lambda: render(media, data))
        status, headers, body = page_answer(page, media, environ.get("HTTP_ACCEPT_ENCODING"),
                                            environ.get("HTTP_IF_NONE_MATCH"))
        start_response(_REASONS[status], headers)
        return [] if method == "HEAD" or status == 304 else [body]

    def _file(self, filename: str, environ: WSGIEnvironment, start_response: StartResponse,
              method: str) -> Iterable[bytes] | None:
        index = self.svc.index
        index.start_watching()
        entry = index.file(filename) if "HTTP_RANGE" not in environ else None
        path = f"{self.root_dir}/{entry.relpath}" if entry is not None else ""
        if entry is None or _identity(path) != (entry.size, entry.mtime_ns, entry.inode):
            return None  # a Range, an unknown name, a file changing or gone: Flask answers
        if_none_match = environ.get("HTTP_IF_NONE_MATCH")
        if_modified_since = environ.get("HTTP_IF_MODIFIED_SINCE")
        key = (entry.filename, entry.mtime_ns, entry.inode)
        cached = self._file_headers.get(key) if not (if_none_match or if_modified_since) else None
        if cached is not None:
            status, headers = 200, cached
        else:
            status, headers = file_answer(
                entry.sha256, entry.size, entry.mtime_ns / 1e9,
                overwrite=self.svc.config.storage.overwrite, if_none_match=if_none_match,
                if_modified_since=if_modified_since)
            if status == 200 and not (if_none_match or if_modified_since):
                if len(self._file_headers) > 4096:
                    self._file_headers.clear()
                self._file_headers[key] = headers
        if status == 304 or method == "HEAD":
            start_response(_REASONS[status], headers)
            return []
        try:
            handle = open(path, "rb", buffering=0)  # noqa: SIM115 - the server closes it
        except OSError:
            return None
        start_response(_REASONS[status], list(headers))
        wrapper = environ.get("wsgi.file_wrapper")
        if wrapper is not None:
            return wrapper(handle, BLOCK_SIZE)  # type: ignore[no-any-return]  # sendfile
        return _chunks(handle)


def _identity(path: str) -> tuple[int, int, int] | None:
    try:
        st = os.stat(path)
    except OSError:
        return None
    return st.st_size, st.st_mtime_ns, st.st_ino


def _chunks(handle: object) -> Iterable[bytes]:
    with handle:  # type: ignore[attr-defined]
        while chunk := handle.read(BLOCK_SIZE):  # type: ignore[attr-defined]
            yield chunk
