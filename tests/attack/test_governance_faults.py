"""Governance under faults: concurrent changes, a torn audit line, a full disk, a removal
interrupted by a kill. Real servers with two workers; the audit log is read byte by byte.

Every change counts once its log line is written: afterwards the log holds exactly the
changes that answered success, its chain verifies, and every page of every worker shows
the state the log's last lines say.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import http.client
import json
import os
import random
import shutil
import signal
import subprocess
import sys
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from pypid.auth import Htpasswd
from pypid.events import EventLog, decode
from tests.attack.conftest import GUARDED, LOGIN, PASSWORD, USER
from tests.attack.forms import post, upload_parts
from tests.attack.harness import Guarded, start_guarded
from tests.attack.test_faults import tmpfs
from tests.builders import make_wheel
from tests.integration.harness import REPO_ROOT, TomlValue
from tests.integration.helpers import JSON_TYPE, Response, Server, parse_page
from tests.integration.test_governance import pypid

pytestmark = pytest.mark.server
LIVE = 2.5  # DESIGN: every page shows a change within two seconds, plus the polling
STREAK = 8  # answers in a row that must agree, from every worker
CHANGES = 30  # per driver (two API threads, one CLI loop)
STATUSES = ("active", "deprecated", "archived")  # the ones that keep files listed
PAGE = 4096  # tmpfs allocates whole pages


# -- servers, requests


def start(work: Path, root: Path, *,
          settings: dict[str, dict[str, TomlValue]] | None = None) -> Guarded:
    """A server (two workers) on root with alice as admin (uploads need a login), plus
    ``settings``; config in work."""
    work.mkdir(parents=True, exist_ok=True)
    htpasswd = work / "htpasswd"
    if not htpasswd.exists():
        Htpasswd(htpasswd).add(USER, PASSWORD)
    chosen: dict[str, dict[str, TomlValue]] = {
        "server": {"workers": 2},
        "auth": {"htpasswd": str(htpasswd), "protect": ["upload"], "admins": [USER]},
        **(settings or {})}
    guarded = start_guarded(work, root, settings=chosen)
    GUARDED.append(guarded)
    return guarded


def api(srv: Server, method: str, path: str, body: dict[str, Any] | None = None) -> Response:
    """One management request as alice, on a new connection (any worker may take it)."""
    conn = http.client.HTTPConnection(srv.host, srv.port, timeout=30)
    try:
        conn.request(method, srv.prefix + "/api/v1" + path,
                     body=None if body is None else json.dumps(body),
                     headers={**LOGIN, "Content-Type": "application/json"})
        resp = conn.getresponse()
        return Response(resp.status, resp.reason, resp.msg, resp.read(), path)
    finally:
        conn.close()


def ask(srv: Guarded, path: str, headers: dict[str, str]) -> tuple[int | None, Response]:
    """GET on a new connection: (the worker that answered, if found; the answer)."""
    server = srv.server
    conn = http.client.HTTPConnection(server.host, server.port, timeout=10)
    try:
        conn.request("GET", server.prefix + path,
                     headers={"Accept-Encoding": "identity", **headers})
        resp = conn.getresponse()
        answer = Response(resp.status, resp.reason, resp.msg, resp.read(), path)
        return _worker_of(srv, conn.sock.getsockname()[1]), answer
    finally:
        conn.close()


def _worker_of(srv: Guarded, client_port: int) -> int | None:
    """The worker holding the server end of our kept-alive connection: its socket inode
    (from /proc/net/tcp) among the workers' descriptors."""
    inode = None
    for line in Path("/proc/net/tcp").read_text().splitlines()[1:]:
        fields = line.split()
        local, remote = fields[1].split(":")[1], fields[2].split(":")[1]
        if int(local, 16) == srv.server.port and int(remote, 16) == client_port:
            inode = fields[9]
    if inode in (None, "0"):
        return None
    for pid in srv.workers():
        with contextlib.suppress(OSError):
            for fd in Path(f"/proc/{pid}/fd").iterdir():
                with contextlib.suppress(OSError):
                    if os.readlink(fd) == f"socket:[{inode}]":
                        return pid
    return None


