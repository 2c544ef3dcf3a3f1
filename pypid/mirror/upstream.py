"""The upstream client: GET a page or a file over http.client, bounded in time and size.

``timeout`` is "no progress for N seconds": the socket timeout, which applies to
the connect and to every read. Redirects are followed only to upstream's own
host or one of ``file_hosts``. Requests go through the proxy the environment names
(``https_proxy``, ``http_proxy``, ``no_proxy``: ``pypid.mirror.proxies``), read once.
Whether upstream answered lately is kept in two marker files under the cache root, so
that every worker's ``/health`` agrees.
"""

from __future__ import annotations

import http.client
import logging
import os
import ssl
import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import SplitResult, urljoin, urlsplit

from pypid import __version__
from pypid.growing import DownloadError
from pypid.metrics import tally
from pypid.mirror.proxies import Proxy, ProxyError, proxy_for, proxy_settings

log = logging.getLogger("pypid.mirror")

MAX_PAGE_BYTES = 64 * 1024 * 1024
MAX_REDIRECTS = 4
PAGE_ACCEPT = "application/vnd.pypi.simple.v1+json, text/html;q=0.1"
USER_AGENT = f"pypid/{__version__} (mirror)"
_OK, _FAILED = ".upstream-ok", ".upstream-failed"


class UpstreamError(DownloadError):
    """Upstream could not be used; ``status`` is the client's answer (502; 504: a timeout)."""


class ForeignRedirect(UpstreamError):
    """Upstream redirected to a host that is neither its own nor one of ``file_hosts``."""


@dataclass
class Fetched:
    """An upstream answer whose body is still to be read (``response``), or was (``body``)."""

    status: int
    url: str
    headers: http.client.HTTPMessage
    response: http.client.HTTPResponse
    body: bytes = b""

    def header(self, name: str) -> str:
        return self.headers.get(name, "") or ""


