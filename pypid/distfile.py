"""Distribution files: parse wheel and sdist names, normalize project names, hash, read metadata.

Everything here is pure except ``read_core_metadata`` and ``hash_file``, kept at
the bottom. Errors subclass ValueError and name the file.
"""

from __future__ import annotations

import bz2
import contextlib
import gzip
import hashlib
import io
import lzma
import os
import re
import struct
import tarfile
import zipfile
import zlib
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import IO, NewType

from packaging.utils import canonicalize_name, parse_wheel_filename
from packaging.version import InvalidVersion, Version

from pypid import distlean

NormalizedName = NewType("NormalizedName", str)

WHEEL = "wheel"
SDIST = "sdist"
# What pip can install from an index (pip's own archive list); eggs are not installable.
SDIST_SUFFIXES = (".tar.gz", ".tgz", ".zip", ".tar.bz2", ".tbz", ".tar.xz", ".txz", ".tar")
DIST_SUFFIXES = (".whl", *SDIST_SUFFIXES)
TEMP_SUFFIXES = (".tmp", ".part", ".partial", ".crdownload", ".swp", "~")
# Decompression-bomb bounds: what one METADATA/PKG-INFO may hold, how many members an
# archive may have, how big a zip's directory may be before zipfile loads it (wheels
# with 20,000 files have about 3 MB), and how far a tar sdist is inflated to find
# PKG-INFO (100x what was sent, at least 64 MB, at most 1 GB: real sdists are 3-10x).
MAX_METADATA_BYTES = 8 * 1024 * 1024
MAX_ARCHIVE_MEMBERS = 100_000
MAX_ZIP_DIRECTORY_BYTES = 16 * 1024 * 1024
MIN_INFLATED_BYTES = 64 * 1024 * 1024
MAX_INFLATED_BYTES = 1024 * 1024 * 1024
MAX_INFLATE_RATIO = 100
# deflate is inflated in bounded steps by zipfile; its bzip2 and lzma readers are not.
_ZIP_METHODS = (zipfile.ZIP_STORED, zipfile.ZIP_DEFLATED)
_CHUNK = 64 * 1024
_EOCD = struct.Struct("<4s4H2LH")
_ZIP64_LOCATOR = struct.Struct("<4sLQL")
_ZIP64_EOCD = struct.Struct("<4sQ2H2L4Q")

# re.ASCII: with IGNORECASE alone, [A-Z] also matches the Kelvin sign and the long s.
_NAME_RE = re.compile(r"^([A-Z0-9]|[A-Z0-9][A-Z0-9._-]*[A-Z0-9])$", re.IGNORECASE | re.ASCII)
_NORMALIZED_RE = re.compile(r"^[a-z0-9]([a-z0-9-]*[a-z0-9])?$")
_UNSAFE_CHARS_RE = re.compile(r"[\x00-\x1f\x7f/\\]")
# PEP 427 escapes every component of a wheel name down to these characters.
_WHEEL_NAME_RE = re.compile(r"^[A-Za-z0-9_.!+-]+\.whl$")
MAX_FILENAME_BYTES = 255  # NAME_MAX on Linux file systems


class InvalidFilenameError(ValueError):
    """A file name that is not a wheel or sdist name we can index."""

    def __init__(self, filename: str, reason: str) -> None:
        super().__init__(f"{filename!r}: {reason}")
        self.filename = filename
        self.reason = reason


class MetadataError(ValueError):
    """An archive whose core metadata cannot be read."""

    def __init__(self, filename: str, reason: str) -> None:
        super().__init__(f"{filename!r}: {reason}")
        self.filename = filename
        self.reason = reason


@dataclass(frozen=True, slots=True)
class DistFile:
    """What a distribution's file name says about it."""

    filename: str
    project: NormalizedName
    version: Version
    kind: str  # WHEEL or SDIST


@dataclass(frozen=True, slots=True)
class CoreMetadata:
    """A file's core metadata: the wheel's METADATA bytes (None for sdists) and Requires-Python."""

    metadata: bytes | None
    requires_python: str | None
    name: str | None


def normalize(name: str) -> NormalizedName:
    """The PEP 503 form of a project name.

    >>> normalize("Foo.Bar__baz")
    'foo-bar-baz'
    """
    return NormalizedName(canonicalize_name(name))


def is_valid_project_name(name: str) -> bool:
    """Is ``name`` a valid project name (PEP 508)?

    >>> [is_valid_project_name(n) for n in ("foo_bar", "-foo", "a\\r")]
    [True, False, False]
    """
    return bool(_NAME_RE.match(name))


def is_normalized(name: str) -> bool:
    """Is ``name`` already in PEP 503 form?"""
    return bool(_NORMALIZED_RE.match(name))


