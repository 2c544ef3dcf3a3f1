"""What /proc says about the servers under test: process trees, memory, CPU time."""

from __future__ import annotations

import collections
import os
from pathlib import Path
from typing import Any

CLK_TCK = os.sysconf("SC_CLK_TCK")
STAT_FIELDS = ("user", "nice", "system", "idle", "iowait", "irq", "softirq", "steal")


def _ppid_map() -> dict[int, int]:
    """pid -> ppid for every process we can see."""
    out: dict[int, int] = {}
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        try:
            stat = Path(entry.path, "stat").read_text()
        except OSError:
            continue
        # "pid (comm) state ppid ...": comm may hold spaces and parens
        out[int(entry.name)] = int(stat.rsplit(")", 1)[1].split()[1])
    return out


def process_tree(pid: int) -> list[int]:
    """pid and all its descendants, parent first."""
    children: dict[int, list[int]] = collections.defaultdict(list)
    for child, parent in _ppid_map().items():
        children[parent].append(child)
    tree, todo = [], [pid]
    while todo:
        p = todo.pop(0)
        tree.append(p)
        todo.extend(sorted(children.get(p, [])))
    return tree


def kb_field(path: str, key: str) -> int | None:
    try:
        with open(path) as fh:
            for line in fh:
                if line.startswith(key + ":"):
                    return int(line.split()[1])
    except (OSError, ValueError):
        return None
    return None


def memory_of(pid: int) -> dict[str, Any]:
    """VmRSS and Pss (kB) of pid's tree: master first, then workers."""
    procs = []
    for p in process_tree(pid):
        procs.append({
            "pid": p,
            "rss_kb": kb_field(f"/proc/{p}/status", "VmRSS"),
            "pss_kb": kb_field(f"/proc/{p}/smaps_rollup", "Pss"),
        })
    rss = [p["rss_kb"] for p in procs if p["rss_kb"] is not None]
    pss = [p["pss_kb"] for p in procs if p["pss_kb"] is not None]
    return {
        "master": procs[0] if procs else None,
        "workers": procs[1:],
        "total_rss_kb": sum(rss),
        "total_pss_kb": sum(pss) if len(pss) == len(procs) else None,
    }


def cmdline(pid: int) -> bytes | None:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return None


def tree_cpu_seconds(pids: list[int]) -> float:
    """utime + stime of these processes (all their threads), in seconds."""
    total = 0
    for p in pids:
        try:
            fields = Path(f"/proc/{p}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        total += int(fields[11]) + int(fields[12])  # fields 14 and 15 of stat(5)
    return total / CLK_TCK


def cpu_ticks() -> dict[str, list[int]]:
    """Per-CPU tick counters from /proc/stat (cpu0, cpu1, ...)."""
    out = {}
    for line in Path("/proc/stat").read_text().splitlines():
        if line.startswith("cpu") and line[3:4].isdigit():
            name, *vals = line.split()
            out[name] = [int(v) for v in vals[:len(STAT_FIELDS)]]
    return out


def cpu_shares(before: dict[str, list[int]], after: dict[str, list[int]]) -> dict[str, Any]:
    """Where each CPU's time went between two cpu_ticks(), in % (steal: the hypervisor's)."""
    out: dict[str, Any] = {}
    for cpu, a in after.items():
        d = [x - y for x, y in zip(a, before.get(cpu, a), strict=True)]
        total = sum(d) or 1
        out[cpu] = {f: round(v / total * 100, 1) for f, v in zip(STAT_FIELDS, d, strict=True)}
    return out


def cpus_allowed(pid: int) -> str | None:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("Cpus_allowed_list:"):
                return line.split(":", 1)[1].strip()
    except OSError:
        return None
    return None

