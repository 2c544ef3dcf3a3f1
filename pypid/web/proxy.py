"""WSGI middleware: the request's origin and prefix, believed only as far as they can be.

``X-Forwarded-*`` is applied only for requests from ``trusted_proxies``, and only
in a plain form (a prefix must be one absolute path, a host a host name or
address with an optional port); the ``SCRIPT_NAME`` a client may send as a
header (gunicorn before 22 believes it) is undone; a ``Host`` that is not a
plain host name is replaced by the server's own address. Then the app is
mounted under ``url_prefix``.
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Iterable
from typing import TYPE_CHECKING, Any

from werkzeug.middleware.proxy_fix import ProxyFix

from pypid.simple.logins import Logins
from pypid.simple.reply import Reply

if TYPE_CHECKING:
    from _typeshed.wsgi import StartResponse, WSGIApplication, WSGIEnvironment

_FORWARDED = ("HTTP_X_FORWARDED_FOR", "HTTP_X_FORWARDED_PROTO", "HTTP_X_FORWARDED_HOST",
              "HTTP_X_FORWARDED_PORT", "HTTP_X_FORWARDED_PREFIX", "HTTP_FORWARDED")
_SEGMENT = r"/[A-Za-z0-9._~!$&'()*+,;=:@-]+"
PLAIN_PREFIX = re.compile(rf"(?:{_SEGMENT})+/?")
PLAIN_HOST = re.compile(r"(?:[A-Za-z0-9](?:[A-Za-z0-9.-]{0,252})|\[[0-9A-Fa-f:.]{2,45}\])"
                        r"(?::[0-9]{1,5})?")
_PLAIN = {
    "HTTP_X_FORWARDED_PREFIX": PLAIN_PREFIX,
    "HTTP_X_FORWARDED_HOST": PLAIN_HOST,
    "HTTP_X_FORWARDED_PROTO": re.compile(r"https?"),
    "HTTP_X_FORWARDED_PORT": re.compile(r"[0-9]{1,5}"),
}


def plain_forwarded(name: str, value: str) -> bool:
    """Is a forwarded header's (last) value in the one plain form pypid accepts?

    >>> plain_forwarded("HTTP_X_FORWARDED_PREFIX", "/pypi/internal")
    True
    >>> [plain_forwarded("HTTP_X_FORWARDED_PREFIX", v) for v in ("//evil.example", "/a//", "x")]
    [False, False, False]
    >>> plain_forwarded("HTTP_X_FORWARDED_HOST", "pypi.corp:8443"), plain_forwarded(
    ...     "HTTP_X_FORWARDED_HOST", "evil.example/x")
    (True, False)
    """
    pattern = _PLAIN.get(name)
    if pattern is None:
        return True
    last = value.rsplit(",", 1)[-1].strip()  # ProxyFix believes one proxy: the last value
    return pattern.fullmatch(last) is not None


class TrustedProxies:
    """Apply ProxyFix for requests from ``networks``; strip the headers from everyone else."""

    def __init__(self, app: WSGIApplication, networks: Iterable[str]) -> None:
        self.app = app
        self.networks = [ipaddress.ip_network(n, strict=False) for n in networks]
        self.fixed = ProxyFix(app, x_for=1, x_proto=1, x_host=1, x_port=1, x_prefix=1)
        self._verdicts: dict[str, bool] = {}

    def trusted(self, address: str) -> bool:
        verdict = self._verdicts.get(address)
        if verdict is None:
            try:
                ip = ipaddress.ip_address(address.split("%", 1)[0])
            except ValueError:
                verdict = False
            else:
                if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped:
                    ip = ip.ipv4_mapped
                verdict = any(ip in net for net in self.networks)
            if len(self._verdicts) < 10_000:
                self._verdicts[address] = verdict
        return verdict

    def __call__(self, environ: WSGIEnvironment, start_response: StartResponse) -> Iterable[bytes]:
        # A SCRIPT_NAME header (gunicorn < 22 takes it from any client) is undone: the
        # path is the path the client asked for, and the prefix is ours to set.
        script_name = environ.get("SCRIPT_NAME", "")
        if script_name:
            environ["PATH_INFO"] = script_name + environ.get("PATH_INFO", "")
            environ["SCRIPT_NAME"] = ""
        if not PLAIN_HOST.fullmatch(environ.get("HTTP_HOST", "")):
            environ["HTTP_HOST"] = _server_address(environ)
        trusted = self.networks and self.trusted(environ.get("REMOTE_ADDR", ""))
        for key in _FORWARDED:
            value = environ.get(key)
            if value is not None and not (trusted and plain_forwarded(key, value)):
                del environ[key]
        return (self.fixed if trusted else self.app)(environ, start_response)


def _server_address(environ: WSGIEnvironment) -> str:
    host = environ.get("SERVER_NAME", "localhost")
    if ":" in host and not host.startswith("["):
        host = f"[{host}]"
    return f"{host}:{environ.get('SERVER_PORT', '80')}"


class Prefix:
    """Serve ``app`` under ``prefix`` only; anything else is a plain 404 (a 401 first
    when ``list`` needs a login: no URL answers anything else without one)."""

    def __init__(self, app: WSGIApplication, prefix: str, logins: Logins) -> None:
        self.app = app
        self.prefix = prefix
        self.logins = logins

    def __call__(self, environ: WSGIEnvironment, start_response: StartResponse) -> Iterable[bytes]:
        path: str = environ.get("PATH_INFO", "")
        if path != self.prefix and not path.startswith(self.prefix + "/") and \
                self.logins.needed("list"):
            login = self.logins.authenticate("list", environ.get("HTTP_AUTHORIZATION"),
                                             environ.get("REMOTE_ADDR", "-"))
            if isinstance(login, Reply):
                start_response(login.status_line, list(login.headers))
                return [login.body]
        if path == self.prefix:
            location = environ.get("SCRIPT_NAME", "") + self.prefix + "/"
            start_response("301 Moved Permanently", [("Location", location),
                                                      ("Content-Type", "text/plain")])
            return [b"Moved to " + location.encode("latin-1", "replace") + b"\n"]
        if not path.startswith(self.prefix + "/"):
            body = f"Not Found: this index is served under {self.prefix}/\n".encode()
            start_response("404 Not Found", [("Content-Type", "text/plain"),
                                             ("Content-Length", str(len(body)))])
            return [body]
        environ["SCRIPT_NAME"] = environ.get("SCRIPT_NAME", "") + self.prefix
        environ["PATH_INFO"] = path[len(self.prefix):]
        return self.app(environ, start_response)


def wrap(app: Any, prefix: str, trusted: Iterable[str], logins: Logins) -> WSGIApplication:
    """The WSGI stack around the Flask app: proxies first, then the prefix."""
    inner = Prefix(app, prefix, logins) if prefix else app
    return TrustedProxies(inner, trusted)
