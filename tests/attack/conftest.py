"""Servers for the attack suite: every action protected, one worker, alice's login.

One worker, so the failure limit and the peak RSS are those of one process. Each
test ends by checking the peak RSS of every server process and the watchdog.
"""

from __future__ import annotations

import base64
from collections.abc import Iterator

import pytest

from pypid.auth import Htpasswd
from tests.attack.harness import MAX_RSS, Guarded, start_guarded
from tests.builders import make_wheel

USER, PASSWORD = "alice", "Att4ck-pw-91c3"
PROTECT = ("upload", "download", "list")
GUARDED: list[Guarded] = []


def basic(user: str, password: str) -> dict[str, str]:
    token = base64.b64encode(f"{user}:{password}".encode()).decode()
    return {"Authorization": f"Basic {token}"}


LOGIN = basic(USER, PASSWORD)


def _start(tmp: pytest.TempPathFactory, url_prefix: str = "") -> Guarded:
    work = tmp.mktemp("attack")
    root = work / "packages"
    root.mkdir()
    make_wheel(root, "demo", "1.0")
    Htpasswd(work / "htpasswd").add(USER, PASSWORD)
    settings = {"server": {"workers": 1},
                "auth": {"htpasswd": str(work / "htpasswd"), "protect": list(PROTECT)}}
    guarded = start_guarded(work, root, url_prefix=url_prefix, settings=settings)
    GUARDED.append(guarded)
    return guarded


@pytest.fixture(scope="package")
def target(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Guarded]:
    guarded = _start(tmp_path_factory)
    try:
        yield guarded
    finally:
        guarded.close()


@pytest.fixture(scope="package")
def prefixed(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Guarded]:
    guarded = _start(tmp_path_factory, url_prefix="/pypi")
    try:
        yield guarded
    finally:
        guarded.close()


@pytest.fixture(autouse=True)
def _within_limits() -> Iterator[None]:
    """After each test: no watchdog kill, and no server process past MAX_RSS; then the
    servers the test itself started are stopped (a test that forgets, or fails before
    its own close, would leave them running after pytest exits)."""
    before = len(GUARDED)
    try:
        yield
        for guarded in GUARDED:
            assert not guarded.breaches, guarded.breaches
            over = {pid: rss >> 20 for pid, rss in guarded.peak_rss().items() if rss > MAX_RSS}
            assert not over, f"peak RSS in MB over {MAX_RSS >> 20}: {over}"
    finally:
        for guarded in GUARDED[before:]:
            guarded.close()
        del GUARDED[before:]


def pytest_runtest_logreport(report: pytest.TestReport) -> None:
    if report.failed:
        for guarded in GUARDED:
            tail = "\n".join(guarded.server.log_text().splitlines()[-30:])
            report.sections.append((f"pypid log {guarded.server.log}", tail))
