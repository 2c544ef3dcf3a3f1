"""Moving a local root into a bucket: `pypid export` of a running local-root server with
uploads, a yank, a status and owners, then `pypid import` with an S3 node's config. Two
S3 nodes then serve the same pages (same ETags) with the marks and upload times of the
old server, the old audit log is the bucket's (chain intact) followed by the imports,
an owner's project refuses another user's upload, and pip installs from the bucket."""

from __future__ import annotations

import base64
import json
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.builders import make_wheel
from tests.integration.harness import STARTED, launch, start_server, stop, write_config
from tests.integration.helpers import JSON_TYPE, Server, get, until, until_every_worker
from tests.integration.test_governance import install, page, pypid
from tests.integration.test_s3_nodes import PASSWORDS, call, cli
from tests.integration.test_uploads import BOUNDARY, add_user, form_for, multipart
from tests.s3store import BUCKET, SECRET_KEY, Store, credentials_env

pytestmark = pytest.mark.server
UPLOAD_HEADERS = {"Content-Type": f"multipart/form-data; boundary={BOUNDARY}"}
USERS = {**PASSWORDS, "bob": "bob-pw"}


@dataclass
class Move:
    old: Server
    nodes: list[Server]
    configs: list[Path]
    bundle: Path
    dist: Path


def upload(server: Server, user: str, wheel: Path, project: str, version: str) -> int:
    body = multipart(form_for(wheel, project, version), (wheel.name.encode(), wheel.read_bytes()))
    token = {"Authorization": "Basic " + base64.b64encode(
        f"{user}:{USERS[user]}".encode()).decode()}
    status, _, _ = call(server, "POST", "/", None, body, {**UPLOAD_HEADERS, **token})
    return status


@pytest.fixture(scope="module")
def move(s3_store: Store, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Move]:
    work = tmp_path_factory.mktemp("s3-move")
    htpasswd = work / "htpasswd"  # carried to the new site as it is (a step of the move)
    old_root = work / "old" / "packages"
    old_root.mkdir(parents=True)
    old = start_server(work / "old", old_root, settings={
        "auth": {"htpasswd": str(htpasswd), "admins": ["admin"]}})
    STARTED.append(old)
    started = [old]
    try:
        for user, password in USERS.items():
            add_user(work / "old" / "pypid.toml", user, password)
        dist = work / "dist"
        for version in ("1.0", "2.0"):
            wheel = make_wheel(dist, "moved", version)
            assert upload(old, "alice", wheel, "moved", version) == 200
        assert upload(old, "bob", make_wheel(dist, "retired", "1.0"), "retired", "1.0") == 200
        pypid(old, "yank", "moved==2.0", "--reason", "broken build")
        pypid(old, "status", "retired", "deprecated", "--reason", "use moved")
        pypid(old, "owner", "add", "moved", "admin")
        bundle = work / "site.tar"
        done = pypid(old, "export", str(bundle))
        assert "3 files" in done.stdout and "the audit log" in done.stdout

        prefix = f"moved/{uuid.uuid4().hex[:8]}"
        configs = []
        for i in range(2):
            cfg = work / f"node{i + 1}" / "pypid.toml"
            cfg.parent.mkdir()
            write_config(cfg, cfg.parent / "root", url_prefix="", upstream="off", settings={
                "storage": {"backend": "s3"},
                "storage.s3": {"endpoint": s3_store.endpoint, "bucket": BUCKET,
                               "prefix": prefix, "cache_dir": str(cfg.parent / "copies")},
                "auth": {"htpasswd": str(htpasswd), "admins": ["admin"]},
            })
            configs.append(cfg)
        nodes = []
        for cfg in configs:  # running already: the import reaches them through the log
            node = launch(cfg, cfg.parent / "root", log=cfg.parent / "server.log",
                          extra_env=credentials_env())
            started.append(node)
            STARTED.append(node)
            nodes.append(node)
        yield Move(old, nodes, configs, bundle, dist)
    finally:
        for server in started:
            stop(server.proc)
    for server in started[1:]:
        assert SECRET_KEY not in server.log_text()


