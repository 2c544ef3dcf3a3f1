"""Every GET row of DESIGN.md against the shared real server (no prefix, upstream off)."""

from __future__ import annotations

import re
from urllib.parse import urljoin, urlsplit

import pytest

from tests.builders import normalize
from tests.integration.helpers import (
    HTML_V1_TYPE,
    JSON_TYPE,
    PIP_ACCEPT,
    REPO_ROOT,
    TEXT_HTML,
    UPLOAD_TIME_RE,
    UV_ACCEPT,
    Corpus,
    Dist,
    Response,
    Server,
    get,
    parse_page,
    request,
    sha256,
    wheel_metadata,
)

pytestmark = pytest.mark.server


def pypid_version() -> str:
    text = (REPO_ROOT / "pypid" / "__init__.py").read_text("utf-8")
    m = re.search(r'__version__\s*=\s*"([^"]+)"', text)
    assert m
    return m.group(1)


def assert_type(resp: Response, expected: str) -> None:
    """Exact media type; text/html must say charset=utf-8, others allow only that param."""
    ctype = resp.header("Content-Type") or ""
    assert resp.media_type == expected, resp.describe()
    params = [p.strip().lower().replace('"', "") for p in ctype.split(";")[1:] if p.strip()]
    assert params in ([], ["charset=utf-8"]), resp.describe()
    if expected == TEXT_HTML:
        assert params == ["charset=utf-8"], resp.describe()


def assert_vary_accept(resp: Response) -> None:
    vary = [v.strip().lower() for v in (resp.header("Vary") or "").split(",")]
    assert "accept" in vary, resp.describe()


# --- welcome page and health ------------------------------------------------------------


def test_welcome_page(server: Server, corpus: Corpus) -> None:
    resp = get(server.url("/"))
    assert resp.status == 200, resp.describe()
    assert resp.media_type == TEXT_HTML
    text = resp.text
    assert "Welcome to pypid!" in text
    line = f"pip install --index-url http://127.0.0.1:{server.port}/simple/ PACKAGE"
    assert line in text, text
    assert pypid_version() in text
    counts = {str(len(corpus.projects)), str(len(corpus.dists))}
    assert any(re.search(rf"\b{n}\b", text) for n in counts), f"no package count {counts}"


def test_health(server: Server) -> None:
    resp = get(server.url("/health"))
    assert resp.status == 200, resp.describe()
    assert resp.media_type == "application/json"
    body = resp.json()
    assert isinstance(body, dict)
    assert body.get("status") == "ok", body


# --- /simple/ ---------------------------------------------------------------------------


def test_root_index_html(server: Server, corpus: Corpus) -> None:
    resp = get(server.url("/simple/"))
    assert resp.status == 200, resp.describe()
    assert_type(resp, TEXT_HTML)
    assert_vary_accept(resp)
    page = parse_page(resp.text)
    assert page.meta.get("pypi:repository-version") == "1.4"
    links = {urljoin(resp.url, a.attrs.get("href") or ""): a.text.strip() for a in page.anchors}
    expected = {server.url(f"/simple/{p}/") for p in corpus.projects}
    assert set(links) == expected, links
    # The unparseable files make no project.
    assert not any("garbage" in u or "/foo/" in u for u in links)


def test_root_index_json(server: Server, corpus: Corpus) -> None:
    resp = get(server.url("/simple/"), Accept=JSON_TYPE)
    assert resp.status == 200, resp.describe()
    assert_type(resp, JSON_TYPE)
    assert_vary_accept(resp)
    body = resp.json()
    assert body["meta"]["api-version"] == "1.4"
    names = {normalize(p["name"]) for p in body["projects"]}
    assert names == corpus.projects


@pytest.mark.parametrize("path", ["/simple/", "/simple/lib/"])
def test_etag_conditional_get(server: Server, path: str) -> None:
    html = get(server.url(path))
    js = get(server.url(path), Accept=JSON_TYPE)
    for resp in (html, js):
        assert resp.status == 200, resp.describe()
        assert resp.header("ETag"), resp.describe()
    # Two representations of one URL need two strong validators (RFC 9110 8.8.3).
    assert html.header("ETag") != js.header("ETag")
    again = get(server.url(path), If_None_Match=html.header("ETag") or "")
    assert again.status == 304, again.describe()
    assert again.body == b""
    assert again.header("ETag") == html.header("ETag")
    again = get(server.url(path), Accept=JSON_TYPE, If_None_Match=js.header("ETag") or "")
    assert again.status == 304, again.describe()
    # A validator of the other representation must not give 304.
    other = get(server.url(path), Accept=JSON_TYPE, If_None_Match=html.header("ETag") or "")
    assert other.status == 200, other.describe()
    stale = get(server.url(path), If_None_Match='"not-the-etag"')
    assert stale.status == 200, stale.describe()
    assert_if_none_match_forms(server.url(path), html.header("ETag") or "")


