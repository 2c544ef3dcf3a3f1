"""Bundles without a server: the manifest's checks, an export read back, and hostile
tars (unsafe names, links, a huge or missing member, a bad hash) importing nothing."""

from __future__ import annotations

import hashlib
import io
import json
import tarfile
from collections.abc import Callable
from pathlib import Path

import pytest

from pypid import cli
from pypid.bundle.manifest import BundleError, decode
from pypid.mirror.store import MirrorStore, PageRecord
from pypid.mirror.translate import UpstreamFile, UpstreamPage
from tests.builders import make_wheel, wheel_bytes

Tar = Callable[..., Path]


@pytest.fixture
def site(tmp_path: Path) -> Callable[[str], Path]:
    """``site(name)``: the config of a package root ``<tmp>/<name>`` (made, empty)."""
    (tmp_path / "htpasswd").write_text("")

    def make(name: str) -> Path:
        (tmp_path / name).mkdir(exist_ok=True)
        config = tmp_path / f"{name}.toml"
        config.write_text(f'[storage]\nroot = "{tmp_path / name}"\n'
                          f'[auth]\nhtpasswd = "{tmp_path / "htpasswd"}"\n')
        return config
    return make


def pypid(*args: str) -> int:
    return cli.main(list(args))


def exported(tmp_path: Path, site: Callable[[str], Path]) -> Path:
    config = site("a")
    make_wheel(tmp_path / "a", "demo", "1.0")
    make_wheel(tmp_path / "a", "demo", "2.0")
    assert pypid("yank", "demo==1.0", "--reason", "broken", "--config", str(config)) == 0
    assert pypid("status", "demo", "archived", "--reason", "moved", "--config",
                 str(config)) == 0
    bundle = tmp_path / "site.tar"
    assert pypid("export", str(bundle), "--config", str(config)) == 0
    return bundle


def members(bundle: Path) -> dict[str, bytes]:
    with tarfile.open(bundle) as tar:
        return {m.name: tar.extractfile(m).read() for m in tar.getmembers()}  # type: ignore[union-attr]


def write_tar(path: Path, entries: dict[str, bytes], *, links: dict[str, str] | None = None,
              sizes: dict[str, int] | None = None) -> Path:
    """A tar of ``entries`` (name -> bytes), symlinks ``links``, and members whose header
    claims ``sizes`` (their data is cut short)."""
    with tarfile.open(path, "w") as tar:
        for name, data in entries.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
        for name, target in (links or {}).items():
            info = tarfile.TarInfo(name)
            info.type, info.linkname = tarfile.SYMTYPE, target
            tar.addfile(info)
    for name, size in (sizes or {}).items():  # the last member: its header lies, and a
        raw = bytearray(path.read_bytes())    # sparse tail makes the tar that long
        at = next(i for i in range(0, len(raw), 512) if raw[i:i + len(name)] == name.encode())
        raw[at + 124:at + 136] = f"{size:011o}\0".encode()
        raw[at + 148:at + 156] = b" " * 8
        raw[at + 148:at + 155] = f"{sum(raw[at:at + 512]):06o}\0".encode()
        path.write_bytes(bytes(raw))
        with open(path, "r+b") as handle:
            handle.truncate(at + 512 + size + 1024)
    return path


def test_an_export_holds_the_files_and_a_manifest_of_their_facts(
        tmp_path: Path, site: Callable[[str], Path]) -> None:
    bundle = exported(tmp_path, site)
    held = members(bundle)
    assert sorted(held) == ["audit.jsonl", "demo-1.0-py3-none-any.whl",
                            "demo-2.0-py3-none-any.whl", "manifest.json"]
    manifest = decode(held["manifest.json"])
    assert manifest.audit is not None  # every local file: the whole site, its log too
    assert manifest.audit.lines == held["audit.jsonl"].count(b"\n") == 2
    assert manifest.audit.sha256 == hashlib.sha256(held["audit.jsonl"]).hexdigest()
    first = manifest.files[0]
    assert first.sha256 == hashlib.sha256(held[first.filename]).hexdigest()
    assert first.size == len(held[first.filename]) and first.yanked == "broken"
    assert manifest.files[1].yanked is None
    assert [(p.name, p.status, p.reason) for p in manifest.projects] == [
        ("demo", "archived", "moved")]
    assert not list(tmp_path.glob(".site.tar.*"))  # no temp file left


