"""Decompression bombs, uploaded and copied into the root: refused or skipped with one
line, and the server's peak RSS stays low (conftest checks it after each test)."""

from __future__ import annotations

import hashlib
import shutil
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from tests.attack.bombs import tar_bomb, zip_bomb
from tests.attack.conftest import LOGIN
from tests.attack.harness import Guarded
from tests.integration.helpers import Response, request

pytestmark = pytest.mark.server
BOUNDARY = "pypid-attack-5d1e"
Build = Callable[[Path], Path]
BOMBS: list[tuple[str, Build, str]] = [
    ("zip-pkg-info-1gb", lambda d: zip_bomb(d / "boom-1.0.zip", "boom-1.0/PKG-INFO", 1024),
     "PKG-INFO is larger than 8 MB"),
    ("zip-lying-size", lambda d: zip_bomb(d / "boom-1.0.zip", "boom-1.0/PKG-INFO", 512,
                                          honest_size=False), "unreadable archive"),
    ("wheel-metadata-1gb", lambda d: zip_bomb(d / "boom-1.0-py3-none-any.whl",
                                              "boom-1.0.dist-info/METADATA", 1024),
     "METADATA is larger than 8 MB"),
    ("tar-pkg-info-1gb", lambda d: tar_bomb(d / "boom-1.0.tar.gz", "boom", "1.0",
                                            pkg_info_mib=1024), "PKG-INFO is larger than 8 MB"),
    ("tar-junk-first", lambda d: tar_bomb(d / "boom-1.0.tar.gz", "boom", "1.0", junk_mib=1024),
     "MB uncompressed before its PKG-INFO"),
    ("tar-pax-header", lambda d: tar_bomb(d / "boom-1.0.tar.gz", "boom", "1.0", pax_mib=1024),
     "a tar header is larger than 8 MB"),
]


def upload(srv: Guarded, path: Path) -> Response:
    data = path.read_bytes()
    wheel = path.name.endswith(".whl")
    fields = {":action": "file_upload", "protocol_version": "1", "name": "boom",
              "version": "1.0", "filetype": "bdist_wheel" if wheel else "sdist",
              "pyversion": "py3" if wheel else "source",
              "sha256_digest": hashlib.sha256(data).hexdigest()}
    body = b"".join(f'--{BOUNDARY}\r\nContent-Disposition: form-data; name="{k}"\r\n\r\n'
                    f"{v}\r\n".encode() for k, v in fields.items())
    body += (f'--{BOUNDARY}\r\nContent-Disposition: form-data; name="content"; '
             f'filename="{path.name}"\r\nContent-Type: application/octet-stream\r\n\r\n'
             ).encode() + data + f"\r\n--{BOUNDARY}--\r\n".encode()
    import http.client  # noqa: PLC0415 - only here: a POST with a body

    conn = http.client.HTTPConnection(srv.server.host, srv.server.port, timeout=60)
    try:
        conn.request("POST", "/", body=body, headers={
            **LOGIN, "Content-Type": f"multipart/form-data; boundary={BOUNDARY}"})
        resp = conn.getresponse()
        return Response(resp.status, resp.reason, resp.msg, resp.read(), "/")
    finally:
        conn.close()


@pytest.mark.parametrize(("case", "build", "reason"), BOMBS, ids=[b[0] for b in BOMBS])
def test_uploaded_bomb_is_refused(target: Guarded, tmp_path: Path, case: str, build: Build,
                                  reason: str) -> None:
    path = build(tmp_path)
    assert path.stat().st_size < 2 * 1024 * 1024
    answer = upload(target, path)
    assert answer.status == 400, answer.describe()
    assert reason in answer.reason
    assert answer.text.count("\n") == 1
    assert not (target.server.root / path.name).exists()


@pytest.mark.parametrize(("case", "build", "reason"), BOMBS, ids=[b[0] for b in BOMBS])
def test_bomb_in_the_root_is_logged_and_skipped(target: Guarded, tmp_path: Path, case: str,
                                                build: Build, reason: str) -> None:
    path = build(tmp_path)
    folder = target.server.root / case
    folder.mkdir()
    shutil.copy(path, folder / path.name)
    expected = f"ignoring {case}/{path.name}: "
    deadline = time.monotonic() + 20
    while expected not in target.server.log_text() and time.monotonic() < deadline:
        request(target.server.url("/simple/boom/"), headers=LOGIN)  # nudges a refresh
        time.sleep(0.2)
    line = next((ln for ln in target.server.log_text().splitlines() if expected in ln), "")
    assert reason in line, target.server.log_text()[-2000:]
    assert request(target.server.url("/health")).status == 200
    (folder / path.name).unlink()
