"""Three real pypid nodes on one bucket of a real SeaweedFS: an upload to one is
installed from another within two seconds, 20 racing uploads of one name over the
three store one file, a yank and a removal on one node show on every node."""

from __future__ import annotations

import http.client
import json
import os
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from tests.builders import make_sdist, make_wheel
from tests.integration.gateproxy import GateProxy
from tests.integration.harness import stop
from tests.integration.helpers import (
    JSON_TYPE,
    Server,
    client_tool,
    get,
    installed_versions,
    run_client,
    until,
)
from tests.integration.s3nodes import (
    PASSWORDS,
    UPLOAD_HEADERS,
    Cluster,
    call,
    cli,
    running_nodes,
    upload_at_once,
)
from tests.integration.test_uploads import BOUNDARY, EXISTS, form_for, multipart
from tests.s3store import BUCKET, Store

pytestmark = pytest.mark.server
LIVE = 2.5  # DESIGN: every node within two seconds, plus the polling requests


@pytest.fixture(scope="module")
def cluster(s3_store: Store, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    with running_nodes(s3_store, tmp_path_factory.mktemp("s3-nodes"), 3,
                       prefix=f"nodes/{uuid.uuid4().hex[:8]}") as nodes:
        yield nodes


def files_on(node: Server, project: str) -> dict[str, object]:
    resp = get(node.url(f"/simple/{project}/"), Accept=JSON_TYPE)
    if resp.status != 200:
        return {}
    return {f["filename"]: f for f in resp.json()["files"]}


def within(seconds: float, probe: Callable[[], bool], what: str, streak: int = 6) -> None:
    """``streak`` passing answers in a row (so each worker has it) before the deadline."""
    until(probe, what, streak, within=seconds)


def test_twine_upload_to_one_node_pip_installs_from_another(cluster: Cluster,
                                                            tmp_path: Path) -> None:
    wheel = make_wheel(cluster.dist, "s3-demo", "1.0")
    node1, _, node3 = cluster.nodes
    run_client([client_tool("twine"), "upload", "--repository-url", node1.url("/"), "-u",
                "alice", "-p", PASSWORDS["alice"], "--non-interactive",
                "--disable-progress-bar", str(wheel)], tmp_path)
    # pip asks for the page, then the file: both, a dozen times in a row (both workers).
    within(LIVE, lambda: wheel.name in files_on(node3, "s3-demo")
           and call(node3, "GET", f"/packages/{wheel.name}")[0] == 200,
           "node 3 serves the upload", streak=12)
    target = tmp_path / "target"
    run_client([client_tool("pip"), "install", "--no-cache-dir", "--index-url",
                node3.index_url, "--target", str(target), "s3-demo"], tmp_path)
    assert installed_versions(target)["s3-demo"] == "1.0"
    shown = [files_on(node, "s3-demo")[wheel.name] for node in cluster.nodes]
    assert all(entry == shown[0] for entry in shown), "every node shows the same file"


def test_racing_uploads_over_three_nodes_store_one(cluster: Cluster, tmp_path: Path) -> None:
    sdists = [make_sdist(tmp_path / str(i), "s3-race", "1.0", requires_python=f">=3.{i}")
              for i in range(20)]
    bodies = [multipart(form_for(p, "s3-race", "1.0"), (p.name.encode(), p.read_bytes()))
              for p in sdists]
    answers = dict(enumerate(upload_at_once([(cluster.nodes[i % 3], body)
                                             for i, body in enumerate(bodies)])))
    name = sdists[0].name
    winners = [i for i, (status, _, _) in answers.items() if status == 200]
    assert len(winners) == 1, {i: r[:2] for i, r in answers.items()}
    for i, (status, reason, _) in answers.items():
        if i != winners[0]:
            assert (status, reason) == (409, EXISTS.format(name))
    winner = sdists[winners[0]].read_bytes()
    def serves_winner(node: Server) -> bool:
        status, _, data = call(node, "GET", f"/packages/{name}")
        return name in files_on(node, "s3-race") and status == 200 and data == winner

    for node in cluster.nodes:
        within(LIVE, lambda node=node: serves_winner(node), "every node serves the winner")


def test_with_overwrite_an_upload_replaces_a_file_on_every_node(
        s3_store: Store, tmp_path: Path) -> None:
    """``storage.overwrite = true`` on a bucket: the second bytes replace the first (the
    old object kept aside in the store meanwhile, then dropped); every node serves them."""
    with running_nodes(s3_store, tmp_path / "work", 2, prefix=f"over/{uuid.uuid4().hex[:8]}",
                       workers=1, overwrite=True) as nodes:
        node1, node2 = nodes.nodes
        first, second = (make_sdist(tmp_path / str(i), "s3-over", "1.0",
                                    requires_python=f">=3.{i}") for i in (1, 2))
        for node, sdist in ((node1, first), (node2, second)):
            body = multipart(form_for(sdist, "s3-over", "1.0"),
                             (sdist.name.encode(), sdist.read_bytes()))
            status, reason, _ = call(node, "POST", "/", "alice", body, UPLOAD_HEADERS)
            assert status == 200, reason
        for node in nodes.nodes:
            within(LIVE, lambda node=node: call(node, "GET", f"/packages/{first.name}")[2]
                   == second.read_bytes(), "every node serves the second bytes")
        client = s3_store.client()
        try:
            kept = client.list_objects_v2(
                Bucket=BUCKET, Prefix=f"{nodes.prefix}/.pypid/keeping/").get("Contents", [])
        finally:
            client.close()  # else its socket is left to the GC: a ResourceWarning (debian)
        assert kept == []


def test_a_yank_on_one_node_shows_on_another(cluster: Cluster, tmp_path: Path) -> None:
    wheel = make_wheel(cluster.dist, "s3-yank", "1.0")
    node1, node2, _ = cluster.nodes
    body = multipart(form_for(wheel, "s3-yank", "1.0"), (wheel.name.encode(), wheel.read_bytes()))
    headers = {"Content-Type": f"multipart/form-data; boundary={BOUNDARY}"}
    assert call(node1, "POST", "/", "alice", body, headers)[0] == 200
    # At once: a change decided on node 2 first reads the log's new lines.
    status, _, text = call(node2, "PUT", f"/api/v1/files/{wheel.name}/yank", "admin",
                           json.dumps({"reason": "broken build"}).encode(),
                           {"Content-Type": "application/json"})
    assert status in (200, 204), text
    within(LIVE, lambda: (files_on(node1, "s3-yank").get(wheel.name) or {}).get("yanked")
           == "broken build",
           "node 1 shows the yank")


def test_a_removed_file_is_404_on_every_node(cluster: Cluster) -> None:
    wheel = make_wheel(cluster.dist, "s3-gone", "1.0")
    node1, node2, node3 = cluster.nodes
    body = multipart(form_for(wheel, "s3-gone", "1.0"), (wheel.name.encode(), wheel.read_bytes()))
    headers = {"Content-Type": f"multipart/form-data; boundary={BOUNDARY}"}
    assert call(node2, "POST", "/", "alice", body, headers)[0] == 200
    for node in cluster.nodes:  # every node shows and sends it (and keeps a copy)
        # Each check polls: a streak of answers can all come from one worker.
        within(LIVE, lambda node=node: wheel.name in files_on(node, "s3-gone")
               and call(node, "GET", f"/packages/{wheel.name}")[0] == 200,
               "every node serves the file")
    status, _, text = call(node3, "DELETE", f"/api/v1/files/{wheel.name}", "admin")
    assert status in (200, 204), text
    for node in (node1, node2, node3):
        within(LIVE, lambda node=node: call(node, "GET", f"/packages/{wheel.name}")[0] == 404
               and wheel.name not in files_on(node, "s3-gone"),
               "the removed file is 404 and off the page on every node")


def test_the_bucket_audit_log_verifies(cluster: Cluster) -> None:
    done = cli(cluster.configs[1], "audit", "--verify")
    assert done.returncode == 0, done.stderr
    assert "the chain is intact" in done.stdout and f"s3://{BUCKET}/" in done.stdout
    lines = [json.loads(line) for line in
             cli(cluster.configs[2], "audit", "--json").stdout.splitlines()]
    assert {"user-add", "upload"} <= {line["action"] for line in lines}


def test_a_node_restarted_reads_only_what_changed_while_it_was_down(cluster: Cluster) -> None:
    node1, _, node3 = cluster.nodes
    stop(node3.proc)
    wheel = make_wheel(cluster.dist, "s3-late", "1.0")
    body = multipart(form_for(wheel, "s3-late", "1.0"), (wheel.name.encode(), wheel.read_bytes()))
    headers = {"Content-Type": f"multipart/form-data; boundary={BOUNDARY}"}
    assert call(node1, "POST", "/", "alice", body, headers)[0] == 200
    restarted = cluster.start(2)
    # Its index database still describes every other file: only the new one is read.
    assert "(1 new or changed)" in restarted.log_text()
    within(LIVE, lambda: wheel.name in files_on(restarted, "s3-late")
           and files_on(restarted, "s3-gone") == {}
           and call(restarted, "GET", "/packages/s3_gone-1.0-py3-none-any.whl")[0] == 404,
           "the restarted node serves what the bucket holds now")


STREAMED = 24 * 1024 * 1024


def test_a_large_file_streams_from_a_node_without_its_copy(cluster: Cluster,
                                                           tmp_path: Path) -> None:
    """A 24 MB wheel uploaded to node 1 is fetched from node 4 (its copy evicted), whose
    store is behind a proxy that, once armed, lets 2 MB of each answer through and holds
    the rest: two
    clients of node 4 have their first bytes while its copy is still a part file (so
    the answer did not wait for the download); released, both bodies are byte-exact,
    from one GET of the object, and the copy is whole."""
    wheel = make_wheel(tmp_path, "s3-stream", "1.0", payload=os.urandom(STREAMED))
    data = wheel.read_bytes()
    proxy = GateProxy(int(cluster.store.endpoint.rsplit(":", 1)[1]))
    i = cluster.add_node(proxy.endpoint, workers=2)
    node = cluster.start(i)
    try:
        status, _, answer = call(cluster.nodes[0], "POST", "/", "alice", multipart(
            form_for(wheel, "s3-stream", "1.0"), (wheel.name.encode(), data)),
            UPLOAD_HEADERS)
        assert status == 200, answer
        # Both workers serve it (each has indexed it: read it whole, into the copy).
        within(LIVE * 4, lambda: call(node, "GET", f"/packages/{wheel.name}")[0] == 200,
               "node 4 serves it", streak=12)
        copies = cluster.configs[i].parent / "copies"
        final, part = copies / wheel.name, copies / f".pypid-copy-{wheel.name}.part"
        final.unlink()  # read when node 4 indexed it; gone as an evicted copy goes
        gets = proxy.requests("GET", wheel.name)
        proxy.hold_after(2 * 1024 * 1024)
        started = []
        for _ in range(2):
            conn = http.client.HTTPConnection(node.host, node.port, timeout=60)
            conn.request("GET", f"/packages/{wheel.name}")
            resp = conn.getresponse()
            assert resp.status == 200
            assert resp.getheader("Content-Length") == str(len(data))
            started.append((conn, resp, resp.read(64 * 1024)))
        assert proxy.held.wait(timeout=60), "the download never reached the proxy's limit"
        assert not final.exists(), "the copy was complete before the first bytes were sent"
        assert 0 < part.stat().st_size < len(data)
        proxy.release()
        for conn, resp, first in started:
            assert first + resp.read() == data
            conn.close()
        assert final.read_bytes() == data and not part.exists()
        assert proxy.requests("GET", wheel.name) == gets + 1, "one download for both clients"
        assert call(node, "GET", f"/packages/{wheel.name}",
                    headers={"Range": "bytes=10-19"})[2] == data[10:20]  # from the copy
    finally:
        proxy.release()
        stop(node.proc)
        proxy.close()
        cluster.nodes.remove(node)
        cluster.configs.pop(i)
