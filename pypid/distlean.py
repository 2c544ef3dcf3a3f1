"""Lean readers of one metadata member of an archive held in memory: the cold start's path.

``zipfile`` builds a ZipInfo for every member and ``tarfile`` a TarInfo through layers
of file objects; a first start reads tens of thousands of archives, and that was most
of its time. These read the zip's central directory or the tar's first headers with
``struct`` and ``zlib`` alone, for the plain archives almost every upload is.

They never decide anything: the bytes they return are the ones the full readers in
``pypid.distfile`` would return, and for anything else (zip64, encryption, an archive
comment, two candidates, a pax header, a bad checksum, a size off by one, a bomb)
they return None and the full reader runs, with its bounds and its error messages.
"""

from __future__ import annotations

import struct
import zlib
from typing import Any

_EOCD = struct.Struct("<4s4H2LH")
_CENTRAL = struct.Struct("<4s4B4HL2L5H2L")
_LOCAL = struct.Struct("<4s2B4HL2L2H")
_EXTRA = struct.Struct("<2H")
# Extra fields that change nothing zipfile reads (timestamps, owners, NTFS times).
_PLAIN_EXTRAS = frozenset({0x5455, 0x7875, 0x000A, 0xCAFE})
_MAX_EXTRACT_VERSION = 63  # zipfile raises NotImplementedError above it
_ZIP_UNREAD_FLAGS = 0x1 | 0x20 | 0x40  # encrypted, compressed patch, strong encryption
_MAX_MEMBERS, _MAX_DIRECTORY = 100_000, 16 * 1024 * 1024  # distfile's bounds (a test pins them)
_BLOCK = 512
_TAR_STEP = 256 * 1024  # inflated per step while looking for PKG-INFO
_TAR_MAX = 4 * 1024 * 1024  # looked at no further: the full reader, with its bounds
_TAR_MARGIN = 64 * 1024  # GzipFile reads ahead less than this (see _tar_data)


def zip_member(data: bytes, suffix: bytes, limit: int) -> bytes | None:
    """The one member ``<folder>/<...suffix>`` (one slash) of the zip ``data``, inflated
    (at most ``limit`` bytes), if the archive is plain; None: ask zipfile."""
    end = len(data) - _EOCD.size
    if end < 0 or data[end:end + 4] != b"PK\x05\x06" or data[-2:] != b"\0\0":
        return None  # no EOCD at the very end (an archive comment, or not a zip)
    if data.find(b"PK\x05\x06", end + 1) >= 0 or data[end - 20:end - 16] == b"PK\x06\x07":
        return None  # a later signature inside the record, or a zip64 locator
    _sig, disk, cd_disk, _here, count, cd_size, cd_offset, _comment = _EOCD.unpack_from(data, end)
    if (disk or cd_disk or count == 0xFFFF or cd_offset + cd_size != end
            or count > _MAX_MEMBERS or cd_size > _MAX_DIRECTORY):
        return None  # several disks, zip64, data before the archive, or past the bounds
    found = _directory(data, cd_offset, end, suffix)
    if found is None or len(found[1]) != count:
        return None
    return _zip_data(data, *found, cd_offset, limit)


def _directory(data: bytes, at: int, end: int, suffix: bytes
               ) -> tuple[tuple[bytes, tuple[Any, ...]], list[int]] | None:
    """The one wanted entry (its name and fields) and every entry's header offset."""
    offsets, found = [], None
    while at < end:
        if at + _CENTRAL.size > end:
            return None
        fields = _CENTRAL.unpack_from(data, at)
        name_at = at + _CENTRAL.size
        extra_at = name_at + fields[12]
        at = extra_at + fields[13] + fields[14]
        name = data[name_at:extra_at]
        if (fields[0] != b"PK\x01\x02" or fields[3] > _MAX_EXTRACT_VERSION or at > end
                or not _plain_extras(data, extra_at, extra_at + fields[13])
                or b"\0" in name or not name.isascii()):
            return None  # zipfile cuts names at NUL and decodes the rest: its own business
        offsets.append(fields[18])
        if name.endswith(suffix) and name.count(b"/") == 1:
            if found is not None:
                return None  # several: zipfile's sort picks one
            found = (name, fields)
    return None if found is None else (found, offsets)


def _plain_extras(data: bytes, start: int, stop: int) -> bool:
    while start + 4 <= stop:
        kind, size = _EXTRA.unpack_from(data, start)
        start += 4 + size
        if kind not in _PLAIN_EXTRAS or start > stop:
            return False
    return start == stop


