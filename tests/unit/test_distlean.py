"""The lean archive readers (``pypid.distlean``) give what zipfile and tarfile give.

Each case reads one archive twice: as bytes (the lean reader first, the cold start's
path) and as a file object (zipfile / tarfile only, the path before it). The outcomes
must be equal: the same METADATA bytes and Requires-Python, or the same MetadataError
text, or the same exception. ``lean`` says whether the lean reader itself answers (True)
or hands the archive to the full reader (False).
"""

from __future__ import annotations

import gzip
import io
import random
import struct
import tarfile
import warnings
import zipfile
from pathlib import Path
from typing import Any

import pytest

from pypid import distfile, distlean
from pypid.distfile import WHEEL, MetadataError, parse_filename, read_core_metadata
from tests.attack.bombs import many_members_tar, tar_bomb, zip_bomb
from tests.builders import sdist_bytes, wheel_bytes

WHEEL_NAME = "foo-1.0-py3-none-any.whl"
META = b"Metadata-Version: 2.1\nName: foo\nVersion: 1.0\nRequires-Python: >=3.8\n\n"
PKG_INFO = META


def outcome(source: bytes | io.BytesIO, filename: str) -> tuple[Any, ...]:
    """What reading the core metadata gives: the facts, a MetadataError's text, or another
    exception's type and text."""
    try:
        meta = read_core_metadata(source, parse_filename(filename))
    except MetadataError as exc:
        return ("MetadataError", exc.reason)
    except Exception as exc:  # noqa: BLE001 - whatever the full reader raises, the same
        return (type(exc).__name__, str(exc))
    return ("ok", meta.metadata, meta.requires_python, meta.name)


def lean_answers(data: bytes, filename: str) -> bool:
    dist = parse_filename(filename)
    is_zip = dist.kind == WHEEL or filename.endswith(".zip")
    found = distlean.member(data, is_zip, dist.kind == WHEEL, distfile.MAX_METADATA_BYTES)
    return found is not None


def pin(data: bytes, filename: str = WHEEL_NAME, *, lean: bool) -> tuple[Any, ...]:
    """Assert both paths agree and whether the lean reader answered; return the outcome."""
    full = outcome(io.BytesIO(data), filename)
    assert outcome(data, filename) == full
    assert lean_answers(data, filename) is lean
    return full


class _Sink:
    """A stream without seek or tell: zipfile then writes data descriptors."""

    def __init__(self) -> None:
        self.buffer = io.BytesIO()

    def write(self, data: bytes) -> int:
        return self.buffer.write(data)

    def flush(self) -> None:
        pass


def make_zip(members: list[tuple[str, bytes]], *, method: int = zipfile.ZIP_DEFLATED,
             stored: tuple[str, ...] = (), comment: bytes = b"", streamed: bool = False,
             extra: bytes = b"") -> bytes:
    sink = _Sink() if streamed else io.BytesIO()
    with zipfile.ZipFile(sink, "w", method) as archive:  # type: ignore[arg-type]
        for name, data in members:
            info = zipfile.ZipInfo(name, date_time=(2020, 1, 1, 0, 0, 0))
            info.compress_type = zipfile.ZIP_STORED if name in stored else method
            info.extra = extra
            archive.writestr(info, data)
        archive.comment = comment
    return sink.buffer.getvalue() if isinstance(sink, _Sink) else sink.getvalue()


def plain(meta_name: str = "foo-1.0.dist-info/METADATA", **options: Any) -> bytes:
    return make_zip([("foo/__init__.py", b"x = 1\n" * 50), (meta_name, META),
                     ("foo-1.0.dist-info/RECORD", b"")], **options)


# -- wheels


def test_deflated_and_stored_metadata_are_read_lean() -> None:
    assert pin(plain(), lean=True)[:3] == ("ok", META, ">=3.8")
    pin(plain(stored=("foo-1.0.dist-info/METADATA",)), lean=True)
    pin(plain(method=zipfile.ZIP_STORED), lean=True)


