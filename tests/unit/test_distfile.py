"""Filename parsing, normalization and safety: tables of valid and invalid cases."""

from __future__ import annotations

import bz2
import contextlib
import io
import lzma
import tarfile
import tracemalloc
import zipfile
from pathlib import Path

import pytest
from packaging.version import Version

from pypid import distfile
from pypid.distfile import (
    SDIST,
    WHEEL,
    InvalidFilenameError,
    MetadataError,
    has_dist_suffix,
    hash_file,
    is_normalized,
    is_safe_filename,
    is_temp_name,
    normalize,
    parse_filename,
    parse_requires_python,
    read_core_metadata,
)
from pypid.storage.incoming import Digests
from tests.attack.bombs import MIB, many_members_tar, tar_bomb, zip_bomb
from tests.builders import make_sdist, make_wheel

VALID = [
    # (case id, filename, project, version, kind)
    ("wheel", "foo-1.0-py3-none-any.whl", "foo", "1.0", WHEEL),
    ("wheel-underscore", "Foo_Bar-2.0.1-py3-none-any.whl", "foo-bar", "2.0.1", WHEEL),
    ("wheel-build-tag", "foo-1.0-1-py3-none-any.whl", "foo", "1.0", WHEEL),
    ("wheel-compressed-tags", "foo-1.0-py2.py3-none-any.whl", "foo", "1.0", WHEEL),
    ("wheel-platform", "numpy-1.26.4-cp311-cp311-manylinux_2_17_x86_64.manylinux2014_x86_64.whl",
     "numpy", "1.26.4", WHEEL),
    ("wheel-epoch", "foo-1!2.0-py3-none-any.whl", "foo", "1!2.0", WHEEL),
    ("wheel-local", "foo-1.0+local.7-py3-none-any.whl", "foo", "1.0+local.7", WHEEL),
    ("sdist", "foo-1.0.tar.gz", "foo", "1.0", SDIST),
    ("sdist-zip", "foo_bar-1.0.zip", "foo-bar", "1.0", SDIST),
    ("sdist-dotted-name", "zope.interface-6.0.tar.gz", "zope-interface", "6.0", SDIST),
    ("sdist-legacy-dashes", "systemd-python-234.tar.gz", "systemd-python", "234", SDIST),
    ("sdist-legacy-post", "cffi-1.0.2-2.tar.gz", "cffi", "1.0.2.post2", SDIST),
    ("sdist-name-with-v", "foo-v2.4-0.0.7.tar.gz", "foo-v2-4", "0.0.7", SDIST),
    ("sdist-digit-word", "abc-2to3-1.0.tar.gz", "abc-2to3", "1.0", SDIST),
    ("sdist-tgz", "foo-1.0.tgz", "foo", "1.0", SDIST),
    ("sdist-bz2", "foo-1.0.tar.bz2", "foo", "1.0", SDIST),
    ("sdist-xz", "foo-1.0.tar.xz", "foo", "1.0", SDIST),
    ("sdist-prerelease", "Django-5.0rc1.tar.gz", "django", "5.0rc1", SDIST),
    ("sdist-dev", "foo-1.0.dev3.tar.gz", "foo", "1.0.dev3", SDIST),
]

INVALID = [
    ("no-version", "foo.tar.gz"),
    ("empty-version", "foo-.tar.gz"),
    ("garbage-wheel", "garbage.whl"),
    ("wheel-too-few-parts", "foo-1.0.whl"),
    ("wheel-bad-version", "foo-notaversion-py3-none-any.whl"),
    ("egg", "foo-1.0-py3.11.egg"),
    ("exe", "foo-1.0.win32.exe"),
    ("readme", "README.txt"),
    ("upper-case-extension", "foo-1.0-py3-none-any.WHL"),
    ("traversal", "../foo-1.0.tar.gz"),
    ("slash", "a/foo-1.0.tar.gz"),
    ("backslash", "a\\foo-1.0.tar.gz"),
    ("nul", "foo-1.0.tar.gz\x00"),
    ("newline", "foo\n-1.0.tar.gz"),
    ("dot-file", ".foo-1.0.tar.gz"),
    ("empty", ""),
    ("only-version", "-1.0.tar.gz"),
]


@pytest.mark.parametrize(("case", "filename", "project", "version", "kind"), VALID,
                         ids=[row[0] for row in VALID])
def test_parse_valid(case: str, filename: str, project: str, version: str, kind: str) -> None:
    dist = parse_filename(filename)
    assert (dist.project, dist.version, dist.kind) == (project, Version(version), kind)
    assert dist.filename == filename


@pytest.mark.parametrize(("case", "filename"), INVALID, ids=[row[0] for row in INVALID])
def test_parse_invalid(case: str, filename: str) -> None:
    with pytest.raises(InvalidFilenameError) as info:
        parse_filename(filename)
    assert isinstance(info.value, ValueError)
    assert repr(filename) in str(info.value)


