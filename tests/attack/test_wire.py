"""Wire attacks on the worker (issue 13): floods, slow clients, idle crowds, smuggling.

Each attack is bounded in connections, bytes and time, and runs against a real
``pypid serve`` under the harness's limits (few descriptors, an RSS watchdog).
The smuggling probes put a complete request (for proj0002's page) inside a body
and end with a canary request (proj0003's page, ``Connection: close``): the
smuggled page must never be answered, and no request gets two answers.
"""

from __future__ import annotations

import contextlib
import select
import time
from collections.abc import Iterator

import pytest

from pypid.worker.threads import HEAD_TIMEOUT
from tests.attack.conftest import GUARDED
from tests.attack.harness import MIB, Guarded, cpu_seconds, rss, start_guarded
from tests.attack.raw import Exchange, connect, exchange, split_answers
from tests.builders import make_sdist

pytestmark = pytest.mark.server
PROJECTS = 600  # /simple/ is then about 30 KB: pipelined copies add up fast
SMUGGLED = b"GET /simple/proj0002/ HTTP/1.1\r\nHost: x\r\n\r\n"
CANARY = b"GET /simple/proj0003/ HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
SMUGGLED_SHOWN, CANARY_SHOWN = b"Links for proj0002", b"Links for proj0003"
FORM = b"Content-Type: multipart/form-data; boundary=b\r\n"
HEALTH = b"GET /health HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"


def _serve(tmp: pytest.TempPathFactory, projects: int, **options: int) -> Guarded:
    work = tmp.mktemp("wire")
    root = work / "packages"
    root.mkdir()
    for number in range(projects):
        make_sdist(root, f"proj{number:04d}", "1.0")
    settings = {"server": {"workers": 1}, "auth": {"protect": []}}
    guarded = start_guarded(work, root, settings=settings, **options)
    GUARDED.append(guarded)  # the package's after-test RSS check covers it
    return guarded


@pytest.fixture(scope="module")
def open_target(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Guarded]:
    """Nothing protected (anyone may upload), 600 projects, one worker."""
    guarded = _serve(tmp_path_factory, PROJECTS)
    try:
        yield guarded
    finally:
        guarded.close()


@pytest.fixture
def small_target(tmp_path_factory: pytest.TempPathFactory,
                 request: pytest.FixtureRequest) -> Iterator[Guarded]:
    """A server of its own (the attack may break it); ``open_files`` by indirect param."""
    guarded = _serve(tmp_path_factory, 4, **getattr(request, "param", {}))
    try:
        yield guarded
    finally:
        guarded.close()


def send(srv: Guarded, data: bytes, **options: float) -> Exchange:
    return exchange(srv.server.host, srv.server.port, data, **options)


def health(srv: Guarded) -> int:
    """/health's status; 0 when it does not answer within the socket timeout (a hang)."""
    try:
        answer = send(srv, HEALTH)
    except (TimeoutError, ConnectionError):
        return 0
    if answer.finals and answer.finals[0].status == 503:
        assert "retry-after" in answer.finals[0].headers  # busy, and says when to come back
    return answer.finals[0].status if answer.finals else 0


def worker_of(srv: Guarded) -> int:
    workers = srv.workers()
    assert len(workers) == 1, workers
    return workers[0]


# -- floods and crowds


def test_pipelined_flood_keeps_the_worker_small(open_target: Guarded) -> None:
    """10 connections with a 4 KB receive window each pipeline 2,600 /simple/ requests
    in one write and read nothing: the worker must stop reading, not queue 800 MB."""
    srv, worker = open_target.server, worker_of(open_target)
    before = rss(worker)
    flood = b"GET /simple/ HTTP/1.1\r\nHost: x\r\n\r\n" * 2600
    socks = [connect(srv.host, srv.port, receive_window=4096) for _ in range(10)]
    peak = before
    try:
        unsent = {sock: memoryview(flood) for sock in socks}
        for sock in socks:
            sock.setblocking(False)
        stop_at = time.monotonic() + 4
        while time.monotonic() < stop_at:  # send what the server takes, for 4 s
            for sock, rest in list(unsent.items()):
                with contextlib.suppress(BlockingIOError):
                    unsent[sock] = rest[sock.send(rest):]
            peak = max(peak, rss(worker))
            time.sleep(0.05)
        socks[0].settimeout(10)
        data = b""
        while len(split_answers(data)[0]) < 3:  # still served, whole and in order
            chunk = socks[0].recv(65536)
            assert chunk, "closed during the flood"
            data += chunk
        assert [a.status for a in split_answers(data)[0][:3]] == [200, 200, 200]
        assert b"proj0599" in split_answers(data)[0][2].body
    finally:
        for sock in socks:
            sock.close()
    assert (peak - before) < 100 * MIB, f"worker grew {(peak - before) >> 20} MB"
    assert health(open_target) == 200


