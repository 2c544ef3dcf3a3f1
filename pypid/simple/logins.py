"""Who is asking: the Basic login of a request, checked against the htpasswd file.

One place for every transport and every protected action (list, download,
upload): 401 with ``WWW-Authenticate`` for no or a wrong login (pip and uv only
look up stored credentials after a 401). Passwords are never logged.
"""

from __future__ import annotations

import base64
import binascii
import logging

from pypid.auth import Htpasswd, LoginThrottledError
from pypid.metrics import tally
from pypid.simple.reply import REALM, Kind, Reply, text

log = logging.getLogger("pypid.auth")

MAX_AUTHORIZATION = 4096  # longer than any user name and password we accept, encoded


def basic_credentials(header: str | None) -> tuple[str, str] | None:
    """User and password of ``Authorization: Basic ...``, or None when there are none.

    >>> basic_credentials("Basic YWxpY2U6czNjcjN0"), basic_credentials("Bearer x")
    (('alice', 's3cr3t'), None)
    >>> basic_credentials("Basic !!!"), basic_credentials("Basic bm9jb2xvbg==")
    (None, None)
    """
    if not header or len(header) > MAX_AUTHORIZATION:
        return None
    scheme, _, encoded = header.strip().partition(" ")
    if scheme.lower() != "basic":
        return None
    try:
        decoded = base64.b64decode(encoded.strip(), validate=True).decode("utf-8")
    except (binascii.Error, ValueError):
        return None
    user, colon, password = decoded.partition(":")
    if not colon or not user:
        return None
    return user, password


class Logins:
    """Checks logins for the actions ``protect`` names."""

    def __init__(self, htpasswd: Htpasswd, protect: tuple[str, ...]) -> None:
        self.htpasswd = htpasswd
        self.protect = frozenset(protect)

    def needed(self, action: str) -> bool:
        return action in self.protect

    def authenticate(self, action: str, authorization: str | None,
                     client: str) -> str | Reply:
        """The logged-in user, or the 401 (429 after too many failures) that refuses it.

        ``client`` is the address failures are counted against (behind a trusted
        proxy, the client the proxy names)."""
        credentials = basic_credentials(authorization)
        if credentials is None:
            return self.refusal(action, "a login is needed")
        user, password = credentials
        try:
            if self.htpasswd.check(user, password, client=client):
                return user
        except LoginThrottledError as exc:
            return text(Kind.DENIED, 429, str(exc), reason=True,
                        headers=[("Retry-After", str(exc.retry_after))])
        problem = self.htpasswd.problem()
        if problem:  # the file, not the login, is what is wrong
            log.warning("login for %r from %s refused: %s", user, client, problem)
            return self.refusal(action, f"no logins are possible on the server ({problem})")
        log.warning("failed login for %r from %s", user, client)
        tally.add("login_failures")
        return self.refusal(action, "wrong user name or password")

    @staticmethod
    def refusal(action: str, message: str) -> Reply:
        return text(Kind.DENIED, 401, f"{action} needs a login: {message}", reason=True,
                    headers=[("WWW-Authenticate", REALM)])