def assert_if_none_match_forms(url: str, etag: str) -> None:
    """If-None-Match compares weakly (RFC 9110 13.1.2): a W/ prefix (nginx adds one when
    it gzips) and a list of tags still match."""
    strong = etag.removeprefix("W/")
    for value in (f"W/{strong}", f'"other", {etag}', "*"):
        resp = get(url, If_None_Match=value)
        assert resp.status == 304, f"If-None-Match: {value}: {resp.describe()}"


NEGOTIATION = [
    # (id, Accept or None, ?format= or None, expected type or 406)
    ("no-accept", None, None, TEXT_HTML),
    ("star", "*/*", None, TEXT_HTML),
    ("json", JSON_TYPE, None, JSON_TYPE),
    ("v1-html", HTML_V1_TYPE, None, HTML_V1_TYPE),
    ("text-html", TEXT_HTML, None, TEXT_HTML),
    ("pip", PIP_ACCEPT, None, JSON_TYPE),
    ("uv", UV_ACCEPT, None, JSON_TYPE),
    ("q-prefers-html", f"{JSON_TYPE};q=0.5, {TEXT_HTML};q=0.9", None, TEXT_HTML),
    ("q-prefers-v1-html", f"{JSON_TYPE};q=0.2, {HTML_V1_TYPE};q=0.3", None, HTML_V1_TYPE),
    ("tie-json-first", f"{TEXT_HTML}, {HTML_V1_TYPE}, {JSON_TYPE}", None, JSON_TYPE),
    ("tie-v1-html", f"{TEXT_HTML}, {HTML_V1_TYPE}", None, HTML_V1_TYPE),
    ("browser", "text/html,application/xhtml+xml,*/*;q=0.8", None, TEXT_HTML),
    ("application-json", "application/json", None, 406),
    ("text-plain", "text/plain", None, 406),
    ("json-q0", f"{JSON_TYPE};q=0", None, 406),
    ("format-json", TEXT_HTML, JSON_TYPE.replace("+", "%2B"), JSON_TYPE),
    # Typed literally, "+" reads as a space in a query; PyPI takes it as "+", and so do the
    # tools that copy PyPI's documented URL (research notes 1.5).
    ("format-json-literal-plus", TEXT_HTML, JSON_TYPE, JSON_TYPE),
    ("format-html", JSON_TYPE, TEXT_HTML, TEXT_HTML),
    ("format-v1-html", None, HTML_V1_TYPE.replace("+", "%2B"), HTML_V1_TYPE),
]


@pytest.mark.parametrize(
    ("accept", "fmt", "expected"),
    [pytest.param(*case[1:], id=case[0]) for case in NEGOTIATION],
)
@pytest.mark.parametrize("path", ["/simple/", "/simple/app/"])
def test_negotiation(
    server: Server, path: str, accept: str | None, fmt: str | None, expected: str | int
) -> None:
    url = server.url(path) + (f"?format={fmt}" if fmt else "")
    resp = request(url, headers={"Accept": accept} if accept else {})
    if expected == 406:
        assert resp.status == 406, resp.describe()
        assert_vary_accept(resp)  # the answer depended on Accept, so caches must know
        return
    assert resp.status == 200, resp.describe()
    assert_type(resp, str(expected))
    assert_vary_accept(resp)
    if expected == JSON_TYPE:
        assert resp.json()["meta"]["api-version"] == "1.4"
    else:
        assert parse_page(resp.text).meta.get("pypi:repository-version") == "1.4"


def test_unknown_format_never_5xx(server: Server) -> None:
    resp = get(server.url("/simple/?format=application/bogus"), Accept=JSON_TYPE)
    # Fall back to Accept, or 406: both allowed by PEP 691.
    assert resp.status in (200, 406), resp.describe()
    if resp.status == 200:
        assert_type(resp, JSON_TYPE)


# --- /simple/<project>/ -----------------------------------------------------------------


