"""A project's README as PyPI shows it: rendered by ``readme_renderer`` by its
Description-Content-Type (reStructuredText, Markdown, plain text) and sanitized by it.

Rendering is bounded: a README longer than ``RENDER_MAX`` characters is shown as
escaped plain text (docutils takes seconds on megabytes), and what was rendered is
kept for the next page that shows it.

``readme_renderer`` (with docutils, pygments, bleach: 7 MB) is imported at the first
README shown, not at start: in the master it would sit in every worker's memory, and
most servers never show a README.
"""

from __future__ import annotations

import functools
import importlib
import re
from email.message import Message
from html import escape

RENDER_MAX = 200_000  # characters rendered as markup; longer READMEs are shown as text
# Markdown's heading anchors are empty links: no name for a screen reader (axe: link-name);
# its code blocks name their language as ``<pre lang="python">``, not a human language.
_EMPTY_ANCHOR = re.compile(r'<a href="#[^"<>]*"[^<>]*></a>')
_CODE_LANG = re.compile(r'<pre lang="')
_MARKUP = {"": "rst", "text/x-rst": "rst", "text/markdown": "markdown", "text/plain": "txt"}


def render_readme(description: str, content_type: str) -> str:
    """Sanitized HTML for ``description``; unknown types, failures and long texts as
    escaped text (as warehouse falls back to ``readme_renderer.txt``).

    >>> render_readme("Hi <b onclick='x()'>there</b>", "text/markdown")
    '<p>Hi <b>there</b></p>\\n'
    """
    return _render(description, content_type)


@functools.lru_cache(maxsize=32)
def _render(description: str, content_type: str) -> str:
    if not description.strip():
        return ""
    media, params = _parse_content_type(content_type)
    kind = _MARKUP.get(media, "txt")
    renderer = importlib.import_module(f"readme_renderer.{kind}")
    rendered = None
    if len(description) <= RENDER_MAX:
        if kind == "markdown":
            rendered = renderer.render(description, variant=params.get("variant", "GFM"))
        else:
            rendered = renderer.render(description)
    if rendered is None:
        return f'<pre class="readme-text">{escape(description)}</pre>'
    return _CODE_LANG.sub('<pre data-lang="', _EMPTY_ANCHOR.sub("", rendered))


def _parse_content_type(value: str) -> tuple[str, dict[str, str]]:
    """``text/markdown; variant=CommonMark`` -> ("text/markdown", {"variant": "CommonMark"})."""
    if not value:
        return "", {}
    message = Message()
    message["Content-Type"] = value
    params = {k.lower(): str(v) for k, v in message.get_params()[1:]}
    return message.get_content_type(), params