def test_a_builders_wheel_is_read_lean() -> None:
    filename, data = wheel_bytes("Foo_Bar", "2.0", requires_python=">=3.9",
                                 payload=b"\x01" * 5000)
    assert pin(data, filename, lean=True)[2] == ">=3.9"


def test_data_descriptors_are_read_lean() -> None:
    data = plain(streamed=True)
    assert zipfile.ZipFile(io.BytesIO(data)).getinfo("foo-1.0.dist-info/METADATA").flag_bits & 8
    pin(data, lean=True)


def test_plain_extra_fields_are_read_lean_and_others_are_not() -> None:
    pin(plain(extra=struct.pack("<HHBl", 0x5455, 5, 1, 0)), lean=True)
    pin(plain(extra=struct.pack("<HHl", 0x9999, 4, 0)), lean=False)
    pin(plain(extra=struct.pack("<HHl", 0x5455, 40, 0)), lean=False)  # runs past its end


def test_zip64_is_left_to_zipfile(monkeypatch: pytest.MonkeyPatch) -> None:
    with monkeypatch.context() as patch:
        patch.setattr(zipfile, "ZIP64_LIMIT", 16)  # zip64 records and extras for all of it
        data = plain()
    assert b"PK\x06\x06" in data
    pin(data, lean=False)
    forced = io.BytesIO()
    with zipfile.ZipFile(forced, "w") as archive, archive.open(
            "foo-1.0.dist-info/METADATA", "w", force_zip64=True) as member:
        member.write(META)
    pin(forced.getvalue(), lean=True)  # a zip64 local header only: nothing zipfile reads


def test_archive_comment_is_left_to_zipfile() -> None:
    assert pin(plain(comment=b"a comment"), lean=False)[1] == META
    pin(plain(comment=b"PK\x05\x06" + b"\0" * 18), lean=False)


@pytest.mark.parametrize("name", [
    "foo-1.0.DIST-INFO/METADATA", "foo-1.0.dist-info/metadata", "foo-1.0.Dist-Info/METADATA",
    "top/foo-1.0.dist-info/METADATA", "METADATA",
])
def test_no_metadata_is_the_same_error(name: str) -> None:
    assert pin(plain(meta_name=name), lean=False) == (
        "MetadataError", "no .dist-info/METADATA in the wheel")


def test_two_candidates_are_left_to_zipfile() -> None:
    other = META.replace(b"foo", b"bar")
    for members in ([("bar-1.0.dist-info/METADATA", other), ("foo-1.0.dist-info/METADATA", META)],
                    [("foo-1.0.dist-info/METADATA", META), ("bar-1.0.dist-info/METADATA", other)],
                    [("foo-1.0.dist-info/METADATA", META), ("foo-1.0.dist-info/METADATA", other)]):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # zipfile warns of the duplicate name it writes
            data = make_zip(members)
        assert pin(data, lean=False)[0] == "ok"


@pytest.mark.parametrize("cut", [1, 10, 22, 23, 60, 200, 400])
def test_truncated_wheels_agree(cut: int) -> None:
    data = plain()
    pin(data[:-cut], lean=False)
    pin(data[:cut], lean=False)


def test_bombs_are_left_to_zipfile(tmp_path: Path) -> None:
    honest = zip_bomb(tmp_path / "honest.whl", "foo-1.0.dist-info/METADATA", 16).read_bytes()
    assert pin(honest, lean=False) == ("MetadataError", "METADATA is larger than 8 MB")
    lying = zip_bomb(tmp_path / "lying.whl", "foo-1.0.dist-info/METADATA", 64,
                     honest_size=False).read_bytes()  # declares 100 bytes
    assert pin(lying, lean=False)[1].startswith("unreadable archive (Bad CRC-32")


