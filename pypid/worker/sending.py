"""How pypid's worker loop sends: answers queued during a turn leave together at its
end (or once ``FLUSH_EVERY`` connections have some), a file's body follows its head
with non-blocking ``sendfile``, and a connection whose socket is full waits in the
selector until it is writable, so a slow reader holds neither the loop nor a thread.
A mixin of ``PypidWorker``.
"""

from __future__ import annotations

import errno
import os
import selectors
import socket
import time
from collections.abc import Callable
from datetime import datetime
from functools import partial
from typing import Any

from pypid.http1 import PlainHead
from pypid.simple.reply import Reply
from pypid.storage import FileIdentity
from pypid.worker.connection import Conn, FileBody, State, unsent

JOIN_BELOW = 16 * 1024  # answers are joined into one buffer below this; above, sendmsg
OUT_OF_DESCRIPTORS = (errno.EMFILE, errno.ENFILE, errno.ENOBUFS, errno.ENOMEM)
ACCEPT_PAUSE = 0.5  # seconds without accepting after running out of descriptors
_MORE = getattr(socket, "MSG_MORE", 0)  # Linux: hold the head for the body's first bytes
_NO_SENDFILE = (errno.EINVAL, errno.ENOSYS, errno.EOPNOTSUPP)  # this file system cannot
READ_SIZE = 256 * 1024  # a piece of a file sent without sendfile
# Files kept open to send again (a wheel many clients ask for: a download then costs a dup
# instead of an open by path, ~4 us less of ~37 here). Only small ones (a big file's open is
# nothing beside its send), only once asked for twice within KEEP_OPEN_SECONDS (a file sent
# once is not held: removed by hand to free the disk, its space comes back at once), and
# each closed KEEP_OPEN_SECONDS after it was opened (a hot file's space, soon after).
KEEP_OPEN = 32
KEEP_OPEN_BELOW = 4 * 1024 * 1024
KEEP_OPEN_SECONDS = 2.0
SENT_ONCE = 256  # files sent once recently, remembered by path (and when)


