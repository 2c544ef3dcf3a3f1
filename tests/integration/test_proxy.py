"""X-Forwarded-Proto/Host/Prefix: believed from a trusted proxy (127.0.0.1 by default), ignored
from anyone else."""

from __future__ import annotations

from urllib.parse import urljoin

import pytest

from tests.integration.harness import OTHER_SERVER, ServerPool
from tests.integration.helpers import Server, raw_request, request

pytestmark = pytest.mark.server

FORWARDED = {
    "X-Forwarded-Proto": "https",
    "X-Forwarded-Host": "pypi.example.com",
    "X-Forwarded-Prefix": "/mirror",
}
PUBLIC = "https://pypi.example.com/mirror"


def test_trusted_proxy_welcome_line(server: Server) -> None:
    resp = request(server.url("/"), headers=FORWARDED)
    assert resp.status == 200, resp.describe()
    assert f"pip install --index-url {PUBLIC}/simple/ PACKAGE" in resp.text, resp.text


def test_trusted_proxy_redirect(server: Server) -> None:
    resp = request(server.url("/simple/App/"), headers=FORWARDED)
    assert resp.status == 301, resp.describe()
    location = urljoin(f"{PUBLIC}/simple/App/", resp.header("Location") or "")
    assert location == f"{PUBLIC}/simple/app/", resp.describe()


def test_untrusted_proxy_ignored(server_factory: ServerPool) -> None:
    srv = server_factory(**OTHER_SERVER)  # trusts no proxy
    resp = request(srv.url("/"), headers=FORWARDED)
    assert resp.status == 200, resp.describe()
    assert f"pip install --index-url {srv.index_url} PACKAGE" in resp.text, resp.text
    assert "pypi.example.com" not in resp.text
    resp = request(srv.url("/simple/App/"), headers=FORWARDED)
    assert resp.status == 301, resp.describe()
    assert urljoin(resp.url, resp.header("Location") or "") == srv.url("/simple/app/")


@pytest.mark.parametrize("prefix", ["//evil.example", "/\\evil.example", "/a//b", "https://x/",
                                    "/ok\tX"])
def test_a_forwarded_prefix_that_is_not_one_plain_path_is_ignored(server: Server,
                                                                  prefix: str) -> None:
    resp = request(server.url("/simple/App/"), headers={"X-Forwarded-Prefix": prefix})
    assert resp.status == 301, resp.describe()
    assert resp.header("Location") == "/simple/app/", resp.describe()


def test_a_script_name_header_moves_nothing(server: Server) -> None:
    """gunicorn before 22 believes SCRIPT_NAME from any client; pypid undoes it."""
    status, raw = raw_request(
        server.host, server.port,
        b"GET //evil.example/simple/App HTTP/1.1\r\nHost: t\r\nSCRIPT_NAME: //evil.example\r\n"
        b"Connection: close\r\n\r\n")
    assert status == 404, raw
    assert b"Location" not in raw
    status, raw = raw_request(
        server.host, server.port,
        b"GET /simple/App HTTP/1.1\r\nHost: t\r\nSCRIPT_NAME: //evil.example\r\n"
        b"X-A: 1\r\nX-A: 1\r\nConnection: close\r\n\r\n")  # a thread's, through Flask
    assert status == 301, raw
    assert b"\r\nLocation: /simple/app/\r\n" in raw, raw


@pytest.mark.parametrize("host", ["evil.example/x?", "a b", "x\"><script>", "@evil"])
def test_a_host_that_is_not_a_host_name_is_not_repeated(server: Server, host: str) -> None:
    status, raw = raw_request(server.host, server.port, (
        f"GET / HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n").encode())
    assert status in (200, 400), raw
    assert host.encode() not in raw