def on_every_worker(srv: Guarded, what: str, probe: Callable[[Response], object],
                    path: str, headers: dict[str, str] | None = None, *,
                    deadline: float | None = None) -> None:
    """Poll until STREAK answers in a row pass and every worker gave one of them, by
    ``deadline`` (default LIVE seconds from now); the last failed answer is in the message."""
    deadline = deadline or time.monotonic() + LIVE
    passed, seen, last = 0, set(), None
    for _ in range(2000):
        pid, answer = ask(srv, path, headers or {})
        if probe(answer):
            passed += 1
            seen.add(pid)
            if passed >= STREAK and seen >= set(srv.workers()):
                return
            continue
        passed, seen, last = 0, set(), answer
        assert time.monotonic() < deadline, f"{what}: {last.status} {last.text[:300]}"
        time.sleep(0.02)
    pytest.fail(f"{what}: not every worker answered in 2000 requests ({seen})")


def log_lines(root: Path) -> list[bytes]:
    path = root / ".pypid" / "audit.jsonl"
    return path.read_bytes().splitlines() if path.exists() else []


def verify(srv: Server) -> None:
    done = pypid(srv, "audit", "--verify")
    assert "the chain is intact" in done.stdout, done.stdout


# -- what the log says, and what the pages say


def state(lines: list[bytes]) -> tuple[dict[str, str | bool], dict[str, str]]:
    """The yank mark of every file the lines name and did not remove (False: none), and
    the project status ({"status", maybe "reason"}) the last status line says."""
    yanks: dict[str, str | bool] = {}
    status = {"status": "active"}
    for line in lines:
        event = decode(line)
        if event.action == "yank":
            yanks[event.get("file")] = event.get("reason") or True
        elif event.action == "unyank":
            yanks[event.get("file")] = False
        elif event.action == "remove":
            yanks.pop(event.get("file"), None)
        elif event.action == "status":
            status = {"status": event.get("status")}
            if event.get("status") != "active" and event.get("reason"):
                status["reason"] = event.get("reason")
    return yanks, status


def json_shows(yanks: dict[str, str | bool], status: dict[str, str], *,
               api: bool = False) -> Callable[[Response], bool]:
    """A probe of the JSON page (``api``: of the API's project facts)."""
    def probe(answer: Response) -> bool:
        if answer.status != 200:
            return False
        page = answer.json()
        marks = {f["filename"]: f["yanked"] for f in page["files"]}
        shown = page["status"] if api else page["project-status"]
        return shown == ({"reason": None, **status} if api else status) and all(
            marks.get(name) == mark for name, mark in yanks.items())
    return probe


def html_shows(yanks: dict[str, str | bool], status: dict[str, str]) -> Callable[[Response], bool]:
    def probe(answer: Response) -> bool:
        if answer.status != 200:
            return False
        page = parse_page(answer.text)
        marks: dict[str, str | bool] = {}
        for anchor in page.anchors:
            mark = anchor.attrs.get("data-yanked")
            marks[anchor.text.strip()] = False if mark is None else mark or True
        shown = {"status": page.meta.get("pypi:project-status")}
        if "pypi:project-status-reason" in page.meta:
            shown["reason"] = page.meta["pypi:project-status-reason"]
        return shown == status and all(marks.get(name) == mark
                                       for name, mark in yanks.items())
    return probe


def assert_pages_show(srv: Guarded, project: str, lines: list[bytes]) -> None:
    """Every worker's HTML and JSON page and API answer agree with the log's lines, all
    within LIVE seconds from now (the last change was just made)."""
    yanks, status = state(lines)
    page, deadline = f"/simple/{project}/", time.monotonic() + LIVE
    on_every_worker(srv, "JSON page", json_shows(yanks, status), page, {"Accept": JSON_TYPE},
                    deadline=deadline)
    on_every_worker(srv, "HTML page", html_shows(yanks, status), page, {"Accept": "text/html"},
                    deadline=deadline)
    on_every_worker(srv, "API facts", json_shows(yanks, status, api=True),
                    f"/api/v1/projects/{project}", LOGIN, deadline=deadline)


