"""Who may do what in the Flask app's own pages (the welcome page, uploads).

The simple API checks its own logins (``pypid.simple.core``); both use the same
``Logins``, so a login means the same everywhere. 401 for no or a wrong login,
403 for a valid login without the right.
"""

from __future__ import annotations

import logging

from flask import Flask, abort, g, request

from pypid.simple.reply import Reply
from pypid.web.replies import response
from pypid.web.state import services

log = logging.getLogger("pypid.auth")

# Which action each endpoint performs; endpoints not listed decide for themselves
# (the simple API) or are always open (/health).
ACTIONS = {
    "home.welcome": "list",
    "upload.upload": "upload",
}


def register(app: Flask) -> None:
    app.before_request(require_login)


def require_login() -> None:
    """Stop the request with 401 unless its action is open or the login is good."""
    action = ACTIONS.get(request.endpoint or "")
    logins = services().logins
    if action is None or not logins.needed(action):
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
        log.warning("uploads need a login, but %s: run `pypid user add NAME`", problem)
