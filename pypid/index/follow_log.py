"""Keeping one process's index current when the files are remote (a bucket): the event
log's upload, import and remove lines say which files changed, so no poll lists the bucket.

Each worker's thread reads the log's new lines every ``POLL_SECONDS`` (and new marks with
them); an uploaded file is looked up (HEAD) and read only if this node's cache does not
describe it; a removed one is hidden at once. A file put into the bucket by hand, with
no line, is found only by the next start's listing: the bucket is written through pypid
(README, "Running several nodes"), so no poll lists it. A node started while its store
was away lists it once it answers.
"""

from __future__ import annotations

import logging
import threading
from typing import TYPE_CHECKING

from pypid.events import Event

if TYPE_CHECKING:
    from pypid.index.model import ReadModel as Index

log = logging.getLogger("pypid.index")

POLL_SECONDS = 0.5
RETRY_SECONDS = 2.0


class LogFollower:
    """The follower thread of one index over a remote root, in one process."""

    def __init__(self, index: Index) -> None:
        self.index = index
        self.active = False
        self._stop = threading.Event()
        self._pending: list[Event] = []  # file lines not applied yet (the store failed)
        self._polling = threading.Lock()  # the thread, and a change that must be current
        self._failing = False
        self._unlisted = False  # the store was never listed: list it before the log's lines
        index.ledger.collect_file_events()

    def loaded(self) -> None:
        """After a full listing: the lines read before it are in it already."""
        self.index.ledger.take_file_events()

    def list_when_back(self) -> None:
        """The load could not list the store: the next poll lists it (until it can)."""
        self._unlisted = True

    def start(self, catch_up_first: bool = False, loaded: object = None) -> None:
        """``loaded``: the local watcher's scan fingerprint; a log needs none."""
        with self.index.lock:
            if self.active:
                return
            self.active = True
            self._stop = threading.Event()
        if catch_up_first:  # outside the index's lock: polling takes it (after _polling)
            self._poll_safely()
        threading.Thread(target=self._run, name="pypid-follow-log", daemon=True).start()

    def stop(self) -> None:
        self._stop.set()

    def forget_thread(self) -> None:
        self.active = False
        self._polling = threading.Lock()

    def _run(self) -> None:
        while not self._stop.wait(RETRY_SECONDS if self._failing else POLL_SECONDS):
            self._poll_safely()
            try:
                self.index.reseal_if_due()
            except Exception as exc:  # noqa: BLE001 - the follower must outlive any failure
                log.warning("sealing the index's changes: %s: %s", type(exc).__name__, exc)
            try:
                self.index.root.clear_abandoned()  # does its work once an hour at most
            except Exception as exc:  # noqa: BLE001 - the follower must outlive any failure
                log.warning("clearing abandoned uploads: %s: %s", type(exc).__name__, exc)

    def _poll_safely(self) -> None:
        try:
            self.poll(listing=True)
        except Exception as exc:  # noqa: BLE001 - the follower must outlive any failure
            if not self._failing:
                log.warning("following the event log: %s: %s; retrying", type(exc).__name__,
                            exc)
            self._failing = True
        else:
            if self._failing:
                log.info("following the event log again")
            self._failing = False

    def poll(self, listing: bool = False) -> None:
        """Apply the log's new lines: marks, then the files they name. Before the store was
        ever listed, only the thread (``listing``) lists it, so that a request is never the
        one that waits for the listing or fails on it."""
        index, ledger = self.index, self.index.ledger
        with self._polling:
            ledger.catch_up()  # another caller (governance) may have read new marks:
            index.apply_marks(ledger.marks)  # applied whoever read them
            self._pending.extend(ledger.take_file_events())
            if self._unlisted:
                if not listing:
                    return  # the listing will hold the files these lines name
                self._list_all()
                self._pending.clear()  # the listing, made after they were read, holds them
                self._unlisted = False
            while self._pending:
                self._apply(self._pending[0])
                self._pending.pop(0)

    def _list_all(self) -> None:
        """Show what the store holds now (StorageError while it is away: polled again)."""
        index = self.index
        stats = list(index.root.iter_files())
        with index.lock:
            index.show_only(stats)
            index.behind = None
        log.info("the store answers: %d files of %d projects listed", index.file_count(),
                 index.project_count())

    def _apply(self, event: Event) -> None:
        name = event.get("file")
        if not isinstance(name, str) or not name:
            return
        index = self.index
        if event.action == "remove":
            with index.lock:
                entry = index.file(name)
                index.hide(entry.relpath if entry is not None else name, forget=True)
            return
        index.refresh(name)  # uploads go to the top of the bucket: relpath == name
