"""The change feed: raw inotify or poller events in, settled / arrived / gone / rescan out."""

from __future__ import annotations

from pathlib import Path

import pytest

from pypid.watch import (
    IN_ATTRIB,
    IN_CLOSE_WRITE,
    IN_CREATE,
    IN_DELETE,
    IN_ISDIR,
    IN_MODIFY,
    IN_MOVED_FROM,
    IN_MOVED_TO,
    IN_Q_OVERFLOW,
    SETTLE_SECONDS,
    WRITING_GRACE,
    Arrived,
    ChangeFeed,
    Event,
    Gone,
    PollingWatcher,
    Rescan,
    Settled,
    Watcher,
)

T0 = 1000.0  # a monotonic time well after start


class ScriptedWatcher(Watcher):
    """Records the folders it is asked to watch; optionally runs out of watches."""

    def __init__(self, limit: int | None = None) -> None:
        self.watched: list[str] = []
        self.limit = limit
        self.closed = False

    def add_directory(self, relpath: str) -> None:
        if self.limit is not None and len(self.watched) >= self.limit:
            raise OSError(28, "No space left on device")
        self.watched.append(relpath)

    def read(self, timeout: float) -> list[Event]:
        return []

    def close(self) -> None:
        self.closed = True


def feed_over(tmp_path: Path, folders: list[str] | None = None,
              watcher: Watcher | None = None) -> ChangeFeed:
    return ChangeFeed(tmp_path, lambda: list(folders or [""]), watcher or ScriptedWatcher())


@pytest.mark.parametrize(("mask", "directory", "name", "want"), [
    (IN_Q_OVERFLOW, "", "", [Rescan("", recursive=True)]),
    (0, "sub", "", [Rescan("sub", recursive=False)]),  # the poller's "this folder changed"
    (IN_CREATE | IN_ISDIR, "", "new", [Rescan("new", recursive=True)]),
    (IN_MOVED_TO | IN_ISDIR, "a", "b", [Rescan("a/b", recursive=True)]),
    (IN_DELETE | IN_ISDIR, "", "old", [Gone("old")]),
    (IN_MOVED_FROM | IN_ISDIR, "a", "old", [Gone("a/old")]),
    (IN_CLOSE_WRITE, "", ".hidden.whl", []),
    (IN_MOVED_TO, "sub", "x.tar.gz", [Arrived("sub/x.tar.gz"), Settled("sub/x.tar.gz")]),
    (IN_CREATE, "", "x-1.0.tar.gz", [Arrived("x-1.0.tar.gz")]),
    (IN_CLOSE_WRITE, "", "x-1.0.tar.gz", [Settled("x-1.0.tar.gz")]),
    (IN_DELETE, "", "x-1.0.tar.gz", [Settled("x-1.0.tar.gz")]),
    (IN_MOVED_FROM, "", "x-1.0.tar.gz", [Settled("x-1.0.tar.gz")]),
    (IN_MODIFY, "", "x-1.0.tar.gz", []),
    (IN_ATTRIB, "", "x-1.0.tar.gz", []),
], ids=["overflow", "poller", "new-dir", "moved-in-dir", "deleted-dir", "moved-away-dir",
        "dot-file", "moved-in", "created", "closed", "deleted", "moved-away", "written",
        "touched"])
def test_one_event(tmp_path: Path, mask: int, directory: str, name: str,
                   want: list[object]) -> None:
    assert feed_over(tmp_path).sort([Event(directory, name, mask)], T0) == want


def test_created_file_settles_after_quiet(tmp_path: Path) -> None:
    feed = feed_over(tmp_path)
    assert feed.sort([Event("", "a.whl", IN_CREATE)], T0) == [Arrived("a.whl")]
    assert feed.sort([], T0 + SETTLE_SECONDS / 2) == []
    assert feed.sort([], T0 + SETTLE_SECONDS) == [Settled("a.whl")]
    assert feed.sort([], T0 + 10) == []  # reported once


def test_file_being_written_waits_for_the_grace(tmp_path: Path) -> None:
    feed = feed_over(tmp_path)
    feed.sort([Event("", "big.tar.gz", IN_CREATE)], T0)
    feed.sort([Event("", "big.tar.gz", IN_MODIFY)], T0 + 0.1)
    assert feed.sort([], T0 + 1.0) == []
    assert feed.sort([], T0 + 0.1 + WRITING_GRACE) == [Settled("big.tar.gz")]


def test_file_written_forever_is_reported_after_ten_graces(tmp_path: Path) -> None:
    feed = feed_over(tmp_path)
    now = T0
    feed.sort([Event("", "slow.tar.gz", IN_MODIFY)], now)
    while now < T0 + 10 * WRITING_GRACE:
        assert feed.sort([Event("", "slow.tar.gz", IN_MODIFY)], now) == []
        now += 0.5
    now += SETTLE_SECONDS
    assert feed.sort([Event("", "slow.tar.gz", IN_MODIFY)], now) == [Settled("slow.tar.gz")]


def test_close_after_writes_settles_at_once(tmp_path: Path) -> None:
    feed = feed_over(tmp_path)
    feed.sort([Event("", "c.whl", IN_CREATE), Event("", "c.whl", IN_MODIFY)], T0)
    assert feed.sort([Event("", "c.whl", IN_CLOSE_WRITE)], T0 + 0.01) == [Settled("c.whl")]


def test_new_folder_is_watched(tmp_path: Path) -> None:
    watcher = ScriptedWatcher()
    folders = ["", "old"]
    feed = feed_over(tmp_path, folders, watcher)
    assert watcher.watched == ["", "old"]
    folders += ["new", "new/deeper", "newer"]
    feed.sort([Event("", "new", IN_CREATE | IN_ISDIR)], T0)
    assert watcher.watched == ["", "old", "new", "new/deeper"]


def test_watch_limit_falls_back_to_polling(tmp_path: Path) -> None:
    watcher = ScriptedWatcher(limit=1)
    (tmp_path / "a").mkdir()
    feed = feed_over(tmp_path, ["", "a"], watcher)
    assert watcher.closed
    assert isinstance(feed._watcher, PollingWatcher)
    feed.close()
