"""A page rendered in a forked child: the same bytes, and the page made here whenever the
child cannot give them (it fails, or takes too long: it is killed and reaped)."""

from __future__ import annotations

import os
import time
from pathlib import Path

import pytest

from pypid.simple import apart

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
