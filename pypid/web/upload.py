"""POST /, /legacy, /legacy/: the legacy upload API that twine and every publisher speak,
and pypiserver's ``:action=remove_pkg`` (kept for its users' scripts).

The file part is streamed straight into the package root's file system,
hashed and size-checked on the way (see ``UploadRequest``), checked against
the form, then published atomically (``pypid.index.publish``). Every refusal
is one line, in the status line's reason phrase and in the body.
"""

from __future__ import annotations

import hmac
import io
import logging
import re
from functools import cached_property
from typing import IO

from flask import Blueprint, Request, Response, current_app, g, request
from packaging.version import InvalidVersion, Version
from werkzeug.datastructures import FileStorage, ImmutableMultiDict
from werkzeug.exceptions import BadRequest, RequestEntityTooLarge
from werkzeug.formparser import FormDataParser

from pypid.distfile import (
    SDIST,
    WHEEL,
    CoreMetadata,
    DistFile,
    InvalidFilenameError,
    MetadataError,
    has_dist_suffix,
    is_valid_project_name,
    normalize,
    parse_filename,
    read_core_metadata,
)
from pypid.events import EventLogError
from pypid.index import Published, publish
from pypid.manage import ManageError
from pypid.metrics import tally
from pypid.simple.reply import Reply
from pypid.storage import (
    IncomingFile,
    StorageError,
    TooLargeError,
    UnsafePathError,
)
from pypid.web import errors
from pypid.web.replies import response
from pypid.web.state import services

log = logging.getLogger("pypid.upload")
bp = Blueprint("upload", __name__)

ENDPOINT = "upload.upload"
MIB = 1024 * 1024
FILETYPES = {"bdist_wheel": WHEEL, "sdist": SDIST}
SDIST_UPLOAD_SUFFIXES = (".tar.gz", ".zip")  # what PyPI accepts (PEP 625 and before)
# The form's text (every field but the file) is held in memory: bounded in parts and
# in bytes, whichever Werkzeug runs (2.2 bounds neither by default).
MAX_FORM_PARTS = 10_000  # one part per classifier and per Requires-Dist
MAX_FORM_TEXT = 64 * MIB  # all text fields together (twine sends the description as one)
MAX_SIDE_FILES = 3  # file parts beside the distribution (kept in memory, as text)
DIGEST_FIELDS = {"md5_digest": ("md5", 32), "sha256_digest": ("sha256", 64),
                 "blake2_256_digest": ("blake2_256", 64)}
_HEX = re.compile(r"^[0-9a-f]+$")


