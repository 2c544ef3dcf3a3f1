"""Run the app under gunicorn, embedded through its application API (no shell-out, no argv).

The app and its index are built in the master before any worker forks
(preload), so a broken root or config fails the start instead of crash-looping
workers, and workers share the loaded index copy-on-write.
"""

from __future__ import annotations

import logging
import os
import sys
from pathlib import Path
from typing import Any

from flask import Flask
from gunicorn.app.base import BaseApplication

from pypid import __version__
from pypid.auth import Htpasswd
from pypid.config import Config
from pypid.index import Index
from pypid.storage import PackageRoot
from pypid.web import create_app
from pypid.web.access import warn_at_start

log = logging.getLogger("pypid")

THREADS_PER_WORKER = 8  # gthread: slow downloads must not block page requests
GRACEFUL_TIMEOUT = 20  # below the unit's TimeoutStopSec=30
JOURNAL_FORMAT = "%(levelname)s %(name)s: %(message)s"
TERMINAL_FORMAT = "[%(asctime)s] [%(process)d] [%(levelname)s] %(name)s: %(message)s"
ACCESS_FORMAT = '%(h)s "%(r)s" %(s)s %(B)s %(M)sms "%(a)s"'


def under_journal() -> bool:
    """Is stderr the systemd journal (so it stamps time and PID itself)?"""
    stream = os.environ.get("JOURNAL_STREAM", "")
    if not stream:
        return False
    try:
        st = os.fstat(sys.stderr.fileno())
    except (OSError, ValueError):
        return False
    return stream == f"{st.st_dev}:{st.st_ino}"


def setup_logging(level: str) -> None:
    """pypid's own log lines go to stderr, in the journal's format when it is the journal."""
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter(JOURNAL_FORMAT if under_journal() else TERMINAL_FORMAT,
                                           "%Y-%m-%d %H:%M:%S %z"))
    logger = logging.getLogger("pypid")
    logger.handlers[:] = [handler]
    logger.setLevel(level.upper())
    logger.propagate = False


def bind_address(host: str, port: int) -> str:
    """gunicorn's bind string; IPv6 addresses need brackets.

    >>> bind_address("::", 8080), bind_address("127.0.0.1", 0)
    ('[::]:8080', '127.0.0.1:0')
    """
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def build_app(config: Config) -> Flask:
    """Index the root and build the app, in this (the master) process."""
    root = PackageRoot(config.root)
    root.sweep_temp_files()  # no worker exists yet: any upload temp file is a leftover
    index = Index(root)
    index.load()
    htpasswd = Htpasswd(Path(config.auth.htpasswd))
    warn_at_start(config.auth.protect, htpasswd.problem())
    app = create_app(config, index=index, htpasswd=htpasswd)
    index.cache.close()  # SQLite connections must not cross fork
    return app


class PypidApplication(BaseApplication):  # type: ignore[misc]
    """gunicorn configured from a pypid Config."""

    def __init__(self, config: Config, app: Flask) -> None:
        self.pypid_config = config
        self.flask_app = app
        super().__init__()

    def load_config(self) -> None:
        config = self.pypid_config
        settings: dict[str, Any] = {
            "bind": [bind_address(config.server.host, config.server.port)],
            "workers": config.server.workers,
            "worker_class": "gthread",
            "threads": THREADS_PER_WORKER,
            "preload_app": True,
            "proc_name": "pypid",
            "errorlog": "-",
            "loglevel": config.log.level,
            "accesslog": "-" if config.log.access_log else None,
            "access_log_format": ACCESS_FORMAT,
            "graceful_timeout": GRACEFUL_TIMEOUT,
            "timeout": 60,
            "keepalive": 5,
            # pypid decides which proxies to believe (server.trusted_proxies).
            "secure_scheme_headers": {},
            "forwarded_allow_ips": "127.0.0.1",
            "control_socket_disable": True,  # gunicorn >= 25 only
            "post_worker_init": _post_worker_init,
            "when_ready": _when_ready,
        }
        if config.server.tls_cert:
            settings["certfile"] = config.server.tls_cert
            settings["keyfile"] = config.server.tls_key
        for name, value in settings.items():
            if name in self.cfg.settings:
                self.cfg.set(name, value)
        if under_journal():
            self.cfg.set("logconfig_dict", _journal_logconfig(config))

    def load(self) -> Flask:
        return self.flask_app


def _post_worker_init(worker: Any) -> None:
    """Each worker follows changes in the root from its first moment."""
    app = getattr(worker, "wsgi", None)
    services = getattr(app, "extensions", {}).get("pypid")
    if services is not None:
        services.index.start_watching()


def _when_ready(server: Any) -> None:
    app: PypidApplication = server.app
    config = app.pypid_config
    index: Index = app.flask_app.extensions["pypid"].index
    addresses = ", ".join(str(listener) for listener in server.LISTENERS)
    log.info("pypid %s serving %d projects (%d files) from %s on %s with %d workers "
             "(config: %s)", __version__, index.project_count(), index.file_count(),
             index.root.path, addresses, config.server.workers, config.source or "defaults")


def _journal_logconfig(config: Config) -> dict[str, Any]:
    """gunicorn's own loggers without timestamps (the journal adds its own)."""
    return {
        "version": 1,
        "disable_existing_loggers": False,
        "formatters": {"plain": {"format": "%(levelname)s %(message)s"},
                       "access": {"format": "%(message)s"}},
        "handlers": {
            "error": {"class": "logging.StreamHandler", "formatter": "plain",
                      "stream": "ext://sys.stderr"},
            "access": {"class": "logging.StreamHandler", "formatter": "access",
                       "stream": "ext://sys.stderr"},
        },
        "loggers": {
            "gunicorn.error": {"handlers": ["error"], "level": config.log.level.upper(),
                               "propagate": False},
            "gunicorn.access": {"handlers": ["access"], "level": "INFO", "propagate": False},
        },
    }


def serve(config: Config) -> int:
    """Build the app in this process, then hand it to gunicorn's arbiter (returns on exit)."""
    setup_logging(config.log.level)
    app = build_app(config)
    PypidApplication(config, app).run()
    return 0
