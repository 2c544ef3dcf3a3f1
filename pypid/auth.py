"""Logins from an Apache htpasswd file through passlib, re-read whenever the file changes.

Also the writing side of ``pypid user``: bcrypt hashes, written atomically,
keeping the file's owner and mode. No Flask here, and no other pypid module.
"""

from __future__ import annotations

import contextlib
import fcntl
import grp
import hashlib
import hmac
import logging
import os
import pwd
import re
import tempfile
import threading
from collections.abc import Iterator
from pathlib import Path

from passlib.apache import HtpasswdFile
from passlib.hash import bcrypt

log = logging.getLogger("pypid.auth")

USERNAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._@+-]{0,63}$")
DEFAULT_ROUNDS = 12
ROUNDS_ENV = "PYPID_BCRYPT_ROUNDS"  # tests lower the cost, as devpi's do
NEW_FILE_MODE = 0o640
SERVICE_GROUP = "pypid"
MAX_PASSWORD_BYTES = 72  # bcrypt ignores the rest; refuse rather than truncate silently
_VERIFIED_MAX = 1024
COMMAND_ENV = "PYPID_COMMAND"  # how to call pypid here: scripts/pypid sets ./scripts/pypid


class HtpasswdError(Exception):
    """A user-management problem, in one line."""


def check_username(name: str) -> None:
    """Raise HtpasswdError unless ``name`` is a sensible htpasswd user name."""
    if not USERNAME_RE.match(name):
        raise HtpasswdError(
            f"invalid user name {name!r}: use 1-64 letters, digits and . _ @ + -, "
            "starting with a letter or digit")


def check_password(password: str) -> None:
    if not password:
        raise HtpasswdError("the password is empty")
    if len(password.encode()) > MAX_PASSWORD_BYTES:
        raise HtpasswdError(f"the password is longer than {MAX_PASSWORD_BYTES} bytes "
                            "(bcrypt would ignore the rest)")
    if any(ord(c) < 32 for c in password):
        raise HtpasswdError("the password contains control characters")


def pypid_command() -> str:
    """How a person here runs pypid: ``pypid``, or the checkout's ``./scripts/pypid``."""
    return os.environ.get(COMMAND_ENV) or "pypid"


def process_user() -> str:
    """The name of the user this process runs as (for messages about permissions)."""
    try:
        return pwd.getpwuid(os.geteuid()).pw_name
    except KeyError:
        return f"uid {os.geteuid()}"


def unreadable(path: Path, reason: str) -> str:
    """One line: who cannot read the file, and the commands that fix it."""
    user = process_user()
    try:
        group = grp.getgrgid(os.getegid()).gr_name
    except KeyError:
        group = str(os.getegid())
    return (f"cannot read {path} as user {user} ({reason}): let {user} read it, "
            f"e.g. sudo chgrp {group} {path} && sudo chmod 640 {path}")


def _rounds() -> int:
    value = os.environ.get(ROUNDS_ENV, "")
    return int(value) if value.isdigit() and 4 <= int(value) <= 31 else DEFAULT_ROUNDS


