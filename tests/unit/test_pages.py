"""Rendered pages: kept in memory while recent, read back from the worker's page file
after that, rendered again only when their project changed, and never wrong."""

from __future__ import annotations

import logging
import os
import threading
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from flask import Flask

from pypid.index import Index
from pypid.simple import pagepack
from pypid.simple.core import SimpleRequest
from pypid.simple.pagecache import PageCache
from pypid.simple.pagepack import PagePack
from pypid.simple.prerender import AHEAD, prerender
from pypid.simple.reply import Reply
from pypid.storage import CACHE_DIRNAME
from pypid.storage.local import PackageRoot
from tests.builders import make_sdist, make_wheel


@pytest.fixture
def pack(tmp_path: Path) -> Iterator[PagePack]:
    made = PagePack(tmp_path)
    yield made
    made.close()


def counting(body: bytes) -> tuple[Callable[[], bytes], list[int]]:
    calls: list[int] = []

    def render() -> bytes:
        calls.append(1)
        return body

    return render, calls


def test_stored_pages_read_back_by_serial(pack: PagePack, tmp_path: Path) -> None:
    pack.put("text/html", "alpha", 3, b"alpha at 3")
    pack.put("text/html", "beta", 4, b"beta at 4")
    pack.put("index", "text/html", 4, b"the list")
    assert pack.get("text/html", "alpha", 3) == b"alpha at 3"
    assert pack.get("text/html", "beta", 4) == b"beta at 4"
    assert pack.get("index", "text/html", 4) == b"the list"
    assert pack.get("text/html", "alpha", 4) is None  # another serial: stale
    assert pack.get("application/json", "alpha", 3) is None
    assert pack.get("text/html", "gamma", 3) is None
    assert os.listdir(tmp_path) == []  # the file has no name: nothing to clean up


def test_a_new_serial_replaces_and_counts_the_old_bytes_dead(tmp_path: Path) -> None:
    pack = PagePack(tmp_path, max_bytes=1000)
    pack.put("s", "a", 1, b"x" * 300)
    pack.put("s", "a", 2, b"y" * 300)
    assert pack.get("s", "a", 2) == b"y" * 300
    assert pack.get("s", "a", 1) is None
    assert pack.size == 600
    pack.put("s", "b", 2, b"z" * 500)  # past the cap: truncated, then stored afresh
    assert pack.size == 500
    assert pack.get("s", "b", 2) == b"z" * 500
    assert pack.get("s", "a", 2) is None  # gone with the truncation, rendered again
    pack.close()


def test_cache_renders_once_then_reads_back_from_the_pack(pack: PagePack) -> None:
    cache = PageCache(max_bytes=3000, pack=pack)
    renders = {}
    for i in range(20):  # far more than memory holds (3000 bytes, ~1,400 a page)
        render, calls = counting(f"page {i} ".encode() * 100)
        renders[i] = calls
        cache.get("text/html", f"p{i}", 1, render)
    for _ in range(3):
        for i in range(20):
            page = cache.get("text/html", f"p{i}", 1, lambda: pytest.fail("rendered again"))
            assert page.body == f"page {i} ".encode() * 100
    first = cache.get("text/html", "p0", 1, lambda: b"")
    assert first.etag == cache.peek("text/html", "p0", 1).etag  # type: ignore[union-attr]
    assert all(len(calls) == 1 for calls in renders.values())
    render, calls = counting(b"p0 changed")
    assert cache.get("text/html", "p0", 2, render).body == b"p0 changed"
    assert calls == [1]


def test_etag_and_gzip_survive_the_trip_through_the_pack(pack: PagePack) -> None:
    body = b"<a href='x'>x</a>\n" * 200
    cache = PageCache(max_bytes=1, pack=pack)  # memory holds the newest page only
    made = cache.get("text/html", "p", 7, lambda: body)
    gzipped = made.gzipped()
    assert gzipped is not None and len(gzipped) < len(body)
    cache.get("text/html", "q", 7, lambda: b"q")
    again = cache.peek("text/html", "p", 7)
    assert again is not None and again is not made
    assert (again.body, again.etag) == (body, made.etag)
    assert pack.get("text/html+gzip", "p", 7) == gzipped
    assert again.gzipped() == gzipped


def test_without_a_pack_pages_are_rendered_again_when_they_leave_memory() -> None:
    cache = PageCache(max_bytes=2000)
    render, calls = counting(b"a" * 1500)
    cache.get("text/html", "a", 1, render)
    cache.get("text/html", "b", 1, lambda: b"b" * 1500)  # evicts "a"
    assert cache.peek("text/html", "a", 1) is None
    cache.get("text/html", "a", 1, render)
    assert calls == [1, 1]


