"""The web UI against a real ``pypid serve``: pages, canonical URLs, the cached page the
worker's loop answers, proxy headers, changes from the command line, list logins."""

from __future__ import annotations

import base64
import os
import subprocess
import sys
import time

import pytest

from pypid.auth import Htpasswd
from tests.integration.harness import REPO_ROOT, STARTED, start_server, stop
from tests.integration.helpers import Server, get, raw_request, request
from tests.integration.test_differential import both_ways
from tests.integration.ui_site import LOGIN, build_site

pytestmark = pytest.mark.server
WAIT = 10.0  # seconds a change may take to show (DESIGN: two)


def test_list_and_project_pages(ui_server: Server) -> None:
    listing = get(ui_server.url("/projects/"))
    assert listing.status == 200 and listing.media_type == "text/html"
    for name in ("app", "base", "billing-client", "mixed-case-name"):
        assert f'href="{ui_server.origin}/project/{name}/"' in listing.text
    page = get(ui_server.url("/project/billing-client/"))
    assert page.status == 200
    assert f"pip install --index-url {ui_server.origin}/simple/ billing-client</code>" in page.text
    assert f'<a href="{ui_server.origin}/project/app/">app</a>' in page.text  # used by
    assert "The <em>second</em> one." in page.text
    filtered = get(ui_server.url("/projects/?q=billing"))
    assert "/project/billing-client/" in filtered.text and "/project/base/" not in filtered.text
    assert 'href="/projects/"' not in get(ui_server.url("/")).text
    assert f'href="{ui_server.origin}/projects/"' in get(ui_server.url("/")).text


@pytest.mark.parametrize(("path", "location"), [
    ("/projects", "/projects/"),
    ("/project/Mixed_Case.Name/", "/project/mixed-case-name/"),
    ("/project/billing-client/1.0", "/project/billing-client/1.0/"),
])
def test_canonical_urls(ui_server: Server, path: str, location: str) -> None:
    for _ in range(2):  # the second time from the loop, if it answers these
        answer = get(ui_server.url(path))
        assert (answer.status, answer.header("Location")) == (301, location)


def test_loop_and_flask_answer_alike(ui_server: Server) -> None:
    """Byte for byte (see test_differential): the loop's cached page is the app's page."""
    for _ in range(2):  # the first round renders (in a thread), the second is the loop's
        for target in ("/projects/", "/projects/?q=bill", "/project/base/",
                       "/project/billing-client/1.0/", "/project/Base/", "/projects",
                       "/project/nope/"):
            for headers in ("", "Accept-Encoding: gzip\r\n", "If-None-Match: *\r\n"):
                both_ways(ui_server, "GET", target, headers)
            both_ways(ui_server, "HEAD", target)


def test_unknown_project_is_404(ui_server: Server) -> None:
    assert get(ui_server.url("/project/no-such/")).status == 404
    assert get(ui_server.url("/project/base/9.9/")).status == 404


def test_cached_page_same_bytes_gzip_and_304(ui_server: Server) -> None:
    url = ui_server.url("/project/base/")
    first, second = get(url), get(url)
    assert first.body == second.body and first.header("ETag") == second.header("ETag")
    assert request(url, method="HEAD").body == b""
    gz = get(url, Accept_Encoding="gzip")
    assert gz.header("Content-Encoding") == "gzip"
    assert get(url, If_None_Match=first.header("ETag") or "").status == 304


def test_proxy_headers_are_not_answered_from_another_origins_cache(ui_server: Server) -> None:
    path = "/project/app/"
    get(ui_server.url(path))  # cached for the server's own origin
    head = (f"GET {path} HTTP/1.1\r\nHost: {ui_server.host}:{ui_server.port}\r\n"
            "X-Forwarded-Host: pypi.corp\r\nX-Forwarded-Proto: https\r\n"
            "Connection: close\r\n\r\n").encode()
    status, raw = raw_request(ui_server.host, ui_server.port, head)
    assert status == 200
    assert b"pip install --index-url https://pypi.corp/simple/ app</code>" in raw


def test_a_yank_and_an_owner_from_the_cli_show(ui_server: Server) -> None:
    url = ui_server.url("/project/billing-client/1.0/")
    assert "This release is yanked" not in get(url).text
    cfg = ui_server.log.parent / "pypid.toml"
    env = {**os.environ, "PYTHONPATH": str(REPO_ROOT)}
    for args in (["yank", "billing-client==1.0", "--reason", "bad build"],
                 ["owner", "add", "billing-client", LOGIN[0]]):
        subprocess.run([sys.executable, "-m", "pypid", *args, "--config", str(cfg)],
                       check=True, env=env, capture_output=True, timeout=60)
    deadline = time.monotonic() + WAIT
    text = get(url).text
    while time.monotonic() < deadline and ("<li>alice</li>" not in text
                                           or "This release is yanked" not in text):
        time.sleep(0.1)
        text = get(url).text
    assert "This release is yanked</strong>: bad build" in text
    assert "<li>alice</li>" in text


@pytest.fixture(scope="module")
def protected(tmp_path_factory: pytest.TempPathFactory) -> Server:
    work = tmp_path_factory.mktemp("ui-protected")
    build_site(work / "packages")
    Htpasswd(work / "htpasswd").add(*LOGIN)
    srv = start_server(work, work / "packages", url_prefix="/pypi", settings={
        "auth": {"htpasswd": str(work / "htpasswd"), "protect": ["upload", "list"]}})
    STARTED.append(srv)
    yield srv  # type: ignore[misc]
    stop(srv.proc)


def test_list_protected_pages_need_a_login(protected: Server) -> None:
    token = base64.b64encode(":".join(LOGIN).encode()).decode()
    for path in ("/projects/", "/project/base/", "/project/Base/"):
        refused = get(protected.url(path))
        assert refused.status == 401
        assert (refused.header("WWW-Authenticate") or "").startswith("Basic")
        for _ in range(2):  # the second time the page is cached: still a login first
            assert get(protected.url(path)).status == 401
            allowed = get(protected.url(path), Authorization=f"Basic {token}")
            assert allowed.status in (200, 301)
    page = get(protected.url("/project/base/"), Authorization=f"Basic {token}")
    assert f"--index-url {protected.origin}/pypi/simple/ base</code>" in page.text

