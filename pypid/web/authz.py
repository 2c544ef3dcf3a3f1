"""Who may do what in the Flask app's own pages (the welcome page, uploads, any 404).

The simple API checks its own logins (``pypid.simple.core``); both use the same
``Logins``, so a login means the same everywhere. 401 for no or a wrong login,
403 for a valid login without the right.
"""

from __future__ import annotations

import logging
from urllib.parse import urlsplit

from flask import Flask, abort, g, request

from pypid.simple.reply import Kind, Reply, text
from pypid.web.replies import response
from pypid.web.state import services

log = logging.getLogger("pypid.auth")

# The action of each endpoint; any other (a page that does not exist too) is "list".
# The simple API's views check their own logins (pypid.simple.core), and so does the
# management API (pypid.web.api: a change needs a login whatever ``protect`` says);
# /health is open.
ACTIONS = {"upload.upload": "upload"}
SELF_CHECKED = frozenset(("simple.simple_api", "home.health"))


SAFE_METHODS = frozenset(("GET", "HEAD", "OPTIONS"))


def register(app: Flask) -> None:
    app.before_request(refuse_cross_site)
    app.before_request(require_login)


def refuse_cross_site() -> None:
    """A change a browser sends for another site is refused (403): browsers attach the
    Basic login they remember to any site's form posting here, so without this a page
    elsewhere could upload or remove in the name of whoever visits it. Publishers,
    pip and curl send neither header."""
    if request.method in SAFE_METHODS:
        return
    site = request.headers.get("Sec-Fetch-Site")
    origin = request.headers.get("Origin")
    foreign = site == "cross-site" or (
        origin is not None and urlsplit(origin).netloc.lower() != request.host.lower())
    if foreign:
        log.warning("refused a cross-site %s %s from %s (Origin %s)", request.method,
                    request.path, request.remote_addr, origin or "-")
        abort(response(text(Kind.DENIED, 403, "cross-site requests may not change this "
                            "index", reason=True)))


def require_login() -> None:
    """Stop the request with 401 unless its action is open or the login is good."""
    endpoint = request.endpoint or ""
    if endpoint in SELF_CHECKED or endpoint.startswith("api."):
        return
    action = ACTIONS.get(endpoint, "list")
    logins = services().logins
    if not logins.needed(action):
        return
    login = logins.authenticate(action, request.headers.get("Authorization"),
                                request.remote_addr or "-")
    if isinstance(login, Reply):
        abort(response(login))
    g.user = login


def warn_at_start(protect: tuple[str, ...], problem: str | None) -> None:
    """One start-up line when uploads are open, or protected but impossible."""
    if "upload" not in protect:
        log.warning('uploads are open to anyone ([auth] protect does not list "upload")')
    elif problem:
        log.warning("uploads need a login, but %s", problem)
