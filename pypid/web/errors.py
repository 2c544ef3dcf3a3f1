"""One-line plain-text errors with a latin-1-safe reason phrase, and their handlers."""

from __future__ import annotations

import logging

from flask import Flask, Response
from werkzeug.exceptions import HTTPException, InternalServerError

log = logging.getLogger("pypid.web")


def reason_phrase(text: str) -> str:
    """``text`` made safe for an HTTP status line: one line, latin-1, no control characters.

    >>> reason_phrase("File already exists: ☃.whl\\r\\nX: y")
    'File already exists: ?.whl X: y'
    """
    flat = " ".join(text.split())
    flat = "".join(c if 32 <= ord(c) < 127 or 160 <= ord(c) <= 255 else "?" for c in flat)
    return flat[:200]


def plain_error(status: int, message: str, *, reason: bool = False,
                headers: dict[str, str] | None = None) -> Response:
    """A plain-text error response; with ``reason`` the message is also the status line's
    phrase, and the body says exactly the same (latin-1 safe, one line)."""
    line = reason_phrase(message) if reason else " ".join(message.split())
    response = Response(line + "\n", status=status, mimetype="text/plain",
                        headers=headers or {})
    if reason:
        response.status = f"{status} {line}"
    return response


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
