"""The S3 backend and the bucket's event log against a real store (SeaweedFS)."""

from __future__ import annotations

import hashlib
import os
import threading
import time
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import pytest

from pypid.events import EventLogError
from pypid.growing import BrokenDownload
from pypid.index.ledger import Ledger
from pypid.index.slots import slot_name
from pypid.manage import Actor, Manager, Policy
from pypid.manage.catalog import RootCatalog
from pypid.storage import FileStat, StorageError, s3sweep, s3upload
from pypid.storage.s3 import BucketRoot
from pypid.storage.s3cache import FileCache
from pypid.storage.s3client import BucketPlace
from pypid.storage.s3listing import parse_timestamp, read_listing
from pypid.storage.s3log import BucketLog
from tests.builders import make_wheel
from tests.s3store import BUCKET, SECRET_KEY, Store, credentials_env

pytestmark = pytest.mark.usefixtures("aws_env")


@pytest.fixture
def aws_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for key, value in credentials_env().items():
        monkeypatch.setenv(key, value)


MADE: list[BucketRoot] = []


@pytest.fixture(autouse=True)
def close_nodes() -> Iterator[None]:
    """Close every node's connections after each test (unclosed sockets are errors)."""
    yield
    while MADE:
        MADE.pop().close()


def node(store: Store, tmp: Path, prefix: str, name: str = "node",
         max_bytes: int = 1 << 30) -> BucketRoot:
    place = BucketPlace(store.endpoint, BUCKET, prefix, "us-east-1")
    made = BucketRoot(place, tmp / name / "root", FileCache(tmp / name / "copies", max_bytes))
    MADE.append(made)
    return made


@pytest.fixture
def prefix() -> str:
    return f"unit/{uuid.uuid4().hex[:10]}"


@pytest.fixture
def bucket(s3_store: Store, tmp_path: Path, prefix: str) -> Iterator[BucketRoot]:
    yield node(s3_store, tmp_path, prefix)


def store_bytes(root: BucketRoot, name: str, data: bytes, *, overwrite: bool = False) -> FileStat:
    incoming = root.incoming(len(data) + 1)
    try:
        incoming.write(data)
        return incoming.publish(name, overwrite=overwrite)
    finally:
        incoming.discard()


def test_upload_list_stat_read_and_remove(bucket: BucketRoot, tmp_path: Path) -> None:
    wheel = make_wheel(tmp_path / "dist", "demo", "1.0")
    stat = store_bytes(bucket, wheel.name, wheel.read_bytes())
    assert stat.size == wheel.stat().st_size and stat.inode < 0
    assert [s.relpath for s in bucket.iter_files()] == [wheel.name]
    assert bucket.stat(wheel.name) == stat  # HEAD and the upload agree
    assert next(iter(bucket.iter_files())).identity == stat.identity  # so does LIST
    # The upload's own bytes are this node's copy, stamped with the object's version.
    assert bucket.copies.holds(stat)
    with bucket.open(wheel.name) as handle:
        assert handle.read() == wheel.read_bytes()
    with bucket.removing(wheel.name):
        pass
    assert bucket.stat(wheel.name) is None
    assert not bucket.path.joinpath(wheel.name).exists()
    with pytest.raises(StorageError, match="no longer"), bucket.removing(wheel.name):
        pass


def test_a_taken_name_is_refused_and_keeps_its_bytes(bucket: BucketRoot) -> None:
    store_bytes(bucket, "demo-1.0.tar.gz", b"first")
    with pytest.raises(FileExistsError):
        store_bytes(bucket, "demo-1.0.tar.gz", b"second")
    with bucket.open("demo-1.0.tar.gz") as handle:
        assert handle.read() == b"first"
    stat = store_bytes(bucket, "demo-1.0.tar.gz", b"third!", overwrite=True)
    assert stat.size == 6


