"""Notice changes below the package root: inotify on Linux, directory polling elsewhere.

With inotify the cost of noticing a change grows with the change, not with the
root. The poller is the fallback (no inotify, or the watch limit reached): it
stats every directory once a second and reports the ones whose mtime moved.
``ChangeFeed`` turns either's raw events into what the index acts on: a file
settled (or went), a file arrived whole, a folder gone, a folder to list again.
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
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path

log = logging.getLogger("pypid.watch")

SETTLE_SECONDS = 0.25  # a created file with no further writes is taken as complete after this
WRITING_GRACE = 2.0  # a file written to within this is still being copied in
SCANNED_QUIET = 0.5  # a fresh file a scan found, in a folder now watched: this without writes

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


@dataclass(frozen=True, slots=True)
class Settled:
    """A file changed (or was removed) and is quiet now: look at it again."""

    relpath: str


@dataclass(frozen=True, slots=True)
class Arrived:
    """A file appeared whole (linked or renamed in, or just created).

    If the cache already describes it exactly (an upload), show it now; a
    ``Settled`` for it follows in any case.
    """

    relpath: str


@dataclass(frozen=True, slots=True)
class Gone:
    """A folder left (deleted or moved away): nothing below it exists any more."""

    relpath: str


@dataclass(frozen=True, slots=True)
class Rescan:
    """List ``directory`` again (with its sub-folders if ``recursive``); ('', True): everything,
    after the kernel dropped events."""

    directory: str
    recursive: bool


Change = Settled | Arrived | Gone | Rescan


class ChangeFeed:
    """Watches every folder below a root and reports ``Change`` s, each file once it settled.

    A file copied in by hand is reported ``SETTLE_SECONDS`` after its last event,
    or once it is closed; while it is still being written to (within
    ``WRITING_GRACE``) it waits, but never longer than ten graces.
    """

    def __init__(self, root: Path, directories: Callable[[], Iterable[str]],
                 watcher: Watcher | None = None) -> None:
        self.root = root
        self._directories = directories
        self._pending: dict[str, float] = {}  # relpath -> when it may be reported
        self._written: dict[str, float] = {}  # relpath -> its last write
        self._watcher = self._watch(watcher if watcher is not None else open_watcher(root), "")

    def read(self, timeout: float) -> list[Change]:
        """Wait up to ``timeout`` seconds for events; return the changes due now."""
        events = self._watcher.read(timeout)
        return self.sort(events, time.monotonic())

    def sort(self, events: Iterable[Event], now: float) -> list[Change]:
        """The changes ``events`` bring at monotonic time ``now``, and the files settled by then."""
        changes: list[Change] = []
        for event in events:
            change = self._classify(event, now)
            if change is not None:
                changes.append(change)
        due = [relpath for relpath, when in self._pending.items()
               if when <= now and now - self._written.get(relpath, -WRITING_GRACE) >= WRITING_GRACE
               or when <= now - 10 * WRITING_GRACE]
        for relpath in due:
            del self._pending[relpath]
            self._written.pop(relpath, None)
            changes.append(Settled(relpath))
        return changes

    def settle_later(self, relpath: str) -> None:
        """A file found by a scan that may still be being written: report it as Settled
        once it has had no writes for ``SCANNED_QUIET`` (its folder is watched by now, so
        a write would be seen; its close ends the wait too). Not the full WRITING_GRACE:
        a file copied into a folder just made must still show within two seconds."""
        now = time.monotonic()
        self._written[relpath] = now - WRITING_GRACE + SCANNED_QUIET
        self._pending.setdefault(relpath, now + SETTLE_SECONDS)

    def _classify(self, event: Event, now: float) -> Change | None:
        mask = event.mask
        if mask & IN_Q_OVERFLOW:
            return Rescan("", recursive=True)
        if mask == 0:  # the poller: this directory changed
            return Rescan(event.directory, recursive=False)
        if event.name.startswith("."):
            return None
        relpath = event.relpath
        if mask & IN_ISDIR:
            return self._classify_directory(relpath, mask)
        if mask & (IN_CLOSE_WRITE | IN_MOVED_TO | IN_DELETE | IN_MOVED_FROM):
            self._pending[relpath] = now
            self._written.pop(relpath, None)
        elif mask & IN_MODIFY:
            self._written[relpath] = now
            self._pending.setdefault(relpath, now + SETTLE_SECONDS)
        elif mask & (IN_CREATE | IN_ATTRIB):
            self._pending.setdefault(relpath, now + SETTLE_SECONDS)
        return Arrived(relpath) if mask & (IN_CREATE | IN_MOVED_TO) else None

    def _classify_directory(self, relpath: str, mask: int) -> Change | None:
        if mask & (IN_CREATE | IN_MOVED_TO):
            self._watcher = self._watch(self._watcher, relpath)
            return Rescan(relpath, recursive=True)
        if mask & (IN_DELETE | IN_MOVED_FROM):
            return Gone(relpath)
        return None

    def _watch(self, watcher: Watcher, under: str) -> Watcher:
        """Watch every folder below ``under`` ('' for all); past the watch limit, poll instead."""
        try:
            for directory in self._directories():
                if not under or directory == under or directory.startswith(under + "/"):
                    watcher.add_directory(directory)
        except OSError as exc:  # ENOSPC: the inotify watch limit
            log.warning("cannot watch %s (%s); polling it every second instead", self.root, exc)
            watcher.close()
            watcher = PollingWatcher(self.root)
            for directory in self._directories():
                watcher.add_directory(directory)
        return watcher

    def close(self) -> None:
        self._watcher.close()
