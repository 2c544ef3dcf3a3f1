"""What the worker's threads do: one request the gunicorn way (its parser, its WSGI
environ and response, as gthread serves it), and answers queued before one, which
the socket did not take at once. A mixin of ``PypidWorker``: it uses the worker's ``cfg``, ``log``,
``wsgi``, ``alive`` and its ``_count_request`` / ``_answer_head``.
"""

from __future__ import annotations

import logging
import socket
import time
from collections.abc import Callable
from datetime import datetime
from typing import Any

from gunicorn.http import RequestParser, wsgi
from gunicorn.http.errors import NoMoreData

from pypid.http1 import PlainHead
from pypid.simple.reply import Reply
from pypid.worker.connection import Conn

HEAD_TIMEOUT = 30.0  # seconds a client may take to send one request head
MIN_BODY_RATE = 16 * 1024  # bytes/s a request body must average (after HEAD_TIMEOUT's grace)
DRAIN_LIMIT = 1024 * 1024  # unread request body a kept-alive connection may skip


class Logged:
    """What gunicorn's access log reads from a response."""

    def __init__(self, status: str, headers: list[tuple[str, str]], sent: int | None) -> None:
        self.status = status
        self.headers = headers
        self.sent = sent


class ThreadedRequests:
    """The thread side of ``PypidWorker`` (see the module docstring)."""

    cfg: Any
    log: Any
    wsgi: Any
    alive: bool

    def _send_rest(self, conn: Conn, rest: list[bytes | memoryview], close: bool,
                   then: Callable[[Conn], bool] | None = None) -> bool:
        for part in rest:
            conn.sock.sendall(part)
        if then is not None:
            return then(conn)
        return not close

    def _slow_request(self, conn: Conn, head: PlainHead) -> bool:
        """``head`` (already taken from the buffer) through the app after all."""
        conn.buf[:0] = head.raw + b"\r\n\r\n"
        return self._slow(conn)

    def _slow(self, conn: Conn) -> bool:
        """One request through gunicorn's parser and the WSGI app, as gthread serves it."""
        parser = RequestParser(self.cfg, Paced(conn.sock, self.cfg.timeout), conn.client)
        parser.unreader.unread(bytes(conn.buf))
        conn.buf.clear()
        req = None
        try:
            req = next(parser)
        except (NoMoreData, StopIteration):
            return False
        except OSError:
            raise
        except Exception as exc:  # a head gunicorn refuses: its 400, then close
            self.handle_error(req, conn.sock, conn.client, exc)
            return False
        keep = self._handle(req, conn)
        if keep:
            keep = drain(req)
        if keep:  # a pipelined next request, read ahead: the loop takes it
            conn.buf += parser.unreader.buf.getvalue()
        return keep

    def _handle(self, req: Any, conn: Conn) -> bool:
        """Run the app for ``req``; True when the connection may carry another request.

        Once an answer has started, nothing else is ever written on this
        connection after an error: another answer would be a second one.
        """
        environ: dict[str, Any] = {}
        resp = None
        try:
            self.cfg.pre_request(self, req)
            started = datetime.now()
            resp, environ = wsgi.create(req, conn.sock, conn.client, conn.server, self.cfg)
            environ["wsgi.multithread"] = True
            self._count_request()
            if not self.alive or not self.cfg.keepalive:
                resp.force_close()
            respiter = self.wsgi(environ, _closing_on_failure(resp, has_body(req)))
            try:
                if isinstance(respiter, environ["wsgi.file_wrapper"]):
                    resp.write_file(respiter)
                else:
                    for item in respiter:
                        resp.write(item)
                resp.close()
            finally:
                self.log.access(resp, req, environ, datetime.now() - started)
                if hasattr(respiter, "close"):
                    respiter.close()
            return not resp.should_close()
        except OSError:
            raise
        except Exception as exc:
            if resp is None or not resp.headers_sent:
                self.handle_error(req, conn.sock, conn.client, exc)
            else:
                self.log.exception("Error handling request")
            return False
        finally:
            try:
                self.cfg.post_request(self, req, environ, resp)
            except Exception:
                self.log.exception("Exception in post_request hook")

    def _log_access(self, conn: Conn, head: PlainHead, reply: Reply, sent: int,
                    started: datetime) -> None:
        target = head.path + ("?" + head.query if head.query else "")
        environ = {"REMOTE_ADDR": conn.address, "REQUEST_METHOD": head.method,
                   "RAW_URI": target, "PATH_INFO": head.path, "QUERY_STRING": head.query,
                   "SERVER_PROTOCOL": "HTTP/1.1"}
        for name, value in head.headers.items():
            environ["HTTP_" + name.upper().replace("-", "_")] = value
        headers = [(name.upper(), value) for name, value in head.headers.items()]
        self.log.access(Logged(str(reply.status), reply.headers, sent), headers, environ,
                        datetime.now() - started)


class Paced:
    """The socket gunicorn's parser reads a request from, with a total deadline: the head
    within HEAD_TIMEOUT, then the body at MIN_BODY_RATE on average. A client that sends a
    byte a minute would otherwise hold a thread for ever (each read alone is quick)."""

    def __init__(self, sock: socket.socket, idle_timeout: float) -> None:
        self._sock = sock
        self._idle = idle_timeout
        self._start = time.monotonic()
        self._received = 0

    def recv(self, size: int) -> bytes:
        left = self._start + HEAD_TIMEOUT + self._received / MIN_BODY_RATE - time.monotonic()
        if left <= 0:
            raise TimeoutError("the client sends its request too slowly")
        self._sock.settimeout(min(left, self._idle))
        try:
            data = self._sock.recv(size)
        finally:
            self._sock.settimeout(self._idle)  # sending the answer has its own pace
        self._received += len(data)
        return data

    def __getattr__(self, name: str) -> Any:  # send, sendall, sendfile, fileno, ...
        return getattr(self._sock, name)


def drain(req: Any) -> bool:
    """Skip what the app left unread of the body, if little: the next request follows it.

    A body that cannot be read to its end (bad chunk framing, too long) ends the
    connection: its bytes must never be taken for a next request.
    """
    skipped = 0
    try:
        while skipped <= DRAIN_LIMIT:
            data = req.body.read(65536)
            if not data:
                return True
            skipped += len(data)
    except Exception:  # noqa: BLE001 - gunicorn's body errors: the framing is lost
        return False
    return False


def _closing_on_failure(resp: Any, with_body: bool) -> Callable[..., Any]:
    """gunicorn's ``start_response``, made to announce ``Connection: close`` for a failed
    request with a body: the app may have stopped reading it anywhere (at a bad chunk,
    past a limit), so the bytes after it cannot be trusted to be a next request."""
    def start_response(status: str, headers: list[tuple[str, str]],
                       exc_info: Any = None) -> Any:
        if with_body and not status.startswith(("1", "2", "3")):
            resp.force_close()
        return resp.start_response(status, headers, exc_info)
    return start_response


def has_body(req: Any) -> bool:
    for name, value in req.headers:
        if name == "TRANSFER-ENCODING" or (name == "CONTENT-LENGTH" and value.strip() != "0"):
            return True
    return False


def access_log_enabled(log: Any, cfg: Any) -> bool:
    """Would gunicorn's ``log.access`` write a line? (Then the loop builds one.)"""
    if not log.access_log.isEnabledFor(logging.INFO):
        return False
    enabled = getattr(log, "access_log_enabled", None)  # gunicorn >= 23
    if isinstance(enabled, bool):
        return enabled
    return bool(cfg.accesslog or cfg.logconfig or cfg.logconfig_dict or cfg.syslog)