# -- a. concurrent changes


def test_concurrent_changes_lose_nothing(tmp_path: Path) -> None:
    """Two API threads (yank, unyank, status) and a CLI loop (yank, unyank) at once: one
    log line per change that succeeded, a chain that verifies, and every page of every
    worker showing what the log's last lines say."""
    root = tmp_path / "packages"
    names = [make_wheel(root, "race", f"{v}.0").name for v in range(1, 5)]
    srv = start(tmp_path, root)
    done: Counter[tuple[str, str]] = Counter()
    failures: list[str] = []
    lock = threading.Condition()
    cli_done = [0]  # the API drivers keep pace with the (slower) CLI loop: all overlap

    def api_driver(seed: int) -> None:
        rng = random.Random(seed)  # noqa: S311 - a repeatable mix
        for k in range(CHANGES):
            with lock:
                lock.wait_for(lambda k=k: cli_done[0] >= k, timeout=60)
            time.sleep(rng.uniform(0, 0.25))  # somewhere in the CLI's run, its write too
            kind = rng.choice(("yank", "unyank", "status"))
            if kind == "status":
                status = rng.choice(STATUSES)
                body = {"status": status, "reason": f"s{seed}-{k}"}
                answer = api(srv.server, "PUT", "/projects/race/status", body)
            else:
                method = "PUT" if kind == "yank" else "DELETE"
                answer = api(srv.server, method, f"/files/{rng.choice(names)}/yank",
                             {"reason": f"y{seed}-{k}"} if kind == "yank" else None)
            with lock:
                if answer.status == 204:
                    done[(USER, kind)] += 1
                else:
                    failures.append(f"API {kind}: {answer.status} {answer.text.strip()}")

    def cli_driver() -> None:
        rng = random.Random(99)  # noqa: S311 - a repeatable mix
        for k in range(CHANGES):
            kind, name = rng.choice(("yank", "unyank")), rng.choice(names)
            args = ("yank", name, "--reason", f"c{k}") if kind == "yank" else ("unyank", name)
            proc = pypid(srv.server, *args, check=False)
            with lock:
                if proc.returncode == 0:
                    done[("cli:root", kind)] += 1
                else:
                    failures.append(f"CLI {kind}: {proc.returncode} {proc.stderr.strip()}")
                cli_done[0] += 1
                lock.notify_all()

    before = log_lines(root)
    drivers = [threading.Thread(target=api_driver, args=(seed,)) for seed in (1, 2)]
    drivers.append(threading.Thread(target=cli_driver))
    for driver in drivers:
        driver.start()
    for driver in drivers:
        driver.join(timeout=300)
    assert not any(driver.is_alive() for driver in drivers)
    assert not failures, failures
    lines = log_lines(root)
    new = [decode(line) for line in lines[len(before):]]
    assert lines[:len(before)] == before
    assert Counter((event.user, event.action) for event in new) == done
    assert sum(done.values()) == 3 * CHANGES
    assert [event.seq for event in new] == list(range(len(before) + 1, len(lines) + 1))
    verify(srv.server)
    assert_pages_show(srv, "race", lines)


def test_racing_removals_of_one_file_one_wins(tmp_path: Path) -> None:
    """Four DELETEs of one file at once, over both workers: one 204, the others 404 (a
    file that is gone, never a 500), and one remove line per file."""
    root = tmp_path / "packages"
    names = [make_wheel(root, "rival", f"1.{i}").name for i in range(5)]
    srv = start(tmp_path, root)
    before = len(log_lines(root))
    for name in names:
        answers: list[Response] = []
        racers = [threading.Thread(target=lambda name=name, answers=answers: answers.append(
            api(srv.server, "DELETE", f"/files/{name}"))) for _ in range(4)]
        for racer in racers:
            racer.start()
        for racer in racers:
            racer.join(timeout=60)
        assert sorted(answer.status for answer in answers) == [204, 404, 404, 404], [
            (answer.status, answer.text) for answer in answers]
        assert all(answer.media_type == "application/problem+json"
                   for answer in answers if answer.status == 404)
    removed = [decode(line) for line in log_lines(root)[before:]]
    assert sorted(event.get("file") for event in removed) == sorted(names)
    assert {event.action for event in removed} == {"remove"}
    assert not [path for path in root.iterdir() if path.is_file()]
    verify(srv.server)


