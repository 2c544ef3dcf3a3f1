"""Tell systemd the truth from the gunicorn master: READY, STATUS, RELOADING, STOPPING, WATCHDOG.

gunicorn sends its own ``READY=1`` as soon as the socket is bound, before any
worker exists. pypid takes ``NOTIFY_SOCKET`` out of the environment first (so
that message goes nowhere and workers cannot notify), and sends ``READY=1``
itself once a worker has answered an HTTP request. Without ``NOTIFY_SOCKET``
nothing is opened and nothing is sent.
"""

from __future__ import annotations

import http.client
import logging
import os
import ssl
import time
from collections.abc import Callable
from typing import Any

from gunicorn.arbiter import Arbiter

log = logging.getLogger("pypid")

PROBE_TIMEOUT = 1.0
PROBE_WINDOW = 2.0  # how long one loop pass may wait for a worker to answer
STATUS_EVERY = 10.0  # seconds between two STATUS= lines with fresh figures
EXTEND_USEC = 30_000_000  # cold start: ask systemd for 30 s more each time we report progress


class Notifier:
    """sd_notify from this (the master) process only; a no-op outside systemd."""

    def __init__(self) -> None:
        self.pid = os.getpid()
        self._notifier: Any = None
        if os.environ.get("NOTIFY_SOCKET"):
            import sdnotify  # noqa: PLC0415 - only under systemd

            self._notifier = sdnotify.SystemdNotifier()
            # gunicorn's early READY=1 must go nowhere; workers must not notify.
            os.environ.pop("NOTIFY_SOCKET", None)
        usec = os.environ.get("WATCHDOG_USEC", "")
        watchdog_pid = os.environ.get("WATCHDOG_PID", "")
        mine = not watchdog_pid or watchdog_pid == str(self.pid)
        self.watchdog_interval = int(usec) / 2e6 if usec.isdigit() and mine else None
        self._last_ping = 0.0

    @property
    def active(self) -> bool:
        return self._notifier is not None

    def send(self, *lines: str) -> None:
        """One message; ASCII only, since sdnotify silently drops a non-latin-1 message."""
        if self._notifier is None or os.getpid() != self.pid:
            return
        message = "\n".join(lines).encode("ascii", "replace").decode("ascii")
        self._notifier.notify(message)

    def status(self, text: str) -> None:
        self.send(f"STATUS={text}")

    def ping(self) -> None:
        """WATCHDOG=1 at half the interval systemd asked for."""
        if self.watchdog_interval is None:
            return
        now = time.monotonic()
        if now - self._last_ping >= self.watchdog_interval:
            self._last_ping = now
            self.send("WATCHDOG=1")

    def progress(self, done: int, total: int) -> None:
        """During a cold start: say how far indexing is and extend the start timeout."""
        self.send(f"STATUS=indexing {done}/{total} files", f"EXTEND_TIMEOUT_USEC={EXTEND_USEC}")


def probe(address: tuple[str, int], path: str, tls: bool) -> bool:
    """Does the server at ``address`` answer an HTTP request (any status)?"""
    host, port = address[0], address[1]
    if host in ("0.0.0.0", ""):  # noqa: S104 - a wildcard bind is probed on loopback
        host = "127.0.0.1"
    elif host == "::":
        host = "::1"
    if tls:
        context = ssl.create_default_context()
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
        conn: http.client.HTTPConnection = http.client.HTTPSConnection(
            host, port, timeout=PROBE_TIMEOUT, context=context)
    else:
        conn = http.client.HTTPConnection(host, port, timeout=PROBE_TIMEOUT)
    try:
        conn.request("GET", path, headers={"User-Agent": "pypid-readiness-probe"})
        conn.getresponse().read()
        return True
    except (OSError, http.client.HTTPException):
        return False
    finally:
        conn.close()


class PypidArbiter(Arbiter):  # type: ignore[misc]
    """gunicorn's arbiter, reporting its state to systemd (gunicorn 20.1 to 27)."""

    def __init__(self, app: Any) -> None:
        super().__init__(app)
        self.notifier: Notifier = app.notifier
        self._describe: Callable[[list[Any]], str] = app.describe
        self._ready = False
        self._was_ready = False
        self._last_status = time.monotonic()

    def first_ready(self) -> None:
        """Called once, when a worker first answers: a hook for a start banner."""

    def describe(self) -> str:
        return self._describe(self.LISTENERS)

    @property
    def health_path(self) -> str:
        return str(self.app.health_path)

    def manage_workers(self) -> None:  # right after spawning, and every pass of the loop
        super().manage_workers()
        if not self._ready and self.WORKERS:
            self._wait_for_an_answer()

    def murder_workers(self) -> None:  # every pass of the master loop (about 1 s)
        super().murder_workers()
        if self.WORKERS:
            self.notifier.ping()
            now = time.monotonic()
            if self._ready and self.notifier.active and now - self._last_status >= STATUS_EVERY:
                self._last_status = now
                self.notifier.status(self.describe())

    def _wait_for_an_answer(self) -> None:
        deadline = time.monotonic() + PROBE_WINDOW
        tls = bool(self.cfg.is_ssl)
        while time.monotonic() < deadline:
            for listener in self.LISTENERS:
                address = listener.sock.getsockname()
                # a unix socket: trust the worker
                if not isinstance(address, tuple) or probe(address, self.health_path, tls):
                    self._became_ready()
                    return
            time.sleep(0.05)

    def _became_ready(self) -> None:
        self._ready = True
        self.notifier.send("READY=1", f"STATUS={self.describe()}")
        log.info("ready: %s", self.describe())
        if not self._was_ready:
            self._was_ready = True
            self.first_ready()

    def reload(self) -> None:  # SIGHUP
        self.notifier.send("RELOADING=1", "STATUS=reloading the configuration")
        # No try/finally: workers forked inside reload() unwind through here with
        # SystemExit when they exit, and must not act as the master.
        old = set(self.WORKERS)
        self._ready = True  # hold READY until the old workers are gone (below)
        super().reload()
        self._wait_for_exit(old)
        self._ready = False
        self._wait_for_an_answer()

    def _wait_for_exit(self, pids: set[int]) -> None:
        """Let old workers finish their requests and exit, as gunicorn >= 23 does itself,
        so that READY=1 after a reload means the new settings answer."""
        deadline = time.monotonic() + self.cfg.graceful_timeout
        while pids & set(self.WORKERS) and time.monotonic() < deadline:
            self.reap_workers()
            time.sleep(0.05)

    def halt(self, reason: str | None = None, exit_status: int = 0) -> None:
        self.notifier.send("STOPPING=1", "STATUS=shutting down")
        super().halt(reason, exit_status)


def bound_addresses(listeners: list[Any]) -> str:
    """``127.0.0.1:8080`` for each listener, joined (the real port, also for port 0)."""
    parts = []
    for listener in listeners:
        address = listener.sock.getsockname()
        if isinstance(address, tuple):
            host = address[0]
            parts.append(f"[{host}]:{address[1]}" if ":" in host else f"{host}:{address[1]}")
        else:
            parts.append(str(address))
    return ", ".join(parts)