class Upstream:
    """One upstream index, its allowed file hosts, and the record of its last answers."""

    def __init__(self, url: str, *, timeout: float, file_hosts: tuple[str, ...],
                 state_dir: Path, environ: Mapping[str, str] | None = None) -> None:
        self.url = url
        self.timeout = timeout
        self.hosts = frozenset((urlsplit(url).hostname or "", *file_hosts))
        self._state_dir = state_dir
        self._ssl: ssl.SSLContext | None = None
        self._proxies = proxy_settings(os.environ if environ is None else environ)
        parts = urlsplit(url)
        try:  # said once at start, so that an administrator sees the drop-in took
            proxy = proxy_for(parts.scheme, parts.netloc, self._proxies)
        except ProxyError as exc:
            log.warning("mirror: %s; every upstream request will fail", exc)
        else:
            if proxy is not None:
                log.info("mirror: upstream requests go through proxy %s", proxy.where)

    def page(self, project: str, etag: str = "", last_modified: str = "") -> Fetched:
        """GET ``project``'s page; a 304 when the validators still hold. The body is read
        (at most MAX_PAGE_BYTES) unless the answer is a 304 or 404."""
        headers = {"Accept": PAGE_ACCEPT}
        if etag:
            headers["If-None-Match"] = etag
        if last_modified:
            headers["If-Modified-Since"] = last_modified
        fetched = self.open(self.url + project + "/", headers)
        try:
            if fetched.status == 200:
                fetched.body = read_bounded(fetched.response, MAX_PAGE_BYTES, self.timeout)
            elif fetched.status not in (304, 404):
                raise UpstreamError(f"upstream answered {fetched.status} for {project}")
        finally:
            fetched.response.close()
        return fetched

    def open(self, url: str, headers: dict[str, str] | None = None) -> Fetched:
        """GET ``url`` and return once the head has arrived; the caller reads and closes.

        Raises UpstreamError (502; 504 when upstream made no progress for ``timeout``).
        """
        for _ in range(MAX_REDIRECTS + 1):
            parts = urlsplit(url)
            if parts.scheme not in ("http", "https") or parts.hostname not in self.hosts:
                raise ForeignRedirect(f"upstream redirected to {parts.hostname or url!r}, "
                                      "which is neither upstream nor one of upstream.file_hosts")
            try:
                proxy = proxy_for(parts.scheme, parts.netloc, self._proxies)
            except ProxyError as exc:
                raise UpstreamError(str(exc)) from None
            via = f" through proxy {proxy.where}" if proxy else ""
            try:
                response = self._get(parts, proxy, headers)
            except TimeoutError:
                self.note(False)
                tally.add("upstream", "timeout")
                raise UpstreamError(f"upstream {parts.hostname}{via} made no progress in "
                                    f"{self.timeout:g}s", 504) from None
            except (OSError, http.client.HTTPException) as exc:
                self.note(False)
                tally.add("upstream", "error")
                raise UpstreamError(f"upstream {parts.hostname} unreachable{via}: "
                                    f"{exc or type(exc).__name__}") from None
            if proxy is not None and response.status == 407:  # an http target's proxy
                response.close()
                self.note(False)
                tally.add("upstream", "error")
                raise UpstreamError(f"proxy {proxy.where} wants a login (407): give it in "
                                    f"{parts.scheme}_proxy as http://USER:PASSWORD@HOST:PORT")
            if response.status in (301, 302, 303, 307, 308):
                location = response.getheader("Location") or ""
                response.close()
                url = urljoin(url, location)
                continue
            self.note(response.status < 500)
            tally.add("upstream", "error" if response.status >= 500 else
                      "not_modified" if response.status == 304 else "ok")
            if response.status < 500:
                tally.latest(tally.LATEST, time.time())
            if response.status >= 500:
                response.close()
                raise UpstreamError(f"upstream answered {response.status} for {parts.path}")
            return Fetched(response.status, url, response.headers, response)
        raise UpstreamError(f"upstream redirected more than {MAX_REDIRECTS} times")

    def _get(self, parts: SplitResult, proxy: Proxy | None,
             headers: dict[str, str] | None) -> http.client.HTTPResponse:
        """GET ``parts`` directly, through a proxy's CONNECT tunnel (https: the TLS
        session and its certificate check are the target's), or as an absolute-form
        request to the proxy (http)."""
        send = {"User-Agent": USER_AGENT, "Connection": "close", **(headers or {})}
        target = _target(parts)
        conn: http.client.HTTPConnection
        if parts.scheme == "https":
            if self._ssl is None:
                self._ssl = ssl.create_default_context()
            if proxy is None:
                conn = http.client.HTTPSConnection(parts.netloc, timeout=self.timeout,
                                                   context=self._ssl)
            else:
                conn = http.client.HTTPSConnection(proxy.host, proxy.port,
                                                   timeout=self.timeout, context=self._ssl)
                conn.set_tunnel(parts.netloc, headers=proxy.headers())
        elif proxy is None:
            conn = http.client.HTTPConnection(parts.netloc, timeout=self.timeout)
        else:
            conn = http.client.HTTPConnection(proxy.host, proxy.port, timeout=self.timeout)
            target = f"http://{parts.netloc}{target}"
            send.update(proxy.headers())
        conn.request("GET", target, headers=send)
        response = conn.getresponse()
        # Not conn.close(): on a keep-alive answer (a server that ignores "Connection:
        # close") it closes the response too, and its body reads as empty. Closing the
        # socket object alone defers the real close until the response's file is closed.
        sock, conn.sock = conn.sock, None
        if sock is not None:
            sock.close()
        return response

    # -- reachability, shared by the workers through two marker files

    def note(self, ok: bool) -> None:
        """Record that upstream answered (``ok``) or failed now. (File times are too coarse
        to compare two markers: a success removes the failure's.)"""
        marker = self._state_dir / (_OK if ok else _FAILED)
        try:
            marker.touch()
            if ok:
                (self._state_dir / _FAILED).unlink(missing_ok=True)
        except FileNotFoundError:
            try:
                self._state_dir.mkdir(parents=True, exist_ok=True)
                marker.touch()
            except OSError:
                pass
        except OSError:
            pass

    def health(self) -> dict[str, object]:
        """``{"reachable": bool, "last_success": TIME|None}`` as /health reports it."""
        ok = _mtime(self._state_dir / _OK)
        failed = _mtime(self._state_dir / _FAILED)
        last = None if ok is None else time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(ok))
        return {"reachable": ok is not None and failed is None, "last_success": last}


def read_bounded(response: http.client.HTTPResponse, limit: int, timeout: float) -> bytes:
    """The whole body, refused past ``limit`` bytes (upstream may be hostile)."""
    chunks, total = [], 0
    try:
        while chunk := response.read1(64 * 1024):
            total += len(chunk)
            if total > limit:
                raise UpstreamError(f"upstream's answer is larger than {limit} bytes")
            chunks.append(chunk)
    except TimeoutError:
        raise UpstreamError(f"upstream made no progress in {timeout:g}s", 504) from None
    except (OSError, http.client.HTTPException) as exc:
        raise UpstreamError(f"upstream's answer broke off: {exc or type(exc).__name__}") from None
    return b"".join(chunks)


def _target(parts: SplitResult) -> str:
    path = parts.path or "/"
    return path + ("?" + parts.query if parts.query else "")


def _mtime(path: Path) -> float | None:
    try:
        return os.stat(path).st_mtime
    except OSError:
        return None
