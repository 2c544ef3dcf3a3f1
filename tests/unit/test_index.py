"""The index: hashes computed once and cached, changes followed live, bad files logged once."""

from __future__ import annotations

import logging
import os
import shutil
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from pypid.events import EventLog
from pypid.index import Index, loading
from pypid.index import examine as examine_module
from pypid.index.follow import Follower
from pypid.storage import CACHE_DIRNAME, PackageRoot
from pypid.storage.base import read_start_of
from pypid.watch import WRITING_GRACE, Gone, Rescan
from tests.builders import make_sdist, make_wheel


@pytest.fixture
def open_index(root: Path) -> Iterator[Callable[[], Index]]:
    made: list[Index] = []

    def factory() -> Index:
        index = Index(PackageRoot(root))
        index.load()
        made.append(index)
        return index

    yield factory
    for index in made:
        index.close()


def wait_for(condition: Callable[[], object], timeout: float = 2.0) -> bool:
    """Poll ``condition`` until true or ``timeout`` seconds pass (the 2 s contract)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(0.02)
    return bool(condition())


def count_hashes(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """The names of the files read (hashed and their metadata read) from now on."""
    calls: list[str] = []
    original = examine_module.read_core_metadata

    def counting(source, dist, *args, **kwargs):  # type: ignore[no-untyped-def]
        calls.append(dist.filename)
        return original(source, dist, *args, **kwargs)

    monkeypatch.setattr(examine_module, "read_core_metadata", counting)
    return calls


def test_restart_does_not_rehash(root: Path, open_index: Callable[[], Index],
                                 monkeypatch: pytest.MonkeyPatch) -> None:
    make_wheel(root, "a", "1.0")
    make_sdist(root, "b", "2.0")
    calls = count_hashes(monkeypatch)
    first = open_index()
    assert len(calls) == 2
    first.close()
    second = open_index()
    assert len(calls) == 2  # all from the cache
    assert second.projects() == ["a", "b"]
    assert [e.sha256 for e in second.files("a") or ()] == [e.sha256 for e in first.files("a") or ()]


def test_cache_rebuilds_from_files(root: Path, open_index: Callable[[], Index],
                                   caplog: pytest.LogCaptureFixture) -> None:
    make_wheel(root, "a", "1.0")
    open_index().close()
    db = root / CACHE_DIRNAME / "index.sqlite3"
    for suffix in ("-wal", "-shm"):
        Path(str(db) + suffix).unlink(missing_ok=True)
    db.write_bytes(b"this is not a database at all" * 100)
    with caplog.at_level(logging.WARNING):
        rebuilt = open_index()
    assert rebuilt.projects() == ["a"]
    assert "moved to" in caplog.text
    shutil.rmtree(root / CACHE_DIRNAME)
    assert open_index().projects() == ["a"]


def test_unwritable_cache_still_serves(root: Path, monkeypatch: pytest.MonkeyPatch,
                                       caplog: pytest.LogCaptureFixture) -> None:
    make_wheel(root, "a", "1.0")
    (root / CACHE_DIRNAME).write_text("a file where the cache folder should be")
    with caplog.at_level(logging.WARNING):
        index = Index(PackageRoot(root))
        index.load()
    assert index.projects() == ["a"]
    assert "in memory only" in caplog.text
    index.close()


def test_bad_files_logged_once_and_left_out(root: Path, open_index: Callable[[], Index],
                                            caplog: pytest.LogCaptureFixture) -> None:
    make_wheel(root, "good", "1.0")
    (root / "garbage.whl").write_bytes(b"x")
    (root / "broken-1.0-py3-none-any.whl").write_bytes(b"not a zip")
    (root / "notes.txt").write_text("ignored silently")
    (root / ".hidden-1.0.tar.gz").write_bytes(b"")
    (root / "partial-1.0.tar.gz.part").write_bytes(b"")
    with caplog.at_level(logging.WARNING):
        index = open_index()
        index.start_watching()
        for _ in range(3):
            index.refresh("garbage.whl")
            index.refresh("broken-1.0-py3-none-any.whl")
    assert index.projects() == ["good"]
    messages = [r.getMessage() for r in caplog.records]
    assert sum("garbage.whl" in m for m in messages) == 1
    assert sum("broken-1.0-py3-none-any.whl" in m for m in messages) == 1
    assert not any("notes.txt" in m or "hidden" in m or ".part" in m for m in messages)


def test_files_copied_in_and_removed_appear_within_two_seconds(
        root: Path, tmp_path: Path, open_index: Callable[[], Index]) -> None:
    index = open_index()
    index.start_watching()
    staging = tmp_path / "staging"
    staging.mkdir()
    wheel = make_wheel(staging, "live", "1.0")
    shutil.copy(wheel, root / wheel.name)
    assert wait_for(lambda: index.files("live"))
    (root / "nested" / "deeper").mkdir(parents=True)
    sdist = make_sdist(staging, "live", "2.0")
    shutil.copy(sdist, root / "nested" / "deeper" / sdist.name)
    assert wait_for(lambda: len(index.files("live") or ()) == 2)
    os.rename(staging / wheel.name, root / "nested" / "moved-in.tar.gz.part")  # temp: ignored
    (root / wheel.name).unlink()
    assert wait_for(lambda: [e.filename for e in index.files("live") or ()] == [sdist.name])
    shutil.rmtree(root / "nested")
    assert wait_for(lambda: index.files("live") is None)
    assert index.project_count() == 0


def test_replaced_file_is_rehashed(root: Path, tmp_path: Path,
                                   open_index: Callable[[], Index]) -> None:
    make_sdist(root, "swap", "1.0")
    index = open_index()
    index.start_watching()
    before = (index.files("swap") or ())[0].sha256
    other = make_sdist(tmp_path, "swap", "1.0", requires_python=">=3.10")
    shutil.copy(other, root / other.name)
    assert wait_for(lambda: (index.files("swap") or ())[0].sha256 != before)
    assert (index.files("swap") or ())[0].requires_python == ">=3.10"


def test_changes_while_not_watching_are_caught_up(root: Path,
                                                  open_index: Callable[[], Index]) -> None:
    index = open_index()
    make_wheel(root, "late", "1.0")  # after load, before the watcher (as in a fresh worker)
    index.start_watching()
    # A file written less than WRITING_GRACE ago may still be being copied in: it is
    # shown once that has passed, so 2 s from now is a race (it failed 4 runs in 10).
    assert wait_for(lambda: index.files("late"), timeout=WRITING_GRACE + 1)


def test_duplicate_names_in_subfolders(root: Path, open_index: Callable[[], Index],
                                       caplog: pytest.LogCaptureFixture) -> None:
    (root / "a").mkdir()
    (root / "b").mkdir()
    make_sdist(root / "b", "dup", "1.0")
    make_sdist(root / "a", "dup", "1.0", requires_python=">=3")
    with caplog.at_level(logging.WARNING):
        index = open_index()
    entry = index.file("dup-1.0.tar.gz")
    assert entry is not None
    assert entry.relpath == "a/dup-1.0.tar.gz"
    assert len(index.files("dup") or ()) == 1
    assert "more than once" in caplog.text
    index.start_watching()
    (root / "a" / "dup-1.0.tar.gz").unlink()
    assert wait_for(lambda: (e := index.file("dup-1.0.tar.gz")) is not None
                    and e.relpath == "b/dup-1.0.tar.gz")


def test_yank_marks_reach_other_processes_through_the_event_log(
        root: Path, open_index: Callable[[], Index]) -> None:
    make_wheel(root, "y", "1.0")
    index = open_index()
    index.start_watching()
    EventLog(root / CACHE_DIRNAME).append("yank", user="cli:root", project="y",
                                          file="y-1.0-py3-none-any.whl", reason="bad build")
    assert wait_for(lambda: (e := index.file("y-1.0-py3-none-any.whl")) is not None
                    and e.yanked == "bad build", timeout=3.0)


def test_upload_time_survives_touch(root: Path, open_index: Callable[[], Index]) -> None:
    path = make_sdist(root, "t", "1.0")
    os.utime(path, (1_000_000_000, 1_000_000_000))
    index = open_index()
    first = (index.files("t") or ())[0].upload_time
    assert first == 1_000_000_000
    os.utime(path, (2_000_000_000, 2_000_000_000))
    index.refresh(path.name)
    assert (index.files("t") or ())[0].upload_time == first


def test_lost_events_mean_a_full_rescan(root: Path, open_index: Callable[[], Index]) -> None:
    kept = make_wheel(root, "kept", "1.0")
    gone = make_sdist(root, "gone", "1.0")
    index = open_index()
    gone.unlink()
    (root / "sub").mkdir()
    make_wheel(root / "sub", "new", "1.0")
    Follower(index).apply(Rescan("", recursive=True))  # as after IN_Q_OVERFLOW
    assert index.projects() == ["kept", "new"]
    assert index.cache.get(gone.name) is None
    assert (entry := index.file(kept.name)) is not None and entry.relpath == kept.name


def test_gone_folder_takes_its_files(root: Path, open_index: Callable[[], Index]) -> None:
    (root / "a" / "b").mkdir(parents=True)
    make_wheel(root / "a" / "b", "deep", "1.0")
    make_wheel(root / "a", "shallow", "1.0")
    make_wheel(root, "top", "1.0")
    index = open_index()
    Follower(index).apply(Gone("a"))
    assert index.projects() == ["top"]


def test_a_cold_load_in_a_pool_of_processes_finds_what_one_process_finds(
        root: Path, caplog: pytest.LogCaptureFixture) -> None:
    """Many files to read: forked processes read them in chunks; the rows, the files shown,
    the warnings and the progress are those of a load in one process."""
    for i in range(loading.POOL_FROM):
        (make_wheel if i % 2 else make_sdist)(root, f"p{i % 150}", f"1.{i}")
    (root / "broken-1.0-py3-none-any.whl").write_bytes(b"not a zip")
    (root / "garbage.whl").write_bytes(b"x")
    seen: dict[int, tuple[list[object], list[str], list[tuple[int, int]]]] = {}
    for processes in (1, 2):
        shutil.rmtree(root / CACHE_DIRNAME, ignore_errors=True)
        index = Index(PackageRoot(root))
        steps: list[tuple[int, int]] = []
        caplog.clear()
        with caplog.at_level(logging.WARNING):
            loading.load(index, lambda done, total, steps=steps: steps.append((done, total)),
                         processes)
        rows = sorted(index.cache.iter_files(), key=lambda row: row.relpath)
        seen[processes] = (rows, sorted(r.getMessage() for r in caplog.records
                                        if r.name == "pypid.index"), steps)
        assert index.file_count() == loading.POOL_FROM
        index.close()
    assert seen[1] == seen[2]
    assert len(seen[2][1]) == 2  # broken and garbage, once each
    total = loading.POOL_FROM + 2
    assert seen[2][2] == [(done, total) for done in range(1, total + 1)]


def test_a_root_unchanged_since_the_load_is_not_compared_file_by_file(
        root: Path, open_index: Callable[[], Index], monkeypatch: pytest.MonkeyPatch) -> None:
    """A worker forked after the load checks the root against the load's scan: the same,
    and it leaves the entries it shares with the master untouched (reading them would copy
    them); changed, and it compares every file."""
    sdist = make_sdist(root, "b", "1.0")
    names = sorted([make_wheel(root, "a", "1.0").name, sdist.name])
    for changed in (False, True):
        index = open_index()
        compared: list[str] = []
        monkeypatch.setattr(index, "update", lambda stat, seen=compared: seen.append(stat.relpath))
        if changed:
            os.utime(sdist, ns=(sdist.stat().st_atime_ns, sdist.stat().st_mtime_ns + 10**9))
        index.start_watching(catch_up_first=True)
        assert sorted(compared) == (names if changed else [])
        assert index.projects() == ["a", "b"]


def test_stored_bytes_follow_every_change(root: Path, tmp_path: Path,
                                          open_index: Callable[[], Index]) -> None:
    """Kept as a running total (no read of every entry): it must match the files shown
    through additions, a replacement, duplicates and removals."""
    def total(index: Index) -> int:
        return sum(e.size for p in index.projects() for e in index.files(p) or ())

    (root / "a").mkdir()
    (root / "b").mkdir()
    make_sdist(root / "b", "dup", "1.0")
    make_sdist(root / "a", "dup", "1.0", requires_python=">=3")
    make_wheel(root, "one", "1.0")
    index = open_index()
    assert index.stored_bytes() == total(index) > 0
    index.start_watching()
    make_wheel(root, "two", "1.0", payload=b"x" * 5000)
    assert wait_for(lambda: index.files("two"), timeout=WRITING_GRACE + 1)
    assert index.stored_bytes() == total(index)
    shutil.copy(make_sdist(tmp_path, "dup", "1.0", requires_python=">=3.10"),
                root / "a" / "dup-1.0.tar.gz")
    assert wait_for(lambda: (e := index.file("dup-1.0.tar.gz")) is not None
                    and e.requires_python == ">=3.10")
    assert index.stored_bytes() == total(index)
    (root / "a" / "dup-1.0.tar.gz").unlink()
    (root / "one-1.0-py3-none-any.whl").unlink()
    assert wait_for(lambda: index.file("one-1.0-py3-none-any.whl") is None
                    and (e := index.file("dup-1.0.tar.gz")) is not None
                    and e.relpath == "b/dup-1.0.tar.gz")
    assert index.stored_bytes() == total(index)


@pytest.mark.parametrize("seal", [False, True])
def test_a_project_another_worker_just_stored_is_found_before_the_watcher_sees_it(
        root: Path, tmp_path: Path, seal: bool) -> None:
    """An upload answered by one worker, then a page asked of another at once: that one's
    watcher may be behind, so the event log's record of the upload is looked at first."""
    make_wheel(root, "kept", "1.0")
    other = Index(PackageRoot(root))  # the worker that will answer, not watching
    try:
        other.load()
        if seal:
            assert other.seal_files()
        assert other.show_recorded("fresh") is False  # nothing recorded: a plain 404
        wheel = make_wheel(tmp_path, "fresh", "1.0")
        storing = Index(PackageRoot(root))  # the worker that stored it (row, file, line)
        try:
            storing.load()
            os.replace(wheel, root / wheel.name)
            storing.refresh(wheel.name)
        finally:
            storing.close()
        EventLog(root / CACHE_DIRNAME).append("upload", user="alice", project="fresh",
                                              file=wheel.name)
        assert other.project_serial("fresh") is None
        assert other.show_recorded("fresh", may_block=False) is None  # a thread's work
        assert other.show_recorded("fresh") is True
        assert [e.filename for e in other.files("fresh") or ()] == [wheel.name]
        assert other.show_recorded("fresh", may_block=False) is False  # shown: nothing to do
        assert other.ledger.recorded("fresh") == {wheel.name}
        if seal:  # the next seal holds it: the ledger lets its name go
            assert other.seal_files()
            assert other.ledger.recorded("fresh") == frozenset()
            assert other.ledger.uploader(wheel.name) == "alice"
            assert [e.filename for e in other.files("fresh") or ()] == [wheel.name]
    finally:
        other.close()


def test_a_small_file_is_read_whole_through_short_reads(tmp_path: Path) -> None:
    """``read_start_of``: one read on a local disk; where reads come short (a network
    file system; here a FIFO written in pieces) it reads on to the limit or the end."""
    whole = tmp_path / "whole"
    whole.write_bytes(b"abcdef")
    assert read_start_of(str(whole), 7) == b"abcdef"  # one more than the size: the end
    assert read_start_of(str(whole), 4) == b"abcd"  # a file that grew: more than its size
    (tmp_path / "empty").write_bytes(b"")
    assert read_start_of(str(tmp_path / "empty"), 1) == b""
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)

    def write_in_pieces() -> None:
        with open(fifo, "wb", buffering=0) as out:
            for piece in (b"ab", b"cd", b"ef"):
                out.write(piece)
                time.sleep(0.05)

    writer = threading.Thread(target=write_in_pieces)
    writer.start()
    try:
        assert read_start_of(str(fifo), 7) == b"abcdef"
    finally:
        writer.join(timeout=10)
