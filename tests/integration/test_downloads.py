"""Downloads sent from the worker's loop (sendfile, the connection waiting in the selector
while its socket is full): whole bodies under parallel load, slow readers that hold no
thread, Range, HEAD, pipelining after a file, and files changed while they are sent."""

from __future__ import annotations

import contextlib
import hashlib
import os
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import pytest

from pypid.worker.sending import KEEP_OPEN_SECONDS
from tests.builders import make_sdist, make_wheel
from tests.integration.harness import start_server, stop
from tests.integration.helpers import Response, Server, get, request, until, worker_pids
from tests.integration.test_worker import Wire

pytestmark = pytest.mark.server

BIG = 2 * 1024 * 1024  # far more than a socket with a 4 KB receive window takes at once
SLOW_READERS = 40  # more than a worker's 32 threads


@dataclass
class Files:
    server: Server
    root: Path
    big: Path
    small: Path
    moving: Path  # replaced by a test
    shrinking: Path  # truncated by a test


@pytest.fixture(scope="module")
def files(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Files]:
    base = tmp_path_factory.mktemp("downloads")
    root = base / "packages"
    big = make_wheel(root, "big", "1.0", payload=os.urandom(BIG))
    small = make_sdist(root, "small", "1.0")
    moving = make_wheel(root, "moving", "1.0", payload=os.urandom(BIG))
    # more than the kernel may queue for a socket (tcp_wmem's usual maximum: 4 MB)
    shrinking = make_wheel(root, "shrinking", "1.0", payload=os.urandom(4 * BIG))
    server = start_server(base / "srv", root, settings={"server": {"workers": 1}})
    try:
        yield Files(server, root, big, small, moving, shrinking)
    finally:
        stop(server.proc)


def download_request(name: str, extra: str = "", method: str = "GET") -> bytes:
    return f"{method} {{P}}/packages/{name} HTTP/1.1\r\nHost: t\r\n{extra}\r\n".encode()


def fetch(server: Server, name: str) -> bytes:
    reply = request(server.url(f"/packages/{name}"), timeout=30)
    assert reply.status == 200, reply.describe()
    return reply.body


def test_many_parallel_downloads_are_whole(files: Files) -> None:
    wanted = {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in (files.big, files.small)}
    names = [files.big.name, files.small.name] * 24
    with ThreadPoolExecutor(max_workers=48) as pool:
        got = list(pool.map(lambda n: hashlib.sha256(fetch(files.server, n)).hexdigest(), names))
    assert got == [wanted[n] for n in names]


def test_slow_readers_hold_no_thread(files: Files) -> None:
    """40 clients with a tiny receive window ask for the big file and read nothing: more
    than the worker has threads. Pages (the loop's) and the home page (a thread's, Flask)
    are still answered; then every slow reader gets its whole file."""
    readers = [Wire(files.server, receive_window=4096) for _ in range(SLOW_READERS)]
    try:
        for reader in readers:
            reader.sock.settimeout(30)
            reader.send(download_request(files.big.name))
        for _ in range(3):  # each on a fresh connection, within the socket timeout
            assert get(files.server.url("/simple/small/")).status == 200
            assert get(files.server.url("/")).status == 200
        wanted = files.big.read_bytes()
        for reader in readers:
            status, headers, body = reader.response()
            assert status == 200
            assert headers["content-length"] == str(len(wanted))
            assert body == wanted
    finally:
        for reader in readers:
            reader.close()


def test_range_head_and_pipelined_requests_after_a_file(files: Files) -> None:
    data = files.big.read_bytes()
    wire = Wire(files.server)
    try:
        wire.send(download_request(files.big.name, "Range: bytes=1000-1999\r\n")
                  + download_request(files.big.name, method="HEAD")
                  + download_request(files.small.name)
                  + b"GET {P}/simple/small/ HTTP/1.1\r\nHost: t\r\n\r\n"
                  + download_request(files.big.name, "Range: bytes=-10\r\n"))
        status, headers, body = wire.response()
        assert (status, body) == (206, data[1000:2000])
        assert headers["content-range"] == f"bytes 1000-1999/{len(data)}"
        status, headers, body = wire.response(head_only=True)
        assert (status, headers["content-length"]) == (200, str(len(data)))
        assert wire.response()[2] == files.small.read_bytes()
        status, _, body = wire.response()
        assert status == 200 and b"Links for small" in body
        assert wire.response()[:3:2] == (206, data[-10:])
    finally:
        wire.close()


