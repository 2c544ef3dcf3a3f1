"""The mirror's pure parts (page translation, cooldown, merge, cache paths) and its handling of
hostile upstream input, against a tiny upstream on loopback."""

from __future__ import annotations

import hashlib
import http.server
import io
import json
import os
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from pypid.growing import BrokenDownload
from pypid.mirror.fetch import Fetcher
from pypid.mirror.holdings import holdings, pin, prune
from pypid.mirror.lockfiles import read_lock
from pypid.mirror.policy import Cooldown, merges, parse_upload_time
from pypid.mirror.priming import Pinned, PrimingError, parse_spec, read_requirements
from pypid.mirror.store import MirrorStore, PageRecord, UnsafeNameError
from pypid.mirror.translate import JSON_MEDIA, PageError, UpstreamFile, UpstreamPage, read_page
from pypid.mirror.upstream import Upstream, UpstreamError

PAGE = "https://up.example/simple/demo/"
HOSTS = frozenset({"up.example", "files.example"})
SHA = "ab" * 32
DAY = 86400.0


def _json_page(*files: dict, **extra: object) -> bytes:
    return json.dumps({"meta": {"api-version": "1.1"}, "name": "demo", "files": list(files),
                       **extra}).encode()


def _file(filename: str = "demo-1.0-py3-none-any.whl", **fields: object) -> dict:
    return {"filename": filename, "url": f"https://files.example/x/{filename}",
            "hashes": {"sha256": SHA}, **fields}


def test_json_page_is_carried_over() -> None:
    body = _json_page(_file(**{"requires-python": ">=3.9", "core-metadata": {"sha256": SHA},
                               "yanked": "broken", "size": 12,
                               "upload-time": "2026-01-02T03:04:05.000000Z"}),
                      **{"project-status": {"status": "deprecated", "reason": "use x"}})
    page = read_page(body, JSON_MEDIA, PAGE, "demo", HOSTS)
    (item,) = page.files
    assert item == UpstreamFile("demo-1.0-py3-none-any.whl", "1.0",
                                "https://files.example/x/demo-1.0-py3-none-any.whl", SHA,
                                ">=3.9", SHA, "broken", 12, "2026-01-02T03:04:05.000000Z")
    assert (page.status, page.reason) == ("deprecated", "use x")
    assert UpstreamFile.from_record(item.as_record()) == item


HOSTILE = [
    ("foreign-host", _file(url="https://evil.example/demo-1.0-py3-none-any.whl"), "evil.example"),
    ("dotdot", _file("..demo-1.0-py3-none-any.whl"), "unsafe file name"),
    ("slash", _file("../../etc/demo-1.0.tar.gz"), "unsafe file name"),
    ("other-project", _file("private-9.0-py3-none-any.whl"), "belongs to private"),
    ("no-hash", {**_file(), "hashes": {"md5": "00"}}, "no sha256"),
    ("file-scheme", _file(url="file:///etc/passwd"), "neither upstream"),
]


@pytest.mark.parametrize(("case", "raw", "why"), HOSTILE, ids=[row[0] for row in HOSTILE])
def test_hostile_links_are_refused(case: str, raw: dict, why: str) -> None:
    page = read_page(_json_page(raw, _file()), JSON_MEDIA, PAGE, "demo", HOSTS)
    assert [f.filename for f in page.files] == ["demo-1.0-py3-none-any.whl"]
    assert len(page.refused) == 1 and why in page.refused[0]


def test_uninstallable_files_are_left_out_quietly() -> None:
    page = read_page(_json_page(_file("demo-1.0.win32.exe"), _file("demo-1.0-py2.7.egg"),
                                _file()), JSON_MEDIA, PAGE, "demo", HOSTS)
    assert [f.filename for f in page.files] == ["demo-1.0-py3-none-any.whl"]
    assert page.refused == ()


@pytest.mark.parametrize(("body", "media"), [
    (b"<html>not json", JSON_MEDIA), (b'{"files": 3}', JSON_MEDIA), (b"[]", JSON_MEDIA),
    (b"{}", "application/octet-stream"), (b"[" * 100_000, JSON_MEDIA)],
    ids=["html-as-json", "files-not-list", "list", "media", "nested"])
def test_unusable_pages_raise(body: bytes, media: str) -> None:
    with pytest.raises(PageError):
        read_page(body, media, PAGE, "demo", HOSTS)


