"""The mirror's cache in the bucket: two S3 nodes in upstream.mode = "cache" over a real
SeaweedFS, upstream a pypid on loopback (behind the tests' proxy, which counts what it
is asked). pip installs through node 1; with upstream stopped, node 2 (which never
asked upstream) installs the same, and so does node 1 with its own cache wiped: the
pages, the files and their METADATA came from the bucket; upstream sent each file once."""

from __future__ import annotations

import hashlib
import shutil
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.builders import make_wheel
from tests.integration.faultproxy import FaultProxy
from tests.integration.harness import STARTED, launch, start_server, stop, write_config
from tests.integration.helpers import Server
from tests.integration.test_governance import install
from tests.s3store import BUCKET, SECRET_KEY, Store, credentials_env

pytestmark = pytest.mark.server


@dataclass
class Shared:
    upstream: Server
    proxy: FaultProxy
    nodes: list[Server]
    caches: list[Path]
    configs: list[Path]
    prefix: str
    wheels: dict[str, bytes]
    started: list[Server]  # stopped by the fixture, whatever the test did


@pytest.fixture(scope="module")
def shared(s3_store: Store, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Shared]:
    work = tmp_path_factory.mktemp("s3-mirror")
    root = work / "upstream-root"
    make_wheel(root, "shared-lib", "1.0")
    make_wheel(root, "shared-app", "1.0", requires_dist=("shared-lib>=1.0",))
    wheels = {p.name: p.read_bytes() for p in root.iterdir()}
    upstream = start_server(work / "upstream", root, settings={"server": {"workers": 1}})
    STARTED.append(upstream)
    started = [upstream]
    proxy = FaultProxy(upstream.host, upstream.port)
    prefix = f"mirror/{uuid.uuid4().hex[:8]}"
    configs, caches, nodes = [], [], []
    try:
        for i in range(2):
            cfg = work / f"node{i + 1}" / "pypid.toml"
            cfg.parent.mkdir()
            caches.append(cfg.parent / "mirror-cache")
            write_config(cfg, cfg.parent / "root", url_prefix="", upstream="cache", settings={
                "storage": {"backend": "s3"},
                "storage.s3": {"endpoint": s3_store.endpoint, "bucket": BUCKET,
                               "prefix": prefix, "cache_dir": str(cfg.parent / "copies")},
                "upstream": {"url": proxy.url(), "cache_root": str(caches[-1]),
                             "file_hosts": [], "timeout": 3},
            })
            configs.append(cfg)
            node = launch(cfg, cfg.parent / "root", log=cfg.parent / "server.log",
                          extra_env=credentials_env())
            started.append(node)
            STARTED.append(node)
            nodes.append(node)
        yield Shared(upstream, proxy, nodes, caches, configs, prefix, wheels, started)
    finally:
        proxy.close()
        for server in started:
            stop(server.proc)
    for server in started[1:]:
        assert SECRET_KEY not in server.log_text()


def test_a_file_one_node_fetched_is_served_by_another_with_upstream_gone(
        shared: Shared, s3_store: Store, tmp_path: Path) -> None:
    node1, node2 = shared.nodes
    versions, _ = install(node1, tmp_path, "pip", "shared-app")
    assert versions == {"shared-app": "1.0", "shared-lib": "1.0"}
    fetched = {p: n for p, n in shared.proxy.requests.items() if p.startswith("/packages/")}
    assert sorted(fetched.values()) == [1] * 4  # each wheel and its METADATA, once
    client = s3_store.client()
    try:
        for name, data in shared.wheels.items():  # in the bucket, byte for byte
            project = name.split("-", 1)[0].replace("_", "-")
            key = f"{shared.prefix}/.pypid/mirror/files/{project}/{name}"
            body = client.get_object(Bucket=BUCKET, Key=key)["Body"].read()
            assert hashlib.sha256(body).digest() == hashlib.sha256(data).digest()
    finally:
        client.close()

    stop(shared.upstream.proc)
    versions, _ = install(node2, tmp_path, "pip", "shared-app")
    assert versions == {"shared-app": "1.0", "shared-lib": "1.0"}
    assert not any(shared.caches[1].glob("files/*/.*.part"))  # nothing half kept
    assert {p: n for p, n in shared.proxy.requests.items() if p.startswith("/packages/")} \
        == fetched  # node 2 did not even try upstream for the files

    stop(node1.proc)  # node 1 forgets everything it held, and comes back
    shutil.rmtree(shared.caches[0])
    cfg = shared.configs[0]
    again = launch(cfg, cfg.parent / "root", log=cfg.parent / "server-2.log",
                   extra_env=credentials_env())
    STARTED.append(again)
    shared.started.append(again)
    shared.nodes[0] = again
    versions, _ = install(again, tmp_path, "pip", "shared-app")
    assert versions == {"shared-app": "1.0", "shared-lib": "1.0"}
    # The bucket's page records were fresh (page_ttl): upstream was not even asked.
    assert "serving the cached page" not in again.log_text()
