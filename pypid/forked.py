"""Work done in a short-lived forked child, so that its allocations do not land in this
process's memory.

A worker shares most of its heap with the master it was forked from, page by page, until
it writes to a page. Work that makes many short-lived objects (rendering the project
list, writing the sealed file table again) would put them into free space of pages the
worker still shares, and each first write copies a page. Done in a child forked for it,
those writes are the child's, gone when it exits; the worker only receives the result
(bytes, through a pipe).

Anything that goes wrong (no fork, a child that fails or takes longer than its timeout)
does the work here, as before. A fork and a wait are a thread's work, never an event
loop's.
"""

from __future__ import annotations

import contextlib
import logging
import os
import select
import signal
import time
from collections.abc import Callable
from typing import NoReturn

from pypid.growing import write_all

log = logging.getLogger("pypid.forked")

_READ = 1 << 20
_SIGNALS = (signal.SIGTERM, signal.SIGINT, signal.SIGQUIT, signal.SIGHUP, signal.SIGUSR1,
            signal.SIGUSR2, signal.SIGWINCH, signal.SIGCHLD, signal.SIGABRT)


def made_apart(make: Callable[[], bytes], what: str, timeout: float) -> bytes:
    """``make()``'s bytes, made in a forked child when one can be had, else here
    (``what`` names the work in the log)."""
    try:
        read_end, write_end = os.pipe()
    except OSError:
        return make()
    try:
        pid = os.fork()
    except OSError as exc:
        os.close(read_end)
        os.close(write_end)
        log.debug("cannot fork to make %s (%s): making it here", what, exc)
        return make()
    if pid == 0:
        _child(make, read_end, write_end)
    os.close(write_end)
    data = None
    try:
        data = _read_all(read_end, timeout)
    finally:  # whatever happened (even an exception here), the child is ended and reaped
        os.close(read_end)
        if data is None:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        code = os.waitstatus_to_exitcode(os.waitpid(pid, 0)[1])
    if data is None or code != 0:
        log.warning("making %s in a child process failed (%s): making it here", what,
                    "timed out" if data is None else f"exit code {code}")
        return make()
    return data


def _child(make: Callable[[], bytes], read_end: int, write_end: int) -> NoReturn:
    """In the child: make, write, leave at once (no cleanup of the parent's state)."""
    code = 1
    try:
        os.close(read_end)
        for number in _SIGNALS:  # the parent's handlers are not this process's
            signal.signal(number, signal.SIG_DFL)
        write_all(write_end, make())
        code = 0
    except BaseException:  # noqa: BLE001, S110 - the parent makes it instead
        pass
    finally:
        os._exit(code)


def _read_all(fd: int, timeout: float) -> bytes | None:
    """Everything until the child closes its end; None if that takes past ``timeout``."""
    poller = select.poll()
    poller.register(fd, select.POLLIN | select.POLLHUP)
    deadline = time.monotonic() + timeout
    chunks: list[bytes] = []
    while True:
        left = deadline - time.monotonic()
        if left <= 0 or not poller.poll(left * 1000):
            return None
        chunk = os.read(fd, _READ)
        if not chunk:
            return b"".join(chunks)
        chunks.append(chunk)