def test_an_overwrite_that_fails_puts_the_old_bytes_back(bucket: BucketRoot) -> None:
    """``keeping`` (an upload replacing a file with ``overwrite`` on): the old bytes come
    back if the block raises (its audit line could not be written), and no copy is left."""
    store_bytes(bucket, "demo-1.0.tar.gz", b"old bytes")
    with pytest.raises(RuntimeError), bucket.keeping("demo-1.0.tar.gz"):
        store_bytes(bucket, "demo-1.0.tar.gz", b"new bytes!", overwrite=True)
        raise RuntimeError("the record failed")
    with bucket.open("demo-1.0.tar.gz") as handle:
        assert handle.read() == b"old bytes"
    with bucket.keeping("demo-1.0.tar.gz"):
        store_bytes(bucket, "demo-1.0.tar.gz", b"new bytes!", overwrite=True)
    with bucket.open("demo-1.0.tar.gz") as handle:
        assert handle.read() == b"new bytes!"
    listed = bucket.clients.plain().list_objects_v2(Bucket=BUCKET, Prefix=bucket.place.top)
    assert [o["Key"] for o in listed.get("Contents", ())] == [
        bucket.place.key("demo-1.0.tar.gz")]


def test_stale_kept_copies_go_only_when_the_file_holds_them_again(bucket: BucketRoot) -> None:
    """A copy ``keeping`` left is deleted by the sweep once stale if the file holds the
    same bytes; another (a put-back that failed) may be the only copy: it stays."""
    client, top = bucket.clients.plain(), bucket.place.key(s3sweep.KEPT_DIR)
    store_bytes(bucket, "same-1.0.tar.gz", b"old bytes")
    store_bytes(bucket, "other-1.0.tar.gz", b"unrecorded new bytes")
    for name, data in (("same-1.0.tar.gz", b"old bytes"), ("other-1.0.tar.gz", b"old bytes"),
                       ("gone-1.0.tar.gz", b"old bytes")):
        client.put_object(Bucket=BUCKET, Key=top + name, Body=data)
    assert s3sweep.drop_stale_kept(client, bucket.place) == 0  # young: a replace may run
    assert s3sweep.drop_stale_kept(client, bucket.place, now=time.time() + 7200) == 1
    left = client.list_objects_v2(Bucket=BUCKET, Prefix=top).get("Contents", ())
    assert sorted(o["Key"][len(top):] for o in left) == ["gone-1.0.tar.gz", "other-1.0.tar.gz"]


def test_a_kept_copy_of_a_file_sent_in_parts_is_known_by_the_etag_it_noted(
        bucket: BucketRoot, monkeypatch: pytest.MonkeyPatch,
        caplog: pytest.LogCaptureFixture) -> None:
    """AWS makes a copy of an object sent in parts whole, with another ETag than the
    object's: the ETag noted at keeping tells the sweep that the file holds those bytes
    again. A copy of other bytes stays, and is named once, not at every sweep."""
    monkeypatch.setattr(s3upload, "MULTIPART_THRESHOLD", 6 << 20)
    monkeypatch.setattr(s3upload, "PART_SIZE", 5 << 20)
    data = os.urandom(11 << 20)
    store_bytes(bucket, "big-1.0.tar.gz", data)
    client, top = bucket.clients.plain(), bucket.place.key(s3sweep.KEPT_DIR)
    with monkeypatch.context() as killed:  # stopped before the copy was deleted
        killed.setattr(client, "delete_object", lambda **_: None)
        with bucket.keeping("big-1.0.tar.gz"):
            pass
    kept = client.head_object(Bucket=BUCKET, Key=top + "big-1.0.tar.gz")
    held = client.head_object(Bucket=BUCKET, Key=bucket.place.key("big-1.0.tar.gz"))
    assert kept["Metadata"][s3sweep.KEPT_ETAG_KEY] == held["ETag"]
    assert {k: v for k, v in kept["Metadata"].items() if k != s3sweep.KEPT_ETAG_KEY
            } == held["Metadata"]
    client.put_object(Bucket=BUCKET, Key=top + "big-1.0.tar.gz", Body=data,  # as AWS copies
                      Metadata=kept["Metadata"])
    assert client.head_object(Bucket=BUCKET, Key=top + "big-1.0.tar.gz")["ETag"] != held["ETag"]
    client.put_object(Bucket=BUCKET, Key=top + "other-1.0.tar.gz", Body=b"old bytes")
    store_bytes(bucket, "other-1.0.tar.gz", b"new bytes")
    later = time.time() + 7200
    assert s3sweep.drop_stale_kept(client, bucket.place, now=later) == 1
    assert s3sweep.drop_stale_kept(client, bucket.place, now=later) == 0
    left = client.list_objects_v2(Bucket=BUCKET, Prefix=top).get("Contents", ())
    assert [o["Key"][len(top):] for o in left] == ["other-1.0.tar.gz"]
    assert sum("holds older bytes" in r.getMessage() for r in caplog.records) == 1


