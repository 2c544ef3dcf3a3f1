"""The mirror as the simple API uses it: pages kept fresh (or stale when upstream fails),
files through the cache, and the policies (cooldown, merge, quarantine) applied.

No HTTP answers here: ``pypid.simple.mirrored`` turns these results into Replies.
"""

from __future__ import annotations

import hashlib
import logging
import threading
import time
from collections import OrderedDict
from dataclasses import replace
from pathlib import Path
from typing import Any
from urllib.parse import quote

from pypid.config import UpstreamConfig
from pypid.growing import Follower
from pypid.mirror.fetch import Fetcher
from pypid.mirror.holdings import prune
from pypid.mirror.policy import Cooldown, merges
from pypid.mirror.store import MirrorStore, PageRecord
from pypid.mirror.translate import PageError, UpstreamFile, read_page
from pypid.mirror.upstream import ForeignRedirect, Upstream, UpstreamError, read_bounded
from pypid.storage import Shelf

log = logging.getLogger("pypid.mirror")

API_VERSION = "1.4"
RECORDS_KEPT = 1024  # pages held in memory per worker
RETRY_AFTER_FAILURE = 30.0  # seconds a stale page is served before upstream is asked again
RETRY_UNCACHED = 5.0  # seconds an uncached page's failure is repeated without asking again
METADATA_MAX_BYTES = 8 * 1024 * 1024
GB = 1024**3
PRUNE_EVERY = 60.0  # seconds: eviction walks the cache at most this often (per worker)