# -- b. a torn last line


def test_a_torn_last_line_is_cut_at_start(tmp_path: Path) -> None:
    """What a writer killed mid-line leaves: a partial last line. The next start cuts it
    (and says so), the chain verifies, and the next change appends after it."""
    root = tmp_path / "packages"
    name = make_wheel(root, "torn", "1.0").name
    srv = start(tmp_path, root)
    try:
        assert api(srv.server, "PUT", f"/files/{name}/yank", {"reason": "one"}).status == 204
    finally:
        srv.close()
    log = root / ".pypid" / "audit.jsonl"
    whole = log.read_bytes()
    with log.open("ab") as handle:
        handle.write(b'{"seq":2,"time":"2026-12-05T06:00:00.0000')
    again = start(tmp_path / "again", root)
    try:
        assert "removed a torn last line" in again.server.log_text()
        assert log.read_bytes() == whole
        verify(again.server)
        assert api(again.server, "DELETE", f"/files/{name}/yank").status == 204
        lines = log_lines(root)
        assert len(lines) == 2 and decode(lines[1]).action == "unyank"
        verify(again.server)
        assert_pages_show(again, "torn", lines)
    finally:
        again.close()


WRITER = """
import fcntl, os, sys
fd = os.open(sys.argv[1], os.O_RDWR | os.O_APPEND)
fcntl.flock(fd, fcntl.LOCK_EX)
os.write(fd, b'{"seq":99,"time":"2026-12-05T06:00')
os.fsync(fd)
print("torn", flush=True)
sys.stdin.read()
"""


def test_writers_killed_holding_or_awaiting_the_lock(tmp_path: Path) -> None:
    """Real SIGKILLs with the server running. A writer killed holding the log's lock, half
    a line written: the lock dies with it, and the server's next change cuts the half
    line. A `pypid yank` killed while it waits for the lock writes nothing."""
    srv, name, root = _one_yanked(tmp_path, "killed")
    log = root / ".pypid" / "audit.jsonl"
    whole = log.read_bytes()

    with subprocess.Popen([sys.executable, "-c", WRITER, str(log)], text=True,
                          stdin=subprocess.PIPE, stdout=subprocess.PIPE) as writer:
        try:
            assert writer.stdout is not None and writer.stdout.readline() == "torn\n"
        finally:
            os.kill(writer.pid, signal.SIGKILL)  # the writer this test started
            writer.wait(timeout=10)
    assert log.read_bytes().startswith(whole) and log.read_bytes() != whole
    assert api(srv.server, "DELETE", f"/files/{name}/yank").status == 204
    assert "removed a torn last line" in srv.server.log_text()
    lines = log_lines(root)
    assert len(lines) == 2 and decode(lines[1]).action == "unyank"
    verify(srv.server)

    waiting = len(log.read_bytes())
    with _holding_lock(log):
        cli = _cli(srv.server, "yank", name, "--reason", "never")
        try:
            _wait_for_lock(cli.pid, log, waiting=True)
        finally:
            os.kill(cli.pid, signal.SIGKILL)  # the CLI this test started
            cli.wait(timeout=10)
    assert len(log.read_bytes()) == waiting
    _the_next_change_appends(srv, name, root, 2)


def _one_yanked(tmp_path: Path, project: str) -> tuple[Guarded, str, Path]:
    """A server whose root holds one file of ``project``, yanked (one log line)."""
    root = tmp_path / "packages"
    name = make_wheel(root, project, "1.0").name
    srv = start(tmp_path, root)
    assert api(srv.server, "PUT", f"/files/{name}/yank", {"reason": "one"}).status == 204
    return srv, name, root


