"""What the load run's clients ask for: a weighted mix of reads, and uploads of new wheels.

Each request comes with the answer it must get (status, and where it is known the
body's size and type); anything else is a failed request. A 409 for a conflicting
upload is such an expected answer, not a failure.
"""

from __future__ import annotations

import base64
import hashlib
import random
import threading
from dataclasses import dataclass

from bench.lib.corpus import Corpus
from bench.lib.httpclient import Reply, request_bytes
from bench.lib.probe import JSON_V1
from tests.builders import wheel_bytes

HTML = "text/html"
GZIP = {"Accept-Encoding": "gzip"}
RANGE_BYTES = 1000  # a Range request asks for bytes 1000-1999 of a ~100 KB wheel
UPLOAD_PROJECTS = 20  # new uploads go to loadtest-0 .. loadtest-19 (--upload-projects)
BOUNDARY = "pypid-load-boundary"

# Read kinds and their weights (relative): what an index behind pip and uv mostly sees.
READ_WEIGHTS = {
    "/simple/": 4,
    "project html": 16,
    "project json": 16,
    "project 304": 16,
    "uploaded project": 4,
    "metadata": 14,
    "download ~100 KB": 10,
    "range": 6,
    # any file of the corpus, at random: each reads a file entry no other request did,
    # the read that once un-shared the workers' memory (bench/README.md, issue 18)
    "download random": 8,
    "/metrics": 1,  # a scrape now and then, as a Prometheus would
}
# Upload kinds: most are new files; a few repeat a stored one (same bytes: 200) or
# reuse a stored name with other bytes (409).
UPLOAD_WEIGHTS = {"upload new": 8, "upload identical": 1, "upload conflict": 1}


@dataclass
class Ask:
    """One request and the answer it must get."""

    kind: str
    raw: bytes
    status: int
    length: int | None = None  # exact body size, when known
    media: str | None = None  # Content-Type prefix, when it matters
    stored: tuple[str, str, bytes] | None = None  # (project, filename, bytes) of an upload

    def problem(self, reply: Reply) -> str | None:
        """Why this answer is a failure, or None."""
        if reply.status != self.status:
            reason = reply.body[:120].decode("utf-8", "replace").strip()
            return f"HTTP {reply.status} (want {self.status}): {reason}"
        if self.length is not None and len(reply.body) != self.length:
            return f"{len(reply.body)} bytes (want {self.length})"
        media = reply.headers.get("content-type", "")
        if self.media is not None and not media.startswith(self.media):
            return f"Content-Type {media!r} (want {self.media})"
        return None


def basic_auth(user: str, password: str) -> dict[str, str]:
    token = base64.b64encode(f"{user}:{password}".encode()).decode()
    return {"Authorization": f"Basic {token}"}


