"""The few figures the systemd STATUS line shows: requests per second over the last
minute and uploads stored today (UTC), from the whole server's totals."""

from __future__ import annotations

import json
import os
import time
from collections import deque
from collections.abc import Callable

from pypid.metrics.store import MetricsFolder
from pypid.metrics.tally import Counts

WINDOW = 60.0  # seconds the request rate is taken over
DAY_FILE = "day.json"  # today's date and the stored uploads counted before it began


class Pulse:
    """Kept by the master; ``line()`` reads the totals (a few small files) each call."""

    def __init__(self, folder: MetricsFolder, clock: Callable[[], float] = time.time) -> None:
        self.folder = folder
        self.clock = clock
        self._samples: deque[tuple[float, float]] = deque()  # (time, requests so far)

    def line(self) -> str:
        """``12.5 req/s (1 min), 3 uploads today``: ASCII, short."""
        now = self.clock()
        counts = self.folder.read()
        done = sum(v[0] for k, v in counts.items() if k[0] == "requests" and isinstance(v, list))
        self._samples.append((now, done))
        while len(self._samples) > 1 and now - self._samples[0][0] > WINDOW:
            self._samples.popleft()
        first_time, first_done = self._samples[0]
        rate = (done - first_done) / (now - first_time) if now > first_time else 0.0
        uploads = self._uploads_today(counts, now)
        return f"{rate:.1f} req/s (1 min), {uploads} upload{'' if uploads == 1 else 's'} today"

    def _uploads_today(self, counts: Counts, now: float) -> int:
        value = counts.get(("uploads", "stored"), 0)
        stored = int(value) if isinstance(value, (int, float)) else 0
        today = time.strftime("%Y-%m-%d", time.gmtime(now))
        path = self.folder.path / DAY_FILE
        try:
            day = json.loads(path.read_text())
            if day.get("day") == today:
                return max(0, stored - int(day.get("stored", 0)))
        except (OSError, ValueError, TypeError, AttributeError):
            pass
        try:  # a new day (or the first count): uploads from now on are today's
            self.folder.path.mkdir(parents=True, exist_ok=True)
            tmp = path.with_name(f".{DAY_FILE}.tmp")
            tmp.write_text(json.dumps({"day": today, "stored": stored}))
            os.replace(tmp, path)
        except OSError:
            pass
        return 0
