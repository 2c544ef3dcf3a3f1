"""Owners, admins, removal and the management API, against a real server with two
workers and real twine, pip and curl: who may upload and manage what, what each
refusal says, a removed name staying taken, pypiserver's remove_pkg, and the
audit lines every change leaves."""

from __future__ import annotations

import base64
import hashlib
import http.client
import json
import os
import shutil
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from tests.builders import make_sdist, make_wheel
from tests.integration.harness import REPO_ROOT, STARTED, launch, stop, write_config
from tests.integration.helpers import (
    Server,
    client_tool,
    get,
    project_json,
    run_client,
    until,
)

pytestmark = pytest.mark.server
PASSWORDS = {"alice": "Al1ce-pw-93f1", "bob": "B0b-pw-27c4", "root-admin": "Adm1n-pw-5d0e"}
PROBLEM = "application/problem+json"


@dataclass
class Governed:
    server: Server
    cfg: Path
    dist: Path  # built files, not yet uploaded

    def url(self, path: str) -> str:
        return self.server.url(path)


def cli(cfg: Path, *args: str, stdin: str | None = None,
        check: bool = True) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHONPATH": str(REPO_ROOT), "PYPID_BCRYPT_ROUNDS": "4"}
    proc = subprocess.run([sys.executable, "-m", "pypid", *args, "--config", str(cfg)],
                          input=stdin, capture_output=True, text=True, env=env, timeout=60,
                          check=False)
    if check:
        assert proc.returncode == 0, proc.stdout + proc.stderr
    return proc


@pytest.fixture(scope="module")
def gov(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Governed]:
    work = tmp_path_factory.mktemp("owners")
    root = work / "packages"
    root.mkdir()
    # Copied in by hand, with pypiserver's hard spellings: nobody owns these yet.
    for version in ("1.0", "1.1"):
        sdist = make_sdist(work / "hand", "odd.name", version)
        shutil.copy(sdist, root / f"Odd.Name-{version}.tar.gz")
    shutil.copy(make_wheel(work / "hand", "odd.name", "1.0"), root)
    cfg = work / "pypid.toml"
    write_config(cfg, root, url_prefix="", upstream="redirect", settings={
        "server": {"workers": 2},
        "auth": {"htpasswd": str(work / "htpasswd"), "admins": ["root-admin"]},
    })
    for user, password in PASSWORDS.items():
        cli(cfg, "user", "add", user, "--password-stdin", stdin=password + "\n")
    srv = launch(cfg, root, log=work / "server.log")
    STARTED.append(srv)
    yield Governed(srv, cfg, work / "dist")
    stop(srv.proc)


def auth(user: str) -> dict[str, str]:
    token = base64.b64encode(f"{user}:{PASSWORDS[user]}".encode()).decode()
    return {"Authorization": f"Basic {token}"}


@dataclass
class Answer:
    status: int
    headers: http.client.HTTPMessage
    body: bytes

    def json(self) -> Any:
        return json.loads(self.body)


def call(gov: Governed, method: str, path: str, user: str | None = None,
         body: object = None) -> Answer:
    conn = http.client.HTTPConnection("127.0.0.1", gov.server.port, timeout=30)
    try:
        headers = auth(user) if user else {}
        data = None if body is None else json.dumps(body).encode()
        if data is not None:
            headers["Content-Type"] = "application/json"
        conn.request(method, path, body=data, headers=headers)
        resp = conn.getresponse()
        return Answer(resp.status, resp.msg, resp.read())
    finally:
        conn.close()


def refused(answer: Answer, status: int, says: str) -> None:
    """An RFC 9457 problem document with a one-line detail."""
    assert answer.status == status, (answer.status, answer.body)
    assert answer.headers["Content-Type"] == PROBLEM
    problem = answer.json()
    assert problem["status"] == status and "\n" not in problem["detail"]
    assert says in problem["detail"], problem["detail"]


def twine(gov: Governed, tmp: Path, user: str, *files: Path,
          ok: bool = True) -> subprocess.CompletedProcess[str]:
    cmd = [client_tool("twine"), "upload", "--repository-url", gov.url("/"), "-u", user,
           "-p", PASSWORDS[user], "--non-interactive", "--disable-progress-bar",
           *map(str, files)]
    if ok:
        return subprocess.CompletedProcess(cmd, 0, run_client(cmd, tmp), "")
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=120, check=False,
                          cwd=tmp)
    assert proc.returncode != 0, proc.stdout + proc.stderr
    return proc