def metadata_bytes(server: Server, file_url: str) -> bytes:
    resp = get(file_url + ".metadata")
    assert resp.status == 200, resp.describe()
    return resp.body


@pytest.mark.parametrize("project", ["app", "lib", "base", "sdonly", "mixed-case-name"])
def test_project_json(server: Server, corpus: Corpus, project: str) -> None:
    page_url = server.url(f"/simple/{project}/")
    resp = get(page_url, Accept=JSON_TYPE)
    assert resp.status == 200, resp.describe()
    assert_type(resp, JSON_TYPE)
    assert_vary_accept(resp)
    body = resp.json()
    assert body["name"] == project
    assert body["meta"]["api-version"] == "1.4"
    dists = corpus.project(project)
    assert set(body["versions"]) == {d.version for d in dists}
    files = {f["filename"]: f for f in body["files"]}
    assert set(files) == {d.filename for d in dists}
    for dist in dists:
        entry = files[dist.filename]
        data = dist.data()
        url = urljoin(page_url, entry["url"])
        assert urlsplit(url).fragment in ("", f"sha256={sha256(data)}")
        url = url.split("#")[0]
        assert url == server.url(f"/packages/{dist.filename}"), entry["url"]
        assert entry["hashes"]["sha256"] == sha256(data)
        assert entry["size"] == len(data)
        assert entry.get("requires-python") == dist.requires_python
        assert entry.get("yanked") is False
        assert UPLOAD_TIME_RE.match(entry["upload-time"]), entry["upload-time"]
        assert "dist-info-metadata" not in entry, entry
        if dist.is_wheel:
            served = metadata_bytes(server, url)
            assert served == wheel_metadata(dist.path)
            assert entry["core-metadata"] == {"sha256": sha256(served)}
            assert entry["data-dist-info-metadata"] == entry["core-metadata"]
        else:
            assert entry.get("core-metadata", False) is False, entry
            assert entry.get("data-dist-info-metadata", False) is False, entry


@pytest.mark.parametrize("project", ["app", "lib", "base", "sdonly", "mixed-case-name"])
def test_project_html(server: Server, corpus: Corpus, project: str) -> None:
    page_url = server.url(f"/simple/{project}/")
    resp = get(page_url)
    assert resp.status == 200, resp.describe()
    assert_type(resp, TEXT_HTML)
    assert_vary_accept(resp)
    page = parse_page(resp.text)
    assert page.meta.get("pypi:repository-version") == "1.4"
    anchors = {a.text.strip(): a.attrs for a in page.anchors}
    dists = corpus.project(project)
    assert set(anchors) == {d.filename for d in dists}
    for dist in dists:
        attrs = anchors[dist.filename]
        data = dist.data()
        href = urljoin(page_url, attrs.get("href") or "")
        assert href == server.url(f"/packages/{dist.filename}#sha256={sha256(data)}")
        assert attrs.get("data-requires-python") == dist.requires_python
        assert attrs.get("data-size") == str(len(data))
        assert UPLOAD_TIME_RE.match(attrs.get("data-upload-time") or ""), attrs
        assert "data-yanked" not in attrs
        if dist.is_wheel:
            served = metadata_bytes(server, href.split("#")[0])
            assert attrs.get("data-core-metadata") == f"sha256={sha256(served)}"
            assert attrs.get("data-dist-info-metadata") == attrs.get("data-core-metadata")
        else:
            assert "data-core-metadata" not in attrs, attrs
            assert "data-dist-info-metadata" not in attrs, attrs


def test_requires_python_escaped(server: Server) -> None:
    body = get(server.url("/simple/lib/")).text
    assert 'data-requires-python="&gt;=4,&lt;5"' in body, body
    assert 'data-requires-python="&gt;=3.8"' in body, body
    js = get(server.url("/simple/lib/"), Accept=JSON_TYPE).json()
    assert {f["requires-python"] for f in js["files"]} >= {">=4,<5", ">=3.8"}


@pytest.mark.parametrize(
    ("path", "target"),
    [
        ("/simple/Mixed_Case.Name/", "/simple/mixed-case-name/"),
        ("/simple/MIXED-case_name/", "/simple/mixed-case-name/"),
        ("/simple/mixed-case-name", "/simple/mixed-case-name/"),
        ("/simple/Mixed_Case.Name", "/simple/mixed-case-name/"),
        ("/simple/App/", "/simple/app/"),
        ("/simple/app", "/simple/app/"),
    ],
)
def test_redirect_to_normalized(server: Server, path: str, target: str) -> None:
    resp = get(server.url(path), Accept=JSON_TYPE)
    assert resp.status == 301, resp.describe()
    location = urljoin(resp.url, resp.header("Location") or "")
    assert location == server.url(target), resp.describe()
    final = get(location, Accept=JSON_TYPE)
    assert final.status == 200, final.describe()