def test_a_file_replaced_while_it_is_kept_fails_the_keep(
        bucket: BucketRoot, monkeypatch: pytest.MonkeyPatch) -> None:
    """The copy is of the bytes whose ETag it notes, or there is none: another node that
    replaced the file between the HEAD and the copy fails this keep."""
    store_bytes(bucket, "demo-1.0.tar.gz", b"old bytes")
    client = bucket.clients.plain()
    real = client.head_object

    def replaced_after(**request: object) -> dict[str, object]:
        answer = real(**request)
        monkeypatch.setattr(client, "head_object", real)  # once
        store_bytes(bucket, "demo-1.0.tar.gz", b"newer bytes", overwrite=True)
        return answer
    monkeypatch.setattr(client, "head_object", replaced_after)
    with pytest.raises(StorageError, match="PreconditionFailed"), \
            bucket.keeping("demo-1.0.tar.gz"):
        pass
    monkeypatch.undo()
    listed = client.list_objects_v2(Bucket=BUCKET, Prefix=bucket.place.key(s3sweep.KEPT_DIR))
    assert not listed.get("Contents")


def test_a_put_back_keeps_the_file_s_metadata(bucket: BucketRoot) -> None:
    client, key = bucket.clients.plain(), bucket.place.key("demo-1.0.tar.gz")
    client.put_object(Bucket=BUCKET, Key=key, Body=b"old bytes",  # as an import stores it
                      Metadata={s3upload.UPLOAD_TIME_KEY: "1700000000000000000"})
    before = client.head_object(Bucket=BUCKET, Key=key)["Metadata"]
    assert before
    with pytest.raises(RuntimeError), bucket.keeping("demo-1.0.tar.gz"):
        store_bytes(bucket, "demo-1.0.tar.gz", b"new bytes!", overwrite=True)
        raise RuntimeError("the record failed")
    assert client.head_object(Bucket=BUCKET, Key=key)["Metadata"] == before