def test_slowloris_heads_are_cut_off(open_target: Guarded) -> None:
    """100 heads sent a byte a second never finish; each is closed after the head
    deadline, and /health answers meanwhile."""
    srv = open_target.server
    head = b"GET /simple/ HTTP/1.1\r\nHost: x\r\nX-Slow: " + b"a" * 500
    socks = [connect(srv.host, srv.port) for _ in range(100)]
    open_socks = set(socks)
    statuses = []
    started = time.monotonic()
    try:
        for sent in range(int(HEAD_TIMEOUT) + 20):  # one byte a second, bounded
            for sock in list(open_socks):
                try:
                    sock.send(head[sent:sent + 1])
                except OSError:
                    open_socks.discard(sock)
            readable, _, _ = select.select(list(open_socks), [], [], 1.0)
            for sock in readable:
                try:
                    data = sock.recv(4096)
                except OSError:
                    data = b""
                assert not data, f"an answer to half a head: {data[:100]!r}"
                open_socks.discard(sock)
            if sent in (3, 15):
                statuses.append(health(open_target))
            if not open_socks:
                break
        waited = time.monotonic() - started
    finally:
        for sock in socks:
            sock.close()
    assert statuses == [200, 200]
    assert not open_socks, f"{len(open_socks)} slow heads still open after {waited:.0f} s"


def test_slow_bodies_do_not_stop_health(open_target: Guarded) -> None:
    srv = open_target.server
    head = (b"POST / HTTP/1.1\r\nHost: x\r\n" + FORM + b"Content-Length: 1000000\r\n\r\n--b")
    socks = [connect(srv.host, srv.port) for _ in range(80)]
    try:
        for sock in socks:
            sock.sendall(head)
        for _ in range(2):  # a byte every 2 s
            time.sleep(2)
            for sock in socks:
                sock.sendall(b"-")
        status = health(open_target)
    finally:
        for sock in socks:
            sock.close()
    assert status in (200, 503), "/health did not answer"


@pytest.mark.parametrize("small_target", [{"open_files": 2048}], indirect=True)
def test_many_idle_connections_leave_room_for_health(small_target: Guarded) -> None:
    """800 idle connections (half after one kept-alive request) and /health answers."""
    srv = small_target.server
    socks = []
    try:
        for number in range(800):
            sock = connect(srv.host, srv.port)
            socks.append(sock)
            if number % 2:
                sock.sendall(b"GET /simple/proj0001/ HTTP/1.1\r\nHost: x\r\n\r\n")
                data = b""
                while not split_answers(data)[0]:
                    chunk = sock.recv(65536)
                    assert chunk, f"connection {number} closed"
                    data += chunk
                assert split_answers(data)[0][0].status == 200
        assert health(small_target) == 200
    finally:
        for sock in socks:
            sock.close()
    assert health(small_target) == 200


def test_running_out_of_descriptors_neither_spins_nor_sticks(small_target: Guarded) -> None:
    """More connections than the worker's 256 descriptors: it must wait, not spin, and
    serve again once they close."""
    srv, worker = small_target.server, worker_of(small_target)
    socks = []
    try:
        for _ in range(320):  # those the worker cannot accept wait in the backlog
            socks.append(connect(srv.host, srv.port))
        time.sleep(1)  # the worker accepts what it can
        used = cpu_seconds(worker)
        time.sleep(2)
        used = cpu_seconds(worker) - used
    finally:
        for sock in socks:
            sock.close()
    assert health(small_target) == 200
    assert used < 0.5, f"the worker used {used:.2f} s of CPU in 2 s while out of descriptors"


# -- smuggling probes: one answer per request, nothing served out of a body


def chunked(data: bytes) -> bytes:
    return b"%x\r\n%s\r\n0\r\n\r\n" % (len(data), data)


def cl(data: bytes) -> bytes:
    return b"Content-Length: %d\r\n" % len(data)


REFUSED = {  # framing no reader can trust: one error, then close; nothing more
    "cl-te": b"POST / HTTP/1.1\r\nHost: x\r\n" + cl(b"0\r\n\r\n" + SMUGGLED)
             + b"Transfer-Encoding: chunked\r\n\r\n0\r\n\r\n" + SMUGGLED,
    "te-cl": b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\n"
             b"Transfer-Encoding: chunked\r\n\r\n" + chunked(SMUGGLED),
    "duplicate-cl": b"GET /simple/proj0001/ HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\n"
                    + cl(SMUGGLED) + b"\r\n" + SMUGGLED,
    "te-space-before-colon": b"POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding : chunked\r\n"
                             + cl(chunked(SMUGGLED)) + b"\r\n" + chunked(SMUGGLED),
    "folded-cl": b"GET /simple/proj0001/ HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\n "
                 + b"%d\r\n\r\n" % len(SMUGGLED) + SMUGGLED,
    "garbage-chunk-size": b"POST / HTTP/1.1\r\nHost: x\r\n" + FORM
                          + b"Transfer-Encoding: chunked\r\n\r\n5\r\n--b\r\n\r\nzz\r\n" + SMUGGLED,
    "chunked-http-1.0": b"POST / HTTP/1.0\r\nHost: x\r\nConnection: keep-alive\r\n"
                        b"Transfer-Encoding: chunked\r\n\r\n" + chunked(SMUGGLED),
}


