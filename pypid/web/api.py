"""``/api/v1/``: the management API (a project's facts, yank, remove, status, owners, the
audit log), a thin HTTP face on ``pypid.manage.Manager``, which decides everything.

Answers are JSON (200), or 204 with no body for a change; errors are RFC 9457
``application/problem+json`` with a one-line ``detail``. Every change needs a
login (Basic, as for uploads): 401 without one, 403 naming what is missing.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable, Iterator
from functools import wraps
from http import HTTPStatus
from typing import Any

from flask import Blueprint, Response, request

from pypid.events import EventLogError
from pypid.manage import Actor, ManageError, NotFoundError
from pypid.manage.catalog import project_name
from pypid.simple.pep691 import format_upload_time
from pypid.simple.reply import Reply
from pypid.storage import StorageError
from pypid.web import errors
from pypid.web.state import services

log = logging.getLogger("pypid.api")
bp = Blueprint("api", __name__, url_prefix="/api/v1")

PROBLEM = "application/problem+json"
JSON_LINES = "application/jsonl"
MAX_BODY = 64 * 1024  # a change's JSON body (a reason, a status)


class Problem(Exception):
    """An error answer: status and a one-line detail (plus headers, for a 401)."""

    def __init__(self, status: int, detail: str, headers: list[tuple[str, str]] | None = None):
        super().__init__(detail)
        self.status = status
        self.detail = detail
        self.headers = headers or []


def problem(status: int, detail: str, headers: list[tuple[str, str]] | None = None) -> Response:
    """An RFC 9457 problem document."""
    body = {"type": "about:blank", "title": HTTPStatus(status).phrase, "status": status,
            "detail": detail}
    response = Response(json.dumps(body) + "\n", status=status, content_type=PROBLEM)
    for name, value in headers or ():
        response.headers[name] = value
    return response


def endpoint(*, login: str) -> Callable[[Callable[..., Response]], Callable[..., Response]]:
    """A view that gets the request's Actor; ``login``: "always" (a change), "protected"
    (a read: when any action needs a login) or "admin"."""
    def decorate(view: Callable[..., Response]) -> Callable[..., Response]:
        @wraps(view)
        def wrapper(**kwargs: Any) -> Response:
            try:
                return view(_actor(login), **kwargs)
            except Problem as exc:
                return problem(exc.status, exc.detail, exc.headers)
            except ManageError as exc:
                return problem(exc.status, str(exc))
            except (EventLogError, StorageError) as exc:
                log.error("%s %s refused: %s", request.method, request.path, exc)
                return problem(*_failed(exc))
        return wrapper
    return decorate


def _failed(exc: EventLogError | StorageError) -> tuple[int, str, list[tuple[str, str]]]:
    status, headers = errors.failed_change(exc)
    return status, str(exc), headers


def _actor(login: str) -> Actor:
    svc = services()
    manager = svc.manager
    client = request.remote_addr
    if login == "protected" and not svc.logins.protect:
        return manager.policy.actor(None, client)
    header = request.headers.get("Authorization")
    reply = svc.logins.authenticate("this request", header, client or "-")
    if isinstance(reply, Reply):
        detail = reply.reason if header else "this request needs a login (HTTP Basic)"
        raise Problem(reply.status, detail,
                      [(k, v) for k, v in reply.headers if k in ("WWW-Authenticate",
                                                                    "Retry-After")])
    actor = manager.policy.actor(reply, client)
    if login == "admin":
        manager.policy.check_admin(actor, "this request")
    return actor


def _body() -> dict[str, Any]:
    """The change's JSON object (an empty body is an empty object)."""
    if request.content_length is not None and request.content_length > MAX_BODY:
        raise Problem(413, f"the body is larger than {MAX_BODY // 1024} KiB")
    data = request.stream.read(MAX_BODY + 1)
    if len(data) > MAX_BODY:
        raise Problem(413, f"the body is larger than {MAX_BODY // 1024} KiB")
    if not data.strip():
        return {}
    try:
        body = json.loads(data)
    except (ValueError, UnicodeDecodeError):
        raise Problem(400, "the body is not JSON") from None
    if not isinstance(body, dict):
        raise Problem(400, "the body must be a JSON object")
    return body