def _the_next_change_appends(srv: Guarded, name: str, root: Path, count: int) -> None:
    """The log of ``count`` lines verifies, the server's next yank is line count + 1, and
    every page shows it."""
    verify(srv.server)
    assert api(srv.server, "PUT", f"/files/{name}/yank", {"reason": "two"}).status == 204
    lines = log_lines(root)
    assert len(lines) == count + 1
    verify(srv.server)
    assert_pages_show(srv, decode(lines[-1]).get("project"), lines)


@contextlib.contextmanager
def _holding_lock(log: Path) -> Iterator[None]:
    fd = os.open(log, os.O_RDWR)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)


def _cli(srv: Server, *args: str) -> subprocess.Popen[bytes]:
    env = {**os.environ, "PYTHONPATH": str(REPO_ROOT)}
    return subprocess.Popen([sys.executable, "-m", "pypid", *args, "--config",
                             str(srv.root.parent / "pypid.toml")], env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def _wait_for_lock(pid: int, log: Path, *, waiting: bool) -> None:
    """Until /proc/locks shows ``pid`` waiting for (``->``) or holding the log's flock."""
    inode = f":{log.stat().st_ino}"
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        for line in Path("/proc/locks").read_text().splitlines():
            fields = line.split()[1:]  # [->] FLOCK ADVISORY WRITE PID MAJ:MIN:INODE ...
            if (fields[0] == "->") != waiting:
                continue
            fields = fields[1:] if waiting else fields
            if fields[0] == "FLOCK" and fields[3] == str(pid) and fields[4].endswith(inode):
                return
        time.sleep(0.02)
    pytest.fail(f"pypid (pid {pid}) never {'waited for' if waiting else 'held'} the log's "
                f"lock: {Path('/proc/locks').read_text()}")


def test_a_cli_killed_between_its_write_and_fsync(tmp_path: Path) -> None:
    """A real `pypid unyank` SIGKILLed while it holds the log's lock, its line written but
    not yet fsynced (strace holds it at the fsync): the line is whole and counts, the lock
    dies with it, and the server's next change appends after it."""
    if shutil.which("strace") is None or subprocess.run(
            ["strace", "-o", os.devnull, "true"], capture_output=True, timeout=30,
            check=False).returncode != 0:
        pytest.skip("strace is missing or cannot trace here")
    srv, name, root = _one_yanked(tmp_path, "stalled")
    log = root / ".pypid" / "audit.jsonl"
    whole = log.read_bytes()
    env = {**os.environ, "PYTHONPATH": str(REPO_ROOT)}
    with subprocess.Popen(
            ["strace", "-f", "-o", os.devnull, "-e", "trace=fsync",
             "-e", "inject=fsync:delay_enter=60000000", sys.executable, "-m", "pypid",
             "unyank", name, "--config", str(tmp_path / "pypid.toml")],
            env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL) as tracer:
        cli = _cli_under(tracer.pid)
        try:
            _wait_for_lock(cli, log, waiting=False)
            deadline = time.monotonic() + 30
            while log.read_bytes() == whole and time.monotonic() < deadline:
                time.sleep(0.02)
        finally:
            for pid in (cli, tracer.pid):  # the CLI this test started (stalled), its strace
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)
            tracer.wait(timeout=30)
    lines = log_lines(root)
    assert log.read_bytes().endswith(b"\n") and len(lines) == 2
    assert (decode(lines[1]).action, decode(lines[1]).user) == ("unyank", "cli:root")
    _the_next_change_appends(srv, name, root, 2)


def _cli_under(pid: int) -> int:
    """The pypid command strace ``pid`` runs, once it has exec'd (strace forks probes of
    its own first, which carry strace's command line)."""
    command = f"{sys.executable}\0-m\0pypid\0".encode()
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        with contextlib.suppress(OSError):
            for child in Path(f"/proc/{pid}/task/{pid}/children").read_text().split():
                with contextlib.suppress(OSError):
                    if Path(f"/proc/{child}/cmdline").read_bytes().startswith(command):
                        return int(child)
        time.sleep(0.02)
    os.kill(pid, signal.SIGKILL)  # the strace this test started
    pytest.fail(f"strace (pid {pid}) never ran pypid")