def is_safe_filename(filename: str) -> bool:
    """Could ``filename`` be a single, visible file in the package root?

    >>> [is_safe_filename(n) for n in ("a-1.0.tar.gz", "../a", ".a", "a\\x00", "")]
    [True, False, False, False, False]
    """
    return (
        bool(filename)
        and filename not in (".", "..")
        and not filename.startswith(".")
        and not _UNSAFE_CHARS_RE.search(filename)
    )


def is_temp_name(filename: str) -> bool:
    """Files being written (by pypid or a copy in progress) that the index must not show."""
    return filename.startswith(".") or filename.endswith(TEMP_SUFFIXES)


def has_dist_suffix(filename: str) -> bool:
    """Does the name end like a distribution file (the index considers only these)?

    Case matters, as it does to pip: ``foo-1.0.WHL`` is not a wheel to it.
    """
    return filename.endswith(DIST_SUFFIXES)


def parse_filename(filename: str) -> DistFile:
    """Parse a wheel or sdist file name; raise InvalidFilenameError.

    Legacy sdist names such as ``systemd-python-234.tar.gz`` are understood:
    the version starts at the first ``-<digit>`` after which the rest is a
    valid PEP 440 version.

    >>> d = parse_filename("Foo_Bar-1.0.post1-py3-none-any.whl")
    >>> (d.project, str(d.version), d.kind)
    ('foo-bar', '1.0.post1', 'wheel')
    >>> str(parse_filename("systemd-python-234.tar.gz").project)
    'systemd-python'
    """
    if not is_safe_filename(filename):
        raise InvalidFilenameError(filename, "not a plain file name")
    if not filename.isascii():  # as PyPI: a Unicode space or digit would make a second name
        raise InvalidFilenameError(filename, "not an ASCII name")
    if len(filename.encode("utf-8", "surrogateescape")) > MAX_FILENAME_BYTES:
        raise InvalidFilenameError(filename, f"longer than {MAX_FILENAME_BYTES} bytes")
    if filename.endswith(".whl"):
        if not _WHEEL_NAME_RE.match(filename):
            raise InvalidFilenameError(filename, "a wheel name has only letters, digits and _.!+-")
        try:
            name, version, _build, _tags = parse_wheel_filename(filename)
        except ValueError as exc:  # InvalidWheelFilename, InvalidVersion
            raise InvalidFilenameError(filename, f"invalid wheel name ({exc})") from None
        return DistFile(filename, NormalizedName(name), version, WHEEL)
    for suffix in SDIST_SUFFIXES:
        if filename.endswith(suffix):
            stem = filename[: -len(suffix)]
            project, version = _split_sdist_stem(filename, stem)
            return DistFile(filename, project, version, SDIST)
    raise InvalidFilenameError(filename, "not a wheel or sdist (unknown extension)")


def _split_sdist_stem(filename: str, stem: str) -> tuple[NormalizedName, Version]:
    for match in re.finditer(r"-(?=\d)", stem):
        name, version_text = stem[: match.start()], stem[match.end():]
        if not is_valid_project_name(name):
            continue
        try:
            return normalize(name), Version(version_text)
        except InvalidVersion:
            continue
    raise InvalidFilenameError(filename, "no <name>-<version> in the sdist name")


def parse_requires_python(metadata: bytes) -> tuple[str | None, str | None]:
    r"""(Requires-Python, Name) from core metadata headers; None where absent.

    A plain scan of the header block (RFC 822 style, with continuation lines):
    the email package is ten times slower, and this runs for every new file.

    >>> parse_requires_python(b"Metadata-Version: 2.1\nName: x\nRequires-Python: >=3.8\n\nbody")
    ('>=3.8', 'x')
    """
    found: dict[str, str] = {}
    current = None
    blank = metadata.find(b"\n\n")  # the headers end there at the latest: skip the body
    headers = metadata if blank < 0 else metadata[:blank]
    for line in headers.decode("utf-8", "replace").splitlines():
        if not line or line.isspace():
            break  # the end of the headers
        first = line[0]
        if first in " \t":
            if current is not None:
                found[current] += " " + line.strip()
            continue
        if first not in "NnRr" and not first.isspace():  # neither name: the usual line
            current = None
            continue
        key, sep, value = line.partition(":")
        current = key.strip().lower() if sep else None
        if current in ("requires-python", "name") and current not in found:
            found[current] = value.strip()
        else:
            current = None
    return (_clean_header(found.get("requires-python")), _clean_header(found.get("name")))


def _clean_header(value: object) -> str | None:
    if value is None:
        return None
    text = " ".join(str(value).split())
    return text or None


# -- I/O: the only functions here that touch the file system


def hash_file(handle: IO[bytes], chunk_size: int = 1024 * 1024) -> tuple[str, int]:
    """(sha256 hex, size) of an open binary file, read to its end."""
    digest = hashlib.sha256()
    size = 0
    while chunk := handle.read(chunk_size):
        digest.update(chunk)
        size += len(chunk)
    return digest.hexdigest(), size


