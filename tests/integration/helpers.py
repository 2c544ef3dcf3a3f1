"""Helpers for the real-server layer: raw HTTP, HTML parsing, client tools, the corpus."""

from __future__ import annotations

import contextlib
import hashlib
import html.parser
import http.client
import json
import os
import re
import signal
import socket
import subprocess
import sys
import threading
import time
import zipfile
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from email.message import Message
from pathlib import Path
from typing import Any, TypeVar
from urllib.parse import urlsplit

import pytest

from tests.builders import normalize

T = TypeVar("T")
JSON_TYPE = "application/vnd.pypi.simple.v1+json"
HTML_V1_TYPE = "application/vnd.pypi.simple.v1+html"
TEXT_HTML = "text/html"
# What the clients send (research notes 1.14).
PIP_ACCEPT = f"{JSON_TYPE}, {HTML_V1_TYPE}; q=0.1, {TEXT_HTML}; q=0.01"
UV_ACCEPT = f"{JSON_TYPE}, {HTML_V1_TYPE};q=0.2, {TEXT_HTML};q=0.01"
UPLOAD_TIME_RE = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d{1,6})?Z$")
LISTENING_RE = re.compile(r"Listening at: http://([^\s:]+):(\d+)")
REPO_ROOT = Path(__file__).resolve().parents[2]


# --- HTTP -------------------------------------------------------------------------------


@dataclass
class Response:
    status: int
    reason: str
    headers: Message
    body: bytes
    url: str

    def header(self, name: str) -> str | None:
        return self.headers.get(name)

    def json(self) -> Any:
        return json.loads(self.body)

    @property
    def text(self) -> str:
        return self.body.decode("utf-8", "replace")

    @property
    def media_type(self) -> str:
        return (self.header("Content-Type") or "").split(";")[0].strip().lower()

    def describe(self) -> str:
        return f"{self.status} {self.reason} for {self.url}: {dict(self.headers.items())}"


def request(
    url: str,
    *,
    method: str = "GET",
    headers: Mapping[str, str] | None = None,
    timeout: float = 10.0,
) -> Response:
    """One request with http.client: the path is sent as given, only Host is added."""
    parts = urlsplit(url)
    path = parts.path or "/"
    if parts.query:
        path += "?" + parts.query
    conn = http.client.HTTPConnection(parts.hostname or "127.0.0.1", parts.port, timeout=timeout)
    try:
        hdrs = {"Accept-Encoding": "identity", **(headers or {})}
        conn.request(method, path, headers=hdrs)
        resp = conn.getresponse()
        return Response(resp.status, resp.reason, resp.msg, resp.read(), url)
    finally:
        conn.close()


def get(url: str, **headers: str) -> Response:
    """GET with headers given as keywords (underscores become dashes)."""
    return request(url, headers={k.replace("_", "-"): v for k, v in headers.items()})


LIVE = 2.5  # DESIGN: a change shows on every worker within two seconds (plus the polling)


def at_once(actions: Sequence[Callable[[], T]], timeout: float = 120.0) -> list[T | BaseException]:
    """Run each action in its own thread, all released at one instant by a barrier; what
    each returned or raised, in order (an action still running after ``timeout``: fail)."""
    barrier = threading.Barrier(len(actions))
    results: list[T | BaseException | None] = [None] * len(actions)

    def run(i: int) -> None:
        try:
            barrier.wait(timeout=10)
            results[i] = actions[i]()
        except BaseException as exc:  # noqa: BLE001 - handed to the caller
            results[i] = exc

    threads = [threading.Thread(target=run, args=(i,)) for i in range(len(actions))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=timeout)
    assert not any(thread.is_alive() for thread in threads), "an action never ended"
    return [result for result in results if result is not None]


def until(probe: Callable[[], object], what: str, streak: int = 8, within: float = LIVE
          ) -> None:
    """Poll until ``streak`` answers in a row pass (so that, likely, every worker has
    it), within ``within`` seconds; a failure says ``what`` did not happen."""
    deadline = time.monotonic() + within
    passed = 0
    while passed < streak:
        if probe():
            passed += 1
            continue
        passed = 0
        assert time.monotonic() < deadline, what
        time.sleep(0.02)


def worker_pids(server: Server) -> list[int]:
    """The PIDs of the server's workers (its master's children)."""
    pid = server.proc.pid
    return [int(p) for p in Path(f"/proc/{pid}/task/{pid}/children").read_text().split()]