def slow_download(server: Server, path: Path) -> tuple[Wire, bytes]:
    """A client with a tiny receive window that asks for ``path``; its first bytes."""
    wire = Wire(server, receive_window=4096)
    wire.sock.settimeout(30)
    wire.send(download_request(path.name))
    first = wire.sock.recv(1024)  # the download has started
    assert first.startswith(b"HTTP/1.1 200")
    return wire, first


def test_a_file_replaced_mid_download_sends_the_old_one_whole(files: Files) -> None:
    """A file renamed over (the usual way to replace one) is another inode: the download
    that started goes on with the bytes it began with."""
    path = files.moving
    old = path.read_bytes()
    wire, wire.pending = slow_download(files.server, path)
    try:
        replacement = files.root / ".replacement"
        replacement.write_bytes(b"x" * 1000)
        os.replace(replacement, path)
        status, _, body = wire.response()
        assert (status, body) == (200, old)
    finally:
        wire.close()


def test_a_file_cut_short_mid_download_ends_the_connection(files: Files) -> None:
    """Truncated in place: the body cannot be finished, so the connection closes before
    its length: the client sees it is short. (What the kernel had already queued from past
    the cut may be zeros: sendfile sends the file's pages, not a copy.)"""
    path = files.shrinking
    old = path.read_bytes()
    wire, received = slow_download(files.server, path)
    try:
        cut = BIG // 2
        os.truncate(path, cut)
        for _ in range(100_000):  # bounded: 8 MB in pieces of at least one byte a read
            try:
                chunk = wire.sock.recv(65536)
            except ConnectionResetError:
                break
            if not chunk:
                break
            received += chunk
        else:
            pytest.fail("the connection stayed open")
        body = received.partition(b"\r\n\r\n")[2]
        assert len(body) < len(old)
        assert body[:cut] == old[:min(cut, len(body))]
    finally:
        wire.close()


def worker_descriptors_on(server: Server, path: Path) -> list[str]:
    """The descriptors the server's workers hold open on ``path`` (removed or not)."""
    found = []
    for pid in worker_pids(server):
        for fd in os.listdir(f"/proc/{pid}/fd"):
            with contextlib.suppress(OSError):
                if os.readlink(f"/proc/{pid}/fd/{fd}").startswith(str(path)):
                    found.append(f"{pid}/{fd}")
    return found


def test_a_hot_file_kept_open_follows_a_replacement_and_a_removal(
        tmp_path: Path) -> None:
    """A small file asked for again is sent from a descriptor the worker keeps open: after
    it is renamed over, the new bytes are sent (never the old under the new headers, nor
    the new under the old), and once it is removed it is not served and no descriptor
    holds its space for long."""
    root = tmp_path / "packages"
    hot = make_wheel(root, "hot", "1.0", payload=b"first" * 4000)
    server = start_server(tmp_path / "srv", root, settings={"server": {"workers": 1}})
    try:
        url = server.url(f"/packages/{hot.name}")
        old = hot.read_bytes()
        for _ in range(5):
            reply = get(url)
            assert (reply.status, reply.body) == (200, old)
        assert worker_descriptors_on(server, hot), "the worker keeps the hot file open"
        new = make_wheel(tmp_path / "next", "hot", "1.0", payload=b"second" * 5000)
        os.replace(new, hot)
        new_bytes = hot.read_bytes()

        def consistent(reply: Response) -> bool:
            assert reply.status in (200, 503), reply.describe()
            if reply.status == 200:
                etag = reply.headers["ETag"].strip('"')
                assert reply.body in (old, new_bytes)
                assert etag == hashlib.sha256(reply.body).hexdigest()
                return reply.body == new_bytes
            return False

        until(lambda: consistent(get(url)), "the replacement was never sent")
        hot.unlink()
        until(lambda: get(url).status == 404, "the removed file was still served")
        deadline = time.monotonic() + KEEP_OPEN_SECONDS + 3
        while worker_descriptors_on(server, hot):
            assert time.monotonic() < deadline, worker_descriptors_on(server, hot)
            time.sleep(0.1)
    finally:
        stop(server.proc)
