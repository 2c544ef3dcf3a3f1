"""The S3 backend: the files live in a bucket (under ``prefix``), shared by every node.

Files are objects named by their relative path; pypid's own objects (the event
log) are under ``.pypid/`` and never listed as files. A file's identity is its
size, LastModified and ETag (``s3client.file_stat``), the same on every node.
Files are served from this node's read-through copies (``s3cache``), so the
server sends local files as it does for a local root. Uploads: ``s3upload``.

Publishing across nodes: the conditional create is the lock for one file name
(two nodes racing for it store exactly one). ``publish_lock`` is this node's
(a flock: its workers take turns); a release slot taken under another spelling
is seen in the log, and two spellings stored in the same instant are kept apart
by the slot's claim (``s3claims``).
"""

from __future__ import annotations

import contextlib
import fcntl
import logging
import os
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import IO, Any

from pypid.distfile import has_dist_suffix, is_safe_filename, is_temp_name
from pypid.events import AuditLog
from pypid.growing import DownloadError, Follower
from pypid.storage.base import (
    CACHE_DIRNAME,
    FileIdentity,
    FileStat,
    StorageError,
    UnsafePathError,
    read_start_of,
)
from pypid.storage.s3cache import FileCache
from pypid.storage.s3claims import claim_slot, unclaim_slot
from pypid.storage.s3client import (
    BucketPlace,
    Clients,
    client_errors,
    file_stat,
    is_missing,
    reason,
    storage_error,
)
from pypid.storage.s3log import BucketLog
from pypid.storage.s3mirror import LogMirror
from pypid.storage.s3shelf import BucketShelf
from pypid.storage.s3sweep import (
    KEPT_DIR,
    KEPT_ETAG_KEY,
    SWEEP_SECONDS,
    abort_abandoned,
    drop_stale_kept,
)
from pypid.storage.s3upload import UPLOAD_TIME_KEY, BucketIncoming

log = logging.getLogger("pypid.storage")

PAGE_LIMIT = 100_000  # listing pages of 1,000 keys: a bound, far above any real bucket
HEALTH_PROBE_SECONDS = 10.0  # an answer from the store younger than this is believed
STATE_FILE = "store-problem"  # in the node's cache folder: why the store is away, if it is
CHUNK = 1024 * 1024
# What a copy made with MetadataDirective REPLACE takes from the object's HEAD.
_COPIED = ("CacheControl", "ContentDisposition", "ContentEncoding", "ContentLanguage",
           "ContentType", "Expires")