def _text(body: dict[str, Any], key: str, *, required: bool = False) -> str | None:
    value = body.get(key)
    if value is None:
        if required:
            raise Problem(400, f'the body needs "{key}"')
        return None
    if not isinstance(value, str) or len(value) > 1000 or any(ord(c) < 32 for c in value):
        raise Problem(400, f'"{key}" must be one line of text (at most 1000 characters)')
    return value


def _no_content() -> Response:
    return Response(status=204)


@bp.route("/projects/<project>", methods=["GET"])
@endpoint(login="protected")
def project(actor: Actor, project: str) -> Response:
    svc = services()
    manager = svc.manager
    name = manager.project(project)
    status, reason = svc.index.marks.status(name)
    owners = manager.owners(name)
    files = [{
        "filename": entry.filename,
        "version": entry.version,
        "sha256": entry.sha256,
        "size": entry.size,
        "upload-time": format_upload_time(entry.upload_time),
        "uploader": manager.ledger.uploader(entry.filename),
        "yanked": entry.yanked if entry.yanked is not None else False,
    } for entry in svc.index.files(name) or ()]
    body = {"name": name, "status": {"status": status, "reason": reason or None},
            "owners": sorted(owners or ()), "files": files}
    return Response(json.dumps(body) + "\n", content_type="application/json")


@bp.route("/files/<filename>/yank", methods=["PUT"])
@endpoint(login="always")
def yank(actor: Actor, filename: str) -> Response:
    reason = _text(_body(), "reason")
    services().manager.yank(actor, _file(filename), reason)
    return _no_content()


@bp.route("/files/<filename>/yank", methods=["DELETE"])
@endpoint(login="always")
def unyank(actor: Actor, filename: str) -> Response:
    services().manager.unyank(actor, _file(filename))
    return _no_content()


@bp.route("/files/<filename>", methods=["DELETE"])
@endpoint(login="always")
def remove(actor: Actor, filename: str) -> Response:
    manager = services().manager
    manager.remove(actor, manager.find(_file(filename)))
    return _no_content()


@bp.route("/projects/<project>/status", methods=["PUT"])
@endpoint(login="always")
def status(actor: Actor, project: str) -> Response:
    body = _body()
    services().manager.set_status(actor, project, _text(body, "status", required=True) or "",
                                  _text(body, "reason"))
    return _no_content()


@bp.route("/projects/<project>/owners/<user>", methods=["PUT"])
@endpoint(login="always")
def add_owner(actor: Actor, project: str, user: str) -> Response:
    services().manager.add_owner(actor, project, user)
    return _no_content()


@bp.route("/projects/<project>/owners/<user>", methods=["DELETE"])
@endpoint(login="always")
def remove_owner(actor: Actor, project: str, user: str) -> Response:
    services().manager.remove_owner(actor, project, user)
    return _no_content()


@bp.route("/audit", methods=["GET"])
@endpoint(login="admin")
def audit(actor: Actor) -> Response:
    project_arg = request.args.get("project") or None
    if project_arg is not None:
        project_arg = project_name(project_arg)
    found = services().manager.audit(actor, project_arg, request.args.get("since") or None,
                                     label="since")
    first = next(found, None)  # a bad ?since= fails here, before the 200 is sent
    return Response(_lines(first, found), content_type=JSON_LINES)


def _lines(first: Any, rest: Iterator[Any]) -> Iterator[bytes]:
    if first is not None:
        yield first.line + b"\n"
    for event in rest:
        yield event.line + b"\n"


def _file(filename: str) -> str:
    """A file name as the API takes it: one path segment, never a ``==`` spec."""
    if "==" in filename or "/" in filename:
        raise NotFoundError(f"no file named {filename}")
    return filename
