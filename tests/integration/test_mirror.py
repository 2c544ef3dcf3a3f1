"""The caching mirror (upstream.mode = "cache") end to end, with no internet: the upstream is
a second real pypid on loopback behind a fault-injecting proxy; pip and uv install through
the mirror with upstream up, then with it stopped."""

from __future__ import annotations

import hashlib
import http.client
import os
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from pypid import cli
from tests.builders import make_sdist, make_wheel
from tests.integration.faultproxy import CORRUPT, DROP, FAIL, HANG, PASS, SLOW, FaultProxy
from tests.integration.harness import STARTED, start_server, stop
from tests.integration.helpers import (
    JSON_TYPE,
    Server,
    client_tool,
    get,
    installed_versions,
    parse_page,
    request,
    run_client,
)

OLD = time.time() - 30 * 86400  # upload times (file mtimes upstream) past the cooldown
COOLDOWN_DAYS = 3
BIG = 6 * 1024 * 1024


@dataclass
class World:
    upstream: Server
    proxy: FaultProxy
    mirror: Server
    cache: Path
    wheels: dict[str, bytes]  # upstream file name -> bytes


def _upstream_root(root: Path) -> dict[str, bytes]:
    def wheel(name: str, version: str, *, fresh: bool = False, **options: object) -> Path:
        path = make_wheel(root, name, version, **options)
        if not fresh:
            os.utime(path, (OLD, OLD))
        return path

    wheel("mirrored-lib", "1.0")
    wheel("mirrored-lib", "1.1", requires_python=">=3.8")
    os.utime(make_sdist(root, "mirrored-lib", "1.1"), (OLD, OLD))
    wheel("mirrored-app", "1.0", requires_dist=("mirrored-lib>=1.0",))
    wheel("private-name", "9.0")  # a namesake of a local project: dependency confusion
    wheel("corp-merged", "2.0")
    wheel("fresh-pkg", "1.0")
    wheel("fresh-pkg", "2.0", fresh=True)
    wheel("exempt-pkg", "2.0", fresh=True)
    wheel("big-pkg", "1.0", payload=os.urandom(BIG))
    wheel("stream-pkg", "1.0", payload=os.urandom(BIG))
    for name in ("drop-pkg", "corrupt-pkg", "stale-pkg", "hang-pkg", "gone-pkg", "slow-pkg",
                 "head-pkg", "quar-pkg"):
        wheel(name, "1.0", payload=os.urandom(256 * 1024))
    return {p.name: p.read_bytes() for p in root.iterdir() if p.is_file()}


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[World]:
    base = tmp_path_factory.mktemp("mirror")
    wheels = _upstream_root(base / "upstream-root")
    upstream = start_server(base / "upstream", base / "upstream-root",
                            settings={"server": {"workers": 1}})
    STARTED.append(upstream)
    proxy = FaultProxy(upstream.host, upstream.port)
    local = base / "local-root"
    make_wheel(local, "private-name", "1.0")
    make_wheel(local, "corp-merged", "1.0")
    make_wheel(local, "corp-alone", "1.0")  # merged, but upstream has no such project
    make_wheel(local, "corp-down", "1.0")  # merged, and upstream fails
    cache = base / "cache"
    mirror = None
    try:
        mirror = start_server(base / "mirror", local, upstream="cache", settings={"upstream": {
            "url": proxy.url(), "cache_root": str(cache), "page_ttl": 0, "timeout": 3,
            "file_hosts": [], "min_age_days": COOLDOWN_DAYS,
            "min_age_exempt": ["exempt-pkg==2.0"], "merge": ["corp-*"]}})
        STARTED.append(mirror)
        yield World(upstream, proxy, mirror, cache, wheels)
    finally:
        if mirror is not None:
            stop(mirror.proc)
        proxy.close()
        stop(upstream.proc)


def _json(world: World, project: str) -> dict:
    resp = get(world.mirror.url(f"/simple/{project}/"), Accept=JSON_TYPE)
    assert resp.status == 200, resp.describe() + resp.text
    return resp.json()