class Sending:
    """The sending side of ``PypidWorker`` (see the module docstring)."""

    cfg: Any
    log: Any
    alive: bool
    selector: selectors.BaseSelector
    outbox: list[Conn]
    _close: Callable[[Conn], None]
    _resume: Callable[[Conn], None]
    _hand_over: Callable[[Conn, Callable[[Conn], bool]], None]
    _send_rest: Callable[..., bool]
    _log_access: Callable[[Conn, PlainHead, Reply, int, datetime], None]
    # path -> (descriptor, the identity it was checked against, when opened); loop thread only
    kept_open: dict[str, tuple[int, FileIdentity, float]]
    sent_once: dict[str, float]  # path -> when sent, for files not kept open (yet)

    def _queue(self, conn: Conn, *parts: bytes) -> None:
        if not conn.out:
            self.outbox.append(conn)
        for part in parts:
            if part:
                conn.out.append(part)
                conn.out_bytes += len(part)

    def _open_body(self, conn: Conn, head: PlainHead, reply: Reply, started: datetime | None
                   ) -> bool | None:
        """Open the file ``reply`` sends and keep it on ``conn`` until its body has left.

        True: opened, and still the file decided on. False: gone or replaced since,
        the app says what now. None: out of descriptors.
        """
        part = reply.file
        if part is None:
            return False
        kept = self.kept_open.get(part.path)
        if kept is not None and kept[1] != part.identity:  # the index moved on: stale
            self._drop_kept(part.path)
            kept = None
        try:
            fd = (os.dup(kept[0]) if kept is not None
                  else os.open(part.path, os.O_RDONLY | os.O_CLOEXEC))
        except OSError as exc:
            if exc.errno in OUT_OF_DESCRIPTORS:
                self.close_kept()
                return None
            return False
        try:
            same = part.matches(fd)
        except OSError:
            same = False
        if not same:
            os.close(fd)
            if kept is not None:  # changed or removed under it: not kept any longer
                self._drop_kept(part.path)
            return False
        if kept is None and part.identity.size < KEEP_OPEN_BELOW:
            self._sent_again(part.path, part.identity, fd)
        conn.body = FileBody(fd, part.offset, part.length,
                             (head, reply, started) if started is not None else None)
        return True

    def _sent_again(self, path: str, identity: FileIdentity, fd: int) -> None:
        """A small file opened to be sent: kept open if it was sent a moment ago too."""
        now = time.monotonic()
        first = self.sent_once.pop(path, None)
        if first is not None and now - first < KEEP_OPEN_SECONDS:
            self._keep_open(path, identity, fd)
            return
        if len(self.sent_once) >= SENT_ONCE:
            del self.sent_once[next(iter(self.sent_once))]  # the oldest
        self.sent_once[path] = now

    def _keep_open(self, path: str, identity: FileIdentity, fd: int) -> None:
        """Keep a descriptor of the file just opened (and checked) for the next download."""
        try:
            keep = os.dup(fd)
        except OSError:
            return  # out of descriptors: the download goes on with the one it has
        if len(self.kept_open) >= KEEP_OPEN:  # (never this path: only a file not kept gets here)
            self._drop_kept(next(iter(self.kept_open)))  # the oldest
        self.kept_open[path] = (keep, identity, time.monotonic())

    def _drop_kept(self, path: str) -> None:
        os.close(self.kept_open.pop(path)[0])

    def close_kept(self, opened_before: float | None = None) -> None:
        """Close the files kept open (those opened before ``opened_before``, if given), and
        forget the files sent once before it."""
        for path, (_, _, opened) in list(self.kept_open.items()):
            if opened_before is None or opened < opened_before:
                self._drop_kept(path)
        for path, sent in list(self.sent_once.items()):
            if opened_before is None or sent < opened_before:
                del self.sent_once[path]

    def _flush_all(self) -> None:
        outbox, self.outbox = self.outbox, []
        for conn in outbox:
            try:
                if self._flush(conn) and conn.state is State.PAUSED:
                    self._resume(conn)
            except Exception:
                self.log.exception("Error in the event loop")
                self._close(conn)

    def _flush(self, conn: Conn, then: Callable[[Conn], bool] | None = None) -> bool:
        """Send ``conn``'s queued answers (and file body); True when all left and the loop
        keeps it.

        What the socket does not take at once waits in the selector for it to
        be writable, except before ``then`` (work for a thread): that thread sends
        it first. Without unsent bytes ``then`` goes to a thread at once.
        """
        sent = self._push(conn)
        if sent is None:
            return False
        closing = conn.state is State.CLOSING
        if not sent:
            if then is not None and conn.body is None:
                rest, conn.out, conn.out_bytes = conn.out, [], 0
                self._hand_over(conn, partial(self._send_rest, rest=rest, close=closing,
                                              then=then))
            else:
                self._park(conn, closing)
            return False
        if closing:
            self._close(conn)
            return False
        if then is not None:
            self._hand_over(conn, then)
            return False
        return True

    def _push(self, conn: Conn) -> bool | None:
        """Send what the socket takes now: True all sent, False not yet, None closed."""
        sent = self._push_out(conn) if conn.out else True
        if sent and conn.body is not None:
            sent = self._push_body(conn, conn.body)
        if sent is None:
            self._close(conn)
        return sent

    def _push_out(self, conn: Conn) -> bool | None:
        out, size = conn.out, conn.out_bytes
        if len(out) > 1 and size <= JOIN_BELOW:  # one copy beats an iovec when small
            out = [b"".join(out)]
        flags = _MORE if conn.body is not None and conn.body.left else 0
        try:
            sent = (conn.sock.send(out[0], flags) if len(out) == 1
                    else conn.sock.sendmsg(out, (), flags))
        except (BlockingIOError, InterruptedError):
            sent = 0
        except OSError:
            return None
        if sent < size:
            conn.out, conn.out_bytes = unsent(out, sent), size - sent
            return False
        conn.out, conn.out_bytes = [], 0
        return True

    def _push_body(self, conn: Conn, body: FileBody) -> bool | None:
        if body.left:
            try:
                sent = _send_part(conn, body)
            except (BlockingIOError, InterruptedError):
                return False
            except OSError:
                return None
            if sent == 0:  # the file is shorter than its head said: the framing is lost
                return None
            body.offset += sent
            body.left -= sent
            if body.left:
                return False  # the socket is full (a second call would say so)
        conn.body = None
        os.close(body.fd)
        if body.log is not None:
            head, reply, started = body.log
            self._log_access(conn, head, reply, body.length, started)
        return True

    def _park(self, conn: Conn, closing: bool) -> None:
        """Wait in the selector until the socket takes more (the client's pace, bounded
        by gunicorn's ``timeout`` between two of its reads)."""
        if conn.in_selector:
            self.selector.modify(conn.sock, selectors.EVENT_WRITE, conn)
        else:
            self.selector.register(conn.sock, selectors.EVENT_WRITE, conn)
        conn.state = State.SENDING_LAST if closing else State.SENDING
        conn.deadline = time.monotonic() + self.cfg.timeout

    def _writable(self, conn: Conn) -> None:
        sent = self._push(conn)
        if sent is None:
            return
        if not sent:  # the client read some: its time starts again (not past a stop's end)
            deadline = time.monotonic() + self.cfg.timeout
            conn.deadline = deadline if self.alive else min(conn.deadline, deadline)
            return
        self.selector.unregister(conn.sock)
        if conn.state is State.SENDING_LAST:
            conn.state = State.CLOSING
            self._close(conn)
            return
        conn.state = State.PAUSED
        self._resume(conn)


def _send_part(conn: Conn, body: FileBody) -> int:
    """Send what the socket takes of the body now: sendfile, or read and send where the
    file's file system cannot do sendfile (it says so at the first call)."""
    if body.sendfile:
        try:
            return os.sendfile(conn.fd, body.fd, body.offset, body.left)
        except OSError as exc:
            if exc.errno not in _NO_SENDFILE or body.offset != body.start:
                raise
            body.sendfile = False
    return conn.sock.send(os.pread(body.fd, min(body.left, READ_SIZE), body.offset))
