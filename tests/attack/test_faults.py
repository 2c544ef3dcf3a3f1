"""Faults during uploads: workers killed mid-upload, and a full file system.

Afterwards the package root holds only whole files that were sent (no dot-file, no
temporary name, no partial file), and the index (``/simple/`` pages, ``/health``)
matches the disk, while running and after a restart.
"""

from __future__ import annotations

import contextlib
import http.client
import os
import signal
import socket
import subprocess
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from pypid.auth import Htpasswd
from tests.attack.conftest import GUARDED, LOGIN, PASSWORD, USER
from tests.attack.forms import BOUNDARY, body, post, upload_parts
from tests.attack.harness import Guarded, start_guarded
from tests.builders import make_wheel
from tests.integration.helpers import JSON_TYPE, get
from tests.integration.test_uploads import wait_for, wait_stable

pytestmark = pytest.mark.server
KILLS = 100
STABLE = 1.5  # seconds every answer must agree with the disk
MIB = 1024 * 1024


# -- helpers


def workers(srv: Guarded) -> list[int]:
    pid = srv.server.proc.pid
    try:
        return [int(p) for p in Path(f"/proc/{pid}/task/{pid}/children").read_text().split()]
    except OSError:
        return []


def receiving(pid: int, root: Path) -> bool:
    """Does pid hold an upload open in root (an unnamed file, or a named temp file)?"""
    with contextlib.suppress(OSError):
        for fd in Path(f"/proc/{pid}/fd").iterdir():
            with contextlib.suppress(OSError):
                target = os.readlink(fd)
                if target.startswith(f"{root}/") and not target.startswith(f"{root}/.pypid"):
                    return True
    return False


def on_disk(root: Path) -> dict[str, bytes]:
    """Every entry below root but pypid's own folder, dot-files included, with its bytes."""
    found: dict[str, bytes] = {}
    for dirpath, dirnames, filenames in os.walk(root):
        rel = Path(dirpath).relative_to(root)
        dirnames[:] = [d for d in dirnames if not (rel == Path(".") and d == ".pypid")]
        for name in [*filenames, *dirnames]:
            path = Path(dirpath, name)
            found[(rel / name).as_posix()] = path.read_bytes() if path.is_file() else b"<dir>"
    return found


def listed(srv: Guarded, project: str) -> set[str]:
    resp = get(srv.server.url(f"/simple/{project}/"), Accept=JSON_TYPE)
    if resp.status == 404:
        return set()
    assert resp.status == 200, resp.describe()
    return {f["filename"] for f in resp.json()["files"]}


def assert_index_matches_disk(srv: Guarded, project: str, names: set[str]) -> None:
    """Every answer (from any worker) lists exactly the files on disk, for STABLE seconds
    in a row. A worker forked after a kill answers from the master's snapshot until its
    catch-up scan ends (about a second): the window this waits out."""
    seen: list[object] = []

    def agrees() -> bool:
        health = get(srv.server.url("/health")).json()
        seen[:] = [listed(srv, project), health]
        return seen[0] == names and (health["files"], health["projects"]) == (
            len(names), 1 if names else 0)

    if not wait_stable(agrees, timeout=20, stable=STABLE):
        pytest.fail(f"the index does not match the disk ({len(names)} files): {seen}")


def start(work: Path, root: Path, workers_: int) -> Guarded:
    """A server on root under the suite's limits (and its after-test RSS check)."""
    work.mkdir(parents=True, exist_ok=True)
    htpasswd = work / "htpasswd"
    if not htpasswd.exists():
        Htpasswd(htpasswd).add(USER, PASSWORD)
    settings = {"server": {"workers": workers_},
                "auth": {"htpasswd": str(htpasswd), "protect": ["upload"]}}
    guarded = start_guarded(work, root, settings=settings)
    GUARDED.append(guarded)
    return guarded


@contextlib.contextmanager
def tmpfs(path: Path, size: str) -> Iterator[None]:
    path.mkdir()
    proc = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(path)],
                          capture_output=True, text=True, timeout=30, check=False)
    if proc.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {proc.stderr.strip() or proc.returncode}")
    try:
        yield
    finally:
        subprocess.run(["umount", "-l", str(path)], capture_output=True, timeout=30,
                       check=False)


# -- workers killed in the middle of uploads


def test_workers_killed_mid_upload(tmp_path: Path) -> None:
    """KILLS times: uploads half sent, one worker receiving them SIGKILLed, while other
    uploads run to the end; then only whole files that were sent are in the root, and
    the index matches it, while running and after a restart."""
    root = tmp_path / "packages"
    root.mkdir()
    srv = start(tmp_path, root, 2)
    sent: dict[str, bytes] = {}
    stored: set[str] = set()
    done = threading.Event()
    steady = threading.Thread(target=_steady_uploads, name="steady-uploads",
                              args=(srv, tmp_path / "dist", sent, stored, done))
    try:
        steady.start()
        for _ in range(KILLS):
            _kill_one_receiving(srv, root)
        done.set()
        steady.join(timeout=60)
        assert not steady.is_alive()
        assert len(stored) >= 10, "too few uploads got through to prove anything"
        disk = on_disk(root)
        assert {name: sent.get(name) for name in disk} == disk  # whole files that were sent
        assert stored <= set(disk)
        assert_index_matches_disk(srv, "steady", set(disk))
        assert listed(srv, "halfsent") == set()
    finally:
        done.set()
        srv.close()
    again = start(tmp_path / "again", root, 2)
    try:
        assert on_disk(root) == disk
        assert_index_matches_disk(again, "steady", set(disk))
        assert listed(again, "halfsent") == set()
    finally:
        again.close()


