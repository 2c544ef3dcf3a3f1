"""This node's copy of a bucket's event log, so that a restart reads only the new lines
from the store (one GET per line otherwise): ``<node cache>/events-<place>.jsonl``.

A cache like the others: lines are added only in seq order after the last one (under
an exclusive ``flock``, by whichever process read them first), it can be deleted at
any time, and it is dropped when the bucket no longer holds its last line as written.
"""

from __future__ import annotations

import contextlib
import fcntl
import logging
import os
from collections.abc import Iterator
from pathlib import Path
from typing import IO

log = logging.getLogger("pypid.audit")

_TAIL = 64 * 1024


def seq_of(line: bytes) -> int:
    """The seq of a line ``{"seq":N,...``; -1 if it is not one."""
    end = line.find(b",", 7)
    text = line[7:end] if line.startswith(b'{"seq":') and end > 7 else b""
    return int(text) if text.isdigit() else -1


class LogMirror:
    """Lines 1..N of the bucket's log, one per line."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._memo = (0, 0)  # (seq, byte offset after it): where the last read ended

    def last(self) -> tuple[int, bytes]:
        """The last line's seq and bytes ((0, b"") when empty)."""
        try:
            with open(self.path, "rb") as handle:
                size = handle.seek(0, os.SEEK_END)
                handle.seek(max(0, size - _TAIL))
                lines = handle.read().split(b"\n")
        except OSError:
            return 0, b""
        whole = [line for line in lines[:-1] if line]  # the last piece has no newline
        return (seq_of(whole[-1]), whole[-1]) if whole else (0, b"")

    def lines_after(self, seq: int, limit: int) -> list[bytes]:
        """Up to ``limit`` lines after ``seq``, in order."""
        try:
            handle = open(self.path, "rb")  # noqa: SIM115 - closed below
        except OSError:
            return []
        found: list[bytes] = []
        with handle:
            memo_seq, position = self._memo
            if memo_seq != seq or not memo_seq:
                position = 0
            handle.seek(position)
            expected = seq + 1
            for raw in handle:
                if not raw.endswith(b"\n"):
                    break  # being written
                line_seq = seq_of(raw[:-1])
                if line_seq > seq:
                    if line_seq != expected or len(found) >= limit:
                        break  # not contiguous (the store decides), or enough
                    found.append(raw[:-1])
                    expected += 1
                position += len(raw)
        self._memo = (expected - 1, position) if found else self._memo
        return found

    def extend(self, lines: list[bytes]) -> None:
        """Add lines that follow the last one; others (another process was first) are skipped."""
        if not lines:
            return
        with self._locked() as handle:
            if handle is None:
                return
            last, _ = self.last()
            new = [line for line in lines if seq_of(line) > last]
            if new and seq_of(new[0]) == last + 1:
                handle.write(b"".join(line + b"\n" for line in new))

    def drop(self) -> None:
        with contextlib.suppress(FileNotFoundError):
            self.path.unlink()
        self._memo = (0, 0)

    @contextlib.contextmanager
    def _locked(self) -> Iterator[IO[bytes] | None]:
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC, 0o640)
        except OSError as exc:
            log.debug("no local copy of the bucket's log at %s: %s", self.path, exc)
            yield None
            return
        with os.fdopen(fd, "ab") as handle:
            if os.geteuid() == 0:  # the CLI as root: the copy stays the service's
                with contextlib.suppress(OSError):
                    folder = os.stat(self.path.parent)
                    os.fchown(fd, folder.st_uid, folder.st_gid)
            fcntl.flock(fd, fcntl.LOCK_EX)
            yield handle
