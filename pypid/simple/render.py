"""The simple API's two renderers, from one PEP 691-shaped dict: JSON and PEP 503 HTML.

Plain functions (no Flask, no Jinja) so that the fast path can render a page it
has not cached yet in a few microseconds; every value is escaped here.
"""

from __future__ import annotations

import json
from html import escape
from typing import Any

from pypid.simple.negotiate import JSON


def render(media: str, page: dict[str, Any]) -> bytes:
    """The page as ``media`` (JSON, or HTML for the two HTML types)."""
    if media == JSON:
        return json.dumps(page, separators=(",", ":")).encode()
    if "projects" in page:
        return index_html(page).encode()
    return project_html(page).encode()


def _head(api_version: str, title: str, status: dict[str, str] | None = None) -> str:
    meta = ""
    if status is not None:  # PEP 792
        meta = f"    <meta name=\"pypi:project-status\" content=\"{escape(status['status'])}\">\n"
        if status.get("reason"):
            meta += ("    <meta name=\"pypi:project-status-reason\" "
                     f"content=\"{escape(status['reason'])}\">\n")
    return ("<!DOCTYPE html>\n<html>\n  <head>\n    <meta charset=\"utf-8\">\n"
            f"    <meta name=\"pypi:repository-version\" content=\"{escape(api_version)}\">\n"
            f"{meta}    <title>{escape(title)}</title>\n  </head>\n  <body>\n")


_TAIL = "  </body>\n</html>\n"


def index_html(page: dict[str, Any]) -> str:
    """PEP 503's project list: one anchor per project.

    >>> print(index_html({"meta": {"api-version": "1.1"}, "projects": [{"name": "a-b"}]}))
    <!DOCTYPE html>
    <html>
      <head>
        <meta charset="utf-8">
        <meta name="pypi:repository-version" content="1.1">
        <title>Simple index</title>
      </head>
      <body>
    <a href="a-b/">a-b</a>
      </body>
    </html>
    <BLANKLINE>

    A line a project, bare, as pypi.org's index has no ``<br>`` either: at tens of
    thousands of projects the page is megabytes, and 8 bytes a line were 15% of it for
    every client that does not take it gzipped.
    """
    parts = [_head(page["meta"]["api-version"], "Simple index")]
    for project in page["projects"]:
        name = escape(project["name"])
        parts.append(f'<a href="{name}/">{name}</a>\n')
    parts.append(_TAIL)
    return "".join(parts)


def project_html(page: dict[str, Any]) -> str:
    """PEP 503's project page with PEP 592/629/658/714 attributes and uv's size and time.

    >>> f = {"filename": "a-1.0.tar.gz", "url": "../../packages/a-1.0.tar.gz",
    ...      "hashes": {"sha256": "ab"}, "requires-python": ">=3.8", "core-metadata": False,
    ...      "yanked": "bad <build>", "size": 3, "upload-time": "2026-01-01T00:00:00.000000Z"}
    >>> print(project_html({"meta": {"api-version": "1.1"}, "name": "a", "files": [f]})
    ...       .splitlines()[-3])
        <a href="../../packages/a-1.0.tar.gz#sha256=ab" data-requires-python="&gt;=3.8" \
data-yanked="bad &lt;build&gt;" data-upload-time="2026-01-01T00:00:00.000000Z" data-size="3">\
a-1.0.tar.gz</a><br>
    """
    name = page["name"]
    parts = [_head(page["meta"]["api-version"], f"Links for {name}", page.get("project-status")),
             f"    <h1>Links for {escape(name)}</h1>\n"]
    for file in page["files"]:
        attrs = [f'href="{escape(file["url"])}#sha256={escape(file["hashes"]["sha256"])}"']
        if file["requires-python"]:
            attrs.append(f'data-requires-python="{escape(file["requires-python"])}"')
        metadata = file["core-metadata"]
        if metadata:
            value = f"sha256={escape(metadata['sha256'])}" if isinstance(metadata, dict) else "true"
            attrs.append(f'data-core-metadata="{value}" data-dist-info-metadata="{value}"')
        yanked = file["yanked"]
        if yanked is not False:
            attrs.append(f'data-yanked="{"" if yanked is True else escape(yanked)}"')
        if "upload-time" in file:  # a mirrored file may have none
            attrs.append(f'data-upload-time="{escape(file["upload-time"])}"')
        if "size" in file:
            attrs.append(f'data-size="{int(file["size"])}"')
        parts.append(f"    <a {' '.join(attrs)}>{escape(file['filename'])}</a><br>\n")
    parts.append(_TAIL)
    return "".join(parts)
