"""GET /metrics on a real server with two workers, parsed with prometheus_client's own
parser: the counters add up to what the test sent, also after a worker is killed and
after a reload; an address outside ``metrics.allow`` gets 403."""

from __future__ import annotations

import json
import os
import signal
import time
from collections import Counter
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from tests.builders import make_wheel
from tests.integration.harness import start_server, stop
from tests.integration.helpers import Server, get, worker_pids
from tests.integration.test_uploads import (
    PASSWORD,
    USER,
    WRONG_PASSWORD,
    UploadServer,
    add_user,
    basic,
    form_for,
    multipart,
    post,
    start_upload_server,
    upload,
    wait_listed,
)

parser = pytest.importorskip("prometheus_client.parser")

Samples = dict[tuple[str, tuple[tuple[str, str], ...]], float]
SETTLE = 15.0  # seconds the workers' files may take to show what was sent (about 1 s)


def scrape(srv: Server) -> Samples:
    resp = get(srv.url("/metrics"))
    assert resp.status == 200, resp.describe()
    assert resp.header("Content-Type") == "text/plain; version=0.0.4; charset=utf-8"
    samples: Samples = {}
    for family in parser.text_string_to_metric_families(resp.text):
        for sample in family.samples:
            samples[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return samples


def value(samples: Samples, name: str, **labels: str) -> float:
    return samples.get((name, tuple(sorted(labels.items()))), 0.0)


def requests(samples: Samples, route: str, status: str, method: str = "GET") -> float:
    return value(samples, "pypid_http_requests_total", route=route, method=method,
                 status=status)


def settles(srv: Server, check: Callable[[Samples], bool]) -> Samples:
    """Scrape until ``check`` holds (the workers flush about once a second)."""
    deadline = time.monotonic() + SETTLE
    while True:
        samples = scrape(srv)
        if check(samples) or time.monotonic() > deadline:
            return samples
        time.sleep(0.2)


def quiet(srv: Server) -> Samples:
    """The totals once every worker has flushed what it answered (two scrapes more than
    a flush apart agree, but for the scrapes themselves)."""
    def reads(samples: Samples) -> Samples:
        return {k: v for k, v in samples.items() if ("route", "metrics") not in k[1]
                and not k[0].startswith("pypid_http_request_duration")}

    last = scrape(srv)
    for _ in range(20):
        time.sleep(1.2)
        now = scrape(srv)
        if reads(now) == reads(last):
            return now
        last = now
    pytest.fail("the counts never settled")


def workers(srv: Server) -> set[int]:
    return set(worker_pids(srv))


def wait_for_workers(srv: Server, gone: set[int], count: int = 2) -> set[int]:
    """The worker PIDs once ``count`` workers run and none of ``gone`` is among them."""
    deadline = time.monotonic() + 30
    while True:
        now = workers(srv)
        if len(now) == count and not now & gone and get(srv.url("/health")).status == 200:
            return now
        assert time.monotonic() < deadline, f"workers {now}, waiting for {gone} to go"
        time.sleep(0.1)


def pages(srv: Server, count: int, seen: Counter[int]) -> None:
    """``count`` GETs of the project's page, each on its own connection, eight at a time
    (both workers take some); ``seen`` counts the answers by status (a worker that has
    just started may not list the project yet: 404)."""
    with ThreadPoolExecutor(8) as pool:
        statuses = list(pool.map(lambda _: get(srv.url("/simple/up/")).status, range(count)))
    assert set(statuses) <= {200, 404}
    seen.update(statuses)


@pytest.fixture(scope="module")
def up(tmp_path_factory: pytest.TempPathFactory) -> Iterator[UploadServer]:
    srv = start_upload_server(tmp_path_factory.mktemp("metrics"))
    try:
        add_user(srv.cfg, "bob", PASSWORD)
        yield srv
    finally:
        stop(srv.server.proc)


def test_counters_add_up_across_workers_kills_and_reloads(
        up: UploadServer, tmp_path: Path) -> None:
    srv = up.server
    first = make_wheel(tmp_path / "a", "up", "1.0")
    other = make_wheel(tmp_path / "b", "up", "1.0", payload=b"other bytes")
    assert first.name == other.name and first.read_bytes() != other.read_bytes()
    before = scrape(srv)

    # Uploads of every result, and the failed login among them.
    assert upload(srv, first, "up", "1.0").status == 200
    assert upload(srv, first, "up", "1.0").status == 200  # identical
    assert upload(srv, other, "up", "1.0").status == 409
    bad = form_for(first, "up", "1.0", sha256_digest="0" * 64)
    assert post(srv, multipart(bad, (first.name.encode(), first.read_bytes()))).status == 400
    assert upload(srv, first, "up", "1.0", auth=basic(USER, WRONG_PASSWORD)).status == 401
    assert upload(srv, first, "up", "1.0", auth=basic("bob", PASSWORD)).status == 403
    wait_listed(srv, "up", {first.name})  # by every worker, so the reads below find it
    reads = quiet(srv)
    seen: Counter[int] = Counter()
    pages(srv, 200, seen)
    for _ in range(5):
        assert get(srv.url(f"/packages/{first.name}")).status == 200
    for _ in range(3):
        assert get(srv.url(f"/packages/{first.name}.metadata")).status == 200
    for _ in range(4):
        assert get(srv.url("/no/such/page")).status == 404
    for _ in range(2):
        assert get(srv.url("/simple/no-such-project/")).status == 404

    def grew(samples: Samples, base: Samples, route: str, status: str, by: float,
             method: str = "GET") -> bool:
        return requests(samples, route, status, method) - requests(base, route, status,
                                                                    method) == by

    expected_uploads = {"stored": 1, "identical": 1, "conflict": 1, "rejected": 1,
                        "unauthorized": 1, "forbidden": 1}

    def all_there(s: Samples) -> bool:
        return (grew(s, reads, "project", "200", seen[200])
                and grew(s, reads, "file", "200", 5) and grew(s, reads, "metadata", "200", 3)
                and grew(s, reads, "other", "404", 4)
                and grew(s, reads, "project", "404", 2 + seen[404])
                and all(value(s, "pypid_uploads_total", result=r)
                        - value(before, "pypid_uploads_total", result=r) == n
                        for r, n in expected_uploads.items()))

    after = settles(srv, all_there)
    assert all_there(after), (seen, before, after)
    assert grew(after, before, "upload", "200", 2, "POST")
    for status in ("409", "400", "401", "403"):
        assert grew(after, before, "upload", status, 1, "POST"), status
    assert value(after, "pypid_upload_bytes_total") - value(
        before, "pypid_upload_bytes_total") == first.stat().st_size
    assert value(after, "pypid_login_failures_total") - value(
        before, "pypid_login_failures_total") == 1
    assert value(after, "pypid_files") == 1 and value(after, "pypid_projects") == 1
    assert value(after, "pypid_stored_bytes") == first.stat().st_size
    assert value(after, "pypid_page_cache_hits_total") >= 190
    assert value(after, "pypid_build_info", version=get(srv.url("/health")).json()[
        "version"]) == 1
    # The histogram counts every request of its route.
    project = sum(v for (name, labels), v in after.items()
                  if name == "pypid_http_requests_total" and ("route", "project") in labels)
    assert value(after, "pypid_http_request_duration_seconds_count", route="project") == project
    assert value(after, "pypid_http_request_duration_seconds_bucket", route="project",
                 le="+Inf") == project
    # Both workers answered some of the pages (each writes its own counts).
    files = list((srv.root / ".pypid" / "metrics").glob("worker-*.json"))
    assert len(files) == 2
    for path in files:  # rows: [*key, value]; a request's value is [count, seconds]
        rows = json.loads(path.read_text())
        assert any(row[:2] == ["requests", "project"] and row[-1][0] > 0 for row in rows), path

    # A worker killed: its counts stay; its replacement counts on. What stays of a worker
    # killed is what its file held, up to a second behind what it answered; a scrape it
    # answered itself showed its live counts. So the base is taken once the files hold
    # everything (two scrapes a flush apart agree), not from ``after``.
    base = quiet(srv)
    killed = min(workers(srv))
    os.kill(killed, signal.SIGKILL)
    wait_for_workers(srv, {killed})
    seen.clear()
    pages(srv, 30, seen)
    after_kill = settles(srv, lambda s: grew(s, base, "project", "200", seen[200]))
    assert grew(after_kill, base, "project", "200", seen[200])
    assert value(after_kill, "pypid_uploads_total", result="stored") == value(
        after, "pypid_uploads_total", result="stored")

    # A reload replaces every worker: nothing counted is lost.
    old = workers(srv)
    os.kill(srv.proc.pid, signal.SIGHUP)
    wait_for_workers(srv, old)
    pages(srv, 30, seen)
    after_reload = settles(srv, lambda s: grew(s, base, "project", "200", seen[200]))
    assert grew(after_reload, base, "project", "200", seen[200])
    assert grew(after_reload, base, "project", "404", seen[404])
    assert grew(after_reload, reads, "file", "200", 5)
    for result, count in expected_uploads.items():
        assert value(after_reload, "pypid_uploads_total", result=result) - value(
            before, "pypid_uploads_total", result=result) == count


def test_an_address_not_allowed_gets_403(tmp_path: Path) -> None:
    """Only 192.0.2.0/24 may read it; 127.0.0.1 (the test) is a trusted proxy, so the
    client it names in X-Forwarded-For is the one that counts."""
    root = tmp_path / "packages"
    root.mkdir()
    srv = start_server(tmp_path, root, settings={"metrics": {"allow": ["192.0.2.0/24"]}})
    try:
        resp = get(srv.url("/metrics"))
        assert resp.status == 403, resp.describe()
        assert b"pypid_" not in resp.body
        assert get(srv.url("/metrics"), X_Forwarded_For="198.51.100.9").status == 403
        named = get(srv.url("/metrics"), X_Forwarded_For="192.0.2.7")
        assert named.status == 200 and b"pypid_build_info" in named.body
    finally:
        stop(srv.proc)
