"""Run the app under gunicorn, embedded through its application API (no shell-out, no argv).

The app and its index are built in the master before any worker forks
(preload), so a broken root or config fails the start instead of crash-looping
workers, and workers share the loaded index copy-on-write.
"""

from __future__ import annotations

import errno
import gc
import logging
import os
import sys
import time
from collections.abc import Callable
from typing import Any

from flask import Flask
from gunicorn import sock
from gunicorn.app.base import BaseApplication

from pypid import __version__, heap
from pypid.auth import Htpasswd, process_user, pypid_command
from pypid.config import Config, ConfigError, load_config
from pypid.index import Index
from pypid.index.loading import no_gc
from pypid.limits import raise_open_files_limit
from pypid.manage import prepare_root, report_ownerless
from pypid.metrics import store, tally
from pypid.metrics.pulse import Pulse
from pypid.simple import ahead
from pypid.simple.prerender import render_listing
from pypid.storage import StorageError
from pypid.storage.select import open_storage
from pypid.systemd import Notifier, PypidArbiter, bound_addresses
from pypid.web import Services, assemble, create_app
from pypid.web.authz import warn_at_start

log = logging.getLogger("pypid")

THREADS_PER_WORKER = 32  # an upload or an app request holds a thread (README, "Performance")
WORKER_CLASS = "pypid.worker.PypidWorker"
LOGGER_CLASS = "pypid.accesslog.PypidLogger"  # the User-Agent cut to its first product
GRACEFUL_TIMEOUT = 20  # below the unit's TimeoutStopSec=30
CATCH_UP_AFTER = 5.0  # seconds after the load past which a new worker catches up first
JOURNAL_FORMAT = "%(levelname)s %(name)s: %(message)s"
TERMINAL_FORMAT = "[%(asctime)s] [%(process)d] [%(levelname)s] %(name)s: %(message)s"
ACCESS_FORMAT = '%(h)s "%(r)s" %(s)s %(B)s %(M)sms "%(a)s"'


def plural(count: int, noun: str) -> str:
    """Count and noun, in English.

    >>> plural(1, "project"), plural(2, "worker")
    ('1 project', '2 workers')
    """
    return f"{count} {noun}{'' if count == 1 else 's'}"


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


def build_app(config: Config, progress: Callable[[int, int], None] | None = None) -> Flask:
    """Index the root and build the app, in this (the master) process."""
    prepare_root(open_storage(config))  # no worker exists yet: any temp file is a leftover
    with no_gc():  # its objects hold no cycles to collect: settle_heap collects once, after
        services = assemble(config, progress=progress)
        warn_at_start(config.auth.protect, services.htpasswd.problem())
        report_ownerless(services.manager)
        app = create_app(config, services=services)
        render_listing(services.index, services.pages)  # once, not once per worker
        services.index.seal_files()  # workers look files up outside the heap; see the module
    services.index.cache.close()  # SQLite connections must not cross fork
    return app


def settle_heap() -> None:
    """Before workers fork: collect once, then freeze what is left (the app and its index).

    Frozen objects are never scanned by the cyclic collector again: with
    100,000 files that is a million objects a full collection would walk in
    every worker, pausing requests and writing to (so un-sharing) the memory
    the workers inherited from the master.
    """
    gc.unfreeze()
    gc.collect()
    heap.fill_free_blocks()  # workers would copy the master's pages to use them
    gc.freeze()
    heap.trim()  # loading freed tens of MB glibc keeps: workers would inherit them as RSS


def render_ahead(app: Flask) -> None:
    """Start rendering every project page for the workers about to fork (they serve at once
    and adopt the pages when they are done: ``pypid.simple.ahead``)."""
    services: Services = app.extensions["pypid"]
    ahead.start(services.index, services.pages)