@pytest.mark.parametrize("probe", list(REFUSED.values()), ids=list(REFUSED))
def test_untrustworthy_framing_gets_one_error_and_a_close(open_target: Guarded,
                                                          probe: bytes) -> None:
    seen = send(open_target, probe + CANARY)
    assert seen.closed
    assert [a.status >= 400 for a in seen.finals] == [True], seen
    assert not seen.shows(SMUGGLED_SHOWN) and not seen.shows(CANARY_SHOWN)
    assert not seen.rest, seen.rest[:200]


ANSWERED = {  # odd but readable: answered once each (or refused), never out of a body
    "obs-fold": b"GET /simple/proj0001/ HTTP/1.1\r\nHost: x\r\nX-A: a\r\n b\r\n\r\n",
    "bare-lf-line": b"GET /simple/proj0001/ HTTP/1.1\r\nHost: x\n" + cl(SMUGGLED) + b"\r\n"
                    + SMUGGLED,
    "bare-lf-head": b"GET /simple/proj0001/ HTTP/1.1\nHost: x\n\n",
    "absolute-form": b"GET http://x/simple/proj0001/ HTTP/1.1\r\nHost: x\r\n\r\n",
    "absolute-form-other-host": b"GET http://evil.example/simple/proj0001/ HTTP/1.1\r\n"
                                b"Host: x\r\n\r\n",
    "http-1.0-keep-alive": b"GET /simple/proj0001/ HTTP/1.0\r\nConnection: keep-alive\r\n\r\n",
    "expect-on-get": b"GET /simple/proj0001/ HTTP/1.1\r\nHost: x\r\nExpect: 100-continue\r\n\r\n",
    "expect-upload": b"POST / HTTP/1.1\r\nHost: x\r\nExpect: 100-continue\r\n" + FORM
                     + cl(b"--b\r\n" + SMUGGLED + b"--b--\r\n") + b"\r\n--b\r\n" + SMUGGLED
                     + b"--b--\r\n",
    "chunked-get": b"GET /simple/proj0001/ HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked"
                   b"\r\n\r\n" + chunked(SMUGGLED),
    "cl-get": b"GET /simple/proj0001/ HTTP/1.1\r\nHost: x\r\n" + cl(SMUGGLED) + b"\r\n"
              + SMUGGLED,
    "upload-bad-form": b"POST / HTTP/1.1\r\nHost: x\r\n" + FORM + cl(SMUGGLED) + b"\r\n"
                       + SMUGGLED,
}


@pytest.mark.parametrize("probe", [pytest.param(probe, id=name)
                                   for name, probe in ANSWERED.items()])
def test_odd_requests_get_one_answer_each(open_target: Guarded, probe: bytes) -> None:
    seen = send(open_target, probe + CANARY)
    assert seen.closed
    assert not seen.rest, seen.rest[:200]
    assert not seen.shows(SMUGGLED_SHOWN), "a request in a body was served"
    assert len([a for a in seen.answers if a.status < 200]) <= 1  # one 100 Continue at most
    finals = seen.finals
    assert 1 <= len(finals) <= 2, seen  # the probe's, and perhaps the canary's
    if len(finals) == 2:
        assert CANARY_SHOWN in finals[1].body and CANARY_SHOWN not in finals[0].body


def test_http_1_0_without_keep_alive_is_closed_after_one_answer(open_target: Guarded) -> None:
    seen = send(open_target, b"GET /simple/proj0001/ HTTP/1.0\r\n\r\n" + CANARY)
    assert seen.closed and not seen.rest
    assert [a.status for a in seen.finals] == [200]
    assert b"Links for proj0001" in seen.finals[0].body


def test_a_lone_bare_lf_head_is_answered_or_closed_not_held(open_target: Guarded) -> None:
    """Nothing follows the head: it must not wait for a CRLF that never comes."""
    seen = send(open_target, b"GET /simple/proj0001/ HTTP/1.1\nHost: x\n\n",
                timeout=HEAD_TIMEOUT + 5)
    assert seen.closed, "held open"
    assert len(seen.finals) <= 1 and not seen.rest


def test_a_401_to_a_broken_chunked_upload_is_the_only_answer(target: Guarded) -> None:
    """Uploads need a login here: the app answers 401 without reading the body."""
    probe = (b"POST / HTTP/1.1\r\nHost: x\r\n" + FORM + b"Transfer-Encoding: chunked\r\n\r\n"
             b"5\r\n--b\r\n\r\nzz-not-a-size\r\n" + b"GET /health HTTP/1.1\r\nHost: x\r\n\r\n")
    seen = exchange(target.server.host, target.server.port, probe)
    assert seen.closed
    assert [a.status for a in seen.finals] == [401], [a.status for a in seen.finals]
    assert not seen.rest, seen.rest[:200]
