"""The web UI's pages through the Flask test client: what they show, escaping, the README
sanitized and bounded, canonical URLs, logins, and the cache that serves them."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from flask import Flask

from pypid.manage import Actor
from pypid.simple.core import SimpleRequest
from pypid.simple.ui_facts import DESCRIPTION_KEPT, parse_about
from pypid.web import services
from pypid.web.readme import RENDER_MAX, render_readme
from tests.builders import make_sdist, make_wheel
from tests.unit.conftest import AppFactory

BASE = "http://index.example:8080"
ADMIN = Actor("cli:root", None, admin=True)
HOSTILE_MD = ("# Hi\n\n<script>alert('md')</script>\n[click](javascript:alert(1))\n"
              '<img src="x" onerror="alert(2)">\n<a href="javascript:alert(3)">a</a>\n')
HOSTILE_RST = ("Hi\n==\n\n.. raw:: html\n\n   <script>alert('rst')</script>\n\n"
               "`click <javascript:alert(1)>`_\n")


@pytest.fixture
def app(make_app: AppFactory, root: Path) -> Flask:
    make_wheel(root, "Billing_Client", "1.0", requires_dist=["base>=1"],
               description=("text/markdown", HOSTILE_MD))
    make_wheel(root, "billing-client", "2.0", requires_dist=["base>=1"],
               description=("text/markdown", "# Two\n\nThe *second* one."))
    make_wheel(root, "base", "1.1", description=("text/x-rst", HOSTILE_RST))
    make_sdist(root, "base", "1.2rc1")
    make_wheel(root, "app", "0.5", requires_dist=["Billing.Client; extra == 'pay'"])
    return make_app()


def get(app: Flask, url: str, **options: object) -> tuple[int, str, dict[str, str]]:
    response = app.test_client().get(url, base_url=options.pop("base_url", BASE), **options)
    return response.status_code, response.get_data(as_text=True), dict(response.headers)


def readme_of(page: str) -> str:
    match = re.search(r'<div class="readme">(.*?)</div>\s*</section>', page, re.S)
    assert match, "no README on the page"
    return match.group(1)


def test_list_shows_every_project_with_latest_and_summary(app: Flask) -> None:
    status, page, headers = get(app, "/projects/")
    assert status == 200
    assert headers["Content-Type"] == "text/html; charset=utf-8"
    assert "4 projects on this index" not in page  # three: app, base, billing-client
    assert "3 projects on this index" in page
    assert f'href="{BASE}/project/billing-client/">billing-client</a> <span class="version">2.0' \
        in page
    assert "Test distribution billing-client 2.0" in page
    assert '<span class="version">1.1</span>' in page  # base: 1.2rc1 is a pre-release


@pytest.mark.parametrize(("query", "shown", "hidden"), [
    ("billing", ["billing-client"], ["/project/base/", "/project/app/"]),
    ("Billing_Client", ["billing-client"], ["/project/base/"]),
    ("distribution base", ["/project/base/"], ["/project/app/"]),
    ("nothing-like-it", ["No project matches"], ["/project/base/"]),
], ids=["name", "spelling", "summary-words", "none"])
def test_filter_without_javascript(app: Flask, query: str, shown: list[str],
                                   hidden: list[str]) -> None:
    _, page, _ = get(app, "/projects/", query_string={"q": query})
    for text in shown:
        assert text in page
    for text in hidden:
        assert text not in page
    assert f'value="{query}"' in page


def test_query_is_escaped(app: Flask) -> None:
    _, page, _ = get(app, "/projects/", query_string={"q": '"><script>alert(1)</script>'})
    assert "<script>alert" not in page
    assert "&#34;&gt;&lt;script&gt;" in page


def test_project_page_shows_release_files_and_install_line(app: Flask) -> None:
    status, page, _ = get(app, "/project/billing-client/")
    assert status == 200
    assert "<h1>Billing_Client 2.0</h1>" in page or "<h1>billing-client 2.0</h1>" in page
    assert f"pip install --index-url {BASE}/simple/ billing-client</code>" in page
    entry = services_of(app).index.files("billing-client")[-1]
    assert entry.sha256 in page
    assert f'href="{BASE}/packages/{entry.filename}"' in page
    assert f'href="{BASE}/project/billing-client/1.0/"' in page
    assert "The <em>second</em> one." in page
    assert f'<a href="{BASE}/project/app/">app</a>' in page  # used by (an extra counts)
    assert f'<li><a href="{BASE}/project/base/">base</a></li>' in page  # requires, here
    assert "No owners recorded." in page


def test_version_page_and_its_install_line(app: Flask) -> None:
    status, page, _ = get(app, "/project/billing-client/1.0/")
    assert status == 200
    assert "billing-client==1.0</code>" in page
    assert "This is not the latest version" in page
    _, app_page, _ = get(app, "/project/app/")
    assert f'<li><a href="{BASE}/project/billing-client/">billing-client</a></li>' in app_page


@pytest.mark.parametrize(("url", "location"), [
    ("/projects", "/projects/"),
    ("/project/Billing_Client/", "/project/billing-client/"),
    ("/project/billing-client", "/project/billing-client/"),
    ("/project/billing-client/1.0", "/project/billing-client/1.0/"),
    ("/project/Base/1.2RC1/", "/project/base/1.2rc1/"),
    ("/project/billing-client/1.0.0/", "/project/billing-client/1.0/"),  # the same release
    ("/project/billing-client/1.0.0", "/project/billing-client/1.0.0/"),  # then the above
])
def test_non_canonical_urls_redirect(app: Flask, url: str, location: str) -> None:
    status, _, headers = get(app, url)
    assert (status, headers["Location"]) == (301, location)


@pytest.mark.parametrize("url", ["/project/nope/", "/project/base/9.9/", "/project/base/x!/",
                                 "/project/-bad-/", "/project/base/1.1/extra", "/project/",
                                 "/project/billing-client/3.0.0/"])
def test_unknown_is_404(app: Flask, url: str) -> None:
    assert get(app, url)[0] == 404


@pytest.mark.parametrize(("project", "dangers"), [
    ("billing-client/1.0", ["<script", "javascript:", "onerror", "alert("]),
    ("base/1.1", ["<script", "javascript:", "alert("]),  # raw:: html refused: shown as text
], ids=["markdown", "rst"])
def test_readme_is_sanitized(app: Flask, project: str, dangers: list[str]) -> None:
    _, page, headers = get(app, f"/project/{project}/")
    readme = readme_of(page)
    for tag in re.findall(r"<[^>]*>", readme):  # as text (escaped) it does no harm
        for danger in dangers:
            assert danger not in tag
    assert "Hi" in readme
    assert "script-src 'sha256-" in headers["Content-Security-Policy"]
    assert len(re.findall("<script", page)) == 1  # the copy button's, which the CSP names


def test_readme_kinds_render_as_pypi_does() -> None:
    rst = render_readme("Some *stress* and ``code``.", "")  # no type: reStructuredText
    assert "<em>stress</em>" in rst and "literal\">code</span>" in rst
    link = render_readme("`click <javascript:alert(1)>`_ and <img src=x onerror=y>", "text/x-rst")
    assert "click" in link
    tags = re.findall(r"<[^>]*>", link)
    assert not [tag for tag in tags if "javascript" in tag or "onerror" in tag]
    assert "<strong>b</strong>" in render_readme("**b**", "text/markdown; variant=CommonMark")
    plain = render_readme("<b>x</b>\nline", "text/plain")
    assert "&lt;b&gt;" in plain and "<br>" in plain
    assert "&lt;i&gt;" in render_readme("<i>", "application/x-unknown")


def test_huge_description_is_bounded(make_app: AppFactory, root: Path) -> None:
    """10 MB of markdown: parsed once, cut, shown as escaped text, never rendered whole."""
    huge = ("<script>alert(1)</script> **x** " * 400_000)[: 10 * 1024 * 1024]
    about = parse_about(f"Name: big\nDescription-Content-Type: text/markdown\n\n{huge}".encode())
    assert about.description_length == len(huge)
    assert len(about.description) == DESCRIPTION_KEPT
    html = render_readme(about.description, about.content_type)
    assert html.startswith('<pre class="readme-text">')
    assert "<script" not in html
    # Through a real wheel and page too (8 MB is the metadata bound the index applies).
    make_wheel(root, "big", "1.0", description=("text/markdown", huge[: 7 * 1024 * 1024]))
    status, page, _ = get(make_app(), "/project/big/")
    assert status == 200
    assert len(page) < DESCRIPTION_KEPT * 2
    assert f"the first {DESCRIPTION_KEPT} are shown" in page
    assert "<script>alert(1)" not in readme_of(page)
    assert RENDER_MAX < DESCRIPTION_KEPT


def test_yanks_status_and_owners_show_and_refresh_the_cache(app: Flask, root: Path) -> None:
    svc = services_of(app)
    svc.htpasswd.path = root / "htpasswd"  # a user to make an owner
    svc.htpasswd.path.write_text("alice:$2b$04$abcdefghijklmnopqrstuu5yQz0T7c2ZC3QeW2lQn6K0f6mCqXy6\n")
    _, before, headers = get(app, "/project/billing-client/1.0/")
    assert get(app, "/project/billing-client/1.0/")[2]["ETag"] == headers["ETag"]
    manager = svc.manager
    manager.yank(ADMIN, "billing-client==1.0", "broken build")
    manager.set_status(ADMIN, "billing-client", "deprecated", "use billing2")
    manager.add_owner(ADMIN, "billing-client", "alice")
    svc.index.ledger.catch_up()  # what each worker's follower does within a second
    _, page, _ = get(app, "/project/billing-client/1.0/")
    assert "This release is yanked</strong>: broken build" in page
    assert "yanked: broken build" in page
    assert "This project is deprecated</strong>: use billing2" in page
    assert "<li>alice</li>" in page
    _, listing, _ = get(app, "/projects/")
    assert '<span class="badge warn">deprecated</span>' in listing
    manager.set_status(ADMIN, "billing-client", "quarantined", "malware")
    _, page, _ = get(app, "/project/billing-client/")
    assert "Its files are not served." in page and "/packages/" not in page


def test_cached_page_is_answered_without_blocking(app: Flask) -> None:
    simple = services_of(app).simple
    req = SimpleRequest("GET", "/project/base/", headers={"host": "index.example:8080"})
    assert simple.decide(req, may_block=False) is None  # not rendered yet: a thread's work
    get(app, "/project/base/")  # renders it (the app's origin is the same)
    reply = simple.decide(req, may_block=False)
    assert reply is not None and reply.status == 200
    assert b"pip install --index-url http://index.example:8080/simple/ base" in reply.body
    odd = SimpleRequest("GET", "/project/base/", headers={"host": "a b"})
    assert simple.decide(odd, may_block=False) is None  # an odd Host: the app's proxy layer
    gzipped = simple.decide(SimpleRequest("GET", "/project/base/", headers={
        "host": "index.example:8080", "accept-encoding": "gzip"}), may_block=False)
    assert gzipped is not None and ("Content-Encoding", "gzip") in gzipped.headers
    etag = dict(reply.headers)["ETag"]
    again = simple.decide(SimpleRequest("GET", "/project/base/", headers={
        "host": "index.example:8080", "if-none-match": etag}), may_block=False)
    assert again is not None and again.status == 304


def test_prefix_and_proxy_headers_make_the_install_line(make_app: AppFactory, root: Path) -> None:
    make_wheel(root, "base", "1.0")
    app = make_app(server={"url_prefix": "/pypi", "trusted_proxies": ["127.0.0.1"]})
    _, page, _ = get(app, "/pypi/project/base/")
    assert f"pip install --index-url {BASE}/pypi/simple/ base</code>" in page
    assert get(app, "/pypi/project/Base/")[2]["Location"] == "/pypi/project/base/"
    _, page, _ = get(app, "/pypi/project/base/", headers={
        "X-Forwarded-Proto": "https", "X-Forwarded-Host": "pypi.corp",
        "X-Forwarded-Prefix": "/internal"})
    assert "pip install --index-url https://pypi.corp/internal/pypi/simple/ base</code>" in page
    assert 'href="https://pypi.corp/internal/pypi/projects/"' in page


def test_list_protected_needs_a_login(make_app: AppFactory, root: Path) -> None:
    make_wheel(root, "base", "1.0")
    app = make_app(auth={"protect": ["upload", "list"]})
    for url in ("/projects/", "/project/base/", "/project/Base/", "/project/nope/"):
        status, _, headers = get(app, url)
        assert status == 401, url
        assert headers["WWW-Authenticate"].startswith("Basic")


def test_welcome_page_links_to_the_projects(app: Flask) -> None:
    assert f'<a href="{BASE}/projects/">Browse the projects</a>' in get(app, "/")[1]


def services_of(app: Flask):  # type: ignore[no-untyped-def]
    with app.app_context():
        return services()
