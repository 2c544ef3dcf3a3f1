"""No import circle anywhere in the repo: pypid/, tests/, bench/ and scripts/.

Every ``import`` (also inside functions) is resolved to a file of the repo: absolutely
from the repo root, relatively within a package, or, for scripts run by path, from
the importing file's own directory (Python puts it first on ``sys.path``). An edge
goes to the most specific module named, so a package ``__init__`` that imports its
own submodules is no circle; anything else that leads back to where it started is.
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
TREES = ("pypid", "tests", "bench", "scripts")
SKIP = {"out", "__pycache__"}  # bench/out holds generated files and a pypiserver venv


def _python_files() -> Iterator[Path]:
    for tree in TREES:
        for path in sorted((REPO / tree).rglob("*")):
            rel = path.relative_to(REPO).parts
            if SKIP.intersection(rel) or not path.is_file():
                continue
            if path.suffix == ".py" or (tree == "scripts" and _is_python_script(path)):
                yield path


def _is_python_script(path: Path) -> bool:
    with path.open("rb") as fh:
        first = fh.readline(200)
    return first.startswith(b"#!") and b"python" in first


def _module_name(path: Path, base: Path) -> str:
    parts = list(path.relative_to(base).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _imported(path: Path, tree: ast.AST, modules: dict[str, Path]) -> Iterator[Path]:
    """The repo files each import statement of ``tree`` loads (the most specific one)."""
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                found = _resolve(alias.name, 0, path, modules)
                if found:
                    yield found
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            for alias in node.names:  # ``from x import y`` loads the module x.y if there is one
                name = f"{base}.{alias.name}" if base else alias.name
                found = _resolve(name, node.level, path, modules)
                if found is None and (base or node.level):
                    found = _resolve(base, node.level, path, modules)
                if found:
                    yield found


def _resolve(name: str, level: int, path: Path, modules: dict[str, Path]) -> Path | None:
    if level:
        package = _module_name(path, REPO).split(".")
        if path.name != "__init__.py":
            package.pop()
        package = package[: len(package) - (level - 1)]
        return modules.get(".".join(p for p in [*package, name] if p))
    if name in modules:
        return modules[name]
    # a script run by path finds its neighbours through sys.path[0]
    sibling = _module_name(path.parent, REPO) if path.parent != REPO else ""
    return modules.get(f"{sibling}.{name}" if sibling else name)


def import_graph() -> dict[Path, set[Path]]:
    """file -> the repo files it imports."""
    files = list(_python_files())
    modules = {_module_name(p, REPO): p for p in files if p.suffix == ".py"}
    graph: dict[Path, set[Path]] = {}
    for path in files:
        tree = ast.parse(path.read_bytes(), str(path))
        graph[path] = set(_imported(path, tree, modules)) - {path}
    return graph


def cycles(graph: dict[Path, set[Path]]) -> list[list[Path]]:
    """Strongly connected components with more than one file (Tarjan, iterative)."""
    index: dict[Path, int] = {}
    low: dict[Path, int] = {}
    stack: list[Path] = []
    on_stack: set[Path] = set()
    out: list[list[Path]] = []
    for root, edges in graph.items():
        if root in index:
            continue
        work = [(root, iter(sorted(edges)))]
        index[root] = low[root] = len(index)
        stack.append(root)
        on_stack.add(root)
        while work:
            node, children = work[-1]
            child = next(children, None)
            if child is not None:
                if child not in index:
                    index[child] = low[child] = len(index)
                    stack.append(child)
                    on_stack.add(child)
                    work.append((child, iter(sorted(graph.get(child, ())))))
                elif child in on_stack:
                    low[node] = min(low[node], index[child])
                continue
            work.pop()
            if work:
                low[work[-1][0]] = min(low[work[-1][0]], low[node])
            if low[node] == index[node]:
                component = []
                while True:
                    member = stack.pop()
                    on_stack.discard(member)
                    component.append(member)
                    if member == node:
                        break
                if len(component) > 1:
                    out.append(sorted(component))
    return out


def test_graph_sees_the_trees() -> None:
    graph = import_graph()
    names = {p.relative_to(REPO).as_posix() for p in graph}
    assert {"pypid/cli.py", "tests/builders.py", "bench/run.py"} <= names
    # the resolver follows intra-repo imports, or the circle check proves nothing
    assert REPO / "pypid" / "server.py" in graph[REPO / "pypid" / "cli.py"]


def test_no_import_circle() -> None:
    found = cycles(import_graph())
    assert not found, "import circles:\n" + "\n".join(
        " <-> ".join(p.relative_to(REPO).as_posix() for p in c) for c in found)


def test_cycles_finds_a_circle() -> None:
    a, b, c = Path("a.py"), Path("b.py"), Path("c.py")
    assert cycles({a: {b}, b: {c}, c: {a}}) == [[a, b, c]]
    assert cycles({a: {b}, b: {c}, c: set()}) == []