class Mix:
    """Draws requests; shared by every client of the run (uploads under a lock)."""

    def __init__(self, corpus: Corpus, port: int, etags: dict[tuple[str, str], str],
                 auth: dict[str, str],
                 upload_weights: tuple[float, float, float] | None = None, *,
                 reads: list[str] | None = None,
                 upload_projects: int = UPLOAD_PROJECTS) -> None:
        self.host = f"127.0.0.1:{port}"
        self.projects = corpus.projects
        self.etags = sorted(etags.items())  # ((path, accept), etag)
        self.big = [f for f in corpus.files if f.filename in set(corpus.big_files)]
        self.files = corpus.files
        self.wheels = [f.filename for f in corpus.files if f.filename.endswith(".whl")]
        self.auth = auth
        self._upload_projects = upload_projects
        self._upload_weights = upload_weights or tuple(UPLOAD_WEIGHTS.values())
        # reads: only these kinds, at their usual weights (to find which one does something)
        self._kinds = [k for k in READ_WEIGHTS if reads is None or k in reads]
        self._weights = [READ_WEIGHTS[k] for k in self._kinds]
        if not self._kinds:
            raise ValueError(f"no read kind among {reads}")
        self._reads = {
            "/simple/": self._index, "project html": self._project,
            "project json": self._project, "project 304": self._conditional,
            "uploaded project": self._project, "metadata": self._metadata,
            "download ~100 KB": self._download, "range": self._download,
            "download random": self._any_file, "/metrics": self._metrics,
        }
        self._lock = threading.Lock()
        self._next = 0
        self.stored: list[tuple[str, str, bytes]] = []  # uploads answered 200
        self.stored_projects: list[str] = []

    def _get(self, kind: str, path: str, headers: dict[str, str], status: int = 200, *,
             length: int | None = None, media: str | None = None) -> Ask:
        return Ask(kind, request_bytes("GET", path, self.host, headers), status, length, media)

    def read(self, rng: random.Random) -> Ask:
        kind = rng.choices(self._kinds, self._weights)[0]
        zipped = GZIP if rng.random() < 0.5 else {}
        if kind == "uploaded project" and not self.stored_projects:
            kind = "project json"  # nothing uploaded yet
        return self._reads[kind](kind, rng, zipped)

    def _index(self, kind: str, rng: random.Random, zipped: dict[str, str]) -> Ask:
        accept = rng.choice((HTML, JSON_V1))
        return self._get(kind, "/simple/", {"Accept": accept, **zipped}, media=accept)

    def _project(self, kind: str, rng: random.Random, zipped: dict[str, str]) -> Ask:
        if kind == "uploaded project":
            path, accept = f"/simple/{rng.choice(self.stored_projects)}/", JSON_V1
        else:
            accept = HTML if kind == "project html" else JSON_V1
            path = f"/simple/{rng.choice(self.projects)}/"
        return self._get(kind, path, {"Accept": accept, **zipped}, media=accept)

    def _conditional(self, kind: str, rng: random.Random, zipped: dict[str, str]) -> Ask:
        (path, accept), etag = rng.choice(self.etags)
        return self._get(kind, path, {"Accept": accept, "If-None-Match": etag}, 304)

    def _metadata(self, kind: str, rng: random.Random, zipped: dict[str, str]) -> Ask:
        return self._get(kind, f"/packages/{rng.choice(self.wheels)}.metadata", {})

    def _download(self, kind: str, rng: random.Random, zipped: dict[str, str]) -> Ask:
        big = rng.choice(self.big)
        if kind == "range":
            end = RANGE_BYTES * 2 - 1
            return self._get(kind, f"/packages/{big.filename}",
                             {"Range": f"bytes={RANGE_BYTES}-{end}"}, 206, length=RANGE_BYTES)
        return self._get(kind, f"/packages/{big.filename}", {}, length=big.size)

    def _any_file(self, kind: str, rng: random.Random, zipped: dict[str, str]) -> Ask:
        f = rng.choice(self.files)
        return self._get(kind, f"/packages/{f.filename}", {}, length=f.size)

    def _metrics(self, kind: str, rng: random.Random, zipped: dict[str, str]) -> Ask:
        return self._get(kind, "/metrics", {}, media="text/plain")

    def upload(self, rng: random.Random) -> Ask:
        kind = rng.choices(list(UPLOAD_WEIGHTS), self._upload_weights)[0]
        with self._lock:
            if not self.stored:
                kind = "upload new"
            if kind == "upload new":
                n, self._next = self._next, self._next + 1
                project, version = f"loadtest-{n % self._upload_projects}", f"1.0.{n}"
                filename, data = wheel_bytes(project, version)
                return self._upload(kind, 200, project=project, version=version,
                                    filename=filename, data=data)
            project, filename, data = rng.choice(self.stored)
        version = filename.split("-")[1]
        if kind == "upload identical":
            return self._upload(kind, 200, project=project, version=version,
                                    filename=filename, data=data)
        # the same name, other bytes (another module source): refused while overwrite is off
        other, other_data = wheel_bytes(project, version, module_source=f"# {rng.random()}\n")
        assert other == filename
        return self._upload(kind, 409, project=project, version=version, filename=filename,
                            data=other_data)

    def _upload(self, kind: str, status: int, *, project: str, version: str, filename: str,
                data: bytes) -> Ask:
        body = multipart({
            ":action": "file_upload", "protocol_version": "1", "metadata_version": "2.1",
            "name": project, "version": version, "filetype": "bdist_wheel", "pyversion": "py3",
            "sha256_digest": hashlib.sha256(data).hexdigest(),
        }, filename, data)
        headers = {**self.auth, "Content-Type": f"multipart/form-data; boundary={BOUNDARY}"}
        raw = request_bytes("POST", "/legacy/", self.host, headers, body)
        stored = (project, filename, data) if kind == "upload new" else None
        return Ask(kind, raw, status, stored=stored)

    def uploaded(self, ask: Ask) -> None:
        """Remember a new file the server stored, for re-uploads and page reads."""
        if ask.stored is None:
            return
        with self._lock:
            self.stored.append(ask.stored)
            if ask.stored[0] not in self.stored_projects:
                self.stored_projects.append(ask.stored[0])


def multipart(fields: dict[str, str], filename: str, data: bytes) -> bytes:
    """A multipart/form-data body: the fields, then the file as ``content`` (as twine sends)."""
    out = bytearray()
    for key, value in fields.items():
        out += (f'--{BOUNDARY}\r\nContent-Disposition: form-data; name="{key}"\r\n\r\n'
                f"{value}\r\n").encode()
    out += (f'--{BOUNDARY}\r\nContent-Disposition: form-data; name="content"; '
            f'filename="{filename}"\r\nContent-Type: application/octet-stream\r\n\r\n').encode()
    return bytes(out) + data + f"\r\n--{BOUNDARY}--\r\n".encode()