def test_an_import_adds_files_times_and_marks_once(
        tmp_path: Path, site: Callable[[str], Path], capsys: pytest.CaptureFixture[str]) -> None:
    bundle = exported(tmp_path, site)
    config = str(site("b"))
    assert pypid("import", str(bundle), "--config", config) == 0
    a_file = tmp_path / "a" / "demo-1.0-py3-none-any.whl"
    b_file = tmp_path / "b" / "demo-1.0-py3-none-any.whl"
    assert b_file.read_bytes() == a_file.read_bytes()
    assert abs(b_file.stat().st_mtime - a_file.stat().st_mtime) < 0.001
    log = (tmp_path / "b" / ".pypid" / "audit.jsonl").read_text().splitlines()
    assert [json.loads(line)["action"] for line in log] == ["import", "import", "yank", "status"]
    # A package root keeps its own log: the bundle's is left out, and that is said.
    assert "the bundle's audit log (2 lines) was not carried over" in capsys.readouterr().err
    assert pypid("import", str(bundle), "--config", config) == 0  # again: nothing changes
    assert "0 files imported, 2 already here" in capsys.readouterr().out
    assert (tmp_path / "b" / ".pypid" / "audit.jsonl").read_text().splitlines() == log


def test_a_name_taken_here_by_other_bytes_refuses_the_whole_bundle(
        tmp_path: Path, site: Callable[[str], Path], capsys: pytest.CaptureFixture[str]) -> None:
    bundle = exported(tmp_path, site)
    config = str(site("b"))
    make_wheel(tmp_path / "b", "demo", "2.0", module_source="other = True\n")
    assert pypid("import", str(bundle), "--config", config) == 1
    assert "demo-2.0-py3-none-any.whl: the name is taken here by other bytes" in \
        capsys.readouterr().err
    assert not (tmp_path / "b" / "demo-1.0-py3-none-any.whl").exists()


def tampered(tmp_path: Path, site: Callable[[str], Path], change: str) -> Path:
    """The exported bundle, rebuilt with one thing wrong."""
    held = members(exported(tmp_path, site))
    wheel = "demo-2.0-py3-none-any.whl"
    manifest = json.loads(held["manifest.json"])
    path = tmp_path / "bad.tar"
    if change == "hash":
        held[wheel] = held[wheel][:-1] + bytes([held[wheel][-1] ^ 1])
    elif change == "missing":
        del held[wheel]
    elif change == "extra":
        held["other-1.0-py3-none-any.whl"] = b"x"
    elif change == "dotdot":
        held["../" + wheel] = held.pop(wheel)
    elif change == "absolute":
        held["/tmp/" + wheel] = held.pop(wheel)
    elif change == "symlink":
        del held[wheel]
        return write_tar(path, held, links={wheel: "/etc/passwd"})
    elif change == "huge":
        held[wheel] = held.pop(wheel)  # last
        return write_tar(path, held, sizes={wheel: 2**32})
    elif change == "manifest":
        held["manifest.json"] = b"not json"
    elif change == "version":
        manifest["version"] = 99
        held["manifest.json"] = json.dumps(manifest).encode()
    elif change == "unsafe-listed":
        manifest["files"][1]["filename"] = "../" + wheel
        held["manifest.json"] = json.dumps(manifest).encode()
    elif change.startswith("audit-"):
        _edit_audit(held, manifest, fit=change == "audit-chain")
    elif change == "not-tar":
        path.write_bytes(b"hello" * 100)
        return path
    return write_tar(path, held)


def _edit_audit(held: dict[str, bytes], manifest: dict, *, fit: bool) -> None:
    """Alter the carried audit log's first line; ``fit``: its manifest entry made to match
    (the chain still tells)."""
    held["audit.jsonl"] = held["audit.jsonl"].replace(b"broken", b"brokeX")
    if fit:
        manifest["audit"]["sha256"] = hashlib.sha256(held["audit.jsonl"]).hexdigest()
        held["manifest.json"] = json.dumps(manifest).encode()


@pytest.mark.parametrize(("change", "message"), [
    ("hash", "does not match manifest.json"),
    ("missing", "listed in manifest.json but missing"),
    ("extra", "is not in manifest.json"),
    ("dotdot", "unsafe member name '../demo-2.0"),
    ("absolute", "unsafe member name '/tmp/demo-2.0"),
    ("symlink", "is not a regular file"),
    ("huge", "4294967296 bytes, manifest.json says"),
    ("manifest", "manifest.json is not JSON"),
    ("version", "unknown version 99"),
    ("unsafe-listed", "unsafe file name"),
    ("not-tar", "not a tar file"),
    ("audit-hash", "audit.jsonl: sha256 does not match manifest.json"),
    ("audit-chain", "audit.jsonl: line 2: its prev hash does not match line 1"),
], ids=lambda value: value if " " not in value else "")
def test_a_bad_bundle_imports_nothing(tmp_path: Path, site: Callable[[str], Path],
                                      capsys: pytest.CaptureFixture[str], change: str,
                                      message: str) -> None:
    bundle = tampered(tmp_path, site, change)
    config = str(site("b"))
    capsys.readouterr()
    assert pypid("import", str(bundle), "--config", config) == 1
    err = capsys.readouterr().err.strip()
    assert message in err and len(err.splitlines()) == 1
    assert list((tmp_path / "b").iterdir()) == []  # no file, no audit log


