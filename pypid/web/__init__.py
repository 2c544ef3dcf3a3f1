"""The Flask application factory; services live in ``app.extensions["pypid"]``."""

from __future__ import annotations

from pathlib import Path

from flask import Flask

from pypid import __version__
from pypid.auth import Htpasswd
from pypid.config import Config
from pypid.index import Index
from pypid.simple.pagecache import PageCache
from pypid.simple.pagepack import PagePack
from pypid.storage import PackageRoot
from pypid.web import access, errors, files, home, proxy, simple, upload
from pypid.web.fast import FastPath, HotAnswers
from pypid.web.state import Services, services

__all__ = ["HotAnswers", "Services", "create_app", "hot_answers", "services"]

# Form fields (twine sends the long description as one) may be large; the file
# itself is bounded by MAX_CONTENT_LENGTH.
MAX_FORM_MEMORY = 64 * 1024 * 1024


def create_app(config: Config, *, index: Index | None = None,
               htpasswd: Htpasswd | None = None) -> Flask:
    """A configured pypid app. Builds (and loads) an Index of ``config.root`` unless given one."""
    if index is None:
        index = Index(PackageRoot(config.root))
        index.load()
    if htpasswd is None:
        htpasswd = Htpasswd(Path(config.auth.htpasswd))
    app = Flask(__name__, static_folder=None)
    # "//" must not redirect; it simply names no file. (Werkzeug 2.2 reads this only
    # when the Map is built.)
    app.url_map = app.url_map_class(merge_slashes=False)
    app.config.update(
        MAX_CONTENT_LENGTH=config.storage.max_upload_mb * 1024 * 1024 + MAX_FORM_MEMORY,
        MAX_FORM_MEMORY_SIZE=MAX_FORM_MEMORY,
        MAX_FORM_PARTS=10_000,  # one part per classifier and per Requires-Dist
    )
    app.request_class = upload.UploadRequest
    # Pages go to a file beside the cache, unless the root cannot be written to.
    pack = PagePack(index.cache.directory) if index.cache.on_disk else None
    app.extensions["pypid"] = Services(config=config, index=index, htpasswd=htpasswd,
                                       pages=PageCache(pack=pack))
    app.jinja_env.globals["version"] = __version__
    app.before_request(_watch_in_this_process)
    access.register(app)
    for module in (home, simple, files, upload):
        app.register_blueprint(module.bp)
    errors.register(app)
    fast = FastPath(app, app.wsgi_app)
    app.extensions["pypid.hot"] = fast.hot
    app.wsgi_app = proxy.wrap(  # type: ignore[method-assign]
        fast, config.server.url_prefix, config.server.trusted_proxies)
    return app


def hot_answers(app: object) -> HotAnswers | None:
    """The app's answers for hot requests, for a server that can give them before WSGI."""
    extensions = getattr(app, "extensions", None)
    return extensions.get("pypid.hot") if isinstance(extensions, dict) else None


def _watch_in_this_process() -> None:
    services().index.start_watching()
