"""Every GET row of DESIGN.md through Flask's test client."""

from __future__ import annotations

import base64
import gzip
import hashlib
import json
import re
import zipfile
from pathlib import Path
from typing import Any

import pytest
from flask.testing import FlaskClient
from werkzeug.test import TestResponse

from pypid.auth import Htpasswd
from pypid.simple.negotiate import HTML, JSON
from tests.builders import make_sdist, make_wheel
from tests.unit.conftest import AppFactory


@pytest.fixture
def corpus(root: Path) -> dict[str, Path]:
    return {
        "wheel": make_wheel(root, "Foo_Bar", "1.0", requires_python=">=3.8,<4"),
        "wheel2": make_wheel(root, "foo-bar", "1.10"),
        "sdist": make_sdist(root, "foo-bar", "1.2"),
        "other": make_sdist(root / "sub", "other", "0.1") if (root / "sub").mkdir() is None
        else root,
    }


def test_welcome(make_app: AppFactory, corpus: dict[str, Path]) -> None:
    response = make_app().test_client().get("/", base_url="http://index.example:8080")
    text = response.get_data(as_text=True)
    assert response.status_code == 200
    assert "Welcome to pypid!" in text
    assert "pip install --index-url http://index.example:8080/simple/ PACKAGE" in text
    assert "serves 2 packages (4 files)" in text


def test_project_list_html_and_json(make_app: AppFactory, corpus: dict[str, Path]) -> None:
    client = make_app().test_client()
    html = client.get("/simple/")
    assert html.headers["Content-Type"] == "text/html; charset=utf-8"
    assert html.headers["Vary"] == "Accept, Accept-Encoding"
    body = html.get_data(as_text=True)
    assert '<meta name="pypi:repository-version" content="1.4">' in body
    assert re.findall(r'<a href="([^"]+)">', body) == ["foo-bar/", "other/"]
    data = client.get("/simple/", headers={"Accept": JSON})
    assert data.headers["Content-Type"] == JSON
    assert data.get_json() == {"meta": {"api-version": "1.4"},
                               "projects": [{"name": "foo-bar"}, {"name": "other"}]}


def test_project_json(make_app: AppFactory, corpus: dict[str, Path]) -> None:
    response = make_app().test_client().get("/simple/foo-bar/", headers={"Accept": JSON})
    page = response.get_json()
    assert page["name"] == "foo-bar"
    assert page["versions"] == ["1.0", "1.2", "1.10"]  # PEP 440 order, not text order
    assert page["meta"] == {"api-version": "1.4"}
    assert page["project-status"] == {"status": "active"}
    files = {f["filename"]: f for f in page["files"]}
    assert list(files) == ["foo_bar-1.0-py3-none-any.whl", "foo_bar-1.2.tar.gz",
                           "foo_bar-1.10-py3-none-any.whl"]
    wheel = files["foo_bar-1.0-py3-none-any.whl"]
    raw = corpus["wheel"].read_bytes()
    assert wheel["hashes"] == {"sha256": hashlib.sha256(raw).hexdigest()}
    assert wheel["size"] == len(raw)
    assert wheel["url"] == "../../packages/foo_bar-1.0-py3-none-any.whl"
    assert wheel["requires-python"] == ">=3.8,<4"
    with zipfile.ZipFile(corpus["wheel"]) as archive:
        metadata = archive.read("foo_bar-1.0.dist-info/METADATA")
    assert wheel["core-metadata"] == {"sha256": hashlib.sha256(metadata).hexdigest()}
    assert wheel["data-dist-info-metadata"] == wheel["core-metadata"]
    assert "dist-info-metadata" not in wheel
    assert wheel["yanked"] is False
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{6}Z", wheel["upload-time"])
    sdist = files["foo_bar-1.2.tar.gz"]
    assert sdist["core-metadata"] is False
    assert sdist["requires-python"] is None


