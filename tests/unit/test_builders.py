"""tests/builders.py is shared by tests, bench/ and e2e: stdlib only, deterministic."""

from __future__ import annotations

import ast
import subprocess
import sys
import zipfile
from pathlib import Path

from tests import builders

BUILDERS = Path(builders.__file__)


def test_imports_only_the_standard_library() -> None:
    tree = ast.parse(BUILDERS.read_text())
    roots = {a.name.split(".")[0] for n in ast.walk(tree) if isinstance(n, ast.Import)
             for a in n.names}
    roots |= {n.module.split(".")[0] for n in ast.walk(tree)
              if isinstance(n, ast.ImportFrom) and n.module and n.level == 0}
    assert roots - {"__future__"} <= sys.stdlib_module_names


def test_importable_from_a_script_run_by_path(tmp_path: Path) -> None:
    script = tmp_path / "script.py"
    script.write_text(
        "import sys\n"
        f"sys.path.insert(0, {str(BUILDERS.parents[1])!r})\n"
        "from tests.builders import make_wheel\n"
        "print(make_wheel(sys.argv[1], 'Demo.Pkg', '1.0').name)\n"
        "print('pytest' in sys.modules, 'tests.conftest' in sys.modules)\n"
    )
    out = subprocess.run([sys.executable, str(script), str(tmp_path)], capture_output=True,
                         text=True, check=True, timeout=60).stdout.split()
    assert out == ["demo_pkg-1.0-py3-none-any.whl", "False", "False"]


def test_bytes_match_the_written_file(tmp_path: Path) -> None:
    name, data = builders.wheel_bytes("pkg", "1.0", payload=b"x" * 1000)
    path = builders.make_wheel(tmp_path, "pkg", "1.0", payload=b"x" * 1000)
    assert (path.name, path.read_bytes()) == (name, data)
    with zipfile.ZipFile(path) as zf:
        assert zf.getinfo("pkg/payload.bin").compress_type == zipfile.ZIP_STORED
    sname, sdata = builders.sdist_bytes("pkg", "1.0")
    assert builders.make_sdist(tmp_path, "pkg", "1.0").read_bytes() == sdata
    assert sname == "pkg-1.0.tar.gz"


def test_module_source_replaces_the_init(tmp_path: Path) -> None:
    path = builders.make_wheel(tmp_path, "demo", "1.0", module_source="VALUE = 1\n")
    with zipfile.ZipFile(path) as zf:
        assert zf.read("demo/__init__.py") == b"VALUE = 1\n"
