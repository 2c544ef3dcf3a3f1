"""Which proxy an upstream request goes through: the standard environment, as curl, pip and
uv read it (``https_proxy`` for https URLs, ``http_proxy`` for http ones, ``no_proxy``;
lower case first, then upper case). Pure: the variables come in as a mapping.

Credentials in a proxy URL (``http://user:pass@proxy:3128``) become a
``Proxy-Authorization`` header; ``Proxy.where`` (host and port) is all that may be logged.
"""

from __future__ import annotations

import base64
from collections.abc import Mapping
from dataclasses import dataclass, field
from urllib.parse import unquote, urlsplit
from urllib.request import proxy_bypass_environment


class ProxyError(ValueError):
    """A proxy variable that cannot be used; the message names the variable, never a
    password."""


@dataclass(frozen=True)
class Proxy:
    """An HTTP proxy: CONNECT tunnels for https targets, absolute-form GETs for http ones."""

    host: str
    port: int
    authorization: str | None = field(default=None, repr=False)  # never logged

    @property
    def where(self) -> str:
        return f"{self.host}:{self.port}"

    def headers(self) -> dict[str, str]:
        return {"Proxy-Authorization": self.authorization} if self.authorization else {}


def proxy_settings(environ: Mapping[str, str]) -> dict[str, str]:
    """``{"http": URL, "https": URL, "no": hosts}`` from the environment's proxy variables:
    the lower-case name wins, an empty one counts as unset.

    >>> proxy_settings({"HTTPS_PROXY": "http://p:3128", "no_proxy": "localhost"})
    {'https': 'http://p:3128', 'no': 'localhost'}
    """
    found: dict[str, str] = {}
    for key in ("http", "https", "no"):
        value = environ.get(f"{key}_proxy") or environ.get(f"{key.upper()}_PROXY")
        if value:
            found[key] = value.strip()
    return found


def proxy_for(scheme: str, netloc: str, settings: Mapping[str, str]) -> Proxy | None:
    """The proxy for a request to ``scheme://netloc``, or None (no variable for the scheme,
    or ``no_proxy`` names the host). Raises ProxyError for a variable that cannot work.

    >>> proxy_for("https", "pypi.org", {"https": "http://u:p@proxy:3128"}).where
    'proxy:3128'
    >>> proxy_for("https", "pypi.org", {"https": "proxy:3128", "no": ".pypi.org"}) is None
    True
    """
    url = settings.get(scheme)
    if not url:
        return None
    if settings.get("no") and proxy_bypass_environment(netloc, {"no": settings["no"]}):
        return None
    name = f"{scheme}_proxy"
    parts = urlsplit(url if "://" in url else "http://" + url)
    if parts.scheme != "http":
        raise ProxyError(f"{name}: a {parts.scheme}:// proxy is not supported; "
                         "give it as http://HOST:PORT")
    try:
        port = parts.port or 80
    except ValueError:
        raise ProxyError(f"{name}: the port is not a number") from None
    if not parts.hostname:
        raise ProxyError(f"{name}: no proxy host in it")
    authorization = None
    if parts.username is not None:
        login = f"{unquote(parts.username)}:{unquote(parts.password or '')}"
        authorization = "Basic " + base64.b64encode(login.encode()).decode("ascii")
    return Proxy(parts.hostname, port, authorization)
