"""The welcome page, and /health (as the simple API decides it)."""

from __future__ import annotations

from flask import Blueprint, Response, render_template, request

from pypid import __version__
from pypid.simple.pep691 import API_VERSION
from pypid.web.replies import response
from pypid.web.simple_api import simple_request
from pypid.web.state import services

bp = Blueprint("home", __name__)


@bp.route("/", methods=["GET", "HEAD"])
def welcome() -> Response:
    svc = services()
    index, config = svc.index, svc.config
    html = render_template(
        "welcome.html", projects=index.project_count(), files=index.file_count(),
        index_url=request.url_root + "simple/", upload_url=request.url_root,
        host=request.host,
        upload_login="upload" in config.auth.protect,
        read_login=bool({"download", "list"} & set(config.auth.protect)),
        upstream_mode=config.upstream.mode, upstream_url=config.upstream.url,
        api_version=API_VERSION, version=__version__, base=request.url_root.rstrip("/"))
    return Response(html, mimetype="text/html")


@bp.route("/health", methods=["GET", "HEAD"])
def health() -> Response:
    simple = services().simple
    reply = simple.decide(simple_request())
    return response(reply if reply is not None else simple.unknown(simple_request()))
