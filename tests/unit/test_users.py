"""``pypid user add/remove/list`` and the htpasswd file they keep."""

from __future__ import annotations

import base64
import hashlib
import io
import os
import stat
import sys
from pathlib import Path

import pytest
from passlib.apache import HtpasswdFile

from pypid.auth import Htpasswd
from pypid.cli import main


@pytest.fixture
def config(tmp_path: Path) -> Path:
    path = tmp_path / "pypid.toml"
    path.write_text(f'[auth]\nhtpasswd = "{tmp_path / "htpasswd"}"\n')
    return path


def run(config: Path, *args: str, stdin: str = "") -> int:
    old = sys.stdin
    sys.stdin = io.StringIO(stdin)
    try:
        return main(["user", *args, "--config", str(config)])
    finally:
        sys.stdin = old


def test_add_list_remove(config: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert run(config, "add", "alice", "--password-stdin", stdin="pw-a\n") == 0
    assert run(config, "add", "bob", "--password-stdin", stdin="pw-b") == 0
    assert run(config, "list") == 0
    out = capsys.readouterr().out
    assert "added alice" in out
    assert out.splitlines()[-2:] == ["alice", "bob"]
    table = HtpasswdFile(str(tmp_path / "htpasswd"))
    assert table.check_password("alice", "pw-a")
    assert table.get_hash("alice").startswith((b"$2b$", b"$2y$"))  # bcrypt
    assert run(config, "add", "alice", "--password-stdin", stdin="new\n") == 0
    assert "changed the password of alice" in capsys.readouterr().out
    assert run(config, "remove", "bob") == 0
    assert run(config, "remove", "bob") == 1
    assert "no user 'bob'" in capsys.readouterr().err
    assert Htpasswd(tmp_path / "htpasswd").users() == ["alice"]


def test_new_file_mode_and_kept_mode(config: Path, tmp_path: Path) -> None:
    path = tmp_path / "htpasswd"
    assert run(config, "add", "alice", "--password-stdin", stdin="pw\n") == 0
    assert stat.S_IMODE(path.stat().st_mode) == 0o640
    path.chmod(0o600)
    assert run(config, "add", "bob", "--password-stdin", stdin="pw\n") == 0
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert path.stat().st_uid == os.geteuid()
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".htpasswd")]  # no temp left


@pytest.mark.skipif(os.geteuid() != 0, reason="only root can give a file to another owner")
def test_owner_kept(config: Path, tmp_path: Path) -> None:
    path = tmp_path / "htpasswd"
    path.write_text("")
    os.chown(path, 0, 4242)
    assert run(config, "add", "alice", "--password-stdin", stdin="pw\n") == 0
    assert (path.stat().st_uid, path.stat().st_gid) == (0, 4242)


@pytest.mark.parametrize(("args", "stdin", "message"), [
    (("add", "bad:name", "--password-stdin"), "pw\n", "invalid user name"),
    (("add", "", "--password-stdin"), "pw\n", "invalid user name"),
    (("add", "a b", "--password-stdin"), "pw\n", "invalid user name"),
    (("add", "alice", "--password-stdin"), "\n", "the password is empty"),
    (("add", "alice", "--password-stdin"), "x" * 80 + "\n", "longer than 72 bytes"),
    (("add", "alice"), "", "use --password-stdin"),
])
def test_add_refusals(config: Path, args: tuple[str, ...], stdin: str, message: str,
                      capsys: pytest.CaptureFixture[str]) -> None:
    assert run(config, *args, stdin=stdin) == 1
    err = capsys.readouterr().err
    assert message in err
    assert len(err.strip().splitlines()) == 1


def test_missing_directory(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    config = tmp_path / "pypid.toml"
    config.write_text(f'[auth]\nhtpasswd = "{tmp_path / "no" / "such" / "htpasswd"}"\n')
    assert run(config, "add", "alice", "--password-stdin", stdin="pw\n") == 1
    assert "is not a directory" in capsys.readouterr().err
    assert run(config, "list") == 1


def test_broken_config_exits_78(tmp_path: Path) -> None:
    config = tmp_path / "pypid.toml"
    config.write_text("[auth]\nhtpaswd = 1\n")
    assert run(config, "list") == 78


def test_reads_apache_hashes(tmp_path: Path) -> None:
    path = tmp_path / "htpasswd"
    table = HtpasswdFile(str(path), new=True, default_scheme="apr_md5_crypt")
    table.set_password("apr", "one")
    table.save()
    sha1 = base64.b64encode(hashlib.sha1(b"two").digest()).decode()  # noqa: S324 - htpasswd -s
    with path.open("a") as handle:
        handle.write(f"sha:{{SHA}}{sha1}\n")
    logins = Htpasswd(path)
    assert logins.check("apr", "one")
    assert logins.check("sha", "two")
    assert not logins.check("sha", "one")
