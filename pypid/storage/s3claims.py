"""Which file holds a release slot, decided across nodes: one claim object per slot,
``.pypid/claims/<project>/<digest of the slot>``, naming its file.

``Foo_Bar-1.0.tar.gz`` and ``foo.bar-1.0.tar.gz`` are different keys, so the conditional
create of the file cannot keep them apart; the claim's key is the same for both. An
upload creates the claim (``If-None-Match: *``) once its file is stored: the node that
loses finds another file named there, deletes its own object (which no log line ever
named, so no node showed it) and answers 409. A claim thus names a stored file, but
for an upload that failed after it (its node frees it) or was killed then: a claim whose
file is still absent after ``s3sweep.stale_seconds()`` is void, and the next upload of
the slot replaces it. (Two uploads of two spellings meeting one void claim in the same
instant could both pass; that needs a node killed at that step first.)
"""

from __future__ import annotations

import hashlib
import json
import time
from typing import Any

from pypid.storage.base import StorageError
from pypid.storage.s3client import (
    BucketPlace,
    Clients,
    client_errors,
    is_missing,
    is_taken,
    storage_error,
)
from pypid.storage.s3sweep import stale_seconds

CLAIMS_DIR = ".pypid/claims/"
TRIES = 5  # a claim freed or voided between our create and our read: create again


def claim_key(place: BucketPlace, slot: str) -> str:
    """The claim's key for ``slot`` ("project/..."), the same for every spelling."""
    project = slot.split("/", 1)[0]
    return place.key(f"{CLAIMS_DIR}{project}/{hashlib.sha256(slot.encode()).hexdigest()[:40]}")


def claim_slot(clients: Clients, place: BucketPlace, slot: str, filename: str) -> str | None:
    """Make ``filename`` (stored already) the holder of ``slot``; None when it is (now or
    before), else the holder's name. StorageError when the store cannot say."""
    key = claim_key(place, slot)
    body = json.dumps({"file": filename, "slot": slot}).encode()
    doing = f"claim the release of {filename}"
    for _try in range(TRIES):
        try:
            clients.create_only().put_object(Bucket=place.bucket, Key=key, Body=body,
                                             ContentLength=len(body),
                                             ContentType="application/json")
            return None
        except client_errors() as exc:
            if not is_taken(exc):
                raise storage_error(exc, place, doing) from None
        holder, age = _read(clients.plain(), place, key, doing)
        if holder == filename:
            return None
        if holder is None:
            continue  # freed meanwhile
        if age < stale_seconds() or _exists(clients.plain(), place, holder, doing):
            return holder
        _delete(clients.plain(), place, key, doing)  # void: its file never came
    raise StorageError(f"{place.describe()}: cannot {doing}: it changed {TRIES} times")


def unclaim_slot(clients: Clients, place: BucketPlace, slot: str, filename: str) -> None:
    """``filename``'s upload failed after its claim: free the claim if it names that file
    and the file is not stored (by another node's upload of the same name)."""
    key = claim_key(place, slot)
    doing = f"free the release of {filename}"
    holder, _age = _read(clients.plain(), place, key, doing)
    if holder == filename and not _exists(clients.plain(), place, filename, doing):
        _delete(clients.plain(), place, key, doing)


def _read(client: Any, place: BucketPlace, key: str, doing: str) -> tuple[str | None, float]:
    """The claim's file name and age in seconds; (None, 0) when there is no claim."""
    try:
        answer = client.get_object(Bucket=place.bucket, Key=key)
        with answer["Body"] as body:
            holder = json.loads(body.read())["file"]
    except client_errors() as exc:
        if is_missing(exc):
            return None, 0.0
        raise storage_error(exc, place, doing) from None
    except (ValueError, KeyError, TypeError):
        raise StorageError(f"{place.describe()}: cannot {doing}: the claim {key} is not "
                           "one pypid wrote") from None
    if not isinstance(holder, str) or not holder:
        raise StorageError(f"{place.describe()}: cannot {doing}: the claim {key} names no file")
    return holder, time.time() - answer["LastModified"].timestamp()


def _exists(client: Any, place: BucketPlace, filename: str, doing: str) -> bool:
    try:
        client.head_object(Bucket=place.bucket, Key=place.key(filename))
    except client_errors() as exc:
        if is_missing(exc):
            return False
        raise storage_error(exc, place, doing) from None
    return True


def _delete(client: Any, place: BucketPlace, key: str, doing: str) -> None:
    try:
        client.delete_object(Bucket=place.bucket, Key=key)
    except client_errors() as exc:
        if not is_missing(exc):
            raise storage_error(exc, place, doing) from None
