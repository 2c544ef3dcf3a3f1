"""The worker's loop driven in-process over a socket pair (no gunicorn arbiter): what it
answers itself before any thread or Flask is involved."""

from __future__ import annotations

import contextlib
import dataclasses
import errno
import os
import socket
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from gunicorn.config import Config as GunicornConfig
from gunicorn.glogging import Logger

from pypid.config import defaults
from pypid.storage import FileIdentity
from pypid.web import create_app
from pypid.worker import PypidWorker, sending
from pypid.worker.connection import Conn, State
from tests.builders import make_wheel


class _Application:
    def __init__(self, services: Any) -> None:
        self.services = services


@pytest.fixture
def loop(tmp_path: Path) -> Iterator[tuple[PypidWorker, Conn, socket.socket]]:
    root = tmp_path / "packages"
    make_wheel(root, "demo", "1.0")
    config = defaults()
    config = dataclasses.replace(config, storage=dataclasses.replace(config.storage,
                                                                     root=str(root)))
    app = create_app(config)
    cfg = GunicornConfig()
    cfg.set("threads", 2)
    worker = PypidWorker.__new__(PypidWorker)
    worker.cfg, worker.log, worker.app, worker.wsgi = cfg, Logger(cfg), _Application(
        app.extensions["pypid"]), app
    worker.sockets, worker.alive, worker.nr, worker.max_requests = [], True, 0, 10**9
    worker.PIPE, worker.ppid = os.pipe(), os.getppid()
    worker._loop = lambda: None  # type: ignore[method-assign]  # run() only sets up
    worker._stop = lambda: None  # type: ignore[method-assign]
    worker.run()
    ours, theirs = socket.socketpair()
    ours.setblocking(False)
    theirs.settimeout(5)
    conn = Conn(ours, ("127.0.0.1", 1), ("127.0.0.1", 8000))
    worker.conns[conn.fd] = conn
    worker._watch(conn, time.monotonic())
    yield worker, conn, theirs
    worker.close_kept()
    worker.pool.shutdown(wait=False)
    theirs.close()
    ours.close()
    app.extensions["pypid"].index.close()


def exchange(worker: PypidWorker, conn: Conn, client: socket.socket, request: bytes) -> bytes:
    client.sendall(request)
    worker._readable(conn)
    worker._flush_all()
    return client.recv(65536)


def test_a_page_is_answered_by_the_loop(loop: tuple[PypidWorker, Conn, socket.socket]) -> None:
    worker, conn, client = loop
    answer = exchange(worker, conn, client, b"GET /simple/demo/ HTTP/1.1\r\nHost: x\r\n\r\n")
    assert answer.startswith(b"HTTP/1.1 200 OK\r\n")
    assert b"Links for demo" in answer
    assert worker.waiting_jobs == 0  # no thread was asked


def test_a_head_in_pieces_and_two_heads_in_one_read_are_each_answered_once(
        loop: tuple[PypidWorker, Conn, socket.socket]) -> None:
    worker, conn, client = loop
    head = b"GET /simple/demo/ HTTP/1.1\r\nHost: x\r\n\r\n"
    client.sendall(head[:20])
    worker._readable(conn)
    client.sendall(head[20:] + head)
    worker._readable(conn)
    worker._flush_all()
    answers = b""
    while answers.count(b"Links for demo") < 2:
        answers += client.recv(65536)
    assert answers.count(b"HTTP/1.1 200 OK\r\n") == 2
    assert conn.buf == b""


