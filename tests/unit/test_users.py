"""``pypid user add/remove/list`` and the htpasswd file they keep."""

from __future__ import annotations

import base64
import hashlib
import io
import os
import stat
import sys
import threading
from pathlib import Path

import bcrypt as bcrypt_backend
import pytest
from passlib.apache import HtpasswdFile

from pypid.auth import (
    LOGIN_WINDOW,
    MAX_LOGIN_FAILURES,
    FailureLimiter,
    Htpasswd,
    LoginThrottledError,
)
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


# -- logins: equal cost, 401 for any bad input, a per-client failure limit


@pytest.fixture
def mixed(tmp_path: Path) -> Htpasswd:
    """bcrypt alice (s3cret), apr1 apr (one), SHA1 sha (two)."""
    path = tmp_path / "htpasswd"
    Htpasswd(path).add("alice", "s3cret")
    table = HtpasswdFile(str(path), default_scheme="apr_md5_crypt")
    table.set_password("apr", "one")
    table.save()
    sha1 = base64.b64encode(hashlib.sha1(b"two").digest()).decode()  # noqa: S324 - htpasswd -s
    with path.open("a") as handle:
        handle.write(f"sha:{{SHA}}{sha1}\n")
    return Htpasswd(path)


@pytest.fixture
def hashpw_calls(monkeypatch: pytest.MonkeyPatch) -> list[bytes]:
    """Every bcrypt computation (passlib's bcrypt backend calls bcrypt.hashpw)."""
    calls: list[bytes] = []
    real = bcrypt_backend.hashpw

    def spy(secret: bytes, salt: bytes) -> bytes:
        calls.append(salt)
        return real(secret, salt)

    monkeypatch.setattr(bcrypt_backend, "hashpw", spy)
    return calls


@pytest.mark.parametrize(("user", "password"), [
    ("nobody", "s3cret"), ("alice", "wrong"), ("apr", "wrong"), ("sha", "wrong"),
    ("apr", "one"), ("sha", "two"),
], ids=["unknown", "bcrypt", "apr1", "sha1", "apr1-good", "sha1-good"])
def test_every_login_costs_one_bcrypt_check(mixed: Htpasswd, hashpw_calls: list[bytes],
                                            user: str, password: str) -> None:
    mixed.check("alice", "warm up the dummy hash")
    hashpw_calls.clear()
    assert mixed.check(user, password) is (password in ("one", "two"))
    assert len(hashpw_calls) == 1
    assert hashpw_calls[0][3:7] == b"$04$"  # the file's own cost (tests: 4 rounds)


@pytest.mark.parametrize("password", ["a\0b", "x" * 6000, "\udcff", ""],
                         ids=["nul", "6kb", "surrogate", "empty"])
def test_unusable_passwords_fail_without_hashing(mixed: Htpasswd, hashpw_calls: list[bytes],
                                                 password: str) -> None:
    assert not mixed.check("alice", password)
    assert not mixed.check("apr", password)
    assert hashpw_calls == [] or password == ""


@pytest.mark.parametrize("user", ["a\nb", "a:b", "x" * 300, "\0", ""])
def test_odd_user_names_fail(mixed: Htpasswd, user: str) -> None:
    assert not mixed.check(user, "s3cret")


def test_throttled_client_gets_no_hash(mixed: Htpasswd, hashpw_calls: list[bytes]) -> None:
    for _ in range(MAX_LOGIN_FAILURES):
        assert not mixed.check("alice", "wrong", client="192.0.2.1")
    hashpw_calls.clear()
    with pytest.raises(LoginThrottledError) as caught:
        mixed.check("alice", "s3cret", client="192.0.2.1")  # even the right password
    assert 1 <= caught.value.retry_after <= LOGIN_WINDOW
    assert hashpw_calls == []
    assert mixed.check("alice", "s3cret", client="192.0.2.2")
    assert mixed.check("alice", "s3cret")  # no client: not limited (the CLI, tests)


def test_limiter_window_and_clients() -> None:
    now = [1000.0]
    limiter = FailureLimiter(max_failures=3, window=60, max_clients=100, clock=lambda: now[0])
    for _ in range(2):
        limiter.failed("2001:db8::1")
    assert limiter.retry_after("2001:db8::2") == 0
    limiter.failed("2001:db8::ffff")  # the same /64
    assert limiter.retry_after("2001:db8::3") == 60
    assert limiter.retry_after("2001:db8:0:1::1") == 0  # another /64
    now[0] += 59.5
    assert limiter.retry_after("2001:db8::1") == 1
    now[0] += 0.5
    assert limiter.retry_after("2001:db8::1") == 0
    assert len(limiter) == 0  # expired entries are dropped when seen


def test_limiter_table_is_bounded() -> None:
    limiter = FailureLimiter(max_failures=3, window=60, max_clients=100)
    for number in range(20_000):
        limiter.failed(f"10.{number >> 16}.{(number >> 8) & 255}.{number & 255}")
    assert len(limiter) == 100
    assert limiter.retry_after("10.0.78.31") == 0  # the last client is still counted
    for _ in range(2):
        limiter.failed("10.0.78.31")
    assert limiter.retry_after("10.0.78.31") > 0


def test_limiter_is_thread_safe() -> None:
    limiter = FailureLimiter(max_failures=10_000, window=60, max_clients=50)

    def hammer(base: int) -> None:
        for number in range(2000):
            limiter.failed(f"10.{base}.{number >> 8}.{number & 255}")
            limiter.retry_after(f"10.{base}.0.1")

    threads = [threading.Thread(target=hammer, args=(base,)) for base in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=30)
    assert len(limiter) == 50
