"""The totals in Prometheus' text format 0.0.4, with DESIGN.md's names, types and labels."""

from __future__ import annotations

from collections.abc import Mapping

from pypid.metrics.tally import BUCKETS, LATEST, Counts

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
UPLOAD_RESULTS = ("stored", "identical", "conflict", "rejected", "unauthorized", "forbidden")
UPSTREAM_RESULTS = ("ok", "not_modified", "error", "timeout")
# Counters without labels: (tally key, metric name, help).
_PLAIN = (
    ("upload_bytes", "pypid_upload_bytes_total", "Bytes of distribution files stored by uploads."),
    ("login_failures", "pypid_login_failures_total",
     "Logins refused for a wrong name or password."),
    ("page_cache_hits", "pypid_page_cache_hits_total", "Pages answered from the page cache."),
    ("page_cache_misses", "pypid_page_cache_misses_total", "Pages rendered anew."),
    ("cooldown_hidden", "pypid_cooldown_hidden_files_total",
     "Upstream files held back by the cooldown (upstream.min_age_days)."),
)


def number(value: float) -> str:
    """A sample value as Prometheus writes it.

    >>> number(3), number(2.0), number(0.25)
    ('3', '2', '0.25')
    """
    if isinstance(value, int) or value.is_integer():
        return str(int(value))
    return repr(value)


def _plain(counts: Counts, key: tuple[object, ...]) -> str:
    value = counts.get(key, 0)
    return number(value if isinstance(value, (int, float)) else 0)


def _labels(**labels: object) -> str:
    return "{" + ",".join(f'{name}="{value}"' for name, value in labels.items()) + "}"


def render(counts: Counts, gauges: Mapping[str, float], version: str) -> str:
    """The page: ``counts`` summed over every worker, ``gauges`` (``projects``, ``files``,
    ``stored_bytes``) as the index holds them now."""
    out: list[str] = []

    def family(name: str, kind: str, help_text: str) -> None:
        out.append(f"# HELP {name} {help_text}")
        out.append(f"# TYPE {name} {kind}")

    requests: dict[tuple[object, ...], float] = {}
    buckets: dict[tuple[object, int], float] = {}
    seconds: dict[object, float] = {}
    for key, value in counts.items():
        if key[0] == "requests" and isinstance(value, list):
            _, route, method, status, index = key
            requests[route, method, status] = requests.get((route, method, status), 0) + value[0]
            buckets[route, index] = buckets.get((route, index), 0) + value[0]  # type: ignore[index]
            seconds[route] = seconds.get(route, 0.0) + value[1]

    family("pypid_http_requests_total", "counter", "HTTP requests answered.")
    for (route, method, status), value in sorted(requests.items(), key=str):
        out.append("pypid_http_requests_total" + _labels(route=route, method=method,
                                                         status=status) + f" {number(value)}")

    family("pypid_http_request_duration_seconds", "histogram",
           "Time from reading a request to sending its answer (a file: its head).")
    for route in sorted(seconds, key=str):
        cumulative = 0.0
        for index, bound in enumerate((*BUCKETS, float("inf"))):
            cumulative += buckets.get((route, index), 0)
            le = "+Inf" if bound == float("inf") else repr(bound)
            out.append(f"pypid_http_request_duration_seconds_bucket"
                       f"{_labels(route=route, le=le)} {number(cumulative)}")
        out.append(f"pypid_http_request_duration_seconds_count{_labels(route=route)} "
                   f"{number(cumulative)}")
        out.append(f"pypid_http_request_duration_seconds_sum{_labels(route=route)} "
                   f"{number(seconds[route])}")

    family("pypid_uploads_total", "counter", "Uploads by result.")
    for result in UPLOAD_RESULTS:
        out.append(f"pypid_uploads_total{_labels(result=result)} "
                   f"{_plain(counts, ('uploads', result))}")

    for key, name, help_text in _PLAIN:
        family(name, "counter", help_text)
        out.append(f"{name} {_plain(counts, (key,))}")

    for key, help_text in (("projects", "Projects the index holds."),
                           ("files", "Distribution files the index holds."),
                           ("stored_bytes", "Bytes of the distribution files the index holds.")):
        family(f"pypid_{key}", "gauge", help_text)
        out.append(f"pypid_{key} {number(gauges.get(key, 0))}")

    family("pypid_upstream_requests_total", "counter", "Requests to the upstream index by result.")
    for result in UPSTREAM_RESULTS:
        out.append(f"pypid_upstream_requests_total{_labels(result=result)} "
                   f"{_plain(counts, ('upstream', result))}")
    family("pypid_upstream_last_success_timestamp_seconds", "gauge",
           "When upstream last answered (Unix time; 0: never).")
    out.append(f"pypid_upstream_last_success_timestamp_seconds {_plain(counts, (LATEST,))}")

    family("pypid_build_info", "gauge", "The running pypid version.")
    out.append(f"pypid_build_info{_labels(version=version)} 1")
    return "\n".join(out) + "\n"
