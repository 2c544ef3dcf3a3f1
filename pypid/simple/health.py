"""``/health``: whether the index can read its root (and, as a mirror, reach upstream)."""

from __future__ import annotations

import json

from pypid import __version__
from pypid.index.model import ReadModel
from pypid.simple.logins import Logins
from pypid.simple.mirrored import MirrorReplies
from pypid.simple.reply import Kind, Reply


def health(index: ReadModel, logins: Logins, mirror: MirrorReplies | None, *,
           authorization: str | None, client: str, may_block: bool) -> Reply | None:
    """200 while the root can be read (and the index has read it), else 503. With
    ``list`` protected, only the status unless logged in: counts and paths are for those
    who may list."""
    root = index.root
    if root.is_remote and not may_block:
        return None  # asking a bucket may take a while: a thread's work
    problem = "; ".join(filter(None, (root.check_readable(), index.behind))) or None
    # A bucket away: pages and cached files are still served, changes are not.
    down = "degraded" if root.is_remote else "unavailable"
    body: dict[str, object] = {"status": "ok" if problem is None else down}
    detailed = not logins.needed("list")
    if not detailed and authorization:
        if not may_block:
            return None  # a password check: a thread's work
        login = logins.authenticate("list", authorization, client)
        detailed = not isinstance(login, Reply)
    if detailed:
        if problem is None:
            body.update(projects=index.project_count(), files=index.file_count())
        else:
            body["reason"] = problem
        body["version"] = __version__
        if mirror is not None:
            body["upstream"] = mirror.health()
    data = (json.dumps(body) + "\n").encode()
    return Reply(Kind.HEALTH, 200 if problem is None else 503, [
        ("Content-Type", "application/json"), ("Content-Length", str(len(data))),
        ("Cache-Control", "no-store")], data)
