"""A big page rendered in a short-lived child process, so that its allocations do not land
in this worker's memory.

A worker shares most of its heap with the master it was forked from, page by page, until
it writes to a page. Rendering the project list makes a small object or two per project
(tens of thousands), and the allocator puts them into the free slots of pages the worker
still shares: the first project list a worker rendered after a new project was uploaded
un-shared ~25 MB of it at 54,307 files. Rendered in a child forked for it, those writes
are the child's, gone when it exits; the worker only receives the bytes (one large buffer,
which the allocator takes from fresh memory).

Anything that goes wrong (no fork, a child that fails or takes longer than ``TIMEOUT``)
renders the page here, as before. A fork and a wait are a thread's work, never the event
loop's; one child at a time, and the requests that waited for it find its page.
"""

from __future__ import annotations

import contextlib
import logging
import os
import select
import signal
import threading
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, NoReturn

from pypid.growing import write_all
from pypid.simple import pep691
from pypid.simple.pagecache import INDEX, Page, PageCache
from pypid.simple.render import render

if TYPE_CHECKING:
    from pypid.index.model import ReadModel

log = logging.getLogger("pypid.pages")

APART_FROM = 2000  # projects: a shorter list is rendered here in a few ms
TIMEOUT = 10.0  # seconds a child may take before it is killed and the page made here
_READ = 1 << 20
_SIGNALS = (signal.SIGTERM, signal.SIGINT, signal.SIGQUIT, signal.SIGHUP, signal.SIGUSR1,
            signal.SIGUSR2, signal.SIGWINCH, signal.SIGCHLD, signal.SIGABRT)
_ONE_CHILD = threading.Lock()  # also keeps one child from holding another's pipe


def project_list(pages: PageCache, index: ReadModel, media: str,
                 may_block: bool) -> Page | None:
    """The project list's page as ``media``, rendered in a child once the list is long and
    the workers share the master's memory (the files are sealed: ``pypid.index.sealed``).
    None: it must be made so, and ``may_block`` is false."""
    serial = index.projects_serial

    def make() -> bytes:
        return render(media, pep691.index_page(index))

    page = pages.peek(INDEX, media, serial)
    if page is not None or index.project_count() < APART_FROM or not index.sealed:
        return page or pages.get(INDEX, media, serial, make)
    if not may_block:
        return None
    with _ONE_CHILD:  # the thread that waited here finds the page the first one made
        return pages.peek(INDEX, media, serial) or pages.get(
            INDEX, media, serial, lambda: rendered_apart(make))


def rendered_apart(make: Callable[[], bytes]) -> bytes:
    """``make()``'s bytes, made in a forked child when one can be had, else here."""
    try:
        read_end, write_end = os.pipe()
    except OSError:
        return make()
    try:
        pid = os.fork()
    except OSError as exc:
        os.close(read_end)
        os.close(write_end)
        log.debug("cannot fork to render a page (%s): rendering it here", exc)
        return make()
    if pid == 0:
        _child(make, read_end, write_end)
    os.close(write_end)
    data = None
    try:
        data = _read_all(read_end, TIMEOUT)
    finally:  # whatever happened (even an exception here), the child is ended and reaped
        os.close(read_end)
        if data is None:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        code = os.waitstatus_to_exitcode(os.waitpid(pid, 0)[1])
    if data is None or code != 0:
        log.warning("rendering a page in a child process failed (%s): rendering it here",
                    "timed out" if data is None else f"exit code {code}")
        return make()
    return data


def _child(make: Callable[[], bytes], read_end: int, write_end: int) -> NoReturn:
    """In the child: render, write, leave at once (no cleanup of the worker's state)."""
    code = 1
    try:
        os.close(read_end)
        for number in _SIGNALS:  # the worker's handlers are not this process's
            signal.signal(number, signal.SIG_DFL)
        write_all(write_end, make())
        code = 0
    except BaseException:  # noqa: BLE001, S110 - the parent renders it instead
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
