"""pypid's gunicorn worker on the wire: hot requests answered in its loop, the rest in
threads, and nothing lost between the two (pipelining, split heads, bodies, closes)."""

from __future__ import annotations

import http.client
import socket
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.builders import make_sdist
from tests.integration.harness import start_server, stop
from tests.integration.helpers import Corpus, Server, get

pytestmark = pytest.mark.server


class Wire:
    """A raw HTTP/1.1 connection that reads responses one by one (Content-Length framed)."""

    def __init__(self, server: Server, receive_window: int | None = None) -> None:
        self.prefix = server.prefix
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        if receive_window is not None:  # before connect: it sets the advertised window
            self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, receive_window)
        self.sock.settimeout(10)
        self.sock.connect((server.host, server.port))
        self.pending = b""

    def send(self, data: bytes) -> None:
        self.sock.sendall(data.replace(b"{P}", self.prefix.encode()))

    def response(self, head_only: bool = False) -> tuple[int, dict[str, str], bytes]:
        while b"\r\n\r\n" not in self.pending:
            chunk = self.sock.recv(65536)
            assert chunk, f"connection closed; got {self.pending!r}"
            self.pending += chunk
        head, _, self.pending = self.pending.partition(b"\r\n\r\n")
        lines = head.decode("latin-1").split("\r\n")
        status = int(lines[0].split()[1])
        headers = {}
        for line in lines[1:]:
            name, _, value = line.partition(":")
            headers[name.strip().lower()] = value.strip()
        length = 0 if head_only or status == 304 else int(headers.get("content-length", "0"))
        while len(self.pending) < length:
            chunk = self.sock.recv(65536)
            assert chunk, "connection closed inside a body"
            self.pending += chunk
        body, self.pending = self.pending[:length], self.pending[length:]
        return status, headers, body

    def closed(self) -> bool:
        """Does the server close the connection (EOF) within the socket timeout?"""
        try:
            return self.pending == b"" and self.sock.recv(1) == b""
        except ConnectionResetError:
            return True

    def close(self) -> None:
        self.sock.close()


@pytest.fixture
def wire(server: Server) -> Iterator[Wire]:
    conn = Wire(server)
    yield conn
    conn.close()


def page(name: str, extra: str = "") -> bytes:
    return f"GET {{P}}/simple/{name}/ HTTP/1.1\r\nHost: t\r\n{extra}\r\n".encode()


def test_pipelined_requests_hot_and_not_come_back_in_order(wire: Wire, server: Server) -> None:
    expected_app = get(server.url("/simple/app/")).body
    wire.send(page("app")
              + b"GET {P}/simple/app/ HTTP/1.1\r\nHost: t\r\nX: 1\r\nX: 1\r\n\r\n"  # a thread's
              + page("nothing-here")  # a 404 from Flask
              + page("lib") + page("app"))
    statuses = []
    bodies = []
    for _ in range(5):
        status, _, body = wire.response()
        statuses.append(status)
        bodies.append(body)
    assert statuses == [200, 200, 404, 200, 200]
    assert bodies[0] == bodies[4] == expected_app
    assert b"Links for lib" in bodies[3]


def test_answers_the_client_is_slow_to_take_keep_their_order(server: Server) -> None:
    """A client with a tiny receive window pipelines 4,000 pages (6 MB), one request for a
    thread, and one more page: what the socket cannot take goes out from a thread,
    and the thread's answer and the last page follow it in order."""
    expected_app = get(server.url("/simple/app/")).body
    slow = Wire(server, receive_window=4096)
    try:
        slow.send(page("app") * 4000
                  + b"GET {P}/simple/lib/ HTTP/1.1\r\nHost: t\r\nX: 1\r\nX: 1\r\n\r\n"
                  + page("sdonly"))
        time.sleep(0.3)  # the server fills the window and waits
        for _ in range(4000):
            status, _, body = slow.response()
            assert (status, body) == (200, expected_app)
        status, _, body = slow.response()
        assert status == 200 and b"Links for lib" in body
        status, _, body = slow.response()
        assert status == 200 and b"Links for sdonly" in body
    finally:
        slow.close()


def test_a_head_split_across_packets_is_answered(wire: Wire) -> None:
    whole = page("app", "Accept: text/html\r\n")
    for i in range(0, len(whole), 7):
        wire.send(whole[i:i + 7])
        time.sleep(0.01)
    status, headers, body = wire.response()
    assert status == 200
    assert headers["content-type"].startswith("text/html")
    assert b"Links for app" in body


def test_connection_close_is_honoured(wire: Wire) -> None:
    wire.send(page("app", "Connection: close\r\n"))
    status, headers, _ = wire.response()
    assert status == 200
    assert headers["connection"] == "close"
    assert wire.closed()


def test_keep_alive_survives_a_request_served_by_a_thread(wire: Wire) -> None:
    wire.send(b"GET {P}/ HTTP/1.1\r\nHost: t\r\n\r\n")  # the home page: Flask
    assert wire.response()[0] == 200
    wire.send(page("app"))
    assert wire.response()[0] == 200
    wire.send(b"GET {P}/packages/no-such-1.0.tar.gz HTTP/1.1\r\nHost: t\r\n\r\n")
    assert wire.response()[0] == 404
    wire.send(page("lib"))
    assert wire.response()[0] == 200