@pytest.mark.parametrize(("name", "normalized"), [
    ("Foo", "foo"), ("foo_bar", "foo-bar"), ("Foo.Bar--baz", "foo-bar-baz"),
    ("a__b..c", "a-b-c"), ("UPPER", "upper"),
])
def test_normalize(name: str, normalized: str) -> None:
    assert normalize(name) == normalized
    assert is_normalized(normalized)
    assert is_normalized(name) == (name == normalized)


@pytest.mark.parametrize(("name", "safe"), [
    ("foo-1.0.tar.gz", True), ("foo bar.whl", True), ("..", False), (".", False),
    ("a/b", False), ("a\\b", False), ("a\x7fb", False), ("a\rb", False), (".hidden", False),
])
def test_is_safe_filename(name: str, safe: bool) -> None:
    assert is_safe_filename(name) is safe


@pytest.mark.parametrize(("name", "temp"), [
    (".pypid-upload-123", True), ("foo-1.0.tar.gz.part", True), ("foo-1.0.whl~", True),
    ("foo-1.0.whl.tmp", True), ("foo-1.0.whl", False),
])
def test_is_temp_name(name: str, temp: bool) -> None:
    assert is_temp_name(name) is temp


def test_dist_suffix() -> None:
    assert has_dist_suffix("x-1.0.tar.gz")
    assert not has_dist_suffix("x-1.0.TAR.GZ")
    assert not has_dist_suffix("x-1.0.tar.gz.asc")
    assert not has_dist_suffix("x-1.0.egg")


def test_requires_python_and_name_from_headers() -> None:
    meta = b"Metadata-Version: 2.1\nName: Foo\nRequires-Python:  >=3.8,\n <4\n\nDescription"
    assert parse_requires_python(meta) == (">=3.8, <4", "Foo")
    assert parse_requires_python(b"Metadata-Version: 2.1\nName: x\n") == (None, "x")


def test_digests_and_hash_file() -> None:
    digests = Digests()
    for chunk in (b"abc", b"def"):
        digests.update(chunk)
    assert digests.size == 6
    assert digests.hexdigest("sha256") == hash_file(io.BytesIO(b"abcdef"))[0]
    assert digests.hexdigest("md5") == "e80b5017098950fc58aad83c8c14978e"
    assert len(digests.hexdigest("blake2_256")) == 64


def test_read_wheel_metadata_is_byte_exact(tmp_path: Path) -> None:
    wheel = make_wheel(tmp_path, "Foo_Bar", "1.0", requires_python=">=3.8")
    meta = read_core_metadata(wheel, parse_filename(wheel.name))
    with zipfile.ZipFile(wheel) as archive:
        expected = archive.read("foo_bar-1.0.dist-info/METADATA")
    assert meta.metadata == expected
    assert meta.requires_python == ">=3.8"


def test_read_sdist_requires_python(tmp_path: Path) -> None:
    sdist = make_sdist(tmp_path, "foo", "2.0", requires_python=">=3.9")
    meta = read_core_metadata(sdist, parse_filename(sdist.name))
    assert meta.metadata is None  # sdist metadata is never served
    assert meta.requires_python == ">=3.9"


@pytest.mark.parametrize("content", [b"", b"not a zip", b"PK\x03\x04truncated"])
def test_broken_wheel_is_a_metadata_error(tmp_path: Path, content: bytes) -> None:
    path = tmp_path / "foo-1.0-py3-none-any.whl"
    path.write_bytes(content)
    with pytest.raises(MetadataError):
        read_core_metadata(path, parse_filename(path.name))


def test_wheel_without_dist_info_is_a_metadata_error(tmp_path: Path) -> None:
    path = tmp_path / "foo-1.0-py3-none-any.whl"
    with zipfile.ZipFile(path, "w") as archive:
        archive.writestr("foo/__init__.py", "")
    with pytest.raises(MetadataError, match="no .dist-info/METADATA"):
        read_core_metadata(path, parse_filename(path.name))


# -- decompression bombs: refused with a one-line reason, never read whole


def _read(path: Path) -> MetadataError:
    with pytest.raises(MetadataError) as caught:
        read_core_metadata(path, parse_filename(path.name))
    return caught.value


def _peak_of(path: Path) -> int:
    """Peak bytes Python allocated while reading path's metadata (any outcome)."""
    tracemalloc.start()
    try:
        with contextlib.suppress(MetadataError):
            read_core_metadata(path, parse_filename(path.name))
        return tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()


@pytest.mark.parametrize(("case", "filename", "member", "label"), [
    ("sdist-zip", "foo-1.0.zip", "foo-1.0/PKG-INFO", "PKG-INFO"),
    ("wheel", "foo-1.0-py3-none-any.whl", "foo-1.0.dist-info/METADATA", "METADATA"),
], ids=lambda v: v if isinstance(v, str) and "/" not in v and "." not in v else "")
def test_zip_bomb_member_is_refused_unread(tmp_path: Path, case: str, filename: str,
                                           member: str, label: str) -> None:
    honest = zip_bomb(tmp_path / filename, member, 1024)
    assert _read(honest).reason == f"{label} is larger than 8 MB"
    assert _peak_of(honest) < 2 * MIB
    (tmp_path / "lying").mkdir()
    lying = zip_bomb(tmp_path / "lying" / filename, member, 64, honest_size=False)
    assert "unreadable archive" in _read(lying).reason  # zipfile stops at the declared size
    assert _peak_of(lying) < 2 * MIB


