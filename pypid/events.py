"""The audit log, which is also the index's event log: every change that is not a file's
bytes (and a record of every upload and removal), one JSON line each, hash-chained.

A line's keys come in DESIGN.md's order, where they apply, and ``prev`` is the
SHA-256 of the previous line's bytes (64 zeros for the first), so an edited,
inserted or deleted line breaks the chain after it. The last line has no
successor: ``audit.head`` beside the log records the last ``seq`` and hash,
so editing or deleting the last lines is caught too (and every line also goes
to the journal, which nobody here can rewrite).

Writers in any process (workers, the CLI) append under an exclusive ``flock``;
each line is fsynced before the change it records counts. A line cut short by
a crash is removed by the next writer or start (and that is logged); a full
disk refuses the change (``NoSpaceError``) and leaves the log as it was.
Readers follow the file by offset: only new lines are read.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import hashlib
import json
import logging
import os
import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

log = logging.getLogger("pypid.audit")

LOG_NAME = "audit.jsonl"
HEAD_NAME = "audit.head"
HEAD_SIZE = 100  # bytes of its one record, padded: each write covers the last whole
ZERO_HASH = "0" * 64
ANONYMOUS = "(anonymous)"  # the user of an upload made with no login (uploads left open)
KEYS = ("seq", "time", "user", "client", "action", "project", "file", "sha256", "size",
        "reason", "status", "owner", "prev")
ACTIONS = frozenset(("upload", "remove", "yank", "unyank", "status", "owner-add",
                     "owner-remove", "user-add", "user-remove", "import"))
_TAIL_CHUNK = 64 * 1024


class EventLogError(Exception):
    """The log cannot take a change (one line, for the operator)."""


class LogUnavailableError(EventLogError):
    """The log's store cannot be reached now (a bucket down): the change is refused."""


class NoSpaceError(EventLogError):
    """The file system is full: the change is refused, the log unchanged."""


@dataclass(frozen=True, slots=True)
class Event:
    """One line of the log, as read back."""

    seq: int
    time: str
    user: str
    client: str | None
    action: str
    fields: dict[str, Any]  # project, file, sha256, size, reason, status, owner: as given
    line: bytes  # the line's bytes, without its newline

    def get(self, key: str) -> Any:
        return self.fields.get(key)


def utc_now() -> str:
    """The time of a new line: UTC with a literal Z, to the microsecond."""
    now = time.time()
    seconds = int(now)
    micros = min(int((now - seconds) * 1e6), 999_999)
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(seconds)) + f".{micros:06d}Z"


def encode(seq: int, action: str, fields: dict[str, Any], *, when: str, user: str,
           client: str | None, prev: str) -> bytes:
    """One line, keys in the contract's order; ``fields`` that are None are left out."""
    if action not in ACTIONS:
        raise ValueError(f"unknown audit action {action!r}")
    record: dict[str, Any] = {"seq": seq, "time": when, "user": user, "client": client,
                              "action": action}
    for key in KEYS[5:-1]:
        value = fields.get(key)
        if value is not None:
            record[key] = value
    record["prev"] = prev
    return json.dumps(record, ensure_ascii=True, separators=(",", ":")).encode()


def decode(line: bytes) -> Event:
    """An Event from one line (ValueError if it is not one)."""
    record = json.loads(line)
    if not isinstance(record, dict) or not isinstance(record.get("seq"), int):
        raise ValueError("not an audit entry")
    fields = {key: record[key] for key in KEYS[5:-1] if key in record}
    return Event(record["seq"], str(record.get("time", "")), str(record.get("user", "")),
                 record.get("client"), str(record.get("action", "")), fields, line)


def line_hash(line: bytes) -> str:
    return hashlib.sha256(line).hexdigest()


def check_chain(lines: Iterable[bytes]) -> str | None:
    """None when ``lines`` (without newlines) are a whole log from line 1 whose chain
    holds, else "line N: what is wrong" for the first broken one."""
    prev = ZERO_HASH
    for number, line in enumerate(lines, 1):
        problem = _check_line(line, number, prev)
        if problem is not None:
            return problem
        prev = line_hash(line)
    return None


class AuditLog(Protocol):
    """What the ledger, the manager and the CLI use of a log: this file (``EventLog``) or
    a bucket's (``storage.s3log.BucketLog``). An offset is opaque: what ``read`` returned."""

    path: Any  # where it is, for messages

    def append(self, action: str, *, user: str, client: str | None = None,
               **fields: Any) -> Event: ...

    def repair(self) -> bool: ...

    def read(self, offset: int = 0) -> tuple[list[Event], int]: ...

    def scan(self) -> Iterator[Event]: ...

    def size(self) -> int:
        """The offset after the last line, or -1 when that costs a read anyway."""
        ...

    def verify(self) -> tuple[int, str | None]: ...