def page(gov: Governed, project: str) -> dict[str, Any]:
    return project_json(gov.url(f"/simple/{project}/"))


def audit(gov: Governed, *args: str) -> list[dict[str, Any]]:
    out = cli(gov.cfg, "audit", "--json", *args).stdout
    return [json.loads(line) for line in out.splitlines()]


def filenames(gov: Governed, project: str) -> set[str]:
    return {f["filename"] for f in page(gov, project)["files"]}


def test_start_up_log_names_the_projects_nobody_owns(gov: Governed) -> None:
    assert "1 project(s) have no owner yet (odd-name)" in gov.server.log_text()
    listing = cli(gov.cfg, "owner", "list").stdout
    assert "odd-name: (no owner yet)" in listing


def test_first_uploader_owns_the_project_others_get_403_until_an_admin_adds_them(
        gov: Governed, tmp_path: Path) -> None:
    first = make_wheel(gov.dist, "team-a", "1.0")
    twine(gov, tmp_path, "alice", first)
    line = audit(gov, "--project", "team-a")[-1]
    assert line["action"] == "upload" and line["user"] == "alice"
    assert line["client"] == "127.0.0.1" and line["file"] == first.name
    assert line["sha256"] == hashlib.sha256(first.read_bytes()).hexdigest()
    assert line["size"] == first.stat().st_size
    facts = call(gov, "GET", "/api/v1/projects/Team_A", "bob").json()
    assert facts["owners"] == ["alice"]
    assert facts["files"][0]["uploader"] == "alice" and facts["files"][0]["yanked"] is False

    second = make_wheel(gov.dist, "team-a", "1.1")
    proc = twine(gov, tmp_path, "bob", second, ok=False)
    shown = " ".join((proc.stdout + proc.stderr).split())
    assert "403" in shown and "bob may not upload to team-a: only its owners (alice)" in shown
    refused(call(gov, "PUT", "/api/v1/projects/team-a/owners/bob", "alice"), 403,
            "managing owners needs an admin (alice is not one)")
    assert call(gov, "PUT", "/api/v1/projects/team-a/owners/bob", "root-admin").status == 204
    twine(gov, tmp_path, "bob", second)  # at once: no reload, whichever worker takes it
    assert set(call(gov, "GET", "/api/v1/projects/team-a", "bob").json()["owners"]) \
        == {"alice", "bob"}
    assert cli(gov.cfg, "owner", "list", "team-a").stdout.strip() == "team-a: alice bob"


def test_the_management_api_refuses_plainly(gov: Governed, tmp_path: Path) -> None:
    twine(gov, tmp_path, "alice", make_wheel(gov.dist, "team-c", "1.0"))
    wheel = "team_c-1.0-py3-none-any.whl"
    answer = call(gov, "PUT", f"/api/v1/files/{wheel}/yank", body={"reason": "x"})
    refused(answer, 401, "needs a login")
    assert answer.headers["WWW-Authenticate"].startswith("Basic")
    refused(call(gov, "PUT", f"/api/v1/files/{wheel}/yank", "bob"), 403,
            "bob may not yank files of team-c: only its owners (alice) and admins may")
    refused(call(gov, "PUT", "/api/v1/projects/team-c/status", "alice",
                 {"status": "retired"}), 400, "unknown status 'retired'")
    refused(call(gov, "PUT", "/api/v1/files/nothing-1.0.tar.gz/yank", "alice"), 404,
            "no file named nothing-1.0.tar.gz")
    refused(call(gov, "GET", "/api/v1/projects/nothing-here", "alice"), 404,
            "no project named nothing-here")
    refused(call(gov, "GET", "/api/v1/audit", "alice"), 403, "needs an admin")
    refused(call(gov, "PUT", "/api/v1/projects/odd-name/status", "alice",
                 {"status": "archived"}), 403, "it has no owner yet, so only admins may")
    refused(call(gov, "PUT", "/api/v1/projects/team-c/owners/ghost", "root-admin"), 400,
            "no user named 'ghost'")
    conn = http.client.HTTPConnection("127.0.0.1", gov.server.port, timeout=30)
    conn.request("PUT", f"/api/v1/files/{wheel}/yank", body=b"{not json",
                 headers=auth("alice"))
    resp = conn.getresponse()
    assert resp.status == 400 and b"not JSON" in resp.read()
    conn.close()


