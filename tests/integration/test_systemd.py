"""systemd citizenship on a real `pypid serve`: notifications, reload under load, exit codes.

A real AF_UNIX datagram socket stands in for systemd's NOTIFY_SOCKET.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from tests.integration.harness import REPO_ROOT, stop, write_config
from tests.integration.helpers import get

pytestmark = pytest.mark.server
LISTENING = "Listening at: http://127.0.0.1:"


@dataclass
class Notifications:
    """Messages received on a NOTIFY_SOCKET, with their arrival times."""

    sock: socket.socket
    messages: list[tuple[float, str]] = field(default_factory=list)

    def wait_for(self, needle: str, timeout: float = 10.0, after: int = 0) -> int:
        """Receive until a message (at index >= after) contains needle; return its index."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for i, (_, text) in enumerate(self.messages[after:], after):
                if needle in text:
                    return i
            self.sock.settimeout(max(0.05, deadline - time.monotonic()))
            try:
                data = self.sock.recv(4096)
            except TimeoutError:
                break
            self.messages.append((time.monotonic(), data.decode("ascii")))
        pytest.fail(f"no {needle!r} within {timeout}s; got {[m for _, m in self.messages]}")

    def texts(self) -> list[str]:
        return [text for _, text in self.messages]


@dataclass
class Running:
    proc: subprocess.Popen[bytes]
    port: int
    log: Path
    config: Path

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.port}{path}"

    def log_text(self) -> str:
        return self.log.read_text("utf-8", "replace")


@pytest.fixture
def notify(tmp_path: Path) -> Iterator[Notifications]:
    path = tmp_path / "notify.sock"
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(str(path))
    try:
        yield Notifications(sock)
    finally:
        sock.close()


def start(tmp_path: Path, root: Path, env_extra: dict[str, str],
          settings: dict[str, dict[str, object]] | None = None) -> Running:
    config = tmp_path / "pypid.toml"
    write_config(config, root, url_prefix="", upstream="off",
                 settings=settings)  # type: ignore[arg-type]
    log = tmp_path / "server.log"
    env = {k: v for k, v in os.environ.items() if k not in ("NOTIFY_SOCKET", "PYPID_CONFIG")}
    env.update(PYTHONPATH=str(REPO_ROOT), **env_extra)
    with log.open("wb") as out:
        proc = subprocess.Popen(  # stopped by stop() in each test's finally
            [sys.executable, "-m", "pypid", "serve", "--config", str(config),
             "--host", "127.0.0.1", "--port", "0"],
            env=env, stdin=subprocess.DEVNULL, stdout=out, stderr=out)
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline and proc.poll() is None:
        text = log.read_text("utf-8", "replace")
        if LISTENING in text:
            port = int(text.split(LISTENING, 1)[1].split()[0])
            return Running(proc, port, log, config)
        time.sleep(0.05)
    stop(proc)
    pytest.fail(f"server did not start:\n{log.read_text('utf-8', 'replace')}")


@pytest.fixture
def root(tmp_path: Path) -> Path:
    from tests.builders import make_wheel

    path = tmp_path / "packages"
    path.mkdir()
    make_wheel(path, "alpha", "1.0")
    return path


def test_notification_sequence(tmp_path: Path, root: Path, notify: Notifications) -> None:
    server = start(tmp_path, root, {"NOTIFY_SOCKET": notify.sock.getsockname(),
                                    "WATCHDOG_USEC": "1000000"})
    try:
        ready = notify.wait_for("READY=1")
        # The server answers by the time it says READY (a worker answered first).
        assert get(server.url("/health")).status == 200
        first = notify.texts()[ready]
        assert "Gunicorn arbiter booted" not in " ".join(notify.texts())  # gunicorn's early READY
        assert f"STATUS=serving 1 project on 127.0.0.1:{server.port}, 2 workers" in first
        assert "req/s (1 min), 0 uploads today" in first  # the figures (pypid.metrics.pulse)
        assert all(text.isascii() for text in notify.texts())
        pings = notify.wait_for("WATCHDOG=1", after=ready + 1)
        notify.wait_for("WATCHDOG=1", after=pings + 1, timeout=3)
        os.kill(server.proc.pid, signal.SIGHUP)
        reloading = notify.wait_for("RELOADING=1", after=ready + 1)
        notify.wait_for("READY=1", after=reloading + 1)
        server.proc.send_signal(signal.SIGTERM)
        notify.wait_for("STOPPING=1", after=reloading + 1)
        assert server.proc.wait(timeout=30) == 0
    finally:
        stop(server.proc)
    assert "Traceback" not in server.log_text()


def test_without_notify_socket_nothing_is_sent_or_needed(tmp_path: Path, root: Path) -> None:
    server = start(tmp_path, root, {})
    try:
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            try:
                if get(server.url("/health")).status == 200:
                    break
            except OSError:
                time.sleep(0.1)
        assert get(server.url("/simple/alpha/")).status == 200
    finally:
        stop(server.proc)
    assert "Traceback" not in server.log_text()
    assert server.proc.returncode == 0


