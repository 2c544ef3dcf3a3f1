"""A page rendered in a forked child: the same bytes, and the page made here whenever the
child cannot give them (it fails, or takes too long: it is killed and reaped)."""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from pypid.simple import apart
from pypid.simple.pagecache import PageCache

PARENT = os.getpid()


def test_the_child_renders_the_same_bytes() -> None:
    big = b"<a>project</a>\n" * 200_000  # more than a pipe holds: read while written
    made_in: list[int] = []

    def make() -> bytes:
        made_in.append(os.getpid())
        return big

    assert apart.rendered_apart(make) == big
    assert made_in == []  # made in the child: this process's list never grew


def test_a_failing_child_means_rendering_here(caplog: pytest.LogCaptureFixture) -> None:
    def make() -> bytes:
        if os.getpid() != PARENT:
            raise RuntimeError("broken in the child")
        return b"made here"

    assert apart.rendered_apart(make) == b"made here"
    assert "failed" in caplog.text


def test_a_slow_child_is_killed_and_reaped(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(apart, "TIMEOUT", 0.3)

    def make() -> bytes:
        if os.getpid() != PARENT:
            time.sleep(60)
        return b"made here"

    before = children()
    assert apart.rendered_apart(make) == b"made here"
    assert children() == before  # no child left behind, not even a zombie


def children() -> set[int]:
    pid = os.getpid()
    return {int(p) for p in Path(f"/proc/{pid}/task/{pid}/children").read_text().split()}


class _Index:
    """As much of an index as ``project_list`` asks: a long list, sealed files."""

    projects_serial = 7
    sealed = True

    def project_count(self) -> int:
        return apart.APART_FROM


def test_the_loop_hands_a_list_to_make_apart_to_a_thread_and_threads_fork_once(
        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(apart.pep691, "index_page", lambda index: None)
    monkeypatch.setattr(apart, "render", lambda media, data: b"the list")
    forks: list[int] = []

    def rendered(make: Callable[[], bytes]) -> bytes:
        forks.append(1)
        time.sleep(0.2)  # long enough for every other thread to be waiting
        return make()

    monkeypatch.setattr(apart, "rendered_apart", rendered)
    pages, index = PageCache(), _Index()
    assert apart.project_list(pages, index, "text/html", may_block=False) is None  # type: ignore[arg-type]
    found: list[bytes] = []
    threads = [threading.Thread(target=lambda: found.append(apart.project_list(
        pages, index, "text/html", may_block=True).body)) for _ in range(4)]  # type: ignore[arg-type, union-attr]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert found == [b"the list"] * 4 and forks == [1]
    page = apart.project_list(pages, index, "text/html", may_block=False)  # type: ignore[arg-type]
    assert page is not None and page.body == b"the list"  # made: the loop answers it now
