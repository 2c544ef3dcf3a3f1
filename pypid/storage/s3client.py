"""Talking to an S3-compatible store: the boto3 clients, conditional creates, errors.

Credentials come from boto3's own chain (``AWS_ACCESS_KEY_ID`` and friends, the
shared credentials and config files), never from pypid's config; no message
made here carries them. Debian 12's botocore (1.29) has no ``IfNoneMatch``
parameter, so the create-only client adds ``If-None-Match: *`` to every
PutObject and CompleteMultipartUpload through botocore's ``before-call`` event.
"""

from __future__ import annotations

import hashlib
import os
import threading
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from pypid.storage.base import FileStat, StorageError, UnavailableError
from pypid.storage.s3listing import install as install_listing_parser

CONNECT_TIMEOUT = 5
READ_TIMEOUT = 30


@dataclass(frozen=True)
class BucketPlace:
    """Where the bucket is (values from ``[storage.s3]``)."""

    endpoint: str  # "": AWS itself
    bucket: str
    prefix: str  # "" or "a/b", without slashes at the ends
    region: str

    def key(self, relpath: str) -> str:
        return f"{self.prefix}/{relpath}" if self.prefix else relpath

    @property
    def top(self) -> str:
        """The key prefix of everything pypid keeps ('' or 'prefix/')."""
        return self.prefix + "/" if self.prefix else ""

    def digest(self) -> str:
        """A short name for this place (endpoint, bucket, prefix), for local caches."""
        return hashlib.sha256(f"{self.endpoint}\n{self.bucket}\n{self.prefix}".encode()
                              ).hexdigest()[:12]

    def describe(self) -> str:
        """For messages: s3://bucket/prefix (no endpoint login: config refuses one)."""
        return f"s3://{self.bucket}/{self.prefix}".rstrip("/")


class Clients:
    """Two boto3 clients per process: plain, and create-only (If-None-Match: *).

    Made on first use in each process: a client made before gunicorn forks would
    share its pooled connections with every worker.
    """

    def __init__(self, place: BucketPlace) -> None:
        self.place = place
        self._lock = threading.Lock()
        self._pid = -1
        self._plain: Any = None
        self._create: Any = None

    def plain(self) -> Any:
        self._ensure()
        return self._plain

    def create_only(self) -> Any:
        self._ensure()
        return self._create

    def close(self) -> None:
        """Close this process's connections (the next call opens new ones)."""
        with self._lock:
            if self._pid == os.getpid():
                self._plain.close()
                self._create.close()
            self._pid, self._plain, self._create = -1, None, None

    def _ensure(self) -> None:
        if self._pid == os.getpid():
            return
        with self._lock:
            if self._pid != os.getpid():
                self._plain, self._create = self._make(), self._make()
                for operation in ("PutObject", "CompleteMultipartUpload"):
                    self._create.meta.events.register(f"before-call.s3.{operation}",
                                                      _if_none_match)
                self._pid = os.getpid()

    def _make(self) -> Any:
        # Imported here: only a node with backend "s3" pays the ~0.3 s boto3 costs.
        import boto3  # noqa: PLC0415
        import botocore.session  # noqa: PLC0415
        from botocore.config import Config  # noqa: PLC0415

        settings: dict[str, Any] = {
            "s3": {"addressing_style": "path"}, "connect_timeout": CONNECT_TIMEOUT,
            "read_timeout": READ_TIMEOUT, "retries": {"max_attempts": 3},
            "max_pool_connections": 32}
        try:  # botocore >= 1.36 adds checksums some S3-compatible stores refuse
            config = Config(**settings, request_checksum_calculation="when_required",
                            response_checksum_validation="when_required")
        except TypeError:  # Debian 12's botocore: it sends none unasked
            config = Config(**settings)
        core = botocore.session.get_session()
        install_listing_parser(core)  # a 100,000-key listing: 2 s of CPU, not 7
        return boto3.session.Session(botocore_session=core).client(
            "s3", endpoint_url=self.place.endpoint or None, region_name=self.place.region,
            config=config)


def _if_none_match(params: dict[str, Any], **_: Any) -> None:
    params.setdefault("headers", {})["If-None-Match"] = "*"


# -- errors


def status_of(exc: BaseException) -> int | None:
    """The HTTP status of a ClientError (None for anything else)."""
    response = getattr(exc, "response", None)
    if not isinstance(response, dict):
        return None
    status = response.get("ResponseMetadata", {}).get("HTTPStatusCode")
    return status if isinstance(status, int) else None


def code_of(exc: BaseException) -> str:
    response = getattr(exc, "response", None)
    if isinstance(response, dict):
        return str(response.get("Error", {}).get("Code", ""))
    return ""


def is_missing(exc: BaseException) -> bool:
    return status_of(exc) == 404 or code_of(exc) in ("NoSuchKey", "NotFound", "404")


def is_taken(exc: BaseException) -> bool:
    """A conditional create lost: the key exists (412; 409 from stores that say so)."""
    return status_of(exc) in (409, 412) or code_of(exc) in ("PreconditionFailed",
                                                               "ConditionalRequestConflict")


def client_errors() -> tuple[type[BaseException], ...]:
    """What a boto3 call raises for the store's answer or an unreachable store."""
    from botocore.exceptions import BotoCoreError, ClientError  # noqa: PLC0415 - see _make

    return (ClientError, BotoCoreError)


def reason(exc: BaseException) -> str:
    """One line for the operator: the store's error code or botocore's message.

    botocore's messages name the endpoint and operation, never the credentials.
    """
    code = code_of(exc)
    if code:
        status = status_of(exc)
        return f"{code} (HTTP {status})" if status else code
    return " ".join(str(exc).split())[:200] or type(exc).__name__


def storage_error(exc: BaseException, place: BucketPlace, doing: str) -> StorageError:
    kind = UnavailableError if is_unreachable(exc) else StorageError
    return kind(f"{place.describe()}: cannot {doing}: {reason(exc)}")


UNAVAILABLE_CODES = frozenset(("SlowDown", "ServiceUnavailable", "InternalError",
                               "RequestTimeout"))


def is_unreachable(exc: BaseException) -> bool:
    """The store is away or overloaded (try again), not refusing this request."""
    status = status_of(exc)
    if status is not None:
        return status >= 500 or code_of(exc) in UNAVAILABLE_CODES
    from botocore.exceptions import ConnectionError as NoConnection  # noqa: PLC0415 - see _make
    from botocore.exceptions import HTTPClientError  # noqa: PLC0415

    return isinstance(exc, (NoConnection, HTTPClientError, OSError))  # no answer, timeout


# -- identities


def file_stat(relpath: str, size: int, last_modified: datetime, etag: str) -> FileStat:
    """An object's FileStat, the same on every node.

    mtime_ns is LastModified in whole seconds (what HEAD and LIST agree on) plus
    nanoseconds drawn from the ETag, so a local copy given that mtime also tells
    which version it holds; inode is a negative number from the ETag: "no inode".
    """
    digest = hashlib.sha256(etag.strip('"').encode()).digest()
    seconds = int(last_modified.timestamp())
    nanos = int.from_bytes(digest[:4], "big") % 1_000_000_000
    inode = -1 - (int.from_bytes(digest[4:12], "big") >> 2)
    return FileStat(relpath, size, seconds * 1_000_000_000 + nanos, inode)