@pytest.mark.parametrize("path", ["/simple/does-not-exist/", "/simple/Does_Not.Exist/"])
def test_unknown_project_404_when_upstream_off(server: Server, path: str) -> None:
    resp = get(server.url(path))
    # A non-normalized unknown name may first redirect to its normalized form.
    if resp.status == 301:
        resp = get(urljoin(resp.url, resp.header("Location") or ""))
    assert resp.status == 404, resp.describe()


# --- /packages/ -------------------------------------------------------------------------


def file_url(server: Server, dist: Dist) -> str:
    return server.url(f"/packages/{dist.filename}")


@pytest.mark.parametrize(
    "filename",
    ["app-1.0-py3-none-any.whl", "base-1.1.tar.gz", "sdonly-0.9.zip", "base-1.0-py3-none-any.whl"],
)
def test_package_file(server: Server, corpus: Corpus, filename: str) -> None:
    dist = corpus.by_filename(filename)
    data = dist.data()
    resp = get(file_url(server, dist))
    assert resp.status == 200, resp.describe()
    assert resp.body == data
    assert resp.header("Content-Length") == str(len(data))
    assert resp.header("Accept-Ranges") == "bytes"
    etag, modified = resp.header("ETag"), resp.header("Last-Modified")
    assert etag, resp.describe()
    assert modified, resp.describe()
    again = get(file_url(server, dist), If_None_Match=etag)
    assert again.status == 304, again.describe()
    assert again.body == b""
    again = get(file_url(server, dist), If_Modified_Since=modified)
    assert again.status == 304, again.describe()
    changed = get(file_url(server, dist), If_None_Match='"other"')
    assert changed.status == 200, changed.describe()
    assert_if_none_match_forms(file_url(server, dist), etag)


def test_package_head(server: Server, corpus: Corpus) -> None:
    dist = corpus.by_filename("lib-1.5-py3-none-any.whl")
    resp = request(file_url(server, dist), method="HEAD")
    assert resp.status == 200, resp.describe()
    assert resp.body == b""
    assert resp.header("Content-Length") == str(len(dist.data()))
    assert resp.header("Accept-Ranges") == "bytes"


def test_package_range(server: Server, corpus: Corpus) -> None:
    dist = corpus.by_filename("lib-1.5-py3-none-any.whl")
    data = dist.data()
    resp = get(file_url(server, dist), Range="bytes=0-9")
    assert resp.status == 206, resp.describe()
    assert resp.body == data[:10]
    assert resp.header("Content-Range") == f"bytes 0-9/{len(data)}"
    assert resp.header("Content-Length") == "10"
    # A suffix range, as uv reads a wheel's central directory.
    tail = get(file_url(server, dist), Range="bytes=-22")
    assert tail.status == 206, tail.describe()
    assert tail.body == data[-22:]
    assert tail.header("Content-Range") == f"bytes {len(data) - 22}-{len(data) - 1}/{len(data)}"
    past = get(file_url(server, dist), Range=f"bytes={len(data) + 10}-")
    assert past.status == 416, past.describe()


def test_wheel_metadata_file(server: Server, corpus: Corpus) -> None:
    for dist in corpus.dists:
        if dist.is_wheel:
            resp = get(file_url(server, dist) + ".metadata")
            assert resp.status == 200, resp.describe()
            assert resp.body == wheel_metadata(dist.path), dist.filename


@pytest.mark.parametrize(
    "path",
    [
        "/packages/base-1.1.tar.gz.metadata",
        "/packages/sdonly-0.9.zip.metadata",
        "/packages/nothing-1.0-py3-none-any.whl.metadata",
        "/packages/nothing-1.0-py3-none-any.whl",
        "/packages/nothing-1.0.tar.gz",
        "/simple/app/extra/",
        "/simple/a/b/",
    ],
)
def test_not_found(server: Server, path: str) -> None:
    resp = get(server.url(path))
    assert resp.status == 404, resp.describe()


def test_post_simple_is_405(server: Server) -> None:
    resp = request(server.url("/simple/app/"), method="POST")
    assert resp.status == 405, resp.describe()