class Htpasswd:
    """An htpasswd file, checked on every login and re-read when it changes.

    A missing, empty or unreadable file is not an error: every login then fails
    and ``problem()`` says why, so the server can start and explain.
    """

    def __init__(self, path: Path) -> None:
        self.path = Path(path)
        self._lock = threading.Lock()
        self._stamp: tuple[int, ...] | None = None
        self._file: HtpasswdFile | None = None
        self._problem: str | None = "not read yet"
        self._secret = os.urandom(32)
        self._verified: set[bytes] = set()
        self._dummy: str | None = None
        self._refresh()

    def problem(self) -> str | None:
        """None when logins are possible, else a one-line reason."""
        with self._lock:
            self._refresh()
            return self._problem

    def users(self) -> list[str]:
        with self._lock:
            self._refresh()
            return sorted(self._file.users()) if self._file else []

    def check(self, user: str, password: str) -> bool:
        """Is this login valid? A wrong or unknown user costs one bcrypt check either way."""
        key = hmac.new(self._secret, f"{user}\0{password}".encode(), hashlib.sha256).digest()
        with self._lock:
            self._refresh()
            if key in self._verified:
                return True
            table = self._file
            known = table is not None and user in table.users()
            dummy = None if known else self._dummy_hash()
        if table is not None and known:
            ok = bool(table.check_password(user, password))
        else:
            bcrypt.verify(password, dummy)  # same cost as a real check, result ignored
            ok = False
        if ok:
            with self._lock:
                if len(self._verified) >= _VERIFIED_MAX:
                    self._verified.clear()
                self._verified.add(key)
        return ok

    def _refresh(self) -> None:
        """Re-read the file when it changed: content, owner, mode or inode.

        A ``chown`` or ``chmod`` that makes the file readable takes effect on the
        next login; a file that could not be read is tried again every time.
        """
        try:
            st = os.stat(self.path)
        except FileNotFoundError:
            self._set(None, None, f"{self.path} does not exist: add a login with "
                      f"`{pypid_command()} user add NAME`")
            return
        except OSError as exc:
            self._set(None, None, unreadable(self.path, (exc.strerror or str(exc)).lower()))
            return
        stamp = (st.st_mtime_ns, st.st_size, st.st_ino, st.st_uid, st.st_gid, st.st_mode)
        if stamp == self._stamp:
            return
        try:
            loaded = HtpasswdFile(str(self.path), default_scheme="bcrypt")
        except OSError as exc:
            self._set(None, None, unreadable(self.path, (exc.strerror or str(exc)).lower()))
            return
        except (ValueError, UnicodeDecodeError) as exc:
            self._set(stamp, None, f"cannot read {self.path}: not an htpasswd file ({exc}); "
                      f"fix or remove it, then `{pypid_command()} user add NAME`")
            return
        problem = None if loaded.users() else (
            f"{self.path} has no users: add one with `{pypid_command()} user add NAME`")
        self._set(stamp, loaded, problem)

    def _set(self, stamp: tuple[int, ...] | None, loaded: HtpasswdFile | None,
             problem: str | None) -> None:
        if stamp != self._stamp or problem != self._problem:
            self._verified.clear()
            self._dummy = None
            if problem and self._stamp is not None:
                log.warning("logins: %s", problem)
        self._stamp, self._file, self._problem = stamp, loaded, problem

    def _dummy_hash(self) -> str:
        if self._dummy is None:
            self._dummy = bcrypt.using(rounds=self._typical_rounds()).hash(os.urandom(8).hex())
        return self._dummy

    def _typical_rounds(self) -> int:
        if self._file is not None:
            for user in self._file.users():
                found = re.match(r"^\$2[abxy]?\$(\d\d)\$", self._file.get_hash(user).decode())
                if found:
                    return int(found.group(1))
        return _rounds()

    # -- pypid user add / remove / list

    def add(self, user: str, password: str) -> bool:
        """Set ``user``'s password (bcrypt); True if the user is new."""
        check_username(user)
        check_password(password)
        with self._editing() as table:
            new = user not in table.users()
            table.set_password(user, password)
        return new

    def remove(self, user: str) -> bool:
        """Delete ``user``; False if there was no such user."""
        with self._editing() as table:
            return bool(table.delete(user))

    @contextlib.contextmanager
    def _editing(self) -> Iterator[HtpasswdFile]:
        directory = self.path.parent
        if not directory.is_dir():
            raise HtpasswdError(f"cannot write {self.path}: {directory} is not a directory")
        try:
            dir_fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY)
        except OSError as exc:
            raise HtpasswdError(f"cannot open {directory}: {exc.strerror}") from None
        try:
            fcntl.flock(dir_fd, fcntl.LOCK_EX)  # one writer at a time
            table = self._load_for_edit()
            yield table
            self._write(table.to_string(), dir_fd)
        finally:
            os.close(dir_fd)

    def _load_for_edit(self) -> HtpasswdFile:
        table = HtpasswdFile(default_scheme="bcrypt")
        table.context = table.context.copy(bcrypt__rounds=_rounds())
        try:
            table.load_string(self.path.read_bytes())
        except FileNotFoundError:
            pass
        except (OSError, ValueError) as exc:
            raise HtpasswdError(f"cannot read {self.path}: {exc}") from None
        return table

    def _write(self, data: bytes, dir_fd: int) -> None:
        """Replace the file atomically, keeping its owner and mode (or root:pypid 0640 if new)."""
        try:
            st = os.stat(self.path)
            mode, uid, gid = st.st_mode & 0o7777, st.st_uid, st.st_gid
        except FileNotFoundError:
            mode, uid, gid = NEW_FILE_MODE, os.geteuid(), _service_gid()
        fd, tmp = tempfile.mkstemp(prefix=f".{self.path.name}.", dir=self.path.parent)
        try:
            os.fchmod(fd, mode)
            if (uid, gid) != (os.geteuid(), os.getegid()):
                with contextlib.suppress(PermissionError):  # only root may give files away
                    os.fchown(fd, uid, gid)
            os.write(fd, data)
            os.fsync(fd)
            os.close(fd)
            fd = -1
            os.replace(tmp, self.path)
            os.fsync(dir_fd)
        except OSError as exc:
            raise HtpasswdError(f"cannot write {self.path}: {exc.strerror}") from None
        finally:
            if fd >= 0:
                os.close(fd)
            with contextlib.suppress(FileNotFoundError):
                os.unlink(tmp)


def _service_gid() -> int:
    """The pypid group where it exists (a Debian install), else our own."""
    try:
        return grp.getgrnam(SERVICE_GROUP).gr_gid
    except KeyError:
        return os.getegid()