def test_bad_crc_and_flags_agree() -> None:
    data = bytearray(plain(stored=("foo-1.0.dist-info/METADATA",)))
    data[data.index(b"Requires-Python")] ^= 1
    assert pin(bytes(data), lean=False)[1].startswith("unreadable archive (Bad CRC-32")
    for offset, value in ((8, 1), (6, 64), (10, 12)):  # encrypted, version 6.4, bzip2
        changed = bytearray(plain())
        at = bytes(changed).rindex(b"PK\x01\x02", 0,
                                   bytes(changed).rindex(b"foo-1.0.dist-info/METADATA"))
        changed[at + offset] = value
        pin(bytes(changed), lean=False)


def test_other_names_and_places_agree() -> None:
    pin(make_zip([("fooé/__init__.py", b""), ("foo-1.0.dist-info/METADATA", META)]), lean=False)
    pin(b"junk before" + plain(), lean=False)  # zipfile finds it; the lean reader does not try
    pin(make_zip([("foo-1.0.dist-info/METADATA", META)], method=zipfile.ZIP_BZIP2), lean=False)


def test_sdist_zip_pkg_info() -> None:
    data = make_zip([("foo-1.0/PKG-INFO", PKG_INFO), ("foo-1.0/setup.py", b"")])
    assert pin(data, "foo-1.0.zip", lean=True)[2] == ">=3.8"
    pin(make_zip([("foo-1.0/setup.py", b"")]), "foo-1.0.zip", lean=False)


def test_bounds_are_distfiles() -> None:
    assert distlean._MAX_MEMBERS == distfile.MAX_ARCHIVE_MEMBERS
    assert distlean._MAX_DIRECTORY == distfile.MAX_ZIP_DIRECTORY_BYTES


# -- tar sdists


def make_tar(members: list[tuple[str, bytes | None]], fmt: int = tarfile.PAX_FORMAT) -> bytes:
    """An uncompressed tar; a None member is a directory."""
    raw = io.BytesIO()
    with tarfile.open(fileobj=raw, mode="w", format=fmt) as archive:
        for name, data in members:
            info = tarfile.TarInfo(name)
            info.mtime = 1577836800
            if data is None:
                info.type = tarfile.DIRTYPE
                archive.addfile(info)
            else:
                info.size = len(data)
                archive.addfile(info, io.BytesIO(data))
    return raw.getvalue()


def gz(data: bytes) -> bytes:
    return gzip.compress(data, mtime=0)


def test_a_builders_sdist_is_read_lean() -> None:
    filename, data = sdist_bytes("Foo", "1.0", requires_python=">=3.7")
    assert pin(data, filename, lean=True)[2] == ">=3.7"


def test_pkg_info_after_folders_and_files_is_read_lean() -> None:
    data = gz(make_tar([("foo-1.0", None), ("foo-1.0/setup.py", b"x" * 3000),
                        ("foo-1.0/PKG-INFO", PKG_INFO)]))
    assert pin(data, "foo-1.0.tar.gz", lean=True)[2] == ">=3.8"
    old_style = gz(make_tar([("foo-1.0/a", b"1"), ("foo-1.0/PKG-INFO", PKG_INFO)],
                            tarfile.GNU_FORMAT))
    pin(old_style, "foo-1.0.tar.gz", lean=True)


@pytest.mark.parametrize("fmt", [tarfile.PAX_FORMAT, tarfile.GNU_FORMAT, tarfile.USTAR_FORMAT])
def test_long_names_are_left_to_tarfile(fmt: int) -> None:
    long = "foo-1.0/" + "d" * 90 + "/" + "e" * 60
    data = gz(make_tar([(long, b"x"), ("foo-1.0/PKG-INFO", PKG_INFO)], fmt))
    assert pin(data, "foo-1.0.tar.gz", lean=False)[2] == ">=3.8"


def test_tar_without_pkg_info_and_nested_ones_agree(tmp_path: Path) -> None:
    assert pin(gz(make_tar([("foo-1.0/a/PKG-INFO", PKG_INFO), ("PKG-INFO", PKG_INFO)])),
               "foo-1.0.tar.gz", lean=False) == ("ok", None, None, None)
    many = many_members_tar(tmp_path / "foo-1.0.tar.gz", "foo", "1.0", 300).read_bytes()
    pin(many, "foo-1.0.tar.gz", lean=False)


