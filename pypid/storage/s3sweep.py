"""Clearing what killed nodes left in a bucket: multipart uploads never completed.

``s3upload`` sends a file above 64 MiB in parts; a node killed before
CompleteMultipartUpload leaves its parts stored (and billed), though no reader ever
sees them. Every node aborts those that have been idle for ``STALE_SECONDS`` under its
prefix, at start and every ``SWEEP_SECONDS`` while it runs. Idle means neither started
nor sent a part since: a live upload sends a 16 MiB part far more often than hourly
(a store slower than 5 KB/s is not one to serve from), whatever the file's size, so an
hour never cuts a live upload short, and a dead one is gone within two. The prefix is
pypid's own: nothing else is expected to upload below it.
"""

from __future__ import annotations

import logging
import os
import time
from datetime import UTC, datetime
from typing import Any

from pypid.storage.s3client import BucketPlace, client_errors, is_missing, reason

log = logging.getLogger("pypid.storage")

STALE_SECONDS = 3600.0
STALE_ENV = "PYPID_S3_STALE_UPLOAD_SECONDS"  # tests shorten the wait; not a config key
SWEEP_SECONDS = 3600.0
PAGE_LIMIT = 1000  # listing pages of up to 1,000 uploads: a bound, far above real use


def stale_seconds() -> float:
    """STALE_SECONDS, or the number in $PYPID_S3_STALE_UPLOAD_SECONDS (tests)."""
    try:
        return max(0.0, float(os.environ.get(STALE_ENV, STALE_SECONDS)))
    except ValueError:
        return STALE_SECONDS


def abort_abandoned(client: Any, place: BucketPlace, now: float | None = None) -> int:
    """Abort the multipart uploads below ``place`` idle for ``stale_seconds()``; how many.
    Raises the client's errors when the store cannot list them (the caller retries)."""
    cutoff = (time.time() if now is None else now) - stale_seconds()
    request: dict[str, Any] = {"Bucket": place.bucket, "Prefix": place.top}
    aborted = 0
    for _page in range(PAGE_LIMIT):
        answer = client.list_multipart_uploads(**request)
        for upload in answer.get("Uploads", ()):
            key, upload_id = upload["Key"], upload["UploadId"]
            if _stamp(upload.get("Initiated")) > cutoff:
                continue
            if _last_part(client, place.bucket, key, upload_id) > cutoff:
                continue
            try:
                client.abort_multipart_upload(Bucket=place.bucket, Key=key, UploadId=upload_id)
            except client_errors() as exc:
                if not is_missing(exc):  # NoSuchUpload: another node was first
                    log.warning("s3: cannot abort the abandoned upload of %s: %s", key,
                                reason(exc))
                continue
            aborted += 1
        if not answer.get("IsTruncated"):
            break
        request["KeyMarker"] = answer.get("NextKeyMarker", "")
        request["UploadIdMarker"] = answer.get("NextUploadIdMarker", "")
    if aborted:
        log.info("s3: aborted %d multipart upload(s) left unfinished in %s by a stopped "
                 "node", aborted, place.describe())
    return aborted


KEPT_DIR = ".pypid/keeping/"  # BucketRoot.keeping's copies of bytes being replaced
KEPT_ETAG_KEY = "pypid-kept-etag"  # a kept copy's metadata: the ETag of what it copied
_warned: set[tuple[str, str]] = set()  # (kept copy, its ETag): said once in a process


def drop_stale_kept(client: Any, place: BucketPlace, now: float | None = None) -> int:
    """Delete the copies ``keeping`` made that are older than ``stale_seconds()`` and that
    the file holds again (a node killed while replacing it left them: its block lasts a
    moment); how many. A copy of other bytes than the file's (a put-back that failed, or a
    replacement that ended as the node was killed) may be the only copy of a file's
    recorded bytes: it stays, and a warning (once) names it, for an administrator."""
    cutoff = (time.time() if now is None else now) - stale_seconds()
    prefix = place.top + KEPT_DIR
    request: dict[str, Any] = {"Bucket": place.bucket, "Prefix": prefix}
    dropped = 0
    for _page in range(PAGE_LIMIT):
        answer = client.list_objects_v2(**request)
        for item in answer.get("Contents", ()):
            if _stamp(item.get("LastModified")) > cutoff:
                continue
            relpath = item["Key"][len(prefix):]
            if _holds_again(client, place, item, relpath):
                client.delete_object(Bucket=place.bucket, Key=item["Key"])
                dropped += 1
            elif (item["Key"], item.get("ETag")) not in _warned:
                _warned.add((item["Key"], item.get("ETag")))
                log.warning("s3: %s holds older bytes of %s than the file has now (a node "
                            "stopped while replacing it): if the audit log's last upload of "
                            "%s is not the file's sha256, copy it back; then delete it",
                            item["Key"], relpath, relpath)
        if not answer.get("IsTruncated"):
            break
        request["ContinuationToken"] = answer.get("NextContinuationToken", "")
    if dropped:
        log.info("s3: removed %d copy(ies) a stopped node kept of files it was replacing",
                 dropped)
    return dropped


def _holds_again(client: Any, place: BucketPlace, item: dict[str, Any], relpath: str) -> bool:
    """Does the file hold the kept copy's bytes? Its ETag is the copy's own, or (a file
    sent in parts: the copy, made whole, has another) the one the copy noted at keeping."""
    now = _etag_of(client, place, place.key(relpath))
    if now is None:
        return False
    if now == item.get("ETag"):
        return True
    try:
        kept = client.head_object(Bucket=place.bucket, Key=item["Key"])
    except client_errors() as exc:
        if is_missing(exc):
            return False
        raise
    return (kept.get("Metadata") or {}).get(KEPT_ETAG_KEY) == now


def _etag_of(client: Any, place: BucketPlace, key: str) -> str | None:
    """The object's ETag; None when it is not there."""
    try:
        return client.head_object(Bucket=place.bucket, Key=key).get("ETag")  # type: ignore[no-any-return]
    except client_errors() as exc:
        if is_missing(exc):
            return None
        raise


def _last_part(client: Any, bucket: str, key: str, upload_id: str) -> float:
    """When the upload's newest part arrived (0: none yet, or the upload is gone)."""
    latest = 0.0
    request: dict[str, Any] = {"Bucket": bucket, "Key": key, "UploadId": upload_id}
    for _page in range(20):  # 10,000 parts at most, 1,000 a page
        try:
            answer = client.list_parts(**request)
        except client_errors() as exc:
            if is_missing(exc):
                return 0.0
            raise
        for part in answer.get("Parts", ()):
            latest = max(latest, _stamp(part.get("LastModified")))
        if not answer.get("IsTruncated"):
            break
        request["PartNumberMarker"] = answer.get("NextPartNumberMarker", 0)
    return latest


def _stamp(when: object) -> float:
    """A listing's time as a Unix time (0 when it gives none)."""
    if not isinstance(when, datetime):
        return 0.0
    return (when if when.tzinfo else when.replace(tzinfo=UTC)).timestamp()
