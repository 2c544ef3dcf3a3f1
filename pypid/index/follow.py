"""Keeping one process's index current: a thread that applies the root's changes and new marks.

Each worker starts its own (``Index.start_watching``) after fork: it watches
first, then re-checks every file, so nothing that changed in between is missed.
A file the cache already describes exactly (an upload, whose row is written
before its link) is shown the moment it appears, with no hashing and no settle
wait; a file copied in by hand is read once it settled (see ``watch``). A lost
event queue means a full rescan. Marks are re-read whenever another process
commits to the cache, checked once a second.
"""

from __future__ import annotations

import logging
import threading
import time
from typing import TYPE_CHECKING

from pypid.distfile import has_dist_suffix, is_temp_name
from pypid.index.loading import Scan, fingerprint
from pypid.storage import FileStat
from pypid.watch import WRITING_GRACE, Arrived, Change, ChangeFeed, Gone, Rescan, Settled

if TYPE_CHECKING:
    from pypid.index.model import ReadModel as Index

log = logging.getLogger("pypid.index")

MARKS_CHECK_SECONDS = 1.0


class Follower:
    """The watcher thread of one index in one process."""

    def __init__(self, index: Index) -> None:
        self.index = index
        self.active = False  # in this process (a fork clears it)
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._feed: ChangeFeed | None = None

    def start(self, catch_up_first: bool = False, loaded: Scan | None = None) -> None:
        """Watch, then catch up with what changed since the snapshot: in the thread (a
        worker forked right after the load answers at once), or first, here (a worker
        started later, after a crash, must not answer from an old snapshot: it would
        say 404 for a new project, or send its name upstream).

        ``loaded``: the load's scan, if this process's index is still that snapshot;
        when the root still matches it, no entry is touched (a worker that reads the
        entries it inherited makes them its own copy: refcounts are writes)."""
        if self.active:
            return
        with self.index.lock:
            if self.active:
                return
            self.active = True
            self._stop = threading.Event()
            root = self.index.root
            feed = ChangeFeed(root.path, root.directories)  # watching before the scan
            if catch_up_first:
                self._catch_up(loaded)
            self._thread = threading.Thread(target=self._run,
                                            args=(feed, not catch_up_first, loaded),
                                            name="pypid-watch", daemon=True)
            self._thread.start()

    def stop(self) -> None:
        self._stop.set()

    def forget_thread(self) -> None:
        """After fork: the parent's thread does not exist in this process."""
        self.active = False

    def _run(self, feed: ChangeFeed, catch_up: bool, loaded: Scan | None) -> None:
        self._feed = feed
        if catch_up:
            self._catch_up(loaded)
        next_marks_check = time.monotonic()
        while not self._stop.is_set():
            try:
                for change in feed.read(0.1):
                    self.apply(change)
                self.index.reseal_if_due()
                now = time.monotonic()
                if now >= next_marks_check:
                    next_marks_check = now + MARKS_CHECK_SECONDS
                    self.follow_marks()
            except Exception as exc:  # the watcher must outlive any one bad event
                self._recover(exc)
        feed.close()

    def follow_marks(self) -> None:
        """New lines in the event log (from any process): new marks for the pages."""
        ledger = self.index.ledger
        ledger.catch_up()  # another caller (governance) may have read new marks:
        self.index.apply_marks(ledger.marks)  # applied whoever read them

    def _catch_up(self, loaded: Scan | None) -> None:
        try:
            if loaded is not None and fingerprint(self.index.root.iter_files()) == loaded:
                self.follow_marks()  # the files are as loaded; marks are read apart
                return
            self.resync()
        except Exception as exc:  # noqa: BLE001 - recovered from (and retried) here
            self._recover(exc)

    def apply(self, change: Change) -> None:
        index = self.index
        match change:
            case Settled(relpath):
                index.refresh(relpath)
            case Arrived(relpath):
                self._show_if_described(relpath)
            case Gone(relpath):
                with index.lock:
                    for path in index.relpaths(relpath + "/"):
                        index.hide(path, forget=True)
            case Rescan("", True):
                self.resync()
            case Rescan(directory, recursive):
                self._rescan_directory(directory, recursive)

    def _recover(self, exc: Exception) -> None:
        """After an error in the watcher: wait, then re-check the root (if it is there)."""
        root = self.index.root
        log.warning("index watcher: %s: %s; re-checking %s", type(exc).__name__, exc, root.path)
        log.debug("traceback", exc_info=exc)
        self._stop.wait(1.0)
        problem = root.check_readable()
        if problem is not None:
            self.index.warn_once("", problem + "; serving the files indexed before")
            return
        try:
            self.resync()
        except Exception as again:  # noqa: BLE001 - retried on the next error
            log.warning("index watcher: rescan failed: %s", again)

    def _show_if_described(self, relpath: str) -> None:
        """Show a new file at once if the cache already describes it exactly."""
        index = self.index
        if not has_dist_suffix(relpath) or is_temp_name(relpath.rsplit("/", 1)[-1]):
            return
        row = index.cache.get(relpath)
        if row is None or row.error is not None:
            return
        try:
            stat = index.root.stat(relpath)
        except ValueError:
            return
        if stat is None or row.identity != stat.identity:
            return
        with index.lock:
            current = index.entry_at(relpath)
            if current is None or not current.same_file(stat):
                index.show(stat, row)

    def resync(self) -> None:
        """Compare every file with what the index holds (start of watching, lost events)."""
        index = self.index
        with index.lock:
            seen = set()
            for stat in index.root.iter_files():
                self._update_unless_fresh(stat)
                # Keep the index's own string, not the scan's: the scan's would stay in the
                # worker's memory after the scan (the allocator keeps their pages).
                entry = index.entry_at(stat.relpath)
                seen.add(entry.relpath if entry is not None else stat.relpath)
            for relpath in [p for p in index.relpaths() if p not in seen]:
                index.hide(relpath, forget=True)
            index.keep_unusable_only(seen)
            self.follow_marks()

    def _update_unless_fresh(self, stat: FileStat) -> None:
        """Read a file a scan found, unless it was written to a moment ago: a file still
        being copied in (into a folder just made, say) waits for the feed to settle it."""
        fresh = time.time_ns() - stat.mtime_ns < WRITING_GRACE * 1e9
        if fresh and self._feed is not None and self.index.entry_at(stat.relpath) is None:
            self._feed.settle_later(stat.relpath)
            return
        self.index.update(stat)

    def _rescan_directory(self, directory: str, recursive: bool) -> None:
        index = self.index
        prefix = directory + "/" if directory else ""
        with index.lock:
            seen = set()
            for stat in index.root.iter_files(directory):
                if recursive or "/" not in stat.relpath[len(prefix):]:
                    seen.add(stat.relpath)
                    self._update_unless_fresh(stat)
            for relpath in [p for p in index.relpaths(prefix) if p not in seen
                            and (recursive or "/" not in p[len(prefix):])]:
                index.hide(relpath, forget=True)
