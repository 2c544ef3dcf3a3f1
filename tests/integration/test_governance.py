"""Yank marks and project statuses set with the CLI, seen by real pip and uv through a
running server within two seconds; the audit log records each change and proves its
chain."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.builders import make_wheel
from tests.integration.harness import REPO_ROOT, STARTED, start_server, stop
from tests.integration.helpers import (
    Server,
    client_tool,
    get,
    installed_versions,
    project_json,
    run_client,
    until,
)

pytestmark = pytest.mark.server


@pytest.fixture(scope="module")
def governed(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    work = tmp_path_factory.mktemp("governed")
    root = work / "packages"
    for version in ("1.0", "2.0"):
        make_wheel(root, "gov-demo", version)
    make_wheel(root, "gov-other", "1.0")
    srv = start_server(work, root)
    STARTED.append(srv)
    yield srv
    stop(srv.proc)


def pypid(server: Server, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    """`pypid ARGS --config <the server's config>` as the CLI an administrator runs."""
    env = {**os.environ, "PYTHONPATH": str(REPO_ROOT)}
    proc = subprocess.run([sys.executable, "-m", "pypid", *args, "--config",
                           str(server.root.parent / "pypid.toml")],
                          capture_output=True, text=True, env=env, timeout=60, check=False)
    if check:
        assert proc.returncode == 0, proc.stdout + proc.stderr
    return proc


def page(server: Server, project: str) -> dict[str, Any]:
    return project_json(server.url(f"/simple/{project}/"))


def yanked(server: Server) -> dict[str, object]:
    return {f["filename"]: f["yanked"] for f in page(server, "gov-demo")["files"]}  # type: ignore[index]


def install(server: Server, tmp: Path, tool: str, *requirements: str) -> tuple[dict[str, str], str]:
    target = tmp / f"target-{tool}-{len(list(tmp.iterdir()))}"
    if tool == "pip":
        args = [client_tool("pip"), "install", "--no-cache-dir", "--index-url",
                server.index_url, "--target", str(target), *requirements]
    else:
        args = [client_tool("uv"), "pip", "install", "--python", sys.executable,
                "--index-url", server.index_url, "--target", str(target), *requirements]
    out = run_client(args, tmp)
    return installed_versions(target), out


def test_a_yanked_release_is_skipped_unless_pinned(governed: Server, tmp_path: Path) -> None:
    done = pypid(governed, "yank", "gov-demo==2.0", "--reason", "broken build")
    assert done.stdout.strip() == "yanked gov_demo-2.0-py3-none-any.whl (broken build)"
    until(lambda: yanked(governed)["gov_demo-2.0-py3-none-any.whl"] == "broken build",
          "the yank mark never showed")
    for tool in ("pip", "uv"):
        versions, _ = install(governed, tmp_path, tool, "gov-demo")
        assert versions["gov-demo"] == "1.0", tool
        versions, out = install(governed, tmp_path, tool, "gov-demo==2.0")
        assert versions["gov-demo"] == "2.0", tool  # PEP 592: a pin still installs
    assert "yanked" in out.lower()
    pypid(governed, "unyank", "gov_demo-2.0-py3-none-any.whl")
    until(lambda: yanked(governed)["gov_demo-2.0-py3-none-any.whl"] is False,
          "the unyank never showed")


def test_a_quarantined_project_installs_nothing_until_active(governed: Server,
                                                               tmp_path: Path) -> None:
    pypid(governed, "status", "Gov_Other", "quarantined", "--reason", "under review")
    # Every check polls: a streak of answers may all come from one worker.
    until(lambda: page(governed, "gov-other")["project-status"]
          == {"status": "quarantined", "reason": "under review"}, "no quarantine shown")
    until(lambda: page(governed, "gov-other")["files"] == [], "files still listed")
    until(lambda: get(governed.url("/packages/gov_other-1.0-py3-none-any.whl")).status == 404,
          "files still served")
    until(lambda: '<meta name="pypi:project-status" content="quarantined">'
          in get(governed.url("/simple/gov-other/")).text, "no quarantine in HTML")
    failed = subprocess.run(
        [client_tool("pip"), "install", "--no-cache-dir", "--index-url", governed.index_url,
         "--target", str(tmp_path / "t"), "gov-other"],
        capture_output=True, text=True, timeout=120, check=False)
    assert failed.returncode != 0
    assert "no matching distribution" in failed.stderr.lower()
    pypid(governed, "status", "gov-other", "active")
    until(lambda: page(governed, "gov-other")["project-status"] == {"status": "active"},
          "active never showed")
    versions, _ = install(governed, tmp_path, "pip", "gov-other")
    assert versions["gov-other"] == "1.0"


def test_cli_refusals_are_one_line(governed: Server) -> None:
    for args, says in [
        (("yank", "nothing==1.0"), "no release nothing==1.0"),
        (("yank", "gov-demo==x.y"), "not a valid version"),
        (("unyank", "missing-1.0.tar.gz"), "no file named missing-1.0.tar.gz"),
        (("status", "nothing-here", "archived"), "no project named nothing-here"),
        (("audit", "--since", "yesterday"), "--since 'yesterday'"),
    ]:
        proc = pypid(governed, *args, check=False)
        assert proc.returncode == 1, (args, proc.stdout, proc.stderr)
        assert proc.stderr.count("\n") == 1 and says in proc.stderr, proc.stderr


def test_the_audit_log_names_every_change_and_proves_its_chain(governed: Server) -> None:
    pypid(governed, "yank", "gov_demo-1.0-py3-none-any.whl")
    pypid(governed, "unyank", "gov_demo-1.0-py3-none-any.whl")
    listing = pypid(governed, "audit", "--project", "GOV-demo").stdout.splitlines()
    assert any(" yank project=gov-demo file=gov_demo-1.0-py3-none-any.whl" in line
               for line in listing), listing
    assert all(" cli:" in line for line in listing)
    lines = pypid(governed, "audit", "--json").stdout.splitlines()
    assert lines and all(line.startswith('{"seq":') for line in lines)
    assert "the chain is intact" in pypid(governed, "audit", "--verify").stdout
    log = governed.root / ".pypid" / "audit.jsonl"
    original = log.read_bytes()
    try:
        rows = original.splitlines(keepends=True)
        rows[0] = rows[0].replace(b"cli:", b"cli:someone-else-")
        log.write_bytes(b"".join(rows))
        proc = pypid(governed, "audit", "--verify", check=False)
        assert proc.returncode == 1 and "line 2:" in proc.stderr, proc.stderr
    finally:
        log.write_bytes(original)
