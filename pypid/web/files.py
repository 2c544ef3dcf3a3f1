"""/packages/<filename> and its PEP 658 ``.metadata``: only files the index knows are served."""

from __future__ import annotations

import hashlib
import threading

from flask import Blueprint, Response, abort, request, send_file
from werkzeug.wsgi import wrap_file

from pypid.distfile import WHEEL, MetadataError, parse_filename, read_core_metadata
from pypid.index import FileEntry
from pypid.simple.answers import FILE_MAX_AGE, file_answer
from pypid.web import errors
from pypid.web.state import services

bp = Blueprint("files", __name__)

METADATA_SUFFIX = ".metadata"
_metadata_cache: dict[tuple[str, int, int, int], bytes] = {}
_metadata_lock = threading.Lock()


@bp.route("/packages/<path:filename>", methods=["GET", "HEAD"])
def package_file(filename: str) -> Response:
    if filename.endswith(METADATA_SUFFIX):
        return _metadata(filename[: -len(METADATA_SUFFIX)])
    entry = _current(filename)
    path = services().index.path(entry)
    overwrite = services().config.storage.overwrite
    if request.range is None:  # the whole file: the same answer as the fast path gives
        status, headers = file_answer(
            entry.sha256, entry.size, entry.mtime_ns / 1e9, overwrite=overwrite,
            if_none_match=request.headers.get("If-None-Match"),
            if_modified_since=request.headers.get("If-Modified-Since"))
        if status == 304 or request.method == "HEAD":
            return Response(status=status, headers=headers)
        try:
            handle = open(path, "rb")  # noqa: SIM115 - closed by the WSGI server
        except FileNotFoundError:
            abort(404, description=f"{filename} is gone")
        return Response(wrap_file(request.environ, handle), status=status, headers=headers,
                        direct_passthrough=True)
    try:  # Range: Werkzeug's send_file answers 206/416
        response = send_file(
            path, mimetype="application/octet-stream", conditional=True, etag=entry.sha256,
            last_modified=entry.mtime_ns / 1e9, max_age=0 if overwrite else FILE_MAX_AGE)
    except FileNotFoundError:
        abort(404, description=f"{filename} is gone")
    response.headers["Accept-Ranges"] = "bytes"
    return response


def _metadata(filename: str) -> Response:
    entry = _current(filename)
    if entry.kind != WHEEL or entry.metadata_sha256 is None:
        abort(404, description=f"no separate metadata for {filename} (wheels only)")
    data = _read_metadata(entry)
    if data is None:
        _changing(filename)
    etag = entry.metadata_sha256
    if_none_match = request.if_none_match
    if if_none_match and if_none_match.contains_weak(etag):
        return Response(status=304, headers={"ETag": f'"{etag}"'})
    response = Response(data, mimetype="application/octet-stream")
    response.set_etag(etag)
    response.headers["Cache-Control"] = "max-age=0, must-revalidate"
    return response


def _current(filename: str) -> FileEntry:
    """The index's entry for ``filename``, re-checked against the file on disk.

    A file replaced by hand a moment ago is not re-hashed here (no request
    hashes): the watcher does that within a second, so the client is asked to retry.
    """
    index = services().index
    entry = index.file(filename)
    if entry is None:
        abort(404, description="no such file here")
    stat = index.root.stat(entry.relpath)
    if stat is None:
        abort(404, description="no such file here")
    if not entry.same_file(stat):
        _changing(filename)
    return entry


def _changing(filename: str) -> None:
    """503 + Retry-After: pip and uv retry it, by which time the index has caught up."""
    response = errors.plain_error(503, f"{filename} is being replaced; retry in a second")
    response.headers["Retry-After"] = "1"
    abort(response)


def _read_metadata(entry: FileEntry) -> bytes | None:
    """The wheel's METADATA, checked once against the hash the index advertises
    (None: the file changed since it was indexed). Cached per file version."""
    path = services().index.path(entry)
    key = (str(path), entry.mtime_ns, entry.size, entry.inode)
    data = _metadata_cache.get(key)
    if data is not None:
        return data
    try:
        meta = read_core_metadata(path, parse_filename(entry.filename))
    except (OSError, MetadataError):
        abort(404, description=f"cannot read the metadata of {entry.filename}")
    data = meta.metadata or b""
    if entry.metadata_digest != hashlib.sha256(data).digest():
        return None
    with _metadata_lock:
        if len(_metadata_cache) > 512:
            _metadata_cache.clear()
        _metadata_cache[key] = data
    return data
