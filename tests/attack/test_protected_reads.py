"""Every way to ask for a protected read without a login answers 401 (protect = upload,
download, list). Raw requests: the target is sent exactly as written here."""

from __future__ import annotations

import pytest

from tests.attack.harness import Guarded
from tests.integration.helpers import raw_request

pytestmark = pytest.mark.server
WHEEL = "demo-1.0-py3-none-any.whl"


def probe(srv: Guarded, line: str, *headers: str) -> tuple[int, bytes]:
    method, target = line.split(" ", 1)
    target = target.replace("{origin}", f"http://{srv.server.host}:{srv.server.port}")
    head = [f"{method} {target} HTTP/1.1", "Host: x", "Connection: close", *headers]
    return raw_request(srv.server.host, srv.server.port, ("\r\n".join(head) + "\r\n\r\n").encode())


PLAIN = [
    "GET /", "GET /simple/", "HEAD /simple/", "GET /simple/demo/", "HEAD /simple/demo/",
    "GET /simple", "GET /simple/demo", "GET /simple/Demo/", "GET /simple/DEMO",
    "GET //simple/", "GET //simple/demo/", "GET /SIMPLE/", "GET /Simple/demo/",
    "GET /simple%2F", "GET /simple%2Fdemo%2F", "GET /simple/demo%2F", "GET /%73imple/",
    "GET /simple/?format=json", "GET /simple/./demo/", "GET /simple/../simple/",
    f"GET /packages/{WHEEL}", f"HEAD /packages/{WHEEL}", f"GET /packages//{WHEEL}",
    f"GET //packages/{WHEEL}", f"GET /PACKAGES/{WHEEL}", f"GET /packages%2F{WHEEL}",
    "GET /packages/%64emo-1.0-py3-none-any.whl", f"GET /packages/{WHEEL}.metadata",
    f"HEAD /packages/{WHEEL}.metadata", "GET /packages/missing-1.0.tar.gz",
    "GET {origin}/simple/", f"GET {{origin}}/packages/{WHEEL}", "GET {origin}//simple/",
]


@pytest.mark.parametrize("line", PLAIN)
@pytest.mark.parametrize("extra", [(), ("If-None-Match: *",)], ids=["bare", "inm-star"])
def test_protected_read_shows_nothing(target: Guarded, line: str, extra: tuple[str, ...]) -> None:
    """Whatever the status, no variant answers with content or a redirect."""
    status, answer = probe(target, line, *extra)
    assert status in (400, 401, 404), answer[:300]


@pytest.mark.parametrize("line", PLAIN)
@pytest.mark.parametrize("extra", [(), ("If-None-Match: *",), ("Range: bytes=0-9",)],
                         ids=["bare", "inm-star", "range"])
def test_protected_read_needs_a_login(target: Guarded, line: str, extra: tuple[str, ...]) -> None:
    status, answer = probe(target, line, *extra)
    assert status == 401, answer[:300]
    assert b"\r\nwww-authenticate:" in answer.lower()


PREFIXED = [
    "GET /pypi/", "GET /pypi/simple/", "HEAD /pypi/simple/", "GET /pypi/simple",
    "GET /pypi/simple/demo/", "GET /pypi//simple/", "GET //pypi/simple/", "GET /PYPI/simple/",
    "GET /pypi/SIMPLE/", "GET /pypi%2Fsimple/", "GET /pypi/simple%2Fdemo/",
    f"GET /pypi/packages/{WHEEL}", f"GET /pypi//packages/{WHEEL}",
    f"GET /pypi/packages/{WHEEL}.metadata", "GET {origin}/pypi/simple/",
    "GET /simple/", f"GET /packages/{WHEEL}",
]


@pytest.mark.parametrize("line", PREFIXED)
def test_prefixed_read_shows_nothing(prefixed: Guarded, line: str) -> None:
    status, answer = probe(prefixed, line)
    assert status in (400, 401, 404), answer[:300]


@pytest.mark.parametrize("line", PREFIXED)
def test_prefixed_read_needs_a_login(prefixed: Guarded, line: str) -> None:
    status, answer = probe(prefixed, line)
    assert status == 401, answer[:300]
