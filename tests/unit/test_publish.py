"""publish(): the cache row, then the link, then this process shows it; nothing left on failure.
Also the storage interface and FileIdentity it relies on."""

from __future__ import annotations

import hashlib
import os
import sqlite3
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from pypid.auth import Htpasswd
from pypid.config import defaults
from pypid.distfile import InvalidFilenameError
from pypid.index import Index, Marks, Published, publish
from pypid.index.slots import file_name_start, release_slot
from pypid.manage import Actor, for_server
from pypid.storage import (
    FileIdentity,
    FileStat,
    IncomingFile,
    NoSpaceError,
    PackageRoot,
    Storage,
    StorageError,
    UnsafePathError,
)
from pypid.storage.incoming import UPLOAD_PREFIX
from tests.builders import make_sdist, make_wheel


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


# -- release slots: "already exists" compares normalized names and PEP 440 versions

SLOTS = [
    ("wheel-case", "foo-1.0-py3-none-any.whl", "FOO-1.0-py3-none-any.whl", True),
    ("wheel-dot-name", "foo_bar-1.0-py3-none-any.whl", "foo.bar-1.0-py3-none-any.whl", True),
    ("wheel-version-zeros", "foo-1.0-py3-none-any.whl", "foo-1.0.0-py3-none-any.whl", True),
    ("wheel-tag-order", "foo-1.0-py2.py3-none-any.whl", "foo-1.0-py3.py2-none-any.whl", True),
    ("wheel-other-tag", "foo-1.0-py3-none-any.whl", "foo-1.0-py2-none-any.whl", False),
    ("wheel-build-tag", "foo-1.0-py3-none-any.whl", "foo-1.0-1-py3-none-any.whl", False),
    ("sdist-version-zeros", "foo-1.0.tar.gz", "foo-1.0.0.tar.gz", True),
    ("sdist-zip-beside-tar", "foo-1.0.tar.gz", "Foo-1.0.zip", True),
    ("sdist-legacy-name", "foo-bar-1.0.tar.gz", "foo_bar-1.0.0.zip", True),
    ("sdist-other-version", "foo-1.0.tar.gz", "foo-1.0.post1.tar.gz", False),
    ("sdist-and-wheel", "foo-1.0.tar.gz", "foo-1.0-py3-none-any.whl", False),
    ("other-project", "foo-1.0.tar.gz", "foobar-1.0.tar.gz", False),
]


@pytest.mark.parametrize(("case", "one", "other", "same"), SLOTS, ids=[s[0] for s in SLOTS])
def test_release_slot(case: str, one: str, other: str, same: bool) -> None:
    assert (release_slot(one) == release_slot(other)) is same
    start = file_name_start(release_slot(one).project)
    if same:
        assert start.match(other)


@pytest.mark.parametrize("name", ["foo-1.0\u2003.tar.gz", "\u212aelvin-1.0.tar.gz",
                                  "foo-1.0.po\u017ft1.tar.gz", "foo-\u0661.0.tar.gz"])
def test_non_ascii_names_are_not_distributions(name: str) -> None:
    with pytest.raises(InvalidFilenameError, match="not an ASCII name"):
        release_slot(name)


def publish_as(index: Index, path: Path, filename: str, *, overwrite: bool = False) -> Published:
    incoming, sha256 = receive(index, path)
    try:
        return publish(index, incoming, filename, sha256=sha256, metadata=None,
                       requires_python=None, overwrite=overwrite)
    finally:
        incoming.discard()


@pytest.mark.parametrize(("first", "second"), [
    ("p-1.0-py3-none-any.whl", "P-1.0-py3-none-any.whl"),
    ("p-1.0-py3-none-any.whl", "p-1.0.0-py3-none-any.whl"),
    ("p-1.0.tar.gz", "p-1.0.zip"),
    ("p-1.0.tar.gz", "P-1.0.0.tar.gz"),
], ids=["case", "zeros", "zip-after-tar", "sdist-zeros"])
def test_another_spelling_is_refused_naming_the_holder(index: Index, root: Path, tmp_path: Path,
                                                      first: str, second: str) -> None:
    data = make_wheel(tmp_path, "p", "1.0")
    assert publish_as(index, data, first).stored
    published = publish_as(index, data, second)  # even the same bytes: the slot is taken
    assert not published.stored
    assert published.holder == first
    assert published.holder_sha256 == hashlib.sha256(data.read_bytes()).hexdigest()
    assert sorted(p.name for p in root.iterdir()) == [".pypid", first]


