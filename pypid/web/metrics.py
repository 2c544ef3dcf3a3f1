"""GET /metrics: the whole server's totals, for the addresses in ``metrics.allow``."""

from __future__ import annotations

import ipaddress
from functools import lru_cache

from flask import Blueprint, Response, request

from pypid import __version__
from pypid.metrics import exposition, store, tally
from pypid.web import errors
from pypid.web.state import services

bp = Blueprint("metrics", __name__)


@lru_cache(maxsize=8)
def _networks(allow: tuple[str, ...]) -> tuple[ipaddress.IPv4Network | ipaddress.IPv6Network,
                                               ...]:
    return tuple(ipaddress.ip_network(item, strict=False) for item in allow)


def allowed(address: str, allow: tuple[str, ...]) -> bool:
    """Is ``address`` in one of the ``allow`` networks? (An IPv4-mapped IPv6 address
    counts as its IPv4 address.)

    >>> allowed("127.0.0.1", ("127.0.0.1", "::1")), allowed("10.1.2.3", ("10.0.0.0/8",))
    (True, True)
    >>> allowed("::ffff:127.0.0.1", ("127.0.0.1",)), allowed("192.0.2.1", ())
    (True, False)
    """
    try:
        ip = ipaddress.ip_address(address.split("%", 1)[0])
    except ValueError:
        return False
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped:
        ip = ip.ipv4_mapped
    return any(ip in net for net in _networks(allow))


@bp.route("/metrics", methods=["GET", "HEAD"])
def metrics() -> Response:
    svc = services()
    # Behind a trusted proxy, remote_addr is the client the proxy names (pypid.web.proxy).
    if not allowed(request.remote_addr or "", svc.config.metrics.allow):
        return errors.plain_error(403, "/metrics is not open to this address "
                                       "(metrics.allow)")
    flusher = store.current()
    folder = store.folder_for(svc.index.root.cache_dir)
    counts = folder.read(flusher.file if flusher else None, tally.snapshot())
    index = svc.index
    gauges = {"projects": index.project_count(), "files": index.file_count(),
              "stored_bytes": index.stored_bytes()}
    return Response(exposition.render(counts, gauges, __version__),
                    content_type=exposition.CONTENT_TYPE)
