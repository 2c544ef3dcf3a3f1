"""Uploads on a real server: every publisher, hostile input, races, a killed worker, live users.

The servers here have their own package roots (never the shared corpus) and an htpasswd
file made with `pypid user add`; uploads need a login (the default `protect`).
"""

from __future__ import annotations

import base64
import functools
import hashlib
import http.client
import os
import re
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar

import pytest

from tests.builders import make_sdist, make_wheel
from tests.integration.harness import STARTED, TomlValue, launch, stop, write_config
from tests.integration.helpers import (
    JSON_TYPE,
    REPO_ROOT,
    Response,
    Server,
    at_once,
    client_tool,
    get,
    installed_versions,
    request,
    run_client,
    sha256,
)

pytestmark = pytest.mark.server
T = TypeVar("T")

USER = "alice"
PASSWORD = "Upl0ad-pw-5c2e91"  # distinctive: the logs are searched for every password
WRONG_PASSWORD = "Wr0ng-pw-77a1d3"
LATE_USER, LATE_PASSWORD = "bob", "L8te-pw-0e44f2"
SECRETS = (PASSWORD, WRONG_PASSWORD, LATE_PASSWORD)  # and their Basic tokens (below)
BOUNDARY = "pypid-test-7f1c2b"
EXISTS = "File already exists: {}"
MIB = 1024 * 1024
STABLE = 0.75  # seconds a listing must hold on every worker (see wait_listed)
LOGS: list[Path] = []  # every log of this module's servers, for test_logs_are_clean


# --- servers ----------------------------------------------------------------------------


@dataclass
class UploadServer:
    server: Server
    cfg: Path

    @property
    def root(self) -> Path:
        return self.server.root