def test_project_html(make_app: AppFactory, corpus: dict[str, Path]) -> None:
    response = make_app().test_client().get("/simple/foo-bar/", headers={"Accept": HTML})
    assert response.headers["Content-Type"] == HTML
    body = response.get_data(as_text=True)
    anchors = re.findall(r"<a ([^>]*)>([^<]*)</a>", body)
    assert [text for _, text in anchors] == ["foo_bar-1.0-py3-none-any.whl",
                                            "foo_bar-1.2.tar.gz", "foo_bar-1.10-py3-none-any.whl"]
    first = anchors[0][0]
    assert 'data-requires-python="&gt;=3.8,&lt;4"' in first
    core = re.search(r'data-core-metadata="(sha256=[0-9a-f]{64})"', first)
    assert core
    assert f'data-dist-info-metadata="{core.group(1)}"' in first
    assert re.search(r'data-size="\d+"', first)
    assert re.search(r'data-upload-time="[^"]+Z"', first)
    assert "data-yanked" not in body
    assert "data-core-metadata" not in anchors[1][0]  # sdists carry no metadata file


def test_yanked_file(make_app: AppFactory, corpus: dict[str, Path]) -> None:
    app = make_app()
    index = app.extensions["pypid"].index
    events = index.ledger.events
    events.append("yank", user="cli:root", project="foo-bar",
                  file="foo_bar-1.0-py3-none-any.whl", reason="broken <build>")
    events.append("yank", user="cli:root", project="foo-bar", file="foo_bar-1.2.tar.gz")
    index.ledger.catch_up()
    index.apply_marks(index.ledger.marks)
    client = app.test_client()
    files = client.get("/simple/foo-bar/", headers={"Accept": JSON}).get_json()["files"]
    assert [f["yanked"] for f in files] == ["broken <build>", True, False]
    body = client.get("/simple/foo-bar/").get_data(as_text=True)
    assert 'data-yanked="broken &lt;build&gt;"' in body
    assert 'data-yanked=""' in body


@pytest.mark.parametrize(("path", "location"), [
    ("/simple/Foo_Bar/", "/simple/foo-bar/"),
    ("/simple/FOO.bar/?format=text/html", "/simple/foo-bar/?format=text/html"),
    ("/simple/foo-bar", "/simple/foo-bar/"),
    ("/simple", "/simple/"),
])
def test_redirects(make_app: AppFactory, corpus: dict[str, Path], path: str,
                   location: str) -> None:
    response = make_app().test_client().get(path)
    assert response.status_code == 301
    assert response.headers["Location"] == location


def test_redirect_keeps_prefix(make_app: AppFactory, corpus: dict[str, Path]) -> None:
    client = make_app(server={"url_prefix": "/pypi"}).test_client()
    response = client.get("/pypi/simple/Foo_Bar/")
    assert response.headers["Location"] == "/pypi/simple/foo-bar/"
    assert client.get("/pypi/simple/foo-bar/").status_code == 200
    assert client.get("/simple/foo-bar/").status_code == 404
    assert client.get("/pypi").headers["Location"] == "/pypi/"
    welcome = client.get("/pypi/", base_url="http://h:1").get_data(as_text=True)
    assert "--index-url http://h:1/pypi/simple/ PACKAGE" in welcome


def test_unknown_project(make_app: AppFactory, corpus: dict[str, Path]) -> None:
    redirecting = make_app().test_client().get("/simple/not-here/")
    assert redirecting.status_code == 302
    assert redirecting.headers["Location"] == "https://pypi.org/simple/not-here/"
    assert make_app().test_client().get("/simple/Not_Here/").headers["Location"] == (
        "/simple/not-here/")
    off = make_app(upstream={"mode": "off"}).test_client().get("/simple/not-here/")
    assert off.status_code == 404
    assert off.headers["Content-Type"].startswith("text/plain")


def test_local_project_never_goes_upstream(make_app: AppFactory, corpus: dict[str, Path]) -> None:
    assert make_app().test_client().get("/simple/other/").status_code == 200


