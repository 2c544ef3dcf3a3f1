"""The metrics' parts without a server: counting per thread, the folder of worker files
(a retired worker's counts kept, never twice), the text format (parsed back with
prometheus_client's parser) and the STATUS line's figures."""

from __future__ import annotations

import json
import threading
import uuid
from pathlib import Path

import pytest

from pypid.metrics import exposition, tally
from pypid.metrics.pulse import Pulse
from pypid.metrics.store import RETIRED, Flusher, MetricsFolder

parser = pytest.importorskip("prometheus_client.parser")


def test_threads_count_without_losing_any() -> None:
    before = tally.snapshot().get(("test_counter",), 0)

    def count() -> None:
        for _ in range(10_000):
            tally.add("test_counter")

    threads = [threading.Thread(target=count) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=30)
    assert tally.snapshot()[("test_counter",)] - before == 40_000


@pytest.mark.parametrize(("method", "path", "route"), [
    ("GET", "/simple/", "index"), ("GET", "/simple", "index"), ("GET", "/simple/a/", "project"),
    ("GET", "/packages/a-1.0-py3-none-any.whl", "file"),
    ("GET", "/packages/a-1.0-py3-none-any.whl.metadata", "metadata"),
    ("POST", "/", "upload"), ("POST", "/legacy/", "upload"), ("GET", "/", "ui"),
    ("GET", "/projects/", "ui"), ("GET", "/project/a/1.0/", "ui"),
    ("DELETE", "/api/v1/files/a.whl", "api"), ("GET", "/health", "health"),
    ("GET", "/metrics", "metrics"), ("GET", "/robots.txt", "other"), ("POST", "/x", "other"),
], ids=str)
def test_route_of(method: str, path: str, route: str) -> None:
    assert tally.route_of(method, path) == route


def test_a_retired_worker_counts_once(tmp_path: Path) -> None:
    folder = MetricsFolder(tmp_path)
    one, two = folder.worker_file(101), folder.worker_file(202)
    folder.write(one, {("uploads", "stored"): 2, ("upstream_last_success",): 50.0})
    folder.write(two, {("uploads", "stored"): 3, ("upstream_last_success",): 70.0})
    assert folder.read() == {("uploads", "stored"): 5, ("upstream_last_success",): 70.0}
    folder.retire(101)
    assert not one.exists() and (tmp_path / RETIRED).exists()
    assert folder.read()[("uploads", "stored")] == 5
    # A reader between the write of retired.json and the unlink sees the file skipped.
    folder.write(one, {("uploads", "stored"): 2})
    assert folder.read()[("uploads", "stored")] == 5
    one.unlink()
    folder.retire(202)
    folder.retire()  # nothing left: nothing changes
    assert folder.read() == {("uploads", "stored"): 5, ("upstream_last_success",): 70.0}
    # Its own file is replaced by the live counts of the process reading.
    three = folder.worker_file(303)
    folder.write(three, {("uploads", "stored"): 1})
    assert folder.read(three, {("uploads", "stored"): 4})[("uploads", "stored")] == 9


def test_the_text_format_parses_back() -> None:
    counts: tally.Counts = {}
    tally.request(counts, "project", "GET", 200, 0.003)
    tally.request(counts, "project", "GET", 200, 0.2)
    tally.request(counts, "upload", "BREW", 400, 99.0)
    counts[("uploads", "stored")] = 2
    text = exposition.render(counts, {"projects": 3, "files": 7, "stored_bytes": 1234}, "1.2.3")
    families = {f.name: f for f in parser.text_string_to_metric_families(text)}
    samples = {(s.name, tuple(sorted(s.labels.items()))): s.value
               for f in families.values() for s in f.samples}
    assert families["pypid_http_requests"].type == "counter"
    assert families["pypid_http_request_duration_seconds"].type == "histogram"
    assert families["pypid_projects"].type == "gauge"
    assert samples[("pypid_http_requests_total", (("method", "GET"), ("route", "project"),
                                                  ("status", "200")))] == 2
    assert samples[("pypid_http_requests_total", (("method", "other"), ("route", "upload"),
                                                  ("status", "400")))] == 1
    bucket = "pypid_http_request_duration_seconds_bucket"
    assert samples[(bucket, (("le", "0.005"), ("route", "project")))] == 1
    assert samples[(bucket, (("le", "0.25"), ("route", "project")))] == 2
    assert samples[(bucket, (("le", "30.0"), ("route", "upload")))] == 0
    assert samples[(bucket, (("le", "+Inf"), ("route", "upload")))] == 1
    assert samples[("pypid_uploads_total", (("result", "stored"),))] == 2
    assert samples[("pypid_uploads_total", (("result", "forbidden"),))] == 0
    assert samples[("pypid_stored_bytes", ())] == 1234
    assert samples[("pypid_build_info", (("version", "1.2.3"),))] == 1
    for name in ("pypid_upload_bytes", "pypid_login_failures", "pypid_page_cache_hits",
                 "pypid_page_cache_misses", "pypid_upstream_requests",
                 "pypid_cooldown_hidden_files", "pypid_upstream_last_success_timestamp_seconds",
                 "pypid_files"):
        assert name in families


def test_status_figures(tmp_path: Path) -> None:
    now = [86400.0 * 20000 + 3600]
    folder = MetricsFolder(tmp_path)
    pulse = Pulse(folder, clock=lambda: now[0])
    worker = folder.worker_file(1)
    folder.write(worker, {("requests", "project", "GET", 200, 0): [100, 0.1],
                          ("uploads", "stored"): 4})
    assert pulse.line() == "0.0 req/s (1 min), 0 uploads today"
    now[0] += 30
    folder.write(worker, {("requests", "project", "GET", 200, 0): [400, 0.4],
                          ("uploads", "stored"): 5})
    assert pulse.line() == "10.0 req/s (1 min), 1 upload today"
    now[0] += 86400  # the next day: counted from its first line
    assert pulse.line().endswith(", 0 uploads today")
    assert pulse.line().isascii()


def test_the_last_flush_holds_every_count(tmp_path: Path) -> None:
    """The worker's last write (stop) lands after a periodic write that was under way,
    never before it: an older snapshot must not be what the file keeps."""
    entered, release = threading.Event(), threading.Event()

    class SlowFolder(MetricsFolder):
        def write(self, path: Path, counts: tally.Counts) -> None:
            if not entered.is_set():  # the periodic write: held mid-way
                entered.set()
                assert release.wait(10)
            super().write(path, counts)

    flusher = Flusher(SlowFolder(tmp_path / "metrics"))
    key = ("race", uuid.uuid4().hex)
    tally.add(*key)
    periodic = threading.Thread(target=flusher.flush)
    periodic.start()
    assert entered.wait(10)
    tally.add(*key)  # counted after the periodic snapshot
    last = threading.Thread(target=flusher.stop)
    last.start()
    last.join(0.2)  # it waits for the write under way (or, wrongly, lands first)
    assert last.is_alive()
    release.set()
    periodic.join(10)
    last.join(10)
    rows = json.loads(flusher.file.read_text())
    assert [row[-1] for row in rows if tuple(row[:-1]) == key] == [2]
