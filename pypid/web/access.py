"""Who may do what: ``[auth].protect`` decides which actions need a login.

401 with ``WWW-Authenticate`` for no or a wrong login (pip and uv only look up
credentials after a 401), 403 for a valid login without the right. Passwords
and Authorization headers are never logged.
"""

from __future__ import annotations

import logging

from flask import Flask, abort, g, request

from pypid.auth import LoginThrottledError
from pypid.web import errors
from pypid.web.state import services

log = logging.getLogger("pypid.auth")

REALM = 'Basic realm="pypid", charset="UTF-8"'
# Which action each endpoint performs; endpoints not listed are always open (/health).
ACTIONS = {
    "home.welcome": "list",
    "simple.project_list": "list",
    "simple.index_without_slash": "list",
    "simple.project_detail": "list",
    "simple.project_without_slash": "list",
    "files.package_file": "download",
    "upload.upload": "upload",
}


def register(app: Flask) -> None:
    app.before_request(require_login)


def require_login() -> None:
    """Stop the request with 401/403 unless its action is open or the login is good."""
    action = ACTIONS.get(request.endpoint or "")
    svc = services()
    if action is None or action not in svc.config.auth.protect:
        return
    try:
        credentials = request.authorization
    except ValueError:  # Werkzeug's base64 decoding raises on a non-ASCII Basic token
        credentials = None
    if credentials is None or not credentials.username:
        _deny(action, "a login is needed")
    username = credentials.username or ""
    password = credentials.password or ""
    try:  # the client: request.remote_addr is the proxy's X-Forwarded-For when trusted
        good = svc.htpasswd.check(username, password, client=request.remote_addr or "")
    except LoginThrottledError as exc:
        abort(errors.plain_error(429, str(exc), reason=True,
                                 headers={"Retry-After": str(exc.retry_after)}))
    if not good:
        problem = svc.htpasswd.problem()
        log.warning("failed login for %r from %s", username, request.remote_addr)
        if problem:
            _deny(action, f"no logins are possible ({problem}); "
                  "run `pypid user add NAME` on the server")
        _deny(action, "wrong user name or password")
    if not may(username, action):
        abort(errors.plain_error(403, f"{username} may not {action} here", reason=True))
    g.user = username


def may(username: str, action: str) -> bool:
    """Every valid user has every right today; per-user rights would go here."""
    return True


def _deny(action: str, message: str) -> None:
    text = f"{action} needs a login: {message}"
    abort(errors.plain_error(401, text, reason=True, headers={"WWW-Authenticate": REALM}))


def warn_at_start(protect: tuple[str, ...], problem: str | None) -> None:
    """One start-up line when uploads are open, or protected but impossible."""
    if "upload" not in protect:
        log.warning('uploads are open to anyone ([auth] protect does not list "upload")')
    elif problem:
        log.warning("uploads need a login, but %s: run `pypid user add NAME`", problem)
