"""Every worker's counts on disk, summed: the totals of the whole server.

Each worker writes its counts about once a second (and when it stops) to its own
file in the metrics folder, replaced atomically. When a worker is gone (stopped,
replaced on a reload, or killed), the master folds its last file into
``retired.json`` and removes it, so its counts stay in the sum. The reader skips a
file that ``retired.json`` names as folded in already: no moment counts one twice.
"""

from __future__ import annotations

import json
import logging
import os
import threading
import time
from pathlib import Path

from pypid.metrics import tally
from pypid.metrics.tally import Counts

log = logging.getLogger("pypid.metrics")

FLUSH_EVERY = 1.0  # seconds between two writes of a worker's counts
RETIRED = "retired.json"
_PREFIX = "worker-"


def _encode(counts: Counts) -> list[list[object]]:
    return [[*key, value] for key, value in counts.items()]


def _decode(rows: object) -> Counts:
    counts: Counts = {}
    if isinstance(rows, list):
        for row in rows:
            if isinstance(row, list) and len(row) >= 2 and isinstance(row[-1],
                                                                      (int, float, list)):
                counts[tuple(row[:-1])] = row[-1]
    return counts


def _write(path: Path, data: object) -> None:
    """Replace ``path`` atomically (a reader sees the old file or the new, whole)."""
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(json.dumps(data, separators=(",", ":")))
    os.replace(tmp, path)


def _read(path: Path) -> object:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None


class MetricsFolder:
    """The folder of the per-worker files (``<root>/.pypid/metrics``)."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def worker_file(self, pid: int) -> Path:
        return self.path / f"{_PREFIX}{pid}-{time.time_ns()}.json"

    def write(self, path: Path, counts: Counts) -> None:
        self.path.mkdir(parents=True, exist_ok=True)
        _write(path, _encode(counts))

    def read(self, own: Path | None = None, live: Counts | None = None) -> Counts:
        """The totals: retired workers, then every worker's file (``live`` for ``own``)."""
        retired = _read(self.path / RETIRED)
        absorbed: set[str] = set()
        total: Counts = {}
        if isinstance(retired, dict):
            absorbed = set(retired.get("absorbed", ()))
            tally.merge(total, _decode(retired.get("counts")))
        for path in self._worker_files():
            if path.name not in absorbed and path != own:
                tally.merge(total, _decode(_read(path)))
        if live is not None:
            tally.merge(total, live)
        return total

    def retire(self, pid: int | None = None) -> None:
        """Fold the files of worker ``pid`` (None: every worker's) into ``retired.json``.
        The master's job, one call at a time."""
        paths = [p for p in self._worker_files()
                 if pid is None or p.name.startswith(f"{_PREFIX}{pid}-")]
        if not paths:
            return
        retired = _read(self.path / RETIRED)
        retired = retired if isinstance(retired, dict) else {}
        counts = _decode(retired.get("counts"))
        present = {p.name for p in self._worker_files()}
        absorbed = [name for name in retired.get("absorbed", ()) if name in present]
        for path in paths:
            if path.name not in absorbed:
                tally.merge(counts, _decode(_read(path)))
                absorbed.append(path.name)
        try:
            _write(self.path / RETIRED, {"absorbed": absorbed, "counts": _encode(counts)})
            for path in paths:
                path.unlink(missing_ok=True)
        except OSError as exc:
            log.warning("cannot keep the counts of a stopped worker: %s", exc)

    def _worker_files(self) -> list[Path]:
        try:
            return [self.path / name for name in os.listdir(self.path)
                    if name.startswith(_PREFIX) and name.endswith(".json")]
        except OSError:
            return []


def folder_for(cache_dir: Path) -> MetricsFolder:
    """The metrics folder in a root's cache folder (``<root>/.pypid/metrics``)."""
    return MetricsFolder(cache_dir / "metrics")


class Flusher:
    """A worker's thread that writes its counts to its own file about once a second."""

    def __init__(self, folder: MetricsFolder) -> None:
        self.folder = folder
        self.file = folder.worker_file(os.getpid())
        self._stop = threading.Event()
        self._warned = False
        # One write at a time, each of a snapshot taken in turn: the periodic write and the
        # last one (stop) share the temp file, and an older snapshot must never land last.
        self._writing = threading.Lock()
        self._thread = threading.Thread(target=self._run, name="pypid-metrics", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.wait(FLUSH_EVERY):
            self.flush()

    def flush(self) -> None:
        try:
            with self._writing:
                self.folder.write(self.file, tally.snapshot())
        except OSError as exc:
            if not self._warned:  # once: a read-only root would say so every second
                self._warned = True
                log.warning("cannot write this worker's counts (/metrics shows only what "
                            "the worker asked has counted): %s", exc)

    def stop(self) -> None:
        """The last write: when the worker stops, nothing it counted is lost."""
        self._stop.set()
        self.flush()


_flusher: Flusher | None = None  # this process's, once it is a worker


def start_flushing(folder: MetricsFolder) -> Flusher:
    """Start this (worker) process's flusher; ``current()`` finds it."""
    global _flusher  # noqa: PLW0603 - one per process
    _flusher = Flusher(folder)
    _flusher.start()
    return _flusher


def current() -> Flusher | None:
    return _flusher
