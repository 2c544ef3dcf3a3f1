"""The Flask application factory; its services live in ``app.extensions["pypid"]``."""

from __future__ import annotations

from flask import Flask

from pypid import __version__
from pypid.config import Config
from pypid.web import api, authz, errors, home, metrics, proxy, simple_api, upload
from pypid.web.state import Services, assemble, services

__all__ = ["Services", "assemble", "create_app", "services"]

# Form fields (twine sends the long description as one) may be large; the file
# itself is bounded by MAX_CONTENT_LENGTH. UploadRequest applies both form limits.
MAX_FORM_MEMORY = upload.MAX_FORM_TEXT


def create_app(config: Config, *, services: Services | None = None) -> Flask:
    """A configured pypid app, from ``services`` or from ones assembled (and indexed) now."""
    svc = services if services is not None else assemble(config)
    app = Flask(__name__, static_folder=None)
    # "//" must not redirect; it simply names no file. (Werkzeug 2.2 reads this only
    # when the Map is built.)
    app.url_map = app.url_map_class(merge_slashes=False)
    app.config.update(
        MAX_CONTENT_LENGTH=config.storage.max_upload_mb * 1024 * 1024 + MAX_FORM_MEMORY,
        MAX_FORM_MEMORY_SIZE=MAX_FORM_MEMORY,
        MAX_FORM_PARTS=upload.MAX_FORM_PARTS,
    )
    app.request_class = upload.UploadRequest
    app.extensions["pypid"] = svc
    app.jinja_env.globals["version"] = __version__
    app.before_request(_watch_in_this_process)
    authz.register(app)
    for module in (home, simple_api, upload, api, metrics):
        app.register_blueprint(module.bp)
    errors.register(app)
    app.wsgi_app = proxy.wrap(  # type: ignore[method-assign]
        app.wsgi_app, config.server.url_prefix, config.server.trusted_proxies, svc.logins)
    return app


def _watch_in_this_process() -> None:
    services().index.start_watching()
