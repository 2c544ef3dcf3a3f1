"""X-Forwarded-Proto/Host/Prefix: believed from a trusted proxy (127.0.0.1 by default), ignored
from anyone else."""

from __future__ import annotations

from urllib.parse import urljoin

import pytest

from tests.integration.harness import OTHER_SERVER, ServerPool
from tests.integration.helpers import Server, request

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