def test_an_unwritable_folder_means_no_pack_and_one_warning(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    pack = PagePack(tmp_path / "missing")
    cache = PageCache(max_bytes=1, pack=pack)
    with caplog.at_level(logging.DEBUG, "pypid.pages"):
        for serial in range(1, 4):
            assert cache.get("s", "a", serial, lambda: b"body").body == b"body"
    warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1
    assert "missing" in warnings[0].getMessage()
    assert pack.get("s", "a", 3) is None


def test_a_nearly_full_disk_stops_storing_and_gives_the_space_back(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
        caplog: pytest.LogCaptureFixture) -> None:
    pack = PagePack(tmp_path)
    pack.put("s", "a", 1, b"stored while there was room")
    assert pack.get("s", "a", 1) is not None
    monkeypatch.setattr(pagepack, "disk_space", lambda fd: (100 << 20, 1 << 40))  # "full"
    with caplog.at_level(logging.WARNING, "pypid.pages"):
        pack.put("s", "b", 1, b"no room for this")
    assert "free on its disk" in caplog.text
    assert pack.get("s", "b", 1) is None
    assert pack.get("s", "a", 1) is None  # truncated: the space is the disk's again
    assert pack.size == 0
    monkeypatch.undo()
    pack.put("s", "c", 1, b"paused")  # for a minute after the trouble
    assert pack.get("s", "c", 1) is None
    pack._paused_until = 1.0  # noqa: SLF001 - the minute has passed
    pack.put("s", "c", 1, b"stored again")
    assert pack.get("s", "c", 1) == b"stored again"
    pack.close()


def test_a_forked_child_reads_the_parents_pages_and_writes_its_own(pack: PagePack) -> None:
    pack.put("s", "a", 1, b"parent's")
    pack.seal()  # as the master does once it rendered every page
    assert pack.get("s", "a", 1) == b"parent's" and pack.size == 0
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: only os calls, then _exit
        ok = pack.get("s", "a", 1) == b"parent's"  # rendered before the fork
        pack.put("s", "b", 1, b"child's")
        pack.put("s", "a", 2, b"child's a")  # changed since: the child's own
        ok = ok and pack.get("s", "b", 1) == b"child's" and pack.size == 16
        ok = ok and pack.get("s", "a", 2) == b"child's a"
        os.write(write, b"1" if ok else b"0")
        os._exit(0)
    os.close(write)
    answer = os.read(read, 1)
    os.close(read)
    os.waitpid(pid, 0)
    assert answer == b"1"
    assert pack.get("s", "a", 1) == b"parent's"  # the parent's file was left alone
    assert pack.get("s", "b", 1) is None


def test_readers_racing_writes_and_truncations_never_get_another_page(tmp_path: Path) -> None:
    pack = PagePack(tmp_path, max_bytes=64 * 1024)  # truncates every ~60 pages
    wrong: list[tuple[str, int, bytes]] = []
    stop = threading.Event()

    def body(name: str, serial: int) -> bytes:
        return f"{name}@{serial};".encode() * 100

    def writer() -> None:
        for serial in range(1, 400):
            name = f"p{serial % 50}"
            pack.put("s", name, serial, body(name, serial))
        stop.set()

    def reader() -> None:
        while not stop.is_set():
            for serial in range(1, 400):
                name = f"p{serial % 50}"
                data = pack.get("s", name, serial)
                if data is not None and data != body(name, serial):
                    wrong.append((name, serial, data[:20]))

    threads = [threading.Thread(target=writer), threading.Thread(target=reader),
               threading.Thread(target=reader)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    assert not wrong
    pack.close()


def test_the_app_keeps_its_pages_beside_the_cache_and_serves_them_back(
        make_app: Callable[..., Flask], root: Path) -> None:
    make_sdist(root, "alpha", "1.0")
    app = make_app()
    pages = app.extensions["pypid"].pages
    assert pages.pack is not None and pages.pack.directory == root / CACHE_DIRNAME
    client = app.test_client()
    first = client.get("/simple/alpha/", headers={"Accept": "text/html"})
    serial = app.extensions["pypid"].index.project_serial("alpha")
    stored = pages.pack.get("text/html", "alpha", serial)
    assert stored is not None and stored.endswith(first.data)
    pages._pages.clear()  # noqa: SLF001 - out of memory: the next answer comes from the file
    again = client.get("/simple/alpha/", headers={"Accept": "text/html"})
    assert (again.data, again.headers["ETag"]) == (first.data, first.headers["ETag"])


def test_a_page_kept_in_memory_answers_with_one_reply_each_way(
        make_app: Callable[..., Flask], root: Path) -> None:
    """A kept page's replies (and so their encoded heads) are made once per media type,
    encoding and freshness; one read back from the pack makes its own; a new serial, new."""
    make_wheel(root, "alpha", "1.0")
    services = make_app().extensions["pypid"]
    simple, pages = services.simple, services.pages

    def ask(**headers: str) -> Reply:
        reply = simple.decide(SimpleRequest("GET", "/simple/alpha/", headers={
            "accept": "text/html", **headers}), may_block=False)
        assert reply is not None
        return reply

    plain = ask()
    assert plain is ask() and plain.status == 200
    etag = dict(plain.headers)["ETag"]
    fresh = ask(**{"if-none-match": etag})
    assert fresh is ask(**{"if-none-match": etag}) and fresh.status == 304
    assert ask(**{"if-none-match": '"other"'}) is plain
    json = ask(accept="application/vnd.pypi.simple.v1+json")
    assert json is not plain and dict(json.headers)["Content-Type"].endswith("json")
    pages._pages.clear()  # noqa: SLF001 - out of memory: read back from the pack
    again = ask()
    assert again is not plain and (again.body, again.headers) == (plain.body, plain.headers)
    assert again is not ask()  # a page read for one request keeps no reply
    services.index.refresh(make_wheel(root, "alpha", "2.0").name)
    newer = ask()
    assert newer.body != plain.body and newer is ask()


@pytest.mark.parametrize("helpers", [1, 2])
def test_pages_rendered_ahead_by_helpers_are_those_rendered_alone(
        root: Path, tmp_path: Path, helpers: int, caplog: pytest.LogCaptureFixture) -> None:
    """Forked helpers render shares of the projects into files the master copies into its
    pack: every page reads back as the master alone would have stored it."""
    for number in range(7):
        make_sdist(root, f"p{number}", "1.0")
        make_wheel(root, f"p{number}", "2.0", requires_python=">=3.9")
    index = Index(PackageRoot(root))
    index.load()
    packs = []
    for count in (0, helpers):
        (tmp_path / f"pack{count}").mkdir()
        pages = PageCache(pack=PagePack(tmp_path / f"pack{count}"))
        caplog.clear()
        with caplog.at_level(logging.INFO, "pypid.pages"):
            assert prerender(index, pages, count) == 7
        assert [r.getMessage()[-13:] for r in caplog.records] == [f"({count + 1} processes)"]
        packs.append(pages.pack)
    serials = {name: index.project_serial(name) for name in index.projects()}
    for media in AHEAD:
        for name, serial in serials.items():
            alone, helped = (pack.get(media, name, serial) for pack in packs)
            assert alone is not None and helped == alone
    for pack in packs:
        assert pack is not None
        pack.close()
    index.close()


def test_gzipped_copies_of_sealed_pages_take_no_dict_entry(pack: PagePack) -> None:
    names = [f"project-{i}" for i in range(50)]
    pack.put_many(("text/html", name, 1, name.encode()) for name in names)
    pack.seal()
    for name in names:
        pack.put("text/html+gzip", name, 1, b"gz " + name.encode())
    pack.put("text/html+gzip", "project-0", 1, b"gz again")  # a second copy: the first is dead
    pack.put("text/html+gzip", "project-1", 2, b"gz of a change")  # not sealed at serial 2
    pack.put("text/html+gzip", "new-project", 1, b"gz new")  # not sealed at all
    assert pack.get("text/html+gzip", "project-0", 1) == b"gz again"
    assert all(pack.get("text/html+gzip", name, 1) == b"gz " + name.encode()
               for name in names[2:])
    assert pack.get("text/html+gzip", "project-1", 2) == b"gz of a change"
    assert pack.get("text/html+gzip", "new-project", 1) == b"gz new"
    assert pack.get("text/html+gzip", "project-2", 2) is None  # another serial: not stored
    assert pack.get("application/json+gzip", "project-2", 1) is None
    assert set(pack._where["text/html+gzip"]) == {"project-1", "new-project"}  # noqa: SLF001
    assert pack._dead == len(b"gz project-0")  # noqa: SLF001
    pack._truncate()  # noqa: SLF001 - the live file's places go with it
    assert pack.get("text/html+gzip", "project-3", 1) is None
    assert pack.get("text/html", "project-3", 1) == b"project-3"  # the sealed file stays


def test_sealed_pages_leave_out_names_that_share_a_hash(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(pagepack, "hash", len, raising=False)  # collisions on demand
    names = {"ab": 1 << 72 | 5 << 32 | 7, "cd": 1 << 72 | 6 << 32 | 8, "xyz": 2 << 72 | 9 << 32 | 3}
    sealed = pagepack.Sealed(names)
    assert (sealed.find("ab", 1), sealed.find("cd", 1)) == (None, None)
    assert (sealed.find("xyz", 2), sealed.find("xyz", 1)) == (9 << 32 | 3, None)
