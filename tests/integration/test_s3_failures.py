"""Nodes failing on one bucket of a real SeaweedFS: one node SIGKILLed under load while
the others answer every request, and back with what changed meanwhile; one SIGKILLed in
the middle of a multipart upload, which leaves nothing visible and is aborted; two
spellings of one release sent to two nodes at once, of which exactly one is stored."""

from __future__ import annotations

import os
import subprocess
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from pypid.storage.s3sweep import STALE_ENV
from tests.builders import make_sdist, make_wheel
from tests.integration.helpers import client_env, client_tool
from tests.integration.s3nodes import (
    PASSWORDS,
    UPLOAD_HEADERS,
    Cluster,
    ReadLoad,
    call,
    running_nodes,
    upload_at_once,
)
from tests.integration.stallproxy import StallProxy
from tests.integration.test_s3_nodes import LIVE, files_on, within
from tests.integration.test_uploads import form_for, multipart
from tests.s3store import BUCKET, Store

pytestmark = pytest.mark.server


@pytest.fixture(scope="module")
def cluster(s3_store: Store, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    with running_nodes(s3_store, tmp_path_factory.mktemp("s3-failures"), 3,
                       prefix=f"failures/{uuid.uuid4().hex[:8]}") as nodes:
        yield nodes


@pytest.fixture
def store(cluster: Cluster) -> Iterator[Any]:
    """A boto3 client of the cluster's store, closed after the test."""
    client = cluster.store.client()
    try:
        yield client
    finally:
        client.close()


def upload_body(path: Path, project: str, version: str) -> bytes:
    return multipart(form_for(path, project, version), (path.name.encode(), path.read_bytes()))


def test_a_node_killed_under_load_fails_no_request_elsewhere(cluster: Cluster,
                                                             tmp_path: Path) -> None:
    _, node2, node3 = cluster.nodes
    first = make_wheel(tmp_path, "s3-load", "1.0")
    assert call(cluster.nodes[0], "POST", "/", "alice", upload_body(first, "s3-load", "1.0"),
                UPLOAD_HEADERS)[0] == 200
    uploaded = time.monotonic()
    for node in (node2, node3):
        within(LIVE, lambda node=node: first.name in files_on(node, "s3-load")
               and call(node, "GET", f"/packages/{first.name}")[0] == 200,
               "nodes 2 and 3 serve the upload")
    # A streak of answers may all come from one worker: the load begins once the two
    # seconds in which every worker shows a change have passed.
    time.sleep(max(0.0, uploaded + LIVE - time.monotonic()))
    paths = ["/simple/", "/simple/s3-load/", f"/packages/{first.name}",
             f"/packages/{first.name}.metadata"]
    second = make_wheel(tmp_path, "s3-load", "2.0")
    with ReadLoad([node2, node3], paths) as load:
        load.wait_for(100)
        cluster.kill(0)
        at_kill = load.done
        # A change while node 1 is away.
        assert call(node2, "POST", "/", "alice", upload_body(second, "s3-load", "2.0"),
                    UPLOAD_HEADERS)[0] == 200
        restarted = cluster.start(0)
        at_restart = load.done
        load.wait_for(at_restart + 100)
    assert load.failures == [], load.failures[:10]
    assert at_restart > at_kill, "the load went on while node 1 was away"
    within(LIVE, lambda: second.name in files_on(restarted, "s3-load")
           and call(restarted, "GET", f"/packages/{second.name}")[0] == 200
           and call(restarted, "GET", f"/packages/{first.name}")[0] == 200,
           "node 1 serves again, with the change made while it was away")


BIG = 70 * 1024 * 1024  # above s3upload's MULTIPART_THRESHOLD (64 MiB): sent in parts


def test_a_node_killed_mid_multipart_upload_leaves_nothing(cluster: Cluster, store: Any,
                                                           tmp_path: Path) -> None:
    """twine sends a large wheel to node 4, whose store is behind a proxy that holds its
    first part: node 4 is SIGKILLed in the middle of the multipart upload, then started
    again, which aborts it; no node ever shows the file."""
    store_port = int(cluster.store.endpoint.rsplit(":", 1)[1])
    big = make_wheel(tmp_path, "s3-big", "1.0", payload=os.urandom(BIG))
    proxy = StallProxy(store_port, b"partNumber=")
    try:
        i = cluster.add_node(proxy.endpoint, workers=1)
        node = cluster.start(i)
        output = tmp_path / "twine.log"
        with output.open("wb") as out:
            twine = subprocess.Popen(  # stopped below, whatever happens
                [client_tool("twine"), "upload", "--repository-url", node.url("/"), "-u",
                 "alice", "-p", PASSWORDS["alice"], "--non-interactive",
                 "--disable-progress-bar", str(big)], cwd=tmp_path, env=client_env(tmp_path),
                stdout=out, stderr=subprocess.STDOUT)
        try:
            assert proxy.stalled.wait(timeout=120), "node 4 never sent a part"
            assert [u["Key"] for u in unfinished(store, cluster.prefix)] == [
                f"{cluster.prefix}/{big.name}"]
            cluster.kill(i)
            assert twine.wait(timeout=60) != 0, output.read_text()
        finally:
            if twine.poll() is None:
                twine.kill()
                twine.wait(timeout=10)
        restarted = cluster.start(i, env={STALE_ENV: "0"})  # its start-up sweep aborts it
    finally:
        proxy.close()
    assert unfinished(store, cluster.prefix) == []
    assert "aborted 1 multipart upload(s)" in restarted.log_text()
    for server in cluster.nodes:
        assert big.name not in files_on(server, "s3-big")
        assert call(server, "GET", f"/packages/{big.name}")[0] == 404
    with pytest.raises(store.exceptions.ClientError):
        store.head_object(Bucket=BUCKET, Key=f"{cluster.prefix}/{big.name}")
    copies = cluster.configs[i].parent / "copies"
    assert [p.name for p in copies.rglob("*")
            if p.name.startswith(".") or "s3_big" in p.name] == []  # no spool, no copy


def unfinished(store: Any, prefix: str) -> list[dict[str, Any]]:
    """The bucket's multipart uploads below ``prefix`` that are neither done nor aborted."""
    answer = store.list_multipart_uploads(Bucket=BUCKET, Prefix=prefix + "/")
    return list(answer.get("Uploads", []))


ROUNDS = 8  # races of two spellings; each round a new release


def test_two_spellings_of_one_release_on_two_nodes_at_once(cluster: Cluster, store: Any,
                                                           tmp_path: Path) -> None:
    """``Foo_Bar-V.tar.gz`` to one node and ``foo.bar-V.tar.gz`` (other bytes) to another,
    released by a barrier: exactly one is stored, the other answers 409 naming it."""
    nodes = cluster.nodes[:3]
    for turn in range(ROUNDS):
        version = f"1.{turn}"
        spellings = [f"Foo_Bar-{version}.tar.gz", f"foo.bar-{version}.tar.gz"]
        sdists = [make_sdist(tmp_path / f"{turn}-{i}", "foo-bar", version,
                             requires_python=f">=3.{i}") for i in range(2)]  # other bytes
        bodies = [multipart(form_for(sdist, "foo-bar", version),
                            (name.encode(), sdist.read_bytes()))
                  for sdist, name in zip(sdists, spellings, strict=True)]
        targets = [nodes[turn % 3], nodes[(turn + 1) % 3]]
        answers = [answer[:2] for answer in
                   upload_at_once(list(zip(targets, bodies, strict=True)))]
        statuses = sorted(status for status, _ in answers)
        assert statuses == [200, 409], answers
        winner = spellings[[status for status, _ in answers].index(200)]
        assert answers[spellings.index(winner) ^ 1][1] == f"File already exists: {winner}"
        stored = [key.rsplit("/", 1)[1] for key in keys(store, cluster.prefix)
                  if key.lower().replace("_", ".").endswith(f"/foo.bar-{version}.tar.gz")]
        assert stored == [winner], stored
        for node in nodes:
            within(LIVE, lambda node=node, end=f"-{version}.tar.gz", winner=winner: [
                name for name in files_on(node, "foo-bar") if name.endswith(end)] == [winner],
                "every node shows the one winner")


def keys(store: Any, prefix: str) -> list[str]:
    """Every key below ``prefix`` (a test bucket's: one page)."""
    return [item["Key"] for item in
            store.list_objects_v2(Bucket=BUCKET, Prefix=prefix + "/").get("Contents", [])]
