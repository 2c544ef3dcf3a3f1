"""The sealed file table: the entries as the master loaded them, read back from a file,
and the index answering changes made since the seal before it."""

from __future__ import annotations

import os
from array import array
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path

import pytest

from pypid.distfile import NormalizedName
from pypid.index import Index, Marks
from pypid.index.records import FileEntry
from pypid.index.sealed import SealedFiles, _record
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


def test_every_entry_reads_back_as_it_was(sealed: list[FileEntry], tmp_path: Path) -> None:
    table = SealedFiles.write(tmp_path, sealed)
    try:
        assert len(table) == len(sealed)
        for made in sealed:
            assert table.find(made.filename, {}) == made
        assert table.find("demo-1.0-py3-none-any.whl", {"demo-1.0-py3-none-any.whl": "bad"}
                          ) == replace(sealed[0], yanked="bad")
        assert table.find("other-1.0.tar.gz", {}) is None
        assert os.listdir(tmp_path) == []  # unlinked from the start
    finally:
        table.close()
    assert table.find(sealed[0].filename, {}) is None  # closed: nothing to read
    table.close()  # again: nothing happens


def test_a_requires_python_of_any_length_reads_back(tmp_path: Path) -> None:
    """Only METADATA's size bounds it: a 16-bit length once failed the seal (and the start)."""
    made = [entry("long-1.0.tar.gz", requires_python=">=3.9," + "!=3.9.1," * 10_000),
            entry("odd-1.0.tar.gz", requires_python="x" * 0xFFFF)]
    table = SealedFiles.write(tmp_path, made)
    try:
        assert [table.find(e.filename, {}) for e in made] == made
    finally:
        table.close()


def test_names_that_share_a_hash_are_told_apart(sealed: list[FileEntry],
                                                tmp_path: Path) -> None:
    """Two names with one hash (rare, but possible): the record's name decides."""
    first, second = sealed[0], sealed[1]
    fd = os.open(tmp_path, os.O_RDWR | os.O_TMPFILE, 0o600)
    a, b = _record(first), _record(second)
    os.write(fd, a + b)
    shared = hash(first.filename)
    table = SealedFiles(fd, array("q", [shared, shared]),
                        array("Q", [len(a) << 32 | len(b), len(a)]))  # b first
    try:
        assert table.find(first.filename, {}) == first
        assert table.find(second.filename, {}) is None  # its hash is not its own
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
        assert index._since_seal == {}  # noqa: SLF001
    finally:
        index.close()


def test_a_failed_read_is_not_remembered(root: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    made = make_wheel(root, "kept", "1.0")
    index = Index(PackageRoot(root))
    try:
        index.load()
        assert index.seal_files()
        real = os.pread
        monkeypatch.setattr(os, "pread", lambda *a: (_ for _ in ()).throw(OSError(5, "EIO")))
        assert index.file(made.name) is None  # the disk failed this once
        monkeypatch.setattr(os, "pread", real)
        assert index.file(made.name) is not None
    finally:
        index.close()
