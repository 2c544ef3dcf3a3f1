"""The services a pypid app is built from, assembled in one place (``assemble``)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from flask import current_app

from pypid.auth import Htpasswd
from pypid.config import Config
from pypid.index import Index
from pypid.manage import Manager, for_server
from pypid.mirror import Mirror
from pypid.simple.core import SimpleAPI
from pypid.simple.logins import Logins
from pypid.simple.mirrored import MirrorReplies
from pypid.simple.pagecache import PageCache
from pypid.simple.pagepack import PagePack
from pypid.simple.ui_pages import UIPages
from pypid.storage.select import open_storage
from pypid.web.ui import TemplateRenderer


@dataclass
class Services:
    """What the views (and pypid's worker) need, built once per app."""

    config: Config
    index: Index
    htpasswd: Htpasswd
    logins: Logins
    simple: SimpleAPI
    manager: Manager

    @property
    def pages(self) -> PageCache:
        return self.simple.pages


def assemble(config: Config, *, index: Index | None = None,
             progress: Callable[[int, int], None] | None = None) -> Services:
    """Everything an app serves from ``config``; indexes the root unless given ``index``."""
    if index is None:
        index = Index(open_storage(config))
        index.load(progress)
    htpasswd = Htpasswd(Path(config.auth.htpasswd))
    logins = Logins(htpasswd, config.auth.protect)
    # Pages go to a file beside the cache, unless the root cannot be written to.
    pack = PagePack(index.cache.directory) if index.cache.on_disk else None
    upstream = config.upstream
    pages = PageCache(pack=pack)
    mirror = (MirrorReplies(Mirror(upstream, index.root.mirror_shelf()), index, pages)
              if upstream.mode == "cache" else None)
    simple = SimpleAPI(index, pages, logins,
                       upstream_redirect=upstream.url if upstream.mode == "redirect" else None,
                       overwrite=config.storage.overwrite, mirror=mirror)
    simple.ui = UIPages(index, TemplateRenderer())
    manager = for_server(config, index, htpasswd, changed=lambda removed: _apply(index, removed))
    return Services(config=config, index=index, htpasswd=htpasswd, logins=logins, simple=simple,
                    manager=manager)


def _apply(index: Index, removed: list[str]) -> None:
    """A change this process made shows here at once (others follow the log and the disk)."""
    index.apply_marks(index.ledger.marks)
    if removed:
        with index.lock:
            for relpath in removed:
                index.hide(relpath, forget=True)


def services() -> Services:
    """The running app's services (inside a request)."""
    return current_app.extensions["pypid"]  # type: ignore[no-any-return]
