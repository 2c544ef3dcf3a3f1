"""A node whose bucket goes away: pages and the files it holds a copy of are still
served, changes are refused with 503 and a reason, /health says "degraded", and all of
it comes back by itself when the store does. The store is this test's own SeaweedFS,
killed and started again on the same ports and data."""

from __future__ import annotations

import contextlib
import json
import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.builders import make_wheel
from tests.integration.harness import stop
from tests.integration.helpers import Server, get
from tests.integration.s3nodes import Cluster, call, running_nodes
from tests.integration.test_s3_nodes import LIVE, files_on, within
from tests.integration.test_systemd import Notifications
from tests.integration.test_uploads import BOUNDARY, form_for, multipart
from tests.s3store import start_store, stop_store

pytestmark = pytest.mark.server
DEADLINE = 90.0  # the node's client retries, then its health probe: bounded waits


@contextlib.contextmanager
def nodes_on_own_store(work: Path, count: int) -> Iterator[Cluster]:
    """``count`` nodes on a store of their own (which a test may stop and start again:
    ``restart_store``); each has one worker: a second one that had not read an upload's
    log line before the store went away could not learn of it until the store is back
    (as designed)."""
    store = start_store(work / "store")
    cluster: Cluster | None = None
    try:
        with running_nodes(store, work, count, prefix="down", workers=1) as cluster:
            yield cluster
    finally:
        stop_store(cluster.store if cluster is not None else store)


def restart_store(cluster: Cluster) -> None:
    """The stopped store back, on its ports and data."""
    cluster.store = start_store(cluster.store.log.parent, ports=cluster.store.ports)


@pytest.fixture
def node(tmp_path: Path) -> Iterator[Cluster]:
    with nodes_on_own_store(tmp_path, 1) as cluster:
        yield cluster


def upload(node: Server, wheel: Path, version: str) -> tuple[int, str, bytes]:
    body = multipart(form_for(wheel, "down-demo", version),
                     (wheel.name.encode(), wheel.read_bytes()))
    return call(node, "POST", "/", "alice", body, {
        "Content-Type": f"multipart/form-data; boundary={BOUNDARY}"})


def health(node: Server) -> tuple[int, dict[str, object]]:
    resp = get(node.url("/health"))
    return resp.status, json.loads(resp.body)


def until(probe: object, what: str) -> None:
    deadline = time.monotonic() + DEADLINE
    while not probe():  # type: ignore[operator]
        assert time.monotonic() < deadline, what
        time.sleep(0.2)


def test_a_bucket_away_degrades_and_recovers(node: Cluster, tmp_path: Path) -> None:
    server = node.nodes[0]
    first = make_wheel(tmp_path / "dist", "down-demo", "1.0")
    assert upload(server, first, "1.0")[0] == 200
    until(lambda: get(server.url(f"/packages/{first.name}")).status == 200,
          "the upload never showed")  # served once: the node keeps a local copy

    stop_store(node.store)  # the store goes away
    until(lambda: health(server)[0] == 503, "/health never said the store was away")
    status, body = health(server)
    assert body["status"] == "degraded" and "unreachable" in str(body["reason"]), body
    assert get(server.url("/simple/down-demo/")).status == 200
    assert get(server.url(f"/packages/{first.name}")).body == first.read_bytes()
    second = make_wheel(tmp_path / "dist", "down-demo", "2.0")
    status, reason, _ = upload(server, second, "2.0")
    assert status == 503, (status, reason)
    assert "unreachable" in reason or "cannot" in reason, reason
    status, _, text = call(server, "PUT", f"/api/v1/files/{first.name}/yank", "admin",
                           b'{"reason": "x"}')
    assert status == 503 and json.loads(text)["status"] == 503, text

    restart_store(node)  # it is back
    until(lambda: health(server)[0] == 200, "/health never recovered")
    assert upload(server, second, "2.0")[0] == 200
    until(lambda: get(server.url(f"/packages/{second.name}")).status == 200,
          "the upload after the store came back never showed")


@pytest.fixture
def pair(tmp_path: Path) -> Iterator[Cluster]:
    with nodes_on_own_store(tmp_path, 2) as cluster:
        yield cluster


OUTAGE = 30.0  # the figure
OUTAGE_REQUESTS = 20_000  # a bound on the loop below, far above what 30 s allows
PACE = 0.005  # seconds between two reads: the loop ends by time, not by count