def test_another_spelling_not_indexed_yet_is_found_on_disk(index: Index, root: Path,
                                                         tmp_path: Path) -> None:
    """Another worker's upload of a moment ago: on disk, not yet in this index."""
    wheel = make_wheel(tmp_path, "p", "1.0")
    (root / "P-1.0-py3-none-any.whl").write_bytes(wheel.read_bytes())
    assert index.files("p") is None
    published = publish_as(index, wheel, "p-1.0-py3-none-any.whl")
    assert not published.stored and published.holder == "P-1.0-py3-none-any.whl"


def test_with_a_gate_the_log_names_another_process_upload(index: Index, root: Path,
                                                          tmp_path: Path) -> None:
    """Under a gate the log, caught up under the publish lock, stands in for the scan of
    the upload folder: another process's upload (on disk, in the log, not in this index)
    holds the slot; a name the log recorded but that is gone does not."""
    wheel = make_wheel(tmp_path, "p", "1.0")
    (root / "P-1.0-py3-none-any.whl").write_bytes(wheel.read_bytes())
    events = index.ledger.events
    events.append("upload", user="bob", project="p", file="P-1.0-py3-none-any.whl")
    events.append("upload", user="bob", project="p", file="p-2.0.tar.gz")  # gone since
    manager = for_server(defaults(), index, Htpasswd(tmp_path / "htpasswd"),
                         changed=lambda _removed: None)
    gate = manager.upload_gate(Actor("cli:root", admin=True))
    incoming, sha256 = receive(index, wheel)
    try:
        published = publish(index, incoming, "p-1.0-py3-none-any.whl", sha256=sha256,
                             metadata=None, requires_python=None, overwrite=False, gate=gate)
    finally:
        incoming.discard()
    assert not published.stored and published.holder == "P-1.0-py3-none-any.whl"
    sdist = make_sdist(tmp_path, "p", "2.0")
    incoming, sha256 = receive(index, sdist)
    try:
        assert publish(index, incoming, "p-2.0.tar.gz", sha256=sha256, metadata=None,
                       requires_python=None, overwrite=False, gate=gate).stored
    finally:
        incoming.discard()


def test_other_tags_and_subfolder_spellings(index: Index, root: Path, tmp_path: Path) -> None:
    wheel = make_wheel(tmp_path, "p", "1.0")
    assert publish_as(index, wheel, "p-1.0-py3-none-any.whl").stored
    assert publish_as(index, wheel, "p-1.0-py2-none-any.whl").stored
    make_sdist(root / "sub", "p", "2.0")
    index.load()
    published = publish_as(index, wheel, "P-2.0.0.tar.gz")
    assert not published.stored and published.holder == "p-2.0.tar.gz"


def test_overwrite_replaces_every_spelling(index: Index, root: Path, tmp_path: Path) -> None:
    old = make_wheel(tmp_path / "old", "p", "1.0")
    new = make_wheel(tmp_path / "new", "p", "1.0", payload=b"new bytes")
    assert publish_as(index, old, "P-1.0.0-py3-none-any.whl").stored
    published = publish_as(index, new, "p-1.0-py3-none-any.whl", overwrite=True)
    assert published.stored
    assert sorted(p.name for p in root.iterdir()) == [".pypid", "p-1.0-py3-none-any.whl"]
    assert (root / "p-1.0-py3-none-any.whl").read_bytes() == new.read_bytes()
    assert [e.filename for e in index.files("p") or ()] == ["p-1.0-py3-none-any.whl"]
    assert index.cache.get("P-1.0.0-py3-none-any.whl") is None


def test_overwrite_in_place_keeps_the_subfolder(index: Index, root: Path, tmp_path: Path) -> None:
    (root / "sub").mkdir()
    old = make_wheel(root / "sub", "p", "1.0")
    index.load()
    new = make_wheel(tmp_path, "p", "1.0", payload=b"new bytes")
    assert publish_as(index, new, old.name, overwrite=True).stored
    assert old.read_bytes() == new.read_bytes()
    assert not (root / old.name).exists()


class _FullLog:
    """A gate whose log cannot take the upload's line (a full disk)."""

    def admit(self, filename: str, sha256: str) -> None:
        pass

    def record(self, filename: str, sha256: str, size: int) -> None:
        raise NoSpaceError("no space left for the audit log")