def read_core_metadata(path: Path | IO[bytes] | bytes, dist: DistFile) -> CoreMetadata:
    """Read a wheel's ``.dist-info/METADATA`` (exact bytes) or an sdist's ``PKG-INFO``.

    ``path`` is a path or an open binary file (an upload being checked).

    Raise MetadataError when the archive is broken, holds no metadata, or would
    cost more than the bounds above to read (a decompression bomb). Sdist
    metadata is used only for Requires-Python: it is not served (PEP 658 allows
    it only when trustworthy).
    """
    data = read_metadata(path, dist)
    if data is None:
        if dist.kind == WHEEL:
            raise MetadataError(dist.filename, "no .dist-info/METADATA in the wheel")
        return CoreMetadata(None, None, None)
    requires, name = parse_requires_python(data)
    return CoreMetadata(data if dist.kind == WHEEL else None, requires, name)


def read_metadata(path: Path | IO[bytes] | bytes, dist: DistFile) -> bytes | None:
    """A wheel's METADATA or an sdist's PKG-INFO (None: none), read within the bounds above.
    A whole file in memory (``bytes``) is tried with ``distlean``'s readers first."""
    if isinstance(path, bytes):
        is_zip = dist.kind == WHEEL or dist.filename.endswith(".zip")
        found = distlean.member(path, is_zip, dist.kind == WHEEL, MAX_METADATA_BYTES)
        if found is not None:
            return found
        path = io.BytesIO(path)
    try:
        with contextlib.ExitStack() as stack:
            handle = stack.enter_context(open(path, "rb")) if isinstance(path, Path) else path
            handle.seek(0)
            if dist.kind == WHEEL:
                return _zip_member(handle, dist, _is_wheel_metadata, "METADATA")
            if dist.filename.endswith(".zip"):
                return _zip_member(handle, dist, _is_top_pkg_info, "PKG-INFO")
            return _tar_pkg_info(handle, dist)
    except (OSError, zipfile.BadZipFile, tarfile.TarError, EOFError, ValueError,
            zlib.error, lzma.LZMAError) as exc:
        if isinstance(exc, MetadataError):
            raise
        raise MetadataError(dist.filename, f"unreadable archive ({exc})") from None


def _is_wheel_metadata(name: str) -> bool:
    return name.count("/") == 1 and name.endswith(".dist-info/METADATA")


def _is_top_pkg_info(name: str) -> bool:
    return name.count("/") == 1 and name.endswith("/PKG-INFO")


def _too_large(dist: DistFile, label: str) -> MetadataError:
    return MetadataError(dist.filename, f"{label} is larger than {MAX_METADATA_BYTES >> 20} MB")


def _zip_member(handle: IO[bytes], dist: DistFile, wanted: Callable[[str], bool],
                label: str) -> bytes | None:
    """The bytes of the member ``wanted`` picks, reading at most MAX_METADATA_BYTES + 1."""
    _check_zip_directory(handle, dist)
    with zipfile.ZipFile(handle) as archive:
        candidates = [info for info in archive.infolist() if wanted(info.filename)]
        if not candidates:
            return None
        # Several dist-info folders: take the one named after this project.
        candidates.sort(key=lambda info: normalize(info.filename.split("-", 1)[0]) != dist.project)
        info = candidates[0]
        if info.compress_type not in _ZIP_METHODS:
            raise MetadataError(dist.filename, f"{label} is compressed with an unsupported "
                                f"method ({info.compress_type}; use deflate)")
        if info.file_size > MAX_METADATA_BYTES:
            raise _too_large(dist, label)
        # zipfile stops at the declared size and inflates deflate as much as asked.
        with archive.open(info) as member:
            return _read_bounded(member, dist, label)


def _read_bounded(member: IO[bytes], dist: DistFile, label: str) -> bytes:
    """All of ``member`` if it holds at most MAX_METADATA_BYTES, read in small steps."""
    data = bytearray()
    while len(data) <= MAX_METADATA_BYTES and (chunk := member.read(_CHUNK)):
        data += chunk
    if len(data) > MAX_METADATA_BYTES:
        raise _too_large(dist, label)
    return bytes(data)