def _kill_one_receiving(srv: Guarded, root: Path) -> None:
    """Start two uploads that stop half way, SIGKILL a worker that receives one, and wait
    for the master to replace it."""
    wheel = make_wheel(root.parent / "half", "halfsent", "1.0")
    parts = upload_parts(wheel, "halfsent", "1.0")
    head = body(parts).split(wheel.read_bytes()[:64])[0]
    raw = (f"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: {len(head) + 4 * MIB}\r\n"
           f"Content-Type: multipart/form-data; boundary={BOUNDARY}\r\n"
           f"Authorization: {LOGIN['Authorization']}\r\n\r\n").encode() + head
    socks = [socket.create_connection((srv.server.host, srv.server.port), timeout=10)
             for _ in range(2)]
    try:
        for sock in socks:
            sock.sendall(raw + os.urandom(128 * 1024))
        victim = wait_for("a worker receiving an upload", lambda: next(
            (pid for pid in workers(srv) if receiving(pid, root)), None))
        os.kill(victim, signal.SIGKILL)  # a worker of the server this test started
        wait_for("a new worker", lambda: len(set(workers(srv)) - {victim}) == 2)
    finally:
        for sock in socks:
            sock.close()


def _steady_uploads(srv: Guarded, dist: Path, sent: dict[str, bytes], stored: set[str],
                    done: threading.Event) -> None:
    """Whole uploads, one after another, until done; a killed worker's are lost."""
    for i in range(10_000):
        if done.is_set():
            return
        wheel = make_wheel(dist, "steady", f"1.{i}", payload=os.urandom(64 * 1024))
        sent[wheel.name] = wheel.read_bytes()
        try:
            answer = post(srv.server, upload_parts(wheel, "steady", f"1.{i}"), LOGIN,
                          timeout=20)
        except (OSError, http.client.HTTPException):
            continue  # the worker was killed: stored or not, never half
        if answer.status == 200:
            stored.add(wheel.name)


# -- a full file system


def test_full_disk(tmp_path: Path) -> None:
    """An 8 MiB tmpfs as the root: uploads until 507, nothing partial, earlier files
    intact and served, and uploads work again once a file is removed."""
    root = tmp_path / "packages"
    with tmpfs(root, "8m"):
        srv = start(tmp_path, root, 1)
        try:
            stored, refused = _fill(srv, root, tmp_path / "dist")
            _recover(srv, root, stored, refused)
        finally:
            srv.close()


def test_page_file_leaves_the_last_space(tmp_path: Path) -> None:
    """The disk filled by uploads, then the project's pages change (files touched, so read
    again) and are visited in every variant: the workers' page files take none of the
    last free space (the index's own cache may write a few rows: it is not measured)."""
    root = tmp_path / "packages"
    with tmpfs(root, "8m"):
        srv = start(tmp_path, root, 1)
        try:
            _fill(srv, root, tmp_path / "dist")
            for name in sorted(p.name for p in root.glob("*.whl"))[:4]:
                os.utime(root / name)
                time.sleep(0.5)  # past the watcher's settle time: the pages change
                _visit_pages(srv)
                assert _page_file_bytes(srv, root) == 0
        finally:
            srv.close()


def _page_file_bytes(srv: Guarded, root: Path) -> int:
    """What the workers' own unlinked page files below ``root`` hold (not the master's,
    rendered at the start and never written again, which the workers read too)."""
    masters = {st.st_ino for st in _unlinked_below(srv.server.proc.pid, root)}
    return sum(st.st_size for pid in workers(srv) for st in _unlinked_below(pid, root)
               if st.st_ino not in masters)


def _unlinked_below(pid: int, root: Path) -> list[os.stat_result]:
    found = []
    for link in Path(f"/proc/{pid}/fd").iterdir():
        with contextlib.suppress(OSError):
            target = os.readlink(link)
            if target.startswith(str(root)) and target.endswith("(deleted)"):
                found.append(link.stat())
    return found


def _fill(srv: Guarded, root: Path, dist: Path) -> tuple[dict[str, bytes], Path]:
    """Upload 700 KiB wheels until one is refused with 507; what was stored, what was not."""
    stored: dict[str, bytes] = {}
    refused = None
    for i in range(40):
        wheel = make_wheel(dist, "full", f"1.{i}", payload=os.urandom(700 * 1024))
        answer = post(srv.server, upload_parts(wheel, "full", f"1.{i}"), LOGIN)
        if answer.status != 200:
            assert answer.status == 507, answer.describe()
            assert answer.text.count("\n") == 1 and answer.text.strip() == answer.reason
            assert "no space left" in answer.reason
            refused = wheel
            break
        stored[wheel.name] = wheel.read_bytes()
        _visit_pages(srv)  # the page file stores them while there is room
    assert refused is not None and len(stored) >= 5
    assert on_disk(root) == stored  # nothing partial, nothing hidden, earlier files intact
    assert_index_matches_disk(srv, "full", set(stored))
    for name, data in stored.items():
        assert get(srv.server.url(f"/packages/{name}")).body == data
    return stored, refused


def _recover(srv: Guarded, root: Path, stored: dict[str, bytes], refused: Path) -> None:
    # Space returns: a file removed by hand, and the refused upload goes through.
    gone = sorted(stored)[0]
    (root / gone).unlink()
    del stored[gone]
    answer = post(srv.server, upload_parts(refused, "full", refused.name.split("-")[1]), LOGIN)
    assert answer.status == 200, answer.describe()
    stored[refused.name] = refused.read_bytes()
    assert on_disk(root) == stored
    assert_index_matches_disk(srv, "full", set(stored))


def _visit_pages(srv: Guarded) -> None:
    for path in ("/", "/simple/", "/simple/full/"):
        for accept in ("text/html", JSON_TYPE, "application/vnd.pypi.simple.v1+html"):
            assert get(srv.server.url(path), Accept=accept).status == 200