class UploadError(Exception):
    def __init__(self, status: int, message: str,
                 headers: list[tuple[str, str]] | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.headers = headers or []

    @classmethod
    def of(cls, exc: StorageError | EventLogError) -> UploadError:
        """What the storage or the log refused, as the answer that says so."""
        status, headers = errors.failed_change(exc)
        return cls(status, str(exc), headers)


class FormError(ValueError):
    """A form this endpoint does not take (raised while it is parsed)."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


class UploadRequest(Request):
    """Streams an upload's one file part into the package root instead of /tmp."""

    max_form_parts = MAX_FORM_PARTS
    max_form_memory_size = MAX_FORM_TEXT
    side_files = 0

    @cached_property
    def incoming_files(self) -> list[IncomingFile]:
        return []

    def _get_stream_for_parsing(self) -> IO[bytes]:
        stream = super()._get_stream_for_parsing()
        if self.endpoint != ENDPOINT:
            return stream
        return _TextBudget(stream, self.incoming_files)  # type: ignore[return-value]

    def make_form_data_parser(self) -> FormDataParser:
        parser = super().make_form_data_parser()
        if self.endpoint == ENDPOINT:
            # Werkzeug's silent default turns a broken body into an empty form, which
            # would be reported as "missing :action"; say what is wrong instead.
            parser.silent = False
        return parser

    def _get_file_stream(self, total_content_length: int | None, content_type: str | None,
                         filename: str | None = None,
                         content_length: int | None = None) -> IO[bytes]:
        if self.endpoint != ENDPOINT:
            return super()._get_file_stream(total_content_length, content_type, filename,
                                            content_length)
        if not has_dist_suffix(filename or ""):
            # Not the distribution (an old twine's gpg_signature): in memory, counted as text.
            self.side_files += 1
            if self.side_files > MAX_SIDE_FILES:
                raise FormError(400, f"the form has more than {MAX_SIDE_FILES + 1} file parts")
            return io.BytesIO()
        if self.incoming_files:  # each would hold a descriptor and a file until the end
            raise FormError(400, "an upload has one distribution file part; this form has more")
        svc = services()
        incoming = svc.index.root.incoming(svc.config.storage.max_upload_mb * MIB)
        self.incoming_files.append(incoming)
        return incoming  # type: ignore[return-value]


class _TextBudget:
    """The body as the form parser reads it, refusing more than MAX_FORM_TEXT of it outside
    the file part: Werkzeug bounds each text field, not their sum."""

    SLACK = 1 * MIB  # what the parser may have read ahead of the file's writes

    def __init__(self, stream: IO[bytes], files: list[IncomingFile]) -> None:
        self._stream = stream
        self._files = files
        self._read = 0

    def read(self, size: int = -1) -> bytes:
        return self._count(self._stream.read(size))

    def readline(self, size: int = -1) -> bytes:  # Werkzeug 2.2's LimitedStream binds it
        return self._count(self._stream.readline(size))

    def _count(self, data: bytes) -> bytes:
        self._read += len(data)
        if self._read - sum(f.size for f in self._files) > MAX_FORM_TEXT + self.SLACK:
            raise FormError(413, f"the form's text fields hold more than "
                            f"{MAX_FORM_TEXT // MIB} MiB")
        return data


@bp.route("/", methods=["POST"])
@bp.route("/legacy", methods=["POST"])
@bp.route("/legacy/", methods=["POST"])
def upload() -> Response:
    try:
        status, message = _handle()
    except UploadError as exc:
        return errors.plain_error(exc.status, exc.message, reason=True,
                                  headers=dict(exc.headers))
    except _Refused as exc:
        return response(exc.reply)
    return Response(message + "\n", status=status, mimetype="text/plain")


class _Refused(Exception):  # noqa: N818 - carries the login's refusal
    def __init__(self, reply: Reply) -> None:
        super().__init__(reply.reason)
        self.reply = reply


# An upload's result by status, when the view did not name it (refused before or in it).
_RESULTS = {401: "unauthorized", 403: "forbidden", 409: "conflict"}


@bp.after_request
def _count(resp: Response) -> Response:
    """``pypid_uploads_total``: every POST here but pypiserver's remove action."""
    result = g.get("upload_result") or _RESULTS.get(resp.status_code, "rejected")
    if result != "removal":
        tally.add("uploads", result)
        if result == "stored":
            tally.add("upload_bytes", amount=g.get("upload_bytes", 0))
    return resp


@bp.teardown_app_request
def _discard_incoming(_exc: BaseException | None) -> None:
    for incoming in getattr(request, "incoming_files", ()):
        incoming.discard()


def _handle() -> tuple[int, str]:
    form, files = _parse()
    if _check_action(form) == "remove_pkg":
        g.upload_result = "removal"
        return _remove_pkg(form)
    name = _required(form, "name")
    version_text = _required(form, "version")
    filetype = _required(form, "filetype")
    if not is_valid_project_name(name):
        raise UploadError(400, f"invalid project name {name!r}")
    try:
        if not version_text.isascii():  # packaging takes a Unicode space for a space
            raise InvalidVersion(version_text)
        version = Version(version_text)
    except InvalidVersion:
        raise UploadError(400, f"invalid version {version_text!r} (see PEP 440)") from None
    kind = FILETYPES.get(filetype)
    if kind is None:
        raise UploadError(400, f"filetype must be bdist_wheel or sdist, not {filetype!r}")
    part = files.get("content")
    if part is None:
        raise UploadError(400, "missing the file part 'content'")
    dist = _check_filename(part, name, version, kind, filetype)
    incoming = part.stream
    if not isinstance(incoming, IncomingFile):  # another part took the distribution's place
        raise UploadError(400, "the file part 'content' is not the distribution")
    if incoming.size == 0:
        raise UploadError(400, f"{dist.filename} is empty")
    _check_digests(form, incoming)
    meta = _check_archive(incoming, dist)
    return _store(incoming, dist, meta)


def _parse() -> tuple[ImmutableMultiDict[str, str], ImmutableMultiDict[str, FileStorage]]:
    max_mb = services().config.storage.max_upload_mb
    limit = current_app.config["MAX_CONTENT_LENGTH"]
    if request.content_length is not None and request.content_length > limit:
        # Werkzeug 2.2 would read the whole body before saying so.
        raise UploadError(413, f"the upload is larger than max_upload_mb ({max_mb} MiB)")
    try:
        return request.form, request.files
    except TooLargeError:
        raise UploadError(413, f"the upload is larger than max_upload_mb ({max_mb} MiB)") from None
    except FormError as exc:
        raise UploadError(exc.status, str(exc)) from None
    except RequestEntityTooLarge:  # Werkzeug's own bounds on the form's text
        raise UploadError(400, f"the form has more than {MAX_FORM_PARTS} parts or a field "
                          f"larger than {MAX_FORM_TEXT // MIB} MiB") from None
    except StorageError as exc:
        log.error("upload refused: %s", exc)
        raise UploadError.of(exc) from None
    except (BadRequest, ValueError) as exc:
        raise UploadError(400, f"malformed upload body ({_describe(exc)})") from None


def _check_action(form: ImmutableMultiDict[str, str]) -> str:
    action = form.get(":action") or request.args.get(":action")
    if action not in ("file_upload", "remove_pkg"):
        raise UploadError(400, f"unsupported :action {action!r}; this server takes "
                          "file_upload and remove_pkg"
                          if action else "missing :action (file_upload)")
    protocol = form.get("protocol_version") or request.args.get("protocol_version")
    if protocol not in (None, "", "1"):
        raise UploadError(400, f"unknown protocol_version {protocol!r}")
    return action


def _remove_pkg(form: ImmutableMultiDict[str, str]) -> tuple[int, str]:
    """pypiserver's remove action: every file of release ``name`` ``version``."""
    name = _required(form, "name")
    version_text = _required(form, "version")
    try:
        version = Version(version_text)
    except InvalidVersion:
        raise UploadError(400, f"invalid version {version_text!r} (see PEP 440)") from None
    manager = services().manager
    user = _login("remove")
    if user is None:
        raise _Refused(services().logins.refusal("remove", "a login is needed"))
    actor = manager.policy.actor(user, request.remote_addr)
    try:
        events = manager.remove(actor, manager.release(name, version))
    except ManageError as exc:
        raise UploadError(exc.status, str(exc)) from None
    except (EventLogError, StorageError) as exc:
        log.error("remove_pkg %s %s refused: %s", name, version_text, exc)
        raise UploadError.of(exc) from None
    return 200, "removed " + ", ".join(event.get("file") for event in events)


def _login(action: str, *, refuse: bool = True) -> str | None:
    """The request's login: checked already when uploads need one, else checked now if
    one was sent (a change needs to know who makes it). A wrong one is refused, or
    (``refuse`` False: uploads are open) taken as no login."""
    if "user" in g:
        return g.user  # type: ignore[no-any-return]
    header = request.headers.get("Authorization")
    if header is None:
        return None
    login = services().logins.authenticate(action, header, request.remote_addr or "-")
    if isinstance(login, Reply):
        if refuse:
            raise _Refused(login)
        return None
    return login


def _required(form: ImmutableMultiDict[str, str], field: str) -> str:
    value = (form.get(field) or "").strip()
    if not value:
        raise UploadError(400, f"missing the form field {field!r}")
    return value


def _check_filename(part: FileStorage, name: str, version: Version, kind: str,
                    filetype: str) -> DistFile:
    filename = part.filename or ""
    if not filename:
        raise UploadError(400, "the file part 'content' has no file name")
    try:
        dist = parse_filename(filename)
    except InvalidFilenameError as exc:
        shown = filename if len(filename) <= 80 else filename[:60] + "..." + filename[-12:]
        raise UploadError(400, f"invalid file name {shown!r}: {exc.reason}") from None
    if dist.kind != kind:
        raise UploadError(400, f"{filename} is not a {filetype} (its extension says {dist.kind})")
    if kind == SDIST and not filename.endswith(SDIST_UPLOAD_SUFFIXES):
        raise UploadError(400, f"{filename}: an sdist must be a .tar.gz (or .zip)")
    if dist.project != normalize(name):
        raise UploadError(400, f"{filename} does not belong to project {name!r}")
    if dist.version != version:
        raise UploadError(400, f"{filename} is not version {version} of {name}")
    return dist


def _check_digests(form: ImmutableMultiDict[str, str], incoming: IncomingFile) -> None:
    sent = 0
    for field, (algorithm, length) in DIGEST_FIELDS.items():
        value = (form.get(field) or "").strip().lower()
        if not value:
            continue
        sent += 1
        if len(value) != length or not _HEX.match(value):
            raise UploadError(400, f"{field} is not a hex {algorithm} digest")
        if not hmac.compare_digest(value, incoming.digests.hexdigest(algorithm)):
            raise UploadError(400, f"{field} does not match the uploaded file")
    if not sent:
        raise UploadError(400, "no digest sent (sha256_digest, md5_digest or blake2_256_digest)")


def _check_archive(incoming: IncomingFile, dist: DistFile) -> CoreMetadata:
    try:
        with incoming.reopen() as handle:
            meta = read_core_metadata(handle, dist)
    except MetadataError as exc:
        message = f"{dist.filename} is not a valid {dist.kind}: {exc.reason}"
        raise UploadError(400, message) from None
    except OSError as exc:
        raise UploadError(500, f"cannot re-read the upload: {exc.strerror}") from None
    if dist.kind == WHEEL and meta.name and normalize(meta.name) != dist.project:
        raise UploadError(400, f"{dist.filename}: its METADATA names project {meta.name!r}")
    return meta


def _store(incoming: IncomingFile, dist: DistFile, meta: CoreMetadata) -> tuple[int, str]:
    svc = services()
    sha256 = incoming.digests.hexdigest("sha256")
    checked = svc.logins.needed("upload")
    user = g.get("user") if checked else _login("upload", refuse=False)
    gate = svc.manager.upload_gate(svc.manager.policy.actor(user, request.remote_addr),
                                   checked=checked)
    try:
        published = publish(svc.index, incoming, dist.filename, sha256=sha256,
                            metadata=meta.metadata, requires_python=meta.requires_python,
                            overwrite=svc.config.storage.overwrite, gate=gate)
    except ManageError as exc:
        raise UploadError(exc.status, str(exc)) from None
    except UnsafePathError as exc:
        raise UploadError(400, str(exc)) from None
    except (EventLogError, StorageError) as exc:
        log.error("upload of %s refused: %s", dist.filename, exc)
        raise UploadError.of(exc) from None
    if not published.stored:
        return _conflict_or_same(dist.filename, published, sha256)
    log.info("%s uploaded %s (%d bytes) from %s", user or "anonymous", dist.filename,
             published.size, request.remote_addr)
    g.upload_result, g.upload_bytes = "stored", published.size
    return 200, f"stored {dist.filename}"


def _conflict_or_same(filename: str, published: Published, sha256: str) -> tuple[int, str]:
    """200 for the same bytes under the same name (CI re-runs); else 409 naming the file
    that holds the slot (maybe another spelling: ``FOO-1.0.zip`` for ``foo-1.0.tar.gz``)."""
    holder = published.holder or filename
    existing = published.holder_sha256
    if holder == filename and existing is not None and hmac.compare_digest(existing, sha256):
        g.upload_result = "identical"
        return 200, f"{filename} is already here, byte for byte"
    raise UploadError(409, f"File already exists: {holder}")


def _describe(exc: Exception) -> str:
    text = getattr(exc, "description", None) or str(exc) or type(exc).__name__
    return " ".join(str(text).split())[:120]