def test_yank_and_status_through_the_api_show_on_every_page(gov: Governed,
                                                             tmp_path: Path) -> None:
    files = [make_wheel(gov.dist, "team-d", "1.0"), make_sdist(gov.dist, "team-d", "1.0")]
    twine(gov, tmp_path, "alice", *files)
    wheel = files[0].name
    assert call(gov, "PUT", f"/api/v1/files/{wheel}/yank", "alice",
                {"reason": "bad build"}).status == 204

    def yank_of() -> object:
        return {f["filename"]: f["yanked"] for f in page(gov, "team-d")["files"]}[wheel]

    until(lambda: yank_of() == "bad build", "the yank never showed")
    until(lambda: 'data-yanked="bad build"' in get(gov.url("/simple/team-d/")).text,
          "the yank never showed in HTML")
    assert call(gov, "GET", "/api/v1/projects/team-d", "alice").json()["files"][0]["yanked"] \
        in ("bad build", False)  # one of two files; which comes first is the index's order
    assert call(gov, "DELETE", f"/api/v1/files/{wheel}/yank", "alice").status == 204
    until(lambda: yank_of() is False, "the unyank never showed")

    assert call(gov, "PUT", "/api/v1/projects/team-d/status", "alice",
                {"status": "archived", "reason": "use team-e"}).status == 204
    until(lambda: page(gov, "team-d")["project-status"]
          == {"status": "archived", "reason": "use team-e"}, "archived never showed")
    proc = twine(gov, tmp_path, "alice", make_wheel(gov.dist, "team-d", "1.1"), ok=False)
    shown = " ".join((proc.stdout + proc.stderr).split())
    assert "403" in shown and "team-d is archived: use team-e" in shown
    assert call(gov, "PUT", "/api/v1/projects/team-d/status", "root-admin",
                {"status": "active"}).status == 204
    actions = [line["action"] for line in audit(gov, "--project", "team-d")]
    assert actions == ["upload", "upload", "yank", "unyank", "status", "status"]


def test_a_removed_name_stays_taken_and_the_same_bytes_restore_it(gov: Governed,
                                                                   tmp_path: Path) -> None:
    wheel = make_wheel(gov.dist, "team-f", "1.0")
    twine(gov, tmp_path, "alice", wheel)
    assert call(gov, "DELETE", f"/api/v1/files/{wheel.name}", "alice").status == 204
    assert get(gov.url(f"/packages/{wheel.name}")).status == 404  # this worker: at once
    until(lambda: get(gov.url(f"/packages/{wheel.name}")).status == 404, "still served")
    # Its name is this index's: never sent upstream, though it has no files now.
    until(lambda: get(gov.url("/simple/team-f/")).status == 404, "still listed")
    assert get(gov.url("/simple/never-here/")).status == 302
    other = make_wheel(tmp_path / "other", "team-f", "1.0", payload=b"other bytes")
    assert other.name == wheel.name
    proc = twine(gov, tmp_path, "alice", other, ok=False)
    assert "409" in proc.stdout + proc.stderr and "File already exists" in proc.stdout + proc.stderr
    twine(gov, tmp_path, "alice", wheel)  # the same bytes: restored
    until(lambda: get(gov.url(f"/packages/{wheel.name}")).status == 200, "not restored")
    assert get(gov.url(f"/packages/{wheel.name}")).body == wheel.read_bytes()
    removed = [line for line in audit(gov, "--project", "team-f") if line["action"] == "remove"]
    assert removed[0]["sha256"] == hashlib.sha256(wheel.read_bytes()).hexdigest()
    assert removed[0]["user"] == "alice" and removed[0]["size"] == wheel.stat().st_size