class EventLog:
    """``<directory>/audit.jsonl``: append (any process), read by offset, verify."""

    def __init__(self, directory: Path) -> None:
        self.directory = Path(directory)
        self.path = self.directory / LOG_NAME
        self.head_path = self.directory / HEAD_NAME
        self._warned = False

    # -- writing

    def append(self, action: str, *, user: str, client: str | None = None,
               **fields: Any) -> Event:
        """Write one entry (fsynced) and return it; NoSpaceError on a full disk."""
        self._make_directory()
        with self._locked() as fd:
            end, seq, prev = self._tail(fd)
            line = encode(seq + 1, action, fields, when=utc_now(), user=user, client=client,
                          prev=prev)
            data = line + b"\n"
            try:
                # At the end we checked (not past a torn tail); a short write is a full disk.
                if os.pwrite(fd, data, end) != len(data):
                    raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
                os.fsync(fd)
            except OSError as exc:
                with contextlib.suppress(OSError):
                    os.ftruncate(fd, end)
                if exc.errno in (errno.ENOSPC, errno.EDQUOT):
                    raise NoSpaceError(f"{self.path}: no space left for the audit log") from exc
                raise EventLogError(f"{self.path}: {exc.strerror or exc}") from exc
            self._write_head(seq + 1, line_hash(line))
        event = decode(line)
        log.info("%s", line.decode())  # the journal's copy
        return event

    def _make_directory(self) -> None:
        """The log's folder; made by root (the CLI), it belongs to the owner of the folder
        above (the package root's: the service's), which keeps its caches there too."""
        if self.directory.is_dir():
            return
        try:
            self.directory.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise EventLogError(f"cannot make {self.directory}: {exc.strerror or exc}") from exc
        if os.geteuid() == 0:
            with contextlib.suppress(OSError):
                above = os.stat(self.directory.parent)
                os.chown(self.directory, above.st_uid, above.st_gid)

    def repair(self) -> bool:
        """Cut a torn last line (left by a writer that died mid-line); True if it did."""
        if not self.path.exists():
            return False
        with self._locked() as fd:
            size = os.fstat(fd).st_size
            end, _, _ = self._tail(fd)
            return end < size

    @contextlib.contextmanager
    def _locked(self) -> Iterator[int]:
        try:
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o640)
        except OSError as exc:
            raise EventLogError(f"cannot open {self.path}: {exc.strerror or exc}") from exc
        try:
            _same_owner_as_folder(fd, self.directory)
            fcntl.flock(fd, fcntl.LOCK_EX)
            yield fd
        finally:
            os.close(fd)  # releases the lock

    def _tail(self, fd: int) -> tuple[int, int, str]:
        """(size, last seq, last line's hash), after cutting a torn last line (locked)."""
        size = os.fstat(fd).st_size
        if size and os.pread(fd, 1, size - 1) != b"\n":
            whole = _rfind_newline(fd, size) + 1
            log.warning("audit log %s: removed a torn last line (%d bytes) left by an "
                        "interrupted write", self.path, size - whole)
            os.ftruncate(fd, whole)
            size = whole
        if not size:
            return 0, 0, ZERO_HASH
        start = _rfind_newline(fd, size - 1) + 1
        line = os.pread(fd, size - 1 - start, start)
        try:
            seq = decode(line).seq
        except ValueError as exc:
            raise EventLogError(f"{self.path}: its last line is not an audit entry; "
                                "see `pypid audit --verify`") from exc
        return size, seq, line_hash(line)

    def _write_head(self, seq: int, digest: str) -> None:
        """The anchor for the last line; not fsynced (after a crash it may lag, never lead).

        Overwritten in place, one fixed-size write (a sector: never half written), under
        the log's lock: a rename per change cost as much as the line's fsync."""
        record = f"{seq} {digest}".ljust(HEAD_SIZE - 1).encode("ascii") + b"\n"
        try:
            try:
                fd = os.open(self.head_path, os.O_WRONLY | os.O_CREAT | os.O_CLOEXEC, 0o640)
            except PermissionError:  # another user's head (an older pypid's root CLI)
                tmp = self.head_path.with_name(HEAD_NAME + ".tmp")
                tmp.write_bytes(record)
                os.replace(tmp, self.head_path)
                return
            try:
                _same_owner_as_folder(fd, self.directory)
                os.pwrite(fd, record, 0)
            finally:
                os.close(fd)
        except OSError as exc:
            log.warning("audit log: cannot record its head in %s: %s", self.head_path,
                        exc.strerror or exc)

    # -- reading

    def read(self, offset: int = 0) -> tuple[list[Event], int]:
        """The whole lines from byte ``offset`` on, and the offset after the last of them."""
        try:
            with open(self.path, "rb") as handle:
                handle.seek(offset)
                data = handle.read()
        except FileNotFoundError:
            return [], 0
        except OSError as exc:
            self._warn_unreadable(exc)
            return [], offset
        end = data.rfind(b"\n") + 1
        events = []
        for line in data[:end].split(b"\n")[:-1]:
            try:
                events.append(decode(line))
            except ValueError:
                log.warning("audit log %s: skipping a line that is not an entry", self.path)
        return events, offset + end

    def scan(self) -> Iterator[Event]:
        """Every whole line, oldest first, read as it goes (memory does not grow with the log)."""
        try:
            handle = open(self.path, "rb")  # noqa: SIM115 - closed below
        except FileNotFoundError:
            return
        except OSError as exc:
            self._warn_unreadable(exc)
            return
        with handle:
            for raw in handle:
                if not raw.endswith(b"\n"):
                    return  # a line being written (or torn)
                try:
                    yield decode(raw[:-1])
                except ValueError:
                    log.warning("audit log %s: skipping a line that is not an entry", self.path)

    def size(self) -> int:
        try:
            return self.path.stat().st_size
        except FileNotFoundError:
            return 0
        except OSError as exc:
            self._warn_unreadable(exc)
            return 0

    def _warn_unreadable(self, exc: OSError) -> None:
        if not self._warned:
            self._warned = True
            log.warning("cannot read the audit log %s (%s): serving without its marks",
                        self.path, exc.strerror or exc)

    def verify(self) -> tuple[int, str | None]:
        """(entries checked, None) when the chain holds, else (N, "line N: what is wrong")."""
        prev = ZERO_HASH
        count = 0
        try:
            handle = open(self.path, "rb")  # noqa: SIM115 - closed below
        except FileNotFoundError:
            return 0, None
        with handle:
            for number, raw in enumerate(handle, 1):
                if not raw.endswith(b"\n"):
                    return count, f"line {number}: unfinished (no newline)"
                line = raw[:-1]
                problem = _check_line(line, number, prev)
                if problem is not None:
                    return count, problem
                prev = line_hash(line)
                count = number
        return count, self._check_head(count, prev)

    def _check_head(self, count: int, last_hash: str) -> str | None:
        try:
            seq_text, digest = self.head_path.read_text(encoding="ascii").split()
            seq = int(seq_text)
        except FileNotFoundError:
            return None
        except (OSError, ValueError):
            return f"{self.head_path}: unreadable"
        if seq > count:
            return f"line {count + 1}: missing (the log ended at line {seq})"
        if seq == count and digest != last_hash:
            return f"line {count}: altered (it is not the line that was written)"
        return None