@pytest.mark.parametrize("accept", ["application/json", "garbage", f"{JSON};q=0"])
def test_not_acceptable(make_app: AppFactory, corpus: dict[str, Path], accept: str) -> None:
    client = make_app().test_client()
    for path in ("/simple/", "/simple/foo-bar/"):
        assert client.get(path, headers={"Accept": accept}).status_code == 406


def test_format_parameter(make_app: AppFactory, corpus: dict[str, Path]) -> None:
    client = make_app().test_client()
    response = client.get(f"/simple/foo-bar/?format={JSON}", headers={"Accept": "text/html"})
    assert response.headers["Content-Type"] == JSON
    assert client.get("/simple/?format=bogus").status_code == 406


def test_conditional_and_gzip(make_app: AppFactory, root: Path) -> None:
    for i in range(60):
        make_sdist(root, f"project-{i}", "1.0")
    client = make_app().test_client()
    first = client.get("/simple/")
    etag = first.headers["ETag"]
    again = client.get("/simple/", headers={"If-None-Match": etag})
    assert again.status_code == 304
    assert again.headers["ETag"] == etag
    zipped = client.get("/simple/", headers={"Accept-Encoding": "gzip, deflate"})
    assert zipped.headers["Content-Encoding"] == "gzip"
    assert gzip.decompress(zipped.data) == first.data
    assert zipped.headers["ETag"] != etag
    refused = client.get("/simple/", headers={"Accept-Encoding": "gzip;q=0"})
    assert "Content-Encoding" not in refused.headers


def fetch(client: FlaskClient, path: str, **kwargs: Any) -> TestResponse:
    """GET and close (file responses hold the file open until closed)."""
    with client.get(path, **kwargs) as response:
        response.get_data()
    return response


def test_package_file(make_app: AppFactory, corpus: dict[str, Path]) -> None:
    client = make_app().test_client()
    raw = corpus["sdist"].read_bytes()
    response = fetch(client, "/packages/foo_bar-1.2.tar.gz")
    assert response.status_code == 200
    assert response.data == raw
    assert response.headers["Content-Type"] == "application/octet-stream"
    assert "Content-Encoding" not in response.headers  # never let clients gunzip a .tar.gz
    assert response.headers["Accept-Ranges"] == "bytes"
    assert response.headers["ETag"] == f'"{hashlib.sha256(raw).hexdigest()}"'
    assert "Last-Modified" in response.headers
    cached = fetch(client, "/packages/foo_bar-1.2.tar.gz",
                   headers={"If-None-Match": response.headers["ETag"]})
    assert cached.status_code == 304
    since = fetch(client, "/packages/foo_bar-1.2.tar.gz",
                  headers={"If-Modified-Since": response.headers["Last-Modified"]})
    assert since.status_code == 304
    part = fetch(client, "/packages/foo_bar-1.2.tar.gz", headers={"Range": "bytes=0-9"})
    assert part.status_code == 206
    assert part.data == raw[:10]
    assert part.headers["Content-Range"] == f"bytes 0-9/{len(raw)}"


def test_file_in_subfolder_served_by_name(make_app: AppFactory, corpus: dict[str, Path]) -> None:
    client = make_app().test_client()
    assert fetch(client, "/packages/other-0.1.tar.gz").data == corpus["other"].read_bytes()
    assert fetch(client, "/packages/sub/other-0.1.tar.gz").status_code == 404


def test_metadata(make_app: AppFactory, corpus: dict[str, Path]) -> None:
    client = make_app().test_client()
    response = client.get("/packages/foo_bar-1.0-py3-none-any.whl.metadata")
    with zipfile.ZipFile(corpus["wheel"]) as archive:
        assert response.data == archive.read("foo_bar-1.0.dist-info/METADATA")
    assert client.get("/packages/foo_bar-1.2.tar.gz.metadata").status_code == 404
    assert client.get("/packages/nothing-1.0-py3-none-any.whl.metadata").status_code == 404


