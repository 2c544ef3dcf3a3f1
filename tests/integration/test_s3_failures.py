"""Nodes failing on one bucket of a real SeaweedFS: one node SIGKILLed under load while
the others answer every request, and back with what changed meanwhile."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.builders import make_wheel
from tests.integration.s3nodes import Cluster, ReadLoad, call, running_nodes
from tests.integration.test_s3_nodes import LIVE, files_on, within
from tests.integration.test_uploads import BOUNDARY, form_for, multipart
from tests.s3store import Store

pytestmark = pytest.mark.server
HEADERS = {"Content-Type": f"multipart/form-data; boundary={BOUNDARY}"}


@pytest.fixture(scope="module")
def cluster(s3_store: Store, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    with running_nodes(s3_store, tmp_path_factory.mktemp("s3-failures"), 3,
                       prefix=f"failures/{uuid.uuid4().hex[:8]}") as nodes:
        yield nodes


def upload_body(path: Path, project: str, version: str) -> bytes:
    return multipart(form_for(path, project, version), (path.name.encode(), path.read_bytes()))


def test_a_node_killed_under_load_fails_no_request_elsewhere(cluster: Cluster,
                                                             tmp_path: Path) -> None:
    _, node2, node3 = cluster.nodes
    first = make_wheel(tmp_path, "s3-load", "1.0")
    assert call(cluster.nodes[0], "POST", "/", "alice", upload_body(first, "s3-load", "1.0"),
                HEADERS)[0] == 200
    for node in (node2, node3):
        within(LIVE, lambda node=node: first.name in files_on(node, "s3-load")
               and call(node, "GET", f"/packages/{first.name}")[0] == 200,
               "nodes 2 and 3 serve the upload")
    paths = ["/simple/", "/simple/s3-load/", f"/packages/{first.name}",
             f"/packages/{first.name}.metadata"]
    second = make_wheel(tmp_path, "s3-load", "2.0")
    with ReadLoad([node2, node3], paths) as load:
        load.wait_for(100)
        cluster.kill(0)
        at_kill = load.done
        # A change while node 1 is away.
        assert call(node2, "POST", "/", "alice", upload_body(second, "s3-load", "2.0"),
                    HEADERS)[0] == 200
        restarted = cluster.start(0)
        at_restart = load.done
        load.wait_for(at_restart + 100)
    assert load.failures == [], load.failures[:10]
    assert at_restart > at_kill, "the load went on while node 1 was away"
    within(LIVE, lambda: second.name in files_on(restarted, "s3-load")
           and call(restarted, "GET", f"/packages/{second.name}")[0] == 200
           and call(restarted, "GET", f"/packages/{first.name}")[0] == 200,
           "node 1 serves again, with the change made while it was away")
