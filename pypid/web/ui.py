"""The web UI's pages rendered from Jinja templates (``templates/ui_*.html``): the
``Renderer`` that ``pypid.simple.ui_pages`` decides and caches with.

Autoescaped throughout; the README is the one piece of HTML passed through, as
``readme_renderer`` sanitized it. A Content-Security-Policy allows no script but
the copy button's, so even a sanitizer bug could not run one.
"""

from __future__ import annotations

import base64
import hashlib
import time
from pathlib import Path

from jinja2 import Environment, FileSystemLoader, select_autoescape
from markupsafe import Markup

from pypid import __version__
from pypid.simple.ui_facts import ProjectView, Row
from pypid.web.readme import render_readme

TEMPLATES = Path(__file__).parent / "templates"
COPY_SCRIPT = (TEMPLATES / "ui_copy.js").read_text(encoding="utf-8")
_SCRIPT_HASH = base64.b64encode(hashlib.sha256(COPY_SCRIPT.encode()).digest()).decode()
CSP = ("default-src 'none'; style-src 'unsafe-inline'; img-src 'self' https: data:; "
       f"script-src 'sha256-{_SCRIPT_HASH}'; form-action 'self'; base-uri 'none'; "
       "frame-ancestors 'none'")


class TemplateRenderer:
    """Renders the UI's pages (``pypid.simple.ui_pages.Renderer``)."""

    def __init__(self) -> None:
        env = Environment(loader=FileSystemLoader(TEMPLATES), autoescape=select_autoescape(
            ["html"]), trim_blocks=True, lstrip_blocks=True)
        env.filters["size"] = human_size
        env.filters["utc"] = utc_time
        env.filters["iso"] = iso_time
        env.globals.update(version=__version__, copy_script=Markup(COPY_SCRIPT))  # noqa: S704 - ours
        self._listing = env.get_template("ui_projects.html")
        self._project = env.get_template("ui_project.html")

    def listing(self, rows: list[Row], query: str, origin: str) -> bytes:
        return self._listing.render(rows=rows, query=query, base=origin).encode()

    def project(self, view: ProjectView, origin: str) -> bytes:
        about = view.about
        readme = Markup(render_readme(about.description, about.content_type))  # noqa: S704 - sanitized
        requirement = view.name if view.release.version == view.latest else (
            f"{view.name}=={view.release.version}")
        return self._project.render(p=view, readme=readme, base=origin,
                                    requirement=requirement).encode()

    def headers(self) -> list[tuple[str, str]]:
        return [("Content-Security-Policy", CSP), ("X-Content-Type-Options", "nosniff"),
                ("Referrer-Policy", "same-origin")]


def human_size(size: int) -> str:
    """
    >>> human_size(999), human_size(1536), human_size(5 * 1024**3)
    ('999 bytes', '1.5 KiB', '5.0 GiB')
    """
    if size < 1024:
        return f"{size} bytes"
    value = float(size)
    units = ("KiB", "MiB", "GiB", "TiB")
    for unit in units[:-1]:
        value /= 1024
        if value < 1024:
            return f"{value:.1f} {unit}"
    return f"{value / 1024:.1f} {units[-1]}"


def utc_time(seconds: float) -> str:
    """
    >>> utc_time(0)
    '1970-01-01 00:00 UTC'
    """
    return time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime(seconds))


def iso_time(seconds: float) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(seconds))
