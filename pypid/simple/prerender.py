"""Every project's page rendered in the master before workers fork, into its page file.

A worker that renders a page reads every ``FileEntry`` of the project, and a read
is a write to the entry's reference count: the memory page holding it, shared with
the master since the fork, becomes the worker's own copy. Rendering all the pages
once took a worker's memory from 46 to 95 MB (54,307 files). Rendered ahead, a
page is one ``pread`` of the master's page file (``PagePack``), which workers
inherit and read; a project that changes later is rendered by the worker again.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterator

from pypid.index import Index
from pypid.simple import pep691
from pypid.simple.negotiate import JSON, TEXT_HTML
from pypid.simple.pagecache import INDEX, PageCache
from pypid.simple.render import render

log = logging.getLogger("pypid.pages")

# What pip and uv ask for (JSON) and browsers and older clients (HTML); the third
# type, PEP 691's HTML, is rendered when first asked for.
AHEAD = (JSON, TEXT_HTML)


def prerender(index: Index, pages: PageCache) -> int:
    """Render every project page (and the project list, plain and gzipped) into
    ``pages``; returns how many projects. Nothing without a page file."""
    if pages.pack is None:
        return 0
    started = time.monotonic()
    projects = index.projects()
    pages.store(_rendered(index, projects))
    listing = pep691.index_page(index)
    for media in AHEAD:
        page = pages.get(INDEX, media, index.projects_serial, lambda m=media: render(m, listing))
        page.gzipped()  # made once here, not once per worker
    pages.pack.seal()
    log.info("rendered the pages of %d projects in %.1f s", len(projects),
             time.monotonic() - started)
    return len(projects)


def _rendered(index: Index, projects: list[str]) -> Iterator[tuple[str, str, int, bytes]]:
    for project in projects:
        serial = index.project_serial(project)
        data = pep691.project_page(index, project)
        if serial is not None and data is not None:
            for media in AHEAD:
                yield media, project, serial, render(media, data)
