"""The project pages rendered by a process forked as the workers start, not before them.

Rendered in the master before the fork, every page would be in a file the workers
inherit, but the start would wait for them (about a second at 29,000 projects on two
cores). Instead the master opens two empty files and tells its page file to expect
them (``PagePack.expect_sealed``), then forks one process that renders every project
page into the first (with helpers, one per other core) and writes their table into the
second, at a lower priority than the workers; each worker adopts them at its first
page not found once the table is whole. Until then a worker renders what it is asked
for, as it does for a project changed since.

The renderer is forked from a child that exits at once, so it is not the master's child:
gunicorn's arbiter reaps every child it finds as a worker (20.1 stops the server when one
exits with 3 or 4), and operators and tools count the master's children as its workers.
Ctrl-C and SIGTERM end it at once; systemd's stop (KillMode=mixed) kills it with the rest
of the unit; a master gone otherwise leaves it to finish its pages and exit.
"""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import weakref

from pypid.cachedb import unlinked_file
from pypid.index import Index
from pypid.simple.pagecache import PageCache
from pypid.simple.pagepack import PagePack
from pypid.simple.prerender import prerender, render_projects

log = logging.getLogger("pypid.pages")

NICENESS = 5  # the workers come first while it renders
# What gunicorn's arbiter (or the test) may have set in the master, back to the default.
_DEFAULT_SIGNALS = ("SIGINT", "SIGTERM", "SIGHUP", "SIGQUIT", "SIGUSR1", "SIGUSR2", "SIGTTIN",
                    "SIGTTOU", "SIGWINCH", "SIGCHLD")


def start(index: Index, pages: PageCache) -> int | None:
    """Start the process that renders every project page for the workers forked after this;
    returns the pid of the go-between that forked it (gone already). None: no page file,
    or no process (then rendered here, before the workers, as without it)."""
    pack = pages.pack
    if pack is None:
        return None
    fds: list[int] = []
    try:
        for _ in range(2):
            fds.append(unlinked_file(pack.directory, ".pages-"))
    except OSError as exc:
        _close(*fds)
        log.warning("page file in %s: %s; pages are rendered as asked for", pack.directory,
                    exc.strerror or exc)
        return None
    pages_fd, table_fd = fds
    try:
        pid = os.fork()
    except OSError as exc:
        _close(*fds)
        log.info("rendering the pages before the workers start (%s)", exc.strerror or exc)
        prerender(index, pages)
        return None
    if pid == 0:  # the go-between: fork the renderer, then go
        try:
            if os.fork() == 0:
                _render_and_exit(index, pages, pack, pages_fd, table_fd)
        except BaseException:  # noqa: BLE001 - no renderer: tell the workers
            with contextlib.suppress(BaseException):
                pack.export_nothing(table_fd)
        os._exit(0)
    with contextlib.suppress(ChildProcessError):  # a running arbiter may reap it first
        os.waitpid(pid, 0)
    pack.expect_sealed(pages_fd, table_fd)  # here, and in the workers forked from here
    weakref.finalize(pack, _close, pages_fd, table_fd)  # a reload's new app has its own
    return pid


def _close(*fds: int) -> None:
    for fd in fds:
        with contextlib.suppress(OSError):
            os.close(fd)


def _render_and_exit(index: Index, pages: PageCache, pack: PagePack, pages_fd: int,
                     table_fd: int) -> None:
    """In the forked process: render, write the table, exit (never return into the master's
    code, whatever happens)."""
    try:
        for name in _DEFAULT_SIGNALS:
            if hasattr(signal, name):
                signal.signal(getattr(signal, name), signal.SIG_DFL)
        with contextlib.suppress(OSError):
            os.nice(NICENESS)
        pack.write_to(pages_fd)
        render_projects(index, pages)
        pack.export_sealed(table_fd)
    except BaseException as exc:  # noqa: BLE001 - log it, then exit below
        log.warning("could not render the pages ahead (%s); workers render them as asked for",
                    exc)
        with contextlib.suppress(BaseException):  # else the workers' patience ends it
            pack.export_nothing(table_fd)
    finally:
        os._exit(0)
