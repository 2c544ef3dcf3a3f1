"""Files copied into (or removed from) the package root by hand show without a restart."""

from __future__ import annotations

import os
import shutil
import signal
import time
from collections.abc import Callable
from functools import partial
from pathlib import Path
from typing import TypeVar

import pytest

from pypid.server import CATCH_UP_AFTER
from tests.builders import TAR_MTIME, make_sdist, make_wheel
from tests.integration.harness import start_server, stop
from tests.integration.helpers import (
    JSON_TYPE,
    Server,
    get,
    parse_page,
    sha256,
    wheel_metadata,
)

pytestmark = pytest.mark.server

# DESIGN.md: within 2 s; the extra half second covers the polling requests themselves.
LIVE_TIMEOUT = 2.5
STREAK = 12
T = TypeVar("T")


def listed(server: Server, project: str) -> dict[str, str] | None:
    """{filename: sha256} on the project's JSON page, None on 404."""
    resp = get(server.url(f"/simple/{project}/"), Accept=JSON_TYPE)
    if resp.status == 404:
        return None
    assert resp.status == 200, resp.describe()
    return {f["filename"]: f["hashes"]["sha256"] for f in resp.json()["files"]}


def listed_files(server: Server, project: str) -> set[str] | None:
    """Filenames on the project's JSON page, None on 404."""
    files = listed(server, project)
    return None if files is None else set(files)


def status(url: str, etag: str, accept: str = "*/*") -> int:
    """Status of a conditional GET with an old validator."""
    return get(url, Accept=accept, If_None_Match=etag).status


def listed_projects(server: Server) -> set[str]:
    page = parse_page(get(server.url("/simple/")).text)
    return {a.text.strip().lower() for a in page.anchors}


def converge(t0: float, probe: Callable[[], T], want: Callable[[T], bool]) -> None:
    """Poll until STREAK answers in a row are as wanted. Stale answers are fine until
    t0 + LIVE_TIMEOUT (each gunicorn worker notices on its own); any one after that fails.
    The streak makes it likely that every worker answered once."""
    streak = 0
    while streak < STREAK:
        seen = probe()
        if want(seen):
            streak += 1
            continue
        late = time.monotonic() - t0
        assert late < LIVE_TIMEOUT, f"still {seen!r} {late:.1f}s after the change"
        streak = 0
        time.sleep(0.02)


def test_hand_copied_files_appear_and_disappear(server: Server, tmp_path: Path) -> None:
    src = tmp_path / "src"
    top = make_wheel(src, "livepkg", "1.0")
    deep_whl = make_wheel(src, "livepkg", "1.1")
    deep_sdist = make_sdist(src, "livepkg", "1.1")
    deep = server.root / "by-hand" / "deeper"
    copies = [server.root / top.name, deep / deep_whl.name, deep / deep_sdist.name]
    files = partial(listed_files, server, "livepkg")
    # Ask first, so that a cached "not found" would show.
    assert files() is None
    root_etag = get(server.url("/simple/")).header("ETag") or ""
    try:
        deep.mkdir(parents=True)
        shutil.copy(top, copies[0])
        shutil.copy(deep_whl, copies[1])
        shutil.copy(deep_sdist, copies[2])
        # As `rsync -t` or `cp -p` leave it: an mtime long before the index started.
        os.utime(copies[2], (TAR_MTIME, TAR_MTIME))
        t0 = time.monotonic()
        want = {top.name, deep_whl.name, deep_sdist.name}
        converge(t0, files, lambda seen: seen == want)
        converge(t0, partial(listed_projects, server), lambda seen: "livepkg" in seen)
        # A validator from before the change must not get a 304 (clients would keep stale pages).
        converge(t0, partial(status, server.url("/simple/"), root_etag), lambda st: st == 200)
        # The streaks above make it likely, not certain, that every worker has the file:
        # one still behind may say 404 until LIVE_TIMEOUT (a CI run met one).
        deep_url, deep_bytes = server.url(f"/packages/{deep_whl.name}"), deep_whl.read_bytes()
        converge(t0, lambda: get(deep_url), lambda r: (r.status, r.body) == (200, deep_bytes))

        # Replaced in place by hand (same name, other bytes): hash, metadata, validators follow.
        page_url, file_url = server.url("/simple/livepkg/"), server.url(f"/packages/{top.name}")
        page_etag = get(page_url, Accept=JSON_TYPE).header("ETag") or ""
        file_etag = get(file_url).header("ETag") or ""
        other = make_wheel(src / "other", "livepkg", "1.0", payload=b"changed" * 100)
        shutil.copy(other, copies[0])
        t0 = time.monotonic()
        new_hash = sha256(other.read_bytes())
        converge(
            t0,
            partial(listed, server, "livepkg"),
            lambda s: isinstance(s, dict) and s.get(top.name) == new_hash,
        )
        meta_url = server.url(f"/packages/{top.name}.metadata")
        converge(t0, lambda: get(meta_url).body, lambda body: body == wheel_metadata(other))
        # A worker that has not caught up yet may answer 503 + Retry-After for the file.
        converge(t0, lambda: get(file_url).body, lambda body: body == other.read_bytes())
        converge(t0, partial(status, page_url, page_etag, JSON_TYPE), lambda st: st == 200)
        converge(t0, partial(status, file_url, file_etag), lambda st: st == 200)

        copies[1].unlink()
        t0 = time.monotonic()
        want = {top.name, deep_sdist.name}
        converge(t0, files, lambda seen: seen == want)
        assert get(server.url(f"/packages/{deep_whl.name}")).status == 404

        copies[0].unlink()
        copies[2].unlink()
        t0 = time.monotonic()
        converge(t0, files, lambda seen: seen is None)
        converge(t0, partial(listed_projects, server), lambda seen: "livepkg" not in seen)
    finally:
        for path in copies:
            path.unlink(missing_ok=True)


def test_a_worker_started_after_a_crash_is_current_before_it_answers(
        tmp_path_factory: pytest.TempPathFactory) -> None:
    """A replacement worker is forked from the master's snapshot of the start; it must
    not answer 404 (or send the name upstream) for a project added since."""
    work = tmp_path_factory.mktemp("crash")
    root = work / "packages"
    root.mkdir()
    make_wheel(root, "old", "1.0")
    srv = start_server(work, root, upstream="redirect", settings={"server": {"workers": 1}})
    try:
        time.sleep(CATCH_UP_AFTER + 0.5)  # later than a start: the new worker catches up first
        make_wheel(root, "brand-new", "1.0")
        deadline = time.monotonic() + LIVE_TIMEOUT
        while get(srv.url("/simple/brand-new/")).status != 200:  # 302 upstream until seen
            assert time.monotonic() < deadline, "the copied file never showed"
            time.sleep(0.05)
        worker = int(Path(f"/proc/{srv.proc.pid}/task/{srv.proc.pid}/children")
                     .read_text().split()[0])
        os.kill(worker, signal.SIGKILL)
        first = get(srv.url("/simple/brand-new/"))  # waits in the backlog for the new worker
        assert first.status == 200, first.describe()
    finally:
        stop(srv.proc)
