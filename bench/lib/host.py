"""The machine the bench runs on: CPU placement, wrk, the checkout's git state."""

from __future__ import annotations

import contextlib
import os
import platform
import shutil
import socket
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bench.lib.procs import kb_field

BENCH_DIR = Path(__file__).resolve().parents[1]
REPO = BENCH_DIR.parent
HOST = "127.0.0.1"


def log(msg: str) -> None:
    """Progress goes to stderr; tables go to stdout."""
    print(msg, file=sys.stderr, flush=True)


@dataclass(frozen=True)
class Pin:
    """Where a process runs: one CPU (taskset) and a niceness (nice -n; negative needs root)."""

    cpu: int | None = None
    nice: int = 0

    def prefix(self) -> list[str]:
        nice = ["nice", "-n", str(self.nice)] if self.nice else []
        return [*nice, "taskset", "-c", str(self.cpu)] if self.cpu is not None else nice


def pick_cpus(pin: bool, nice: int = 0) -> tuple[Pin, Pin]:
    """(server, client): the first two CPUs when pinning is possible, else no CPU."""
    cpus = sorted(os.sched_getaffinity(0))
    if not pin or len(cpus) < 2 or shutil.which("taskset") is None:
        return Pin(None, nice), Pin(None, nice)
    return Pin(cpus[0], nice), Pin(cpus[1], nice)


def free_port() -> int:
    """A port the kernel has just handed out, for servers that cannot report theirs."""
    with socket.socket() as sock:
        sock.bind((HOST, 0))
        return int(sock.getsockname()[1])


def ensure_wrk() -> str:
    found = shutil.which("wrk")
    if found:
        return found
    print("wrk not found: installing it with apt-get", file=sys.stderr)
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    subprocess.run(["apt-get", "-o", "DPkg::Lock::Timeout=300", "install", "-y", "-q", "wrk"],
                   env=env, check=True, timeout=600)
    found = shutil.which("wrk")
    if not found:
        raise SystemExit("wrk is still missing: apt-get install wrk")
    return found


def machine() -> dict[str, Any]:
    model = ""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    mem_kb = kb_field("/proc/meminfo", "MemTotal")
    try:
        wrk = subprocess.run(["wrk", "-v"], capture_output=True, text=True, timeout=30,
                             check=False)
        wrk_version = (wrk.stdout or wrk.stderr).split("[")[0].strip()
    except OSError:  # the load run (bench/load.py) does without wrk
        wrk_version = None
    return {
        "cpu_model": model, "cpus": os.cpu_count(),
        "mem_gb": round(mem_kb / 1024 / 1024, 1) if mem_kb else None,
        "kernel": platform.release(), "python": platform.python_version(),
        "os": _os_release(), "wrk": wrk_version,
    }


def _os_release() -> str:
    try:
        for line in Path("/etc/os-release").read_text().splitlines():
            if line.startswith("PRETTY_NAME="):
                return line.split("=", 1)[1].strip('"')
    except OSError:
        pass
    return platform.platform()


def git_rev(src: Path = REPO) -> str | None:
    """The short commit id of the checkout holding src, or None."""
    with contextlib.suppress(OSError, subprocess.SubprocessError):
        return subprocess.run(["git", "-C", str(src), "rev-parse", "--short", "HEAD"],
                              capture_output=True, text=True, timeout=10,
                              check=True).stdout.strip()
    return None


def dirty(src: Path) -> list[str]:
    """Uncommitted changes under pypid/ (the code measured is then not just the commit)."""
    try:
        out = subprocess.run(["git", "-C", str(src), "status", "--porcelain", "--", "pypid"],
                             capture_output=True, text=True, timeout=30, check=True).stdout
    except (OSError, subprocess.SubprocessError):
        return []
    return [line[3:] for line in out.splitlines()]


def drop_page_cache() -> str | None:
    """Write every dirty page out and drop every clean one from memory, as after a reboot
    (root only). None when done, else why not."""
    os.sync()
    try:
        Path("/proc/sys/vm/drop_caches").write_text("3\n")
    except OSError as exc:
        return f"cannot drop the page cache ({exc.strerror or exc}; needs root)"
    return None


def read_through(paths: list[Path]) -> None:
    """Read every file once: in memory, as just after it was copied in. (A kernel may
    reclaim page cache left idle: this VM's DAMON pages out what a minute did not touch,
    so a "warm" corpus is warm only if read just before.)"""
    for path in paths:
        with open(path, "rb", buffering=0) as handle:
            while handle.read(1 << 20):
                pass

