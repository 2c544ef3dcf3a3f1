"""The sealed file table: the entries as the master loaded them, read back from a file,
and the index answering changes made since the seal before it."""

from __future__ import annotations

import os
import random
import time
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path

import pytest

from pypid.distfile import NormalizedName
from pypid.index import Index, Marks, model
from pypid.index import sealed as sealed_module
from pypid.index.records import FileEntry
from pypid.index.sealed import SealedFiles, _KeyTable, _record, _Writer
from pypid.storage import PackageRoot
from tests.builders import make_sdist, make_wheel


def entry(name: str, **changes: object) -> FileEntry:
    made = FileEntry(filename=name, relpath=name, project=NormalizedName("demo"),
                     version="1.0", size=1234, mtime_ns=1_700_000_000_123_456_789,
                     inode=42, digest=bytes(range(32)), requires_python=">=3.9",
                     metadata_digest=bytes(range(32, 64)), upload_time=1.7e9 + 0.25,
                     yanked=None)
    return replace(made, **changes)


@pytest.fixture
def sealed(tmp_path: Path) -> Iterator[list[FileEntry]]:
    yield [
        entry("demo-1.0-py3-none-any.whl"),
        entry("demo-1.0.tar.gz", relpath="sub/dir/demo-1.0.tar.gz", requires_python=None,
              metadata_digest=None),
        entry("demo-2.0.tar.gz", requires_python="", inode=-7, size=0, mtime_ns=-5),
        entry("d\udcffmo-1.0.tar.gz"),  # a name that is not UTF-8 on disk
        entry("Ünï-1.0.tar.gz", project=NormalizedName("ünï")),
    ]


def no_yanks() -> dict[str, str]:
    return {}


def test_every_entry_reads_back_as_it_was(sealed: list[FileEntry], tmp_path: Path) -> None:
    yanks: dict[str, str] = {}
    table = SealedFiles.write(tmp_path, [tuple(sealed[:4]), (sealed[4],)], [], lambda: yanks)
    try:
        assert table.served_count() == table.path_count() == len(sealed)
        for made in sealed:
            assert table.find(made.filename) == made
            assert table.at_path(made.relpath) == made
        assert table.at_path("demo-1.0.tar.gz") is None  # that one is in a folder
        assert table.project("demo") == tuple(sealed[:4])
        assert table.project("ünï") == (sealed[4],)
        assert table.project("other") is None
        assert list(table.projects()) == ["demo", "ünï"]
        assert sorted(table.relpaths()) == sorted(e.relpath for e in sealed)
        assert sorted(table.served_names()) == sorted(e.filename for e in sealed)
        yanks["demo-1.0-py3-none-any.whl"] = "bad"  # the marks now, whenever they change
        assert table.find("demo-1.0-py3-none-any.whl") == replace(sealed[0], yanked="bad")
        assert table.find("other-1.0.tar.gz") is None
        assert os.listdir(tmp_path) == []  # unlinked from the start
    finally:
        table.close()
    with pytest.raises(OSError):  # closed: nothing to read, and it says so
        table.find(sealed[0].filename)
    table.close()  # again: nothing happens


def test_a_file_a_duplicate_keeps_unserved_is_found_by_its_path(
        sealed: list[FileEntry], tmp_path: Path) -> None:
    served = sealed[0]
    other = replace(served, relpath="a/" + served.filename, inode=99)
    table = SealedFiles.write(tmp_path, [(served,)], [other], no_yanks)
    try:
        assert table.find(served.filename) == served
        assert table.at_path(other.relpath) == other
        assert table.at_path(served.relpath) == served
        assert table.served_count() == 1 and table.path_count() == 2
        assert sorted(table.relpaths()) == sorted([served.relpath, other.relpath])
        assert list(table.served_names()) == [served.filename]
    finally:
        table.close()


