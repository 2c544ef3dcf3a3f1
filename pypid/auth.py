"""Logins from an Apache htpasswd file through passlib, re-read whenever the file changes.

Also the writing side of ``pypid user``: bcrypt hashes, written atomically,
keeping the file's owner and mode. No Flask here, and no other pypid module.
"""

from __future__ import annotations

import collections
import contextlib
import fcntl
import grp
import hashlib
import hmac
import ipaddress
import logging
import math
import os
import pwd
import re
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
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
# A longer password, or one with a NUL, is a failed login without any hashing: passlib
# refuses both with an error (over 4096 bytes; NUL for bcrypt), and refusing them costs
# nothing that depends on the user.
MAX_LOGIN_PASSWORD_BYTES = 1024
# Failed logins: after MAX_LOGIN_FAILURES from one client within LOGIN_WINDOW seconds,
# that client gets 429 without any hashing until the window ends. Counted per worker
# process; the table keeps at most MAX_TRACKED_CLIENTS clients (about 2 MB).
MAX_LOGIN_FAILURES = 10
LOGIN_WINDOW = 60.0
MAX_TRACKED_CLIENTS = 10_000
_BCRYPT_RE = re.compile(r"^\$2[abxy]?\$(\d\d)\$")


class LoginThrottledError(Exception):
    """Too many failed logins from this client: try again in ``retry_after`` seconds."""

    def __init__(self, retry_after: int) -> None:
        super().__init__(f"too many failed logins; retry in {retry_after} s")
        self.retry_after = retry_after
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
        self.limiter = FailureLimiter()
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

    def check(self, user: str, password: str, client: str | None = None) -> bool:
        """Is this login valid? Every failed login costs the same: one bcrypt check.

        With ``client`` (its address), failures are counted, and a client over the
        limit gets LoginThrottledError before anything is hashed, good password or not
        (else a blocked client could still test guesses against the cache of good logins).
        """
        if client is not None and (wait := self.limiter.retry_after(client)):
            raise LoginThrottledError(wait)
        ok = self._verify(user, password)
        if not ok and client is not None:
            self.limiter.failed(client)
        return ok

    def _verify(self, user: str, password: str) -> bool:
        try:
            secret = f"{user}\0{password}".encode()
        except UnicodeEncodeError:  # lone surrogates: no stored password has them
            return False
        if "\0" in password or len(password.encode()) > MAX_LOGIN_PASSWORD_BYTES:
            return False
        key = hmac.new(self._secret, secret, hashlib.sha256).digest()
        with self._lock:
            self._refresh()
            if key in self._verified:
                return True
            table = self._file
            dummy = self._dummy_hash()
        stored = _stored_hash(table, user)
        ok = False
        if table is not None and stored is not None:
            try:
                ok = bool(table.check_password(user, password))
            except (ValueError, TypeError) as exc:  # a hash passlib cannot verify
                log.warning("logins: cannot check %r's password: %s", user, exc)
        if stored is None or not _BCRYPT_RE.match(stored):
            # Unknown users and weaker schemes (apr1, SHA1: far cheaper) pay one bcrypt
            # check too, so a failure's cost says nothing about who exists.
            bcrypt.verify(password, dummy)
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
        """The cost most bcrypt users of the file have (the dummy check costs the same)."""
        table = self._file
        users = table.users() if table is not None else []
        rounds = collections.Counter(
            int(found.group(1)) for user in users
            if (found := _BCRYPT_RE.match(_stored_hash(table, user) or "")))
        return rounds.most_common(1)[0][0] if rounds else _rounds()

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


def _stored_hash(table: HtpasswdFile | None, user: str) -> str | None:
    """``user``'s hash in the file, or None (unknown, or a name passlib refuses)."""
    if table is None:
        return None
    try:
        found = table.get_hash(user)
    except (ValueError, TypeError):
        return None
    return found.decode("ascii", "replace") if found is not None else None


def client_key(address: str) -> str:
    """What the failure limit counts as one client: an IPv4 address or an IPv6 /64 (one
    host, or one home's network, can rotate freely within a /64).

    >>> client_key("2001:db8::1:2"), client_key("::ffff:10.0.0.7"), client_key("10.0.0.7")
    ('2001:db8::/64', '10.0.0.7', '10.0.0.7')
    """
    try:
        ip = ipaddress.ip_address(address)
    except ValueError:
        return address[:64]
    if isinstance(ip, ipaddress.IPv6Address):
        if ip.ipv4_mapped is not None:
            return str(ip.ipv4_mapped)
        return str(ipaddress.ip_network(f"{ip}/64", strict=False))
    return str(ip)


class FailureLimiter:
    """Failed logins per client in a fixed window from its first failure; thread-safe.

    The table is bounded: past ``max_clients`` the client whose last failure is the
    oldest is forgotten, so rotating through addresses cannot grow it.
    """

    def __init__(self, max_failures: int = MAX_LOGIN_FAILURES, window: float = LOGIN_WINDOW,
                 max_clients: int = MAX_TRACKED_CLIENTS,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.max_failures, self.window, self.max_clients = max_failures, window, max_clients
        self._clock = clock
        self._lock = threading.Lock()
        self._table: collections.OrderedDict[str, tuple[float, int]] = collections.OrderedDict()

    def __len__(self) -> int:
        return len(self._table)

    def retry_after(self, client: str) -> int:
        """0 if ``client`` may try a login now, else whole seconds to wait."""
        key = client_key(client)
        with self._lock:
            entry = self._table.get(key)
            if entry is None:
                return 0
            left = entry[0] + self.window - self._clock()
            if left <= 0:
                del self._table[key]
                return 0
            return max(1, math.ceil(left)) if entry[1] >= self.max_failures else 0

    def failed(self, client: str) -> None:
        """Count one failed login of ``client``."""
        key = client_key(client)
        now = self._clock()
        with self._lock:
            start, count = self._table.pop(key, (now, 0))
            if now - start >= self.window:
                start, count = now, 0
            self._table[key] = (start, count + 1)  # now the most recent
            while len(self._table) > self.max_clients:
                self._table.popitem(last=False)


def _service_gid() -> int:
    """The pypid group where it exists (a Debian install), else our own."""
    try:
        return grp.getgrnam(SERVICE_GROUP).gr_gid
    except KeyError:
        return os.getegid()