def _zip_data(data: bytes, entry: tuple[bytes, tuple[Any, ...]], offsets: list[int],
              cd_offset: int, limit: int) -> bytes | None:
    """The entry's bytes, if its local header matches and they inflate to the size and
    CRC its directory entry declares."""
    name, fields = entry
    flags, method, _time, _date, crc, packed, size = fields[5:12]
    header = fields[18]
    if (flags & _ZIP_UNREAD_FLAGS or method not in (0, 8) or size > limit
            or offsets.count(header) != 1 or header + _LOCAL.size > cd_offset):
        return None  # two members at one place: zipfile may call it an overlap
    local = _LOCAL.unpack_from(data, header)
    start = header + _LOCAL.size + local[10] + local[11]
    stop = start + packed
    if (local[0] != b"PK\x03\x04" or data[header + _LOCAL.size:header + _LOCAL.size + local[10]]
            != name or stop > cd_offset or any(header < other < stop for other in offsets)):
        return None  # a bad header, another name, or data running into another member
    try:
        out = data[start:stop] if method == 0 else zlib.decompressobj(-15).decompress(
            data[start:stop], size + 1)
    except zlib.error:
        return None
    return out if len(out) == size and zlib.crc32(out) == crc else None


def tar_member(data: bytes, limit: int) -> bytes | None:
    """The first top-level ``<folder>/PKG-INFO`` of the gzipped tar ``data``, if the
    archive is plain up to it (ustar headers, one gzip member); None: ask tarfile."""
    if data[:2] != b"\x1f\x8b":
        return None
    inflater = zlib.decompressobj(31)
    try:
        tar = bytearray(inflater.decompress(data, _TAR_STEP))
        at = 0
        while True:
            while at + _BLOCK <= len(tar):
                header = tar[at:at + _BLOCK]
                found = _tar_header(header)
                if found is None:
                    return None
                name, size, regular = found
                at += _BLOCK
                if regular:
                    if name.count("/") == 1 and name.endswith("/PKG-INFO"):
                        return _tar_data(inflater, tar, at, size, limit)
                    at += -(-size // _BLOCK) * _BLOCK
            if inflater.eof or not _inflate_more(inflater, tar):
                return None
    except zlib.error:
        return None


def _tar_data(inflater: zlib._Decompress, tar: bytearray, at: int, size: int,
              limit: int) -> bytes | None:
    """PKG-INFO's bytes, when tarfile (reading through GzipFile) would see the same: the
    whole stream inflated, its CRC checked and nothing after it; or the stream's end
    far enough past the member that GzipFile cannot have reached it (where it checks)."""
    if size > limit:
        return None
    while not inflater.eof and len(tar) < at + size + _TAR_MARGIN:
        if not _inflate_more(inflater, tar):
            return None
    if inflater.eof and (inflater.unused_data or inflater.unconsumed_tail):
        return None
    if at + size > len(tar):
        return None
    return bytes(tar[at:at + size])


def _inflate_more(inflater: zlib._Decompress, tar: bytearray) -> bool:
    """One more step of the stream onto ``tar``; False: none (input over, or far enough)."""
    if len(tar) >= _TAR_MAX:
        return False
    more = inflater.decompress(inflater.unconsumed_tail, _TAR_STEP)
    tar += more
    return bool(more)


def _tar_header(block: bytearray) -> tuple[str, int, bool] | None:
    """(name, size, is a regular file) of a plain ustar or v7 header tarfile reads the same
    way; None for anything else (the end of the archive included)."""
    kind = block[156:157]
    if kind not in (b"0", b"\0", b"5") or block[345] != 0:  # pax, GNU, links; a ustar prefix
        return None
    try:
        numbers = [_octal(block[start:start + width]) for start, width in _TAR_NUMBERS]
    except ValueError:
        return None
    if numbers[0] != 256 + sum(block[:148]) + sum(block[156:]):
        return None  # a bad (or signed) checksum, or an all-zero block
    name = block[:100].split(b"\0", 1)[0].decode("utf-8", "surrogateescape")
    size = numbers[4]
    if kind == b"5" or name.endswith("/"):
        return (name, size, False) if kind == b"5" and size == 0 else None
    return name, size, True


# chksum, mode, uid, gid, size, mtime, devmajor, devminor: every number tarfile parses
_TAR_NUMBERS = ((148, 8), (100, 8), (108, 8), (116, 8), (124, 12), (136, 12), (329, 8), (337, 8))


def _octal(field: bytearray) -> int:
    """tarfile's ``nti`` for octal text; ValueError for base-256 and anything it refuses."""
    if field[0] in (0o200, 0o377):
        raise ValueError("base-256")
    text = field.split(b"\0", 1)[0].decode("ascii")
    return int(text.strip() or "0", 8)


def member(data: bytes, is_zip: bool, is_wheel: bool, limit: int) -> bytes | None:
    """A wheel's METADATA or an sdist's PKG-INFO from a whole archive in memory, when a
    lean reader can vouch for it; None: read it with the full readers."""
    if is_zip:
        return zip_member(data, b".dist-info/METADATA" if is_wheel else b"/PKG-INFO", limit)
    return tar_member(data, limit)
