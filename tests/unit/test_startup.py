"""Start-up messages: the bind failure line, the URL the banner names, the access log's agent."""

from __future__ import annotations

import errno
import socket
from datetime import timedelta
from pathlib import Path
from types import SimpleNamespace

import pytest
from gunicorn.config import Config as GunicornConfig

from pypid.accesslog import PypidLogger, first_product
from pypid.config import defaults, load_config
from pypid.server import bind_problem, open_url

PIP_AGENT = ('pip/24.0 {"ci":null,"cpu":"x86_64","distro":{"name":"Debian GNU/Linux",'
             '"version":"12"},"implementation":{"name":"CPython","version":"3.11.2"}}')


@pytest.mark.parametrize(("agent", "expected"), [
    (PIP_AGENT, "pip/24.0"),
    ("uv/0.4.0", "uv/0.4.0"),
    ("twine/5.0.0 CPython/3.11.2", "twine/5.0.0"),
    ("Mozilla/5.0 (X11; Linux x86_64) Gecko/20100101", "Mozilla/5.0"),
    ("-", "-"),
    ("", "-"),
    ("x" * 200, "x" * 64),
], ids=["pip", "uv", "twine", "browser", "dash", "empty", "long-token"])
def test_first_product(agent: str, expected: str) -> None:
    assert first_product(agent) == expected


def test_access_log_atom_is_cut() -> None:
    cfg = GunicornConfig()
    logger = PypidLogger(cfg)
    response = SimpleNamespace(status="200 OK", headers=[], sent=10, status_code=200)
    request = SimpleNamespace(headers=[("USER-AGENT", PIP_AGENT)])
    environ = {"REMOTE_ADDR": "127.0.0.1", "REQUEST_METHOD": "GET", "RAW_URI": "/simple/",
               "PATH_INFO": "/simple/", "QUERY_STRING": "", "SERVER_PROTOCOL": "HTTP/1.1",
               "HTTP_USER_AGENT": PIP_AGENT}
    atoms = logger.atoms(response, request, environ, timedelta(milliseconds=3))
    assert atoms["a"] == "pip/24.0"


@pytest.mark.parametrize(("code", "expected"), [
    (errno.EADDRINUSE, "cannot listen on 0.0.0.0 port 8080: another program already uses that "
     "port; stop it, or choose another port with --port or server.port"),
    (errno.EACCES, "ports below 1024 need root or CAP_NET_BIND_SERVICE; choose a port from "
     "1024 up with --port or server.port"),
    (errno.EADDRNOTAVAIL, "0.0.0.0 is no address of this machine; use --host or server.host"),
], ids=["in-use", "privileged", "not-here"])
def test_bind_problem(code: int, expected: str) -> None:
    line = bind_problem(OSError(code, "x"), defaults())
    assert expected in line
    assert "\n" not in line


def test_bind_problem_names_the_config_file(tmp_path: Path) -> None:
    path = tmp_path / "pypid.toml"
    path.write_text("[server]\nport = 9123\n")
    line = bind_problem(OSError(errno.EADDRINUSE, "x"), load_config(path))
    assert line.endswith(f"with --port or server.port in {path}")
    assert "port 9123" in line


def _listener(host: str, port: int) -> SimpleNamespace:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = SimpleNamespace(getsockname=lambda: (host, port), family=family)
    return SimpleNamespace(sock=sock)


@pytest.mark.parametrize(("host", "expected"), [
    ("0.0.0.0", "http://localhost:9123/"),  # noqa: S104 - a listener's name, not a bind
    ("::", "http://localhost:9123/"),
    ("127.0.0.1", "http://127.0.0.1:9123/"),
    ("::1", "http://[::1]:9123/"),
], ids=["any-v4", "any-v6", "loopback", "v6"])
def test_open_url(host: str, expected: str) -> None:
    assert open_url(defaults(), [_listener(host, 9123)]) == expected
