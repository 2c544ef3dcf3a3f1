"""The simple API's answers for mirrored projects (``upstream.mode = "cache"``): pages, the
project list, files and their metadata, decided from ``pypid.mirror``'s results.

``SimpleAPI`` calls in here only where the local index has no answer (or the
project is merged). Anything that may touch upstream or the disk is decided only
with ``may_block``; without it these methods answer from memory or say None.
"""

from __future__ import annotations

import logging
import os
import time
import zlib
from pathlib import Path
from typing import Any

from pypid.distfile import WHEEL, is_normalized, parse_filename
from pypid.index import FileEntry, Index
from pypid.mirror import (
    DownloadError,
    Mirror,
    PageRecord,
    UnsafeNameError,
    UpstreamError,
    UpstreamFile,
)
from pypid.mirror.holdings import touch_used
from pypid.mirror.policy import parse_upload_time
from pypid.simple import pep691
from pypid.simple.pagecache import INDEX, Page, PageCache
from pypid.simple.render import render
from pypid.simple.reply import (
    OCTETS,
    PAGE_CACHE_CONTROL,
    Kind,
    Reply,
    streamed,
    text,
)

log = logging.getLogger("pypid.mirror")

METADATA_SUFFIX = ".metadata"
COOLDOWN_STEP = 600  # seconds: a page under a cooldown is rendered again this often