def test_racing_nodes_store_exactly_one(s3_store: Store, tmp_path: Path, prefix: str) -> None:
    nodes = [node(s3_store, tmp_path, prefix, f"n{i}") for i in range(3)]
    barrier = threading.Barrier(12)
    won: list[int] = []
    lost: list[int] = []

    def race(i: int) -> None:
        barrier.wait(timeout=10)
        try:
            store_bytes(nodes[i % 3], "race-1.0.tar.gz", f"bytes {i}".encode())
            won.append(i)
        except FileExistsError:
            lost.append(i)

    threads = [threading.Thread(target=race, args=(i,)) for i in range(12)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    assert len(won) == 1 and len(lost) == 11
    with nodes[1].open("race-1.0.tar.gz") as handle:
        assert handle.read() == f"bytes {won[0]}".encode()


def test_large_upload_goes_in_parts_and_races_too(bucket: BucketRoot,
                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(s3upload, "MULTIPART_THRESHOLD", 6 << 20)
    monkeypatch.setattr(s3upload, "PART_SIZE", 5 << 20)
    data = os.urandom(11 << 20)
    stat = store_bytes(bucket, "big-1.0.tar.gz", data)
    assert stat.size == len(data)
    with pytest.raises(FileExistsError):
        store_bytes(bucket, "big-1.0.tar.gz", data[::-1])
    bucket.copies.drop("big-1.0.tar.gz")
    with bucket.open("big-1.0.tar.gz") as handle:
        assert hashlib.sha256(handle.read()).digest() == hashlib.sha256(data).digest()
    uploads = bucket.clients.plain().list_multipart_uploads(Bucket=BUCKET,
                                                             Prefix=bucket.place.top)
    assert not uploads.get("Uploads"), "a refused multipart upload was not aborted"


def test_local_copy_is_fetched_once_and_evicted_past_the_limit(
        s3_store: Store, tmp_path: Path, prefix: str) -> None:
    writer = node(s3_store, tmp_path, prefix, "writer")
    reader = node(s3_store, tmp_path, prefix, "reader", max_bytes=2500)
    stats = [store_bytes(writer, f"f{i}-1.0.tar.gz", bytes([i]) * 1000) for i in range(3)]
    for stat in stats:
        assert reader.local_copy(stat.relpath, stat.identity)
        copy = reader.path / stat.relpath
        assert copy.stat().st_mtime_ns == stat.mtime_ns
    held = [s for s in stats if (reader.path / s.relpath).exists()]
    assert 0 < len(held) < 3  # bounded: the oldest went
    assert not reader.local_copy("gone-1.0.tar.gz", stats[0].identity)


def test_listing_skips_pypid_objects_and_non_distributions(bucket: BucketRoot) -> None:
    client = bucket.clients.plain()
    for key in ("notes.txt", ".hidden/x-1.0.tar.gz", "sub/lib-1.0.tar.gz"):
        client.put_object(Bucket=BUCKET, Key=bucket.place.key(key), Body=b"x")
    bucket.event_log().append("status", user="cli:test", project="p", status="archived")
    assert sorted(s.relpath for s in bucket.iter_files()) == ["sub/lib-1.0.tar.gz"]


def test_wrong_credentials_fail_without_showing_them(bucket: BucketRoot,
                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "wrong-secret-xyz")
    fresh = BucketRoot(bucket.place, bucket.node_root, bucket.copies)
    MADE.append(fresh)
    with pytest.raises(StorageError) as info:
        list(fresh.iter_files())
    assert "wrong-secret-xyz" not in str(info.value) and SECRET_KEY not in str(info.value)
    assert fresh.check_readable() is not None
    with pytest.raises(EventLogError) as again:
        fresh.event_log().append("status", user="u", project="p", status="archived")
    assert "wrong-secret-xyz" not in str(again.value)


# -- the bucket's event log


def test_log_lines_chain_across_nodes_and_are_read_by_offset(s3_store: Store, tmp_path: Path,
                                                             prefix: str) -> None:
    one = node(s3_store, tmp_path, prefix, "one").event_log()
    two = node(s3_store, tmp_path, prefix, "two").event_log()
    assert one.append("yank", user="alice", file="a-1.0.tar.gz", reason="bad").seq == 1
    assert two.append("unyank", user="bob", file="a-1.0.tar.gz").seq == 2  # found 1 first
    assert one.append("status", user="alice", project="a", status="archived").seq == 3
    events, offset = two.read(0)
    assert [e.seq for e in events] == [1, 2, 3] and offset == 3
    assert two.read(offset) == ([], 3)
    assert one.verify() == (3, None)
    assert [e.action for e in one.scan()] == ["yank", "unyank", "status"]


def test_racing_appends_take_distinct_seqs(s3_store: Store, tmp_path: Path, prefix: str) -> None:
    logs = [node(s3_store, tmp_path, prefix, f"n{i}").event_log() for i in range(3)]
    barrier = threading.Barrier(9)
    seqs: list[int] = []

    def write(i: int) -> None:
        barrier.wait(timeout=10)
        for _ in range(3):
            seqs.append(logs[i % 3].append("owner-add", user="u", project="p",
                                           owner=f"o{i}").seq)

    threads = [threading.Thread(target=write, args=(i,)) for i in range(9)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=120)
    assert sorted(seqs) == list(range(1, 28))
    assert logs[0].verify() == (27, None)


def test_verify_finds_an_edited_or_missing_line(s3_store: Store, tmp_path: Path,
                                                prefix: str) -> None:
    bucket = node(s3_store, tmp_path, prefix)
    log = bucket.event_log()
    assert isinstance(log, BucketLog)
    for owner in ("a", "b", "c"):
        log.append("owner-add", user="u", project="p", owner=owner)
    client = bucket.clients.plain()
    key = log._key(2)  # noqa: SLF001 - the test edits the store behind pypid's back
    line = client.get_object(Bucket=BUCKET, Key=key)["Body"].read()
    client.put_object(Bucket=BUCKET, Key=key, Body=line.replace(b'"b"', b'"x"'))
    assert log.verify() == (2, "line 3: its prev hash does not match line 2")
    client.delete_object(Bucket=BUCKET, Key=key)
    assert log.verify() == (1, "line 2: missing (the next line is 3)")


def test_a_restarted_node_reads_old_lines_from_its_copy(s3_store: Store, tmp_path: Path,
                                                        prefix: str) -> None:
    writer = node(s3_store, tmp_path, prefix, "writer").event_log()
    for owner in ("a", "b", "c"):
        writer.append("owner-add", user="u", project="p", owner=owner)
    reader_root = node(s3_store, tmp_path, prefix, "reader")
    assert [e.seq for e in reader_root.event_log().read(0)[0]] == [1, 2, 3]
    writer.append("owner-add", user="u", project="p", owner="d")
    again = node(s3_store, tmp_path, prefix, "reader")  # the same node, started again
    gets: list[str] = []
    again.clients.plain().meta.events.register(
        "before-call.s3.GetObject", lambda params, **_: gets.append(params["url_path"]))
    log = again.event_log()
    events, offset = log.read(0)
    assert [e.seq for e in events] == [1, 2, 3] and len(gets) == 1  # only its last line
    events, offset = log.read(offset)
    assert [e.seq for e in events] == [4] and len(gets) == 2  # the new line: from the store
    assert log.read(offset) == ([], 4)
    # A copy that no longer matches the bucket is dropped, not believed.
    mirror = log.mirror
    assert mirror is not None and mirror.last()[0] == 4
    mirror.path.write_bytes(mirror.path.read_bytes().replace(b'"d"', b'"x"'))
    fresh = node(s3_store, tmp_path, prefix, "reader").event_log()
    assert [e.get("owner") for e in fresh.read(0)[0]] == ["a", "b", "c", "d"]


def test_sweep_removes_what_a_killed_process_left(tmp_path: Path) -> None:
    copies = FileCache(tmp_path / "copies", 1 << 20)
    for name in (".pypid-copy-1a2b", ".pypid-upload-3c4d", "kept-1.0.tar.gz"):
        copies.path(name).parent.mkdir(parents=True, exist_ok=True)
        copies.path(name).write_bytes(b"x")
    assert copies.sweep() == 2
    assert [p.name for p in copies.directory.iterdir()] == ["kept-1.0.tar.gz"]


LISTING = (b'<?xml version="1.0" encoding="UTF-8"?>\n<ListBucketResult xmlns="http://s3.amazonaws'
           b'.com/doc/2006-03-01/"><Name>b</Name><Prefix>p/</Prefix><KeyCount>2</KeyCount>'
           b'<MaxKeys>1000</MaxKeys><IsTruncated>true</IsTruncated><EncodingType>url'
           b'</EncodingType><NextContinuationToken>tok</NextContinuationToken><Contents><Key>'
           b'p/a%2Bb-1.0.tar.gz</Key><LastModified>2026-12-05T09:20:11.5Z</LastModified><ETag>'
           b'&quot;e1&quot;</ETag><Size>12</Size><StorageClass>STANDARD</StorageClass>'
           b'<Owner><ID>x</ID></Owner></Contents><CommonPrefixes><Prefix>p/sub/</Prefix>'
           b'</CommonPrefixes></ListBucketResult>')


def test_a_listing_page_reads_as_botocore_reads_it() -> None:
    page = read_listing(LISTING)
    assert page is not None
    assert {k: page[k] for k in ("Name", "KeyCount", "MaxKeys", "IsTruncated", "EncodingType",
                                 "NextContinuationToken")} == {
        "Name": "b", "KeyCount": 2, "MaxKeys": 1000, "IsTruncated": True,
        "EncodingType": "url", "NextContinuationToken": "tok"}
    [entry] = page["Contents"]
    assert entry["Key"] == "p/a%2Bb-1.0.tar.gz"  # botocore's own handler decodes it after
    assert (entry["ETag"], entry["Size"], entry["StorageClass"]) == ('"e1"', 12, "STANDARD")
    assert entry["LastModified"] == datetime(2026, 12, 5, 9, 20, 11, 500000, UTC)
    assert page["CommonPrefixes"] == [{"Prefix": "p/sub/"}]
    assert read_listing(b"<Error><Code>NoSuchBucket</Code></Error>") is None
    assert read_listing(b"not xml") is None
    # HEAD's Last-Modified is another form: botocore's parser reads it.
    assert parse_timestamp("Sat, 05 Dec 2026 09:20:11 GMT").timestamp() == \
        datetime(2026, 12, 5, 9, 20, 11, tzinfo=UTC).timestamp()


def test_abandoned_multipart_uploads_are_aborted_once_idle(
        bucket: BucketRoot, s3_store: Store, monkeypatch: pytest.MonkeyPatch) -> None:
    """An upload a killed node left (started, one part sent) is spared while it may still
    be alive, and aborted once idle for STALE_SECONDS; another prefix's is not touched."""
    monkeypatch.delenv(s3sweep.STALE_ENV, raising=False)
    client = bucket.clients.plain()
    place = bucket.place
    started = []
    for key in (place.key("big-1.0.tar.gz"), f"other-{place.prefix}/big-1.0.tar.gz"):
        upload_id = client.create_multipart_upload(Bucket=BUCKET, Key=key)["UploadId"]
        client.upload_part(Bucket=BUCKET, Key=key, UploadId=upload_id, PartNumber=1,
                           Body=b"x" * 1024)
        started.append((key, upload_id))

    def left() -> list[str]:
        answer = client.list_multipart_uploads(Bucket=BUCKET, Prefix=place.top)
        return [upload["Key"] for upload in answer.get("Uploads", [])]

    assert s3sweep.abort_abandoned(client, place) == 0  # just sent: maybe alive
    assert left() == [started[0][0]]
    later = time.time() + s3sweep.STALE_SECONDS + 60
    assert s3sweep.abort_abandoned(client, place, now=later) == 1
    assert left() == []
    assert s3sweep.abort_abandoned(client, place, now=later) == 0
    key, upload_id = started[1]
    assert client.list_parts(Bucket=BUCKET, Key=key, UploadId=upload_id)["Parts"]
    client.abort_multipart_upload(Bucket=BUCKET, Key=key, UploadId=upload_id)


def test_a_release_slot_is_claimed_once_across_spellings(
        bucket: BucketRoot, monkeypatch: pytest.MonkeyPatch) -> None:
    """The first stored spelling holds the slot; a claim whose file never came is freed by
    its uploader, or void once stale."""
    monkeypatch.delenv(s3sweep.STALE_ENV, raising=False)
    slot = slot_name("Foo_Bar-1.0.tar.gz")
    store_bytes(bucket, "Foo_Bar-1.0.tar.gz", b"first")
    assert bucket.claim(slot, "Foo_Bar-1.0.tar.gz") is None
    assert bucket.claim(slot, "Foo_Bar-1.0.tar.gz") is None  # the same file again
    assert bucket.claim(slot, "foo.bar-1.0.tar.gz") == "Foo_Bar-1.0.tar.gz"
    bucket.unclaim(slot, "Foo_Bar-1.0.tar.gz")  # stored: its claim stays
    assert bucket.claim(slot, "foo.bar-1.0.tar.gz") == "Foo_Bar-1.0.tar.gz"

    other = slot_name("Baz-2.0.tar.gz")
    assert bucket.claim(other, "Baz-2.0.tar.gz") is None  # its bytes never come
    assert bucket.claim(other, "baz-2.0.tar.gz") == "Baz-2.0.tar.gz"  # maybe still coming
    bucket.unclaim(other, "Baz-2.0.tar.gz")  # its upload failed
    assert bucket.claim(other, "baz-2.0.tar.gz") is None
    monkeypatch.setenv(s3sweep.STALE_ENV, "0")  # a killed node's claim: void once stale
    assert bucket.claim(other, "BAZ-2.0.tar.gz") is None


def test_a_removed_file_frees_its_release_claim(
        bucket: BucketRoot, monkeypatch: pytest.MonkeyPatch) -> None:
    """As on a local root, once a file is removed another spelling of its release may be
    uploaded at once (its claim does not hold the slot until it is stale)."""
    monkeypatch.delenv(s3sweep.STALE_ENV, raising=False)
    slot = slot_name("Foo_Bar-1.0.tar.gz")
    store_bytes(bucket, "Foo_Bar-1.0.tar.gz", b"first")
    assert bucket.claim(slot, "Foo_Bar-1.0.tar.gz") is None
    events = bucket.event_log()
    manager = Manager(bucket, events, Ledger(events), RootCatalog(bucket),
                      policy=Policy(frozenset(), project_owners=False), users=list)
    manager.remove(Actor("cli:root", None, admin=True), manager.find("foo-bar==1.0"))
    assert bucket.stat("Foo_Bar-1.0.tar.gz") is None
    assert bucket.claim(slot, "foo.bar-1.0.tar.gz") is None


class GatedBody:
    """An object's body that hands out ``data`` in chunks, each when the test allows it,
    and then raises ``fail`` (or ends)."""

    def __init__(self, data: bytes, fail: Exception | None = None) -> None:
        self.chunks = [data[i:i + 1000] for i in range(0, len(data), 1000)]
        self.fail = fail
        self.allowed = threading.Semaphore(0)
        self.closed = False

    def read(self, _size: int) -> bytes:
        assert self.allowed.acquire(timeout=10)
        if self.chunks:
            return self.chunks.pop(0)
        if self.fail is not None:
            raise self.fail
        return b""

    def close(self) -> None:
        self.closed = True


def follow_gated(copies: FileCache, want: FileStat, body: GatedBody,
                 gets: list[int]) -> tuple[object, object]:
    def get() -> tuple[FileStat, GatedBody]:
        gets.append(1)
        return want, body
    return copies.follow(want, get), copies.follow(want, get)


def test_a_copy_streams_to_every_reader_while_one_download_fills_it(tmp_path: Path) -> None:
    copies = FileCache(tmp_path / "copies", 1 << 20)
    data = os.urandom(5500)
    want = FileStat("a/demo-1.0.tar.gz", len(data), 1_700_000_000_123_456_789, -5)
    body, gets = GatedBody(data), []
    first, second = follow_gated(copies, want, body, gets)
    assert first is not None and second is not None
    body.allowed.release()
    assert first.first_bytes() is None  # the first chunk is readable ...
    part = copies.path(want.relpath).with_name(".pypid-copy-demo-1.0.tar.gz.part")
    assert part.exists() and not copies.path(want.relpath).exists()  # ... the copy is not
    assert not copies.holds(want)
    for _ in range(10):
        body.allowed.release()
    assert b"".join(first.chunks()) == data == b"".join(second.chunks())
    assert gets == [1] and body.closed  # one download for both
    assert copies.holds(want) and not part.exists()
    assert copies.follow(want, lambda: pytest.fail("downloaded again")) is None


@pytest.mark.parametrize("fail", [OSError("connection reset"), None])
def test_a_broken_or_short_download_keeps_nothing_and_cuts_its_readers(
        tmp_path: Path, fail: Exception | None) -> None:
    """Mid-way, the store's connection breaks (or its body ends early): every reader's
    stream raises before its end, and neither the part nor a copy is left."""
    copies = FileCache(tmp_path / "copies", 1 << 20)
    data = os.urandom(5500)
    want = FileStat("demo-1.0.tar.gz", len(data) + (0 if fail else 100), 1_700_000_000, -5)
    body, gets = GatedBody(data, fail), []
    first, second = follow_gated(copies, want, body, gets)
    assert first is not None and second is not None
    for _ in range(10):
        body.allowed.release()
    got = bytearray()
    with pytest.raises(BrokenDownload):
        for chunk in first.chunks():
            got += chunk
    assert len(got) < want.size and data.startswith(bytes(got))
    with pytest.raises(BrokenDownload):
        b"".join(second.chunks())
    assert list(copies.directory.iterdir()) == []
    assert not copies.holds(want)


def test_a_copy_of_another_version_is_refused_before_any_byte(tmp_path: Path) -> None:
    copies = FileCache(tmp_path / "copies", 1 << 20)
    want = FileStat("demo-1.0.tar.gz", 10, 1_700_000_000, -5)
    now = FileStat("demo-1.0.tar.gz", 10, 1_700_000_001, -6)
    body = GatedBody(b"0123456789")
    follower = copies.follow(want, lambda: (now, body))
    assert follower is not None
    error = follower.first_bytes()
    assert error is not None and error.status == 404 and "another version" in str(error)
    follower.close()
    assert list(copies.directory.iterdir()) == [] and body.closed


def test_local_copy_joins_the_download_and_waits_for_the_whole(bucket: BucketRoot) -> None:
    data = os.urandom(300_000)
    stat = store_bytes(bucket, "demo-2.0.tar.gz", data)
    bucket.copies.drop(stat.relpath)  # the upload's own copy: this node is another
    follower = bucket.follow(stat.relpath, stat.identity)
    assert follower is not None
    assert bucket.local_copy(stat.relpath, stat.identity)
    assert bucket.copies.path(stat.relpath).read_bytes() == data
    assert b"".join(follower.chunks()) == data
    assert bucket.follow(stat.relpath, stat.identity) is None


def test_sweep_keeps_the_part_file_of_a_running_download(tmp_path: Path) -> None:
    copies = FileCache(tmp_path / "copies", 1 << 20)
    want = FileStat("demo-1.0.tar.gz", 10, 1_700_000_000, -5)
    body = GatedBody(b"0123456789")
    follower = copies.follow(want, lambda: (want, body))
    assert follower is not None
    assert copies.sweep() == 0  # the download holds its part
    body.allowed.release()
    body.allowed.release()
    assert b"".join(follower.chunks()) == b"0123456789"
