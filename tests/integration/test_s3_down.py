"""A node whose bucket goes away: pages and the files it holds a copy of are still
served, changes are refused with 503 and a reason, /health says "degraded", and all of
it comes back by itself when the store does. The store is this test's own SeaweedFS,
killed and started again on the same ports and data."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.builders import make_wheel
from tests.integration.harness import STARTED, launch, stop, write_config
from tests.integration.helpers import Server, get
from tests.integration.test_s3_nodes import PASSWORDS, call, cli
from tests.integration.test_uploads import BOUNDARY, form_for, multipart
from tests.s3store import BUCKET, Store, credentials_env, start_store, stop_store

pytestmark = pytest.mark.server
DEADLINE = 90.0  # the node's client retries, then its health probe: bounded waits


@dataclass
class Node:
    server: Server
    store: Store
    workdir: Path


@pytest.fixture
def node(tmp_path: Path) -> Iterator[Node]:
    store = start_store(tmp_path / "store")
    cfg = tmp_path / "node" / "pypid.toml"
    cfg.parent.mkdir()
    # One worker: a second one that had not read the upload's log line before the
    # store went away could not learn of it until the store is back (as designed).
    write_config(cfg, cfg.parent / "root", url_prefix="", upstream="off", settings={
        "server": {"workers": 1},
        "storage": {"backend": "s3"},
        "storage.s3": {"endpoint": store.endpoint, "bucket": BUCKET, "prefix": "down",
                       "cache_dir": str(cfg.parent / "copies")},
        "auth": {"htpasswd": str(tmp_path / "htpasswd"), "admins": ["admin"]},
    })
    for user, password in PASSWORDS.items():
        assert cli(cfg, "user", "add", user, "--password-stdin",
                   stdin=password + "\n").returncode == 0
    server = launch(cfg, cfg.parent / "root", log=cfg.parent / "server.log",
                    extra_env=credentials_env())
    STARTED.append(server)
    current = Node(server, store, tmp_path)
    try:
        yield current
    finally:
        stop(server.proc)
        stop_store(current.store)


def upload(node: Node, wheel: Path, version: str) -> tuple[int, str, bytes]:
    body = multipart(form_for(wheel, "down-demo", version),
                     (wheel.name.encode(), wheel.read_bytes()))
    return call(node.server, "POST", "/", "alice", body, {
        "Content-Type": f"multipart/form-data; boundary={BOUNDARY}"})


def health(node: Node) -> tuple[int, dict[str, object]]:
    resp = get(node.server.url("/health"))
    return resp.status, json.loads(resp.body)


def until(probe: object, what: str) -> None:
    deadline = time.monotonic() + DEADLINE
    while not probe():  # type: ignore[operator]
        assert time.monotonic() < deadline, what
        time.sleep(0.2)


def test_a_bucket_away_degrades_and_recovers(node: Node, tmp_path: Path) -> None:
    first = make_wheel(tmp_path / "dist", "down-demo", "1.0")
    assert upload(node, first, "1.0")[0] == 200
    until(lambda: get(node.server.url(f"/packages/{first.name}")).status == 200,
          "the upload never showed")  # served once: the node keeps a local copy

    stop_store(node.store)  # the store goes away
    until(lambda: health(node)[0] == 503, "/health never said the store was away")
    status, body = health(node)
    assert body["status"] == "degraded" and "unreachable" in str(body["reason"]), body
    assert get(node.server.url("/simple/down-demo/")).status == 200
    assert get(node.server.url(f"/packages/{first.name}")).body == first.read_bytes()
    second = make_wheel(tmp_path / "dist", "down-demo", "2.0")
    status, reason, _ = upload(node, second, "2.0")
    assert status == 503, (status, reason)
    assert "unreachable" in reason or "cannot" in reason, reason
    status, _, text = call(node.server, "PUT", f"/api/v1/files/{first.name}/yank", "admin",
                           b'{"reason": "x"}')
    assert status == 503 and json.loads(text)["status"] == 503, text

    node.store = start_store(node.workdir / "store", ports=node.store.ports)  # it is back
    until(lambda: health(node)[0] == 200, "/health never recovered")
    assert upload(node, second, "2.0")[0] == 200
    until(lambda: get(node.server.url(f"/packages/{second.name}")).status == 200,
          "the upload after the store came back never showed")
