"""Pages rendered ahead by another process: written whole, adopted once whole, never
wrong, and a renderer that fails or never ends only means pages are rendered as asked."""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from pypid.cachedb import unlinked_file
from pypid.index import Index
from pypid.simple import ahead, pagepack
from pypid.simple.pagecache import PageCache
from pypid.simple.pagepack import PagePack
from pypid.simple.prerender import AHEAD, prerender
from pypid.storage.local import PackageRoot
from tests.builders import make_sdist, make_wheel

NAMES = [f"project-{i}" for i in range(40)]


@pytest.fixture(autouse=True)
def no_wait(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(pagepack, "AHEAD_CHECK_EVERY", 0.0)


@pytest.fixture
def files(tmp_path: Path) -> Iterator[tuple[int, int]]:
    fds = unlinked_file(tmp_path, ".p-"), unlinked_file(tmp_path, ".t-")
    yield fds
    for fd in fds:
        os.close(fd)


def rendered(pack: PagePack, pages_fd: int) -> None:
    """What the renderer does: pages into the expected file, not yet sealed (its own
    descriptor of it, which its ``close`` closes)."""
    pack.write_to(os.dup(pages_fd))
    pack.put_many(("text/html", name, 3, f"<{name}>".encode()) for name in NAMES)
    pack.put_many(("application/json", name, 3, f"{{{name}}}".encode()) for name in NAMES[:5])


def test_a_table_is_adopted_once_whole_and_read_as_sealed_pages(
        tmp_path: Path, files: tuple[int, int]) -> None:
    pages_fd, table_fd = files
    renderer, worker = PagePack(tmp_path), PagePack(tmp_path)
    worker.expect_sealed(pages_fd, table_fd)
    rendered(renderer, pages_fd)
    assert worker.get("text/html", "project-1", 3) is None  # no table yet: render it
    worker.put("text/html", "project-2", 3, b"rendered here")  # as a worker does then
    renderer.export_sealed(table_fd)
    renderer.close()
    assert worker.get("text/html", "project-1", 3) == b"<project-1>"
    assert worker.get("application/json", "project-4", 3) == b"{project-4}"
    assert worker.get("text/html", "project-2", 3) == b"rendered here"  # its own first
    assert worker.get("text/html", "project-3", 4) is None  # changed since: another serial
    assert worker.get("application/json", "project-9", 3) is None
    assert worker.get("text/html", "elsewhere", 3) is None
    # gzipped copies of adopted pages take no dict entry, as for the master's sealed pages
    worker.put("text/html+gzip", "project-5", 3, b"gz")
    assert worker.get("text/html+gzip", "project-5", 3) == b"gz"
    assert "text/html+gzip" not in worker._where  # noqa: SLF001
    worker.close()  # its copy of the descriptor, not the one later workers inherit
    os.fstat(pages_fd)


def test_a_table_without_its_head_is_not_adopted(tmp_path: Path,
                                                 files: tuple[int, int]) -> None:
    pages_fd, table_fd = files
    renderer = PagePack(tmp_path)
    rendered(renderer, pages_fd)
    renderer.export_sealed(table_fd)
    whole = os.pread(table_fd, 1 << 20, 0)
    os.pwrite(table_fd, bytes(16), 0)  # the body written, the head not yet
    worker = PagePack(tmp_path)
    worker.expect_sealed(pages_fd, table_fd)
    assert worker.get("text/html", "project-1", 3) is None
    os.pwrite(table_fd, whole[:16], 0)
    assert worker.get("text/html", "project-1", 3) == b"<project-1>"
    renderer.close()
    worker.close()


def test_no_table_a_bad_one_or_none_in_time_ends_the_wait(
        tmp_path: Path, files: tuple[int, int], monkeypatch: pytest.MonkeyPatch,
        caplog: pytest.LogCaptureFixture) -> None:
    pages_fd, table_fd = files
    worker = PagePack(tmp_path)
    worker.expect_sealed(pages_fd, table_fd)
    worker.export_nothing(table_fd)  # the renderer failed
    assert worker.get("text/html", "project-1", 3) is None
    assert worker._ahead is None and not caplog.records  # noqa: SLF001
    for broken in (b"PK\x03\x04" + bytes(12),  # not a table
                   pagepack._TABLE_HEAD.pack(pagepack._TABLE_MAGIC, 64)):  # cut short
        os.ftruncate(table_fd, 0)
        os.pwrite(table_fd, broken + pagepack._SPACE.pack(9, 1000) + b"text/html", 0)
        caplog.clear()
        worker.expect_sealed(pages_fd, table_fd)
        assert worker.get("text/html", "project-1", 3) is None
        assert worker._ahead is None  # noqa: SLF001
        assert "cannot read the pages rendered ahead" in caplog.text
    os.ftruncate(table_fd, 0)
    monkeypatch.setattr(pagepack, "AHEAD_PATIENCE", -1.0)
    caplog.clear()
    worker.expect_sealed(pages_fd, table_fd)
    assert worker.get("text/html", "project-1", 3) is None
    assert worker._ahead is None and "never came" in caplog.text  # noqa: SLF001
    worker.close()


@pytest.fixture
def index(root: Path) -> Iterator[Index]:
    for number in range(7):
        make_sdist(root, f"p{number}", "1.0")
        make_wheel(root, f"p{number}", "2.0", requires_python=">=3.9")
    loaded = Index(PackageRoot(root))
    loaded.load()
    yield loaded
    loaded.close()


def reference(index: Index, folder: Path) -> dict[tuple[str, str], bytes | None]:
    folder.mkdir()
    pages = PageCache(pack=PagePack(folder))
    prerender(index, pages)
    assert pages.pack is not None
    found = {(media, name): pages.pack.get(media, name, index.project_serial(name) or 0)
             for media in AHEAD for name in index.projects()}
    pages.pack.close()
    return found


def own_children() -> list[str]:
    return Path(f"/proc/{os.getpid()}/task/{os.getpid()}/children").read_text().split()


def settled(pack: PagePack, index: Index) -> None:
    """Ask for a page until the pack adopted the renderer's table or gave up waiting."""
    deadline = time.monotonic() + 30
    while pack._ahead is not None:  # noqa: SLF001
        assert time.monotonic() < deadline, "the renderer never wrote its table"
        pack.get(AHEAD[0], "p0", index.project_serial("p0") or 0)
        time.sleep(0.01)


def test_the_forked_renderer_gives_the_pages_the_master_would(
        index: Index, tmp_path: Path) -> None:
    (tmp_path / "pack").mkdir()
    pages = PageCache(pack=PagePack(tmp_path / "pack"))
    children = own_children()
    pid = ahead.start(index, pages)
    assert pid is not None and own_children() == children  # nobody's child here
    assert pages.pack is not None
    settled(pages.pack, index)
    found = {(media, name): pages.pack.get(media, name, index.project_serial(name) or 0)
             for media in AHEAD for name in index.projects()}
    assert found == reference(index, tmp_path / "alone")
    assert all(found.values())
    pages.pack.close()


def test_a_renderer_that_fails_says_so_and_exits_0(
        index: Index, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    def broken(*_args: object) -> int:
        raise MemoryError

    monkeypatch.setattr(ahead, "render_projects", broken)  # in the forked child too
    pages = PageCache(pack=PagePack(tmp_path))
    assert ahead.start(index, pages) is not None
    assert pages.pack is not None
    settled(pages.pack, index)
    assert pages.pack.get(AHEAD[0], "p1", index.project_serial("p1") or 0) is None
    assert pages.pack._ahead is None  # noqa: SLF001 - told: no more looks
    pages.pack.close()


def test_no_fork_means_the_pages_are_rendered_before_the_workers(
        index: Index, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
        caplog: pytest.LogCaptureFixture) -> None:
    def no_fork() -> int:
        raise OSError(11, "Resource temporarily unavailable")

    monkeypatch.setattr(os, "fork", no_fork)
    before = set(os.listdir("/proc/self/fd"))
    (tmp_path / "pack").mkdir()
    pages = PageCache(pack=PagePack(tmp_path / "pack"))
    with caplog.at_level(logging.INFO, "pypid.pages"):
        assert ahead.start(index, pages) is None
    assert "rendering the pages before the workers start" in caplog.text
    assert pages.pack is not None
    found = {(media, name): pages.pack.get(media, name, index.project_serial(name) or 0)
             for media in AHEAD for name in index.projects()}
    assert found == reference(index, tmp_path / "alone")
    pages.pack.close()
    assert set(os.listdir("/proc/self/fd")) <= before  # both files closed