def _check_zip_directory(handle: IO[bytes], dist: DistFile) -> None:
    """Refuse a zip whose central directory is too big, before zipfile loads all of it.

    Reads the end record (and its zip64 twin) the way zipfile finds it: the last
    signature in the final 64 KiB.
    """
    end = handle.seek(0, os.SEEK_END)
    size = min(end, _ZIP64_LOCATOR.size + _EOCD.size + 0xFFFF)
    handle.seek(end - size)
    tail = handle.read(size)
    at = tail.rfind(b"PK\x05\x06")
    if at < 0 or len(tail) - at < _EOCD.size:
        raise MetadataError(dist.filename, "not a zip archive (no end of central directory)")
    fields = _EOCD.unpack_from(tail, at)
    count, directory = fields[4], fields[5]
    if (count == 0xFFFF or directory == 0xFFFFFFFF) and at >= _ZIP64_LOCATOR.size:
        locator = _ZIP64_LOCATOR.unpack_from(tail, at - _ZIP64_LOCATOR.size)
        signature, offset = locator[0], locator[2]
        if signature == b"PK\x06\x07":
            handle.seek(offset)
            record = handle.read(_ZIP64_EOCD.size)
            if len(record) == _ZIP64_EOCD.size and record[:4] == b"PK\x06\x06":
                count, directory = _ZIP64_EOCD.unpack(record)[7:9]
    if count > MAX_ARCHIVE_MEMBERS:
        raise MetadataError(dist.filename, f"more than {MAX_ARCHIVE_MEMBERS} archive members")
    if directory > MAX_ZIP_DIRECTORY_BYTES:
        raise MetadataError(dist.filename, "the zip directory is larger than "
                            f"{MAX_ZIP_DIRECTORY_BYTES >> 20} MB")
    handle.seek(0)


def _tar_pkg_info(handle: IO[bytes], dist: DistFile) -> bytes | None:
    """The top-level PKG-INFO of a tar sdist, looking at no more than the bounds allow.

    We decompress ourselves so that every read and seek goes through _Inflated;
    members are read one by one and not kept (tarfile would keep them all).
    """
    compressed = handle.seek(0, os.SEEK_END)
    handle.seek(0)
    with contextlib.ExitStack() as stack:
        inflating = _decompressed(handle)
        raw = stack.enter_context(inflating) if inflating else handle
        stream = _Inflated(raw, _inflate_limit(compressed), dist)
        archive = stack.enter_context(tarfile.open(fileobj=stream, mode="r:"))  # type: ignore[call-overload]
        for _ in range(MAX_ARCHIVE_MEMBERS):
            member = archive.next()
            if member is None:
                return None
            archive.members.clear()  # what tarfile keeps of each member
            if member.isfile() and _is_top_pkg_info(member.name):
                if member.size > MAX_METADATA_BYTES:
                    raise _too_large(dist, "PKG-INFO")
                extracted = archive.extractfile(member)
                return _read_bounded(extracted, dist, "PKG-INFO") if extracted else None
    raise MetadataError(dist.filename, f"no PKG-INFO in its first {MAX_ARCHIVE_MEMBERS} members")


def _inflate_limit(compressed: int) -> int:
    """How far a tar sdist may be decompressed: bounded by a ratio to what was sent, so
    a bomb costs its sender bandwidth in proportion, and by a ceiling.

    >>> [_inflate_limit(size) >> 20 for size in (1 << 10, 1 << 20, 1 << 30)]
    [64, 100, 1024]
    """
    return min(MAX_INFLATED_BYTES, max(MIN_INFLATED_BYTES, compressed * MAX_INFLATE_RATIO))


class _Inflated:
    """A decompressed stream that refuses to go past ``limit`` or to read a huge block at
    once (tarfile reads a pax or GNU long-name header whole)."""

    def __init__(self, raw: IO[bytes], limit: int, dist: DistFile) -> None:
        self._raw, self._limit, self._dist = raw, limit, dist

    def _allow(self, end: int) -> None:
        if end > self._limit:
            raise MetadataError(self._dist.filename, "more than "
                                f"{self._limit >> 20} MB uncompressed before its PKG-INFO")

    def read(self, size: int = -1) -> bytes:
        if size < 0 or size > MAX_METADATA_BYTES + tarfile.BLOCKSIZE:
            raise MetadataError(self._dist.filename, "a tar header is larger than "
                                f"{MAX_METADATA_BYTES >> 20} MB")
        self._allow(self._raw.tell() + size)
        return self._raw.read(size)

    def seek(self, offset: int, whence: int = os.SEEK_SET) -> int:
        if whence != os.SEEK_SET:
            raise MetadataError(self._dist.filename, "unexpected seek in a tar archive")
        self._allow(offset)
        return self._raw.seek(offset)

    def tell(self) -> int:
        return self._raw.tell()


def _decompressed(handle: IO[bytes]) -> IO[bytes] | None:
    """A reader of the decompressed bytes, chosen by magic number; None: not compressed."""
    magic = handle.read(6)
    handle.seek(0)
    if magic.startswith(b"\x1f\x8b"):
        return gzip.GzipFile(fileobj=handle, mode="rb")
    if magic.startswith(b"BZh"):
        return bz2.BZ2File(handle, "rb")
    if magic.startswith(b"\xfd7zXZ"):
        return lzma.LZMAFile(handle, "rb")
    return None