def test_a_body_on_a_get_is_not_taken_for_the_next_request(wire: Wire) -> None:
    # Content-Length makes it a request for gunicorn's parser; its body must be skipped.
    smuggled = b"GET {P}/simple/lib/ HTTP/1.1\r\nHost: t\r\n\r\n"
    wire.send(b"GET {P}/simple/app/ HTTP/1.1\r\nHost: t\r\nContent-Length: "
              + str(len(smuggled.replace(b"{P}", wire.prefix.encode()))).encode()
              + b"\r\n\r\n" + smuggled + page("sdonly"))
    first = wire.response()
    second = wire.response()
    assert first[0] == second[0] == 200
    assert b"Links for app" in first[2]
    assert b"Links for sdonly" in second[2]  # not lib: the body was a body


def test_head_of_a_page_has_its_length_and_no_body(wire: Wire, server: Server) -> None:
    full = get(server.url("/simple/app/")).body
    wire.send(b"HEAD {P}/simple/app/ HTTP/1.1\r\nHost: t\r\n\r\n" + page("app"))
    status, headers, _ = wire.response(head_only=True)
    assert status == 200
    assert int(headers["content-length"]) == len(full)
    assert wire.response()[2] == full  # the next response starts right after the head


def test_http_1_0_is_answered_and_closed(wire: Wire) -> None:
    wire.send(b"GET {P}/simple/app/ HTTP/1.0\r\n\r\n")
    status, _, body = wire.response()
    assert status == 200
    assert b"Links for app" in body
    assert wire.closed()


def test_an_oversized_head_gets_an_error_not_a_hang(wire: Wire) -> None:
    wire.send(b"GET {P}/simple/app/ HTTP/1.1\r\nHost: t\r\nX-Big: " + b"a" * 20000 + b"\r\n\r\n")
    status, _, _ = wire.response()
    assert status in (400, 431)


def test_malformed_header_lines_go_to_gunicorn_which_refuses_them(wire: Wire) -> None:
    wire.send(b"GET {P}/simple/app/ HTTP/1.1\r\nHost: t\r\nBad Header: x\r\n\r\n")
    assert wire.response()[0] == 400


def test_repeated_headers_are_answered_like_any_other(wire: Wire) -> None:
    wire.send(page("app", "Accept: text/html\r\nAccept: application/vnd.pypi.simple.v1+json\r\n"))
    status, headers, _ = wire.response()
    assert status == 200
    assert headers["content-type"]  # gunicorn joined them; negotiation picked one


def test_a_download_is_whole_and_the_connection_goes_on(wire: Wire, corpus: Corpus) -> None:
    dist = next(d for d in corpus.dists if d.path.name.endswith(".whl"))
    wanted = dist.path.read_bytes()
    request = f"GET {{P}}/packages/{dist.path.name} HTTP/1.1\r\nHost: t\r\n\r\n".encode()
    wire.send(request + request)
    for _ in range(2):
        status, headers, body = wire.response()
        assert status == 200
        assert body == wanted
        assert headers["content-type"] == "application/octet-stream"


def test_pages_answer_while_every_thread_waits_on_a_slow_upload(tmp_path: Path) -> None:
    """40 uploads that stall mid-body hold all 32 threads of the one worker; index pages
    are answered in the worker's loop all the same."""
    root = tmp_path / "packages"
    root.mkdir()
    make_sdist(root, "small", "1.0")
    server = start_server(tmp_path / "srv", root, settings={"server": {"workers": 1}})
    stalled: list[socket.socket] = []
    try:
        for _ in range(40):
            sock = socket.create_connection((server.host, server.port), timeout=10)
            sock.sendall(f"POST {server.prefix}/ HTTP/1.1\r\nHost: t\r\n"
                         "Content-Type: multipart/form-data; boundary=b\r\n"
                         "Content-Length: 100000\r\n\r\n--b\r\n".encode())
            stalled.append(sock)
        time.sleep(0.5)  # let them reach the threads
        client = http.client.HTTPConnection(server.host, server.port, timeout=5)
        try:
            client.request("GET", f"{server.prefix}/simple/small/")
            assert client.getresponse().status == 200  # no timeout: the loop answered
        finally:
            client.close()
    finally:
        for sock in stalled:
            sock.close()
        stop(server.proc)


def test_a_refused_request_with_a_body_announces_the_close(server: Server) -> None:
    """The app may stop reading a refused body anywhere: the answer says
    ``Connection: close`` and the connection ends, so nothing after it is taken as a
    request (and no client reuses a connection about to be closed)."""
    wire = Wire(server)
    try:
        body = b"x" * 100
        wire.send(b"POST {P}/ HTTP/1.1\r\nHost: t\r\nContent-Type: text/plain\r\n"
                  b"Content-Length: 100\r\n\r\n" + body
                  + page("app"))
        status, headers, _ = wire.response()
        assert status in (400, 401)
        assert headers["connection"] == "close"
        assert wire.closed()
    finally:
        wire.close()