def test_tar_bombs_are_left_to_tarfile(tmp_path: Path) -> None:
    big = tar_bomb(tmp_path / "a.tar.gz", "foo", "1.0", pkg_info_mib=64).read_bytes()
    assert pin(big, "foo-1.0.tar.gz", lean=False) == (
        "MetadataError", "PKG-INFO is larger than 8 MB")
    far = tar_bomb(tmp_path / "b.tar.gz", "foo", "1.0", junk_mib=8).read_bytes()
    assert pin(far, "foo-1.0.tar.gz", lean=False)[0] == "ok"  # past what the lean one reads
    pax = tar_bomb(tmp_path / "c.tar.gz", "foo", "1.0", pax_mib=16).read_bytes()
    pin(pax, "foo-1.0.tar.gz", lean=False)


def test_gzip_oddities_agree() -> None:
    tar = make_tar([("foo-1.0/PKG-INFO", PKG_INFO)])
    data = gz(tar)
    bad_crc = data[:-8] + bytes(b ^ 0xFF for b in data[-8:-4]) + data[-4:]
    pin(bad_crc, "foo-1.0.tar.gz", lean=False)
    pin(data + gz(b"more"), "foo-1.0.tar.gz", lean=False)  # a second gzip member
    pin(data + b"junk", "foo-1.0.tar.gz", lean=False)
    for cut in (1, 8, 20, len(data) // 2):
        pin(data[:-cut], "foo-1.0.tar.gz", lean=False)
    pin(tar, "foo-1.0.tar", lean=False)


def test_far_pkg_info_before_the_stream_end_is_read_lean() -> None:
    noise = random.Random(7).randbytes(300_000)  # noqa: S311 - incompressible, repeatable
    data = gz(make_tar([("foo-1.0/PKG-INFO", PKG_INFO), ("foo-1.0/noise", noise)]))
    pin(data, "foo-1.0.tar.gz", lean=True)
    late = gz(make_tar([("foo-1.0/noise", noise), ("foo-1.0/PKG-INFO", PKG_INFO)]))
    pin(late, "foo-1.0.tar.gz", lean=True)


def _header_offsets(tar: bytes) -> list[int]:
    with tarfile.open(fileobj=io.BytesIO(tar)) as archive:
        return [member.offset for member in archive.getmembers()]


def _with_checksums(tar: bytearray, offsets: list[int]) -> bytes:
    """The headers at ``offsets`` given a right checksum again (so tarfile looks further)."""
    for at in offsets:
        block = tar[at:at + 512]
        block[148:156] = b" " * 8
        tar[at + 148:at + 156] = b"%06o\0 " % (sum(block) & 0o777777)
    return bytes(tar)


def test_bad_tar_headers_agree() -> None:
    tar = make_tar([("foo-1.0/a", b"1"), ("foo-1.0/PKG-INFO", PKG_INFO)], tarfile.USTAR_FORMAT)
    offsets = _header_offsets(tar)
    assert offsets == [0, 1024]
    for header in offsets:
        for at, value in ((148, ord("9")), (100, ord("x")), (124, 0o200), (345, ord("p")),
                          (156, ord("2")), (156, ord("x")), (136, ord(" ")), (108, 0o377),
                          (329, ord("8")), (0, 0xE9), (257, ord("x")), (124, ord("7"))):
            changed = bytearray(tar)
            changed[header + at] = value
            pin(gz(bytes(changed)), "foo-1.0.tar.gz", lean=False)
            if at != 148:
                pin(gz(_with_checksums(changed, offsets)), "foo-1.0.tar.gz",
                    lean=(at, value) in ((0, 0xE9), (257, ord("x")), (136, ord(" "))))


# -- many small changes: both paths agree on every one (seeded, so always the same)


def _mutants(data: bytes, seed: int, count: int) -> list[bytes]:
    rng = random.Random(seed)  # noqa: S311 - a repeatable mix
    out = []
    for _ in range(count):
        changed = bytearray(data)
        for _ in range(rng.choice((1, 1, 2, 4))):
            changed[rng.randrange(len(changed))] = rng.randrange(256)
        out.append(bytes(changed))
    return out


@pytest.mark.parametrize("stored", [False, True])
def test_changed_wheels_agree(stored: bool) -> None:
    data = plain(stored=("foo-1.0.dist-info/METADATA",) if stored else ())
    for changed in _mutants(data, 18 + stored, 600):
        full = outcome(io.BytesIO(changed), WHEEL_NAME)
        assert outcome(changed, WHEEL_NAME) == full, changed


def test_changed_tars_agree() -> None:
    tar = make_tar([("foo-1.0", None), ("foo-1.0/a", b"1" * 700),
                    ("foo-1.0/PKG-INFO", PKG_INFO)], tarfile.USTAR_FORMAT)
    offsets = _header_offsets(tar)
    for number, changed in enumerate(_mutants(tar, 3, 1000)):
        data = gz(_with_checksums(bytearray(changed), offsets) if number % 2 else changed)
        assert outcome(data, "foo-1.0.tar.gz") == outcome(io.BytesIO(data), "foo-1.0.tar.gz")
    for data in _mutants(gz(tar), 4, 300):
        assert outcome(data, "foo-1.0.tar.gz") == outcome(io.BytesIO(data), "foo-1.0.tar.gz")



# -- the header scan stops at the first blank line without decoding the body


def _headers_before(metadata: bytes) -> tuple[str | None, str | None]:
    """parse_requires_python as it was, written another way: the whole text decoded, the
    header lines up to the first blank one folded into fields, the first of each kept."""
    lines = metadata.decode("utf-8", "replace").splitlines()
    end = next((at for at, line in enumerate(lines) if not line.strip()), len(lines))
    fields: list[list[str | None]] = []  # [name or None, value]
    for line in lines[:end]:
        if line[0] not in " \t":
            name, sep, value = line.partition(":")
            fields.append([name.strip().lower() if sep else None, value.strip()])
        elif fields:
            fields[-1][1] = f"{fields[-1][1]} {line.strip()}"
    found: dict[str, str] = {}
    for name, value in fields:
        if name in ("requires-python", "name"):
            found.setdefault(name, value)  # type: ignore[arg-type]
    return tuple(" ".join(v.split()) or None if v is not None else None  # type: ignore[return-value]
                 for v in (found.get("requires-python"), found.get("name")))


def test_requires_python_scan_matches_a_scan_of_the_whole_text() -> None:
    pieces = [b"Name: foo", b"Requires-Python: >=3.8", b"  , <4", b"", b"\t", b" ", b"\r",
              b"Requires-Python: >=3.9", b"Name: bar", b"\xe2\x82", b"x\x0cy", b"Body text",
              b"\n", b"\r\n", b"Name:", b"requires-python:  >= 3.7 ",
              # lines the scan passes over at their first character, and those it must not
              b"Summary: s", b"Nope: 1", b"R: x", b"N", b"Rx-Python: 1", b"nAME : q",
              b"REQUIRES-PYTHON:>=2", b"\xc2\xa0Name: nbsp", b"\xe2\x80\x83Requires-Python: 3",
              # plain ASCII (the regex path) and the bytes that must leave it
              b"Name\t: tab", b"NAME :  spaced   value ", b" \t", b"\t\tfolded  on", b"name:x:y",
              b"Names: no", b"Name-x: no", b"Requires-Python:", b"\x1f", b"a\x0bb", b"x\x1cy",
              b"Name: del\x7f", b"\x00", b"Requires-Python: >=3.10 ; ", b"  "]
    rng = random.Random(5)  # noqa: S311 - a repeatable mix
    for _ in range(20000):
        text = b"".join(rng.choice(pieces) + rng.choice((b"\n", b"\r\n", b"", b"\n\n"))
                        for _ in range(rng.randrange(1, 9)))
        assert distfile.parse_requires_python(text) == _headers_before(text), text
