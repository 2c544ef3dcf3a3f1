"""This process's counters: one plain dict per thread, so counting takes no lock and
loses nothing (a dict is only ever written by its own thread; ``snapshot`` copies).

Keys are small tuples whose first item names the metric (see ``exposition``); a value
is a number, or for a request ``("requests", route, method, status, bucket)`` the pair
``[count, seconds]`` (one dict lookup per request: the loop counts thousands a second).
A forked child starts from zero: its parent's counts are the parent's.
"""

from __future__ import annotations

import os
import threading
from bisect import bisect_left

Key = tuple[object, ...]
Value = float | list[float]
Counts = dict[Key, Value]

# Upper bounds (seconds) of the request duration histogram's buckets.
BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0,
           10.0, 30.0)
FIRST_BUCKET = BUCKETS[0]
METHODS = frozenset(("GET", "HEAD", "POST", "PUT", "DELETE", "PATCH", "OPTIONS"))
# Keys combined by the largest value (a time), not by the sum.
LATEST = "upstream_last_success"


class _Local(threading.local):
    def __init__(self) -> None:
        self.counts: Counts = {}
        with _tallies_lock:
            _tallies.append(self.counts)


_tallies: list[Counts] = []
_tallies_lock = threading.Lock()  # taken once per thread, at its first count
LOCAL = _Local()  # ``tally.LOCAL.counts``: the calling thread's dict (hot paths inline it)


def tally() -> Counts:
    """The calling thread's own counter dict (a hot loop keeps it at hand)."""
    return LOCAL.counts


def add(*key: object, amount: float = 1) -> None:
    """Count ``amount`` more under ``key`` (``add("login_failures")``)."""
    counts = LOCAL.counts
    counts[key] = counts.get(key, 0) + amount  # type: ignore[operator]


def latest(name: str, value: float) -> None:
    """Record a time of which only the latest counts (``LATEST``)."""
    counts = LOCAL.counts
    if value > counts.get((name,), 0):  # type: ignore[operator]
        counts[(name,)] = value


def bucket(seconds: float) -> int:
    """The histogram bucket of a duration: the index of the first bound it is within."""
    return 0 if seconds <= FIRST_BUCKET else bisect_left(BUCKETS, seconds)


def request(counts: Counts, route: str, method: str, status: int, seconds: float) -> None:
    """One answered request: its count by route, method and status, and its duration."""
    if method not in METHODS:
        method = "other"
    key = ("requests", route, method, status, bucket(seconds))
    entry = counts.get(key)
    if entry is None:
        counts[key] = [1, seconds]
    else:
        entry[0] += 1  # type: ignore[index]
        entry[1] += seconds  # type: ignore[index]


def snapshot() -> Counts:
    """Every thread's counts of this process, summed."""
    with _tallies_lock:
        tallies = list(_tallies)
    total: Counts = {}
    for counts in tallies:
        merge(total, counts.copy())  # copy(): one C call, safe while its thread counts
    return total


def merge(total: Counts, counts: Counts) -> None:
    """Add ``counts`` into ``total`` (the latest time for ``LATEST``)."""
    for key, value in counts.items():
        if isinstance(value, list):
            have = total.get(key)
            total[key] = (list(value) if not isinstance(have, list)
                          else [a + b for a, b in zip(have, value, strict=False)])
        elif key[0] == LATEST:
            total[key] = max(total.get(key, 0), value)  # type: ignore[type-var]
        else:
            total[key] = total.get(key, 0) + value  # type: ignore[operator]


def route_of(method: str, path: str) -> str:
    """The ``route`` label of a request for ``path`` (below any url_prefix).

    >>> [route_of("GET", p) for p in ("/simple/", "/simple/a/", "/packages/a-1.whl.metadata")]
    ['index', 'project', 'metadata']
    >>> route_of("POST", "/legacy/"), route_of("GET", "/project/a/"), route_of("GET", "/x")
    ('upload', 'ui', 'other')
    """
    if path.startswith("/simple/"):  # the most frequent first
        return "index" if len(path) == 8 else "project"
    if path.startswith("/packages/"):
        return "metadata" if path.endswith(".metadata") else "file"
    if method == "POST" and path in _UPLOAD_PATHS:
        return "upload"
    route = _EXACT.get(path)
    if route is None:
        route = "other"
        for start, name in _STARTS:
            if path.startswith(start):
                route = name
                break
    return route


_UPLOAD_PATHS = ("/", "/legacy", "/legacy/")
_EXACT = {"/simple": "index", "/": "ui", "/health": "health", "/metrics": "metrics"}
_STARTS = (("/simple", "project"), ("/projects/", "ui"), ("/project/", "ui"), ("/api/", "api"))


def _forget_after_fork() -> None:
    global LOCAL, _tallies, _tallies_lock  # noqa: PLW0603 - per process by nature
    _tallies = []
    _tallies_lock = threading.Lock()
    LOCAL = _Local()


os.register_at_fork(after_in_child=_forget_after_fork)