@pytest.mark.outage
def test_the_store_away_for_30_seconds(pair: Cluster, tmp_path: Path) -> None:
    """Pages and held files served all along, changes refused with 503, and everything
    back by itself: a change after it shows on the other node within two seconds."""
    one, two = pair.nodes
    first = make_wheel(tmp_path / "dist", "down-demo", "1.0")
    assert upload(one, first, "1.0")[0] == 200
    reads = [(node, path) for node in (one, two)
             for path in ("/simple/", "/simple/down-demo/", f"/packages/{first.name}")]
    until(lambda: all(get(node.url(path)).status == 200 for node, path in reads),
          "both nodes serve the upload")  # and so keep a copy of the file

    # The reads begin as the store is told to stop (SeaweedFS takes its 10 s of grace
    # before SIGKILL); changes are tried once it is gone.
    stopping = threading.Thread(target=stop_store, args=(pair.store,))
    away_since = time.monotonic()
    stopping.start()
    answers: dict[int, int] = {}
    refused = []
    for turn in range(OUTAGE_REQUESTS):
        if time.monotonic() - away_since > OUTAGE:
            break
        node, path = reads[turn % len(reads)]
        status = get(node.url(path)).status
        answers[status] = answers.get(status, 0) + 1
        if turn % 250 == 0 and not stopping.is_alive():  # now and then, on either node
            second = make_wheel(tmp_path / f"dist{turn}", "down-demo", "2.0")
            refused.append(upload(pair.nodes[turn // 250 % 2], second, "2.0")[0])
        time.sleep(PACE)
    stopping.join(timeout=30)
    assert pair.store.proc.poll() is not None, "the store never stopped"
    assert answers.keys() == {200}, answers
    assert refused and set(refused) == {503}, refused
    assert all(health(node)[0] == 503 for node in (one, two))

    restart_store(pair)
    until(lambda: all(health(node)[0] == 200 for node in (one, two)),
          "/health never recovered by itself")
    second = make_wheel(tmp_path / "dist", "down-demo", "2.0")
    assert upload(two, second, "2.0")[0] == 200
    within(LIVE, lambda: all(second.name in files_on(node, "down-demo")
                             and get(node.url(f"/packages/{second.name}")).status == 200
                             for node in (one, two)),
           "the change after the outage shows on both nodes")


def test_a_node_started_while_the_store_is_away(tmp_path: Path) -> None:
    """Node 1, restarted while the store is away, serves what its caches hold (and says
    so, to /health and systemd); node 3, which never saw the bucket, starts serving
    nothing. Both catch up by themselves, with a change node 1 had not seen."""
    with nodes_on_own_store(tmp_path, 2) as cluster, notify_socket(tmp_path) as notify:
        one, two = cluster.nodes
        first = make_wheel(tmp_path / "dist", "down-demo", "1.0")
        assert upload(one, first, "1.0")[0] == 200
        until(lambda: get(one.url(f"/packages/{first.name}")).status == 200, "served")
        stop(one.proc)
        second = make_wheel(tmp_path / "dist", "down-demo", "2.0")
        assert upload(two, second, "2.0")[0] == 200  # node 1 has not seen it
        stop_store(cluster.store)

        one = cluster.start(0, health=503, env={"NOTIFY_SOCKET": notify.sock.getsockname()})
        status, body = health(one)
        assert body["status"] == "degraded", body
        assert "unreachable" in str(body["reason"]), body
        assert "started while the store was away" in str(body["reason"]), body
        ready = notify.wait_for("READY=1")
        assert "STATUS=degraded: " in notify.texts()[ready], notify.texts()
        assert files_on(one, "down-demo").keys() == {first.name}
        assert get(one.url(f"/packages/{first.name}")).body == first.read_bytes()
        assert upload(one, second, "2.0")[0] == 503
        assert one.log_text().count("started while the store was away") == 1

        fresh = cluster.start(cluster.add_node(cluster.store.endpoint, workers=1),
                              health=503)
        assert "this node has never read the bucket" in fresh.log_text()
        assert get(fresh.url("/simple/down-demo/")).status == 404

        restart_store(cluster)
        until(lambda: health(one)[0] == 200 and health(fresh)[0] == 200,
              "the nodes never caught up by themselves")
        for node in (one, fresh):
            assert files_on(node, "down-demo").keys() == {first.name, second.name}
            assert get(node.url(f"/packages/{second.name}")).body == second.read_bytes()
        notify.wait_for("STATUS=serving", timeout=30, after=ready)


@contextlib.contextmanager
def notify_socket(work: Path) -> Iterator[Notifications]:
    """A datagram socket standing for systemd's NOTIFY_SOCKET."""
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(str(work / "notify.sock"))
    try:
        yield Notifications(sock)
    finally:
        sock.close()
