"""Imports run one way: cli -> server -> worker -> (web, systemd) -> simple -> index
-> (cachedb -> storage, watch) -> distfile; http1 is a leaf the worker uses; mirror
(upstream client and cache) sits below simple, which calls it.

``config`` and ``auth`` are leaves that import no other pypid module.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[2] / "pypid"
# Each module may import only modules of a lower rank. The cache describes storage's
# files (by their FileIdentity), so it sits just above storage. A backend keeps the
# event log (the bucket's), so events sits below storage. growing (one download followed
# as it grows) serves both the mirror and the S3 backend's copies. forked (work done in a
# child process) serves the index's seals and the simple API's project list.
RANK = {"distfile": 0, "distlean": -0.5, "config": 0, "config_checks": -0.5, "auth": 0, "http1": 0,
        "limits": 0, "metrics": 0, "growing": 0, "heap": 0, "forked": 0.25,
        "storage": 1, "cachedb": 1.5, "watch": 1, "index": 2,
        "mirror": 2.5, "simple": 3, "web": 4, "systemd": 4, "accesslog": 4, "events": 0.5,
        "manage": 3, "cli_manage": 6.5, "cli_mirror": 6.5,
        "cli_bundle": 6.5, "bundle": 3.5, "worker": 5, "server": 6, "cli": 7,
        "__main__": 8,
        "__init__": -1}


def _module_of(path: Path) -> str:
    rel = path.relative_to(PACKAGE)
    return rel.parts[0].removesuffix(".py")


def _pypid_imports(path: Path) -> set[str]:
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        names = []
        if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names = [node.module] + [f"{node.module}.{a.name}" for a in node.names]
        elif isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        for name in names:
            parts = name.split(".")
            if parts[0] == "pypid" and len(parts) > 1 and parts[1] in RANK:
                found.add(parts[1])
    return found


@pytest.mark.parametrize("path", sorted(PACKAGE.rglob("*.py")), ids=lambda p: str(p.name))
def test_imports_point_down(path: Path) -> None:
    module = _module_of(path)
    assert module in RANK, f"{module} has no place in the layering table"
    for imported in _pypid_imports(path) - {module}:
        assert RANK[imported] < RANK[module] or imported == "__init__", (
            f"{path.relative_to(PACKAGE)} imports pypid.{imported}: an upward or sideways arrow")
