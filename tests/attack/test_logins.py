"""Login attacks: floods get 429 without hashing, odd credentials get 401, never 500.

The client is the address the trusted proxy (loopback, the default) names in
X-Forwarded-For, so each test plays its own clients.
"""

from __future__ import annotations

import base64
import socket

import pytest

from pypid.auth import MAX_LOGIN_FAILURES
from tests.attack.conftest import LOGIN, PASSWORD, USER, basic
from tests.attack.harness import Guarded
from tests.integration.helpers import raw_request, request

pytestmark = pytest.mark.server


def get_simple(srv: Guarded, client: str, auth: dict[str, str]) -> int:
    headers = {"X-Forwarded-For": client, **auth}
    return request(srv.server.url("/simple/"), headers=headers).status


def test_failed_login_flood_gets_429(target: Guarded) -> None:
    for _ in range(MAX_LOGIN_FAILURES):
        assert get_simple(target, "198.51.100.7", basic(USER, "wrong")) == 401
    answer = request(target.server.url("/simple/"),
                     headers={"X-Forwarded-For": "198.51.100.7", **basic(USER, "wrong")})
    assert answer.status == 429, answer.describe()
    assert 1 <= int(answer.header("Retry-After") or 0) <= 60
    assert get_simple(target, "198.51.100.7", LOGIN) == 429  # blocked: no hash at all
    assert get_simple(target, "198.51.100.8", LOGIN) == 200  # another client is not
    assert get_simple(target, "198.51.100.7", {}) == 401  # no login: still asked for one


def test_rotating_clients_keep_memory_flat(target: Guarded) -> None:
    with socket.create_connection((target.server.host, target.server.port), timeout=30) as sock:
        wrong = basic(USER, "wrong")["Authorization"]
        for number in range(300):
            head = (f"GET /simple/ HTTP/1.1\r\nHost: x\r\nAuthorization: {wrong}\r\n"
                    f"X-Forwarded-For: 203.0.{number >> 8}.{number & 255}\r\n\r\n")
            sock.sendall(head.encode())
            seen = b""
            while b"\r\n\r\n" not in seen:
                seen += sock.recv(65536)
            assert seen.startswith(b"HTTP/1.1 401"), seen[:100]
            length = int(next(ln.split(b":")[1] for ln in seen.split(b"\r\n")
                              if ln.lower().startswith(b"content-length")))
            body = seen.split(b"\r\n\r\n", 1)[1]
            while len(body) < length:
                body += sock.recv(65536)
    assert get_simple(target, "203.0.0.0", LOGIN) == 200  # one failure each: not blocked


def _token(raw: bytes) -> str:
    return "Basic " + base64.b64encode(raw).decode()


ODD_CREDENTIALS = [
    ("nul-password", _token(f"{USER}:{PASSWORD}\0".encode())),
    ("6kb-password", _token(f"{USER}:".encode() + b"x" * 6000)),
    ("72-plus-password", _token(f"{USER}:{PASSWORD}".encode() + b"y" * 80)),
    ("non-utf8", _token(b"\xff\xfe:\xc3\x28")),
    ("no-colon", _token(USER.encode())),
    ("bad-base64", "Basic !!!not-base64***"),
    ("empty-basic", "Basic "),
    ("bearer", "Bearer abc.def"),
    ("newline-user", _token(b"ali\nce:" + PASSWORD.encode())),
    ("nul-user", _token(b"\0:" + PASSWORD.encode())),
]


@pytest.mark.parametrize(("case", "value"), ODD_CREDENTIALS, ids=[c[0] for c in ODD_CREDENTIALS])
def test_odd_credentials_get_401(target: Guarded, case: str, value: str) -> None:
    answer = request(target.server.url("/simple/"),
                     headers={"Authorization": value, "X-Forwarded-For": f"192.0.2.{len(case)}"})
    assert answer.status == 401, answer.describe()
    assert answer.header("WWW-Authenticate")


def test_raw_latin1_authorization_header_gets_401(target: Guarded) -> None:
    raw = b"GET /simple/ HTTP/1.1\r\nHost: x\r\nConnection: close\r\n" \
          b"X-Forwarded-For: 192.0.2.200\r\nAuthorization: Basic \xff\xfe\xfd\r\n\r\n"
    status, _ = raw_request(target.server.host, target.server.port, raw)
    assert status in (400, 401)
    assert get_simple(target, "192.0.2.201", LOGIN) == 200
