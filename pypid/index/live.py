"""``Index``: the read model, loaded once and then followed in each process."""

from __future__ import annotations

import time

from pypid.cachedb import CacheDB
from pypid.index import loading
from pypid.index.follow import Follower
from pypid.index.follow_log import LogFollower
from pypid.index.model import Progress, ReadModel
from pypid.storage import Storage, UnavailableError


class Index(ReadModel):
    """Projects and files below one package root, kept current by a watcher thread (a
    remote root's: by following the event log)."""

    def __init__(self, root: Storage, cache: CacheDB | None = None) -> None:
        super().__init__(root, cache)
        self._follower: Follower | LogFollower = (LogFollower(self) if root.is_remote
                                                  else Follower(self))
        self.loaded_at = time.monotonic()
        self.loaded_scan: loading.Scan | None = None  # the root as the load found it

    def load(self, progress: Progress | None = None) -> None:
        """Scan the whole root; hash only what the cache does not already know. A bucket
        that cannot be reached: serve this node's cache until the follower can list it."""
        if isinstance(self._follower, LogFollower):
            try:
                self.loaded_scan = loading.load(self, progress)
            except UnavailableError as exc:
                loading.load_cached(self, str(exc))
                self._follower.list_when_back()
            else:
                self._follower.loaded()
        else:
            self.loaded_scan = loading.load(self, progress)
        self.loaded_at = time.monotonic()

    def start_watching(self, catch_up_first: bool = False) -> None:
        """Follow changes in this process from now on (once per process; cheap to repeat);
        with ``catch_up_first``, be current before returning (see ``Follower.start``)."""
        self._follower.start(catch_up_first, self.loaded_scan)

    def catch_up_now(self) -> None:
        """Remote files: apply the log's new lines now, so that a change decided here sees
        another node's upload of a moment ago (a local root's watcher is that quick)."""
        if isinstance(self._follower, LogFollower):
            self._follower.poll()

    def close(self) -> None:
        """Stop watching and drop this thread's cache connection."""
        self._follower.stop()
        self.cache.close()
        self.close_sealed()

    def _reset_after_fork(self) -> None:
        """... and the parent's watcher thread does not exist here."""
        super()._reset_after_fork()
        self._follower.forget_thread()