def add_user(cfg: Path, name: str, password: str) -> None:
    """`pypid user add NAME --password-stdin --config cfg`."""
    env = {**os.environ, "PYTHONPATH": str(REPO_ROOT), "PYPID_BCRYPT_ROUNDS": "4"}
    cmd = [sys.executable, "-m", "pypid", "user", "add", name, "--password-stdin"]
    proc = subprocess.run(
        [*cmd, "--config", str(cfg)],
        input=password + "\n",
        env=env,
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr


def start_upload_server(
    work: Path, *, workers: int = 2, max_upload_mb: int | None = None, checked: bool = True
) -> UploadServer:
    """A server on work/packages whose htpasswd (work/htpasswd) has alice."""
    root = work / "packages"
    root.mkdir(parents=True)
    cfg = work / "pypid.toml"
    storage = {} if max_upload_mb is None else {"max_upload_mb": max_upload_mb}
    settings: dict[str, Mapping[str, TomlValue]] = {
        "server": {"workers": workers},
        "storage": storage,
        "auth": {"htpasswd": str(work / "htpasswd")},
    }
    write_config(cfg, root, url_prefix="", upstream="off", settings=settings)
    add_user(cfg, USER, PASSWORD)
    return UploadServer(serve(cfg, root, work / "server.log", checked=checked), cfg)


def serve(cfg: Path, root: Path, log: Path, *, checked: bool = True) -> Server:
    """Start a server, registered for failure reports and (checked) test_logs_are_clean."""
    srv = launch(cfg, root, log=log)
    STARTED.append(srv)
    if checked:
        LOGS.append(log)
    return srv


@pytest.fixture(scope="module")
def up(tmp_path_factory: pytest.TempPathFactory) -> Iterator[UploadServer]:
    """The module's main upload server: 2 workers, overwrite off, default limit."""
    srv = start_upload_server(tmp_path_factory.mktemp("uploads"))
    try:
        yield srv
    finally:
        stop(srv.server.proc)


# --- requests ---------------------------------------------------------------------------


def basic(user: str, password: str) -> dict[str, str]:
    token = base64.b64encode(f"{user}:{password}".encode()).decode()
    return {"Authorization": f"Basic {token}"}


LOGIN = basic(USER, PASSWORD)
TOKENS = tuple(
    basic(u, p)["Authorization"].split()[1]
    for u, p in (
        (USER, PASSWORD),
        (USER, WRONG_PASSWORD),
        ("mallory", PASSWORD),
        (LATE_USER, LATE_PASSWORD),
    )
)


def form_for(path: Path, name: str, version: str, **changes: str | None) -> dict[str, str]:
    """The fields twine sends for path (all three digests); a change of None drops a field."""
    data = path.read_bytes()
    wheel = path.name.endswith(".whl")
    form = {
        ":action": "file_upload",
        "protocol_version": "1",
        "metadata_version": "2.1",
        "name": name,
        "version": version,
        "filetype": "bdist_wheel" if wheel else "sdist",
        "pyversion": "py3" if wheel else "source",
        "md5_digest": hashlib.md5(data).hexdigest(),  # noqa: S324 - the protocol's field
        "sha256_digest": hashlib.sha256(data).hexdigest(),
        "blake2_256_digest": hashlib.blake2b(data, digest_size=32).hexdigest(),
    }
    for key, value in changes.items():
        if value is None:
            form.pop(key, None)
        else:
            form[key] = value
    return form


def body_head(form: Mapping[str, str], filename: bytes | None) -> bytes:
    """The multipart body up to the file's bytes (the fields first, as twine sends them)."""
    out = bytearray()
    for key, value in form.items():
        out += f'--{BOUNDARY}\r\nContent-Disposition: form-data; name="{key}"\r\n\r\n'.encode()
        out += value.encode() + b"\r\n"
    if filename is not None:
        out += f'--{BOUNDARY}\r\nContent-Disposition: form-data; name="content"; '.encode()
        out += b'filename="' + filename + b'"\r\nContent-Type: application/octet-stream\r\n\r\n'
    return bytes(out)


def multipart(form: Mapping[str, str], file: tuple[bytes, bytes] | None) -> bytes:
    """A whole multipart/form-data body; file is (raw filename, data) or None."""
    if file is None:
        return body_head(form, None) + f"--{BOUNDARY}--\r\n".encode()
    return body_head(form, file[0]) + file[1] + f"\r\n--{BOUNDARY}--\r\n".encode()


def upload_headers(srv: Server, length: int, auth: Mapping[str, str]) -> bytes:
    """Request line and headers of a raw upload POST with the given Content-Length."""
    lines = [
        "POST / HTTP/1.1",
        f"Host: {srv.host}:{srv.port}",
        f"Content-Type: multipart/form-data; boundary={BOUNDARY}",
        f"Content-Length: {length}",
        *(f"{k}: {v}" for k, v in auth.items()),
    ]
    return ("\r\n".join(lines) + "\r\n\r\n").encode()


def post(
    srv: Server,
    body: bytes,
    *,
    auth: Mapping[str, str] = LOGIN,
    path: str = "/",
    conn: http.client.HTTPConnection | None = None,
) -> Response:
    """POST a multipart body on its own connection (or conn); the answer as a Response."""
    conn = conn or http.client.HTTPConnection(srv.host, srv.port, timeout=30)
    try:
        headers = {"Content-Type": f"multipart/form-data; boundary={BOUNDARY}", **auth}
        conn.request("POST", srv.prefix + path, body=body, headers=headers)
        resp = conn.getresponse()
        return Response(resp.status, resp.reason, resp.msg, resp.read(), srv.url(path))
    finally:
        conn.close()


def upload(
    srv: Server, path: Path, name: str, version: str, auth: Mapping[str, str] = LOGIN
) -> Response:
    """The correct upload of path."""
    form = form_for(path, name, version)
    return post(srv, multipart(form, (path.name.encode(), path.read_bytes())), auth=auth)


# --- the package root -------------------------------------------------------------------


def snapshot(root: Path) -> set[str]:
    """Every entry below root, dot-files included, except pypid's own .pypid folder."""
    found: set[str] = set()
    for dirpath, dirnames, filenames in os.walk(root):
        rel = Path(dirpath).relative_to(root)
        if rel == Path("."):
            dirnames[:] = [d for d in dirnames if d != ".pypid"]
        found.update((rel / n).as_posix() for n in dirnames + filenames)
    return found


def assert_refused(resp: Response, status: int, reason: str | None) -> None:
    """status with a one-line reason phrase (containing reason) repeated in the body."""
    assert resp.status == status, resp.describe() + "\n" + resp.text
    assert resp.reason and "\n" not in resp.reason, resp.describe()
    if reason is not None:
        assert reason in resp.reason, resp.describe()
    assert resp.text.strip() == resp.reason, resp.text
    assert resp.media_type == "text/plain", resp.describe()


SERVER_ERROR_RE = re.compile(r'HTTP/1\.[01]" 5\d\d |internal error')


def assert_log_clean(*logs: Path) -> None:
    """No traceback, no 5xx (pypid logs a 500 without its traceback), no password."""
    for log in logs:
        text = log.read_text("utf-8", "replace")
        assert "Traceback" not in text, f"{log}:\n{text[-4000:]}"
        assert not SERVER_ERROR_RE.search(text), f"{log}:\n{text[-4000:]}"
        for secret in SECRETS + TOKENS:
            assert secret not in text, f"a password is in {log}"


def simple_files(srv: Server, project: str) -> dict[str, str]:
    """{filename: sha256} that /simple/<project>/ lists (JSON); {} for a 404."""
    resp = get(srv.url(f"/simple/{project}/"), Accept=JSON_TYPE)
    if resp.status == 404:
        return {}
    assert resp.status == 200 and resp.media_type == JSON_TYPE, resp.describe()
    return {f["filename"]: f["hashes"]["sha256"] for f in resp.json()["files"]}


def wait_stable(probe: Callable[[], bool], timeout: float = 10.0, stable: float = STABLE) -> bool:
    """Until probe() holds on every call for ``stable`` seconds in a row; False on timeout."""
    deadline = time.monotonic() + timeout
    since: float | None = None
    while time.monotonic() < deadline:
        now = time.monotonic()
        if not probe():
            since = None
        elif since is None:
            since = now
        elif now - since >= stable:
            return True
        time.sleep(0.03)
    return False


def wait_listed(srv: Server, project: str, filenames: set[str], timeout: float = 10.0) -> None:
    """Until every answer for STABLE seconds (any worker) lists filenames for project: the
    worker that stored a file lists it at once, the others through their root watchers
    (inotify, SETTLE_SECONDS = 0.25) a fraction of a second later."""
    got: set[str] = set()

    def listed() -> bool:
        got.clear()
        got.update(simple_files(srv, project))
        return filenames <= got

    if not wait_stable(listed, timeout):
        pytest.fail(f"/simple/{project}/ lists {sorted(got)}, not all of {sorted(filenames)}")


# --- 1. publishers ----------------------------------------------------------------------


def built(tmp: Path, name: str, version: str) -> list[Path]:
    """A wheel and an sdist of name version in tmp/dist."""
    dist = tmp / "dist"
    return [make_wheel(dist, name, version), make_sdist(dist, name, version)]


def assert_stored(up: UploadServer, files: list[Path]) -> None:
    for path in files:
        stored = up.root / path.name
        assert stored.is_file(), f"{path.name} not in {sorted(snapshot(up.root))}"
        assert stored.read_bytes() == path.read_bytes(), path.name


def pip_installs(
    up: UploadServer, tmp: Path, project: str, version: str, files: list[Path]
) -> None:
    """pip install --index-url /simple/ gets the uploaded version."""
    wait_listed(up.server, project, {p.name for p in files})
    target = tmp / "target"
    pip = client_tool("pip")
    args = [pip, "install", "--no-cache-dir", "--no-deps", "--index-url", up.server.index_url]
    out = run_client([*args, "--target", str(target), project], tmp)
    assert installed_versions(target) == {project: version}, out


@pytest.mark.parametrize("path", ["/", "/legacy/"])
def test_twine_upload(up: UploadServer, tmp_path: Path, path: str) -> None:
    project = "tw-root" if path == "/" else "tw-legacy"
    files = built(tmp_path, project, "1.0")
    twine = client_tool("twine")
    cmd = [twine, "upload", "--repository-url", up.server.url(path), "-u", USER, "-p", PASSWORD]
    cmd += ["--non-interactive", "--disable-progress-bar", *map(str, files)]
    run_client(cmd, tmp_path)
    assert_stored(up, files)
    # CI re-runs: the same files again are a 200 (twine would fail on anything else).
    run_client(cmd, tmp_path)
    assert_stored(up, files)
    pip_installs(up, tmp_path, project, "1.0", files)


def test_uv_publish(up: UploadServer, tmp_path: Path) -> None:
    files = built(tmp_path, "uv-pub", "1.0")
    uv = client_tool("uv")
    cmd = [uv, "publish", "--publish-url", up.server.url("/legacy/")]
    cmd += ["--username", USER, "--password", PASSWORD, *map(str, files)]
    run_client(cmd, tmp_path)
    assert_stored(up, files)
    # With --check-url uv asks the index first and skips files already there.
    wait_listed(up.server, "uv-pub", {p.name for p in files})
    out = run_client([*cmd, "--check-url", up.server.index_url], tmp_path)
    assert "skipping" in out.lower() or "already exists" in out.lower(), out
    pip_installs(up, tmp_path, "uv-pub", "1.0", files)


FLIT_PYPROJECT = """\
[build-system]
requires = ["flit_core >=3.2"]
build-backend = "flit_core.buildapi"

[project]
name = "flitdemo"
version = "0.3"
description = "A flit project published to pypid"
requires-python = ">=3.8"
"""


def test_flit_publish(up: UploadServer, tmp_path: Path) -> None:
    project = tmp_path / "flitdemo"
    (project / "flitdemo").mkdir(parents=True)
    (project / "pyproject.toml").write_text(FLIT_PYPROJECT)
    (project / "flitdemo" / "__init__.py").write_text('"""Flit demo."""\n')
    env = {
        "FLIT_INDEX_URL": up.server.url("/legacy/"),
        "FLIT_USERNAME": USER,
        "FLIT_PASSWORD": PASSWORD,
    }
    run_client([client_tool("flit"), "publish"], tmp_path, env=env, cwd=project)
    files = sorted((project / "dist").iterdir())
    assert {p.name for p in files} == {"flitdemo-0.3-py3-none-any.whl", "flitdemo-0.3.tar.gz"}
    assert_stored(up, files)
    pip_installs(up, tmp_path, "flitdemo", "0.3", files)


def test_hatch_publish(up: UploadServer, tmp_path: Path) -> None:
    files = built(tmp_path, "hatch-pub", "1.0")
    cmd = [client_tool("hatch"), "publish", "-r", up.server.url("/legacy/")]
    cmd += ["-u", USER, "-a", PASSWORD, "--no-prompt", *map(str, files)]
    run_client(cmd, tmp_path)
    assert_stored(up, files)
    pip_installs(up, tmp_path, "hatch-pub", "1.0", files)


# --- 2. bad input -----------------------------------------------------------------------

Case = tuple[dict[str, str], tuple[bytes, bytes] | None]  # the bad form and file
Spoil = Callable[[dict[str, str], bytes, bytes], Case]


def _field(**changes: str) -> Spoil:
    return lambda form, name, data: ({**form, **changes}, (name, data))


def _filename(make: Callable[[bytes], bytes]) -> Spoil:
    return lambda form, name, data: (form, (make(name), data))


BAD: list[tuple[str, Spoil, str | None]] = [
    ("wrong-md5", _field(md5_digest="0" * 32), "md5_digest does not match"),
    ("wrong-sha256", _field(sha256_digest="f" * 64), "sha256_digest does not match"),
    ("wrong-blake2", _field(blake2_256_digest="a" * 64), "blake2_256_digest does not match"),
    ("name-mismatch", _field(name="other"), "does not belong to project"),
    ("version-mismatch", _field(version="9.9"), "is not version"),
    ("filetype-mismatch", _field(filetype="sdist"), "is not a sdist"),
    ("dotdot", _filename(lambda n: b"../" + n), "invalid file name"),
    ("dotdot-deep", _filename(lambda n: b"../../../" + n), "invalid file name"),
    ("slash", _filename(lambda n: b"sub/" + n), "invalid file name"),
    ("absolute", _filename(lambda n: b"/tmp/" + n), "invalid file name"),
    # Werkzeug 3.1 reads a backslash in a quoted filename as an escape and drops it (2.2
    # keeps it): the server may never see it, so any 400 reason will do; nothing is stored.
    ("backslash", _filename(lambda n: b"sub\\" + n), None),
    ("backslash-dotdot", _filename(lambda n: b"..\\" + n), "invalid file name"),
    ("nul", _filename(lambda n: n.replace(b".whl", b"\x00.whl")), "invalid file name"),
    ("control", _filename(lambda n: n.replace(b".whl", b"\x07.whl")), "invalid file name"),
    ("del", _filename(lambda n: n.replace(b".whl", b"\x7f.whl")), "invalid file name"),
    # A raw LF ends the part's header line: no file part is left (any 400 reason will do).
    ("newline", _filename(lambda n: n.replace(b"-py3", b"\n-py3")), None),
    ("dotfile", _filename(lambda n: b"." + n), "invalid file name"),
    ("no-content", lambda form, name, data: (form, None), "missing the file part 'content'"),
]


@pytest.mark.parametrize("case", range(len(BAD)), ids=[b[0] for b in BAD])
def test_bad_upload_stores_nothing(up: UploadServer, tmp_path: Path, case: int) -> None:
    _, spoil, reason = BAD[case]
    version = f"1.0.{case}"  # each case its own file
    wheel = make_wheel(tmp_path, "badin", version)
    before = snapshot(up.root)
    outside = set(os.listdir(up.root.parent))
    form, file = spoil(form_for(wheel, "badin", version), wheel.name.encode(), wheel.read_bytes())
    resp = post(up.server, multipart(form, file))
    assert_refused(resp, 400, reason)
    assert snapshot(up.root) == before
    assert set(os.listdir(up.root.parent)) == outside
    assert_log_clean(up.server.log)
    # The same file, sent right, is stored.
    assert upload(up.server, wheel, "badin", version).status == 200
    assert snapshot(up.root) == before | {wheel.name}
    assert (up.root / wheel.name).read_bytes() == wheel.read_bytes()


def test_truncated_body(up: UploadServer, tmp_path: Path) -> None:
    """The client promises more than it sends, then ends its side: 400 (or a close)."""
    sdist = make_sdist(tmp_path, "cut", "1.0")
    data = sdist.read_bytes()
    full = multipart(form_for(sdist, "cut", "1.0"), (sdist.name.encode(), data))
    sent = body_head(form_for(sdist, "cut", "1.0"), sdist.name.encode()) + data[: len(data) // 2]
    before = snapshot(up.root)
    with socket.create_connection((up.server.host, up.server.port), timeout=15) as sock:
        sock.sendall(upload_headers(up.server, len(full) + 1000, LOGIN) + sent)
        sock.shutdown(socket.SHUT_WR)
        chunks: list[bytes] = []
        try:
            while chunk := sock.recv(65536):
                chunks.append(chunk)
        except ConnectionResetError:
            pass
    answer = b"".join(chunks)
    assert answer == b"" or answer.startswith(b"HTTP/1.1 400 "), answer[:300]
    assert snapshot(up.root) == before
    assert upload(up.server, sdist, "cut", "1.0").status == 200
    assert snapshot(up.root) == before | {sdist.name}


MALFORMED: list[tuple[str, Callable[[bytes], bytes]]] = [
    ("no-closing-boundary", lambda body: body[:-30]),  # cut short, Content-Length matching
    (
        "part-without-disposition",
        lambda body: body.replace(b'Content-Disposition: form-data; name="name"', b"X-A: b", 1),
    ),
]


@pytest.mark.parametrize("case", range(len(MALFORMED)), ids=[m[0] for m in MALFORMED])
def test_malformed_body_reason(up: UploadServer, tmp_path: Path, case: int) -> None:
    """A broken multipart body is a 400 that says so, not a claim that :action is missing."""
    wheel = make_wheel(tmp_path, "mangled", "1.0")
    body = multipart(form_for(wheel, "mangled", "1.0"), (wheel.name.encode(), wheel.read_bytes()))
    before = snapshot(up.root)
    resp = post(up.server, MALFORMED[case][1](body))
    assert snapshot(up.root) == before
    assert_refused(resp, 400, "malformed")


@pytest.fixture(scope="module")
def spare(tmp_path_factory: pytest.TempPathFactory) -> Iterator[UploadServer]:
    """A second server for the name-validation tests (their refusals are logged)."""
    srv = start_upload_server(tmp_path_factory.mktemp("spare"), checked=False)
    try:
        yield srv
    finally:
        stop(srv.server.proc)


def test_overlong_filename_is_400(spare: UploadServer, tmp_path: Path) -> None:
    wheel = make_wheel(tmp_path, "longname", "1.0")
    filename = b"longname-1.0-py3-none-" + b"x" * 240 + b".whl"  # 266 bytes
    before = snapshot(spare.root)
    resp = post(
        spare.server, multipart(form_for(wheel, "longname", "1.0"), (filename, wheel.read_bytes()))
    )
    assert snapshot(spare.root) == before
    assert_refused(resp, 400, None)


ODD_TAGS = [
    ("space", "any x"),
    ("non-ascii", "any\u20ac"),
    ("quote", "any'x"),
    ("angle-brackets", "any<b>"),
    ("hash", "any#x"),
]


@pytest.mark.parametrize("case", range(len(ODD_TAGS)), ids=[t[0] for t in ODD_TAGS])
def test_odd_wheel_tag_refused(spare: UploadServer, tmp_path: Path, case: int) -> None:
    version = f"1.0.{case}"
    wheel = make_wheel(tmp_path, "oddtag", version)
    filename = f"oddtag-{version}-py3-none-{ODD_TAGS[case][1]}.whl".encode()
    before = snapshot(spare.root)
    form = form_for(wheel, "oddtag", version)
    resp = post(spare.server, multipart(form, (filename, wheel.read_bytes())))
    assert snapshot(spare.root) == before
    assert_refused(resp, 400, "invalid file name")


def test_long_description_accepted(up: UploadServer, tmp_path: Path) -> None:
    wheel = make_wheel(tmp_path, "longdesc", "1.0")
    form = form_for(wheel, "longdesc", "1.0", description="x" * 600_000)
    form["description_content_type"] = "text/markdown"
    resp = post(up.server, multipart(form, (wheel.name.encode(), wheel.read_bytes())))
    assert resp.status == 200, resp.describe()
    assert (up.root / wheel.name).read_bytes() == wheel.read_bytes()


LOGINS = [
    ("no-login", {}, "a login is needed"),
    ("wrong-password", basic(USER, WRONG_PASSWORD), "wrong user name or password"),
    ("unknown-user", basic("mallory", PASSWORD), "wrong user name or password"),
]


@pytest.mark.parametrize("case", range(len(LOGINS)), ids=[c[0] for c in LOGINS])
def test_login_refused(up: UploadServer, tmp_path: Path, case: int) -> None:
    _, auth, reason = LOGINS[case]
    version = f"2.0.{case}"
    wheel = make_wheel(tmp_path, "badin", version)
    before = snapshot(up.root)
    resp = upload(up.server, wheel, "badin", version, auth=auth)
    assert_refused(resp, 401, reason)
    assert (resp.header("WWW-Authenticate") or "").startswith('Basic realm="pypid"')
    assert snapshot(up.root) == before
    assert upload(up.server, wheel, "badin", version).status == 200
    assert_log_clean(up.server.log)


@pytest.fixture(scope="module")
def small(tmp_path_factory: pytest.TempPathFactory) -> Iterator[UploadServer]:
    """A server with max_upload_mb = 1."""
    srv = start_upload_server(tmp_path_factory.mktemp("small"), max_upload_mb=1)
    try:
        yield srv
    finally:
        stop(srv.server.proc)


def test_too_large(small: UploadServer, tmp_path: Path) -> None:
    sdist = make_sdist(tmp_path, "big", "1.0")
    big = b"\x1f\x8b" + os.urandom(MIB + 1024)  # just past the limit: little left unread
    form = form_for(sdist, "big", "1.0", md5_digest=None, blake2_256_digest=None)
    form["sha256_digest"] = hashlib.sha256(big).hexdigest()
    before = snapshot(small.root)
    resp = post(small.server, multipart(form, (sdist.name.encode(), big)))
    assert_refused(resp, 413, "max_upload_mb (1 MiB)")
    assert snapshot(small.root) == before
    assert upload(small.server, sdist, "big", "1.0").status == 200
    assert snapshot(small.root) == before | {sdist.name}


# --- 3. a race --------------------------------------------------------------------------


def test_racing_uploads_one_wins(up: UploadServer, tmp_path: Path) -> None:
    """20 different files under one name at once: one 200, 19 409s, the winner's bytes."""
    sdists = [
        make_sdist(tmp_path / str(i), "race", "1.0", requires_python=f">=3.{i}") for i in range(20)
    ]
    bodies = [
        multipart(form_for(p, "race", "1.0"), (p.name.encode(), p.read_bytes())) for p in sdists
    ]
    assert len({p.read_bytes() for p in sdists}) == 20
    conns = [http.client.HTTPConnection(up.server.host, up.server.port, timeout=30) for _ in sdists]
    for conn in conns:
        conn.connect()
    results = dict(enumerate(at_once([functools.partial(post, up.server, body, conn=conn)
                                      for body, conn in zip(bodies, conns, strict=True)])))
    answers = {i: r for i, r in results.items() if isinstance(r, Response)}
    assert len(answers) == 20, results
    winners = [i for i, r in answers.items() if r.status == 200]
    assert len(winners) == 1, {i: (r.status, r.reason) for i, r in answers.items()}
    for i, r in answers.items():
        if i not in winners:
            assert (r.status, r.reason) == (409, EXISTS.format("race-1.0.tar.gz")), r.describe()
    stored = up.root / "race-1.0.tar.gz"
    assert stored.read_bytes() == sdists[winners[0]].read_bytes()
    assert not {n for n in snapshot(up.root) if "race" in n} - {stored.name}
    wait_listed(up.server, "race", {stored.name})
    assert simple_files(up.server, "race") == {stored.name: sha256(stored.read_bytes())}


# --- 4. a killed worker -----------------------------------------------------------------


def children(pid: int) -> list[int]:
    found: list[int] = []
    for path in Path(f"/proc/{pid}/task").glob("*/children"):
        found += [int(x) for x in path.read_text().split()]
    return found


def open_upload_fds(pid: int, root: Path) -> list[str]:
    """What pid holds open in root, outside pypid's cache: an upload being received."""
    found: list[str] = []
    for fd in Path(f"/proc/{pid}/fd").iterdir():
        try:
            target = os.readlink(fd)
        except OSError:
            continue
        if target.startswith(f"{root}/") and not target.startswith(f"{root}/.pypid"):
            found.append(target)
    return found


def wait_for(what: str, probe: Callable[[], T], timeout: float = 10.0) -> T:
    """probe() once it is truthy, polled for up to timeout seconds."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = probe()
        if value:
            return value
        time.sleep(0.05)
    pytest.fail(f"timed out waiting for {what}")


def assert_not_served(srv: Server, project: str) -> None:
    assert get(srv.url(f"/simple/{project}/")).status == 404
    assert project not in get(srv.index_url).text


def test_killed_worker_leaves_nothing(tmp_path_factory: pytest.TempPathFactory) -> None:
    work = tmp_path_factory.mktemp("killed")
    first = start_upload_server(work, workers=1)
    srv, root = first.server, first.root
    second: Server | None = None
    try:
        sdist = make_sdist(work / "dist", "killed", "1.0")
        before = snapshot(root)
        (worker,) = wait_for("one worker", lambda: children(srv.proc.pid))
        head = body_head(form_for(sdist, "killed", "1.0"), sdist.name.encode())
        with socket.create_connection((srv.host, srv.port), timeout=15) as sock:
            # 8 MiB announced, 1 MiB sent, then nothing: the worker waits mid-upload.
            sock.sendall(upload_headers(srv, len(head) + 8 * MIB, LOGIN) + head)
            sock.sendall(os.urandom(MIB))
            wait_for("the upload's file", lambda: open_upload_fds(worker, root))
            time.sleep(0.5)
            os.kill(worker, signal.SIGKILL)  # the worker this test's server forked
            wait_for("a new worker", lambda: set(children(srv.proc.pid)) - {worker})
            assert snapshot(root) == before
        assert request(srv.url("/health")).status == 200
        assert_not_served(srv, "killed")
        stop(srv.proc)
        assert snapshot(root) == before
        second = serve(first.cfg, root, work / "server2.log")
        assert snapshot(root) == before
        assert_not_served(second, "killed")
        assert upload(second, sdist, "killed", "1.0").status == 200
        assert snapshot(root) == before | {sdist.name}
        wait_listed(second, "killed", {sdist.name})
        assert_log_clean(srv.log, second.log)
    finally:
        stop(srv.proc)
        if second is not None:
            stop(second.proc)


# --- 5. users -----------------------------------------------------------------------------


def test_user_added_while_running(up: UploadServer, tmp_path: Path) -> None:
    wheel = make_wheel(tmp_path, "late-user", "1.0")
    late = basic(LATE_USER, LATE_PASSWORD)
    assert_refused(upload(up.server, wheel, "late-user", "1.0", auth=late), 401, None)
    add_user(up.cfg, LATE_USER, LATE_PASSWORD)
    assert upload(up.server, wheel, "late-user", "1.0", auth=late).status == 200
    assert (up.root / wheel.name).read_bytes() == wheel.read_bytes()


def test_logs_are_clean(up: UploadServer, small: UploadServer) -> None:
    """No traceback and no password in any log of this module's servers (runs last)."""
    assert len(LOGS) >= 2
    assert_log_clean(*LOGS)


def test_an_upload_is_visible_from_every_worker_at_once(up: UploadServer, tmp_path: Path) -> None:
    """Right after the 200, no worker may still answer 404 (or send the name upstream)."""
    for i in range(5):
        wheel = make_wheel(tmp_path, f"instant-{i}", "1.0")
        resp = upload(up.server, wheel, f"instant-{i}", "1.0")
        assert resp.status == 200, resp.describe()
        statuses = [get(up.server.url(f"/simple/instant-{i}/")).status for _ in range(12)]
        assert statuses == [200] * 12