def test_unrecorded_overwrite_keeps_the_old_file(index: Index, root: Path,
                                                  tmp_path: Path) -> None:
    """An overwrite in place whose record fails puts the old bytes back (it used to
    delete both the old file and the new one)."""
    old = make_wheel(root, "p", "1.0")
    before = old.read_bytes()
    index.load()
    new = make_wheel(tmp_path, "p", "1.0", payload=b"new bytes")
    incoming, sha256 = receive(index, new)
    try:
        with pytest.raises(NoSpaceError):
            publish(index, incoming, old.name, sha256=sha256, metadata=None,
                    requires_python=None, overwrite=True, gate=_FullLog())
    finally:
        incoming.discard()
    assert sorted(p.name for p in root.iterdir()) == [".pypid", old.name]
    assert old.read_bytes() == before
    assert [e.filename for e in index.files("p") or ()] == [old.name]
    assert index.cache.get(old.name) is not None


def test_failed_overwrite_leaves_no_staged_link(index: Index, root: Path, tmp_path: Path,
                                                monkeypatch: pytest.MonkeyPatch) -> None:
    (root / "sub").mkdir()
    old = make_wheel(root / "sub", "p", "1.0")
    index.load()
    new = make_wheel(tmp_path, "p", "1.0", payload=b"new bytes")

    def refuse(*_args: object, **_kwargs: object) -> None:
        raise PermissionError(13, "Permission denied")

    monkeypatch.setattr(os, "replace", refuse)
    with pytest.raises(StorageError):
        publish_as(index, new, old.name, overwrite=True)
    assert sorted(p.name for p in (root / "sub").iterdir()) == [old.name]
    assert index.cache.get(f"sub/{old.name}") is not None  # the old row stays: the old file does


def test_sweep_reaches_every_visible_folder(root: Path) -> None:
    """A worker killed between the staged link and the rename leaves a dot-file beside the
    file it replaces, in whatever folder that is."""
    for folder in ("", "sub", "sub/deeper"):
        (root / folder).mkdir(parents=True, exist_ok=True)
        (root / folder / f"{UPLOAD_PREFIX}0123abcd").write_bytes(b"x")
        (root / folder / "p-1.0.tar.gz").write_bytes(b"keep")
    (root / ".pypid").mkdir()
    (root / ".pypid" / f"{UPLOAD_PREFIX}theirs").write_bytes(b"not ours to sweep")
    assert PackageRoot(root).sweep_temp_files() == 3
    left = sorted(str(p.relative_to(root)) for p in root.rglob("*") if p.is_file())
    assert left == [f".pypid/{UPLOAD_PREFIX}theirs", "p-1.0.tar.gz", "sub/deeper/p-1.0.tar.gz",
                    "sub/p-1.0.tar.gz"]


def test_publish_lock_excludes_other_holders(root: Path) -> None:
    storage = PackageRoot(root)
    order: list[str] = []
    with storage.publish_lock():
        thread = threading.Thread(target=lambda: _hold(storage, order))
        thread.start()
        thread.join(timeout=0.3)
        assert thread.is_alive()  # waiting for the lock
        order.append("first")
    thread.join(timeout=10)
    assert order == ["first", "second"]


def _hold(storage: PackageRoot, order: list[str]) -> None:
    with storage.publish_lock():
        order.append("second")


@pytest.mark.parametrize(("error", "raised"), [
    (13, NoSpaceError), (8, StorageError)], ids=["disk-full", "read-only"])
def test_cache_that_cannot_be_written(index: Index, root: Path, tmp_path: Path,
                                      monkeypatch: pytest.MonkeyPatch, error: int,
                                      raised: type[StorageError]) -> None:
    """The cache lives on the root's disk: a full disk may fail it before the file."""
    def full(_rows: object) -> None:
        exc = sqlite3.OperationalError("database or disk is full")
        exc.sqlite_errorcode = error  # type: ignore[attr-defined]
        raise exc

    monkeypatch.setattr(index.cache, "put", full)
    with pytest.raises(raised):
        publish_file(index, make_wheel(tmp_path, "p", "1.0"))
    assert sorted(p.name for p in root.iterdir()) == [".pypid"]


def test_marks_read_first_by_governance_still_reach_the_pages(index: Index, root: Path,
                                                               tmp_path: Path) -> None:
    """The server's manager shares the index's ledger: a yank that an owners question
    read first (written by another process) must still be applied by the follower."""
    wheel = make_wheel(tmp_path, "p", "1.0")
    publish_file(index, wheel)
    manager = for_server(defaults(), index, Htpasswd(tmp_path / "htpasswd"),
                         changed=lambda *_: None)
    PackageRoot(root).event_log().append("yank", user="cli:root", project="p",
                                          file=wheel.name, reason="broken")
    manager.owners("p")  # reads the new line into the shared ledger
    index._follower.follow_marks()  # noqa: SLF001 - the watcher's periodic step
    assert (entry := index.file(wheel.name)) is not None and entry.yanked == "broken"
