"""The services a pypid app holds in ``app.extensions["pypid"]``."""

from __future__ import annotations

from dataclasses import dataclass

from flask import current_app

from pypid.auth import Htpasswd
from pypid.config import Config
from pypid.index import Index
from pypid.simple.pagecache import PageCache


@dataclass
class Services:
    """What the views need, built once per app."""

    config: Config
    index: Index
    htpasswd: Htpasswd
    pages: PageCache


def services() -> Services:
    """The running app's services (inside a request)."""
    return current_app.extensions["pypid"]  # type: ignore[no-any-return]
