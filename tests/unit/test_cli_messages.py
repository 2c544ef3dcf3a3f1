"""Every CLI failure is one line naming the cause and the next step, with its exit code.

Permission cases run the CLI as an unprivileged user: ``nobody`` when the suite runs
as root (root reads everything), else this user with the file's permissions taken away.
"""

from __future__ import annotations

import argparse
import os
import pwd
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from pypid import cli
from pypid.auth import Htpasswd

REPO = Path(__file__).resolve().parents[2]
AS_ROOT = os.geteuid() == 0
OTHER = "nobody"


@pytest.fixture
def shared(tmp_path: Path) -> Iterator[Path]:
    """A folder an unprivileged user may enter (pytest's tmp_path is 0700 under root)."""
    if not AS_ROOT:
        yield tmp_path
        return
    folder = Path(tempfile.mkdtemp(prefix="pypid-cli-"))
    folder.chmod(0o755)
    try:
        yield folder
    finally:
        shutil.rmtree(folder)


def _others_can_reach(path: Path) -> bool:
    """May a user with no rights here enter every folder above ``path``?"""
    folders = [path, *path.parents] if path.is_dir() else list(path.parents)
    return all(folder.stat().st_mode & 0o001 for folder in folders)


def run_unprivileged(*args: str) -> subprocess.CompletedProcess[str]:
    """``python -m pypid ARGS`` as a user without special rights."""
    user = OTHER if AS_ROOT else None
    if AS_ROOT and not (_others_can_reach(REPO) and _others_can_reach(Path(sys.executable))):
        pytest.skip(f"{OTHER} cannot reach this checkout or its Python (a folder above it "
                    "is closed to others, e.g. one made by mktemp -d)")
    env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "PYTHONPATH": str(REPO),
           "LANG": "C.UTF-8", "PYPID_BCRYPT_ROUNDS": "4"}
    return subprocess.run(  # bounded by timeout
        [sys.executable, "-m", "pypid", *args], capture_output=True, text=True, env=env,
        cwd="/", user=user, timeout=60, check=False, stdin=subprocess.DEVNULL)


def who() -> str:
    return OTHER if AS_ROOT else pwd.getpwuid(os.geteuid()).pw_name


def one_line(stderr: str) -> str:
    lines = stderr.strip().splitlines()
    assert len(lines) == 1, stderr
    assert "Traceback" not in stderr
    return lines[0]


def fails_without_access(path: Path, mode: int, *args: str) -> str:
    """Take access to path away (mode), run the CLI unprivileged, give it back;
    the run must exit 1 with one line on stderr and nothing on stdout: that line."""
    path.chmod(mode)
    try:
        done = run_unprivileged(*args)
    finally:
        path.chmod(0o755)
    assert done.returncode == 1
    assert done.stdout == ""
    return one_line(done.stderr)


def config_for(folder: Path, htpasswd: Path) -> Path:
    config = folder / "pypid.toml"
    config.write_text(f'[auth]\nhtpasswd = "{htpasswd}"\n')
    config.chmod(0o644)
    return config


def test_user_add_in_a_folder_it_cannot_write(shared: Path) -> None:
    locked = shared / "etc"
    locked.mkdir()
    config = config_for(shared, locked / "pypid.htpasswd")
    # Under root, 0755 already keeps nobody out of a root-owned folder.
    line = fails_without_access(locked, 0o755 if AS_ROOT else 0o555, "user", "add", "alice",
                                "--password-stdin", "--config", str(config))
    assert f"cannot write {locked / 'pypid.htpasswd'} as user {who()}" in line
    assert "sudo pypid user" in line
    assert not list(locked.iterdir())


def test_user_list_on_an_unreadable_file(shared: Path) -> None:
    htpasswd = shared / "pypid.htpasswd"
    htpasswd.write_text("alice:$2b$04$abcdefghijklmnopqrstuu5yQz0T7c2ZC3QeW2lQn6K0f6mCqXy6\n")
    config = config_for(shared, htpasswd)
    line = fails_without_access(htpasswd, 0o600 if AS_ROOT else 0o000, "user", "list",
                                "--config", str(config))
    assert f"cannot read {htpasswd} as user {who()} (permission denied)" in line
    assert f"chmod 640 {htpasswd}" in line


def test_serve_on_an_unreadable_root(shared: Path) -> None:
    root = shared / "packages"
    root.mkdir()
    config = config_for(shared, shared / "htpasswd")
    line = fails_without_access(root, 0o700 if AS_ROOT else 0o000, "serve", "--config",
                                str(config), "--root", str(root), "--port", "0", "--host",
                                "127.0.0.1")
    assert f"cannot read the package root {root} as user {who()}" in line
    assert "--root or storage.root" in line


@pytest.fixture
def config(tmp_path: Path) -> Path:
    return config_for(tmp_path, tmp_path / "htpasswd")


