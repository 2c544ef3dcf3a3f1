"""The simple API's Flask adapter: /simple..., /packages/... and the web UI's /projects/ and
/project/... as ``SimpleAPI`` decides them.

Nothing is decided here: the request's parts go in, the ``Reply`` comes out as
a response with exactly its status, headers and body (a file part is sent
with sendfile when the server has it).
"""

from __future__ import annotations

from flask import Blueprint, Response, request

from pypid.simple.core import SimpleRequest
from pypid.simple.reply import Kind, text
from pypid.web.replies import response
from pypid.web.state import services

bp = Blueprint("simple", __name__)
READS = ["GET", "HEAD"]


@bp.route("/simple", methods=READS)
@bp.route("/simple/", methods=READS)
@bp.route("/simple/<path:_rest>", methods=READS)
@bp.route("/packages/<path:_rest>", methods=READS)
@bp.route("/projects", methods=READS)
@bp.route("/projects/", methods=READS)
@bp.route("/project/<path:_rest>", methods=READS)
def simple_api(_rest: str = "") -> Response:
    simple = services().simple
    req = simple_request()
    return response(simple.decide(req) or simple.unknown(req))


@bp.route("/simple/", methods=["POST", "PUT"])
@bp.route("/simple/<path:_rest>", methods=["POST", "PUT"])
def upload_to_wrong_url(_rest: str = "") -> Response:
    root = request.script_root + "/"
    return response(text(
        Kind.WRONG_METHOD, 405, f"This is the simple index; uploads go to {root} (for example "
        f"twine upload --repository-url {request.host_url.rstrip('/')}{root} dist/*)",
        reason=True, headers=[("Allow", "GET, HEAD")]))


def simple_request() -> SimpleRequest:
    return SimpleRequest(
        method=request.method, path=_path_info(),
        query=request.query_string.decode("latin-1"), script_root=request.script_root,
        headers=request.headers,  # Werkzeug's: get() by any case
        client=request.remote_addr or "-", origin=request.host_url.rstrip("/"))


def _path_info() -> str:
    """PATH_INFO as sent, decoded as UTF-8 (``request.path`` would merge leading slashes)."""
    raw: str = request.environ.get("PATH_INFO", "")
    return raw.encode("latin-1", "replace").decode("utf-8", "replace")