def etag_and_files(node: Server, project: str) -> tuple[str | None, list[dict[str, object]]]:
    resp = get(node.url(f"/simple/{project}/"), Accept=JSON_TYPE)
    if resp.status != 200:
        return None, []
    return resp.header("ETag"), resp.json()["files"]


RETIRED = {"status": "deprecated", "reason": "use moved"}


def status_of(node: Server, project: str) -> object:
    resp = get(node.url(f"/simple/{project}/"), Accept=JSON_TYPE)
    return resp.json().get("project-status") if resp.status == 200 else None


def test_an_export_imported_into_a_bucket_moves_the_site(move: Move, tmp_path: Path) -> None:
    imported = cli(move.configs[0], "import", str(move.bundle))
    assert imported.returncode == 0, imported.stderr
    assert "3 files imported, 0 already here" in imported.stdout
    old_log = (move.old.root / ".pypid" / "audit.jsonl").read_bytes().splitlines()
    assert f"audit log ({len(old_log)} lines) is this site's log now" in imported.stdout
    assert imported.stderr == ""  # every mark was in the log already: nothing skipped

    old_etag, old_files = etag_and_files(move.old, "moved")
    node1, node2 = move.nodes
    def same_pages_on_both() -> bool:
        (etag1, files1), (etag2, files2) = (etag_and_files(n, "moved") for n in move.nodes)
        retired = [etag_and_files(n, "retired")[1] for n in move.nodes]
        # Files and marks reach a node's workers by their own ways (the listing, the
        # log): wait for both, a status included, before reading either.
        return (etag1 is not None and etag1 == etag2 and len(files1) == 2 and files1 == files2
                and all(len(files) == 1 for files in retired)
                and all(status_of(n, "retired") == RETIRED for n in move.nodes))

    for node in move.nodes:  # each worker of each node, alone
        until_every_worker(node, same_pages_on_both,
                           "both nodes list every imported file and mark, with the same ETags")
    files1 = etag_and_files(node1, "moved")[1]
    # The old server's files as it showed them: hashes, sizes, yank, upload times.
    assert [(f["filename"], f["hashes"], f["size"], f["yanked"], f["upload-time"])
            for f in files1] == [(f["filename"], f["hashes"], f["size"], f["yanked"],
                                  f["upload-time"]) for f in old_files]
    assert [f["yanked"] for f in files1] == [False, "broken build"]
    for node in move.nodes:
        assert page(node, "retired")["project-status"] == RETIRED
        api = json.loads(call(node, "GET", "/api/v1/projects/moved", "admin")[2])
        assert api["owners"] == ["admin", "alice"]
        assert {f["uploader"] for f in api["files"]} == {"alice"}
        retired = json.loads(call(node, "GET", "/api/v1/projects/retired", "admin")[2])
        assert retired["owners"] == ["bob"]

    # The bucket's log: the old log verbatim (its chain intact), then one line per import.
    verified = cli(move.configs[1], "audit", "--verify")
    assert verified.returncode == 0 and "the chain is intact" in verified.stdout, verified
    lines = cli(move.configs[1], "audit", "--json").stdout.splitlines()
    assert [line.encode() for line in lines[:len(old_log)]] == old_log
    assert [json.loads(line)["action"] for line in lines[len(old_log):]] == ["import"] * 3

    # Ownership came along: bob may not upload to alice's project, alice may.
    assert upload(node2, "bob", make_wheel(move.dist / "b", "moved", "3.0"), "moved",
                  "3.0") == 403
    assert upload(node1, "alice", make_wheel(move.dist / "a", "moved", "3.0"), "moved",
                  "3.0") == 200
    until(lambda: len(etag_and_files(node2, "moved")[1]) == 3, "node 2 lists alice's upload")
    versions, _ = install(node2, tmp_path, "pip", "moved==1.0", "retired")
    assert versions == {"moved": "1.0", "retired": "1.0"}

    again = cli(move.configs[1], "import", str(move.bundle))
    assert again.returncode == 0, again.stderr
    assert "0 files imported, 3 already here" in again.stdout
    assert "audit log (" in again.stderr and "was not carried over" in again.stderr
    assert cli(move.configs[1], "audit", "--json").stdout.splitlines()[:len(lines)] == lines