def test_the_manifest_refuses_what_it_does_not_expect() -> None:
    good = {"format": "pypid-bundle", "version": 1, "projects": [], "files": [{
        "filename": "a-1.0-py3-none-any.whl", "project": "a", "version": "1.0",
        "sha256": "0" * 64, "size": 3, "upload_time": "2024-01-01T00:00:00.000000Z"}]}
    assert decode(json.dumps(good).encode()).files[0].size == 3
    for field, value, problem in (("sha256", "ZZ", "sha256"), ("size", -1, "size"),
                                  ("project", "b", "project is not a"),
                                  ("upload_time", "yesterday", "upload_time")):
        bad = json.loads(json.dumps(good))
        bad["files"][0][field] = value
        with pytest.raises(BundleError, match=problem):
            decode(json.dumps(bad).encode())
    twice = json.loads(json.dumps(good))
    twice["files"] *= 2
    with pytest.raises(BundleError, match="listed twice"):
        decode(json.dumps(twice).encode())


def test_export_by_requirement_takes_only_that_release(
        tmp_path: Path, site: Callable[[str], Path]) -> None:
    config = site("a")
    make_wheel(tmp_path / "a", "demo", "1.0")
    make_wheel(tmp_path / "a", "demo", "2.0")
    make_wheel(tmp_path / "a", "other", "1.0")
    (tmp_path / "req.txt").write_text("demo==2.0\n")
    bundle = tmp_path / "r.tar"
    assert pypid("export", str(bundle), "-r", str(tmp_path / "req.txt"), "--project", "other",
                 "--config", str(config)) == 0
    assert sorted(members(bundle)) == ["demo-2.0-py3-none-any.whl", "manifest.json",
                                       "other-1.0-py3-none-any.whl"]
    (tmp_path / "req.txt").write_text("demo==3.0\n")
    assert pypid("export", str(bundle), "-r", str(tmp_path / "req.txt"),
                 "--config", str(config)) == 1


def test_export_takes_the_mirrors_cached_files_with_upstreams_facts(
        tmp_path: Path, site: Callable[[str], Path]) -> None:
    config = site("a")
    cache = tmp_path / "cache"
    with open(config, "a") as handle:
        handle.write(f'[upstream]\nmode = "cache"\ncache_root = "{cache}"\n')
    _, data = wheel_bytes("upstream-thing", "1.0")
    sha256 = hashlib.sha256(data).hexdigest()
    store = MirrorStore(cache)
    item = UpstreamFile("upstream_thing-1.0-py3-none-any.whl", "1.0", "https://x/f", sha256,
                        yanked="old", upload_time="2024-01-02T03:04:05.000000Z")
    store.save(PageRecord(UpstreamPage("upstream-thing", (item,), "deprecated", "gone"),
                          "", "", 0.0))
    path = store.file_path("upstream-thing", item.filename)
    store.make_dir(path.parent)
    path.write_bytes(data)
    pylock = tmp_path / "pylock.toml"
    pylock.write_text('lock-version = "1.0"\n[[packages]]\nname = "upstream-thing"\n'
                      'version = "1.0"\n[[packages.wheels]]\nname = "x.whl"\n'
                      f'hashes = {{sha256 = "{sha256}"}}\n')
    bundle = tmp_path / "m.tar"
    assert pypid("export", str(bundle), "--lock", str(pylock), "--config", str(config)) == 0
    manifest = decode(members(bundle)["manifest.json"])
    assert [(f.filename, f.sha256, f.yanked, f.upload_time) for f in manifest.files] == [
        (item.filename, sha256, "old", "2024-01-02T03:04:05.000000Z")]
    assert [(p.status, p.reason) for p in manifest.projects] == [("deprecated", "gone")]
    path.write_bytes(data + b"x")  # a cached file that no longer matches is never bundled
    assert pypid("export", str(bundle), "--project", "upstream-thing",
                 "--config", str(config)) == 1
    assert decode(members(bundle)["manifest.json"]) == manifest  # the old bundle stands
