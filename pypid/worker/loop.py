"""pypid's gunicorn worker: one event loop reads every connection and answers what the
simple API can decide without blocking; everything else goes to a thread.

A plain head (``pypid.http1``) that ``SimpleAPI.decide(..., may_block=False)``
answers (a page, a 304, a redirect, a 404, a file) is answered by the loop, a
file's body with non-blocking sendfile (``pypid.worker.sending``): a connection
whose socket is full waits for it in the selector, so a slow reader holds neither
the loop nor a thread. The rest (uploads, logins, anything unusual) goes, with the
bytes read, to a thread running gunicorn's parser and the Flask app, whose views
ask the same ``SimpleAPI``.

A connection serves its next pipelined request only while its unsent answers
are small and no file is being sent, so pipelining cannot multiply memory. Idle
keep-alive connections and half-sent heads wait in the loop, not in a thread. TLS
(``server.tls_cert``) uses gunicorn's gthread worker instead.
"""

from __future__ import annotations

import errno
import os
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
from typing import Any

import gunicorn
from gunicorn.workers.base import Worker

from pypid.http1 import (
    BARE_LF,
    NEED_MORE,
    HeadMemo,
    Limits,
    PlainHead,
    answer_parts,
    bare_lf,
    common_headers,
    find_head,
    parse_head,
)
from pypid.metrics import tally
from pypid.simple.core import SimpleAPI, SimpleRequest
from pypid.simple.reply import Reply
from pypid.worker.answers import BARE_LF_HEAD, BUSY, HEAD_TOO_LARGE, LOCATED, MAX_HEAD, forwarded
from pypid.worker.connection import Conn, State
from pypid.worker.sending import ACCEPT_PAUSE, KEEP_OPEN_SECONDS, OUT_OF_DESCRIPTORS, Sending
from pypid.worker.threads import HEAD_TIMEOUT, ThreadedRequests, access_log_enabled

RECV_SIZE = 64 * 1024
ROUTES_KEPT = 1_000  # paths whose route label the loop remembers (the first asked for)
OUT_LIMIT = 64 * 1024  # unsent answer bytes past which a connection's next request waits
# Answers leave once this many connections have some, not only at the end of a turn:
# with 256 busy connections a turn is ~5 ms of work, which the first answer read in it
# would otherwise wait for (the tail at 256 connections, bench/README.md).
FLUSH_EVERY = 16
QUEUE_PER_THREAD = 8  # requests waiting for a thread, per thread, before new ones get 503
NOTIFY_EVERY = 1.0  # heartbeat to the arbiter at most this often
STOP_LINGER = 2.0  # a stopping worker still answers requests already on their way this long
SERVER = (getattr(gunicorn, "SERVER", None) or gunicorn.SERVER_SOFTWARE).encode()
_QUIET_ERRNOS = (errno.EPIPE, errno.ECONNRESET, errno.ENOTCONN, errno.ETIMEDOUT)

# Markers in the selector's key data.
_ACCEPT = "accept"
_WAKE = "wake"


