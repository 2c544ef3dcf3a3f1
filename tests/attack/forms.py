"""Upload bodies for the attack suite: the fields twine sends, parts in any number, raw."""

from __future__ import annotations

import hashlib
import http.client
from collections.abc import Mapping, Sequence
from pathlib import Path

from tests.integration.helpers import Response, Server

BOUNDARY = "pypid-forms-3a9c"
Part = tuple[str, str | None, bytes]  # name, filename (None: a text field), data


def fields(name: str, version: str, data: bytes, *, wheel: bool) -> list[Part]:
    """The text fields of an upload of ``data`` (a sha256 digest only)."""
    values = {":action": "file_upload", "protocol_version": "1", "name": name,
              "version": version, "filetype": "bdist_wheel" if wheel else "sdist",
              "pyversion": "py3" if wheel else "source",
              "sha256_digest": hashlib.sha256(data).hexdigest()}
    return [(k, None, v.encode()) for k, v in values.items()]


def upload_parts(path: Path, name: str, version: str, filename: str | None = None) -> list[Part]:
    """Every part of the upload of ``path`` (as ``filename``, if given)."""
    data = path.read_bytes()
    return [*fields(name, version, data, wheel=path.name.endswith(".whl")),
            ("content", filename or path.name, data)]


def body(parts: Sequence[Part]) -> bytes:
    out = bytearray()
    for name, filename, data in parts:
        disposition = f'form-data; name="{name}"'
        if filename is not None:
            disposition += f'; filename="{filename}"'
        out += f"--{BOUNDARY}\r\nContent-Disposition: {disposition}\r\n\r\n".encode()
        out += data + b"\r\n"
    return bytes(out + f"--{BOUNDARY}--\r\n".encode())


def post(srv: Server, parts: Sequence[Part], auth: Mapping[str, str],
         timeout: float = 60) -> Response:
    """POST the parts as one multipart body on a new connection."""
    conn = http.client.HTTPConnection(srv.host, srv.port, timeout=timeout)
    try:
        conn.request("POST", srv.prefix + "/", body=body(parts), headers={
            **auth, "Content-Type": f"multipart/form-data; boundary={BOUNDARY}"})
        resp = conn.getresponse()
        return Response(resp.status, resp.reason, resp.msg, resp.read(), srv.url("/"))
    finally:
        conn.close()
