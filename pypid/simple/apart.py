"""The project list rendered in a short-lived child process (``pypid.forked``), so that its
allocations do not land in this worker's memory.

Rendering the project list makes a small object or two per project (tens of thousands),
and the allocator puts them into the free slots of pages the worker still shares with
the master: the first project list a worker rendered after a new project was uploaded
un-shared ~25 MB of it at 54,307 files. The worker only receives the bytes (one large
buffer, which the allocator takes from fresh memory). Anything that goes wrong renders
the page here; one child at a time, and the requests that waited for it find its page.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import TYPE_CHECKING

from pypid.forked import made_apart
from pypid.simple import pep691
from pypid.simple.pagecache import INDEX, Page, PageCache
from pypid.simple.render import render

if TYPE_CHECKING:
    from pypid.index.model import ReadModel

APART_FROM = 2000  # projects: a shorter list is rendered here in a few ms
TIMEOUT = 10.0  # seconds a child may take before it is killed and the page made here
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
    return made_apart(make, "a page", TIMEOUT)