def _same_owner_as_folder(fd: int, directory: Path) -> None:
    """root (the CLI) writing into the service's folder: the log stays the service's, so
    the server (user pypid) can still append to it."""
    if os.geteuid() != 0:
        return
    with contextlib.suppress(OSError):
        folder, st = os.stat(directory), os.fstat(fd)
        if (st.st_uid, st.st_gid) != (folder.st_uid, folder.st_gid):
            os.fchown(fd, folder.st_uid, folder.st_gid)


def _rfind_newline(fd: int, end: int) -> int:
    """The offset of the last newline before ``end``, or -1."""
    while end > 0:
        start = max(0, end - _TAIL_CHUNK)
        found = os.pread(fd, end - start, start).rfind(b"\n")
        if found >= 0:
            return start + found
        end = start
    return -1


def _check_line(line: bytes, number: int, prev: str) -> str | None:
    # The chain's fields are at fixed places: no JSON parse needed to check it, which
    # makes a million lines a matter of seconds.
    if not line.endswith(b'"}') or line[-75:-66] != b',"prev":"':
        try:
            decode(line)
        except ValueError:
            return f"line {number}: not an audit entry"
        return f"line {number}: has no prev hash at its end"
    if line[-66:-2].decode("ascii", "replace") != prev:
        return f"line {number}: its prev hash does not match line {number - 1}" \
            if number > 1 else "line 1: its prev hash is not the first line's (64 zeros)"
    seq_end = line.find(b",", 8)
    if not line.startswith(b'{"seq":') or line[7:seq_end] != str(number).encode():
        return f"line {number}: seq is not {number}"
    return None