@contextlib.contextmanager
def alone(server: Server, worker: int) -> Iterator[None]:
    """Only ``worker`` answers meanwhile: the others are stopped (SIGSTOP), then go on."""
    others = [pid for pid in worker_pids(server) if pid != worker]
    for pid in others:
        os.kill(pid, signal.SIGSTOP)
    try:
        yield
    finally:
        for pid in others:
            os.kill(pid, signal.SIGCONT)


def until_every_worker(server: Server, probe: Callable[[], object], what: str,
                       within: float = LIVE) -> None:
    """``until`` for each worker in turn, the others stopped: a change must reach every
    worker, and which one accepts a connection is the kernel's choice (often the same)."""
    for worker in worker_pids(server):
        with alone(server, worker):
            until(probe, f"{what} (worker {worker})", streak=1, within=within)


def project_json(url: str) -> dict[str, Any]:
    """A project page's PEP 691 JSON (asserting a 200)."""
    resp = get(url, Accept=JSON_TYPE)
    assert resp.status == 200, resp.describe()
    return resp.json()  # type: ignore[no-any-return]


def raw_request(host: str, port: int, raw: bytes, timeout: float = 10.0) -> tuple[int, bytes]:
    """Send bytes as they are; return (status, whole response). Status 0: no status line."""
    with socket.create_connection((host, port), timeout=timeout) as sock:
        sock.sendall(raw)
        chunks: list[bytes] = []
        try:
            while chunk := sock.recv(65536):
                chunks.append(chunk)
        except (TimeoutError, ConnectionResetError):
            pass
    data = b"".join(chunks)
    m = re.match(rb"HTTP/1\.[01] (\d{3})", data)
    return (int(m.group(1)) if m else 0), data


# --- HTML -------------------------------------------------------------------------------


@dataclass
class Anchor:
    attrs: dict[str, str | None]
    text: str = ""


class PageParser(html.parser.HTMLParser):
    """Collects <a> anchors (attributes, text) and <meta name=... content=...>."""

    def __init__(self) -> None:
        super().__init__()
        self.anchors: list[Anchor] = []
        self.meta: dict[str, str] = {}
        self._open: Anchor | None = None

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag == "a":
            self._open = Anchor(dict(attrs))
            self.anchors.append(self._open)
        elif tag == "meta":
            d = dict(attrs)
            if d.get("name"):
                self.meta[d["name"] or ""] = d.get("content") or ""

    def handle_endtag(self, tag: str) -> None:
        if tag == "a":
            self._open = None

    def handle_data(self, data: str) -> None:
        if self._open is not None:
            self._open.text += data


def parse_page(body: str) -> PageParser:
    parser = PageParser()
    parser.feed(body)
    parser.close()
    return parser


# --- corpus -----------------------------------------------------------------------------


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def wheel_metadata(path: Path) -> bytes:
    """The bytes of the wheel's <dist-info>/METADATA."""
    with zipfile.ZipFile(path) as zf:
        (name,) = [n for n in zf.namelist() if n.endswith(".dist-info/METADATA")]
        return zf.read(name)


@dataclass(frozen=True)
class Dist:
    project: str  # display name, as in METADATA
    version: str
    path: Path  # the file inside the package root
    requires_python: str | None = None

    @property
    def filename(self) -> str:
        return self.path.name

    @property
    def normalized(self) -> str:
        return normalize(self.project)

    @property
    def is_wheel(self) -> bool:
        return self.filename.endswith(".whl")

    def data(self) -> bytes:
        return self.path.read_bytes()


@dataclass
class Corpus:
    root: Path
    dists: list[Dist] = field(default_factory=list)
    junk: list[str] = field(default_factory=list)  # unparseable filenames in the root

    def project(self, name: str) -> list[Dist]:
        return [d for d in self.dists if d.normalized == normalize(name)]

    def by_filename(self, filename: str) -> Dist:
        (dist,) = [d for d in self.dists if d.filename == filename]
        return dist

    @property
    def projects(self) -> set[str]:
        return {d.normalized for d in self.dists}


# --- the server -------------------------------------------------------------------------


