"""Decompression bombs, built in a second: a zeros block deflated once and repeated.

After ``Z_FULL_FLUSH`` a deflate stream is byte-aligned and forgets its history, so
one compressed megabyte of zeros can be repeated to stand for any number of them.
"""

from __future__ import annotations

import gzip
import io
import struct
import tarfile
import zlib
from pathlib import Path

MIB = 1024 * 1024
_ZEROS = b"\0" * MIB


def _full_flush(compressor: zlib._Compress, data: bytes) -> bytes:  # type: ignore[name-defined]
    return compressor.compress(data) + compressor.flush(zlib.Z_FULL_FLUSH)


def _zero_block() -> bytes:
    return _full_flush(zlib.compressobj(9, zlib.DEFLATED, -15), _ZEROS)


def deflated(prefix: bytes, zero_mib: int, suffix: bytes = b"") -> tuple[bytes, int, int]:
    """(raw deflate stream, crc32, size) of prefix + zero_mib MiB of zeros + suffix."""
    compressor = zlib.compressobj(9, zlib.DEFLATED, -15)
    head = _full_flush(compressor, prefix)
    block = _zero_block()
    tail = compressor.compress(suffix) + compressor.flush()
    crc = zlib.crc32(prefix)
    for _ in range(zero_mib):
        crc = zlib.crc32(_ZEROS, crc)
    crc = zlib.crc32(suffix, crc)
    return head + block * zero_mib + tail, crc, len(prefix) + zero_mib * MIB + len(suffix)


def zip_bomb(path: Path, member: str, inflated_mib: int, *, honest_size: bool = True) -> Path:
    """A zip whose one member inflates to inflated_mib MiB of zeros; its directory may lie
    about the size (honest_size False says 100 bytes)."""
    data, crc, size = deflated(b"", inflated_mib)
    declared = size if honest_size else 100
    name = member.encode()
    local = struct.pack("<4s5H3L2H", b"PK\x03\x04", 20, 0, 8, 0, 0x21, crc, len(data),
                        declared, len(name), 0)
    central = struct.pack("<4s6H3L5H2L", b"PK\x01\x02", 20, 20, 0, 8, 0, 0x21, crc, len(data),
                          declared, len(name), 0, 0, 0, 0, 0o644 << 16, 0)
    directory = central + name
    offset = len(local) + len(name) + len(data)
    end = struct.pack("<4s4H2LH", b"PK\x05\x06", 0, 0, 1, 1, len(directory), offset, 0)
    path.write_bytes(local + name + data + directory + end)
    return path


def _tar_header(name: str, size: int, kind: bytes = tarfile.REGTYPE) -> bytes:
    info = tarfile.TarInfo(name)
    info.size, info.type, info.mode = size, kind, 0o644
    return info.tobuf(format=tarfile.USTAR_FORMAT)


def tar_bomb(path: Path, project: str, version: str, *, junk_mib: int = 0,
             pkg_info_mib: int = 0, pax_mib: int = 0) -> Path:
    """A .tar.gz sdist: a junk member of junk_mib MiB of zeros first, or a PKG-INFO of
    pkg_info_mib MiB, or a pax header of pax_mib MiB before a normal PKG-INFO."""
    top = f"{project}-{version}"
    pkg_info = f"Metadata-Version: 2.1\nName: {project}\nVersion: {version}\n".encode()
    pkg_info = pkg_info.ljust(512, b"\n")
    if junk_mib:
        prefix, zeros = _tar_header(f"{top}/junk.bin", junk_mib * MIB), junk_mib
        suffix = _tar_header(f"{top}/PKG-INFO", len(pkg_info)) + pkg_info
    elif pkg_info_mib:
        prefix, zeros = _tar_header(f"{top}/PKG-INFO", pkg_info_mib * MIB), pkg_info_mib
        suffix = b""
    else:
        prefix, zeros = _tar_header("././@PaxHeader", pax_mib * MIB, tarfile.XHDTYPE), pax_mib
        suffix = _tar_header(f"{top}/PKG-INFO", len(pkg_info)) + pkg_info
    data, crc, size = deflated(prefix, zeros, suffix + b"\0" * 1024)
    header = b"\x1f\x8b\x08\x00\x00\x00\x00\x00\x02\xff"
    path.write_bytes(header + data + struct.pack("<2L", crc, size & 0xFFFFFFFF))
    return path


def many_members_tar(path: Path, project: str, version: str, members: int) -> Path:
    """A .tar.gz sdist of ``members`` empty files and no PKG-INFO."""
    raw = io.BytesIO()
    for number in range(members):
        raw.write(_tar_header(f"{project}-{version}/f{number}", 0))
    raw.write(b"\0" * 1024)
    path.write_bytes(gzip.compress(raw.getvalue(), compresslevel=1))
    return path