# -- c. a full disk


def test_a_full_disk_refuses_changes_and_changes_nothing(tmp_path: Path) -> None:
    """An 8 MiB tmpfs as the root, filled up: an API yank, a status change, a removal
    answer 507 problem+json and a CLI yank exits 1, each with one line, and nothing
    changes (log bytes, pages, the file); with space back the same changes work."""
    root = tmp_path / "packages"
    with tmpfs(root, "8m"):
        wheels = {v: make_wheel(root, "full", v) for v in ("1.0", "2.0")}
        first, second = (wheels[v].name for v in ("1.0", "2.0"))
        _fill_the_log_page(root, second)
        srv = start(tmp_path, root)
        try:
            before = _snapshot(srv, root, first)
            filler = root / ".pypid" / "filler"
            _fill(filler)
            for method, path, body in (
                    ("PUT", f"/files/{first}/yank", {"reason": "full"}),
                    ("PUT", "/projects/full/status", {"status": "archived"}),
                    ("DELETE", f"/files/{first}", None)):
                answer = api(srv.server, method, path, body)
                assert answer.status == 507, (method, path, answer.status, answer.text)
                assert answer.media_type == "application/problem+json"
                problem = answer.json()
                assert problem["status"] == 507 and "\n" not in problem["detail"], problem
                assert "no space left" in problem["detail"], problem
            cli = pypid(srv.server, "yank", first, "--reason", "full", check=False)
            assert cli.returncode == 1 and cli.stderr.count("\n") == 1, cli.stderr
            assert "no space left" in cli.stderr and not cli.stdout, cli
            assert _snapshot(srv, root, first) == before
            assert not list(root.glob(".pypid-removing-*"))

            filler.unlink()
            assert api(srv.server, "PUT", f"/files/{first}/yank",
                       {"reason": "full"}).status == 204
            assert api(srv.server, "PUT", "/projects/full/status",
                       {"status": "archived"}).status == 204
            assert pypid(srv.server, "unyank", first).returncode == 0
            assert api(srv.server, "DELETE", f"/files/{first}").status == 204
            assert not (root / first).exists() and not list(root.glob(".pypid-removing-*"))
            on_every_worker(srv, "the file removed", lambda a: a.status == 404,
                            f"/packages/{first}")
            verify(srv.server)
            lines = log_lines(root)
            assert [decode(line).action for line in lines[-4:]] == [
                "yank", "status", "unyank", "remove"]
            assert_pages_show(srv, "full", lines)
        finally:
            srv.close()


def test_an_overwrite_the_log_cannot_record_keeps_the_old_file(tmp_path: Path) -> None:
    """overwrite on, the disk full, then space freed a page at a time: every re-upload
    answers 507 until its bytes fit but its audit line does not. The old file stays,
    served by every worker; with space back the re-upload works."""
    root = tmp_path / "packages"
    with tmpfs(root, "8m"):
        old = make_wheel(root, "over", "1.0")
        before = old.read_bytes()
        new = make_wheel(tmp_path / "dist", "over", "1.0", payload=os.urandom(64 * 1024))
        _fill_the_log_page(root, old.name)
        srv = start(tmp_path, root, settings={"storage": {"overwrite": True}})
        try:
            log = (root / ".pypid" / "audit.jsonl").read_bytes()
            filler = root / ".pypid" / "filler"
            _fill(filler)
            full, pages = filler.stat().st_size, new.stat().st_size // PAGE
            for more in range(64):
                os.truncate(filler, full - (pages + more) * PAGE)
                answer = post(srv.server, upload_parts(new, "over", "1.0"), LOGIN)
                assert answer.status == 507, answer.describe()
                assert old.read_bytes() == before
                if "audit log" in answer.reason:
                    break
            else:
                pytest.fail("the audit log never was the one refusing")
            assert (root / ".pypid" / "audit.jsonl").read_bytes() == log
            assert not list(root.glob(".pypid-removing-*"))
            on_every_worker(srv, "the old file", lambda a: a.body == before,
                            f"/packages/{old.name}")

            filler.unlink()
            assert post(srv.server, upload_parts(new, "over", "1.0"), LOGIN).status == 200
            on_every_worker(srv, "the new file", lambda a: a.body == new.read_bytes(),
                            f"/packages/{old.name}")
            verify(srv.server)
        finally:
            srv.close()