def test_page_is_upstreams_with_links_here(world: World) -> None:
    page = _json(world, "mirrored-lib")
    names = {f["filename"] for f in page["files"]}
    assert names == {n for n in world.wheels if n.startswith("mirrored_lib")}
    assert page["meta"]["api-version"] == "1.4"
    for f in page["files"]:
        assert f["url"].startswith("../../packages/mirrored-lib/"), f
        assert f["hashes"]["sha256"] == hashlib.sha256(world.wheels[f["filename"]]).hexdigest()
        assert f["size"] == len(world.wheels[f["filename"]])
        assert f["upload-time"].endswith("Z")
    wheel = next(f for f in page["files"] if f["filename"].startswith("mirrored_lib-1.1-"))
    assert wheel["requires-python"] == ">=3.8"
    assert wheel["core-metadata"]["sha256"]
    html = get(world.mirror.url("/simple/mirrored-lib/"))
    assert html.status == 200 and "mirrored_lib-1.0-py3-none-any.whl" in html.text
    assert all(href.startswith("../../packages/mirrored-lib/")
               for href in (a.attrs["href"] for a in parse_page(html.text).anchors))


def test_file_streamed_then_served_from_cache(world: World) -> None:
    name = next(n for n in world.wheels if n.startswith("mirrored_lib-1.0"))
    url = world.mirror.url(f"/packages/mirrored-lib/{name}")
    first = get(url)
    assert first.status == 200 and first.body == world.wheels[name]
    assert (world.cache / "files" / "mirrored-lib" / name).read_bytes() == world.wheels[name]
    before = world.proxy.requests[f"/packages/{name}"]
    again = get(url, Range="bytes=0-9")
    assert again.status == 206 and again.body == world.wheels[name][:10]
    tag = again.header("ETag")
    assert tag == f'"{hashlib.sha256(world.wheels[name]).hexdigest()}"'
    assert get(url, If_None_Match=tag).status == 304
    assert world.proxy.requests[f"/packages/{name}"] == before  # no second download
    meta = get(url + ".metadata")
    assert meta.status == 200 and meta.body.startswith(b"Metadata-Version")


def test_head_of_an_uncached_file(world: World) -> None:
    name = next(n for n in world.wheels if n.startswith("head_pkg"))
    url = world.mirror.url(f"/packages/head-pkg/{name}")
    head = request(url, method="HEAD")
    assert head.status == 200 and head.body == b""
    assert head.header("Content-Length") == str(len(world.wheels[name]))
    assert get(url).body == world.wheels[name]