def test_threads_with_a_full_queue_get_503_not_more_queue(
        loop: tuple[PypidWorker, Conn, socket.socket]) -> None:
    worker, conn, client = loop
    worker.waiting_jobs = worker.max_waiting  # every thread busy, the queue full
    answer = exchange(worker, conn, client,
                      b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\n\r\n")
    assert answer.startswith(b"HTTP/1.1 503 Service Unavailable\r\n")
    assert b"\r\nRetry-After: 1\r\n" in answer and b"\r\nConnection: close\r\n" in answer
    assert client.recv(1) == b""  # closed
    assert worker.waiting_jobs == worker.max_waiting  # nothing was queued


@pytest.mark.parametrize(("head", "status"), [
    (b"GET /simple/ HTTP/1.1\r\nHost: x\nContent-Length: 5\r\n\r\nhello", b"400"),
    (b"GET /simple/ HTTP/1.1\r\nX: " + b"a" * 40_000, b"431"),
])
def test_heads_no_parser_should_judge_are_refused_and_closed(
        loop: tuple[PypidWorker, Conn, socket.socket], head: bytes, status: bytes) -> None:
    worker, conn, client = loop
    answer = exchange(worker, conn, client, head)
    assert answer.startswith(b"HTTP/1.1 " + status)
    assert b"\r\nConnection: close\r\n" in answer


def test_a_download_is_sent_by_the_loop(loop: tuple[PypidWorker, Conn, socket.socket],
                                        tmp_path: Path) -> None:
    worker, conn, client = loop
    wheel = next((tmp_path / "packages").glob("*.whl"))
    answer = download(loop, wheel)
    while len(answer) < len(wheel.read_bytes()):  # the rest is already in the socket
        answer += client.recv(65536)
    head, _, body = answer.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 200 OK\r\n")
    assert body == wheel.read_bytes()
    assert worker.waiting_jobs == 0 and conn.body is None  # no thread; the file is closed
    assert conn.in_selector  # waiting for the next request


def test_a_download_then_a_page_in_one_read_stay_in_the_selector(
        loop: tuple[PypidWorker, Conn, socket.socket], tmp_path: Path,
        monkeypatch: pytest.MonkeyPatch) -> None:
    """A file that leaves at once keeps its connection in the selector (no epoll_ctl
    out and back), and the request behind it is answered in the same turn, in order."""
    worker, conn, client = loop
    wheel = next((tmp_path / "packages").glob("*.whl"))
    left: list[int] = []
    monkeypatch.setattr(worker.selector, "unregister",
                        lambda sock: left.append(sock.fileno()))  # would leave the selector
    answers = exchange(worker, conn, client,
                       f"GET /packages/{wheel.name} HTTP/1.1\r\nHost: x\r\n\r\n"
                       "GET /simple/demo/ HTTP/1.1\r\nHost: x\r\n\r\n".encode())
    while b"Links for demo" not in answers:
        answers += client.recv(65536)
    first, _, rest = answers.partition(b"\r\n\r\n")
    assert first.startswith(b"HTTP/1.1 200 OK\r\n")
    assert rest[:wheel.stat().st_size] == wheel.read_bytes()
    assert rest[wheel.stat().st_size:].startswith(b"HTTP/1.1 200 OK\r\n")
    assert left == [] and conn.state is State.WAITING and conn not in worker.outbox
    assert worker.waiting_jobs == 0 and conn.body is None


def test_a_file_replaced_under_the_index_goes_to_a_thread_which_asks_for_a_retry(
        loop: tuple[PypidWorker, Conn, socket.socket], tmp_path: Path) -> None:
    """The loop does not stat a file before sending it: it checks the file it opened,
    and one that is not the indexed file any more is the app's to answer (503)."""
    worker, conn, client = loop
    wheel = next((tmp_path / "packages").glob("*.whl"))
    wheel.write_bytes(b"other bytes, not indexed yet")  # the watcher has not seen it
    answer = download(loop, wheel)
    while b"\r\n\r\n" not in answer:
        answer += client.recv(65536)
    assert answer.startswith(b"HTTP/1.1 503 Service Unavailable\r\n")
    assert b"\r\nRetry-After: 1\r\n" in answer
    assert b"other bytes" not in answer


def failing(code: int) -> Callable[..., int]:
    def fail(*_: object) -> int:
        raise OSError(code, os.strerror(code))
    return fail


def download(loop: tuple[PypidWorker, Conn, socket.socket], wheel: Path) -> bytes:
    return exchange(*loop, f"GET /packages/{wheel.name} HTTP/1.1\r\nHost: x\r\n\r\n".encode())


def test_a_file_that_runs_out_of_descriptors_gets_503(
        loop: tuple[PypidWorker, Conn, socket.socket], tmp_path: Path,
        monkeypatch: pytest.MonkeyPatch) -> None:
    worker = loop[0]
    monkeypatch.setattr(os, "open", failing(errno.EMFILE))
    answer = download(loop, next((tmp_path / "packages").glob("*.whl")))
    assert answer.startswith(b"HTTP/1.1 503 Service Unavailable\r\n")
    assert b"\r\nRetry-After: 1\r\n" in answer
    assert worker.accept_paused_until > time.monotonic()  # no new connections a moment


def whole_download(loop: tuple[PypidWorker, Conn, socket.socket], wheel: Path,
                   size: int) -> bytes:
    answer = download(loop, wheel)
    while b"\r\n\r\n" not in answer or (answer.startswith(b"HTTP/1.1 200")
                                         and len(answer.partition(b"\r\n\r\n")[2]) < size):
        answer += loop[2].recv(65536)
    return answer


def test_a_file_sent_again_is_sent_from_the_descriptor_kept_open(
        loop: tuple[PypidWorker, Conn, socket.socket], tmp_path: Path,
        monkeypatch: pytest.MonkeyPatch) -> None:
    worker = loop[0]
    wheel = next((tmp_path / "packages").glob("*.whl"))
    data = wheel.read_bytes()
    assert whole_download(loop, wheel, len(data)).endswith(data)
    assert not opened(wheel)  # sent once: not held (removed to free the disk, it frees it)
    assert whole_download(loop, wheel, len(data)).endswith(data)
    assert str(wheel) in worker.kept_open  # asked for again: kept
    monkeypatch.setattr(os, "open", failing(errno.EACCES))  # no open by path from now on
    for _ in range(3):
        answer = whole_download(loop, wheel, len(data))
        assert answer.startswith(b"HTTP/1.1 200 OK\r\n") and answer.endswith(data)
    assert loop[1].body is None and len(worker.kept_open) == 1  # each dup closed once sent


@pytest.mark.parametrize("change", ["rewritten in place", "removed"])
def test_a_file_changed_or_removed_is_not_sent_from_a_kept_descriptor(
        loop: tuple[PypidWorker, Conn, socket.socket], tmp_path: Path, change: str) -> None:
    """The index has not seen the change yet: the kept descriptor is checked as a new one
    is (identity, and still linked), dropped, and the app answers."""
    worker = loop[0]
    wheel = next((tmp_path / "packages").glob("*.whl"))
    data = wheel.read_bytes()
    for _ in range(2):  # asked for again: kept
        assert whole_download(loop, wheel, len(data)).endswith(data)
    assert opened(wheel)
    if change == "removed":
        wheel.unlink()
    else:
        wheel.write_bytes(data[::-1])
    answer = whole_download(loop, wheel, len(data))
    assert not answer.startswith(b"HTTP/1.1 200"), answer[:200]
    assert data not in answer and data[::-1] not in answer
    assert str(wheel) not in worker.kept_open
    assert not opened(wheel)  # closed: a removed file's space is not held


def opened(path: Path) -> list[str]:
    """This process's descriptors open on ``path`` (removed or not)."""
    found = []
    for fd in os.listdir("/proc/self/fd"):
        with contextlib.suppress(OSError):
            if os.readlink(f"/proc/self/fd/{fd}").startswith(str(path)):
                found.append(fd)
    return found


def test_kept_descriptors_are_bounded_and_closed_in_time(
        loop: tuple[PypidWorker, Conn, socket.socket], tmp_path: Path,
        monkeypatch: pytest.MonkeyPatch) -> None:
    worker = loop[0]
    monkeypatch.setattr(sending, "KEEP_OPEN", 2)
    paths = []
    for number in range(3):
        path = tmp_path / f"f{number}"
        path.write_bytes(b"x")
        fd = os.open(path, os.O_RDONLY)
        worker._keep_open(str(path), FileIdentity.of(os.fstat(fd)), fd)
        os.close(fd)
        paths.append(str(path))
    assert list(worker.kept_open) == paths[1:]  # the oldest went
    worker.close_kept(opened_before=time.monotonic() - 60)
    assert len(worker.kept_open) == 2  # none that old
    monkeypatch.setattr(sending, "SENT_ONCE", 2)
    for path in paths:
        worker._sent_again(path, FileIdentity(1, 1, 1), -1)  # sent once: remembered only
    assert list(worker.sent_once) == paths[1:]
    worker.close_kept(opened_before=time.monotonic() + 1)
    assert worker.kept_open == {} and worker.sent_once == {}
    for path in paths[1:]:
        fd = os.open(path, os.O_RDONLY)
        worker._keep_open(path, FileIdentity.of(os.fstat(fd)), fd)
        os.close(fd)
    worker._out_of_descriptors("test")  # out of descriptors: every kept one goes
    assert worker.kept_open == {}
    assert not any(opened(Path(path)) for path in paths)


def test_a_file_system_without_sendfile_gets_read_and_send(
        loop: tuple[PypidWorker, Conn, socket.socket], tmp_path: Path,
        monkeypatch: pytest.MonkeyPatch) -> None:
    worker, conn, client = loop
    wheel = next((tmp_path / "packages").glob("*.whl"))
    monkeypatch.setattr(os, "sendfile", failing(errno.EINVAL))
    answer = download(loop, wheel)
    for _ in range(100):  # bounded: the rest is sent as the loop turns
        if len(answer.partition(b"\r\n\r\n")[2]) >= wheel.stat().st_size:
            break
        if conn.state.name.startswith("SENDING"):
            worker._writable(conn)
        answer += client.recv(65536)
    assert answer.partition(b"\r\n\r\n")[2] == wheel.read_bytes()


def test_a_reader_that_stops_reading_waits_in_the_selector_until_its_deadline(
        loop: tuple[PypidWorker, Conn, socket.socket], tmp_path: Path) -> None:
    worker, conn, client = loop
    big = make_wheel(tmp_path / "packages", "big", "1.0", payload=os.urandom(4 << 20))
    assert worker.simple is not None
    worker.simple.index.refresh(big.name)
    download(loop, big)  # reads one piece, then nothing more
    assert conn.state is State.SENDING and conn.body is not None  # parked, no thread
    assert worker.waiting_jobs == 0
    opened = conn.body.fd
    worker._expire(time.monotonic() + worker.cfg.timeout + 1)
    assert conn.fd not in worker.conns
    with pytest.raises(OSError):
        os.fstat(opened)  # the file went with the connection
