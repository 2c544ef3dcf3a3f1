"""PEP 691 content negotiation: pick the page format from ``Accept`` or ``?format=``."""

from __future__ import annotations

import functools

JSON = "application/vnd.pypi.simple.v1+json"
HTML = "application/vnd.pypi.simple.v1+html"
TEXT_HTML = "text/html"
OFFERS = (JSON, HTML, TEXT_HTML)
# "latest" may be asked for; the answer then names the concrete v1 type (PEP 691).
ALIASES = {
    "application/vnd.pypi.simple.latest+json": JSON,
    "application/vnd.pypi.simple.latest+html": HTML,
}
# Ties between named types (or type/*) prefer the most expressive; ties reached
# only through */* prefer what a browser or curl expects.
_EXPLICIT_RANK = {JSON: 3, HTML: 2, TEXT_HTML: 1}
_WILDCARD_RANK = {TEXT_HTML: 3, HTML: 2, JSON: 1}


@functools.lru_cache(maxsize=512)  # clients send few distinct Accept headers
def negotiate(accept: str | None, format_param: str | None = None) -> str | None:
    """The media type to answer with, or None when nothing offered is acceptable (406).

    >>> negotiate(None), negotiate("*/*"), negotiate("application/vnd.pypi.simple.v1+json")
    ('text/html', 'text/html', 'application/vnd.pypi.simple.v1+json')
    >>> negotiate("application/json") is None
    True
    """
    if format_param is not None:
        # An unescaped "+" in a query string arrives as a space.
        cleaned = format_param.strip().lower().replace(" ", "+")
        wanted = ALIASES.get(cleaned, cleaned)
        return wanted if wanted in OFFERS else None
    if accept is None or not accept.strip():
        return TEXT_HTML
    ranges = parse_accept(accept)
    if not ranges:
        return None
    best: tuple[float, int, int] | None = None
    choice = None
    for offer in OFFERS:
        q, specificity = _quality(offer, ranges)
        if q <= 0:
            continue
        rank = _WILDCARD_RANK[offer] if specificity == 0 else _EXPLICIT_RANK[offer]
        key = (q, specificity, rank)
        if best is None or key > best:
            best, choice = key, offer
    return choice


def parse_accept(header: str) -> list[tuple[str, str, float]]:
    """``(type, subtype, q)`` for each well-formed media range; malformed ones are dropped.

    >>> parse_accept("text/html;q=0.5, garbage, */*;q=x, application/*")
    [('text', 'html', 0.5), ('application', '*', 1.0)]
    """
    ranges = []
    for item in header.split(","):
        parts = [p.strip() for p in item.split(";")]
        media = parts[0].lower()
        main, slash, sub = media.partition("/")
        if not slash or not main or not sub or (main == "*" and sub != "*"):
            continue
        if any(c.isspace() or c in '"()<>@:[]?={}' for c in media.replace("/", "")):
            continue
        q = 1.0
        valid = True
        for param in parts[1:]:
            name, _, value = param.partition("=")
            if name.strip().lower() == "q":
                try:
                    q = float(value.strip())
                except ValueError:
                    valid = False
                    break
                if not 0.0 <= q <= 1.0:
                    valid = False
                    break
        if valid:
            mapped = ALIASES.get(f"{main}/{sub}")
            if mapped:
                main, sub = mapped.split("/")
            ranges.append((main, sub, q))
    return ranges


def _quality(offer: str, ranges: list[tuple[str, str, float]]) -> tuple[float, int]:
    """q of the most specific range matching ``offer``, and that specificity (0, 1 or 2)."""
    main, sub = offer.split("/")
    best_specificity, best_q = -1, 0.0
    for r_main, r_sub, q in ranges:
        if r_main == main and r_sub == sub:
            specificity = 2
        elif r_main == main and r_sub == "*":
            specificity = 1
        elif r_main == "*" and r_sub == "*":
            specificity = 0
        else:
            continue
        if specificity > best_specificity or (specificity == best_specificity and q > best_q):
            best_specificity, best_q = specificity, q
    return best_q, best_specificity
