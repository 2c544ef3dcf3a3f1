"""A newcomer's first minutes against a real ``pypid serve``: the start banner, a busy
port, and access-log lines a person can read."""

from __future__ import annotations

import os
import re
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.integration.harness import REPO_ROOT, write_config
from tests.integration.helpers import Server, request

pytestmark = pytest.mark.server

WAIT = 20.0  # seconds a log line may take to appear (a bound, not an assertion)
PIP_AGENT = ('pip/24.0 {"ci":null,"cpu":"x86_64","distro":{"name":"Debian GNU/Linux",'
             '"version":"12"},"installer":{"name":"pip","version":"24.0"}}')


def wait_for_log(server: Server, pattern: str) -> re.Match[str] | None:
    """The first match of pattern in the server's log, polled until WAIT runs out."""
    deadline = time.monotonic() + WAIT
    while True:
        found = re.search(pattern, server.log_text(), re.MULTILINE)
        if found or time.monotonic() > deadline:
            return found
        time.sleep(0.1)


def test_banner_once_ready(server: Server) -> None:
    found = wait_for_log(server, r"is ready: open (\S+)\n((?:  .*\n)+)")
    assert found, server.log_text()[-2000:]
    assert found.group(1) == f"http://127.0.0.1:{server.port}/"
    body = found.group(2)
    assert f"packages: {server.root}" in body
    assert f"pip install --index-url http://127.0.0.1:{server.port}/simple/ PACKAGE" in body
    assert f"twine upload --repository-url http://127.0.0.1:{server.port}/ -u NAME" in body
    assert "stop:     Ctrl-C" in body


@pytest.mark.parametrize("path", ["/simple/", "/"], ids=["event-loop", "flask"])
def test_access_log_keeps_the_first_product(server: Server, path: str) -> None:
    marker = f"/?newcomer={os.getpid()}-{path.strip('/') or 'root'}"
    target = path + marker.lstrip("/")
    answer = request(server.url(target), headers={"User-Agent": PIP_AGENT})
    assert answer.status == 200, answer.describe()
    found = wait_for_log(server, rf'^.*"GET {re.escape(target)} HTTP/1.1".*$')
    assert found, server.log_text()[-2000:]
    assert found.group(0).endswith('"pip/24.0"'), found.group(0)


def test_busy_port_is_one_line(tmp_path: Path) -> None:
    holder = socket.socket()
    holder.bind(("127.0.0.1", 0))
    holder.listen()
    port = holder.getsockname()[1]
    root = tmp_path / "packages"
    root.mkdir()
    config = tmp_path / "pypid.toml"
    write_config(config, root, url_prefix="", upstream="off")
    env = {k: v for k, v in os.environ.items() if k not in ("NOTIFY_SOCKET", "PYPID_CONFIG")}
    env["PYTHONPATH"] = str(REPO_ROOT)
    try:
        done = subprocess.run(  # bounded by timeout; nothing is left running
            [sys.executable, "-m", "pypid", "serve", "--config", str(config), "--host",
             "127.0.0.1", "--port", str(port)],
            capture_output=True, text=True, env=env, timeout=60, check=False,
            stdin=subprocess.DEVNULL)
    finally:
        holder.close()
    assert done.returncode == 1, done.stderr
    errors = [line for line in done.stderr.splitlines() if "ERROR" in line]
    assert len(errors) == 1, done.stderr
    assert errors[0].endswith(
        f"cannot listen on 127.0.0.1 port {port}: another program already uses that port; "
        f"stop it, or choose another port with --port or server.port in {config}")
    assert "Connection in use" not in done.stderr
    assert "Retrying" not in done.stderr
    assert "Traceback" not in done.stderr