def test_user_list_on_a_missing_file(config: Path, tmp_path: Path,
                                     capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.main(["user", "list", "--config", str(config)]) == 1
    line = one_line(capsys.readouterr().err)
    assert line == (f"pypid: user list: {tmp_path / 'htpasswd'} does not exist: "
                    "add a login with `pypid user add NAME`")


def test_user_list_on_an_empty_file(config: Path, tmp_path: Path,
                                    capsys: pytest.CaptureFixture[str]) -> None:
    (tmp_path / "htpasswd").write_text("")
    assert cli.main(["user", "list", "--config", str(config)]) == 0
    assert capsys.readouterr().out == ""


def test_hints_name_the_checkout_wrapper(config: Path, monkeypatch: pytest.MonkeyPatch,
                                         capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setenv("PYPID_COMMAND", "./scripts/pypid")
    assert cli.main(["user", "list", "--config", str(config)]) == 1
    assert "add a login with `./scripts/pypid user add NAME`" in capsys.readouterr().err


def test_serve_root_that_cannot_be_created(config: Path, tmp_path: Path,
                                           capsys: pytest.CaptureFixture[str]) -> None:
    root = tmp_path / "missing" / "packages"
    assert cli.main(["serve", "--config", str(config), "--root", str(root)]) == 1
    line = one_line(capsys.readouterr().err)
    assert line.startswith(f"pypid: cannot create the package root {root} as user ")
    assert "(no such file or directory)" in line
    assert "--root or storage.root" in line


def _raising(exc: BaseException) -> argparse.Namespace:
    def handler(args: argparse.Namespace) -> int:
        raise exc
    return argparse.Namespace(handler=handler)


@pytest.mark.parametrize(("exc", "expected"), [
    (PermissionError(13, "Permission denied", "/srv/x"),
     "pypid: cannot use /srv/x as user {user} (permission denied): run as a user that may, "
     "or give this user access to it"),
    (FileNotFoundError(2, "No such file or directory", "/srv/y"),
     "pypid: /srv/y: no such file or directory (running as user {user})"),
    (RuntimeError("boom"),
     "pypid: unexpected error: RuntimeError: boom (set PYPID_TRACEBACK=1 to see where)"),
], ids=["permission", "missing", "unexpected"])
def test_no_traceback_ever(exc: BaseException, expected: str,
                           capsys: pytest.CaptureFixture[str]) -> None:
    assert cli._run(_raising(exc)) == 1
    user = pwd.getpwuid(os.geteuid()).pw_name
    assert one_line(capsys.readouterr().err) == expected.format(user=user)


@pytest.mark.parametrize("command", [
    [], ["serve"], ["check-config"], ["reload"], ["user"], ["user", "add"], ["user", "remove"],
    ["user", "list"]], ids=lambda c: " ".join(c) or "pypid")
def test_help_has_examples(command: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.main([*command, "--help"]) == 0
    out = capsys.readouterr().out
    assert "example" in out
    assert "/etc/pypid.toml" in out  # where --config defaults to


def test_serve_help_shows_defaults(capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.main(["serve", "--help"]) == 0
    out = " ".join(capsys.readouterr().out.split())
    assert "Serve the package directory" in out
    for default in ("default 8080", "default 0.0.0.0", "default /var/lib/pypid/packages"):
        assert default in out


# -- the htpasswd file is re-read when owner, mode or inode change, not only mtime


def _swap_name_keeping_stamp(path: Path, old: str, new: str) -> None:
    """Change the content but keep size and mtime: only the re-read key differs."""
    st = path.stat()
    path.write_text(path.read_text().replace(old, new))
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns))


def test_reread_on_mode_change(tmp_path: Path) -> None:
    path = tmp_path / "htpasswd"
    path.write_text("alice:$2b$04$abcdefghijklmnopqrstuu5yQz0T7c2ZC3QeW2lQn6K0f6mCqXy6\n")
    path.chmod(0o600)
    htpasswd = Htpasswd(path)
    assert htpasswd.users() == ["alice"]
    _swap_name_keeping_stamp(path, "alice", "alina")
    assert htpasswd.users() == ["alice"]  # same mtime, size, inode, owner, mode: cached
    path.chmod(0o640)
    assert htpasswd.users() == ["alina"]


@pytest.mark.skipif(not AS_ROOT, reason="only root may give a file to another group")
def test_reread_on_owner_change(tmp_path: Path) -> None:
    path = tmp_path / "htpasswd"
    path.write_text("alice:$2b$04$abcdefghijklmnopqrstuu5yQz0T7c2ZC3QeW2lQn6K0f6mCqXy6\n")
    htpasswd = Htpasswd(path)
    assert htpasswd.users() == ["alice"]
    _swap_name_keeping_stamp(path, "alice", "alina")
    os.chown(path, -1, pwd.getpwnam(OTHER).pw_gid)
    assert htpasswd.users() == ["alina"]
