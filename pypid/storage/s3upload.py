"""An upload to the bucket: received into a local spool file (checked there, as a local
upload is), then stored with one conditional create so that two nodes racing for one
name store exactly one file; its bytes then stay as this node's copy.

Above ``MULTIPART_THRESHOLD`` the object is sent in parts and the create happens at
CompleteMultipartUpload; a failed or refused one is aborted (a node killed in between
leaves an incomplete multipart upload, which no reader sees and which the bucket's
lifecycle rule for incomplete uploads removes: see the README).
"""

from __future__ import annotations

import contextlib
import logging
from pathlib import Path
from typing import IO, Any, Protocol

from pypid.storage.base import FileStat, StorageError
from pypid.storage.incoming import IncomingFile
from pypid.storage.s3cache import FileCache
from pypid.storage.s3client import BucketPlace, Clients, client_errors, is_taken, storage_error

log = logging.getLogger("pypid.storage")

UPLOAD_TIME_KEY = "pypid-upload-time"  # object metadata: an import's upload time (epoch ns)
MULTIPART_THRESHOLD = 64 * 1024 * 1024
PART_SIZE = 16 * 1024 * 1024  # S3's smallest is 5 MiB (but for the last part)


class Bucket(Protocol):
    """What an upload needs of ``s3.BucketRoot``."""

    place: BucketPlace
    clients: Clients
    copies: FileCache

    def stat(self, relpath: str) -> FileStat | None: ...


class BucketIncoming(IncomingFile):
    """A local spool file in the copies' folder (so that it can become this node's copy).

    ``spool`` and not ``keep_copy``: a spool elsewhere and no copy kept, for the command
    line (``pypid import`` as root must not make the service's folders root's)."""

    def __init__(self, root: Bucket, max_bytes: int, *, spool: Path | None = None,
                 keep_copy: bool = True) -> None:
        if spool is None:
            spool = root.copies.directory
            spool.mkdir(parents=True, exist_ok=True)
        super().__init__(spool, max_bytes)
        self.root = root
        self.keep_copy = keep_copy
        # A bucket sets LastModified itself: an import's upload time goes with the object.
        self.upload_time_ns: int | None = None

    def stat_as(self, relpath: str) -> FileStat:
        """A bucket names the version (ETag, time) only once it holds it: size alone here;
        ``publish`` returns the real one."""
        return FileStat(relpath, self.size, 0, 0)

    def sync(self) -> None:
        """Nothing: the store makes the bytes durable, the spool is a cache."""

    def publish(self, relpath: str, *, overwrite: bool) -> FileStat:
        """Store the bytes as ``relpath``; FileExistsError when it exists and not ``overwrite``."""
        with self.reopen() as handle:
            extra = ({} if self.upload_time_ns is None else
                     {"Metadata": {UPLOAD_TIME_KEY: str(self.upload_time_ns)}})
            if self.size > MULTIPART_THRESHOLD:
                _put_in_parts(self.root, relpath, handle, overwrite=overwrite, extra=extra)
            else:
                _put_whole(self.root, relpath, handle, self.size, overwrite=overwrite,
                           extra=extra)
        stat = self.root.stat(relpath)
        if stat is None:
            raise StorageError(f"{self.root.place.describe()}: {relpath} vanished just after "
                               "it was stored")
        if self.keep_copy:
            self._keep_as_copy(relpath, stat)
        return stat

    def _keep_as_copy(self, relpath: str, stat: FileStat) -> None:
        """The bytes just stored become this node's copy (no download to serve them)."""
        try:
            super().publish(relpath, overwrite=True)
            self.root.copies.stamp(self.root.copies.path(relpath), stat)
            self.root.copies.adopt(stat)
        except (OSError, StorageError) as exc:
            log.warning("s3: cannot keep a local copy of %s: %s", relpath, exc)
            self.root.copies.drop(relpath)


def _put_whole(root: Bucket, relpath: str, handle: IO[bytes], size: int, *,
               overwrite: bool, extra: dict[str, Any]) -> None:
    client = root.clients.plain() if overwrite else root.clients.create_only()
    try:
        client.put_object(Bucket=root.place.bucket, Key=root.place.key(relpath), Body=handle,
                          ContentLength=size, ContentType="application/octet-stream", **extra)
    except client_errors() as exc:
        if not overwrite and is_taken(exc):
            raise FileExistsError(relpath) from None
        raise storage_error(exc, root.place, f"store {relpath}") from None


def _put_in_parts(root: Bucket, relpath: str, handle: IO[bytes], *,
                  overwrite: bool, extra: dict[str, Any]) -> None:
    place, plain = root.place, root.clients.plain()
    key = place.key(relpath)
    try:
        upload_id = plain.create_multipart_upload(
            Bucket=place.bucket, Key=key, ContentType="application/octet-stream",
            **extra)["UploadId"]
    except client_errors() as exc:
        raise storage_error(exc, place, f"store {relpath}") from None
    done = False
    try:
        parts = _send_parts(plain, place.bucket, key, upload_id, handle)
        finisher = plain if overwrite else root.clients.create_only()
        finisher.complete_multipart_upload(Bucket=place.bucket, Key=key, UploadId=upload_id,
                                           MultipartUpload={"Parts": parts})
        done = True
    except client_errors() as exc:
        if not overwrite and is_taken(exc):
            raise FileExistsError(relpath) from None
        raise storage_error(exc, place, f"store {relpath}") from None
    finally:
        if not done:
            with contextlib.suppress(*client_errors()):
                plain.abort_multipart_upload(Bucket=place.bucket, Key=key, UploadId=upload_id)


def _send_parts(client: Any, bucket: str, key: str, upload_id: str,
                handle: IO[bytes]) -> list[dict[str, Any]]:
    parts = []
    for number in range(1, 10_001):  # S3 allows 10,000 parts
        data = handle.read(PART_SIZE)
        if not data:
            break
        answer = client.upload_part(Bucket=bucket, Key=key, UploadId=upload_id,
                                    PartNumber=number, Body=data)
        parts.append({"ETag": answer["ETag"], "PartNumber": number})
    else:
        raise StorageError(f"{key}: too large for 10,000 parts of {PART_SIZE} bytes")
    return parts
