"""Every project's page rendered ahead, once for all workers, into a page file.

A worker that renders a page reads every entry of the project and builds two bodies;
rendered ahead, a page is one ``pread`` of a page file (``PagePack``) every worker
reads; a project that changes later is rendered by the worker again.

The server renders them in a process forked as the workers start
(``pypid.simple.ahead``: the start does not wait for them); ``prerender`` renders
them before the workers fork, into the master's own pack (tests, and the fallback
when that process cannot be forked).

With many projects and more than one core, forked helpers render a share each into
a file of their own while the renderer renders its share; it then copies their files
into its page file (in the kernel) and notes where each page is.
"""

from __future__ import annotations

import logging
import multiprocessing
import os
import signal
import time
from array import array
from collections.abc import Iterator
from concurrent.futures import Future, ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from pathlib import Path

from pypid.cachedb import unlinked_file
from pypid.index import Index
from pypid.simple import pep691
from pypid.simple.negotiate import JSON, TEXT_HTML
from pypid.simple.pagecache import INDEX, PageCache, etag_of
from pypid.simple.pagepack import BATCH_BYTES, PagePack, write_all
from pypid.simple.render import render

log = logging.getLogger("pypid.pages")

# What pip and uv ask for (JSON) and browsers and older clients (HTML); the third
# type, PEP 691's HTML, is rendered when first asked for.
AHEAD = (JSON, TEXT_HTML)
HELP_FROM = 4000  # fewer projects: all rendered here (a fork costs more than it saves)
MAX_HELPERS = 7

Written = tuple[int, bytes]  # what a helper wrote: bytes, each page's length (array "Q")


def prerender(index: Index, pages: PageCache, helpers: int | None = None) -> int:
    """Render every project page and the project list into ``pages`` and seal them (all
    before the workers fork); returns how many projects. Nothing without a page file."""
    if pages.pack is None:
        return 0
    count = render_projects(index, pages, helpers)
    render_listing(index, pages)
    pages.pack.seal()
    return count


def render_listing(index: Index, pages: PageCache) -> None:
    """The project list, plain and gzipped, in ``pages``' memory: made once in the master,
    not once per worker."""
    listing = pep691.index_page(index)
    for media in AHEAD:
        page = pages.get(INDEX, media, index.projects_serial, lambda m=media: render(m, listing))
        page.gzipped()


def render_projects(index: Index, pages: PageCache, helpers: int | None = None) -> int:
    """Render every project page into ``pages``' file (not sealed); returns how many
    projects. ``helpers``: how many forked processes render a share (default: one per
    other usable core)."""
    pack = pages.pack
    if pack is None:
        return 0
    started = time.monotonic()
    projects = index.projects()
    if helpers is None:
        helpers = _helpers(index, len(projects))
    shares = helpers + 1
    with _Helpers(index, projects, shares, pack.directory) as helping:
        pages.store(_rendered(index, projects[0::shares]))
        for share, written in helping.results():
            if written is None or not _adopt(index, pack, helping.fds[share - 1], written,
                                             projects[share::shares]):
                pages.store(_rendered(index, projects[share::shares]))  # here, then
    log.info("rendered the pages of %d projects in %.1f s (%d processes)", len(projects),
             time.monotonic() - started, shares)
    return len(projects)


def _helpers(index: Index, projects: int) -> int:
    if projects < HELP_FROM or index.root.is_remote:  # a bucket's client must not cross a fork
        return 0
    usable = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else 1
    return max(0, min(usable - 1, MAX_HELPERS))


def _adopt(index: Index, pack: PagePack, fd: int, written: Written, projects: list[str]) -> bool:
    """Take a helper's pages into ``pack``: their keys are those ``_rendered`` gives for its
    share (the same index here), their lengths what the helper sent (an array: a list of
    tuples would leave ~10 MB of holes in the heap the workers inherit)."""
    size, packed = written
    lengths = array("Q", packed)
    if len(lengths) != sum(1 for _ in _keys(index, projects)):
        return False
    return pack.adopt(fd, size, ((*key, length) for key, length
                                 in zip(_keys(index, projects), lengths, strict=True)))


def _keys(index: Index, projects: list[str]) -> Iterator[tuple[str, str, int]]:
    """(media, project, serial) of each page ``_rendered`` gives, in its order."""
    for project in projects:
        serial = index.project_serial(project)
        if serial is not None and index.files(project) is not None:
            for media in AHEAD:
                yield media, project, serial


def _rendered(index: Index, projects: list[str]) -> Iterator[tuple[str, str, int, bytes]]:
    for project in projects:
        serial = index.project_serial(project)
        data = pep691.project_page(index, project)
        if serial is not None and data is not None:
            for media in AHEAD:
                yield media, project, serial, render(media, data)


# -- the helpers: forked after the load, so they hold the index the master holds

_state: list[tuple[Index, list[str], int, list[int]]] = []  # set before the fork


class _Helpers:
    """Forked processes rendering shares 1..shares-1, each into an unlinked file."""

    def __init__(self, index: Index, projects: list[str], shares: int, directory: Path) -> None:
        self.shares = shares
        self.fds: list[int] = []
        self.futures: list[Future[Written]] = []
        self.pool: ProcessPoolExecutor | None = None
        if shares < 2:
            return
        try:
            self.fds = [unlinked_file(directory, ".pages-") for _ in range(shares - 1)]
            _state[:] = [(index, projects, shares, self.fds)]
            self.pool = ProcessPoolExecutor(shares - 1, initializer=_start,
                                            mp_context=multiprocessing.get_context("fork"))
            self.futures = [self.pool.submit(_render_share, share) for share in range(1, shares)]
        except (OSError, BrokenProcessPool, RuntimeError) as exc:
            log.info("rendering pages in one process (%s)", exc)
            self.futures = []

    def results(self) -> Iterator[tuple[int, Written | None]]:
        """(share, what its helper wrote or None: render it here) for shares 1..shares-1."""
        for share in range(1, self.shares):
            written = None
            if share <= len(self.futures):
                try:
                    written = self.futures[share - 1].result()
                except (OSError, BrokenProcessPool, RuntimeError) as exc:
                    log.info("a helper could not render its pages (%s); rendering them here",
                             exc)
            yield share, written

    def __enter__(self) -> _Helpers:
        return self

    def __exit__(self, *exc: object) -> None:
        if self.pool is not None:
            self.pool.shutdown(wait=True, cancel_futures=True)
        for fd in self.fds:
            os.close(fd)
        _state.clear()


def _start() -> None:
    # In the master the master stops them (see examine); forked from a process that dies
    # at Ctrl-C (``pypid.simple.ahead``), they die with it.
    if signal.getsignal(signal.SIGINT) is not signal.SIG_DFL:
        signal.signal(signal.SIGINT, signal.SIG_IGN)


def _render_share(share: int) -> Written:
    """In a helper: render one share of the projects into its file, as ``PageCache.store``
    would have stored them (etag, then body)."""
    index, projects, shares, fds = _state[0]
    fd, size, lengths = fds[share - 1], 0, array("Q")
    batch: list[bytes] = []
    pending = 0
    for _media, _project, _serial, body in _rendered(index, projects[share::shares]):
        record = etag_of(body).encode("ascii") + body
        batch.append(record)
        lengths.append(len(record))
        pending += len(record)
        if pending >= BATCH_BYTES:
            size += write_all(fd, b"".join(batch), size)
            batch, pending = [], 0
    size += write_all(fd, b"".join(batch), size)
    return size, lengths.tobytes()


