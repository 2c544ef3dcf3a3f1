"""A second server: url_prefix "/pypi", upstream "redirect", no trusted proxy."""

from __future__ import annotations

from pathlib import Path
from urllib.parse import urljoin

import pytest

from tests.integration.harness import OTHER_SERVER, ServerPool
from tests.integration.helpers import (
    JSON_TYPE,
    TEXT_HTML,
    Corpus,
    Server,
    get,
    parse_page,
    pip_download,
    sha256,
)

pytestmark = pytest.mark.server

UPSTREAM = "https://pypi.org/simple/"


@pytest.fixture(scope="module")
def pserver(server_factory: ServerPool) -> Server:
    return server_factory(**OTHER_SERVER)


def test_welcome_under_prefix(pserver: Server) -> None:
    resp = get(pserver.url("/"))
    assert resp.status == 200, resp.describe()
    line = f"pip install --index-url http://127.0.0.1:{pserver.port}/pypi/simple/ PACKAGE"
    assert line in resp.text, resp.text


def test_health_under_prefix(pserver: Server) -> None:
    resp = get(pserver.url("/health"))
    assert resp.status == 200, resp.describe()


def test_root_index_links_under_prefix(pserver: Server, corpus: Corpus) -> None:
    resp = get(pserver.url("/simple/"))
    assert resp.status == 200, resp.describe()
    links = {urljoin(resp.url, a.attrs.get("href") or "") for a in parse_page(resp.text).anchors}
    assert links == {pserver.url(f"/simple/{p}/") for p in corpus.projects}


@pytest.mark.parametrize("accept", [JSON_TYPE, TEXT_HTML])
def test_project_links_resolve_under_prefix(pserver: Server, corpus: Corpus, accept: str) -> None:
    page_url = pserver.url("/simple/lib/")
    resp = get(page_url, Accept=accept)
    assert resp.status == 200, resp.describe()
    if accept == JSON_TYPE:
        hrefs = [f["url"] for f in resp.json()["files"]]
    else:
        hrefs = [a.attrs.get("href") or "" for a in parse_page(resp.text).anchors]
    assert len(hrefs) == len(corpus.project("lib"))
    for href in hrefs:
        url = urljoin(page_url, href).split("#")[0]
        assert url.startswith(pserver.url("/packages/")), url
        filename = url.rsplit("/", 1)[1]
        got = get(url)
        assert got.status == 200, got.describe()
        assert sha256(got.body) == sha256(corpus.by_filename(filename).data())
        meta = get(url + ".metadata")
        assert meta.status == 200, meta.describe()


@pytest.mark.parametrize(
    "path",
    [
        "/",
        "/simple/",
        "/simple/app/",
        "/packages/app-1.0-py3-none-any.whl",
        "/packages/app-1.0-py3-none-any.whl.metadata",
        "/health",
    ],
)
def test_outside_prefix_is_404(pserver: Server, path: str) -> None:
    resp = get(pserver.origin + path)
    assert resp.status == 404, resp.describe()


@pytest.mark.parametrize(
    ("path", "target"),
    [
        ("/simple/Mixed_Case.Name/", "/simple/mixed-case-name/"),
        ("/simple/app", "/simple/app/"),
        ("/simple/LIB/", "/simple/lib/"),
    ],
)
def test_redirect_keeps_prefix(pserver: Server, path: str, target: str) -> None:
    resp = get(pserver.url(path))
    assert resp.status == 301, resp.describe()
    assert urljoin(resp.url, resp.header("Location") or "") == pserver.url(target)


@pytest.mark.parametrize("project", ["app", "lib", "base", "sdonly", "mixed-case-name"])
def test_local_project_never_upstream(pserver: Server, project: str) -> None:
    for accept in (JSON_TYPE, TEXT_HTML):
        resp = get(pserver.url(f"/simple/{project}/"), Accept=accept)
        assert resp.status == 200, resp.describe()


def test_unknown_project_redirects_upstream(pserver: Server) -> None:
    resp = get(pserver.url("/simple/does-not-exist/"), Accept=JSON_TYPE)
    assert resp.status == 302, resp.describe()
    assert resp.header("Location") == UPSTREAM + "does-not-exist/"


def test_unknown_non_normalized_project(pserver: Server) -> None:
    resp = get(pserver.url("/simple/Does_Not.Exist/"))
    # Either normalize here first (301, prefix kept) or send upstream normalized (302).
    assert resp.status in (301, 302), resp.describe()
    location = urljoin(resp.url, resp.header("Location") or "")
    if resp.status == 301:
        assert location == pserver.url("/simple/does-not-exist/")
    else:
        assert location == UPSTREAM + "does-not-exist/"


def test_unknown_file_is_404_not_upstream(pserver: Server) -> None:
    resp = get(pserver.url("/packages/nothing-1.0-py3-none-any.whl"))
    assert resp.status == 404, resp.describe()


def test_pip_download_under_prefix(pserver: Server, corpus: Corpus, tmp_path: Path) -> None:
    got, out = pip_download(pserver.index_url, tmp_path, "app")
    assert list(got) == ["app-1.0-py3-none-any.whl"], out
    assert got["app-1.0-py3-none-any.whl"] == corpus.by_filename("app-1.0-py3-none-any.whl").data()