def test_records_longer_than_a_read_are_read_whole(tmp_path: Path,
                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("pypid.index.sealed._READ_CHUNK", 100)
    made = tuple(entry(f"demo-{i}.0.tar.gz", requires_python="x" * (i * 37))
                 for i in range(1, 9))
    table = SealedFiles.write(tmp_path, [made], [], no_yanks)
    try:
        assert table.project("demo") == made
        assert sorted(table.relpaths()) == sorted(e.relpath for e in made)
    finally:
        table.close()


def test_a_requires_python_of_any_length_reads_back(tmp_path: Path) -> None:
    """Only METADATA's size bounds it: a 16-bit length once failed the seal (and the start)."""
    made = [entry("long-1.0.tar.gz", requires_python=">=3.9," + "!=3.9.1," * 10_000),
            entry("odd-1.0.tar.gz", requires_python="x" * 0xFFFF)]
    table = SealedFiles.write(tmp_path, [(e,) for e in made], [], no_yanks)
    try:
        assert [table.find(e.filename) for e in made] == made
    finally:
        table.close()


def test_names_that_share_a_hash_are_told_apart(sealed: list[FileEntry],
                                                tmp_path: Path) -> None:
    """Two names with one hash (rare, but possible): the record's name decides."""
    first, second = sealed[0], sealed[1]
    fd = os.open(tmp_path, os.O_RDWR | os.O_TMPFILE, 0o600)
    a, b = _record(first), _record(second)
    writer = _Writer(fd)
    writer.add_bytes(memoryview(a + b))
    names = _KeyTable()
    names.add(first.filename, len(a) << 32 | len(b))  # b first, under a's hash
    names.add(first.filename, len(a))
    keys = [table.stored(writer) for table in (names, _KeyTable(), _KeyTable())]
    writer.flush()
    table = SealedFiles(fd, *keys, served_end=len(a) + len(b), records_end=len(a) + len(b),
                        paths_count=2, yanks=no_yanks)
    try:
        assert table.find(first.filename) == first
        assert table.find(second.filename) is None  # its hash is not its own
    finally:
        table.close()


def test_the_index_answers_changes_since_the_seal_first(root: Path, tmp_path: Path) -> None:
    make_wheel(root, "kept", "1.0")
    make_sdist(root, "gone", "1.0")
    index = Index(PackageRoot(root))
    try:
        index.load()
        before = {name: index.file(name) for name in ("kept-1.0-py3-none-any.whl",
                                                      "gone-1.0.tar.gz")}
        assert index.seal_files()
        for name, made in before.items():
            assert index.file(name) == made and index.file(name) is not made  # read back
            assert index.file(name) is index.file(name)  # kept while nothing changes
        new = make_wheel(root, "new", "1.0")
        index.refresh(new.name)
        assert (found := index.file(new.name)) is not None and found.project == "new"
        (root / "gone-1.0.tar.gz").unlink()
        index.refresh("gone-1.0.tar.gz")
        assert index.file("gone-1.0.tar.gz") is None
        index.apply_marks(Marks(yanks={"kept-1.0-py3-none-any.whl": "broken"}))
        assert (kept := index.file("kept-1.0-py3-none-any.whl")) is not None
        assert kept.yanked == "broken"  # the kept read is stale once the index changed
        assert index.stored_bytes() == sum(
            e.size for p in index.projects() for e in index.files(p) or ())
    finally:
        index.close()


def test_a_worker_keeps_no_mark_for_a_file_that_came_and_went_after_the_seal(
        root: Path) -> None:
    make_wheel(root, "kept", "1.0")
    index = Index(PackageRoot(root))
    try:
        index.load()
        assert index.seal_files()
        for i in range(5):  # uploads pruned again: none of them was ever sealed
            made = make_wheel(root, "churn", f"0.{i}")
            index.refresh(made.name)
            made.unlink()
            index.refresh(made.name)
            assert index.file(made.name) is None
        for held in (index._by_filename, index._by_path, index._by_project):  # noqa: SLF001
            assert held.changes() == 0  # type: ignore[attr-defined]
    finally:
        index.close()


def test_a_failed_read_is_not_remembered(root: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    made = make_wheel(root, "kept", "1.0")
    index = Index(PackageRoot(root))
    try:
        index.load()
        assert index.seal_files()
        real = os.pread
        monkeypatch.setattr(os, "pread", lambda *a, **k: (_ for _ in ()).throw(OSError(5, "EIO")))
        with pytest.raises(OSError):  # the disk failed this once: not "no such file"
            index.file(made.name)
        with pytest.raises(OSError):  # nor "no such project" (a private name sent upstream)
            index.files("kept")
        monkeypatch.setattr(os, "pread", real)
        assert index.file(made.name) is not None
        assert index.files("kept") is not None
    finally:
        index.close()


def reads(index: Index) -> dict[str, object]:
    """Everything the index answers about its files."""
    projects = index.projects()
    return {"projects": projects, "files": {p: index.files(p) for p in projects},
            "by name": {e.filename: index.file(e.filename)
                        for p in projects for e in index.files(p) or ()},
            "paths": sorted(index.relpaths()),
            "by path": {p: index.entry_at(p) for p in index.relpaths()},
            "counts": (index.file_count(), index.project_count(), index.stored_bytes())}


def test_a_sealed_index_answers_as_before_and_keeps_only_changes(root: Path) -> None:
    """Folders, a name in two folders, many files of a project: every answer the same
    after the seal, and the maps hold the changes made after it, nothing else."""
    for version in ("1.0", "1.10", "1.9", "2.0rc1"):
        make_wheel(root, "many", version)
    make_sdist(root / "sub", "folded", "1.0")
    make_sdist(root / "a", "twice", "1.0")
    make_sdist(root / "b", "twice", "1.0")
    index = Index(PackageRoot(root))
    try:
        index.load()
        before = reads(index)
        assert index.entry_at("b/twice-1.0.tar.gz") is not None
        assert index.seal_files()
        assert reads(index) == before
        for held in (index._by_filename, index._by_path, index._by_project):  # noqa: SLF001
            assert held.changes() == 0  # type: ignore[attr-defined]
        (root / "a" / "twice-1.0.tar.gz").unlink()  # the other copy is served now
        index.refresh("a/twice-1.0.tar.gz")
        served = index.file("twice-1.0.tar.gz")
        assert served is not None and served.relpath == "b/twice-1.0.tar.gz"
        new = make_wheel(root, "many", "3.0")
        index.refresh(new.name)
        files = index.files("many")
        assert files is not None and [e.version for e in files] == [
            "1.0", "1.9", "1.10", "2.0rc1", "3.0"]
        assert index.file_count() == len(before["by name"]) + 1  # type: ignore[arg-type]
        assert sorted(index.relpaths()) == sorted(
            [p for p in before["paths"] if p != "a/twice-1.0.tar.gz"]  # type: ignore[attr-defined]
            + [new.name])
        (root / "sub" / "folded-1.0.tar.gz").unlink()
        index.refresh("sub/folded-1.0.tar.gz")
        assert index.files("folded") is None and "folded" not in index.projects()
        assert index.project_count() == 2
        assert index.stored_bytes() == sum(
            e.size for p in index.projects() for e in index.files(p) or ())
    finally:
        index.close()


def test_a_reader_during_a_change_never_keeps_the_old_files_under_the_new_serial(
        root: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A request thread that reads while the watcher sorts a changed project (the GIL
    lets it in) may see the old files; it must not keep them once the change is done."""
    make_wheel(root, "many", "1.0")
    make_wheel(root, "many", "2.0")
    index = Index(PackageRoot(root))
    try:
        index.load()
        assert index.seal_files()
        real = model.Version

        def reading_meanwhile(text: str) -> object:
            index.files("many")
            return real(text)
        monkeypatch.setattr(model, "Version", reading_meanwhile)
        index.refresh(make_wheel(root, "many", "3.0").name)
        monkeypatch.setattr(model, "Version", real)
        files = index.files("many")
        assert files is not None and [e.version for e in files] == ["1.0", "2.0", "3.0"]
    finally:
        index.close()


@pytest.mark.parametrize("seal", [False, True])
def test_a_copy_served_when_another_goes_carries_the_mark_of_now(root: Path,
                                                                 seal: bool) -> None:
    make_sdist(root / "a", "twice", "1.0")
    make_sdist(root / "b", "twice", "1.0")
    index = Index(PackageRoot(root))
    try:
        index.load()
        if seal:
            assert index.seal_files()
        make_sdist(root / "b", "twice", "1.0", requires_python=">=3.9")  # changed: held
        index.refresh("b/twice-1.0.tar.gz")
        index.apply_marks(Marks(yanks={"twice-1.0.tar.gz": "broken"}))
        (root / "a" / "twice-1.0.tar.gz").unlink()
        index.refresh("a/twice-1.0.tar.gz")
        served = index.file("twice-1.0.tar.gz")
        assert served is not None and served.relpath == "b/twice-1.0.tar.gz"
        assert served.yanked == "broken"
        assert index.entry_at("b/twice-1.0.tar.gz") == served
    finally:
        index.close()


def test_a_second_seal_holds_every_change_and_empties_the_maps(root: Path) -> None:
    """What a worker does once many files changed: the answers stay the same, the maps
    are empty again, and changes after it are laid over the new table."""
    for version in ("1.0", "1.10", "1.9"):
        make_wheel(root, "many", version)
    make_sdist(root / "a", "twice", "1.0")
    make_sdist(root / "b", "twice", "1.0")
    make_sdist(root, "gone", "1.0")
    make_sdist(root / "sub", "folded", "1.0")
    index = Index(PackageRoot(root))
    try:
        index.load()
        assert index.seal_files()
        changed = [make_wheel(root, "many", "2.0"), make_wheel(root, "fresh", "0.1"),
                   make_sdist(root / "c", "twice", "1.0")]
        for made in changed:
            index.refresh(str(made.relative_to(root)))
        (root / "gone-1.0.tar.gz").unlink()
        index.refresh("gone-1.0.tar.gz")
        (root / "sub" / "folded-1.0.tar.gz").unlink()
        index.refresh("sub/folded-1.0.tar.gz")
        index.apply_marks(Marks(yanks={"many-1.9-py3-none-any.whl": "broken"}))
        before = reads(index)
        assert index.seal_files()
        assert reads(index) == before
        for held in (index._by_filename, index._by_path, index._by_project):  # noqa: SLF001
            assert held.changes() == 0  # type: ignore[attr-defined]
        assert index.file("many-1.9-py3-none-any.whl").yanked == "broken"  # type: ignore[union-attr]
        index.apply_marks(Marks())  # a mark is read at each lookup, never sealed
        assert index.file("many-1.9-py3-none-any.whl").yanked is None  # type: ignore[union-attr]
        (root / "a" / "twice-1.0.tar.gz").unlink()  # the next copy is served now
        index.refresh("a/twice-1.0.tar.gz")
        served = index.file("twice-1.0.tar.gz")
        assert served is not None and served.relpath == "b/twice-1.0.tar.gz"
        files = index.files("many")
        assert files is not None and [e.version for e in files] == ["1.0", "1.9", "1.10",
                                                                    "2.0"]
    finally:
        index.close()


def test_a_reader_of_the_replaced_table_reads_on_until_it_lets_go(root: Path) -> None:
    """A request thread may hold a map over the old table while the watcher seals again:
    the old file stays open for it (a closed one would be a 500, a reused descriptor
    another file's bytes), and is closed once nothing holds it."""
    made = make_wheel(root, "kept", "1.0")
    index = Index(PackageRoot(root))
    try:
        index.load()
        assert index.seal_files()
        old = index._by_filename  # noqa: SLF001
        fd = index._sealed._fd  # type: ignore[union-attr]  # noqa: SLF001
        index.refresh(make_wheel(root, "kept", "2.0").name)
        assert index.seal_files()
        assert old.get(made.name) == index.file(made.name)
        os.fstat(fd)
        del old
        with pytest.raises(OSError):
            os.fstat(fd)
    finally:
        index.close()


@pytest.fixture
def resealing(root: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Index]:
    """A sealed index of one file that seals again after 3 changes."""
    make_wheel(root, "kept", "1.0")
    index = Index(PackageRoot(root))
    try:
        index.load()
        assert index.seal_files()
        monkeypatch.setattr(index, "_reseal_after", 3)
        yield index
    finally:
        index.close()


def test_the_watcher_seals_again_after_many_changes_and_backs_off_when_it_cannot(
        root: Path, resealing: Index, monkeypatch: pytest.MonkeyPatch,
        caplog: pytest.LogCaptureFixture) -> None:
    index = resealing
    index.refresh(make_wheel(root, "kept", "2.0").name)
    assert not index.reseal_if_due()  # 2 changes: the path and the project
    real = SealedFiles.write
    monkeypatch.setattr(SealedFiles, "write", lambda *a, **k: (_ for _ in ()).throw(
        OSError(28, "No space left on device")))
    index.refresh(make_wheel(root, "other", "1.0").name)
    assert not index.reseal_if_due()  # the disk is full: the maps keep the changes
    assert "No space left on device" in caplog.text
    assert index.file("other-1.0-py3-none-any.whl") is not None
    assert index._reseal_after == 8  # noqa: SLF001 - twice the 4 changes, not each one
    monkeypatch.setattr(SealedFiles, "write", real)
    assert not index.reseal_if_due()
    for version in ("3.0", "4.0", "5.0"):
        index.refresh(make_wheel(root, "kept", version).name)
        assert not index.reseal_if_due()  # 5, 6, 7
    index.refresh(make_wheel(root, "kept", "6.0").name)
    assert index.reseal_if_due()
    assert index._by_path.changes() == 0  # type: ignore[attr-defined]  # noqa: SLF001
    assert index._reseal_after == model.RESEAL_AFTER  # noqa: SLF001
    files = index.files("kept")
    assert files is not None and [e.version for e in files] == [
        "1.0", "2.0", "3.0", "4.0", "5.0", "6.0"]


def test_the_watcher_thread_seals_the_changes_it_applied(root: Path, tmp_path: Path,
                                                         resealing: Index) -> None:
    index = resealing
    index.start_watching()
    staging = tmp_path / "staging"
    staging.mkdir()
    names = [make_wheel(staging, "kept", version).name for version in ("2.0", "3.0")]
    for name in names:
        os.replace(staging / name, root / name)
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline and (
            index._by_path.changes() or len(index.files("kept") or ()) < 3):  # type: ignore[attr-defined]  # noqa: SLF001
        time.sleep(0.02)
    assert [e.version for e in index.files("kept") or ()] == ["1.0", "2.0", "3.0"]
    assert index._by_path.changes() == 0  # type: ignore[attr-defined]  # noqa: SLF001


def test_a_sealed_project_that_changes_keeps_only_its_changes_in_memory(root: Path) -> None:
    """A project uploaded to all day must not bring its whole list back into memory."""
    for version in ("1.0", "1.9", "1.10", "2.0"):
        make_wheel(root, "many", version)
    index = Index(PackageRoot(root))
    try:
        index.load()
        assert index.seal_files()
        index.refresh(make_wheel(root, "many", "1.9.5").name)
        (root / "many-1.0-py3-none-any.whl").unlink()
        index.refresh("many-1.0-py3-none-any.whl")
        make_wheel(root, "many", "2.0", requires_python=">=3.12")  # the same name, rewritten
        index.refresh("many-2.0-py3-none-any.whl")
        held = dict(index._by_project.changed())["many"]  # type: ignore[attr-defined]  # noqa: SLF001
        assert sorted(held.by_name) == ["many-1.0-py3-none-any.whl",
                                        "many-1.9.5-py3-none-any.whl",
                                        "many-2.0-py3-none-any.whl"]
        files = index.files("many")
        assert files is not None
        assert [e.version for e in files] == ["1.9", "1.9.5", "1.10", "2.0"]
        assert files[-1].requires_python == ">=3.12"
        for name in ("many-1.9-py3-none-any.whl", "many-1.10-py3-none-any.whl"):
            (root / name).unlink()
            index.refresh(name)
        (root / "many-1.9.5-py3-none-any.whl").unlink()
        index.refresh("many-1.9.5-py3-none-any.whl")
        assert [e.version for e in index.files("many") or ()] == ["2.0"]
        (root / "many-2.0-py3-none-any.whl").unlink()
        index.refresh("many-2.0-py3-none-any.whl")
        assert index.files("many") is None and "many" not in index.projects()
    finally:
        index.close()


def test_a_probe_reads_on_past_its_first_slots_and_round_the_end(tmp_path: Path) -> None:
    """Keys whose slots run past the few one read fetches, and past the table's end."""
    fd = os.open(tmp_path, os.O_RDWR | os.O_TMPFILE, 0o600)
    try:
        writer = _Writer(fd)
        writer.add_bytes(memoryview(b"x" * 100))  # records before the table, as in a seal
        table = _KeyTable(8)  # 16 slots
        key = next(k for k in (f"name-{i}" for i in range(10_000)) if hash(k) & 15 == 15)
        for place in range(1, 8):  # seven keys with one hash: slots 15, 0, 1, ... 5
            table.add(key, place)
        table.add("other", 99)
        keys = table.stored(writer)
        writer.flush()
        assert keys.slots == 16
        assert list(keys.find(fd, key)) == list(range(1, 8))
        assert keys.may_hold(fd, "other")
    finally:
        os.close(fd)


def _reads_as(table: SealedFiles, made: list[FileEntry]) -> bool:
    try:
        return (all(table.find(e.filename) == e and table.at_path(e.relpath) == e for e in made)
                and table.project("demo") == tuple(made[:4])
                and sorted(table.relpaths()) == sorted(e.relpath for e in made))
    finally:
        table.close()


def test_a_table_written_in_a_child_reads_as_one_written_here(
        sealed: list[FileEntry], tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    parent, writers = os.getpid(), []
    real = sealed_module._write_into

    def write_into(*args: object) -> tuple[int, ...]:
        writers.append(os.getpid())  # the child's list: this one stays empty
        return real(*args)  # type: ignore[arg-type]

    monkeypatch.setattr(sealed_module, "_write_into", write_into)
    table = SealedFiles.write(tmp_path, [tuple(sealed[:4]), (sealed[4],)], [], no_yanks,
                              apart=True)
    assert writers == [] and os.getpid() == parent
    assert _reads_as(table, sealed)


def test_a_child_that_fails_half_way_leaves_the_table_to_be_written_here(
        sealed: list[FileEntry], tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    parent, real = os.getpid(), sealed_module._write_into

    def write_into(fd: int, *args: object) -> tuple[int, ...]:
        if os.getpid() != parent:
            os.write(fd, b"half a table" * 1000)
            raise OSError("the child's disk filled up")
        return real(fd, *args)  # type: ignore[arg-type]

    monkeypatch.setattr(sealed_module, "_write_into", write_into)
    table = SealedFiles.write(tmp_path, [tuple(sealed[:4]), (sealed[4],)], [], no_yanks,
                              apart=True)
    assert _reads_as(table, sealed)


def test_page_order_parses_each_version_once_and_sorts_as_versions_do() -> None:
    """``model.in_page_order`` against the plain sort by (Version, name): versions equal but
    written apart (1.0, 1.0.0), pre, post, dev and local releases, one version alone."""
    versions = ["1.0", "1.0.0", "1.0.post1", "1.0rc1", "1.0.dev3", "1.0+local.2", "0.9",
                "2!0.1", "1.0a1", "10.0", "1.0.0.0"]
    rng = random.Random(18)  # noqa: S311 - a repeatable mix
    for _ in range(3000):
        files = [entry(f"demo-{rng.choice('abc')}{n}.whl", version=rng.choice(versions))
                 for n in range(rng.randint(2, 7))]
        if rng.random() < 0.3:
            files = [replace(f, version=files[0].version) for f in files]
        rng.shuffle(files)
        assert model.in_page_order(files) == sorted(files, key=model._page_order)
