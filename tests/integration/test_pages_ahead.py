"""The project pages rendered ahead after the workers start (``pypid.simple.ahead``), in a
real server: served before and after, adopted by each worker, and no extra child of the
master (tools count its children as workers)."""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path

from tests.builders import make_sdist, make_wheel
from tests.integration.harness import start_server, stop
from tests.integration.helpers import get, worker_pids

PROJECTS = 30
JSON = "application/vnd.pypi.simple.v1+json"


def mapped_tables(pid: int, root: Path) -> list[str]:
    """The deleted files in the cache folder ``pid`` maps shared (the adopted table)."""
    cache = str(root / ".pypid") + "/"
    return [line for line in Path(f"/proc/{pid}/maps").read_text().splitlines()
            if cache in line and line.endswith("(deleted)") and " r--s " in line]


def wait_for(check: object, what: str, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while not check():  # type: ignore[operator]
        assert time.monotonic() < deadline, what
        time.sleep(0.05)


def test_workers_adopt_the_pages_rendered_after_they_started(tmp_path: Path) -> None:
    root = tmp_path / "packages"
    root.mkdir()
    for number in range(PROJECTS):
        make_wheel(root, f"proj{number}", "1.0", requires_python=">=3.8")
        make_sdist(root, f"proj{number}", "1.1")
    srv = start_server(tmp_path / "work", root, settings={"server": {"workers": 2}})
    try:
        wait_for(lambda: f"rendered the pages of {PROJECTS} projects" in srv.log.read_text(),
                 "the renderer never said it was done")
        wait_for(lambda: len(worker_pids(srv)) >= 2, "two workers never ran")
        time.sleep(0.5)
        workers = worker_pids(srv)
        assert len(workers) == 2  # the renderer is nobody's child but init's
        pages = {}
        for number in range(PROJECTS):
            for accept in ("text/html", JSON):
                reply = get(srv.url(f"/simple/proj{number}/"), accept=accept)
                assert reply.status == 200, reply.describe()
                assert b"proj%d-1.1.tar.gz" % number in reply.body
                pages[number, accept] = reply.body
        # Each worker, alone, answers from the table it maps, the same bytes.
        for worker in workers:
            others = [pid for pid in workers if pid != worker]
            for pid in others:
                os.kill(pid, signal.SIGSTOP)
            try:
                for (number, accept), body in pages.items():
                    assert get(srv.url(f"/simple/proj{number}/"), accept=accept).body == body
            finally:
                for pid in others:
                    os.kill(pid, signal.SIGCONT)
            assert mapped_tables(worker, root), f"worker {worker} did not adopt the table"
        # A change after the render: the worker renders that page again.
        make_wheel(root, "proj3", "2.0")
        wait_for(lambda: b"proj3-2.0-py3-none-any.whl" in get(srv.url("/simple/proj3/")).body,
                 "the new file never showed")
        assert get(srv.url("/simple/proj4/")).body == pages[4, "text/html"]
    finally:
        stop(srv.proc)
