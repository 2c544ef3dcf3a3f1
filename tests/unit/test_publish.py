"""publish(): the cache row, then the link, then this process shows it; nothing left on failure.
Also the storage interface and FileIdentity it relies on."""

from __future__ import annotations

import hashlib
import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from pypid.index import Index, Marks, Published, publish
from pypid.storage import (
    FileIdentity,
    FileStat,
    IncomingFile,
    PackageRoot,
    Storage,
    StorageError,
    UnsafePathError,
)
from tests.builders import make_wheel


@pytest.fixture
def index(root: Path) -> Iterator[Index]:
    made = Index(PackageRoot(root))
    made.load()
    yield made
    made.close()


def receive(index: Index, path: Path) -> tuple[IncomingFile, str]:
    incoming = PackageRoot(index.root.path).incoming(1 << 30)
    data = path.read_bytes()
    incoming.write(data)
    return incoming, hashlib.sha256(data).hexdigest()


def publish_file(index: Index, path: Path, *, overwrite: bool = False) -> Published:
    incoming, sha256 = receive(index, path)
    try:
        return publish(index, incoming, path.name, sha256=sha256, metadata=b"Name: p\n",
                       requires_python=">=3.9", overwrite=overwrite, upload_time=1.5)
    finally:
        incoming.discard()


def test_published_file_is_cached_and_shown(index: Index, root: Path, tmp_path: Path) -> None:
    wheel = make_wheel(tmp_path, "p", "1.0")
    published = publish_file(index, wheel)
    assert published.stored and published.size == wheel.stat().st_size
    entry = index.file(wheel.name)
    assert entry is not None
    assert entry.identity == FileIdentity.of(os.stat(root / wheel.name))
    assert entry.upload_time == 1.5 and entry.requires_python == ">=3.9"
    row = index.cache.get(wheel.name)
    assert row is not None and row.identity == entry.identity
    assert row.metadata_sha256 == hashlib.sha256(b"Name: p\n").hexdigest()


def test_taken_name_reports_its_holder(index: Index, root: Path, tmp_path: Path) -> None:
    wheel = make_wheel(tmp_path, "p", "1.0")
    publish_file(index, wheel)
    other = make_wheel(tmp_path / "other", "p", "1.0", payload=b"other bytes")
    published = publish_file(index, other)
    assert not published.stored
    assert published.holder_sha256 == hashlib.sha256(wheel.read_bytes()).hexdigest()
    assert (root / wheel.name).read_bytes() == wheel.read_bytes()


def test_name_taken_by_a_file_not_indexed_yet(index: Index, root: Path, tmp_path: Path) -> None:
    wheel = make_wheel(root, "p", "1.0")  # copied in after the load; no watcher
    other = make_wheel(tmp_path, "p", "1.0", payload=b"other bytes")
    published = publish_file(index, other)
    assert not published.stored
    assert published.holder_sha256 == hashlib.sha256(wheel.read_bytes()).hexdigest()


def test_failed_link_leaves_no_row(index: Index, root: Path, tmp_path: Path,
                                   monkeypatch: pytest.MonkeyPatch) -> None:
    wheel = make_wheel(tmp_path, "p", "1.0")

    def broken(self: IncomingFile, relpath: str, *, overwrite: bool) -> FileStat:
        raise StorageError("disk on fire")

    monkeypatch.setattr(IncomingFile, "publish", broken)
    with pytest.raises(StorageError):
        publish_file(index, wheel)
    assert index.cache.get(wheel.name) is None
    assert index.file(wheel.name) is None
    assert list(root.iterdir()) == [root / ".pypid"]


def test_unsafe_name_is_refused(index: Index, tmp_path: Path) -> None:
    wheel = make_wheel(tmp_path, "p", "1.0")
    incoming, sha256 = receive(index, wheel)
    with pytest.raises(UnsafePathError):
        publish(index, incoming, "../p-1.0-py3-none-any.whl", sha256=sha256, metadata=None,
                requires_python=None, overwrite=False)
    incoming.discard()


def test_marks_enter_through_apply_marks(index: Index, tmp_path: Path) -> None:
    wheel = make_wheel(tmp_path, "p", "1.0")
    publish_file(index, wheel)
    index.apply_marks(Marks(yanks={wheel.name: "broken"}))
    assert (entry := index.file(wheel.name)) is not None and entry.yanked == "broken"
    assert [e.yanked for e in index.files("p") or ()] == ["broken"]
    index.apply_marks(Marks())
    assert (entry := index.file(wheel.name)) is not None and entry.yanked is None


def test_identity_of_a_stat(tmp_path: Path) -> None:
    path = tmp_path / "f"
    path.write_bytes(b"abc")
    st = os.stat(path)
    identity = FileIdentity.of(st)
    assert identity == (3, st.st_mtime_ns, st.st_ino)
    assert FileStat.of("f", st).identity == identity
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns + 1))
    assert FileIdentity.of(os.stat(path)) != identity


def test_local_root_is_a_storage(root: Path) -> None:
    storage: Storage = PackageRoot(root)
    assert storage.upload_relpath("p-1.0.tar.gz") == "p-1.0.tar.gz"
    for bad in ("../p-1.0.tar.gz", ".p-1.0.tar.gz", "a/p-1.0.tar.gz"):
        with pytest.raises(UnsafePathError):
            storage.upload_relpath(bad)
    assert not storage.exists("p-1.0.tar.gz")
    (root / "p-1.0.tar.gz").write_bytes(b"x")
    assert storage.exists("p-1.0.tar.gz")
    with storage.open("p-1.0.tar.gz") as handle:
        assert handle.read() == b"x"
