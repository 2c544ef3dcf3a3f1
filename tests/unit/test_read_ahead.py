"""A first start on a cold disk: a read finds out for free whether its file is in memory,
and when it is not, the next files are asked of the disk together (``fetch_ahead``)."""

from __future__ import annotations

import ctypes
import mmap
import os
import shutil
import threading
import time
from collections.abc import Iterable
from pathlib import Path

import pytest

from pypid.index import Index, loading
from pypid.index.examine import AHEAD_FILES, ReadAhead, Task
from pypid.storage import CACHE_DIRNAME, base
from pypid.storage.base import fetch_ahead_of, read_start_of
from pypid.storage.local import PackageRoot
from tests.builders import make_sdist, make_wheel

LIBC = ctypes.CDLL(None, use_errno=True)
needs_nowait = pytest.mark.skipif(not base._nowait[0], reason="no RWF_NOWAIT on this system")


def evicted(path: Path) -> Path:
    """``path`` with its pages dropped from memory (written out first: only clean pages
    can go), checked with a read that takes only what memory holds."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
        for _ in range(50):  # a page still on its way to the disk stays: again, a beat later
            os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
            if not in_memory(path):
                return path
            time.sleep(0.02)
    finally:
        os.close(fd)
    raise AssertionError(f"{path}'s file system keeps it in memory: cannot test")


def in_memory(path: Path) -> bool:
    """Every page of the file in memory, asked with ``mincore`` (a read that takes only
    what memory holds would start reading the rest: it cannot tell a test)."""
    size = path.stat().st_size
    if size == 0:
        return True
    with open(path, "rb") as handle, mmap.mmap(handle.fileno(), size,
                                                 access=mmap.ACCESS_COPY) as mapped:
        pages = -(-size // mmap.PAGESIZE)
        vector = (ctypes.c_ubyte * pages)()
        address = ctypes.addressof(ctypes.c_char.from_buffer(mapped))  # export ends here
        assert LIBC.mincore(ctypes.c_void_p(address), ctypes.c_size_t(size), vector) == 0
        return all(flag & 1 for flag in vector)


def written(path: Path, data: bytes) -> Path:
    path.write_bytes(data)
    return path


@needs_nowait
def test_a_file_in_memory_is_read_without_a_call(tmp_path: Path) -> None:
    calls: list[int] = []
    path = written(tmp_path / "warm", b"abcdef" * 1000)
    assert read_start_of(str(path), 6001, lambda: calls.append(1)) == b"abcdef" * 1000
    assert read_start_of(str(path), 7, lambda: calls.append(1)) == b"abcdefa"  # grown
    assert calls == []


@needs_nowait
def test_a_file_on_the_disk_calls_once_and_reads_the_same(
        tmp_path: Path) -> None:
    data = os.urandom(200_000)
    path = written(tmp_path / "cold", data)
    calls: list[int] = []
    evicted(path)
    assert read_start_of(str(path), len(data) + 1, lambda: calls.append(1)) == data
    assert calls == [1]
    # Its second half on the disk only: called, and the rest is read on, the same bytes.
    fd = os.open(path, os.O_RDONLY)
    try:
        os.posix_fadvise(fd, 100_000, 0, os.POSIX_FADV_DONTNEED)
    finally:
        os.close(fd)
    assert not in_memory(path)
    assert read_start_of(str(path), len(data) + 1, lambda: calls.append(2)) == data
    assert calls == [1, 2]
    # Empty, and shorter than asked: the same answers as without a call.
    empty = written(tmp_path / "empty", b"")  # nothing to be in memory: read at once
    assert read_start_of(str(empty), 1, lambda: None) == b""
    short = evicted(written(tmp_path / "short", b"abc"))
    assert read_start_of(str(short), 10, lambda: None) == b"abc"


def test_a_big_file_is_read_as_it_comes(tmp_path: Path) -> None:
    """Above PROBE_BELOW the probe is not worth its buffer: no call, a plain read."""
    data = b"x" * (base.PROBE_BELOW + 10)
    path = written(tmp_path / "big", data)
    calls: list[int] = []
    assert read_start_of(str(path), len(data) + 1, lambda: calls.append(1)) == data
    assert calls == []


def test_a_file_system_that_cannot_say_means_plain_reads(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """EOPNOTSUPP from the probe: reads go on without it, and without calls (asking ahead
    at every file would cost a warm start for nothing)."""
    def refuse(*args: object) -> int:
        raise OSError(95, "Operation not supported")

    monkeypatch.setattr(base, "_nowait", [8])
    monkeypatch.setattr(os, "preadv", refuse)
    path = written(tmp_path / "f", b"abcdef")
    calls: list[int] = []
    assert read_start_of(str(path), 7, lambda: calls.append(1)) == b"abcdef"
    assert base._nowait == [0]
    assert read_start_of(str(path), 7, lambda: calls.append(1)) == b"abcdef"
    assert calls == []


def test_a_fifo_read_in_pieces_reads_on(tmp_path: Path) -> None:
    """A FIFO read in pieces is read on to the end; if it refuses the probe, only it does:
    regular files are still probed after it."""
    before = list(base._nowait)
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)

    def write_in_pieces() -> None:
        with open(fifo, "wb", buffering=0) as out:
            for piece in (b"ab", b"cd", b"ef"):
                time.sleep(0.05)
                out.write(piece)

    writer = threading.Thread(target=write_in_pieces)
    writer.start()
    try:
        assert read_start_of(str(fifo), 7, lambda: None) == b"abcdef"
    finally:
        writer.join(timeout=10)
    assert base._nowait == before


@needs_nowait
def test_files_fetched_ahead_come_into_memory_and_odd_ones_are_skipped(
        tmp_path: Path) -> None:
    files = [evicted(written(tmp_path / f"f{i}", os.urandom(50_000))) for i in range(8)]
    os.mkfifo(tmp_path / "fifo")  # opened without a writer: must not wait for one
    (tmp_path / "dir").mkdir()
    fetch_ahead_of([str(tmp_path / "fifo"), str(tmp_path / "missing"), str(tmp_path / "dir"),
                    *map(str, files)])
    deadline = time.monotonic() + 10
    while not all(map(in_memory, files)) and time.monotonic() < deadline:
        time.sleep(0.01)
    assert all(map(in_memory, files))


def test_a_root_fetches_only_safe_paths_inside_it(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    asked: list[str] = []
    monkeypatch.setattr("pypid.storage.local.fetch_ahead_of",
                        asked.extend)
    PackageRoot(tmp_path).fetch_ahead(["a.whl", "sub/b.whl", "../c.whl", "/d.whl", ""])
    assert asked == [f"{tmp_path}/a.whl", f"{tmp_path}/sub/b.whl"]


class Recorder:
    def __init__(self) -> None:
        self.asked: list[list[str]] = []

    def fetch_ahead(self, relpaths: Iterable[str]) -> None:
        self.asked.append(list(relpaths))


def tasks(sizes: list[int]) -> list[Task]:
    return [(f"f{i}", size, 0, i, None) for i, size in enumerate(sizes)]


def test_read_ahead_asks_each_file_once_within_its_bounds(
        monkeypatch: pytest.MonkeyPatch) -> None:
    root = Recorder()
    chunk = tasks([1000] * 200)
    ahead = ReadAhead(root, chunk)  # type: ignore[arg-type]
    ahead.fetch()  # the first file is cold: the next AHEAD_FILES asked
    assert root.asked == [[f"f{i}" for i in range(1, 1 + AHEAD_FILES)]]
    ahead.at = 1
    ahead.fetch()  # the next one still on its way: one more, none twice
    assert root.asked[1] == [f"f{1 + AHEAD_FILES}"]
    ahead.at = 100
    ahead.fetch()  # far on (files found in memory between): from the next one
    assert root.asked[2] == [f"f{i}" for i in range(101, 101 + AHEAD_FILES)]
    ahead.at = 199
    ahead.fetch()  # the last file: nothing after it
    assert len(root.asked) == 3
    # The bytes bound: big files stop the window early, but one is always asked.
    monkeypatch.setattr("pypid.index.examine.AHEAD_BYTES", 2500)
    root = Recorder()
    ahead = ReadAhead(root, tasks([1000, 1000, 1000, 1000, 5000, 5000]))  # type: ignore[arg-type]
    ahead.fetch()
    ahead.at = 3
    ahead.fetch()
    assert root.asked == [["f1", "f2", "f3"], ["f4"]]
    # A file too big to be read whole is left to its own read, and counts in the bound.
    monkeypatch.setattr("pypid.index.examine.WHOLE_BELOW", 4000)
    root = Recorder()
    ahead = ReadAhead(root, tasks([1000, 1000, 5000, 1000]))  # type: ignore[arg-type]
    ahead.fetch()
    assert root.asked == [["f1"]]
    ahead.at = 2
    ahead.fetch()
    assert root.asked == [["f1"], ["f3"]]


@needs_nowait
def test_a_cold_load_from_the_disk_finds_what_a_warm_one_finds(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Every file on the disk only: one process and a pool read the same rows as a load
    with every file in memory, and the files are asked ahead (each once at most)."""
    root = tmp_path / "root"
    root.mkdir()
    files = [(make_wheel if i % 2 else make_sdist)(root, f"p{i % 150}", f"1.{i}")
             for i in range(loading.POOL_FROM)]
    asked: list[str] = []
    real = PackageRoot.fetch_ahead

    def record(self: PackageRoot, relpaths: Iterable[str]) -> None:
        relpaths = list(relpaths)
        asked.extend(relpaths)
        real(self, relpaths)

    monkeypatch.setattr(PackageRoot, "fetch_ahead", record)
    seen = {}
    for processes, cold in ((1, False), (1, True), (2, True)):
        shutil.rmtree(root / CACHE_DIRNAME, ignore_errors=True)
        if cold:
            for path in files:
                evicted(path)
        index = Index(PackageRoot(root))
        loading.load(index, processes=processes)
        seen[processes, cold] = sorted(index.cache.iter_files(), key=lambda row: row.relpath)
        assert index.file_count() == len(files)
        index.close()
        if (processes, cold) == (1, True):  # asked here, not in forked processes
            assert asked and len(asked) == len(set(asked)) < len(files)
            assert set(asked) <= {path.name for path in files}
    assert seen[1, False] == seen[1, True] == seen[2, True]