def test_many_askers_cause_one_download(world: World) -> None:
    name = next(n for n in world.wheels if n.startswith("big_pkg"))
    world.proxy.mode = SLOW
    results: list[bytes] = []
    try:
        def fetch() -> None:
            results.append(request(world.mirror.url(f"/packages/big-pkg/{name}"),
                                   timeout=60).body)
        threads = [threading.Thread(target=fetch) for _ in range(8)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(timeout=90)
    finally:
        world.proxy.mode = PASS
    assert len(results) == 8
    assert all(body == world.wheels[name] for body in results)
    assert world.proxy.requests[f"/packages/{name}"] == 1


def test_first_bytes_leave_before_upstream_has_sent_the_file(world: World) -> None:
    name = next(n for n in world.wheels if n.startswith("stream_pkg"))
    path = f"/packages/{name}"
    world.proxy.mode = SLOW
    try:
        conn = http.client.HTTPConnection(world.mirror.host, world.mirror.port, timeout=30)
        try:
            conn.request("GET", f"/packages/stream-pkg/{name}")
            resp = conn.getresponse()
            assert resp.status == 200
            first = resp.read(1024)
            assert world.proxy.finished[path] == 0  # upstream is still sending
            rest = resp.read()
        finally:
            conn.close()
    finally:
        world.proxy.mode = PASS
    assert first + rest == world.wheels[name]


def test_hung_file_download_is_504(world: World) -> None:
    name = next(n for n in world.wheels if n.startswith("slow_pkg"))
    _json(world, "slow-pkg")
    world.proxy.mode = HANG
    try:
        resp = request(world.mirror.url(f"/packages/slow-pkg/{name}"), timeout=30)
    finally:
        world.proxy.mode = PASS
    assert resp.status == 504 and "no progress" in resp.text
    assert not (world.cache / "files" / "slow-pkg" / name).exists()


def test_local_project_hides_its_upstream_namesake(world: World) -> None:
    page = _json(world, "private-name")
    assert [f["filename"] for f in page["files"]] == ["private_name-1.0-py3-none-any.whl"]
    upstream_name = next(n for n in world.wheels if n.startswith("private_name-9.0"))
    assert get(world.mirror.url(f"/packages/private-name/{upstream_name}")).status == 404


def test_merged_project_lists_both(world: World) -> None:
    files = [f["filename"] for f in _json(world, "corp-merged")["files"]]
    assert "corp_merged-1.0-py3-none-any.whl" in files
    assert "corp_merged-2.0-py3-none-any.whl" in files


def test_merged_project_keeps_its_local_page_without_upstream(world: World) -> None:
    assert [f["filename"] for f in _json(world, "corp-alone")["files"]] == [
        "corp_alone-1.0-py3-none-any.whl"]
    world.proxy.page_mode = FAIL
    try:
        assert [f["filename"] for f in _json(world, "corp-down")["files"]] == [
            "corp_down-1.0-py3-none-any.whl"]
    finally:
        world.proxy.page_mode = PASS


def test_project_quarantined_upstream_serves_no_files(world: World) -> None:
    name = next(n for n in world.wheels if n.startswith("quar_pkg"))
    url = world.mirror.url(f"/packages/quar-pkg/{name}")
    assert get(url).status == 200  # cached now
    upstream_config = world.upstream.log.parent / "pypid.toml"
    assert cli.main(["status", "--config", str(upstream_config), "quar-pkg", "quarantined",
                     "--reason", "malware"]) == 0
    deadline = time.monotonic() + 10  # the upstream server shows it within two seconds
    page = _json(world, "quar-pkg")
    while page["files"] and time.monotonic() < deadline:
        time.sleep(0.2)
        page = _json(world, "quar-pkg")
    assert page["files"] == []
    assert page["project-status"] == {"status": "quarantined", "reason": "malware"}
    assert get(url).status == 404


def test_cooldown_hides_young_files_unless_exempt(world: World) -> None:
    files = [f["filename"] for f in _json(world, "fresh-pkg")["files"]]
    assert files == ["fresh_pkg-1.0-py3-none-any.whl"]
    refused = get(world.mirror.url("/packages/fresh-pkg/fresh_pkg-2.0-py3-none-any.whl"))
    assert refused.status == 403 and "min_age_days" in refused.text
    assert [f["filename"] for f in _json(world, "exempt-pkg")["files"]] == [
        "exempt_pkg-2.0-py3-none-any.whl"]


def test_index_lists_mirrored_projects(world: World) -> None:
    _json(world, "mirrored-app")
    deadline = time.monotonic() + 5  # the list is rescanned once a second
    names: set[str] = set()
    while time.monotonic() < deadline and "mirrored-app" not in names:
        names = {p["name"] for p in get(world.mirror.url("/simple/"),
                                        Accept=JSON_TYPE).json()["projects"]}
        time.sleep(0.2)
    assert {"mirrored-app", "private-name", "corp-merged"} <= names


@pytest.mark.parametrize("mode", [DROP, CORRUPT])
def test_bad_download_is_never_kept_or_sent_whole(world: World, mode: str) -> None:
    project = "drop-pkg" if mode == DROP else "corrupt-pkg"
    name = next(n for n in world.wheels if n.startswith(project.replace("-", "_")))
    _json(world, project)
    world.proxy.mode = mode
    try:
        try:
            resp = request(world.mirror.url(f"/packages/{project}/{name}"), timeout=20)
            assert resp.status == 502 or resp.body != world.wheels[name]
        except (OSError, http.client.IncompleteRead):
            pass  # cut before the end: what DESIGN asks once bytes were sent
    finally:
        world.proxy.mode = PASS
    assert not (world.cache / "files" / project / name).exists()
    assert not [p for p in (world.cache / "files" / project).iterdir()]
    assert "nothing kept" in world.mirror.log_text()
    again = get(world.mirror.url(f"/packages/{project}/{name}"))
    assert again.status == 200 and again.body == world.wheels[name]


def test_upstream_failing_serves_the_stale_page(world: World) -> None:
    before = _json(world, "stale-pkg")
    for mode in (FAIL, HANG):
        world.proxy.page_mode = mode
        try:
            assert _json(world, "stale-pkg")["files"] == before["files"]
        finally:
            world.proxy.page_mode = PASS
    assert "serving the cached page of stale-pkg" in world.mirror.log_text()


def test_uncached_with_upstream_down_is_502_or_504(world: World) -> None:
    world.proxy.page_mode = FAIL
    try:
        resp = get(world.mirror.url("/simple/hang-pkg/"))
        assert resp.status == 502 and len(resp.text.splitlines()) == 1
    finally:
        world.proxy.page_mode = PASS
    world.proxy.page_mode = HANG
    hung: list[int] = []
    try:
        asker = threading.Thread(target=lambda: hung.append(
            request(world.mirror.url("/simple/gone-pkg/"), timeout=30).status))
        asker.start()
        while not world.proxy.requests["/simple/gone-pkg/"] and asker.is_alive():
            time.sleep(0.05)  # until upstream holds the request
        # Meanwhile local pages, and mirrored pages in memory, are answered.
        assert get(world.mirror.url("/simple/private-name/")).status == 200
        assert get(world.mirror.url("/health")).status == 200
        asker.join(timeout=30)
    finally:
        world.proxy.page_mode = PASS
    assert hung == [504]
    health = get(world.mirror.url("/health")).json()
    assert set(health["upstream"]) == {"reachable", "last_success"}
    assert health["upstream"]["last_success"] is not None


def test_unknown_upstream_is_404(world: World) -> None:
    assert get(world.mirror.url("/simple/no-such-project/")).status == 404


def test_upstream_with_html_only(world: World) -> None:
    world.proxy.html_only = True
    try:
        page = _json(world, "mirrored-app")
    finally:
        world.proxy.html_only = False
    (only,) = page["files"]
    assert only["filename"] == "mirrored_app-1.0-py3-none-any.whl"
    assert only["url"] == "../../packages/mirrored-app/mirrored_app-1.0-py3-none-any.whl"
    assert only["core-metadata"]["sha256"] and only["size"] > 0


def test_mirror_add_list_prune(world: World, tmp_path: Path,
                               capsys: pytest.CaptureFixture[str]) -> None:
    cfg = tmp_path / "pypid.toml"
    cfg.write_text(f'[upstream]\nmode = "cache"\nurl = "{world.proxy.url()}"\n'
                   f'cache_root = "{world.cache}"\nfile_hosts = []\ncache_max_gb = 1\n')
    sdist = next(n for n in world.wheels if n.startswith("mirrored_lib-1.1") and
                 n.endswith(".tar.gz"))
    wheel = next(n for n in world.wheels if n.startswith("mirrored_lib-1.1") and
                 n.endswith(".whl"))
    digest = hashlib.sha256(world.wheels[wheel]).hexdigest()
    reqs = tmp_path / "requirements.txt"
    reqs.write_text(f"# pinned\nmirrored-lib==1.1 \\\n    --hash=sha256:{digest}\n")
    assert cli.main(["mirror", "add", "--config", str(cfg), "-r", str(reqs)]) == 0
    assert f"{wheel}: " in capsys.readouterr().out
    assert not (world.cache / "files" / "mirrored-lib" / sdist).exists()  # not in the hashes
    assert (world.cache / "files" / "mirrored-lib" / (wheel + ".metadata")).exists()
    assert cli.main(["mirror", "add", "--config", str(cfg), "mirrored-app==1.0"]) == 0
    assert cli.main(["mirror", "add", "--config", str(cfg), "mirrored-app>=1"]) == 2
    assert cli.main(["mirror", "add", "--config", str(cfg), "mirrored-app==7"]) == 1
    capsys.readouterr()
    assert cli.main(["mirror", "list", "--config", str(cfg)]) == 0
    lines = {line.split()[0]: line.split() for line in capsys.readouterr().out.splitlines()}
    assert lines[wheel][2] == "pinned" and lines["mirrored_app-1.0-py3-none-any.whl"][2] == (
        "pinned")
    assert int(lines[wheel][1]) >= len(world.wheels[wheel])
    assert lines["mirrored_lib-1.0-py3-none-any.whl"][2] == "cached"
    assert cli.main(["mirror", "prune", "--config", str(cfg)]) == 0
    assert "0 files evicted" in capsys.readouterr().out


def test_pip_and_uv_install_through_the_mirror_then_offline(world: World, tmp_path: Path) -> None:
    index = world.mirror.index_url
    pip = client_tool("pip")
    run_client([pip, "install", "--no-cache-dir", "--index-url", index,
                "--target", str(tmp_path / "pip"), "mirrored-app", "private-name"], tmp_path)
    assert installed_versions(tmp_path / "pip") == {  # never upstream's private-name 9.0
        "mirrored-app": "1.0", "mirrored-lib": "1.1", "private-name": "1.0"}
    uv = client_tool("uv")
    run_client([uv, "pip", "install", "--index-url", index, "--target",
                str(tmp_path / "uv"), "mirrored-app"], tmp_path)
    assert installed_versions(tmp_path / "uv")["mirrored-app"] == "1.0"
    project = tmp_path / "proj"
    project.mkdir()
    (project / "pyproject.toml").write_text(
        '[project]\nname = "proj"\nversion = "0"\nrequires-python = ">=3.8"\n'
        'dependencies = ["mirrored-app"]\n[tool.uv]\npackage = false\n')
    uv_index = {"UV_DEFAULT_INDEX": index}
    run_client([uv, "lock"], tmp_path, env=uv_index, cwd=project)
    assert "mirrored-lib" in (project / "uv.lock").read_text()
    cfg = tmp_path / "pypid.toml"
    cfg.write_text(f'[upstream]\nmode = "cache"\nurl = "{world.proxy.url()}"\n'
                   f'cache_root = "{world.cache}"\nfile_hosts = []\n')
    assert cli.main(["mirror", "add", "--config", str(cfg), "--lock",
                     str(project / "uv.lock")]) == 0
    world.proxy.close()  # upstream gone: connections refused; the cache serves
    stop(world.upstream.proc)
    run_client([pip, "install", "--no-cache-dir", "--index-url", index,
                "--target", str(tmp_path / "pip2"), "mirrored-app"], tmp_path)
    run_client([uv, "pip", "install", "--no-cache", "--index-url", index, "--target",
                str(tmp_path / "uv2"), "mirrored-app"], tmp_path)
    assert installed_versions(tmp_path / "pip2") == {"mirrored-app": "1.0", "mirrored-lib": "1.1"}
    assert installed_versions(tmp_path / "uv2")["mirrored-lib"] == "1.1"
    run_client([uv, "sync", "--locked", "--no-cache"], tmp_path, env=uv_index, cwd=project)
    site = next((project / ".venv").glob("lib/python*/site-packages"))
    assert installed_versions(site)["mirrored-lib"] == "1.1"
    health = get(world.mirror.url("/health")).json()["upstream"]
    assert health["reachable"] is False and health["last_success"]


def test_offline_lists_only_what_the_cache_holds(world: World, tmp_path: Path) -> None:
    offline = start_server(tmp_path / "offline", world.mirror.root, upstream="cache", settings={
        "upstream": {"url": "http://127.0.0.1:9/simple/", "cache_root": str(world.cache),
                     "offline": True}})
    STARTED.append(offline)
    try:
        files = [f["filename"] for f in get(offline.url("/simple/mirrored-lib/"),
                                            Accept=JSON_TYPE).json()["files"]]
        cached = sorted(p.name for p in (world.cache / "files" / "mirrored-lib").iterdir()
                        if not p.name.endswith(".metadata"))
        assert sorted(files) == cached
        run_client([client_tool("pip"), "install", "--no-cache-dir", "--index-url",
                    offline.index_url, "--target", str(tmp_path / "t"), "mirrored-app"],
                   tmp_path)
        assert get(offline.url("/simple/never-seen/")).status == 502
    finally:
        stop(offline.proc)