class PypidApplication(BaseApplication):  # type: ignore[misc]
    """gunicorn configured from a pypid Config; SIGHUP re-reads the file."""

    def __init__(self, config: Config, app: Flask, *, config_path: str | None = None,
                 overrides: dict[str, Any] | None = None,
                 notifier: Notifier | None = None) -> None:
        self.pypid_config = config
        self.flask_app = app
        self.config_path = config_path
        self.overrides = overrides or {}
        self.notifier = notifier or Notifier()
        self.pulse: Pulse | None = None
        super().__init__()

    @property
    def services(self) -> Services:
        """What the app serves from; pypid's worker answers from it too."""
        return self.flask_app.extensions["pypid"]  # type: ignore[no-any-return]

    @property
    def health_path(self) -> str:
        return self.pypid_config.server.url_prefix + "/health"

    def describe(self, listeners: list[Any]) -> str:
        """The STATUS= text: ASCII, short, true (first: why the store is away, if it is)."""
        index = self.services.index
        workers = plural(self.pypid_config.server.workers, "worker")
        folder = _metrics_folder(self)
        if self.pulse is None or self.pulse.folder.path != folder.path:
            self.pulse = Pulse(folder)
        problem = index.root.last_problem()
        return (("degraded: " + problem + "; " if problem else "")
                + f"serving {plural(index.project_count(), 'project')} on "
                f"{bound_addresses(listeners)}, {workers}; {self.pulse.line()}")

    def load_config(self) -> None:
        config = self.pypid_config
        settings: dict[str, Any] = {
            "bind": [bind_address(config.server.host, config.server.port)],
            "workers": config.server.workers,
            # gunicorn's gthread does TLS; pypid's worker answers hot requests in its loop.
            "worker_class": "gthread" if config.server.tls_cert else WORKER_CLASS,
            "threads": THREADS_PER_WORKER,
            "preload_app": True,
            "proc_name": "pypid",
            "errorlog": "-",
            "loglevel": config.log.level,
            "accesslog": "-" if config.log.access_log else None,
            "access_log_format": ACCESS_FORMAT,
            "logger_class": LOGGER_CLASS,
            "graceful_timeout": GRACEFUL_TIMEOUT,
            "timeout": 60,
            "keepalive": 5,
            # pypid alone applies X-Forwarded-* (server.trusted_proxies, pypid.web.proxy):
            # gunicorn believes no forwarding header from anyone.
            "secure_scheme_headers": {},
            "forwarded_allow_ips": "",
            "forwarder_headers": "",  # gunicorn >= 22: SCRIPT_NAME / PATH_INFO headers
            "control_socket_disable": True,  # gunicorn >= 25 only
            "post_worker_init": _post_worker_init,
            "pre_request": _drop_forwarder_headers,
            "post_request": _count_app_request,
            "when_ready": _when_ready,
            "worker_exit": _worker_exit,
            "child_exit": _child_exit,
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

    def reload(self) -> None:
        """SIGHUP: re-read the file and htpasswd and rebuild the app; keep all on error."""
        try:
            config = load_config(self.config_path, self.overrides)
        except ConfigError as exc:
            for problem in exc.problems:
                log.error("reload refused: %s", problem)
            log.error("reload refused: keeping the running configuration")
            config = self.pypid_config
        heap.release_placeholders()  # the new app takes their memory first
        app: Flask | None = None
        try:
            app = build_app(config)
        except (OSError, StorageError) as exc:
            log.error("reload refused: %s; keeping the running configuration", exc)
        else:
            self.pypid_config, self.flask_app = config, app
            setup_logging(config.log.level)
        settle_heap()  # let the previous app (or a refused one's leftovers) go
        if app is not None:
            render_ahead(app)
        self.callable = None  # make gunicorn take the (new) app on its preload
        super().reload()

    def run(self) -> None:
        arbiter = _AnnouncingArbiter(self)
        if not (os.environ.get("GUNICORN_FD") or os.environ.get("LISTEN_FDS")):
            try:  # bound here, once: gunicorn would retry a busy port five times
                arbiter.LISTENERS = [sock._sock_type(address)(address, self.cfg, arbiter.log)
                                     for address in self.cfg.address]
            except OSError as exc:
                log.error("%s", bind_problem(exc, self.pypid_config))
                sys.exit(1)
        try:
            arbiter.run()
        except RuntimeError as exc:
            log.error("%s", exc)
            sys.exit(1)

    def announce(self, listeners: list[Any]) -> None:
        """Once the first worker answers: where to point a browser, how to upload, how to stop."""
        services = self.services
        lines = banner(self.pypid_config, listeners, services.index, services.htpasswd)
        if under_journal():
            log.info("%s", "; ".join(line.strip() for line in lines))
        else:
            log.info("%s", "\n  ".join(lines))


class _AnnouncingArbiter(PypidArbiter):
    """PypidArbiter that shows the start banner the first time a worker answers."""

    def first_ready(self) -> None:
        self.app.announce(self.LISTENERS)


def bind_problem(exc: OSError, config: Config) -> str:
    """One line for a listening socket that cannot be had, naming the setting to change."""
    where = f"{config.server.host} port {config.server.port}"
    change = "--port or server.port" + (f" in {config.source}" if config.source else "")
    if exc.errno == errno.EADDRINUSE:
        return (f"cannot listen on {where}: another program already uses that port; "
                f"stop it, or choose another port with {change}")
    if exc.errno == errno.EACCES:
        return (f"cannot listen on {where} as user {process_user()}: ports below 1024 need "
                f"root or CAP_NET_BIND_SERVICE; choose a port from 1024 up with {change}")
    if exc.errno == errno.EADDRNOTAVAIL:
        return (f"cannot listen on {where}: {config.server.host} is no address of this "
                "machine; use --host or server.host (0.0.0.0: every address)")
    return f"cannot listen on {where}: {(exc.strerror or str(exc)).lower()}"


def open_url(config: Config, listeners: list[Any]) -> str:
    """The URL a person on this machine opens: localhost for a wildcard address."""
    address = listeners[0].sock.getsockname() if listeners else (config.server.host,
                                                                 config.server.port)
    if not isinstance(address, tuple):
        return f"unix:{address}"
    host = address[0]
    if host in ("0.0.0.0", "::", ""):  # noqa: S104 - recognising the wildcard, not binding it
        host = "localhost"
    elif ":" in host:
        host = f"[{host}]"
    scheme = "https" if config.server.tls_cert else "http"
    return f"{scheme}://{host}:{address[1]}{config.server.url_prefix}/"


def banner(config: Config, listeners: list[Any], index: Index, htpasswd: Htpasswd) -> list[str]:
    """The start banner's lines: the URL, the packages, installing, uploading, stopping."""
    url = open_url(config, listeners)
    command = pypid_command()
    lines = [
        f"pypid {__version__} is ready: open {url}",
        f"packages: {index.root.where} ({plural(index.project_count(), 'project')}, "
        f"{plural(index.file_count(), 'file')}"
        + ("; files copied in are served at once)" if not index.root.is_remote else ")"),
        f"install:  pip install --index-url {url}simple/ PACKAGE",
        f"upload:   twine upload --repository-url {url} -u NAME dist/*",
    ]
    if "upload" not in config.auth.protect:
        lines.append("          (uploads need no login: auth.protect does not list upload)")
    elif htpasswd.problem():
        lines.append(f"          first: {htpasswd.problem()}")
    else:
        lines.append(f"          (NAME: a login of {htpasswd.path}; "
                     f"more with `{command} user add NAME`)")
    lines.append("stop:     systemctl stop pypid" if under_journal() else "stop:     Ctrl-C")
    return lines


def _drop_forwarder_headers(worker: Any, req: Any) -> None:
    """Before gunicorn builds the environ: a client's SCRIPT_NAME or PATH_INFO header must
    not move the request (gunicorn 20.1 believes them from anyone, and a SCRIPT_NAME that
    is not a prefix of the path makes it fail with a traceback)."""
    req.headers = [(name, value) for name, value in req.headers
                   if name not in ("SCRIPT_NAME", "PATH_INFO")]
    req.pypid_started = time.perf_counter()


def _count_app_request(worker: Any, req: Any, environ: Any, resp: Any) -> None:
    """A request the app answered (the worker's loop counts its own)."""
    status = getattr(resp, "status_code", None)
    if status is None:
        return
    prefix = worker.app.pypid_config.server.url_prefix
    path = req.path or ""
    if prefix:
        path = path[len(prefix):] if path.startswith(prefix + "/") else "-"
    seconds = time.perf_counter() - getattr(req, "pypid_started", time.perf_counter())
    tally.request(tally.tally(), tally.route_of(req.method, path), req.method, status, seconds)


def _metrics_folder(app: PypidApplication) -> store.MetricsFolder:
    return store.folder_for(app.services.index.root.cache_dir)


def _worker_exit(server: Any, worker: Any) -> None:
    """In the worker, as it stops: its last counts to its file."""
    flusher = store.current()
    if flusher is not None:
        flusher.stop()


def _child_exit(server: Any, worker: Any) -> None:
    """In the master: a worker is gone (stopped, replaced or killed); keep its counts."""
    _metrics_folder(server.app).retire(worker.pid)


def _post_worker_init(worker: Any) -> None:
    """Each worker follows changes in the root from its first moment. One forked long
    after the load (a replacement for a killed worker) catches up before it answers."""
    store.start_flushing(_metrics_folder(worker.app))
    heap.keep_large_blocks_apart()
    heap.Trimmer().start()
    index = worker.app.services.index
    index.start_watching(catch_up_first=time.monotonic() - index.loaded_at > CATCH_UP_AFTER)


def _when_ready(server: Any) -> None:
    app: PypidApplication = server.app
    config = app.pypid_config
    index = app.services.index
    _metrics_folder(app).retire()  # no worker runs yet: these are a previous run's
    log.info("pypid %s serving %s (%s) from %s on %s with %s (config: %s)", __version__,
             plural(index.project_count(), "project"), plural(index.file_count(), "file"),
             index.root.where, bound_addresses(server.LISTENERS),
             plural(config.server.workers, "worker"), config.source or "defaults")


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
        # gunicorn merges this into its defaults, whose root logger names a handler we replace.
        "root": {"level": "WARNING", "handlers": ["error"]},
        "loggers": {
            "gunicorn.error": {"handlers": ["error"], "level": config.log.level.upper(),
                               "propagate": False},
            # Off unless log.access_log: a logconfig alone turns gunicorn's access log on.
            "gunicorn.access": {"handlers": ["access"], "propagate": False,
                                "level": "INFO" if config.log.access_log else "CRITICAL"},
        },
    }


def serve(config: Config, *, config_path: str | None = None,
          overrides: dict[str, Any] | None = None) -> int:
    """Build the app in this process, then hand it to gunicorn's arbiter (returns on exit)."""
    setup_logging(config.log.level)
    raise_open_files_limit()
    notifier = Notifier()
    try:
        app = build_app(config, _throttled(notifier.progress) if notifier.active else None)
    except (OSError, StorageError) as exc:
        log.error("cannot start: %s", exc)
        return 1
    settle_heap()
    render_ahead(app)
    PypidApplication(config, app, config_path=config_path, overrides=overrides,
                     notifier=notifier).run()
    return 0


def _throttled(report: Callable[[int, int], None],
               every: float = 1.0) -> Callable[[int, int], None]:
    """Pass progress on at most once a second (and always the last step)."""
    last = 0.0

    def progress(done: int, total: int) -> None:
        nonlocal last
        now = time.monotonic()
        if done == total or now - last >= every:
            last = now
            report(done, total)

    return progress