def _fill_the_log_page(root: Path, name: str) -> None:
    """Log lines (status active, padded reasons) until the log's last page has no room
    for another line: on tmpfs a line that fits there needs no new page, full disk or not."""
    events = EventLog(root / ".pypid")
    events.append("yank", user="cli:root", project="full", file=name, reason="padding")
    for _ in range(20):
        room = PAGE - events.size() % PAGE - 1  # the newline
        if room < 100:
            return
        plain = len(events.path.read_bytes().splitlines()[-1])  # a line like the next one
        pad = max(0, min(room - 40, 1500) - plain)
        events.append("status", user="cli:root", project="full", status="active",
                      reason="p" * pad)
    pytest.fail("could not fill the audit log's last page")


def _fill(filler: Path) -> None:
    """Write zeros until the file system is full (a short write, then ENOSPC)."""
    chunk = bytes(64 * 1024)
    fd = os.open(filler, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        for _ in range(10_000):
            try:
                os.write(fd, chunk)
            except OSError as exc:
                assert exc.errno == errno.ENOSPC, exc
                return
        pytest.fail("the file system never filled up")
    finally:
        os.close(fd)


def _snapshot(srv: Guarded, root: Path, name: str) -> tuple[bytes, bytes, bytes, bytes, bytes]:
    """Log bytes, the JSON and HTML pages and the API facts, the file as served."""
    log = (root / ".pypid" / "audit.jsonl").read_bytes()
    pages = [ask(srv, "/simple/full/", {"Accept": accept})[1] for accept in (JSON_TYPE,
                                                                             "text/html")]
    facts = ask(srv, "/api/v1/projects/full", LOGIN)[1]
    served = ask(srv, f"/packages/{name}", {})[1]
    assert all(answer.status == 200 for answer in (*pages, facts, served))
    assert served.body == (root / name).read_bytes()
    return log, pages[0].body, pages[1].body, facts.body, served.body


# -- d. an interrupted removal


def test_an_interrupted_removal_is_finished_or_undone(tmp_path: Path) -> None:
    """Two files left aside (``.pypid-removing-NAME``) by a killed removal: the one whose
    removal was logged is gone at the next start, the other is back and served."""
    root = tmp_path / "packages"
    gone, back, kept = (make_wheel(root, "halfway", f"{v}.0") for v in (1, 2, 3))
    data = {path.name: path.read_bytes() for path in (gone, back, kept)}
    srv = start(tmp_path, root)
    try:
        assert api(srv.server, "DELETE", f"/files/{gone.name}").status == 204
    finally:
        srv.close()
    # As if killed after the line was written, before the unlink; and before the line.
    (root / f".pypid-removing-{gone.name}").write_bytes(data[gone.name])
    back.rename(root / f".pypid-removing-{back.name}")
    lines = log_lines(root)

    again = start(tmp_path / "again", root)
    try:
        assert sorted(path.name for path in root.iterdir() if path.is_file()) == sorted(
            [back.name, kept.name])
        assert back.read_bytes() == data[back.name]
        assert log_lines(root) == lines
        text = again.server.log_text()
        assert f"finished the interrupted removal of {gone.name}" in text
        assert f"put back {back.name}" in text

        def listed(answer: Response) -> bool:
            return answer.status == 200 and sorted(
                f["filename"] for f in answer.json()["files"]) == sorted([back.name, kept.name])

        on_every_worker(again, "listing", listed, "/simple/halfway/", {"Accept": JSON_TYPE})
        on_every_worker(again, "the file put back", lambda a: a.body == data[back.name],
                        f"/packages/{back.name}")
        on_every_worker(again, "the file removed", lambda a: a.status == 404,
                        f"/packages/{gone.name}")
        verify(again.server)
    finally:
        again.close()
