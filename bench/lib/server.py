"""A server process the bench spawned: drains its output, finds its port, stops it by PID."""

from __future__ import annotations

import collections
import contextlib
import os
import re
import signal
import subprocess
import threading
import time
from pathlib import Path

from bench.lib.procs import cmdline, process_tree

START_TIMEOUT = 300.0  # seconds to wait for a server to listen / answer 200
STOP_TIMEOUT = 10.0


class Server:
    """One spawned server; ``port`` comes from its log (port_regex) or is known up front."""

    def __init__(self, name: str, cmd: list[str], *, env: dict[str, str], cwd: Path,
                 port_regex: re.Pattern[str] | None, port: int | None) -> None:
        self.name = name
        self.cmd = cmd
        self.port = port
        self.lines: collections.deque[str] = collections.deque(maxlen=300)
        self._port_regex = port_regex
        self._listening = threading.Event()
        # pypid's "rendered the pages of N projects": since 0ab6cb0 said after it listens
        # (a process beside the workers renders them; until then a worker renders each)
        self.pages_rendered = threading.Event()
        self.t_spawn = time.perf_counter()
        self.proc = subprocess.Popen(cmd, env=env, cwd=cwd, stdin=subprocess.DEVNULL,
                                     stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
        self.pid = self.proc.pid
        self.t_listen: float | None = None
        self._seen: dict[int, bytes | None] = {}  # tree pids seen, for cleanup
        self._reader = threading.Thread(target=self._drain, daemon=True)
        self._reader.start()
        if port_regex is None:
            self._listening.set()

    def _drain(self) -> None:
        assert self.proc.stdout is not None
        for raw in self.proc.stdout:
            line = raw.decode("utf-8", "replace").rstrip("\n")
            self.lines.append(line)
            if "rendered the pages of" in line:
                self.pages_rendered.set()
            if not self._listening.is_set() and self._port_regex is not None:
                m = self._port_regex.search(line)
                if m:
                    self.port = int(m.group(2))
                    self.t_listen = time.perf_counter() - self.t_spawn
                    self._listening.set()

    def wait_pages_rendered(self, timeout: float) -> bool:
        """Wait for pypid's pages rendered ahead (measure the steady state, not the first
        seconds' renders); False: not said in time (a root without a page file says
        nothing)."""
        return self.pages_rendered.wait(timeout)

    def tail(self, n: int = 30) -> str:
        return "\n".join(list(self.lines)[-n:])

    def wait_listening(self, timeout: float) -> None:
        deadline = time.perf_counter() + timeout
        while not self._listening.wait(0.05):
            if self.proc.poll() is not None:
                raise RuntimeError(f"{self.name} exited with {self.proc.returncode} before "
                                   f"listening:\n{self.tail()}")
            if time.perf_counter() > deadline:
                raise RuntimeError(f"{self.name} not listening after {timeout}s:\n{self.tail()}")

    def remember_tree(self) -> list[int]:
        tree = process_tree(self.pid)
        for p in tree:
            self._seen.setdefault(p, cmdline(p))
        return tree

    def stop(self) -> None:
        """SIGTERM the master; SIGKILL it after a deadline; then any worker left behind."""
        with contextlib.suppress(ProcessLookupError):
            if self.proc.poll() is None:
                self.remember_tree()
                self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(STOP_TIMEOUT)
        except subprocess.TimeoutExpired:
            self.lines.append(f"[bench] {self.name} ignored SIGTERM for {STOP_TIMEOUT}s: SIGKILL")
            self.proc.kill()
            self.proc.wait(STOP_TIMEOUT)
        deadline = time.perf_counter() + STOP_TIMEOUT
        for p, cmd in self._seen.items():
            # orphaned workers normally exit by themselves; kill stragglers (same cmdline only)
            while p != self.pid and cmdline(p) == cmd and cmd is not None:
                if time.perf_counter() > deadline:
                    with contextlib.suppress(ProcessLookupError):
                        os.kill(p, signal.SIGKILL)
                    break
                time.sleep(0.05)
        self._reader.join(2)

