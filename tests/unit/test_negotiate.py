"""PEP 691 negotiation, as one table."""

from __future__ import annotations

import pytest

from pypid.simple.negotiate import HTML, JSON, TEXT_HTML, negotiate

PIP = ("application/vnd.pypi.simple.v1+json, application/vnd.pypi.simple.v1+html; q=0.1, "
       "text/html; q=0.01")
UV = ("application/vnd.pypi.simple.v1+json, application/vnd.pypi.simple.v1+html;q=0.2, "
      "text/html;q=0.01")
BROWSER = "text/html,application/xhtml+xml,application/xml;q=0.9,*/*;q=0.8"

CASES = [
    ("no-accept", None, None, TEXT_HTML),
    ("empty-accept", "", None, TEXT_HTML),
    ("star", "*/*", None, TEXT_HTML),
    ("pip", PIP, None, JSON),
    ("uv", UV, None, JSON),
    ("poetry", "application/vnd.pypi.simple.v1+json, */*;q=0.1", None, JSON),
    ("browser", BROWSER, None, TEXT_HTML),
    ("json-only", JSON, None, JSON),
    ("html-only", HTML, None, HTML),
    ("text-html", "text/html", None, TEXT_HTML),
    ("latest-json", "application/vnd.pypi.simple.latest+json", None, JSON),
    ("latest-html", "application/vnd.pypi.simple.latest+html", None, HTML),
    ("tie-prefers-json", f"{HTML}, {JSON}", None, JSON),
    ("tie-html-over-text", f"text/html, {HTML}", None, HTML),
    ("q-wins-over-order", f"{JSON};q=0.2, {HTML};q=0.9", None, HTML),
    ("application-wildcard", "application/*", None, JSON),
    ("text-wildcard", "text/*", None, TEXT_HTML),
    ("q-zero-excludes", f"{JSON};q=0, */*", None, TEXT_HTML),
    ("everything-q-zero", f"{JSON};q=0, {HTML};q=0, text/html;q=0", None, None),
    ("plain-json-is-not-offered", "application/json", None, None),
    ("garbage", "garbage", None, None),
    ("garbage-q", f"{JSON};q=high", None, None),
    ("q-out-of-range", f"{JSON};q=2", None, None),
    ("mixed-garbage", f"nonsense, {JSON}", None, JSON),
    ("case-insensitive", "Application/Vnd.Pypi.Simple.V1+JSON", None, JSON),
    ("format-overrides", PIP, "text/html", TEXT_HTML),
    ("format-json", None, JSON, JSON),
    ("format-plus-as-space", None, "application/vnd.pypi.simple.v1 json", JSON),
    ("format-latest", None, "application/vnd.pypi.simple.latest+json", JSON),
    ("format-unknown", PIP, "application/json", None),
    ("format-no-wildcards", None, "*/*", None),
]


@pytest.mark.parametrize(("case", "accept", "fmt", "expected"), CASES, ids=[c[0] for c in CASES])
def test_negotiate(case: str, accept: str | None, fmt: str | None, expected: str | None) -> None:
    assert negotiate(accept, fmt) == expected