def test_html_fallback() -> None:
    body = (b'<html><head><meta name="pypi:project-status" content="quarantined"></head><body>'
            b'<a href="../../packages/demo-1.0.tar.gz#sha256=' + SHA.encode() + b'" '
            b'data-requires-python="&gt;=3.8" data-yanked="" data-size="5">demo-1.0.tar.gz</a>'
            b'<a href="https://evil.example/demo-2.0.tar.gz#sha256=' + SHA.encode() + b'">'
            b"demo-2.0.tar.gz</a></body></html>")
    page = read_page(body, "text/html; charset=utf-8", PAGE, "demo", HOSTS)
    (item,) = page.files
    assert item.url == "https://up.example/packages/demo-1.0.tar.gz"
    assert (item.requires_python, item.yanked, item.size) == (">=3.8", True, 5)
    assert page.status == "quarantined" and len(page.refused) == 1


def test_cooldown() -> None:
    now = parse_upload_time("2026-03-10T00:00:00Z") or 0.0
    cooldown = Cooldown(7, ("urllib3==2.5.1",))
    assert cooldown.refusal("demo", "1.0", "2026-03-01T00:00:00Z", now) is None
    young = cooldown.refusal("demo", "1.0", "2026-03-09T00:00:00.5Z", now)
    assert young is not None and "min_age_days" in young
    assert cooldown.refusal("demo", "1.0", None, now) is not None  # unknown age: held back
    assert cooldown.refusal("urllib3", "2.5.1", "2026-03-09T00:00:00Z", now) is None
    assert cooldown.refusal("urllib3", "2.5.2", "2026-03-09T00:00:00Z", now) is not None
    assert Cooldown(0).refusal("demo", "1.0", None, now) is None


@pytest.mark.parametrize(("project", "patterns", "expected"), [
    ("corp-tools", ("corp-*",), True), ("corp-tools", ("Corp_*",), True),
    ("requests", ("corp-*",), False), ("requests", (), False), ("a-b", ("a.b",), True)])
def test_merges(project: str, patterns: tuple[str, ...], expected: bool) -> None:
    assert merges(project, patterns) is expected


def test_store_refuses_paths_outside_its_root(tmp_path: Path) -> None:
    store = MirrorStore(tmp_path / "cache")
    for project, filename in (("demo", "../x.whl"), ("demo", ".hidden.whl"), ("../x", "a.whl"),
                              ("demo", "a/b.whl"), ("Demo", "a.whl")):
        with pytest.raises(UnsafeNameError):
            store.file_path(project, filename)
    page = read_page(_json_page(_file()), JSON_MEDIA, PAGE, "demo", HOSTS)
    store.save(PageRecord(page, '"e"', "", 5.0))
    assert store.load("demo") == PageRecord(page, '"e"', "", 5.0)
    assert store.projects() == ["demo"]
    (tmp_path / "cache" / "pages" / "broken.json").write_text("{")
    assert store.load("broken") is None


def test_prune_evicts_least_recently_used_unpinned(tmp_path: Path) -> None:
    store = MirrorStore(tmp_path)
    for number, name in enumerate(("a-1.0.tar.gz", "a-2.0.tar.gz", "a-3.0.tar.gz")):
        path = store.file_path("a", name)
        store.make_dir(path.parent)
        path.write_bytes(b"x" * 100)
        os.utime(path, (1000 + number, 1000))  # last used: 1.0 first, 3.0 last
    pin(store, "a", "a-1.0.tar.gz")
    assert [i.filename for i in prune(store, 200)] == ["a-2.0.tar.gz"]
    assert [(i.filename, i.pinned) for i in holdings(store)] == [
        ("a-1.0.tar.gz", True), ("a-3.0.tar.gz", False)]
    assert prune(store, 10_000) == []


def test_requirements_files() -> None:
    assert parse_spec("Demo_Pkg==1.0") == Pinned("demo-pkg", "1.0")
    for bad in ("demo>=1", "demo", "demo==1.*", "demo==1,<2"):
        with pytest.raises(PrimingError):
            parse_spec(bad)


def test_requirements_file_lines(tmp_path: Path) -> None:
    path = tmp_path / "r.txt"
    path.write_text(f"a==1 --hash=sha256:{SHA} \\\n  --hash=sha256:{'cd' * 32}  # two\n\n"
                    "# comment\nb[x]==2 ; python_version > '3'\n")
    assert read_requirements(path) == [Pinned("a", "1", frozenset({SHA, "cd" * 32})),
                                       Pinned("b", "2")]
    path.write_text("-e .\n")
    with pytest.raises(PrimingError, match="line 1"):
        read_requirements(path)


PYLOCK = f"""
lock-version = "1.0"
created-by = "test"
[[packages]]
name = "Attrs"
version = "25.1.0"
wheels = [{{ url = "https://x/attrs-25.1.0-py3-none-any.whl", hashes = {{ sha256 = "{SHA}" }} }}]
[packages.sdist]
url = "https://x/attrs-25.1.0.tar.gz"
hashes = {{ sha256 = "{'CD' * 32}" }}
[[packages]]
name = "local-thing"
directory = {{ path = "." }}
"""

