"""Hostile and broken input: 4xx, never 5xx, never a file outside the root, no tracebacks.

Runs last (module order), so the log checks see the whole session of the shared server.
"""

from __future__ import annotations

from urllib.parse import urljoin

import pytest

from tests.integration.harness import ServerPool
from tests.integration.helpers import JSON_TYPE, Corpus, Server, get, raw_request, request

pytestmark = pytest.mark.server

PASSWD = b"root:x:0:0"

TRAVERSALS = [
    "/packages/../../etc/passwd",
    "/packages/..%2f..%2fetc%2fpasswd",
    "/packages/..%2F..%2F..%2F..%2Fetc%2Fpasswd",
    "/packages/%2e%2e%2f%2e%2e%2f%2e%2e%2fetc%2fpasswd",
    "/packages/%2e%2e/%2e%2e/%2e%2e/etc/passwd",
    "/packages/%2Fetc%2Fpasswd",
    "/packages//etc/passwd",
    "/packages/....//....//etc/passwd",
    "/packages/..%5c..%5cetc%5cpasswd",
    "/packages/%252e%252e%252fetc%252fpasswd",
    "/packages/..%2f..%2fetc%2fpasswd.metadata",
    "/simple/..%2f..%2fetc%2fpasswd/",
    "/simple/%2e%2e/",
    "/simple/../../etc/passwd",
]

BAD_NAMES = [
    "/simple/foo%00bar/",
    "/simple/app%00/",
    "/packages/app-1.0-py3-none-any.whl%00",
    "/packages/app-1.0-py3-none-any.whl%00.metadata",
    "/simple/foo%0d%0aSet-Cookie:%20x=1/",
    "/simple/app%0d%0aLocation:%20http://evil.example/",
    "/simple/foo%0abar/",
    "/simple/%C3%A9t%C3%A9/",
    "/simple/%ff%fe/",
    "/simple/-/",
    "/simple/" + "a" * 3000 + "/",
    "/packages/" + "b" * 3000 + ".whl",
]


def assert_client_error(resp_status: int, body: bytes, what: str) -> None:
    assert 400 <= resp_status < 500, f"{what}: {resp_status}"
    assert PASSWD not in body, what


@pytest.mark.parametrize("path", TRAVERSALS)
def test_path_traversal(server: Server, path: str) -> None:
    resp = get(server.url(path))
    # A traversal may be answered by a redirect within this server (werkzeug merges "//");
    # never by a file outside the root.
    if 300 <= resp.status < 400:
        assert PASSWD not in resp.body
        location = urljoin(resp.url, resp.header("Location") or "")
        assert location.startswith(server.origin + "/"), resp.describe()
        return
    assert_client_error(resp.status, resp.body, path)


@pytest.mark.parametrize("path", BAD_NAMES)
def test_bad_names(server: Server, path: str) -> None:
    resp = get(server.url(path))
    assert_client_error(resp.status, resp.body, path)
    assert resp.header("Set-Cookie") is None
    assert "evil.example" not in (resp.header("Location") or "")


@pytest.mark.parametrize(
    "raw_path",
    [b"/simple/a\x00b/", b"/packages/a\x00b.whl", b"/simple/\xff\xfe/", b"/packages/../etc/passwd"],
)
def test_raw_bytes_in_path(server: Server, raw_path: bytes) -> None:
    raw = b"GET " + raw_path + b" HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n"
    status, data = raw_request(server.host, server.port, raw)
    assert_client_error(status, data, repr(raw_path))


@pytest.mark.parametrize(
    "accept",
    ["garbage", "q=0.5", "application/", "/json", "text/plain;q=1, image/png"],
)
@pytest.mark.parametrize("path", ["/simple/", "/simple/app/"])
def test_garbage_accept(server: Server, path: str, accept: str) -> None:
    resp = request(server.url(path), headers={"Accept": accept})
    assert 400 <= resp.status < 500, resp.describe()


def test_non_ascii_accept(server: Server) -> None:
    raw = b"GET /simple/ HTTP/1.1\r\nHost: x\r\nAccept: \xff\xfe;q=\xe9\r\n"
    raw += b"Connection: close\r\n\r\n"
    status, _ = raw_request(server.host, server.port, raw)
    assert 400 <= status < 500, status


def test_unparseable_files_logged_once(server: Server, corpus: Corpus) -> None:
    for _ in range(6):
        assert get(server.url("/simple/")).status == 200
        assert get(server.url("/simple/app/"), Accept=JSON_TYPE).status == 200
    assert get(server.url("/simple/foo/")).status == 404
    assert get(server.url("/simple/garbage/")).status == 404
    log = server.log_text().splitlines()
    for junk in corpus.junk:
        lines = [line for line in log if junk in line]
        assert len(lines) == 1, f"{junk}: {lines}"


def test_no_traceback_in_logs(server: Server, server_factory: ServerPool) -> None:
    for srv in server_factory.servers.values():
        text = srv.log_text()
        assert "Traceback" not in text, f"{srv.log}:\n{text[-6000:]}"
