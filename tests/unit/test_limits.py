"""raise_open_files_limit: soft up to hard, a warning when that is still too few."""

from __future__ import annotations

import resource
from pathlib import Path

import pytest

from pypid import limits


@pytest.fixture
def rlimit(monkeypatch: pytest.MonkeyPatch) -> list[tuple[int, int]]:
    """A fake RLIMIT_NOFILE: [(soft, hard)], updated by setrlimit."""
    state = [(1024, 4096)]

    def setrlimit(which: int, value: tuple[int, int]) -> None:
        assert which == resource.RLIMIT_NOFILE
        if state[0][1] != resource.RLIM_INFINITY and value[0] > state[0][1]:
            raise ValueError("not allowed to raise maximum limit")
        state[0] = value

    monkeypatch.setattr(resource, "getrlimit", lambda which: state[0])
    monkeypatch.setattr(resource, "setrlimit", setrlimit)
    return state


def test_soft_limit_goes_up_to_the_hard_one(rlimit: list[tuple[int, int]]) -> None:
    assert limits.raise_open_files_limit() == 4096
    assert rlimit == [(4096, 4096)]


def test_unlimited_hard_limit_stops_at_nr_open(rlimit: list[tuple[int, int]]) -> None:
    rlimit[0] = (1024, resource.RLIM_INFINITY)
    assert limits.raise_open_files_limit() == 1 << 20


def test_too_few_is_a_warning(rlimit: list[tuple[int, int]],
                              caplog: pytest.LogCaptureFixture) -> None:
    rlimit[0] = (256, 512)
    assert limits.raise_open_files_limit() == 512
    assert "only 512 open files allowed per process" in caplog.text


def test_unit_files_set_the_same_limit() -> None:
    root = Path(limits.__file__).resolve().parents[1]
    texts = [(root / path).read_text() for path in
             ("packaging/systemd/pypid.service", "debian/pypid.service")]
    assert texts[0] == texts[1]
    assert "\nLimitNOFILE=16384\n" in texts[0]