UV_LOCK = f"""
version = 1
[[package]]
name = "proj"
version = "0"
source = {{ virtual = "." }}
[[package]]
name = "idna"
version = "3.10"
source = {{ registry = "https://pypi.org/simple" }}
sdist = {{ url = "https://x/idna-3.10.tar.gz", hash = "sha256:{SHA}", size = 3 }}
wheels = [{{ url = "https://x/idna-3.10-py3-none-any.whl", hash = "sha256:{'ef' * 32}" }}]
"""


@pytest.mark.parametrize(("text", "expected"), [
    (PYLOCK, [Pinned("attrs", "25.1.0", frozenset({SHA, "cd" * 32}), exact=True)]),
    (UV_LOCK, [Pinned("idna", "3.10", frozenset({SHA, "ef" * 32}), exact=True)]),
], ids=["pylock", "uv.lock"])
def test_lock_files(tmp_path: Path, text: str, expected: list[Pinned]) -> None:
    path = tmp_path / "lock.toml"
    path.write_text(text)
    assert read_lock(path) == expected


@pytest.mark.parametrize("text", ["not toml [", "version = 1\n", "lock-version = '1.0'\n"])
def test_unusable_lock_files(tmp_path: Path, text: str) -> None:
    path = tmp_path / "lock.toml"
    path.write_text(text)
    with pytest.raises(PrimingError):
        read_lock(path)


# -- against a tiny upstream on loopback


class _Upstream(http.server.BaseHTTPRequestHandler):
    routes: dict[str, tuple[int, dict[str, str], bytes]] = {}

    def do_GET(self) -> None:  # noqa: N802 - http.server's name
        status, headers, body = self.routes.get(self.path, (404, {}, b"no"))
        self.send_response(status)
        for name, value in headers.items():
            self.send_header(name, value)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def upstream(tmp_path: Path) -> Iterator[tuple[Upstream, dict]]:
    routes: dict[str, tuple[int, dict[str, str], bytes]] = {}
    handler = type("Handler", (_Upstream,), {"routes": routes})
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        url = f"http://127.0.0.1:{server.server_address[1]}/simple/"
        yield Upstream(url, timeout=5, file_hosts=(), state_dir=tmp_path / "cache"), routes
    finally:
        server.shutdown()
        server.server_close()


def _item(up: Upstream, data: bytes, size: int | None = None) -> UpstreamFile:
    return UpstreamFile("demo-1.0.tar.gz", "1.0", up.url.replace("/simple/", "/f/demo-1.0.tar.gz"),
                        hashlib.sha256(data).hexdigest(), size=size)


@pytest.mark.parametrize(("served", "declared", "why"), [
    (b"x" * 5000, 10, "larger than its declared size"),
    (b"x" * 50, 100, "upstream declared 100"),
], ids=["larger-than-declared", "shorter"])
def test_download_refused_nothing_kept(upstream: tuple[Upstream, dict], tmp_path: Path,
                                       served: bytes, declared: int, why: str,
                                       caplog: pytest.LogCaptureFixture) -> None:
    up, routes = upstream
    item = _item(up, served, declared)
    routes["/f/demo-1.0.tar.gz"] = (200, {}, served)
    final = tmp_path / "cache" / "files" / "demo" / "demo-1.0.tar.gz"
    follower = Fetcher(up, MirrorStore(tmp_path / "cache")).follow(final, item)
    assert follower is not None
    error = follower.first_bytes()
    if error is None:
        with pytest.raises(BrokenDownload):
            b"".join(follower.chunks())
    follower.close()
    assert not any(final.parent.iterdir())
    assert why in caplog.text


def test_download_kept_when_hash_matches(upstream: tuple[Upstream, dict], tmp_path: Path) -> None:
    up, routes = upstream
    data = b"payload" * 1000
    routes["/f/demo-1.0.tar.gz"] = (200, {}, data)
    final = tmp_path / "cache" / "files" / "demo" / "demo-1.0.tar.gz"
    fetcher = Fetcher(up, MirrorStore(tmp_path / "cache"))
    follower = fetcher.follow(final, _item(up, data, len(data)))
    assert follower is not None and follower.first_bytes() is None
    assert b"".join(follower.chunks()) == data
    assert final.read_bytes() == data
    assert fetcher.follow(final, _item(up, data, len(data))) is None  # cached now


