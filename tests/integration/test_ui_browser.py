"""The web UI in a real headless browser: Debian's chromium driven by Playwright.

Filter the list, open a project, follow a version, copy the install line; no
console errors and no script from a README; screenshots at phone and desktop
widths (in build/test-artifacts/ui/, named in pytest's summary); axe-core's rules
on every page (``PYPID_TEST_AXE_JS``, fetched by scripts/fetch-axe; the main rules
by hand when it is missing). ``-m browser`` selects these tests.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.integration.harness import REPO_ROOT
from tests.integration.helpers import Server
from tests.integration.ui_site import SAVED, SCREENSHOTS

sync_api = pytest.importorskip("playwright.sync_api", reason="playwright is not installed")

pytestmark = [pytest.mark.server, pytest.mark.browser]
CHROMIUM = os.environ.get("PYPID_TEST_CHROMIUM", "/usr/bin/chromium")
AXE_JS = Path(os.environ.get("PYPID_TEST_AXE_JS")
              or REPO_ROOT / ".cache" / "axe-core-4.14.1" / "axe.min.js")
AXE_TAGS = ["wcag2a", "wcag2aa", "wcag21a", "wcag21aa", "best-practice"]
WIDTHS = {"phone": 390, "desktop": 1280}
TIMEOUT_MS = 15_000
BY_HAND = """() => {
  const problems = [];
  if (!document.documentElement.lang) problems.push("html without lang");
  if (!document.title.trim()) problems.push("no title");
  if (!document.querySelector("main")) problems.push("no main landmark");
  if (!document.querySelector("h1")) problems.push("no h1");
  for (const el of document.querySelectorAll("input:not([type=hidden]), select, textarea"))
    if (!(el.labels && el.labels.length) && !el.getAttribute("aria-label"))
      problems.push("no label: " + el.outerHTML);
  for (const el of document.querySelectorAll("a[href], button"))
    if (!el.textContent.trim() && !el.getAttribute("aria-label") && !el.title)
      problems.push("no name: " + el.outerHTML);
  for (const img of document.querySelectorAll("img"))
    if (!img.hasAttribute("alt")) problems.push("no alt: " + img.outerHTML);
  const seen = new Set();
  for (const el of document.querySelectorAll("[id]")) {
    if (seen.has(el.id)) problems.push("duplicate id " + el.id);
    seen.add(el.id);
  }
  return problems;
}"""


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    if not Path(CHROMIUM).exists():
        pytest.skip(f"no {CHROMIUM} (apt-get install chromium; scripts/test does)")
    playwright = sync_api.sync_playwright().start()
    try:
        args = ["--no-sandbox"] if os.geteuid() == 0 else []  # root: no setuid sandbox
        launched = playwright.chromium.launch(executable_path=CHROMIUM, args=args)
        yield launched
        launched.close()
    finally:
        playwright.stop()


class Watched:
    """A page with every console error, page error and dialog it caused."""

    def __init__(self, browser: Any, server: Server, width: int) -> None:
        self.context = browser.new_context(viewport={"width": width, "height": 900})
        self.context.set_default_timeout(TIMEOUT_MS)
        self.context.grant_permissions(["clipboard-read", "clipboard-write"],
                                       origin=server.origin)
        self.page = self.context.new_page()
        self.errors: list[str] = []
        self.page.on("console", lambda m: m.type == "error" and self.errors.append(m.text))
        self.page.on("pageerror", lambda e: self.errors.append(str(e)))
        self.page.on("dialog", lambda d: (self.errors.append("dialog: " + d.message),
                                          d.dismiss()))

    def close(self) -> None:
        self.context.close()


@pytest.fixture
def watched(browser: Any, ui_server: Server) -> Iterator[Watched]:
    tab = Watched(browser, ui_server, WIDTHS["desktop"])
    yield tab
    tab.close()


def test_filter_open_follow_and_copy(watched: Watched, ui_server: Server) -> None:
    page = watched.page
    expect = sync_api.expect
    page.goto(ui_server.url("/projects/"))
    page.get_by_label("Filter by name or summary").fill("billing")
    page.keyboard.press("Enter")
    page.wait_for_url("**/projects/?q=billing")
    expect(page.locator("ul.projects li")).to_have_count(1)
    page.get_by_role("link", name="billing-client", exact=True).click()
    page.wait_for_url("**/project/billing-client/")
    expect(page.locator("main > h1")).to_have_text("billing-client 2.0")
    page.get_by_role("link", name="1.0", exact=True).click()
    page.wait_for_url("**/project/billing-client/1.0/")
    expect(page.locator("main > h1")).to_have_text("Billing_Client 1.0")
    assert page.evaluate("window.pwned") is None  # the README's scripts did not run
    expect(page.locator(".readme")).to_contain_text("Pays the bills.")
    page.get_by_role("button", name="Copy").click()
    expect(page.locator("#copy-status")).to_have_text("Copied.")
    line = f"pip install --index-url {ui_server.origin}/simple/ billing-client==1.0"
    assert page.evaluate("navigator.clipboard.readText()") == line
    assert watched.errors == []


def test_a_huge_hostile_readme_is_cut_and_inert(watched: Watched, ui_server: Server) -> None:
    page = watched.page
    page.goto(ui_server.url("/project/huge-readme/"))
    sync_api.expect(page.locator("main")).to_contain_text("characters long: the first")
    sync_api.expect(page.locator(".readme pre")).to_contain_text("<script>window.pwned = 4")
    assert page.evaluate("window.pwned") is None
    assert watched.errors == []


def test_without_javascript_the_filter_works(browser: Any, ui_server: Server) -> None:
    context = browser.new_context(java_script_enabled=False)
    try:
        page = context.new_page()
        page.goto(ui_server.url("/projects/"))
        page.get_by_label("Filter by name or summary").fill("base")
        page.get_by_role("button", name="Filter").click()
        page.wait_for_url("**/projects/?q=base", timeout=TIMEOUT_MS)
        names = page.locator("ul.projects a.name").all_text_contents()
        assert names == ["base"]
        page.goto(ui_server.url("/project/base/"))
        assert not page.get_by_role("button", name="Copy").is_visible()  # needs a script
        assert "pip install --index-url" in page.locator("#install-line").inner_text()
    finally:
        context.close()


@pytest.mark.parametrize("width", list(WIDTHS), ids=list(WIDTHS))
def test_screenshots_fit_the_width(browser: Any, ui_server: Server, width: str) -> None:
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    tab = Watched(browser, ui_server, WIDTHS[width])
    try:
        for name, path in (("projects", "/projects/"), ("project", "/project/billing-client/")):
            tab.page.goto(ui_server.url(path))
            shot = SCREENSHOTS / f"{name}-{width}.png"
            tab.page.screenshot(path=str(shot), full_page=True)
            assert shot.stat().st_size > 0
            SAVED.append(shot)
            overflow = tab.page.evaluate(
                "document.documentElement.scrollWidth - document.documentElement.clientWidth")
            assert overflow <= 0, f"{path} is {overflow}px wider than a {width} screen"
        assert tab.errors == []
    finally:
        tab.close()
    print(f"screenshots in {SCREENSHOTS}")


@pytest.mark.parametrize("path", [
    "/projects/", "/projects/?q=nothing-like-it", "/project/billing-client/",
    "/project/billing-client/1.0/", "/project/base/", "/project/app/", "/",
])
@pytest.mark.parametrize("width", list(WIDTHS), ids=list(WIDTHS))
def test_accessibility(browser: Any, ui_server: Server, path: str, width: str) -> None:
    tab = Watched(browser, ui_server, WIDTHS[width])
    try:
        tab.page.goto(ui_server.url(path))
        problems = tab.page.evaluate(BY_HAND)  # always: the fallback stays true too
        assert problems == [], "\n".join(problems)
        if AXE_JS.is_file():
            tab.page.evaluate(AXE_JS.read_text(encoding="utf-8"))
            result = tab.page.evaluate(
                "tags => axe.run(document, {runOnly: {type: 'tag', values: tags}})", AXE_TAGS)
            problems = [f"{v['id']} ({v['impact']}): {v['help']}: "
                        + json.dumps([n["target"] for n in v["nodes"]][:5])
                        for v in result["violations"]]
            assert problems == [], "\n".join(problems)
        assert tab.errors == []
    finally:
        tab.close()