def test_reload_under_load_drops_nothing(tmp_path: Path, root: Path,
                                         notify: Notifications) -> None:
    server = start(tmp_path, root, {"NOTIFY_SOCKET": notify.sock.getsockname()})
    failures: list[str] = []
    done = threading.Event()
    counts = [0]

    def hammer() -> None:
        paths = ["/simple/", "/simple/alpha/", "/packages/alpha-1.0-py3-none-any.whl", "/"]
        deadline = time.monotonic() + 15  # bounded in time and count
        n = 0
        while not done.is_set() and time.monotonic() < deadline and n < 5000:
            path = paths[n % len(paths)]
            n += 1
            try:
                with urllib.request.urlopen(server.url(path), timeout=10) as response:
                    response.read()
                    if response.status != 200:
                        failures.append(f"{path}: {response.status}")
            except (urllib.error.URLError, OSError) as exc:
                failures.append(f"{path}: {exc}")
        counts.append(n)

    try:
        ready = notify.wait_for("READY=1")
        threads = [threading.Thread(target=hammer) for _ in range(4)]
        for thread in threads:
            thread.start()
        time.sleep(0.5)
        for _ in range(2):
            os.kill(server.proc.pid, signal.SIGHUP)
            ready = notify.wait_for("READY=1", after=ready + 1)
            time.sleep(0.5)
        done.set()
        for thread in threads:
            thread.join(timeout=30)
    finally:
        done.set()
        stop(server.proc)
    assert sum(counts) > 50
    assert failures == []


def test_reload_applies_a_good_file_and_refuses_a_broken_one(
        tmp_path: Path, root: Path, notify: Notifications) -> None:
    server = start(tmp_path, root, {"NOTIFY_SOCKET": notify.sock.getsockname()})
    try:
        ready = notify.wait_for("READY=1")
        assert get(server.url("/simple/not-here/")).status == 404
        write_config(server.config, root, url_prefix="", upstream="redirect")
        os.kill(server.proc.pid, signal.SIGHUP)
        ready = notify.wait_for("READY=1", after=ready + 1)
        assert get(server.url("/simple/not-here/")).status == 302
        write_config(server.config, root, url_prefix="", upstream="off",
                     settings={"server": {"prot": 1}})
        check = subprocess.run(
            [sys.executable, "-m", "pypid", "reload", "--config", str(server.config)],
            env={**os.environ, "PYTHONPATH": str(REPO_ROOT), "MAINPID": str(server.proc.pid)},
            capture_output=True, text=True, timeout=30, check=False)
        assert check.returncode == 78
        assert "server.prot: unknown key" in check.stderr
        assert "Traceback" not in check.stderr
        os.kill(server.proc.pid, signal.SIGHUP)  # as if reloaded anyway: refused by the server
        notify.wait_for("READY=1", after=ready + 1)
        assert get(server.url("/simple/not-here/")).status == 302  # the last good settings
        assert "reload refused" in server.log_text()
        assert "server.prot" in server.log_text()
    finally:
        stop(server.proc)
    assert "Traceback" not in server.log_text()


def test_serve_with_a_broken_config_exits_78(tmp_path: Path) -> None:
    config = tmp_path / "pypid.toml"
    config.write_text("[server]\nworkers = 0\nprot = 1\n")
    result = subprocess.run(
        [sys.executable, "-m", "pypid", "serve", "--config", str(config)],
        env={**os.environ, "PYTHONPATH": str(REPO_ROOT)},
        capture_output=True, text=True, timeout=30, check=False)
    assert result.returncode == 78
    assert result.stderr.splitlines() == [
        f"{config}: server.workers: must be between 1 and 64, not 0",
        f'{config}: server.prot: unknown key (did you mean "port"?)',
    ]


def test_reload_without_mainpid(tmp_path: Path) -> None:
    config = tmp_path / "pypid.toml"
    config.write_text("")
    env = {k: v for k, v in os.environ.items() if k != "MAINPID"}
    result = subprocess.run(
        [sys.executable, "-m", "pypid", "reload", "--config", str(config)],
        env={**env, "PYTHONPATH": str(REPO_ROOT)}, capture_output=True, text=True, timeout=30,
        check=False)
    assert result.returncode == 1
    assert "$MAINPID is not set" in result.stderr


def test_journal_format_has_no_second_timestamp(tmp_path: Path, root: Path) -> None:
    log = tmp_path / "server.log"
    log.touch()
    st = log.stat()
    # JOURNAL_STREAM names stderr's device:inode when stderr is the journal.
    server = start(tmp_path, root, {"JOURNAL_STREAM": f"{st.st_dev}:{st.st_ino}"})
    try:
        deadline = time.monotonic() + 10
        while "pypid 0" not in server.log_text() and time.monotonic() < deadline:
            time.sleep(0.1)
        get(server.url("/simple/"))
    finally:
        stop(server.proc)
    lines = [line for line in server.log_text().splitlines() if line.strip()]
    assert any("serving 1 project (1 file)" in line and "config:" in line for line in lines)
    assert any('"GET /simple/ HTTP/1.1" 200' in line for line in lines)
    assert not [line for line in lines if line.startswith("[20")], lines[:5]


def test_cold_start_reports_progress_before_ready(tmp_path: Path, notify: Notifications) -> None:
    from tests.builders import make_sdist

    root = tmp_path / "packages"
    root.mkdir()
    for i in range(40):
        make_sdist(root, f"cold-{i}", "1.0")
    server = start(tmp_path, root, {"NOTIFY_SOCKET": notify.sock.getsockname()})
    try:
        ready = notify.wait_for("READY=1")
        before = notify.texts()[:ready]
        assert any("STATUS=indexing 40/40 files" in text for text in before), before
        assert all("EXTEND_TIMEOUT_USEC=" in text for text in before if "indexing" in text)
        assert "serving 40 projects" in notify.texts()[ready]
    finally:
        stop(server.proc)
