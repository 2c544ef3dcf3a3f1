"""pypid's gunicorn worker: hot requests answered in the event loop, the rest in threads.

Under gunicorn's gthread worker a cached page cost about 150 us of one core, and
pypid's own part of that was a tenth: gunicorn's HTTP parser, its WSGI environ
and the hand-over to a thread were the rest. This worker reads every
connection in one selector loop. A request whose head is complete and in the
plain form clients send (``GET``/``HEAD``, HTTP/1.1, no body, no query, no
``%``, nothing but well-formed header lines, none repeated) and that
``HotAnswers`` can answer from memory (an index page, a 304, a file's headers)
is answered right there. Everything else (uploads, logins, redirects, errors,
Range, anything unusual) goes, with the bytes already read, to a thread that
runs gunicorn's own parser, WSGI environ and response, as gthread does.
Downloads go to a thread too (sendfile), so a slow client never holds the loop.
The loop's answers leave together at the end of each turn (see ``_flush_all``);
what a socket cannot take at once is sent by a thread.

Idle keep-alive connections and half-sent heads wait in the loop, not in a
thread, so neither slow clients nor many idle ones can starve the threads.
TLS (``server.tls_cert``) uses gunicorn's gthread worker instead.
"""

from __future__ import annotations

import errno
import logging
import os
import re
import selectors
import socket
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from contextlib import suppress
from datetime import datetime
from email.utils import formatdate
from functools import partial
from queue import Empty, SimpleQueue
from typing import Any, NamedTuple

import gunicorn
from gunicorn.http import RequestParser, wsgi
from gunicorn.http.errors import NoMoreData
from gunicorn.workers.base import Worker

from pypid.web import HotAnswers, hot_answers
from pypid.web.fast import Hot

RECV_SIZE = 64 * 1024
MAX_HEAD = 16 * 1024  # a longer head goes to gunicorn's parser, which enforces its limits
HEAD_TIMEOUT = 30.0  # seconds a client may take to send one request head
DRAIN_LIMIT = 1024 * 1024  # unread request body a kept-alive connection may skip
NOTIFY_EVERY = 1.0  # heartbeat to the arbiter at most this often
STOP_LINGER = 2.0  # a stopping worker still answers requests already on their way this long
SERVER = getattr(gunicorn, "SERVER", None) or gunicorn.SERVER_SOFTWARE

# The plain request line: GET or HEAD, an origin-form path of unreserved
# characters (no query, no fragment, no percent escapes), HTTP/1.1.
_REQUEST_LINE = re.compile(rb"(GET|HEAD) (/[A-Za-z0-9._~!$&'()*+,;=:@/-]*) HTTP/1\.1")
_TOKEN = re.compile(rb"[!#$%&'*+.^_`|~0-9A-Za-z-]+")
_VALUE = re.compile(rb"[\t\x20-\x7e]*")
# Headers that make a request one for gunicorn and Flask: a body, a protocol switch.
_NOT_HOT = frozenset((b"content-length", b"transfer-encoding", b"expect", b"upgrade",
                      b"http2-settings", b"trailer"))
_FORWARDED = (b"x-forwarded-", b"forwarded")
_STATUS_LINES = {200: b"HTTP/1.1 200 OK\r\n", 304: b"HTTP/1.1 304 Not Modified\r\n"}
_QUIET_ERRNOS = (errno.EPIPE, errno.ECONNRESET, errno.ENOTCONN, errno.ETIMEDOUT)

# Markers in the selector's key data.
_ACCEPT = "accept"
_WAKE = "wake"


class HotRequest:
    """A parsed plain request head: method, path, lower-cased header names."""

    __slots__ = ("method", "target", "headers", "close", "head")

    def __init__(self, method: str, target: str, headers: dict[bytes, bytes],
                 close: bool, head: bytes) -> None:
        self.head = head  # as received, without the final blank line
        self.method = method
        self.target = target
        self.headers = headers
        self.close = close

    def header(self, name: bytes) -> str | None:
        value = self.headers.get(name)
        return None if value is None else value.decode("ascii")


