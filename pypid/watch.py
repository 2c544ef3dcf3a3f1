"""Notice changes below the package root: inotify on Linux, directory polling elsewhere.

With inotify the cost of noticing a change grows with the change, not with the
root. The poller is the fallback (no inotify, or the watch limit reached): it
stats every directory once a second and reports the ones whose mtime moved.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import errno
import logging
import os
import select
import struct
import time
from dataclasses import dataclass
from pathlib import Path

log = logging.getLogger("pypid.watch")

IN_MODIFY = 0x00000002
IN_ATTRIB = 0x00000004
IN_CLOSE_WRITE = 0x00000008
IN_MOVED_FROM = 0x00000040
IN_MOVED_TO = 0x00000080
IN_CREATE = 0x00000100
IN_DELETE = 0x00000200
IN_DELETE_SELF = 0x00000400
IN_MOVE_SELF = 0x00000800
IN_Q_OVERFLOW = 0x00004000
IN_IGNORED = 0x00008000
IN_ONLYDIR = 0x01000000
IN_DONT_FOLLOW = 0x02000000
IN_ISDIR = 0x40000000
IN_NONBLOCK = 0o4000
IN_CLOEXEC = 0o2000000

WATCH_MASK = (IN_MODIFY | IN_ATTRIB | IN_CLOSE_WRITE | IN_MOVED_FROM | IN_MOVED_TO | IN_CREATE
              | IN_DELETE | IN_DELETE_SELF | IN_MOVE_SELF | IN_ONLYDIR | IN_DONT_FOLLOW)
_HEADER = struct.Struct("iIII")


@dataclass(frozen=True, slots=True)
class Event:
    """Something happened to ``name`` in directory ``directory`` (both relative to the root).

    ``mask`` holds the IN_* bits; a poller's event has mask 0 and name '' and
    means "list this directory again". IN_Q_OVERFLOW means "rescan everything".
    """

    directory: str
    name: str
    mask: int

    @property
    def relpath(self) -> str:
        return f"{self.directory}/{self.name}" if self.directory else self.name


class Watcher:
    """The interface the index uses; see InotifyWatcher and PollingWatcher."""

    def add_directory(self, relpath: str) -> None:
        raise NotImplementedError

    def read(self, timeout: float) -> list[Event]:
        raise NotImplementedError

    def close(self) -> None:
        raise NotImplementedError


class InotifyWatcher(Watcher):
    """One inotify watch per directory; events name the file that changed."""

    def __init__(self, root: Path) -> None:
        self.root = root
        libc_name = ctypes.util.find_library("c") or "libc.so.6"
        self._libc = ctypes.CDLL(libc_name, use_errno=True)
        fd = self._libc.inotify_init1(IN_NONBLOCK | IN_CLOEXEC)
        if fd < 0:
            code = ctypes.get_errno()
            raise OSError(code, os.strerror(code))
        self._fd = fd
        self._dirs: dict[int, str] = {}

    def add_directory(self, relpath: str) -> None:
        path = self.root / relpath if relpath else self.root
        wd = self._libc.inotify_add_watch(self._fd, os.fsencode(path), WATCH_MASK)
        if wd < 0:
            code = ctypes.get_errno()
            if code in (errno.ENOENT, errno.ENOTDIR, errno.EACCES):
                return  # gone already, or not ours to read: nothing to watch
            raise OSError(code, f"inotify_add_watch {path}: {os.strerror(code)}")
        self._dirs[wd] = relpath

    def read(self, timeout: float) -> list[Event]:
        ready, _, _ = select.select([self._fd], [], [], timeout)
        if not ready:
            return []
        try:
            data = os.read(self._fd, 256 * 1024)
        except BlockingIOError:
            return []
        events: list[Event] = []
        offset = 0
        while offset + _HEADER.size <= len(data):
            wd, mask, _cookie, length = _HEADER.unpack_from(data, offset)
            offset += _HEADER.size
            raw_name = data[offset: offset + length].rstrip(b"\0")
            offset += length
            if mask & IN_Q_OVERFLOW:
                events.append(Event("", "", IN_Q_OVERFLOW))
                continue
            directory = self._dirs.get(wd)
            if directory is None:
                continue
            if mask & IN_IGNORED:
                del self._dirs[wd]
                continue
            events.append(Event(directory, os.fsdecode(raw_name), mask))
        return events

    def close(self) -> None:
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1


class PollingWatcher(Watcher):
    """Stat each known directory every ``interval`` seconds; report those that changed."""

    def __init__(self, root: Path, interval: float = 1.0) -> None:
        self.root = root
        self.interval = interval
        self._mtimes: dict[str, int | None] = {}
        self._next = time.monotonic() + interval

    def add_directory(self, relpath: str) -> None:
        self._mtimes[relpath] = self._mtime(relpath)

    def read(self, timeout: float) -> list[Event]:
        wait = self._next - time.monotonic()
        if wait > timeout:
            time.sleep(max(timeout, 0))
            return []
        time.sleep(max(wait, 0))
        self._next = time.monotonic() + self.interval
        events = []
        for relpath, before in list(self._mtimes.items()):
            now = self._mtime(relpath)
            if now != before:
                self._mtimes[relpath] = now
                if now is None:
                    del self._mtimes[relpath]
                events.append(Event(relpath, "", 0))
        return events

    def close(self) -> None:
        self._mtimes.clear()

    def _mtime(self, relpath: str) -> int | None:
        try:
            return (self.root / relpath if relpath else self.root).stat().st_mtime_ns
        except OSError:
            return None


def open_watcher(root: Path) -> Watcher:
    """An inotify watcher where the kernel offers one, else a poller."""
    try:
        return InotifyWatcher(root)
    except (OSError, AttributeError) as exc:
        log.warning("inotify unavailable (%s); polling the package root every second", exc)
        return PollingWatcher(root)