class Mirror:
    """Upstream through a cache, for one worker (threads share it); ``shelf``: the cache
    every node shares (the S3 bucket), between this node's and upstream."""

    def __init__(self, settings: UpstreamConfig, shelf: Shelf | None = None) -> None:
        root = Path(settings.cache_root)
        self.store = MirrorStore(root, shelf)
        self.upstream = Upstream(settings.url, timeout=settings.timeout,
                                 file_hosts=settings.file_hosts, state_dir=root)
        self.max_bytes = settings.cache_max_gb * GB
        self._pruned_at = -PRUNE_EVERY
        self.fetcher = Fetcher(self.upstream, self.store,
                               self._prune if self.max_bytes else None)
        self.cooldown = Cooldown(settings.min_age_days, settings.min_age_exempt)
        self.merge = settings.merge
        self.page_ttl = settings.page_ttl
        self.offline = settings.offline
        self._records: OrderedDict[str, PageRecord] = OrderedDict()
        self._retry_at: dict[str, float] = {}
        self._missing: dict[str, float] = {}  # projects upstream has not: until when to believe it
        self._failed: dict[str, tuple[float, UpstreamError]] = {}  # uncached, upstream failed
        self._locks: dict[str, threading.Lock] = {}
        self._lock = threading.Lock()

    def merges(self, project: str) -> bool:
        return bool(self.merge) and merges(project, self.merge)

    # -- pages

    def fresh(self, project: str) -> PageRecord | None:
        """The page from memory if it needs no upstream or disk work now, else None."""
        record = self._records.get(project)
        if record is not None and self._usable(project, record, time.time()):
            return record
        return None

    def record(self, project: str) -> PageRecord | None:
        """The page of ``project`` (blocking: disk, upstream); None when upstream has no
        such project. Raises UpstreamError when upstream fails and nothing is cached."""
        record = self._records.get(project)
        if record is None or not self._usable(project, record, time.time()):
            stored = self.store.load(project)  # another worker may have revalidated it
            if stored is not None and (record is None or stored.checked > record.checked):
                record = stored
        if record is not None and self._usable(project, record, time.time()):
            return self._remember(record)
        if self.offline:
            raise UpstreamError(f"{project} is not in the mirror's cache, and "
                                "upstream.offline is set")
        if record is None:
            if self._missing.get(project, 0.0) > time.time():
                return None
            failed = self._failed.get(project)
            if failed is not None and failed[0] > time.time():
                raise failed[1]
        with self._project_lock(project):
            latest = self._records.get(project)  # another thread may have just asked
            if latest is not None and self._usable(project, latest, time.time()):
                return latest
            return self._revalidate(project, latest or record)

    def _usable(self, project: str, record: PageRecord, now: float) -> bool:
        return (self.offline or now - record.checked < self.page_ttl
                or now < self._retry_at.get(project, 0.0))

    def _revalidate(self, project: str, record: PageRecord | None) -> PageRecord | None:
        try:
            try:
                fetched = self.upstream.page(project, record.etag if record else "",
                                             record.last_modified if record else "")
            except ForeignRedirect as exc:  # pypiserver's fallback: "not here, ask PyPI"
                log.info("mirror: %s: %s; taken as not upstream", project, exc)
                fetched = None
            if fetched is None or fetched.status == 404:
                self._forget(project)
                if len(self._missing) > 4 * RECORDS_KEPT:
                    self._missing.clear()
                self._missing[project] = time.time() + self.page_ttl
                return None
            now = time.time()
            if fetched.status == 304 and record is not None:
                record = replace(record, checked=now)
            else:
                page = read_page(fetched.body, fetched.header("Content-Type"), fetched.url,
                                 project, self.upstream.hosts)
                if page.refused:
                    log.warning("mirror: %s: refused %d of upstream's links, e.g. %s", project,
                                len(page.refused), page.refused[0])
                record = PageRecord(page, fetched.header("ETag"),
                                    fetched.header("Last-Modified"), now)
        except (UpstreamError, PageError) as exc:
            if isinstance(exc, PageError):
                log.warning("mirror: refused upstream's page of %s: %s", project, exc)
            if record is None:
                error = exc if isinstance(exc, UpstreamError) else UpstreamError(str(exc))
                if len(self._failed) > 4 * RECORDS_KEPT:
                    self._failed.clear()
                self._failed[project] = (time.time() + RETRY_UNCACHED, error)
                raise error from None
            log.warning("mirror: serving the cached page of %s: %s", project, exc)
            self._retry_at[project] = time.time() + RETRY_AFTER_FAILURE
            return self._remember(record)
        self._retry_at.pop(project, None)
        try:
            self.store.save(record)
        except OSError as exc:
            log.warning("mirror: cannot keep the page of %s: %s", project, exc)
        return self._remember(record)

    def _remember(self, record: PageRecord) -> PageRecord:
        with self._lock:
            self._records[record.page.project] = record
            self._records.move_to_end(record.page.project)
            while len(self._records) > RECORDS_KEPT:
                self._records.popitem(last=False)
        return record

    def _forget(self, project: str) -> None:
        """Upstream no longer has ``project``: drop its page (its files go with eviction)."""
        with self._lock:
            self._records.pop(project, None)
        self.store.remove(project)

    def _project_lock(self, project: str) -> threading.Lock:
        with self._lock:
            if len(self._locks) > 4 * RECORDS_KEPT:
                self._locks.clear()
            return self._locks.setdefault(project, threading.Lock())

    def page_dict(self, record: PageRecord, now: float) -> dict[str, Any]:
        """The PEP 691 page of a mirrored project, every link pointing at this server."""
        page = record.page
        status = {"status": page.status, "reason": page.reason} if page.reason else {
            "status": page.status}
        items = self.visible(record, now)
        return {"meta": {"api-version": API_VERSION}, "name": page.project,
                "project-status": status, "files": [file_dict(page.project, i) for i in items],
                "versions": list(dict.fromkeys(item.version for item in items))}

    def visible(self, record: PageRecord, now: float) -> list[UpstreamFile]:
        """The files a page lists: none of a quarantined project, none held back, and
        offline only those the cache holds (pip would pick an uncached newer one)."""
        if record.page.status == "quarantined":
            return []
        project = record.page.project
        cached = set(self.store.recent_files(project)) if self.offline else None
        return [item for item in record.page.files
                if (cached is None or item.filename in cached)
                and self.cooldown.refusal(project, item.version, item.upload_time, now) is None]

    # -- files

    def refusal(self, record: PageRecord, item: UpstreamFile) -> tuple[int, str] | None:
        """Why ``item`` is not served (status, reason), or None."""
        if record.page.status == "quarantined":
            return 404, f"{record.page.project} is quarantined upstream: its files are not served"
        why = self.cooldown.refusal(record.page.project, item.version, item.upload_time,
                                    time.time())
        return (403, why) if why else None

    def follow(self, path: Path, item: UpstreamFile) -> Follower | None:
        """Start or join the download of ``item`` into ``path``; None: it is cached."""
        if self.offline:
            raise UpstreamError(f"{item.filename} is not in the mirror's cache, and "
                                "upstream.offline is set")
        return self.fetcher.follow(path, item)

    def metadata(self, path: Path, item: UpstreamFile) -> bytes:
        """A wheel's METADATA (PEP 658): from the cache, or fetched, checked and kept."""
        try:
            return path.read_bytes()
        except FileNotFoundError:
            pass
        shared = self.store.shared_bytes(path)
        if shared is not None and hashlib.sha256(shared).hexdigest() == item.metadata_sha256:
            self.store.put_bytes(path, shared, share=False)
            return shared
        if self.offline:
            raise UpstreamError(f"the metadata of {item.filename} is not cached, and "
                                "upstream.offline is set")
        fetched = self.upstream.open(item.url + ".metadata")
        try:
            if fetched.status != 200:
                raise UpstreamError(f"upstream answered {fetched.status} for the metadata of "
                                    f"{item.filename}")
            data = read_bounded(fetched.response, METADATA_MAX_BYTES, self.upstream.timeout)
        finally:
            fetched.response.close()
        if hashlib.sha256(data).hexdigest() != item.metadata_sha256:
            log.warning("mirror: the metadata of %s does not match its sha256; nothing kept",
                        item.filename)
            raise UpstreamError(f"upstream's metadata of {item.filename} does not match its hash")
        self.store.put_bytes(path, data)
        return data

    def _prune(self) -> None:
        """After a download: evict to ``cache_max_gb`` (least recently used, unpinned)."""
        now = time.monotonic()
        if now - self._pruned_at < PRUNE_EVERY:
            return
        self._pruned_at = now
        evicted = prune(self.store, self.max_bytes)
        if evicted:
            log.info("mirror: evicted %d least recently used files (%d bytes) to stay within "
                     "upstream.cache_max_gb", len(evicted), sum(i.size for i in evicted))

    def health(self) -> dict[str, object]:
        return self.upstream.health()


def file_dict(project: str, item: UpstreamFile) -> dict[str, Any]:
    """One file of a mirrored page; its link is this server's (``/packages/<project>/<file>``),
    never upstream's."""
    metadata: dict[str, str] | bool = (
        {"sha256": item.metadata_sha256} if item.metadata_sha256 else False)
    entry = {"filename": item.filename, "url": f"../../packages/{project}/{quote(item.filename)}",
             "hashes": {"sha256": item.sha256}, "requires-python": item.requires_python,
             "core-metadata": metadata, "data-dist-info-metadata": metadata,
             "yanked": item.yanked}
    if item.size is not None:  # HTML-only upstreams may not say
        entry["size"] = item.size
    if item.upload_time is not None:
        entry["upload-time"] = item.upload_time
    return entry