def test_remove_pkg_from_curl_as_pypiserver_users_send_it(gov: Governed) -> None:
    curl = shutil.which("curl")
    if curl is None:
        pytest.skip("no curl here")
    url = gov.url("/")
    base = [curl, "-sS", "-o", "/dev/null", "-w", "%{http_code}", "-F", ":action=remove_pkg",
            "-F", "name=Odd_Name", "-F", "version=1.0"]

    def run(*extra: str) -> str:
        return subprocess.run([*base, *extra, url], capture_output=True, text=True,
                              timeout=30, check=True).stdout

    assert run() == "401"
    assert run("-u", f"alice:{PASSWORDS['alice']}") == "403"  # nobody owns it: admins only
    assert run("-u", f"root-admin:{PASSWORDS['root-admin']}") == "200"
    until(lambda: filenames(gov, "odd-name") == {"Odd.Name-1.1.tar.gz"},
          "release 1.0 (an sdist named Odd.Name-1.0.tar.gz and its wheel) not all removed")
    assert run("-u", f"root-admin:{PASSWORDS['root-admin']}") == "404"
    left = [p.name for p in gov.server.root.iterdir() if p.name.lower().startswith("odd")]
    assert left == ["Odd.Name-1.1.tar.gz"]


def test_cli_remove_and_owner_commands(gov: Governed) -> None:
    proc = cli(gov.cfg, "owner", "add", "odd-name", "ghost", check=False)
    assert proc.returncode == 1 and proc.stderr.count("\n") == 1
    assert "no user named 'ghost'" in proc.stderr
    cli(gov.cfg, "owner", "add", "odd-name", "bob")
    assert cli(gov.cfg, "owner", "list", "Odd.Name").stdout.strip() == "odd-name: bob"
    done = cli(gov.cfg, "remove", "odd-name==1.1", "--yes")
    assert done.stdout.strip() == "removed Odd.Name-1.1.tar.gz"
    assert not (gov.server.root / "Odd.Name-1.1.tar.gz").exists()
    until(lambda: get(gov.url("/packages/Odd.Name-1.1.tar.gz")).status == 404, "still served")
    proc = cli(gov.cfg, "remove", "odd-name==1.1", "--yes", check=False)
    assert proc.returncode == 1 and "no release odd-name==1.1" in proc.stderr
    lines = audit(gov, "--project", "odd-name")
    assert [line["action"] for line in lines][-2:] == ["owner-add", "remove"]
    assert lines[-1]["user"].startswith("cli:") and lines[-1]["client"] is None
    assert "the chain is intact" in cli(gov.cfg, "audit", "--verify").stdout


def test_the_audit_api_serves_json_lines_to_admins(gov: Governed) -> None:
    answer = call(gov, "GET", "/api/v1/audit?project=Team_A", "root-admin")
    assert answer.status == 200 and answer.headers["Content-Type"] == "application/jsonl"
    lines = [json.loads(line) for line in answer.body.splitlines()]
    assert lines and {line["project"] for line in lines} == {"team-a"}
    assert list(lines[0])[:5] == ["seq", "time", "user", "client", "action"]
    assert list(lines[0])[-1] == "prev"
    refused(call(gov, "GET", "/api/v1/audit?since=yesterday", "root-admin"), 400,
            "since 'yesterday'")
    users = [line for line in audit(gov) if line["action"] == "user-add"]
    assert [line["owner"] for line in users] == list(PASSWORDS)


def test_a_change_a_browser_sends_from_another_site_is_refused(gov: Governed) -> None:
    """Browsers attach a remembered Basic login to any site's form posting here."""
    for headers in ({"Origin": "https://evil.example"}, {"Sec-Fetch-Site": "cross-site"}):
        conn = http.client.HTTPConnection("127.0.0.1", gov.server.port, timeout=30)
        body = b":action=remove_pkg&name=team-a&version=1.0"
        conn.request("POST", "/", body=body, headers={
            **auth("root-admin"), **headers,
            "Content-Type": "application/x-www-form-urlencoded"})
        resp = conn.getresponse()
        assert resp.status == 403 and b"cross-site" in resp.read(), headers
        conn.close()
    assert filenames(gov, "team-a")  # nothing removed
    same = {"Origin": f"http://127.0.0.1:{gov.server.port}"}
    conn = http.client.HTTPConnection("127.0.0.1", gov.server.port, timeout=30)
    conn.request("GET", "/api/v1/projects/team-a", headers={**auth("alice"), **same})
    assert conn.getresponse().status == 200
    conn.close()
