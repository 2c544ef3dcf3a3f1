"""The worker's loop and the Flask views answer alike: every kind of request the loop
answers is sent twice on the wire, once as a plain head (the loop's) and once with a
repeated header, which makes it gunicorn's and Flask's; status, headers (Date aside)
and body must be the same, byte for byte."""

from __future__ import annotations

import base64
import os
import socket
from collections.abc import Iterator

import pytest

from pypid.auth import Htpasswd
from tests.integration.harness import STARTED, start_server, stop
from tests.integration.helpers import Corpus, Server, sha256, wheel_metadata

pytestmark = pytest.mark.server

FLASK_MARK = "X-Through-Flask: 1\r\nX-Through-Flask: 1\r\n"  # a repeated header: not plain
LOGIN = "Authorization: Basic " + base64.b64encode(b"alice:s3cret-pw").decode() + "\r\n"


def exchange(server: Server, request: str) -> tuple[str, list[tuple[str, str]], bytes]:
    """Send one request (``{P}`` is the URL prefix) on its own connection; read the answer."""
    raw = request.replace("{P}", server.prefix).encode("latin-1")
    with socket.create_connection((server.host, server.port), timeout=10) as sock:
        sock.sendall(raw)
        data = b""
        while b"\r\n\r\n" not in data:
            chunk = sock.recv(65536)
            assert chunk, f"no answer to {request!r}"
            data += chunk
        head, _, body = data.partition(b"\r\n\r\n")
        lines = head.decode("latin-1").split("\r\n")
        parts = (line.partition(":") for line in lines[1:])
        headers = [(name.strip(), value.strip()) for name, _, value in parts]
        length = int(dict((n.lower(), v) for n, v in headers).get("content-length", "0"))
        if raw.startswith(b"HEAD") or " 304 " in lines[0]:
            length = 0
        while len(body) < length:
            chunk = sock.recv(65536)
            assert chunk, "closed inside a body"
            body += chunk
    return lines[0], [(n, v) for n, v in headers if n.lower() != "date"], body


def both_ways(server: Server, method: str, target: str, headers: str = "") -> None:
    plain = f"{method} {{P}}{target} HTTP/1.1\r\nHost: t\r\n{headers}Connection: close\r\n\r\n"
    marked = plain.replace("Host: t\r\n", "Host: t\r\n" + FLASK_MARK)
    loop_answer = exchange(server, plain)
    flask_answer = exchange(server, marked)
    assert loop_answer == flask_answer, f"{method} {target} {headers!r}"


def cases(corpus: Corpus) -> Iterator[tuple[str, str, str]]:
    wheel = next(d for p in sorted(corpus.projects) for d in corpus.project(p) if d.is_wheel)
    project = wheel.normalized
    page = f"/simple/{project}/"
    for accept in ("", "Accept: application/vnd.pypi.simple.v1+json\r\n",
                   "Accept: text/html\r\n", "Accept: image/png\r\n"):
        for encoding in ("", "Accept-Encoding: gzip\r\n"):
            yield "GET", page, accept + encoding
            yield "GET", "/simple/", accept + encoding
    yield "HEAD", page, ""
    yield "GET", page + "?format=application/vnd.pypi.simple.v1+json", ""
    yield "GET", page, "If-None-Match: *\r\n"
    yield "GET", f"/simple/{project.upper()}/", ""
    yield "GET", f"/simple/{project}", ""
    yield "GET", "/simple", ""
    yield "GET", "/simple/no-such-project/", ""
    yield "GET", "/simple/not..valid/", ""
    yield "GET", "/simple/a/b/", ""
    files = f"/packages/{wheel.filename}"
    yield "GET", files, ""
    yield "HEAD", files, ""
    yield "GET", files, f'If-None-Match: "{sha256(wheel.data())}"\r\n'
    yield "GET", files, "If-Modified-Since: Fri, 01 Jan 2100 00:00:00 GMT\r\n"
    yield "GET", files, "Range: bytes=0-9\r\n"
    yield "GET", files, "Range: bytes=-22\r\n"
    yield "GET", files, "Range: bytes=99999999-\r\n"
    yield "GET", files + ".metadata", ""
    yield "GET", files + ".metadata", f'If-None-Match: "{sha256(wheel_metadata(wheel.path))}"\r\n'
    yield "GET", "/packages/no-such-1.0.tar.gz", ""


@pytest.fixture(scope="module")
def protected(tmp_path_factory: pytest.TempPathFactory, corpus: Corpus) -> Iterator[Server]:
    work = tmp_path_factory.mktemp("protected")
    htpasswd = work / "htpasswd"
    os.environ.setdefault("PYPID_BCRYPT_ROUNDS", "4")
    Htpasswd(htpasswd).add("alice", "s3cret-pw")
    srv = start_server(work, corpus.root, url_prefix="/pypi", settings={
        "auth": {"htpasswd": str(htpasswd), "protect": ["upload", "download", "list"]}})
    STARTED.append(srv)
    yield srv
    stop(srv.proc)


def test_loop_and_flask_answer_alike(server: Server, corpus: Corpus) -> None:
    for _ in range(2):  # the first round fills caches (pages, .metadata) the loop reads from
        for method, target, headers in cases(corpus):
            both_ways(server, method, target, headers)


def test_loop_and_flask_answer_alike_under_a_prefix(server_factory, corpus: Corpus) -> None:  # type: ignore[no-untyped-def]
    prefixed = server_factory(url_prefix="/pypi", upstream="redirect")
    for method, target, headers in cases(corpus):
        both_ways(prefixed, method, target, headers)


def test_protected_reads_alike_with_and_without_a_login(protected: Server, corpus: Corpus) -> None:
    for method, target, headers in cases(corpus):
        both_ways(protected, method, target, headers)
        both_ways(protected, method, target, headers + LOGIN)