class Limits(NamedTuple):
    """gunicorn's ``limit_request_*`` settings; a head beyond them is gunicorn's to refuse."""

    line: int = 4094
    fields: int = 100
    field_size: int = 8190


GUNICORN_LIMITS = Limits()


def parse_head(head: bytes, limits: Limits = GUNICORN_LIMITS) -> HotRequest | None:
    """A request head (without its final blank line) in the plain form, or None.

    None means only "not for the loop": gunicorn's parser gets the same bytes
    and decides, so nothing here needs to produce an error.

    >>> r = parse_head(b"GET /simple/a/ HTTP/1.1\\r\\nHost: x\\r\\nAccept: text/html")
    >>> r.method, r.target, r.header(b"accept"), r.close
    ('GET', '/simple/a/', 'text/html', False)
    >>> parse_head(b"GET /simple/a/?x=1 HTTP/1.1\\r\\nHost: x") is None
    True
    >>> parse_head(b"POST / HTTP/1.1\\r\\nContent-Length: 3") is None
    True
    >>> parse_head(b"GET / HTTP/1.1\\r\\nA: 1\\r\\na: 2") is None
    True
    >>> parse_head(b"GET / HTTP/1.1\\r\\nX: 1\\r\\n folded") is None
    True
    >>> parse_head(b"GET / HTTP/1.1\\r\\nX: " + b"a" * 9000) is None
    True
    """
    lines = head.split(b"\r\n")
    within = len(lines[0]) <= limits.line and len(lines) - 1 <= limits.fields
    match = _REQUEST_LINE.fullmatch(lines[0]) if within else None
    if match is None:
        return None
    headers: dict[bytes, bytes] = {}
    for line in lines[1:]:
        if len(line) > limits.field_size:
            return None
        name, colon, value = line.partition(b":")
        if not colon or _TOKEN.fullmatch(name) is None or _VALUE.fullmatch(value) is None:
            return None
        name = name.lower()
        if name in headers or name in _NOT_HOT:
            return None
        headers[name] = value.strip(b" \t")
    close = False
    connection = headers.get(b"connection")
    if connection is not None:
        tokens = {t.strip().lower() for t in connection.split(b",")}
        if not tokens <= {b"close", b"keep-alive"}:
            return None
        close = b"close" in tokens
    return HotRequest(match.group(1).decode(), match.group(2).decode(), headers, close, head)


class _Conn:
    """A client connection: waiting in the loop's selector while ``deadline`` is set."""

    __slots__ = ("sock", "fd", "client", "server", "buf", "deadline", "head_started", "out",
                 "close_after")

    def __init__(self, sock: socket.socket, client: Any, server: Any) -> None:
        self.sock = sock
        self.fd = sock.fileno()
        self.client = client
        self.server = server
        self.buf = bytearray()
        self.deadline = 0.0  # 0: out of the selector (a thread has it, or it is closing)
        self.head_started = False
        self.out: list[bytes] = []  # answers not sent yet (see PypidWorker._flush)
        self.close_after = False  # close once ``out`` is sent


class _Logged:
    """What gunicorn's access log reads from a response or a request."""

    def __init__(self, status: str, headers: list[tuple[str, str]], sent: int | None) -> None:
        self.status = status
        self.headers = headers
        self.sent = sent


