"""The simple repository API: /simple/ and /simple/<project>/ (PEP 503, 629, 691, 700, 658/714)."""

from __future__ import annotations

from urllib.parse import quote

from flask import Blueprint, Response, abort, redirect, request

from pypid.distfile import is_normalized, is_valid_project_name, normalize
from pypid.simple import pep691
from pypid.simple.answers import page_answer
from pypid.simple.negotiate import OFFERS, negotiate
from pypid.simple.pagecache import INDEX, Page
from pypid.simple.render import render
from pypid.web import errors
from pypid.web.state import services

bp = Blueprint("simple", __name__)


@bp.route("/simple", methods=["GET", "HEAD"])
def index_without_slash() -> Response:
    return _moved("/simple/")


@bp.route("/simple/", methods=["GET", "HEAD"])
def project_list() -> Response:
    media = _negotiated()
    svc = services()
    page = svc.pages.get(INDEX, media, svc.index.projects_serial,
                         lambda: render(media, pep691.index_page(svc.index)))
    return _page_response(page, media)


@bp.route("/simple/<project>", methods=["GET", "HEAD"])
def project_without_slash(project: str) -> Response:
    return _project_redirect_or_404(project, always=True)


@bp.route("/simple/<project>/", methods=["GET", "HEAD"])
def project_detail(project: str) -> Response:
    if not is_normalized(project):
        return _project_redirect_or_404(project)
    media = _negotiated()
    svc = services()
    serial = svc.index.project_serial(project)
    if serial is None:
        return _unknown_project(project)

    def build() -> bytes:
        data = pep691.project_page(svc.index, project)
        if data is None:  # removed between the two lookups
            abort(404, description=f"no project named {project!r} here")
        return render(media, data)

    page = svc.pages.get(media, project, serial, build)
    return _page_response(page, media)


@bp.route("/simple/", methods=["POST", "PUT"])
@bp.route("/simple/<path:_rest>", methods=["GET", "HEAD", "POST", "PUT"])
def upload_to_wrong_url(_rest: str = "") -> Response:
    if request.method in ("GET", "HEAD"):  # deeper than /simple/<project>/
        abort(404, description="no such page")
    root = request.script_root + "/"
    return errors.plain_error(
        405, f"This is the simple index; uploads go to {root} (for example "
        f"twine upload --repository-url {request.host_url.rstrip('/')}{root} dist/*)",
        reason=True, headers={"Allow": "GET, HEAD"})


def _negotiated() -> str:
    media = negotiate(request.headers.get("Accept"), request.args.get("format"))
    if media is None:
        response = errors.plain_error(
            406, "no acceptable format; this index offers " + ", ".join(OFFERS))
        response.headers["Vary"] = "Accept"
        abort(response)
    return media


def _page_response(page: Page, media: str) -> Response:
    status, headers, body = page_answer(page, media, request.headers.get("Accept-Encoding"),
                                        request.headers.get("If-None-Match"))
    return Response(body, status=status, headers=headers)


def _project_redirect_or_404(project: str, always: bool = False) -> Response:
    if not is_valid_project_name(project):
        abort(404, description="not a valid project name")
    canonical = normalize(project)
    if not always and canonical == project:
        abort(404)
    return _moved(f"/simple/{canonical}/")


def _moved(path: str) -> Response:
    location = request.script_root + quote(path)
    query = request.query_string.decode("latin-1")
    if query:
        location += "?" + quote(query, safe="=&+%;,/:")
    return redirect(location, code=301)


def _unknown_project(project: str) -> Response:
    upstream = services().config.upstream
    if upstream.mode == "redirect":
        return redirect(upstream.url + project + "/", code=302)
    abort(404, description=f"no project named {project!r} here")
