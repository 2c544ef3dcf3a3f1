"""The audit/event log: one hash-chained JSON line per change, appended from any process."""

from __future__ import annotations

import json
import multiprocessing
import os
import subprocess
from pathlib import Path

import pytest

from pypid.events import HEAD_NAME, LOG_NAME, ZERO_HASH, EventLog, NoSpaceError, line_hash


def filled(tmp_path: Path, count: int = 5) -> EventLog:
    events = EventLog(tmp_path)
    for i in range(count):
        events.append("yank", user="alice", client="10.0.0.1", project="demo",
                      file=f"demo-{i}.tar.gz", reason=f"broken {i}")
    return events


def lines(events: EventLog) -> list[bytes]:
    return events.path.read_bytes().splitlines()


def test_lines_keep_the_contracts_keys_in_order_and_chain(tmp_path: Path) -> None:
    events = filled(tmp_path, 3)
    raw = lines(events)
    first = json.loads(raw[0])
    assert list(first) == ["seq", "time", "user", "client", "action", "project", "file",
                           "reason", "prev"]
    assert first["seq"] == 1 and first["prev"] == ZERO_HASH
    assert first["time"].endswith("Z")
    assert json.loads(raw[1])["prev"] == line_hash(raw[0])
    assert json.loads(raw[2])["prev"] == line_hash(raw[1])
    assert events.verify() == (3, None)


def test_read_follows_by_offset(tmp_path: Path) -> None:
    events = filled(tmp_path, 2)
    got, offset = events.read()
    assert [e.seq for e in got] == [1, 2]
    assert got[0].get("file") == "demo-0.tar.gz" and got[0].user == "alice"
    events.append("unyank", user="cli:root", file="demo-0.tar.gz", project="demo")
    more, offset = events.read(offset)
    assert [(e.seq, e.action, e.client) for e in more] == [(3, "unyank", None)]
    assert events.read(offset) == ([], offset)


@pytest.mark.parametrize(("change", "expected"), [
    (lambda rows: rows.__setitem__(1, rows[1].replace(b"broken 1", b"fine 1")), "line 3:"),
    (lambda rows: rows.insert(2, rows[2]), "line 4:"),
    (lambda rows: rows.pop(1), "line 2:"),
    (lambda rows: rows.__setitem__(4, rows[4].replace(b"broken 4", b"fine 4")), "line 5:"),
    (lambda rows: rows.pop(4), "line 5:"),
    (lambda rows: rows.__setitem__(0, b"garbage"), "line 1:"),
], ids=["edited", "inserted", "deleted", "last-edited", "last-deleted", "garbage"])
def test_verify_names_the_first_broken_line(tmp_path: Path, change: object,
                                            expected: str) -> None:
    events = filled(tmp_path, 5)
    rows = lines(events)
    change(rows)  # type: ignore[operator]
    events.path.write_bytes(b"".join(row + b"\n" for row in rows))
    count, problem = events.verify()
    assert problem is not None and problem.startswith(expected), problem


def test_a_torn_last_line_is_cut_and_the_chain_goes_on(tmp_path: Path,
                                                       caplog: pytest.LogCaptureFixture) -> None:
    events = filled(tmp_path, 3)
    with open(events.path, "ab") as handle:
        handle.write(b'{"seq":4,"time":"2026-')  # a writer killed mid-line
    assert events.repair()
    assert "torn last line" in caplog.text
    assert events.verify() == (3, None)
    events.append("yank", user="bob", file="x-1.0.tar.gz", project="x")
    assert events.verify() == (4, None)
    assert not events.repair()


def _append_many(directory: str, who: str, count: int) -> None:
    log = EventLog(Path(directory))
    for i in range(count):
        log.append("status", user=who, project="p", status="active", reason=str(i))


def test_processes_appending_at_once_lose_nothing(tmp_path: Path) -> None:
    context = multiprocessing.get_context("fork")
    workers = [context.Process(target=_append_many, args=(str(tmp_path), f"u{i}", 50))
               for i in range(4)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join(60)
        assert worker.exitcode == 0
    events = EventLog(tmp_path)
    assert events.verify() == (200, None)
    got, _ = events.read()
    assert sorted(e.seq for e in got) == list(range(1, 201))
    assert {e.user for e in got} == {"u0", "u1", "u2", "u3"}


def test_a_full_disk_refuses_the_change_and_keeps_the_log(tmp_path: Path) -> None:
    mount = tmp_path / "small"
    mount.mkdir()
    if subprocess.run(["mount", "-t", "tmpfs", "-o", "size=64k", "tmpfs", str(mount)],
                      capture_output=True, check=False).returncode != 0:
        pytest.skip("needs root to mount a tmpfs")
    try:
        events = EventLog(mount)
        with pytest.raises(NoSpaceError):
            for i in range(10_000):
                events.append("yank", user="alice", project="p", file=f"p-{i}.tar.gz",
                              reason="x" * 200)
        count, problem = events.verify()
        assert problem is None and count > 10
        (mount / HEAD_NAME).unlink()
        os.truncate(events.path, events.size() - len(lines(events)[-1]) - 1)  # frees room
        events.append("unyank", user="alice", project="p", file="p-0.tar.gz")
        assert events.verify()[1] is None
    finally:
        subprocess.run(["umount", str(mount)], check=False)


def test_nothing_there_verifies_as_empty(tmp_path: Path) -> None:
    assert EventLog(tmp_path / "none").verify() == (0, None)
    assert EventLog(tmp_path / "none").read() == ([], 0)
    assert not (tmp_path / "none" / LOG_NAME).exists()