class PypidWorker(Worker):  # type: ignore[misc]
    """See the module docstring. Configured by gunicorn's ``threads``, ``keepalive``,
    ``timeout``, ``worker_connections`` and ``max_requests``."""

    def run(self) -> None:
        self.hot: HotAnswers | None = hot_answers(self.wsgi)
        self.prefix = _url_prefix(self.wsgi)
        cfg = self.cfg  # 0 means "no limit" to gunicorn; the loop still stops at MAX_HEAD
        self.limits = Limits(cfg.limit_request_line or MAX_HEAD,
                             cfg.limit_request_fields or MAX_HEAD,
                             cfg.limit_request_field_size or MAX_HEAD)
        self.pool = ThreadPoolExecutor(max_workers=self.cfg.threads, thread_name_prefix="pypid")
        self.selector = selectors.DefaultSelector()
        self.returned: SimpleQueue[tuple[_Conn, bool]] = SimpleQueue()
        self.conns: dict[int, _Conn] = {}  # every open connection, in the loop or busy
        self.outbox: list[_Conn] = []  # connections with answers to send this turn
        self.count_lock = threading.Lock()
        self.accepting = False
        self.last_notify = 0.0
        self._date = (0, b"")
        self.access_logging = _access_log_enabled(self.log, self.cfg)
        self.selector.register(self.PIPE[0], selectors.EVENT_READ, _WAKE)
        for listener in self.sockets:
            listener.setblocking(False)
        try:
            self._loop()
        finally:
            self._stop()

    # -- the loop

    def _loop(self) -> None:
        linger_until = float("inf")  # set when the worker starts stopping
        while self.alive or (self.conns and time.monotonic() < linger_until):
            now = time.monotonic()
            stopping = not self.alive
            if stopping and linger_until == float("inf"):
                # Stopping: no new connections, but a request a client is already
                # sending on an open one is still answered (with Connection: close).
                linger_until = now + min(STOP_LINGER, self.cfg.graceful_timeout)
                for conn in self.conns.values():
                    if conn.deadline:
                        conn.deadline = min(conn.deadline, linger_until)
            if now - self.last_notify >= NOTIFY_EVERY or stopping:
                self.notify()
                self.last_notify = now
                self._expire(now)
                if self.ppid != os.getppid():
                    self.log.info("Parent changed, shutting down: %s", self)
                    return
            self._set_accepting(self.alive and len(self.conns) < self.cfg.worker_connections)
            timeout = 0.05 if stopping else NOTIFY_EVERY
            for key, _ in self.selector.select(timeout):
                self._dispatch(key)
            self._flush_all()

    def _dispatch(self, key: selectors.SelectorKey) -> None:
        data = key.data
        try:
            if data is _ACCEPT:
                self._accept(key.fileobj)  # type: ignore[arg-type]
            elif data is _WAKE:
                self._woken()
            else:
                self._readable(data)
        except Exception:
            # A bug must cost one connection, not every connection of this worker.
            self.log.exception("Error in the event loop")
            if isinstance(data, _Conn):
                self._close(data)

    def _set_accepting(self, on: bool) -> None:
        if on == self.accepting:
            return
        for listener in self.sockets:
            if on:
                self.selector.register(listener, selectors.EVENT_READ, _ACCEPT)
            else:
                self.selector.unregister(listener)
        self.accepting = on

    def _accept(self, listener: socket.socket) -> None:
        for _ in range(16):  # a burst, not forever: the others are waiting too
            try:
                sock, client = listener.accept()
            except (BlockingIOError, InterruptedError, ConnectionAbortedError):
                return
            sock.setblocking(False)
            if sock.family in (socket.AF_INET, socket.AF_INET6):
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            conn = _Conn(sock, client, listener.getsockname())
            self.conns[conn.fd] = conn
            self._watch(conn, time.monotonic())
            if len(self.conns) >= self.cfg.worker_connections:
                return

    def _watch(self, conn: _Conn, now: float) -> None:
        """Back in the loop: wait for the next request (at most ``keepalive`` seconds)."""
        conn.deadline = now + (max(self.cfg.keepalive, 1) if self.alive else STOP_LINGER)
        conn.head_started = False
        self.selector.register(conn.sock, selectors.EVENT_READ, conn)

    def _readable(self, conn: _Conn) -> None:
        try:
            data = conn.sock.recv(RECV_SIZE)
        except (BlockingIOError, InterruptedError):
            return
        except OSError:
            self._close(conn)
            return
        if not data:
            self._close(conn)
            return
        conn.buf += data
        self._serve(conn)

    def _serve(self, conn: _Conn) -> None:
        """Answer the complete request heads in ``conn.buf`` while they are hot."""
        while True:
            end = conn.buf.find(b"\r\n\r\n")
            if end < 0:
                if len(conn.buf) > MAX_HEAD:
                    self._flush(conn, then=self._slow)
                elif conn.buf and not conn.head_started:
                    conn.head_started = True  # one head must arrive within HEAD_TIMEOUT
                    conn.deadline = time.monotonic() + HEAD_TIMEOUT
                return
            started = datetime.now() if self.access_logging else None
            request = parse_head(bytes(conn.buf[:end]), self.limits)
            hot = self._answer(request) if request is not None else None
            if request is None or hot is None:
                self._flush(conn, then=self._slow)
                return
            del conn.buf[: end + 4]
            conn.head_started = False
            self._count_request()
            close = request.close or not self.alive or not self.cfg.keepalive
            if hot.file is not None:
                self._flush(conn, then=partial(
                    self._send_file, request=request, hot=hot, close=close, started=started))
                return
            if not conn.out:
                self.outbox.append(conn)
            conn.out.append(self._message(hot, close))
            if hot.body:
                conn.out.append(hot.body)
            if started is not None:
                self._log_access(conn, request, hot, len(hot.body), started)
            if close:
                conn.close_after = True
                self.selector.unregister(conn.sock)  # nothing more is read from it
                conn.deadline = 0.0
                return
            conn.deadline = time.monotonic() + max(self.cfg.keepalive, 1)

    # -- sending: once per turn of the loop, so that answers to many connections
    # leave together. The client then wakes once for a batch of answers instead
    # of once for each (on loopback each wake-up is an interrupt to another CPU).

    def _flush_all(self) -> None:
        outbox, self.outbox = self.outbox, []
        for conn in outbox:
            try:
                self._flush(conn)
            except Exception:
                self.log.exception("Error in the event loop")
                self._close(conn)

    def _flush(self, conn: _Conn, then: Callable[[_Conn], bool] | None = None) -> None:
        """Send ``conn``'s queued answers, then hand it to a thread for ``then`` if given.

        What the socket does not take at once is sent by a thread (a slow client
        must not hold the loop), and ``then`` runs there after it.
        """
        close, conn.close_after = conn.close_after, False
        if conn.out:
            message = b"".join(conn.out) if len(conn.out) > 1 else conn.out[0]
            conn.out = []
            sent = self._send_some(conn, message)
            if sent < 0:
                return
            if sent < len(message):
                self._hand_over(conn, partial(self._send_rest, rest=memoryview(message)[sent:],
                                              close=close, then=then))
                return
        if close:
            self._close(conn)
        elif then is not None:
            self._hand_over(conn, then)

    def _answer(self, request: HotRequest) -> Hot | None:
        if self.hot is None:
            return None
        path = request.target
        if self.prefix:
            if not path.startswith(self.prefix + "/"):
                return None
            path = path[len(self.prefix):]
        if self.access_logging and any(n.startswith(_FORWARDED) for n in request.headers):
            return None  # the logged client address comes from the trusted-proxy layer
        header = request.header
        try:
            return self.hot.answer(request.method, path, accept=header(b"accept"),
                                   accept_encoding=header(b"accept-encoding"),
                                   if_none_match=header(b"if-none-match"),
                                   if_modified_since=header(b"if-modified-since"),
                                   ranged=b"range" in request.headers)
        except Exception:
            self.log.exception("Error answering %s %s; the app answers it", request.method, path)
            return None

    def _message(self, hot: Hot, close: bool) -> bytes:
        """Status line and headers, as gunicorn would write them."""
        lines = [_STATUS_LINES[hot.status], b"Server: ", SERVER.encode(), b"\r\nDate: ",
                 self._http_date(), b"\r\nConnection: ", b"close" if close else b"keep-alive",
                 b"\r\n"]
        for name, value in hot.headers:
            lines.append(f"{name}: {value}\r\n".encode("latin-1"))
        lines.append(b"\r\n")
        return b"".join(lines)

    def _http_date(self) -> bytes:
        now = int(time.time())
        if self._date[0] != now:
            self._date = (now, formatdate(now, usegmt=True).encode())
        return self._date[1]

    def _send_some(self, conn: _Conn, data: bytes) -> int:
        """Send what the socket takes now; -1 when the connection is gone (and closed)."""
        try:
            return conn.sock.send(data)
        except (BlockingIOError, InterruptedError):
            return 0
        except OSError:
            self._close(conn)
            return -1

    def _expire(self, now: float) -> None:
        for conn in [c for c in self.conns.values() if c.deadline and c.deadline < now]:
            self._close(conn)

    def _close(self, conn: _Conn) -> None:
        if self.conns.pop(conn.fd, None) is None:
            return
        if conn.deadline:  # in the selector
            with suppress(KeyError, ValueError):
                self.selector.unregister(conn.sock)
        with suppress(OSError):
            conn.sock.close()

    def _count_request(self) -> None:
        with self.count_lock:
            self.nr += 1
            over = self.nr >= self.max_requests
        if over and self.alive:
            self.log.info("Autorestarting worker after current request.")
            self.alive = False

    # -- threads

    def _hand_over(self, conn: _Conn, job: Callable[[_Conn], bool]) -> None:
        """Give the connection to a thread; it comes back through ``returned``."""
        if conn.deadline:  # still in the selector
            self.selector.unregister(conn.sock)
            conn.deadline = 0.0
        self.pool.submit(self._run_job, conn, job)

    def _run_job(self, conn: _Conn, job: Callable[[_Conn], bool]) -> None:
        keep = False
        try:
            conn.sock.settimeout(self.cfg.timeout)  # a stalled client cannot hold a thread
            keep = job(conn)
        except OSError as exc:
            if exc.errno in _QUIET_ERRNOS or isinstance(exc, TimeoutError):
                self.log.debug("Connection ended: %s", exc)
            else:
                self.log.exception("Socket error processing request.")
        except Exception:
            self.log.exception("Error handling request")
        finally:
            self.returned.put((conn, keep))
            with suppress(OSError):  # a full pipe: the loop is awake anyway
                os.write(self.PIPE[1], b".")

    def _woken(self) -> None:
        try:
            while os.read(self.PIPE[0], 4096):
                pass
        except OSError:
            pass
        while True:
            try:
                conn, keep = self.returned.get_nowait()
            except Empty:
                return
            if not keep:
                conn.deadline = 0.0
                self._close(conn)
                continue
            try:
                conn.sock.setblocking(False)
            except OSError:
                self._close(conn)
                continue
            self._watch(conn, time.monotonic())
            if conn.buf:
                self._serve(conn)

    def _send_rest(self, conn: _Conn, rest: memoryview, close: bool,
                   then: Callable[[_Conn], bool] | None = None) -> bool:
        conn.sock.sendall(rest)
        if then is not None:
            return then(conn)
        return not close

    def _send_file(self, conn: _Conn, request: HotRequest, hot: Hot, close: bool,
                   started: datetime | None) -> bool:
        try:
            handle = open(hot.file or "", "rb")  # noqa: SIM115 - closed below
        except OSError:
            return self._slow_request(conn, request)
        with handle:
            if not hot.same_file(handle.fileno()):
                return self._slow_request(conn, request)
            conn.sock.sendall(self._message(hot, close))
            sent = conn.sock.sendfile(handle)
        if started is not None:
            self._log_access(conn, request, hot, sent, started)
        complete = hot.identity is not None and sent == hot.identity[0]
        return complete and not close  # a short body has lost the framing: close

    def _slow_request(self, conn: _Conn, request: HotRequest) -> bool:
        """The file changed between answer and open: the app says what happened."""
        conn.buf[:0] = request.head + b"\r\n\r\n"
        return self._slow(conn)

    def _slow(self, conn: _Conn) -> bool:
        """One request through gunicorn's parser and the WSGI app, as gthread serves it."""
        parser = RequestParser(self.cfg, conn.sock, conn.client)
        parser.unreader.unread(bytes(conn.buf))
        conn.buf.clear()
        req = None
        try:
            req = next(parser)
            keep = self._handle(req, conn)
            if keep:
                keep = _drain(req)
            if keep:  # a pipelined next request, read ahead: the loop takes it
                conn.buf += parser.unreader.buf.getvalue()
            return keep
        except (NoMoreData, StopIteration):
            return False
        except OSError:
            raise
        except Exception as exc:
            self.handle_error(req, conn.sock, conn.client, exc)
            return False

    def _handle(self, req: Any, conn: _Conn) -> bool:
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
            respiter = self.wsgi(environ, resp.start_response)
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
        except Exception:
            if resp is not None and resp.headers_sent:
                # Half an answer is out: another one on this socket would corrupt it.
                self.log.exception("Error handling request")
                return False
            raise
        finally:
            try:
                self.cfg.post_request(self, req, environ, resp)
            except Exception:
                self.log.exception("Exception in post_request hook")

    # -- logging and stopping

    def _log_access(self, conn: _Conn, request: HotRequest, hot: Hot, sent: int,
                    started: datetime) -> None:
        environ = {"REMOTE_ADDR": _address(conn.client), "REQUEST_METHOD": request.method,
                   "RAW_URI": request.target, "PATH_INFO": request.target, "QUERY_STRING": "",
                   "SERVER_PROTOCOL": "HTTP/1.1"}
        for name, value in request.headers.items():
            environ["HTTP_" + name.decode().upper().replace("-", "_")] = value.decode("ascii")
        headers = [(name.decode().upper(), value.decode()) for name, value in
                   request.headers.items()]
        self.log.access(_Logged(f"{hot.status}", hot.headers, sent), headers, environ,
                        datetime.now() - started)

    def handle_exit(self, sig: int, frame: Any) -> None:
        self.alive = False  # the loop sees it at once: the signal wakes it through PIPE

    def _stop(self) -> None:
        """Finish what threads are serving (gunicorn kills us after graceful_timeout)."""
        self._set_accepting(False)
        for conn in [c for c in self.conns.values() if c.deadline]:
            self._close(conn)  # idle, or a head not yet complete
        self.pool.shutdown(wait=True)
        self._woken()
        self._flush_all()
        for conn in list(self.conns.values()):
            conn.deadline = 0.0
            self._close(conn)
        self.selector.close()


def _drain(req: Any) -> bool:
    """Skip what the app left unread of the body, if little: the next request follows it."""
    skipped = 0
    while skipped <= DRAIN_LIMIT:
        data = req.body.read(65536)
        if not data:
            return True
        skipped += len(data)
    return False


def _url_prefix(app: Any) -> str:
    services = getattr(app, "extensions", {}).get("pypid")
    return services.config.server.url_prefix if services is not None else ""


def _address(client: Any) -> str:
    return client[0] if isinstance(client, tuple) else str(client or "-")


def _access_log_enabled(log: Any, cfg: Any) -> bool:
    """Would gunicorn's ``log.access`` write a line? (Then the loop builds one.)"""
    if not log.access_log.isEnabledFor(logging.INFO):
        return False
    enabled = getattr(log, "access_log_enabled", None)  # gunicorn >= 23
    if isinstance(enabled, bool):
        return enabled
    return bool(cfg.accesslog or cfg.logconfig or cfg.logconfig_dict or cfg.syslog)