def test_redirect_to_a_foreign_host_is_refused(upstream: tuple[Upstream, dict]) -> None:
    up, routes = upstream
    routes["/simple/demo/"] = (302, {"Location": "http://evil.example/simple/demo/"}, b"")
    with pytest.raises(UpstreamError, match="evil.example"):
        up.page("demo")


def test_health_follows_the_last_answer(upstream: tuple[Upstream, dict]) -> None:
    up, routes = upstream
    assert up.health() == {"reachable": False, "last_success": None}
    routes["/simple/demo/"] = (200, {"Content-Type": JSON_MEDIA}, _json_page())
    assert up.page("demo").status == 200
    assert up.health()["reachable"] is True
    routes["/simple/demo/"] = (500, {}, b"")
    with pytest.raises(UpstreamError):
        up.page("demo")
    health = up.health()
    assert health["reachable"] is False and health["last_success"]


class _Shelf:
    """A bucket's shared cache in a dict (``storage.s3shelf.BucketShelf``'s interface)."""

    def __init__(self) -> None:
        self.objects: dict[str, bytes] = {}

    def open(self, relpath: str) -> io.BytesIO | None:
        data = self.objects.get(relpath)
        return None if data is None else io.BytesIO(data)

    def read(self, relpath: str) -> bytes | None:
        return self.objects.get(relpath)

    def put_bytes(self, relpath: str, data: bytes, *, replace: bool) -> None:
        if replace or relpath not in self.objects:
            self.objects[relpath] = data

    def put_file(self, relpath: str, path: Path, *, replace: bool = False) -> None:
        self.put_bytes(relpath, path.read_bytes(), replace=replace)


def _fetched(fetcher: Fetcher, final: Path, item: UpstreamFile) -> bytes:
    follower = fetcher.follow(final, item)
    assert follower is not None and follower.first_bytes() is None
    return b"".join(follower.chunks())


def test_a_shelf_shares_files_checked_and_replaces_a_bad_copy(
        upstream: tuple[Upstream, dict], tmp_path: Path) -> None:
    up, routes = upstream
    data = b"payload" * 1000
    item = _item(up, data, len(data))
    shelf = _Shelf()
    relpath = "files/demo/demo-1.0.tar.gz"
    # One node fetches from upstream: checked, kept, shared.
    routes["/f/demo-1.0.tar.gz"] = (200, {}, data)
    one = tmp_path / "one"
    assert _fetched(Fetcher(up, MirrorStore(one, shelf)), one / relpath, item) == data
    assert shelf.objects[relpath] == data
    # Another takes the shelf's copy: upstream is not asked (it would answer 404 now).
    routes.clear()
    two = tmp_path / "two"
    assert _fetched(Fetcher(up, MirrorStore(two, shelf)), two / relpath, item) == data
    assert (two / relpath).read_bytes() == data
    # A shelf copy that is not upstream's file is refused, then replaced from upstream.
    shelf.objects[relpath] = b"x" * len(data)
    three = tmp_path / "three"
    fetcher = Fetcher(up, MirrorStore(three, shelf))
    follower = fetcher.follow(three / relpath, item)
    assert follower is not None
    with pytest.raises(BrokenDownload):
        follower.first_bytes()
        b"".join(follower.chunks())
    assert not (three / relpath).exists()
    routes["/f/demo-1.0.tar.gz"] = (200, {}, data)
    assert _fetched(fetcher, three / relpath, item) == data
    assert shelf.objects[relpath] == data


def test_a_shelf_holds_pages_for_a_node_that_never_fetched_them(tmp_path: Path) -> None:
    shelf = _Shelf()
    page = UpstreamPage("demo", (UpstreamFile("demo-1.0.tar.gz", "1.0", "https://x/f",
                                              "0" * 64),), "active", "")
    MirrorStore(tmp_path / "one", shelf).save(PageRecord(page, '"e"', "", 1.0))
    other = MirrorStore(tmp_path / "two", shelf)
    record = other.load("demo")
    assert record is not None and record.page == page and record.etag == '"e"'
    assert (tmp_path / "two" / "pages" / "demo.json").is_file()  # kept here from now on
    assert MirrorStore(tmp_path / "three").load("demo") is None  # no shelf: nothing shared

def test_an_answer_that_keeps_the_connection_is_read_whole(
        upstream: tuple[Upstream, dict]) -> None:
    """An upstream that ignores "Connection: close" (http.client used to close such an
    answer along with its connection: an empty body)."""
    up, routes = upstream
    body = _json_page(_file())
    routes["/simple/demo/"] = (200, {"Content-Type": JSON_MEDIA, "Connection": "keep-alive"},
                               body)
    assert up.page("demo").body == body
