"""overwrite = false freezes a release, and an upload form cannot hold the server's
descriptors or memory: other spellings of a file, non-ASCII names, thousands of parts."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.attack.conftest import LOGIN
from tests.attack.forms import Part, fields, post, upload_parts
from tests.attack.harness import Guarded
from tests.builders import make_sdist, make_wheel
from tests.integration.helpers import JSON_TYPE, get

pytestmark = pytest.mark.server

# (case, what is stored first, then another file name for it or other bytes, its version)
SPELLINGS = [
    ("upper-case-wheel", "wheel", "FROZEN_{i}-1.0-py3-none-any.whl", "1.0"),
    ("dotted-wheel", "wheel", "frozen.{i}-1.0-py3-none-any.whl", "1.0"),
    ("zeros-wheel", "wheel", "frozen_{i}-1.0.0-py3-none-any.whl", "1.0.0"),
    ("zeros-sdist", "sdist", "frozen_{i}-1.0.0.tar.gz", "1.0.0"),
    ("zip-beside-tar", "sdist", "zip", "1.0"),
]


def page(srv: Guarded, project: str) -> list[str]:
    resp = get(srv.server.url(f"/simple/{project}/"), Accept=JSON_TYPE, **LOGIN)
    return [f["filename"] for f in resp.json()["files"]] if resp.status == 200 else []


@pytest.mark.parametrize("case", range(len(SPELLINGS)), ids=[s[0] for s in SPELLINGS])
def test_other_spelling_is_409(target: Guarded, tmp_path: Path, case: int) -> None:
    _, kind, spelling, version = SPELLINGS[case]
    project = f"frozen-{case}"
    make = make_wheel if kind == "wheel" else make_sdist
    first = make(tmp_path / "first", project, "1.0")
    assert post(target.server, upload_parts(first, project, "1.0"), LOGIN).status == 200
    if spelling == "zip":
        parts = upload_parts(make_sdist(tmp_path / "zip", project, "1.0", fmt="zip"), project,
                             "1.0")
    else:
        other = make(tmp_path / "other", project, "1.0", requires_python=">=3.12")
        parts = upload_parts(other, project, version, spelling.format(i=case))
    answer = post(target.server, parts, LOGIN)
    assert (answer.status, answer.reason) == (409, f"File already exists: {first.name}")
    root = target.server.root
    assert sorted(p.name for p in root.iterdir() if project.replace("-", "_") in p.name.lower()
                  or project in p.name.lower()) == [first.name]
    assert (root / first.name).read_bytes() == first.read_bytes()
    assert page(target, project) == [first.name]


NON_ASCII = [
    ("unicode-space-version", "asciionly-1.0\u2003.tar.gz", "asciionly", "1.0"),
    ("kelvin-sign-name", "\u212asciionly-1.0.tar.gz", "\u212asciionly", "1.0"),
]


@pytest.mark.parametrize("case", range(len(NON_ASCII)), ids=[n[0] for n in NON_ASCII])
def test_non_ascii_file_name_is_400(target: Guarded, tmp_path: Path, case: int) -> None:
    _, filename, name, version = NON_ASCII[case]
    sdist = make_sdist(tmp_path, "kasciionly" if "\u212a" in name else "asciionly", version)
    answer = post(target.server, upload_parts(sdist, name, version, filename), LOGIN)
    assert answer.status == 400, answer.describe()
    assert answer.text.count("\n") == 1
    assert not [p for p in target.server.root.iterdir() if "sciionly" in p.name]


def open_fds(srv: Guarded) -> int:
    return sum(len(list(Path(f"/proc/{pid}/fd").iterdir()))
               for pid in (srv.server.proc.pid, *_workers(srv)))


def _workers(srv: Guarded) -> list[int]:
    path = Path(f"/proc/{srv.server.proc.pid}/task/{srv.server.proc.pid}/children")
    return [int(pid) for pid in path.read_text().split()]


def test_five_thousand_file_parts_are_400(target: Guarded, tmp_path: Path) -> None:
    """Under 256 descriptors: each part used to hold a temporary file until the end."""
    sdist = make_sdist(tmp_path, "manyparts", "1.0")
    data = sdist.read_bytes()
    base = fields("manyparts", "1.0", data, wheel=False)
    for many in ([("content", f"manyparts-1.0.{i}.tar.gz", b"x") for i in range(5_000)],
                 [("gpg_signature", f"{i}.asc", b"x") for i in range(5_000)]):
        answer = post(target.server, [*base, *many], LOGIN)
        assert answer.status == 400, answer.describe()
        assert answer.text.count("\n") == 1
    assert open_fds(target) < 200
    assert post(target.server, [*base, ("content", sdist.name, data)], LOGIN).status == 200


def test_ten_thousand_text_parts(target: Guarded, tmp_path: Path) -> None:
    sdist = make_sdist(tmp_path, "textparts", "1.0")
    parts: list[Part] = upload_parts(sdist, "textparts", "1.0")
    junk: list[Part] = [("classifiers", None, b"Topic :: x")] * 10_000
    answer = post(target.server, [*parts[:-1], *junk, parts[-1]], LOGIN)
    assert answer.status == 400, answer.describe()
    assert "parts" in answer.reason
    answer = post(target.server, [*parts[:-1], *junk[:9_000], parts[-1]], LOGIN)
    assert answer.status == 200, answer.describe()


def test_text_fields_are_bounded_in_sum(target: Guarded, tmp_path: Path) -> None:
    """Each field under 64 MiB, together 66 MiB: refused, and the worker's peak RSS stays
    under the suite's limit (checked after every test). Just past the bound, so the
    server reads (or drains) the rest and the client sees the answer."""
    sdist = make_sdist(tmp_path, "bigtext", "1.0")
    parts = upload_parts(sdist, "bigtext", "1.0")
    text: list[Part] = [("description", None, b"x" * (22 << 20))] * 3
    answer = post(target.server, [*parts[:-1], *text, parts[-1]], LOGIN)
    assert answer.status == 413, answer.describe()
    assert "text fields" in answer.reason