class BucketRoot:
    """A bucket (``place``) seen from this node: ``node_root`` holds its rebuildable caches
    (index, pages, lock), ``copies`` its read-through copies of files."""

    is_remote = True

    def __init__(self, place: BucketPlace, node_root: Path, copies: FileCache) -> None:
        self.place = place
        self.node_root = Path(node_root).absolute()
        self.copies = copies
        self.clients = Clients(place)
        self._problem: str | None = None
        self._problem_at = float("-inf")
        self._lock = threading.Lock()
        self._stated: dict[str, tuple[FileStat, float]] = {}  # upload times imports stated
        self._next_sweep = time.monotonic() + SWEEP_SECONDS  # the start's is sweep_temp_files's
        self._shared = False  # this process has written the store's state for the others

    @property
    def path(self) -> Path:
        """The copies' folder: the server sends ``<path>/<relpath>`` once it is there."""
        return self.copies.directory

    @property
    def cache_dir(self) -> Path:
        return self.node_root / CACHE_DIRNAME

    @property
    def where(self) -> str:
        return self.place.describe()

    def close(self) -> None:
        """Close the connections to the store (a later call opens new ones)."""
        self.clients.close()

    def event_log(self) -> AuditLog:
        return BucketLog(self.clients, self.place, self.note, LogMirror(
            self.cache_dir / f"events-{self.place.digest()}.jsonl"))

    def mirror_shelf(self) -> BucketShelf:
        return BucketShelf(self.clients, self.place)

    # -- health

    def note(self, problem: str | None) -> None:
        """What the last request to the store said (None: it answered). A change is written
        down for the node's other processes (``last_problem``)."""
        changed = (self._problem is None) != (problem is None) or not self._shared
        self._problem, self._problem_at = problem, time.monotonic()
        if changed:
            self._shared = share_state(self.cache_dir / STATE_FILE, problem)

    def last_problem(self) -> str | None:
        """The store's state as this node's processes last found it, with no request (the
        master's STATUS line: it makes none after the start)."""
        try:
            return (self.cache_dir / STATE_FILE).read_text("utf-8").strip() or None
        except (OSError, UnicodeDecodeError):
            return None

    def check_readable(self) -> str | None:
        """The store's state as the last request found it (probed when that is old)."""
        if time.monotonic() - self._problem_at > HEALTH_PROBE_SECONDS:
            try:
                self.clients.plain().list_objects_v2(Bucket=self.place.bucket,
                                                     Prefix=self.place.top, MaxKeys=1)
                self.note(None)
            except client_errors() as exc:
                self.note(f"{self.place.describe()}: unreachable: {reason(exc)}")
        return self._problem

    # -- listing

    def iter_files(self, subdir: str = "") -> Iterator[FileStat]:
        top = self.place.top
        start = top + (subdir.strip("/") + "/" if subdir else "")
        for item in self._list(start):
            relpath = item["Key"][len(top):]
            if _is_listable(relpath):
                yield file_stat(relpath, item["Size"], item["LastModified"], item["ETag"])

    def _list(self, prefix: str, delimiter: str | None = None) -> Iterator[dict[str, Any]]:
        """Every object below ``prefix``, a page at a time."""
        client = self.clients.plain()
        request: dict[str, Any] = {"Bucket": self.place.bucket, "Prefix": prefix}
        if delimiter:
            request["Delimiter"] = delimiter
        for _page in range(PAGE_LIMIT):
            try:
                answer = client.list_objects_v2(**request)
            except client_errors() as exc:
                self.note(f"{self.place.describe()}: unreachable: {reason(exc)}")
                raise storage_error(exc, self.place, "list the files") from None
            self.note(None)
            yield from answer.get("Contents", ())
            token = answer.get("NextContinuationToken")
            if not answer.get("IsTruncated") or not token:
                return
            request["ContinuationToken"] = token

    def stat(self, relpath: str) -> FileStat | None:
        """The object now (HEAD); None if it is not there. StorageError when the store
        cannot say: a file must never look removed because the store is down."""
        self.resolve(relpath)
        if not _is_listable(relpath):
            return None
        try:
            head = self.clients.plain().head_object(Bucket=self.place.bucket,
                                                    Key=self.place.key(relpath))
        except client_errors() as exc:
            if is_missing(exc):
                self.note(None)
                return None
            self.note(f"{self.place.describe()}: unreachable: {reason(exc)}")
            raise storage_error(exc, self.place, f"look up {relpath}") from None
        self.note(None)
        return file_stat(relpath, head["ContentLength"], head["LastModified"], head["ETag"])

    def directories(self) -> Iterator[str]:
        yield ""

    def exists(self, relpath: str) -> bool:
        return self.stat(relpath) is not None

    def upload_neighbours(self, filename: str, keep: Callable[[str], bool]) -> list[str]:
        """Top-level names ``keep`` accepts, listed by the first letter in either case (a
        project's files start with its name, in any case)."""
        found: list[str] = []
        top = self.place.top
        for first in sorted({filename[:1].lower(), filename[:1].upper()}):
            for item in self._list(top + first, delimiter="/"):
                name = item["Key"][len(top):]
                if "/" not in name and _is_listable(name) and keep(name):
                    found.append(name)
        return found

    # -- reading

    def resolve(self, relpath: str) -> Path:
        """Where this node keeps its copy of ``relpath`` (there or not)."""
        if not relpath or "\x00" in relpath or "\\" in relpath or relpath.startswith("/"):
            raise UnsafePathError(f"unsafe path {relpath!r}")
        if any(part in ("", ".", "..") for part in relpath.split("/")):
            raise UnsafePathError(f"unsafe path {relpath!r}")
        return self.copies.path(relpath)

    def open(self, relpath: str) -> IO[bytes]:
        """The object's bytes as they are now, read through this node's copy."""
        self.fetch(relpath)
        return open(self.resolve(relpath), "rb")  # noqa: SIM115 - the caller closes it

    def read_start(self, relpath: str, limit: int,
                   on_cold: Callable[[], None] | None = None) -> bytes:
        self.fetch(relpath)  # a download: the copy is in memory after it
        return read_start_of(str(self.resolve(relpath)), limit)

    def fetch_ahead(self, relpaths: Iterable[str]) -> None:
        """Nothing: the objects are fetched one by one as they are read."""

    def local_copy(self, relpath: str, identity: FileIdentity) -> bool:
        """Make this node's copy of ``relpath`` that version (joining its download if one
        runs); False when the object is gone or is another version now (the index catches
        up from the log)."""
        try:
            follower = self.follow(relpath, identity)
        except DownloadError:
            return False
        return follower is None or follower.whole() is None

    def follow(self, relpath: str, identity: FileIdentity) -> Follower | None:
        """The download of that version into this node's copy, to read as it arrives (one
        per node however many ask: ``FileCache.follow``); None when the copy is there.
        DownloadError if it cannot be started."""
        try:
            self.resolve(relpath)
            return self.copies.follow(FileStat(relpath, *identity), lambda: self._body(relpath))
        except (OSError, StorageError) as exc:
            raise DownloadError(f"cannot keep a copy of {relpath}: {exc}", 503) from None

    def _body(self, relpath: str) -> tuple[FileStat, Any]:
        """The object's stat and its body to read (the caller closes it); DownloadError."""
        try:
            answer = self._get(relpath)
        except FileNotFoundError:
            raise DownloadError(f"{relpath} is no longer in the store", 404) from None
        except StorageError as exc:
            raise DownloadError(str(exc), 503) from None
        return file_stat(relpath, answer["ContentLength"], answer["LastModified"],
                         answer["ETag"]), answer["Body"]

    def _get(self, relpath: str) -> dict[str, Any]:
        """GET the object; FileNotFoundError if it is gone, StorageError if the store fails."""
        try:
            return self.clients.plain().get_object(Bucket=self.place.bucket,  # type: ignore[no-any-return]
                                                   Key=self.place.key(relpath))
        except client_errors() as exc:
            if is_missing(exc):
                raise FileNotFoundError(relpath) from None
            self.note(f"{self.place.describe()}: unreachable: {reason(exc)}")
            raise storage_error(exc, self.place, f"read {relpath}") from None

    def fetch(self, relpath: str) -> FileStat:
        """Download the object into this node's copy; FileNotFoundError if it is gone."""
        self.resolve(relpath)
        answer = self._get(relpath)
        stat = file_stat(relpath, answer["ContentLength"], answer["LastModified"],
                         answer["ETag"])
        self._note_upload_time(stat, answer.get("Metadata") or {})
        body = answer["Body"]
        try:
            if not self.copies.holds(stat):
                self.copies.fill(stat, iter(lambda: body.read(CHUNK), b""))
        except client_errors() as exc:
            raise storage_error(exc, self.place, f"read {relpath}") from None
        finally:
            body.close()
        return stat

    def upload_time(self, stat: FileStat) -> float:
        """The time an import stated for this version (read by ``fetch``), else LastModified."""
        with self._lock:
            stated = self._stated.pop(stat.relpath, None)  # asked once, after each fetch
        if stated is not None and stated[0].identity == stat.identity:
            return stated[1]
        return stat.mtime_ns / 1e9

    def _note_upload_time(self, stat: FileStat, metadata: dict[str, str]) -> None:
        text = metadata.get(UPLOAD_TIME_KEY, "")
        if text.isdigit():
            with self._lock:
                self._stated[stat.relpath] = (stat, int(text) / 1e9)
        elif self._stated:
            with self._lock:
                self._stated.pop(stat.relpath, None)

    # -- changing

    def upload_relpath(self, filename: str) -> str:
        if not is_safe_filename(filename):
            raise UnsafePathError(f"unsafe file name {filename!r}")
        return filename

    def incoming(self, max_bytes: int) -> BucketIncoming:
        return BucketIncoming(self, max_bytes)

    @contextlib.contextmanager
    def publish_lock(self) -> Iterator[None]:
        """This node's workers take turns (flock); across nodes the conditional create
        decides (see the module's docstring)."""
        self.cache_dir.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.cache_dir / "publish.lock", os.O_RDWR | os.O_CREAT | os.O_CLOEXEC,
                     0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            yield
        finally:
            os.close(fd)

    def claim(self, slot: str, filename: str) -> str | None:
        """The slot's claim object decides between nodes (``s3claims``)."""
        return claim_slot(self.clients, self.place, slot, filename)

    def unclaim(self, slot: str, filename: str) -> None:
        unclaim_slot(self.clients, self.place, slot, filename)

    def remove(self, relpath: str) -> None:
        self.resolve(relpath)
        try:
            self.clients.plain().delete_object(Bucket=self.place.bucket,
                                               Key=self.place.key(relpath))
        except client_errors() as exc:
            if not is_missing(exc):
                raise storage_error(exc, self.place, f"remove {relpath}") from None
        self.copies.drop(relpath)

    @contextlib.contextmanager
    def removing(self, relpath: str) -> Iterator[None]:
        """The object goes once the block (which records the removal) succeeds."""
        if self.stat(relpath) is None:
            raise StorageError(f"{relpath} is no longer in {self.place.describe()}")
        yield
        self.remove(relpath)

    @contextlib.contextmanager
    def keeping(self, relpath: str) -> Iterator[None]:
        """Keep an object's bytes while the block replaces it: a copy made in the store
        (``KEPT_DIR``) is copied back over the name if the block raises, deleted after.
        The name always holds one whole version meanwhile (a PUT replaces atomically).
        The copy carries the object's ETag (a copy of an object sent in parts has
        another), so that a sweep can tell that the file holds these bytes again."""
        client, bucket = self.clients.plain(), self.place.bucket
        key, kept = self.place.key(relpath), self.place.key(KEPT_DIR + relpath)
        try:
            source = client.head_object(Bucket=bucket, Key=key)
            fields = _copied_fields(source)
            client.copy_object(Bucket=bucket, Key=kept, MetadataDirective="REPLACE",
                               **{**fields, "Metadata": {**fields["Metadata"],
                                                         KEPT_ETAG_KEY: source["ETag"]}},
                               CopySource={"Bucket": bucket, "Key": key},
                               CopySourceIfMatch=source["ETag"])  # the bytes it noted
        except client_errors() as exc:
            raise storage_error(exc, self.place, f"keep {relpath}") from None
        settled = True  # False: the kept copy is the only one left of the old bytes
        try:
            yield
        except BaseException:
            settled = False  # until the old bytes are back, whatever fails meanwhile
            try:
                client.copy_object(Bucket=bucket, Key=key, MetadataDirective="REPLACE",
                                   **fields, CopySource={"Bucket": bucket, "Key": kept})
            except client_errors() as exc:
                log.error("s3: cannot put back the replaced bytes of %s (they are kept as "
                          "%s): %s", relpath, kept, reason(exc))
            else:
                settled = True
                self.copies.drop(relpath)
            raise
        finally:
            if settled:
                with contextlib.suppress(*client_errors()):
                    client.delete_object(Bucket=bucket, Key=kept)

    def sweep_temp_files(self, was_removed: Callable[[str], bool] | None = None) -> int:
        """Copies half written by a killed process go (the bucket has no temp files)."""
        del was_removed  # a removal is recorded before the object goes: nothing to put back
        self._abort_abandoned()
        return self.copies.sweep()

    def clear_abandoned(self) -> int:
        """Abort the multipart uploads killed nodes left (``s3sweep``), at most once every
        SWEEP_SECONDS in this process; 0 while the store cannot be asked (tried again then)."""
        if time.monotonic() < self._next_sweep:
            return 0
        return self._abort_abandoned()

    def _abort_abandoned(self) -> int:
        self._next_sweep = time.monotonic() + SWEEP_SECONDS
        try:
            client = self.clients.plain()
            return abort_abandoned(client, self.place) + drop_stale_kept(client, self.place)
        except client_errors() as exc:
            log.debug("s3: cannot look for abandoned uploads now: %s", reason(exc))
            return 0


def share_state(path: Path, problem: str | None) -> bool:
    """Write ``problem`` to ``path`` (remove it for None); False if that cannot be done."""
    try:
        if problem is None:
            path.unlink(missing_ok=True)
        else:
            path.parent.mkdir(parents=True, exist_ok=True)
            temp = path.with_name(f".{path.name}.{os.getpid()}")
            temp.write_text(problem + "\n", "utf-8")
            os.replace(temp, path)
    except OSError:
        return False
    return True


def _is_listable(relpath: str) -> bool:
    name = relpath.rsplit("/", 1)[-1]
    return (not any(part.startswith(".") or not part for part in relpath.split("/"))
            and not is_temp_name(name) and has_dist_suffix(name))


def _copied_fields(head: dict[str, Any]) -> dict[str, Any]:
    """The object's own metadata and headers, for a copy that replaces its metadata."""
    fields = {name: head[name] for name in _COPIED if head.get(name) is not None}
    fields["Metadata"] = dict(head.get("Metadata") or {})
    return fields
