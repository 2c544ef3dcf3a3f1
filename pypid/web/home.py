"""The welcome page and /health."""

from __future__ import annotations

import json

from flask import Blueprint, Response, render_template, request

from pypid import __version__
from pypid.simple.pep691 import API_VERSION
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
        api_version=API_VERSION, version=__version__)
    return Response(html, mimetype="text/html")


@bp.route("/health", methods=["GET", "HEAD"])
def health() -> Response:
    index = services().index
    problem = index.root.check_readable()
    body: dict[str, object]
    if problem is None:
        body = {"status": "ok", "projects": index.project_count(), "files": index.file_count(),
                "version": __version__}
    else:
        body = {"status": "unavailable", "reason": problem, "version": __version__}
    return Response(json.dumps(body) + "\n", status=200 if problem is None else 503,
                    mimetype="application/json", headers={"Cache-Control": "no-store"})
