"""A ``Reply`` of the simple API as a Flask response, byte for byte."""

from __future__ import annotations

import contextlib
import socket
from collections.abc import Iterator
from typing import Any

from flask import Response, request
from werkzeug.wsgi import wrap_file

from pypid.simple.reply import BrokenStream, FilePart, Kind, Reply, text

BLOCK_SIZE = 256 * 1024


def response(reply: Reply) -> Response:
    """``reply`` as a Flask response, byte for byte."""
    if reply.stream is not None:
        return Response(_cut_when_broken(reply.stream, request.environ),
                        status=reply.status_line, headers=reply.headers, direct_passthrough=True)
    part = reply.file
    if part is None:
        # Not Response(body): that would set Content-Length from the body, and a HEAD
        # reply has none but keeps the length of the GET's.
        plain = Response(status=reply.status_line, headers=reply.headers)
        plain.response = [reply.body] if reply.body else []
        return plain
    try:
        handle = open(part.path, "rb")  # noqa: SIM115 - closed by the WSGI server
    except OSError:
        return response(text(Kind.NOT_FOUND, 404, "no such file here"))
    if not part.matches(handle.fileno()):  # replaced since decided
        handle.close()
        return response(text(Kind.CHANGING, 503, "the file is being replaced; retry in a second",
                             headers=[("Retry-After", "1")]))
    if part.offset == 0 and part.length == part.identity.size:
        # gunicorn's sendfile stops at Content-Length, so a growing file adds nothing.
        body = wrap_file(request.environ, handle, BLOCK_SIZE)
    else:
        body = _part(handle, part)
    return Response(body, status=reply.status_line, headers=reply.headers,
                    direct_passthrough=True)


def _cut_when_broken(stream: Iterator[bytes], environ: dict[str, Any]) -> Iterator[bytes]:
    """``stream``, with the client's connection shut when it breaks (gunicorn would keep
    it alive after a short body otherwise, and the client would wait for the rest)."""
    try:
        yield from stream
    except BrokenStream:
        sock = environ.get("gunicorn.socket")
        if sock is None:
            raise
        with contextlib.suppress(OSError):
            sock.shutdown(socket.SHUT_RDWR)


def _part(handle: object, part: FilePart) -> Iterator[bytes]:
    with handle:  # type: ignore[attr-defined]
        handle.seek(part.offset)  # type: ignore[attr-defined]
        left = part.length
        while left > 0:
            chunk = handle.read(min(BLOCK_SIZE, left))  # type: ignore[attr-defined]
            if not chunk:
                return
            left -= len(chunk)
            yield chunk
