"""WSGI middleware: believe X-Forwarded-* only from trusted proxies; mount under url_prefix."""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable
from typing import TYPE_CHECKING, Any

from werkzeug.middleware.proxy_fix import ProxyFix

if TYPE_CHECKING:
    from _typeshed.wsgi import StartResponse, WSGIApplication, WSGIEnvironment

_FORWARDED = ("HTTP_X_FORWARDED_FOR", "HTTP_X_FORWARDED_PROTO", "HTTP_X_FORWARDED_HOST",
              "HTTP_X_FORWARDED_PORT", "HTTP_X_FORWARDED_PREFIX", "HTTP_FORWARDED")


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
        if self.networks and self.trusted(environ.get("REMOTE_ADDR", "")):
            return self.fixed(environ, start_response)
        for key in _FORWARDED:
            environ.pop(key, None)
        return self.app(environ, start_response)


class Prefix:
    """Serve ``app`` under ``prefix`` only; anything else is a plain 404."""

    def __init__(self, app: WSGIApplication, prefix: str) -> None:
        self.app = app
        self.prefix = prefix

    def __call__(self, environ: WSGIEnvironment, start_response: StartResponse) -> Iterable[bytes]:
        path: str = environ.get("PATH_INFO", "")
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


def wrap(app: Any, prefix: str, trusted: Iterable[str]) -> WSGIApplication:
    """The WSGI stack around the Flask app: proxies first, then the prefix."""
    inner = Prefix(app, prefix) if prefix else app
    return TrustedProxies(inner, trusted)