class MirrorReplies:
    """Answers about upstream's projects, through the mirror's cache."""

    def __init__(self, mirror: Mirror, index: Index, pages: PageCache) -> None:
        self.mirror = mirror
        self.index = index
        self.index_pages = pages  # the project list lives with the local one
        self.pages = PageCache()  # mirrored pages: this worker's memory only
        self._entries: dict[str, FileEntry] = {}
        self._paths: dict[tuple[str, str], tuple[Path, str]] = {}

    def answers_for(self, project: str) -> bool:
        """Does upstream's namesake show for ``project``? Not for a local project, unless
        it is merged (dependency confusion: a private name never resolves upstream)."""
        return not self._is_local(project) or self.mirror.merges(project)

    def _is_local(self, project: str) -> bool:
        """A project here, or one this index held (its files all removed since): either
        hides its upstream namesake."""
        return (self.index.project_serial(project) is not None
                or self.index.ledger.knows(project))

    def health(self) -> dict[str, object]:
        return self.mirror.health()

    # -- pages

    def index_page(self, media: str) -> Page:
        """``/simple/``: the local projects and those the cache holds a page of."""
        mirrored = self.mirror.store.projects()
        index = self.index
        serial = (index.projects_serial << 32) | zlib.crc32(" ".join(mirrored).encode())

        def page() -> bytes:
            names = sorted(set(index.projects()) | set(mirrored))
            return render(media, {"meta": {"api-version": pep691.API_VERSION},
                                  "projects": [{"name": name} for name in names]})

        return self.index_pages.get(INDEX, media, serial, page)

    def page(self, media: str, project: str, may_block: bool) -> Page | Reply | None:
        """The page of a project the index does not have, or merges with upstream's (a
        merged project keeps its local page when upstream has none or fails)."""
        found = self._record(project, may_block)
        local = self.index.files(project)
        if found is None or (local is None and not isinstance(found, PageRecord)):
            return found
        record = found if isinstance(found, PageRecord) else None
        now = time.time()
        serial = record.serial if record is not None else 0
        if self.mirror.cooldown.active:
            serial ^= int(now // COOLDOWN_STEP)
        if self.mirror.offline:  # the page lists what the cache holds
            serial ^= zlib.crc32(" ".join(self.mirror.store.recent_files(project)).encode())
        if local is not None:
            serial ^= ((self.index.project_serial(project) or 0) << 20) + 1
        return self.pages.get(media, project, serial,
                              lambda: render(media, self._page_dict(project, record, now)))

    def _record(self, project: str, may_block: bool) -> PageRecord | Reply | None:
        """Upstream's page of ``project``; None if that needs blocking work and
        ``may_block`` is off; else the reason it has none (404, 502, 504)."""
        record = self.mirror.fresh(project)
        if record is not None:
            return record
        if not may_block:
            return None
        try:
            record = self.mirror.record(project)
        except UpstreamError as exc:
            return _upstream_failed(exc)
        except Exception:  # upstream's input found a path nobody foresaw: a 502, never a 500
            log.exception("mirror: upstream's page of %s could not be used", project)
            return _upstream_failed(UpstreamError(f"upstream's page of {project} is unusable"))
        if record is None:
            return _not_found(f"no project named {project!r} here or upstream")
        return record

    def _page_dict(self, project: str, record: PageRecord | None, now: float) -> dict[str, Any]:
        mine = pep691.project_page(self.index, project)
        if record is None or (mine is not None and
                              mine["project-status"]["status"] == "quarantined"):
            return mine or {}  # the local page alone: its status rules
        data = self.mirror.page_dict(record, now)
        if mine is not None:  # merged: local files first, upstream's namesakes left out
            names = {f["filename"] for f in mine["files"]}
            mine["files"] += [f for f in data["files"] if f["filename"] not in names]
            mine["versions"] = list(dict.fromkeys([*mine["versions"], *data["versions"]]))
            return mine
        return data

    # -- files: /packages/<project>/<filename>[.metadata]

    def file(  # noqa: PLR0911 - one answer per way a mirrored file can be refused
            self, name: str, may_block: bool) -> tuple[FileEntry, str] | Reply | None:
        """A mirrored file as (entry, path) for the core's file replies, or the answer."""
        project, _, filename = name.partition("/")
        metadata = filename.endswith(METADATA_SUFFIX)
        if metadata:
            filename = filename[: -len(METADATA_SUFFIX)]
        if not is_normalized(project) or "/" in filename:
            return _not_found("no such file here")
        if not self.answers_for(project):
            return _not_found(f"{project} is a local project: upstream's files are not served")
        record = self._record(project, may_block)
        if not isinstance(record, PageRecord):
            return record
        item = record.page.file(filename)
        if item is None:
            return _not_found("no such file here or upstream")
        refusal = self.mirror.refusal(record, item)
        if refusal is not None:
            return text(Kind.DENIED if refusal[0] == 403 else Kind.NOT_FOUND, *refusal)
        try:
            path, spath = self._path_of(project, filename)
        except UnsafeNameError:
            return _not_found("no such file here")
        if metadata:
            return self._metadata(path, item, may_block)
        entry = self._cached_entry(project, item, spath)
        if entry is not None:
            return entry, spath
        if not may_block:
            return None
        return self._fetch(path, item)

    def _path_of(self, project: str, filename: str) -> tuple[Path, str]:
        """Where the cache keeps a file, checked once (pathlib costs more than the rest of
        a cached file's answer)."""
        found = self._paths.get((project, filename))
        if found is None:
            path = self.mirror.store.file_path(project, filename)
            if len(self._paths) > 4096:
                self._paths.clear()
            found = self._paths[project, filename] = (path, str(path))
        return found

    def _cached_entry(self, project: str, item: UpstreamFile, path: str) -> FileEntry | None:
        """The cached file as a FileEntry (one per file version, reused), or None."""
        try:
            st = os.stat(path)
        except OSError:
            return None
        entry = self._entries.get(path)
        if entry is None or not entry.is_stat_of(st) or entry.sha256 != item.sha256:
            if len(self._entries) > 4096:
                self._entries.clear()
            entry = FileEntry(
                filename=item.filename, relpath=path, project=project,  # type: ignore[arg-type]
                version=item.version, size=st.st_size, mtime_ns=st.st_mtime_ns,
                inode=st.st_ino, digest=bytes.fromhex(item.sha256),
                requires_python=item.requires_python,
                metadata_digest=bytes.fromhex(item.metadata_sha256)
                if item.metadata_sha256 else None,
                upload_time=parse_upload_time(item.upload_time) or st.st_mtime,
                yanked=None if item.yanked is False
                else item.yanked if isinstance(item.yanked, str) else "")
            self._entries[path] = entry
            touch_used(path)  # its last use, for eviction (once per worker and version)
        return entry

    def _fetch(self, path: Path, item: UpstreamFile) -> tuple[FileEntry, str] | Reply:
        """The first request of an uncached file: stream it while the cache stores it."""
        try:
            follower = self.mirror.follow(path, item)
        except (UpstreamError, OSError) as exc:
            return _upstream_failed(exc if isinstance(exc, UpstreamError)
                                    else UpstreamError(f"cannot cache {item.filename}: {exc}"))
        if follower is None:  # arrived meanwhile
            entry = self._cached_entry(parse_filename(item.filename).project, item, str(path))
            return (entry, str(path)) if entry is not None else _not_found("no such file here")
        reply = streamed(follower, item.filename, item.sha256,
                         parse_upload_time(item.upload_time) or time.time(), item.size,
                         overwrite=False)
        return _upstream_failed(reply) if isinstance(reply, DownloadError) else reply

    def _metadata(self, path: Path, item: UpstreamFile, may_block: bool) -> Reply | None:
        meta_path = path.with_name(path.name + METADATA_SUFFIX)
        if parse_filename(item.filename).kind != WHEEL or not item.metadata_sha256:
            return _not_found(f"no separate metadata for {item.filename}")
        if not may_block:
            return None
        try:
            data = self.mirror.metadata(meta_path, item)
        except UpstreamError as exc:
            return _upstream_failed(exc)
        except OSError as exc:
            return _upstream_failed(UpstreamError(f"cannot cache the metadata: {exc}"))
        etag = item.metadata_sha256
        return Reply(Kind.METADATA, 200, [
            ("Content-Type", OCTETS), ("Content-Length", str(len(data))),
            ("ETag", f'"{etag}"'), ("Cache-Control", PAGE_CACHE_CONTROL)], data)


def _upstream_failed(exc: DownloadError) -> Reply:
    return text(Kind.ERROR, exc.status, str(exc))


def _not_found(message: str) -> Reply:
    return text(Kind.NOT_FOUND, 404, message)

