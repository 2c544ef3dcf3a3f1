"""Fixtures of the real-server layer: the corpus, the shared server, other servers.

One shared server (upstream "off", no prefix) serves most tests; `server_factory` starts
others (url_prefix, upstream "redirect") once per session and config.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.integration.harness import STARTED, ServerPool, build_corpus
from tests.integration.helpers import Corpus, Server
from tests.integration.ui_site import SAVED, SCREENSHOTS, serve_site

LOG_TAIL_LINES = 40


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    if SAVED:
        terminalreporter.write_line(f"web UI screenshots ({len(SAVED)}): {SCREENSHOTS}")


def pytest_runtest_logreport(report: pytest.TestReport) -> None:
    """Show the tail of every running server's log under a failed test."""
    if not report.failed:
        return
    for srv in STARTED:
        tail = "\n".join(srv.log_text().splitlines()[-LOG_TAIL_LINES:])
        report.sections.append((f"pypid log {srv.log} (last {LOG_TAIL_LINES} lines)", tail))


@pytest.fixture(scope="session")
def corpus(tmp_path_factory: pytest.TempPathFactory) -> Corpus:
    return build_corpus(tmp_path_factory.mktemp("packages"))


@pytest.fixture(scope="session")
def server_factory(
    tmp_path_factory: pytest.TempPathFactory, corpus: Corpus
) -> Iterator[ServerPool]:
    """server_factory(url_prefix="", upstream="off") -> a Server on the corpus."""
    pool = ServerPool(tmp_path_factory, corpus)
    try:
        yield pool
    finally:
        pool.stop_all()


@pytest.fixture(scope="session")
def server(server_factory: ServerPool) -> Server:
    """The shared server: no prefix, upstream off."""
    return server_factory()


@pytest.fixture(scope="module")
def ui_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    """A server on the web UI's own site (tests/integration/ui_site.py)."""
    yield from serve_site(tmp_path_factory)