@pytest.mark.parametrize("path", [
    "/packages/../../etc/passwd", "/packages/..%2F..%2Fetc%2Fpasswd",
    "/packages/%2e%2e/%2e%2e/etc/passwd", "/packages/%2Fetc%2Fpasswd",
    "/packages/foo%00.whl", "/packages/.pypid/index.sqlite3", "/simple/a%0d%0aSet-Cookie:x/",
    "/simple/%2e%2e/", "/simple/-bad-/", "/packages/", "/simple/\u2603/",
])
def test_hostile_paths(make_app: AppFactory, corpus: dict[str, Path], path: str) -> None:
    response = make_app().test_client().get(path)
    assert 400 <= response.status_code < 500
    assert b"root:" not in response.data
    assert "\r" not in response.headers.get("Location", "")


def test_post_to_simple_is_405_with_hint(make_app: AppFactory, corpus: dict[str, Path]) -> None:
    response = make_app().test_client().post("/simple/foo-bar/")
    assert response.status_code == 405
    assert "uploads go to /" in response.status


def test_health(make_app: AppFactory, corpus: dict[str, Path], root: Path) -> None:
    app = make_app()
    ok = app.test_client().get("/health")
    assert ok.status_code == 200
    assert json.loads(ok.data)["status"] == "ok"
    root.rename(root.with_name("moved"))
    down = app.test_client().get("/health")
    assert down.status_code == 503
    assert "does not exist" in json.loads(down.data)["reason"]


def test_health_says_only_its_status_when_list_is_protected(
        make_app: AppFactory, corpus: dict[str, Path], tmp_path: Path,
        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PYPID_BCRYPT_ROUNDS", "4")
    htpasswd = tmp_path / "htpasswd"
    Htpasswd(htpasswd).add("alice", "pw-of-alice")
    client = make_app(auth={"htpasswd": str(htpasswd),
                            "protect": ("upload", "list")}).test_client()
    anonymous = client.get("/health")
    assert anonymous.status_code == 200
    assert json.loads(anonymous.data) == {"status": "ok"}
    login = {"Authorization": "Basic " + base64.b64encode(b"alice:pw-of-alice").decode()}
    detailed = json.loads(client.get("/health", headers=login).data)
    assert detailed["status"] == "ok" and detailed["projects"] > 0
    wrong = {"Authorization": "Basic " + base64.b64encode(b"alice:nope").decode()}
    assert json.loads(client.get("/health", headers=wrong).data) == {"status": "ok"}


def test_forwarded_headers_only_from_trusted(make_app: AppFactory, corpus: dict[str, Path]) -> None:
    client = make_app().test_client()
    headers = {"X-Forwarded-Host": "pypi.corp", "X-Forwarded-Proto": "https",
               "X-Forwarded-Prefix": "/internal"}
    trusted = client.get("/", headers=headers).get_data(as_text=True)
    assert "--index-url https://pypi.corp/internal/simple/" in trusted
    untrusted = client.get("/", headers=headers, environ_base={"REMOTE_ADDR": "10.9.9.9"})
    assert "pypi.corp" not in untrusted.get_data(as_text=True)
    moved = client.get("/simple/Foo/", headers=headers)
    assert moved.headers["Location"] == "/internal/simple/foo/"


def test_file_replaced_under_the_index_asks_for_a_retry(
        make_app: AppFactory, corpus: dict[str, Path], monkeypatch: pytest.MonkeyPatch) -> None:
    app = make_app()
    # The moment before the watcher catches up: no watching at all.
    monkeypatch.setattr(app.extensions["pypid"].index, "start_watching", lambda: None)
    corpus["sdist"].write_bytes(b"different bytes now")
    response = fetch(app.test_client(), "/packages/foo_bar-1.2.tar.gz")
    assert response.status_code == 503
    assert response.headers["Retry-After"] == "1"
    assert response.data != b"different bytes now"