@dataclass
class Server:
    proc: subprocess.Popen[bytes]
    host: str
    port: int
    prefix: str  # url_prefix, "" or "/pypi"
    root: Path
    log: Path

    @property
    def origin(self) -> str:
        return f"http://{self.host}:{self.port}"

    @property
    def base_url(self) -> str:
        """Origin plus url_prefix, without a trailing slash."""
        return self.origin + self.prefix

    @property
    def index_url(self) -> str:
        return self.base_url + "/simple/"

    def url(self, path: str) -> str:
        """URL of a path under the prefix: url("/simple/") -> http://h:p/pypi/simple/."""
        return self.base_url + path

    def log_text(self) -> str:
        return self.log.read_text("utf-8", "replace")


# --- client tools -----------------------------------------------------------------------


def client_tool(name: str) -> str:
    """Path of a client program (pip, uv, twine, flit, hatch): $PYPID_TEST_CLIENT_BIN
    (missing there: fail), else next to sys.executable (missing there: skip)."""
    configured = os.environ.get("PYPID_TEST_CLIENT_BIN")
    if configured:
        path = Path(configured) / name
        if not path.is_file():
            pytest.fail(f"{name} not found in PYPID_TEST_CLIENT_BIN={configured}")
        return str(path)
    path = Path(sys.executable).parent / name
    if not path.is_file():
        pytest.skip(f"{name} not found next to {sys.executable}; set PYPID_TEST_CLIENT_BIN")
    return str(path)


def client_env(tmp: Path) -> dict[str, str]:
    """An environment isolated from the user's and the machine's pip/uv configuration."""
    drop = ("PIP_", "UV_", "PYTHON", "VIRTUAL_ENV", "TWINE_", "CONDA_", "NOTIFY_SOCKET")
    drop += ("FLIT_", "HATCH_", "PYPID_")
    env = {k: v for k, v in os.environ.items() if not k.startswith(drop)}
    env = {k: v for k, v in env.items() if "proxy" not in k.lower()}
    home = tmp / "home"
    home.mkdir(parents=True, exist_ok=True)
    env.update(
        HOME=str(home),
        XDG_CONFIG_HOME=str(home / ".config"),
        XDG_CACHE_HOME=str(home / ".cache"),
        PIP_CONFIG_FILE=os.devnull,
        PIP_NO_CACHE_DIR="1",
        PIP_DISABLE_PIP_VERSION_CHECK="1",
        PIP_NO_INPUT="1",
        PIP_NO_COLOR="1",
        UV_CACHE_DIR=str(tmp / "uv-cache"),
        UV_NO_CONFIG="1",
        UV_PYTHON_DOWNLOADS="never",
        UV_NO_PROGRESS="1",
        NO_PROXY="*",
        no_proxy="*",
    )
    return env


def run_client(
    args: Sequence[str],
    tmp: Path,
    timeout: float = 120.0,
    *,
    env: Mapping[str, str] | None = None,
    cwd: Path | None = None,
) -> str:
    """Run a client command (in cwd, default tmp) with the isolated env plus env; fail with
    its output if it fails."""
    try:
        proc = subprocess.run(
            list(args),
            cwd=cwd or tmp,
            env={**client_env(tmp), **(env or {})},
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        )
    except subprocess.TimeoutExpired as exc:
        # exc.stdout may be bytes even with text=True.
        streams = [
            x.decode("utf-8", "replace") if isinstance(x, bytes) else x or ""
            for x in (exc.stdout, exc.stderr)
        ]
        pytest.fail(f"timed out after {timeout}s: {' '.join(args)}\n" + "\n".join(streams))
    out = f"$ {' '.join(args)}\n--- stdout\n{proc.stdout}\n--- stderr\n{proc.stderr}"
    if proc.returncode != 0:
        pytest.fail(f"exit {proc.returncode}\n{out}")
    return out


def pip_download(index_url: str, tmp: Path, *requirements: str) -> tuple[dict[str, bytes], str]:
    """`pip download --no-deps` from the index into tmp/dl: {file name: bytes}, pip's output."""
    dest = tmp / "dl"
    out = run_client([client_tool("pip"), "download", "--no-cache-dir", "--no-deps",
                      "--index-url", index_url, "-d", str(dest), *requirements], tmp)
    return {p.name: p.read_bytes() for p in dest.iterdir()}, out


def installed_versions(target: Path) -> dict[str, str]:
    """{normalized name: version} from the *.dist-info folders in a --target dir."""
    found: dict[str, str] = {}
    for d in target.glob("*.dist-info"):
        name, version = d.name[: -len(".dist-info")].rsplit("-", 1)
        found[normalize(name)] = version
    return found