def test_zip_member_over_the_limit_is_refused_after_limit_bytes(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(distfile, "MAX_METADATA_BYTES", 1000)
    path = tmp_path / "foo-1.0.zip"
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as archive:
        archive.writestr("foo-1.0/PKG-INFO", b"Name: foo\n" * 200)
    assert _read(path).reason == "PKG-INFO is larger than 0 MB"


def test_zip_metadata_in_bzip2_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "foo-1.0-py3-none-any.whl"
    with zipfile.ZipFile(path, "w", zipfile.ZIP_BZIP2) as archive:
        archive.writestr("foo-1.0.dist-info/METADATA", b"Name: foo\n")
    assert "unsupported method (12; use deflate)" in _read(path).reason


def test_zip_directory_is_checked_before_it_is_loaded(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "foo-1.0-py3-none-any.whl"
    with zipfile.ZipFile(path, "w") as archive:
        for number in range(20):
            archive.writestr(f"foo/m{number}.py", b"")
    monkeypatch.setattr(distfile, "MAX_ARCHIVE_MEMBERS", 10)
    assert _read(path).reason == "more than 10 archive members"
    monkeypatch.setattr(distfile, "MAX_ARCHIVE_MEMBERS", 100)
    monkeypatch.setattr(distfile, "MAX_ZIP_DIRECTORY_BYTES", 1000)
    assert _read(path).reason == "the zip directory is larger than 0 MB"


def test_zip64_end_record_is_read(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "foo-1.0-py3-none-any.whl"
    with zipfile.ZipFile(path, "w") as archive:
        for number in range(0x10000):  # one more than a plain end record can count
            archive.writestr(zipfile.ZipInfo(f"{number}"), b"")
    monkeypatch.setattr(distfile, "MAX_ARCHIVE_MEMBERS", 0xFFFF)
    assert _read(path).reason == f"more than {0xFFFF} archive members"


def test_tar_pkg_info_bomb_is_refused_by_its_size(tmp_path: Path) -> None:
    path = tar_bomb(tmp_path / "foo-1.0.tar.gz", "foo", "1.0", pkg_info_mib=1024)
    assert _read(path).reason == "PKG-INFO is larger than 8 MB"
    assert _peak_of(path) < 2 * MIB


def test_tar_is_inflated_only_so_far(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = tar_bomb(tmp_path / "foo-1.0.tar.gz", "foo", "1.0", junk_mib=8)
    assert read_core_metadata(path, parse_filename(path.name)).name == "foo"
    monkeypatch.setattr(distfile, "MIN_INFLATED_BYTES", 4 * MIB)
    assert _read(path).reason == "more than 4 MB uncompressed before its PKG-INFO"


def test_tar_huge_pax_header_is_refused(tmp_path: Path) -> None:
    path = tar_bomb(tmp_path / "foo-1.0.tar.gz", "foo", "1.0", pax_mib=64)
    assert _read(path).reason == "a tar header is larger than 8 MB"
    assert _peak_of(path) < 2 * MIB


def test_tar_members_are_counted_and_not_kept(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = many_members_tar(tmp_path / "foo-1.0.tar.gz", "foo", "1.0", 3000)
    assert read_core_metadata(path, parse_filename(path.name)).name is None  # no PKG-INFO
    assert _peak_of(path) < 1 * MIB  # 3,000 TarInfo objects kept would take ~3 MB
    monkeypatch.setattr(distfile, "MAX_ARCHIVE_MEMBERS", 100)
    assert _read(path).reason == "no PKG-INFO in its first 100 members"


@pytest.mark.parametrize("fmt", ["tar.bz2", "tar.xz", "tar"])
def test_other_tar_compressions_still_read(tmp_path: Path, fmt: str) -> None:
    members = {"foo-1.0/PKG-INFO": b"Metadata-Version: 2.1\nName: foo\nRequires-Python: >=3.9\n"}
    raw = io.BytesIO()
    with tarfile.open(fileobj=raw, mode="w") as archive:
        for name, data in members.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            archive.addfile(info, io.BytesIO(data))
    compress = {"tar.bz2": bz2.compress, "tar.xz": lzma.compress, "tar": bytes}[fmt]
    path = tmp_path / f"foo-1.0.{fmt}"
    path.write_bytes(compress(raw.getvalue()))
    assert read_core_metadata(path, parse_filename(path.name)).requires_python == ">=3.9"


def test_upload_handle_is_read_from_its_start(tmp_path: Path) -> None:
    sdist = make_sdist(tmp_path, "foo", "2.0", requires_python=">=3.9")
    with sdist.open("rb") as handle:
        handle.seek(7)
        assert read_core_metadata(handle, parse_filename(sdist.name)).requires_python == ">=3.9"