class PypidWorker(Sending, ThreadedRequests, Worker):  # type: ignore[misc]
    """See the module docstring. Configured by gunicorn's ``threads``, ``keepalive``,
    ``timeout``, ``worker_connections`` and ``max_requests``."""

    def run(self) -> None:
        services = getattr(self.app, "services", None)  # pypid's application; else all to threads
        self.simple: SimpleAPI | None = services.simple if services is not None else None
        self.prefix = services.config.server.url_prefix if services is not None else ""
        cfg = self.cfg  # read once: a gunicorn setting costs a Python call on every read
        self.keepalive = bool(cfg.keepalive)
        self.idle_timeout = max(cfg.keepalive, 1)  # seconds a kept-alive connection may idle
        self.max_connections = cfg.worker_connections
        # 0 means "no limit" to gunicorn; the loop still stops at MAX_HEAD
        self.limits = Limits(cfg.limit_request_line or MAX_HEAD,
                             cfg.limit_request_fields or MAX_HEAD,
                             cfg.limit_request_field_size or MAX_HEAD)
        self.pool = ThreadPoolExecutor(max_workers=self.cfg.threads, thread_name_prefix="pypid")
        self.selector = selectors.DefaultSelector()
        self.returned: SimpleQueue[tuple[Conn, bool]] = SimpleQueue()
        self.conns: dict[int, Conn] = {}  # every open connection, in the loop or busy
        self.outbox: list[Conn] = []  # connections with answers to send this turn
        self.count_lock = threading.Lock()
        self.accepting = False
        self.accept_paused_until = 0.0
        self.last_descriptor_warning = -60.0
        self.waiting_jobs = 0  # handed to the pool, not started yet
        self.max_waiting = self.cfg.threads * QUEUE_PER_THREAD
        self.last_notify = 0.0
        self._common = (0, b"", b"")  # the second they are for; keep-alive; close
        self.access_logging = access_log_enabled(self.log, self.cfg)
        self.counts = tally.tally()  # the loop thread's own counters
        self.routes: dict[str, str] = {}  # path -> route label, for the paths asked most
        self.head_memo = HeadMemo()  # header blocks and lines read (see parse_head)
        self.kept_open = {}  # files kept open to send again (see Sending._open_body)
        self.sent_once = {}  # small files sent once lately: kept open when asked again
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
        while self.alive or (self.conns and (time.monotonic() < linger_until
                                             or self._sending())):
            now = time.monotonic()
            stopping = not self.alive
            if stopping or now - self.last_notify >= NOTIFY_EVERY:
                tended = self._tend(now, stopping, linger_until)
                if tended is None:
                    return
                linger_until = tended
            accepting = (self.alive and len(self.conns) < self.max_connections
                         and now >= self.accept_paused_until)
            if accepting != self.accepting:  # a call only for a change: this runs every turn
                self._set_accepting(accepting)
            timeout = (0.0 if self.outbox else 0.05 if stopping or not self.accepting
                       else NOTIFY_EVERY)
            for key, _ in self.selector.select(timeout):
                # What each event asks, here and not in a method: a call an event costs
                # about 1% of a page (bench/instructions.py).
                data = key.data
                try:
                    if data is _ACCEPT:
                        self._accept(key.fileobj)  # type: ignore[arg-type]
                    elif data is _WAKE:
                        self._woken()
                    elif data.state is State.SENDING or data.state is State.SENDING_LAST:
                        self._writable(data)
                    else:
                        self._readable(data)
                except Exception:
                    # A bug must cost one connection, not every connection of this worker.
                    self.log.exception("Error in the event loop")
                    if isinstance(data, Conn):
                        self._close(data)
                if len(self.outbox) >= FLUSH_EVERY:
                    self._flush_all()
            self._flush_all()

    def _tend(self, now: float, stopping: bool, linger_until: float) -> float | None:
        """Once a second, and every turn while stopping: tell the arbiter the worker
        lives, close idle connections past their time; the linger's end (None: the
        parent changed, stop now)."""
        if stopping and linger_until == float("inf"):
            # Stopping: no new connections, but a request a client is already
            # sending on an open one is still answered (with Connection: close),
            # and a file being sent may finish within graceful_timeout.
            linger_until = now + min(STOP_LINGER, self.cfg.graceful_timeout)
            for conn in self.conns.values():
                if conn.in_selector:
                    conn.deadline = min(conn.deadline, now + self.cfg.graceful_timeout
                                        if conn.body is not None else linger_until)
        self.notify()
        self.last_notify = now
        self._expire(now)
        self.close_kept(opened_before=now - KEEP_OPEN_SECONDS)
        if self.ppid != os.getppid():
            self.log.info("Parent changed, shutting down: %s", self)
            return None
        return linger_until

    def _sending(self) -> bool:
        return any(conn.body is not None for conn in self.conns.values())

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
            except OSError as exc:
                if exc.errno not in OUT_OF_DESCRIPTORS:
                    raise
                # The connection stays in the backlog: stop asking for it a moment
                # (the listener would be readable at once again: a busy loop).
                self._out_of_descriptors(exc.strerror)
                return
            sock.setblocking(False)
            if sock.family in (socket.AF_INET, socket.AF_INET6):
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            conn = Conn(sock, client, listener.getsockname())
            self.conns[conn.fd] = conn
            self._watch(conn, time.monotonic())
            if len(self.conns) >= self.max_connections:
                return

    def _out_of_descriptors(self, why: str | None) -> None:
        """Accept nothing for a moment (every socket and every file being sent holds one)."""
        self.close_kept()
        self.accept_paused_until = time.monotonic() + ACCEPT_PAUSE
        if time.monotonic() - self.last_descriptor_warning > 60:
            self.last_descriptor_warning = time.monotonic()
            self.log.warning("out of file descriptors (%s) with %d connections open; "
                             "not accepting for %.1f s (raise LimitNOFILE or lower "
                             "worker_connections)", why, len(self.conns), ACCEPT_PAUSE)

    def _watch(self, conn: Conn, now: float) -> None:
        """Back in the selector: wait for the next request (at most ``keepalive`` seconds)."""
        conn.deadline = now + (self.idle_timeout if self.alive else STOP_LINGER)
        conn.state = State.WAITING
        self.selector.register(conn.sock, selectors.EVENT_READ, conn)

    def _leave_selector(self, conn: Conn, state: State) -> None:
        if conn.in_selector:
            self.selector.unregister(conn.sock)
        conn.state = state

    def _readable(self, conn: Conn) -> None:
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

    def _serve(self, conn: Conn) -> None:
        """Answer the complete request heads in ``conn.buf`` while the loop can."""
        while conn.buf:  # empty: all answered, wait for the next request
            if conn.out_bytes > OUT_LIMIT:
                # The rest waits until these answers have left (see _flush_all).
                self._leave_selector(conn, State.PAUSED)
                return
            end = find_head(conn.buf)
            if end == NEED_MORE:
                if len(conn.buf) > MAX_HEAD:
                    self._refuse(conn, HEAD_TOO_LARGE)
                elif conn.state is State.WAITING:
                    conn.state = State.READING  # one head must arrive within HEAD_TIMEOUT
                    conn.deadline = time.monotonic() + HEAD_TIMEOUT
                return
            head = parse_head(bytes(conn.buf[:end]), self.limits,
                              self.head_memo) if end >= 0 else None
            if head is None and (end == BARE_LF or bare_lf(conn.buf, end)):
                self._refuse(conn, BARE_LF_HEAD)
                return
            started = datetime.now() if self.access_logging else None
            read_at = time.perf_counter()
            reply = self._decide(head, conn) if head is not None else None
            if head is None or reply is None:
                self._to_thread(conn, self._slow)
                return
            del conn.buf[: end + 4]
            self._count_request()
            close = head.close or not self.alive or not self.keepalive
            if reply.file is not None:
                if not self._send_file(conn, head, reply, close, started, read_at=read_at):
                    return
            else:
                self._queue(conn, self._answer_head(reply, close), reply.body)
                self._tally(head, reply, read_at)  # about 0.2 us: bench/metrics.py
                if started is not None:
                    self._log_access(conn, head, reply, len(reply.body), started)
                if close:
                    self._leave_selector(conn, State.CLOSING)
                    return
            conn.state = State.WAITING
            conn.deadline = time.monotonic() + self.idle_timeout

    def _refuse(self, conn: Conn, reply: Reply) -> None:
        """Answer a head no parser should be trusted with, and close."""
        conn.buf.clear()
        self._count_request()
        tally.request(self.counts, "other", "other", reply.status, 0.0)
        self._queue(conn, self._answer_head(reply, True), reply.body)
        self._leave_selector(conn, State.CLOSING)

    def _decide(self, head: PlainHead, conn: Conn) -> Reply | None:
        if self.simple is None:
            return None
        path = head.path
        if self.prefix:
            if not path.startswith(self.prefix + "/"):
                return None
            path = path[len(self.prefix):]
        if self.access_logging and forwarded(head):
            return None  # the logged client address comes from the trusted-proxy layer
        try:
            reply = self.simple.decide(SimpleRequest(
                head.method, path, head.query, self.prefix, headers=head.headers,
                client=conn.address), may_block=False)
        except Exception:
            self.log.exception("Error answering %s %s; the app answers it", head.method, path)
            return None
        if reply is not None and reply.kind in LOCATED and forwarded(head):
            return None  # a trusted proxy's prefix belongs in the Location: the app's job
        return reply

    def _send_file(self, conn: Conn, head: PlainHead, reply: Reply, close: bool,
                   started: datetime | None, *, read_at: float) -> bool:
        """Send the head and the body from the open file, now; what the socket does not
        take leaves later, and the connection's next request waits for it. True: all
        sent, the connection stays in the selector for its next request (leaving it and
        coming back would cost two epoll_ctl calls a download)."""
        opened = self._open_body(conn, head, reply, started)
        if opened is None:  # out of descriptors: like a full thread queue
            self._refuse(conn, BUSY)
            self._out_of_descriptors("opening a file to send")
            return False
        if not opened:  # gone or replaced since the decision: the app says what now
            self._to_thread(conn, partial(self._slow_request, head=head))
            return False
        self._queue(conn, self._answer_head(reply, close))
        self._tally(head, reply, read_at)
        if not close:
            sent = self._push(conn)  # answers queued before it first
            if sent is None:  # closed
                return False
            if sent:
                self.outbox.remove(conn)  # nothing left to send
                return True
        self._leave_selector(conn, State.CLOSING if close else State.PAUSED)
        return False

    def _tally(self, head: PlainHead, reply: Reply, read_at: float) -> None:
        """Count an answer of the loop's (a file's: once its head is queued); only GET
        and HEAD get here. Inline ``tally.request``: this runs for every request."""
        seconds = time.perf_counter() - read_at
        route = self.routes.get(head.path)
        if route is None:
            path = head.path[len(self.prefix):] if self.prefix else head.path
            route = tally.route_of(head.method, path)
            if len(self.routes) < ROUTES_KEPT and len(head.path) <= 200:  # bounded memory
                self.routes[head.path] = route
        key = ("requests", route, head.method, reply.status,
               0 if seconds <= tally.FIRST_BUCKET else tally.bucket(seconds))
        entry = self.counts.get(key)
        if entry is None:
            self.counts[key] = [1, seconds]
        else:
            entry[0] += 1  # type: ignore[index]
            entry[1] += seconds  # type: ignore[index]

    def _answer_head(self, reply: Reply, close: bool) -> bytes:
        now = int(time.time())
        if self._common[0] != now:
            date = formatdate(now, usegmt=True).encode()
            self._common = (now, common_headers(SERVER, date, False),
                            common_headers(SERVER, date, True))
        parts = reply.encoded
        if parts is None:  # kept: file replies and pages' replies are sent many times
            parts = reply.encoded = answer_parts(reply.status_line, reply.headers)
        return b"".join((parts[0], self._common[2 if close else 1], parts[1]))

    def _resume(self, conn: Conn) -> None:
        """Its answers have left: serve the requests it sent meanwhile, then read again."""
        self._watch(conn, time.monotonic())
        self._serve(conn)

    def _to_thread(self, conn: Conn, job: Callable[[Conn], bool]) -> None:
        """Send what is queued for ``conn`` first, then give it to a thread for ``job``;
        when the threads already have a queue as long as they can take, 503 instead."""
        if self.waiting_jobs >= self.max_waiting:
            self._refuse(conn, BUSY)
            return
        if conn.out:
            self.outbox.remove(conn)
        self._flush(conn, then=job)

    def _expire(self, now: float) -> None:
        for conn in [c for c in self.conns.values() if c.in_selector and c.deadline < now]:
            self._close(conn)

    def _close(self, conn: Conn) -> None:
        if self.conns.pop(conn.fd, None) is None:
            return
        if conn.in_selector:
            with suppress(KeyError, ValueError):
                self.selector.unregister(conn.sock)
        conn.state = State.CLOSING
        with suppress(OSError):
            conn.close()

    def _count_request(self) -> None:
        with self.count_lock:
            self.nr += 1
            over = self.nr >= self.max_requests
        if over and self.alive:
            self.log.info("Autorestarting worker after current request.")
            self.alive = False

    # -- threads

    def _hand_over(self, conn: Conn, job: Callable[[Conn], bool]) -> None:
        """Give the connection to a thread; it comes back through ``returned``."""
        self._leave_selector(conn, State.IN_THREAD)
        with self.count_lock:
            self.waiting_jobs += 1
        self.pool.submit(self._run_job, conn, job)

    def _run_job(self, conn: Conn, job: Callable[[Conn], bool]) -> None:
        with self.count_lock:
            self.waiting_jobs -= 1
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
                self._close(conn)
                continue
            try:
                conn.sock.setblocking(False)
            except OSError:
                self._close(conn)
                continue
            self._resume(conn)

    # -- logging and stopping

    def handle_exit(self, sig: int, frame: Any) -> None:
        self.alive = False  # the loop sees it at once: the signal wakes it through PIPE

    def _stop(self) -> None:
        """Finish what threads are serving (gunicorn kills us after graceful_timeout)."""
        self._set_accepting(False)
        for conn in [c for c in self.conns.values() if c.in_selector]:
            self._close(conn)  # idle, or a head not yet complete
        self.pool.shutdown(wait=True)
        self._woken()
        self._flush_all()
        for conn in list(self.conns.values()):
            self._close(conn)
        self.close_kept()
        self.selector.close()
