"""Mirrored pages and files through the simple API, in process, from a cache made beforehand
(offline: no upstream at all): what the worker's loop may answer without blocking, and what
Flask answers."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest
from flask import Flask

from pypid.mirror.store import MirrorStore, PageRecord
from pypid.mirror.translate import UpstreamFile, UpstreamPage
from pypid.simple.core import SimpleAPI, SimpleRequest
from pypid.simple.negotiate import JSON
from pypid.simple.reply import Kind
from tests.builders import make_wheel
from tests.unit.conftest import AppFactory


@pytest.fixture
def cached(tmp_path: Path) -> tuple[Path, bytes, str]:
    """A cache holding the page of "remote" (two files, one of them cached) and a page of
    "local" (a local project's namesake)."""
    cache = tmp_path / "cache"
    store = MirrorStore(cache)
    wheel = make_wheel(tmp_path / "build", "remote", "1.0")
    data = wheel.read_bytes()
    files = (
        UpstreamFile(wheel.name, "1.0", "https://up.example/f/" + wheel.name,
                     hashlib.sha256(data).hexdigest(), ">=3.8", None, False, len(data),
                     "2020-01-01T00:00:00.000000Z"),
        UpstreamFile("remote-2.0.tar.gz", "2.0", "https://up.example/f/remote-2.0.tar.gz",
                     "cd" * 32, None, None, "bad build", 10, "2020-02-01T00:00:00Z"),
    )
    store.save(PageRecord(UpstreamPage("remote", files), '"etag"', "", 0.0))
    store.save(PageRecord(UpstreamPage("local", (UpstreamFile(
        "local-9.0.tar.gz", "9.0", "https://up.example/f/local-9.0.tar.gz", "ef" * 32),)),
        "", "", 0.0))
    path = store.file_path("remote", wheel.name)
    store.make_dir(path.parent)
    path.write_bytes(data)
    return cache, data, wheel.name


@pytest.fixture
def app(make_app: AppFactory, root: Path, cached: tuple[Path, bytes, str]) -> Flask:
    make_wheel(root, "local", "1.0")
    return make_app(upstream={"mode": "cache", "cache_root": str(cached[0]), "offline": True,
                              "page_ttl": 600})


def _simple(app: Flask) -> SimpleAPI:
    return app.extensions["pypid"].simple  # type: ignore[no-any-return]


def test_loop_answers_from_memory_once_a_thread_has_loaded(
        app: Flask, cached: tuple[Path, bytes, str]) -> None:
    simple = _simple(app)
    page = SimpleRequest("GET", "/simple/remote/", headers={"accept": JSON})
    assert simple.decide(page, may_block=False) is None  # the disk: a thread's work
    loaded = simple.decide(page)
    assert loaded is not None and loaded.status == 200
    fast = simple.decide(page, may_block=False)
    assert fast is not None and fast.body == loaded.body
    _, data, name = cached
    reply = simple.decide(SimpleRequest("GET", f"/packages/remote/{name}"), may_block=False)
    assert reply is not None and reply.kind is Kind.FILE and reply.file is not None
    assert reply.file.length == len(data)


def test_offline_page_lists_only_cached_files(app: Flask, cached: tuple[Path, bytes, str]) -> None:
    client = app.test_client()
    page = client.get("/simple/remote/", headers={"Accept": JSON}).get_json()
    _, data, name = cached
    assert [f["filename"] for f in page["files"]] == [name]
    (item,) = page["files"]
    assert item["url"] == f"../../packages/remote/{name}"
    assert item["requires-python"] == ">=3.8" and item["size"] == len(data)
    assert item["upload-time"] == "2020-01-01T00:00:00.000000Z"
    html = client.get("/simple/remote/").get_data(as_text=True)
    assert f'href="../../packages/remote/{name}#sha256=' in html
    with client.get(f"/packages/remote/{name}") as whole:
        assert whole.status_code == 200 and whole.data == data
        assert whole.headers["ETag"] == f'"{hashlib.sha256(data).hexdigest()}"'
    with client.get(f"/packages/remote/{name}", headers={"Range": "bytes=0-3"}) as part:
        assert part.status_code == 206 and part.data == data[:4]
    missing = client.get("/packages/remote/remote-2.0.tar.gz")
    assert missing.status_code == 502 and b"offline" in missing.data


def test_local_project_hides_its_cached_namesake(app: Flask) -> None:
    client = app.test_client()
    page = client.get("/simple/local/", headers={"Accept": JSON}).get_json()
    assert [f["filename"] for f in page["files"]] == ["local-1.0-py3-none-any.whl"]
    assert client.get("/packages/local/local-9.0.tar.gz").status_code == 404


def test_index_lists_local_and_mirrored(app: Flask) -> None:
    names = [p["name"] for p in app.test_client().get(
        "/simple/", headers={"Accept": JSON}).get_json()["projects"]]
    assert names == ["local", "remote"]


def test_health_reports_upstream(app: Flask) -> None:
    body = app.test_client().get("/health").get_json()
    assert body["upstream"] == {"reachable": False, "last_success": None}


@pytest.mark.parametrize("path", ["/packages/remote/../x.whl", "/packages/Remote/x.whl",
                                  "/packages/remote/a/b.whl", "/packages/remote/.x.whl"])
def test_odd_mirrored_paths_are_404(app: Flask, path: str) -> None:
    assert app.test_client().get(path).status_code == 404
