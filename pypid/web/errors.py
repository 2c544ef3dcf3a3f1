"""One-line plain-text errors with a latin-1-safe reason phrase, and their handlers."""

from __future__ import annotations

import logging

from flask import Flask, Response
from werkzeug.exceptions import HTTPException, InternalServerError

from pypid.events import EventLogError, LogUnavailableError
from pypid.events import NoSpaceError as LogFullError
from pypid.simple.reply import Kind, text
from pypid.storage import NoSpaceError, StorageError, UnavailableError
from pypid.web.replies import response

log = logging.getLogger("pypid.web")

RETRY_AFTER = "30"  # seconds a client should wait when the store is away


def failed_change(exc: StorageError | EventLogError) -> tuple[int, list[tuple[str, str]]]:
    """The status of a change the storage or the log could not take, and its headers:
    507 a full disk, 503 (with Retry-After) a store that cannot be reached, else 500."""
    if isinstance(exc, (NoSpaceError, LogFullError)):
        return 507, []
    if isinstance(exc, (UnavailableError, LogUnavailableError)):
        return 503, [("Retry-After", RETRY_AFTER)]
    return 500, []


def plain_error(status: int, message: str, *, reason: bool = False,
                headers: dict[str, str] | None = None) -> Response:
    """A plain-text error response; with ``reason`` the message is also the status line's
    phrase, and the body says exactly the same (latin-1 safe, one line)."""
    return response(text(Kind.ERROR, status, message, reason=reason,
                         headers=list((headers or {}).items())))


def register(app: Flask) -> None:
    @app.errorhandler(HTTPException)
    def http_error(exc: HTTPException) -> Response:
        code = exc.code or 500
        message = exc.description if isinstance(exc.description, str) else exc.name
        if message == type(exc).description:  # Werkzeug's long default text: keep the name
            message = exc.name
        response = plain_error(code, message)
        for name, value in exc.get_headers():
            if name.lower() not in ("content-type", "content-length"):
                response.headers[name] = value
        return response

    @app.errorhandler(Exception)
    def unexpected(exc: Exception) -> Response:
        if isinstance(exc, HTTPException):
            return http_error(exc)
        log.error("internal error: %s: %s", type(exc).__name__, exc)
        log.debug("traceback", exc_info=exc)
        return plain_error(500, InternalServerError.description.split(".")[0])
