"""A real `pypid serve` for attacks, under limits: few descriptors, and a memory watch.

The server starts with a low RLIMIT_NOFILE (set in preexec_fn) and a watchdog that
SIGKILLs its processes (by PID, only ours) when one's RSS passes WATCHDOG_RSS, so a
regression fails the run instead of the machine. After each test the peak RSS of
every process (VmHWM) must stay under MAX_RSS.
"""

from __future__ import annotations

import contextlib
import functools
import os
import resource
import signal
import subprocess
import sys
import threading
from dataclasses import dataclass, field
from pathlib import Path

from tests.integration.harness import TomlValue, _wait_ready, stop, write_config
from tests.integration.helpers import REPO_ROOT, Server

MIB = 1024 * 1024
MAX_OPEN_FILES = 256
MAX_RSS = 300 * MIB  # peak per process; an idle worker holds ~40 MB
WATCHDOG_RSS = 600 * MIB
WATCH_EVERY = 0.05


def _limits(open_files: int = MAX_OPEN_FILES) -> None:  # runs in the child before exec
    resource.setrlimit(resource.RLIMIT_NOFILE, (open_files, open_files))


def _status(pid: int, key: str) -> int:
    """A /proc/PID/status size in bytes (0 when the process is gone)."""
    try:
        with open(f"/proc/{pid}/status", encoding="ascii") as handle:
            for line in handle:
                if line.startswith(key + ":"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError):
        pass
    return 0


def rss(pid: int) -> int:
    """The resident set size of ``pid`` in bytes (0 when it is gone)."""
    return _status(pid, "VmRSS")


def cpu_seconds(pid: int) -> float:
    """User and system CPU time ``pid`` has used (0 when it is gone)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")  # utime, stime


def family(pid: int) -> list[int]:
    """pid and its children (the gunicorn master and its workers)."""
    try:
        children = Path(f"/proc/{pid}/task/{pid}/children").read_text().split()
    except OSError:
        return [pid]
    return [pid, *(int(child) for child in children)]


@dataclass
class Guarded:
    """A server under the watchdog; ``breaches`` lists what the watchdog killed and why."""

    server: Server
    breaches: list[str] = field(default_factory=list)
    _stop: threading.Event = field(default_factory=threading.Event)

    def workers(self) -> list[int]:
        return family(self.server.proc.pid)[1:]

    def peak_rss(self) -> dict[int, int]:
        return {pid: _status(pid, "VmHWM") for pid in family(self.server.proc.pid)}

    def watch(self) -> None:
        while not self._stop.wait(WATCH_EVERY) and self.server.proc.poll() is None:
            for pid in family(self.server.proc.pid):
                rss = _status(pid, "VmRSS")
                if rss > WATCHDOG_RSS:
                    self.breaches.append(f"pid {pid} reached {rss >> 20} MB RSS: killed")
                    for victim in family(self.server.proc.pid):
                        with contextlib.suppress(ProcessLookupError):
                            os.kill(victim, signal.SIGKILL)
                    return

    def close(self) -> None:
        self._stop.set()
        stop(self.server.proc)


def start_guarded(work: Path, root: Path, *, url_prefix: str = "",
                  settings: dict[str, dict[str, TomlValue]] | None = None,
                  open_files: int = MAX_OPEN_FILES) -> Guarded:
    """`python -m pypid serve` on 127.0.0.1:0 under the limits (``open_files`` descriptors
    per process); ready when /health is 200."""
    work.mkdir(parents=True, exist_ok=True)
    cfg, log = work / "pypid.toml", work / "server.log"
    write_config(cfg, root, url_prefix=url_prefix, upstream="off", settings=settings)
    env = {k: v for k, v in os.environ.items() if k not in ("NOTIFY_SOCKET", "PYPID_CONFIG")}
    env["PYTHONPATH"] = str(REPO_ROOT)
    env["PYPID_BCRYPT_ROUNDS"] = "4"
    cmd = [sys.executable, "-m", "pypid", "serve", "--config", str(cfg),
           "--host", "127.0.0.1", "--port", "0", "--root", str(root)]
    with log.open("wb") as logf:
        proc = subprocess.Popen(  # stopped by Guarded.close() in the fixture's finally
            cmd, cwd=work, env=env, stdin=subprocess.DEVNULL, stdout=logf, stderr=logf,
            preexec_fn=functools.partial(_limits, open_files))  # noqa: PLW1509 - setrlimit only, before exec
    try:
        server = _wait_ready(proc, log, url_prefix, root)
    except BaseException:
        stop(proc)
        raise
    guarded = Guarded(server)
    threading.Thread(target=guarded.watch, name="rss-watchdog", daemon=True).start()
    return guarded
