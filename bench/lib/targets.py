"""The servers under test: pypid (this checkout or another), pypiserver, nginx, http.server."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from abc import ABC, abstractmethod
from pathlib import Path
from typing import Any

from bench.lib.corpus import Corpus, linked_root, write_static_index
from bench.lib.host import HOST, REPO, Pin, free_port
from bench.lib.server import Server


class Target(ABC):
    """One server implementation under test: pypid, pypiserver, nginx, http.server."""

    name: str
    label: str = ""  # column heading in the side-by-side table (default: name)

    @abstractmethod
    def start(self, corpus: Corpus, workdir: Path, pin: Pin) -> Server: ...

    def reset_cache(self, corpus: Corpus) -> bool:
        """Make the next start cold; False when the target keeps no cache."""
        return False

    def has_cache(self, corpus: Corpus) -> bool:
        return False


# Runs pypid exactly as ``python -m pypid`` does, after saying which pypid it imported.
LAUNCH = ("import runpy, sys, pypid; print('pypid imported from', pypid.__file__, flush=True); "
          "sys.argv[0] = 'pypid'; runpy.run_module('pypid', run_name='__main__', alter_sys=True)")
IMPORTED = re.compile(r"^pypid imported from (\S+)$")


def byte_compile(python: str, src: Path) -> None:
    """Compile ``src``'s pypid package to ``__pycache__``, as an install does (pip, and
    Debian's postinst for the package): where ``PYTHONDONTWRITEBYTECODE`` is set (this
    machine's environment sets it) a source checkout would otherwise be compiled again at
    every start, ~50 ms of the start's single core that no installed server pays."""
    subprocess.run([python, "-m", "compileall", "-q", str(src / "pypid")], check=True,
                   stdout=subprocess.DEVNULL)


class PypidTarget(Target):
    """pypid from ``src`` (first on PYTHONPATH), run by ``python``.

    With ``root_tag`` it serves its own hard-linked copy of the corpus root (the same
    files, its own ``.pypid`` cache), so two pypid versions can run side by side.
    """

    listen = re.compile(r"Listening at: http://([^\s:]+):(\d+)")

    def __init__(self, python: str, workers: int | None, src: Path = REPO, *,
                 name: str = "pypid", root_tag: str | None = None, settings: str = "",
                 launch: str = LAUNCH, env: dict[str, str] | None = None,
                 upstream: str = 'mode = "off"') -> None:
        self.python = python
        self.launch = launch  # the -c code that runs ``pypid`` (bench/lib/tail.py wraps it)
        self.env = env or {}
        self.settings = settings  # more TOML sections for the config (e.g. "[auth]\n...")
        self.upstream = upstream  # the [upstream] section's lines (bench/mirror.py: "cache")
        self.workers = workers
        self.src = src  # the directory holding the pypid package
        self.name = name
        self.root_tag = root_tag
        if workers:
            self.label = f"{name} ({workers} worker{'s' if workers > 1 else ''})"

    def root(self, corpus: Corpus) -> Path:
        return corpus.root if self.root_tag is None else linked_root(corpus, self.root_tag)

    def cache_dir(self, corpus: Corpus) -> Path:
        return self.root(corpus) / ".pypid"

    def reset_cache(self, corpus: Corpus) -> bool:
        shutil.rmtree(self.cache_dir(corpus), ignore_errors=True)
        return True

    def has_cache(self, corpus: Corpus) -> bool:
        return self.cache_dir(corpus).exists()

    def start(self, corpus: Corpus, workdir: Path, pin: Pin) -> Server:
        byte_compile(self.python, self.src)
        root = self.root(corpus)
        conf = workdir / "pypid.toml"
        server = f"[server]\nworkers = {self.workers}\n" if self.workers else ""
        conf.write_text(
            f"{server}[storage]\nroot = {json.dumps(str(root))}\n"
            f'[upstream]\n{self.upstream}\n[log]\nlevel = "info"\naccess_log = false\n'
            + self.settings
        )
        cmd = [*pin.prefix(), self.python, "-c", self.launch, "serve", "--config", str(conf),
               "--host", HOST, "--port", "0", "--root", str(root)]
        env = {**os.environ, "PYTHONPATH": str(self.src), "PYTHONUNBUFFERED": "1", **self.env}
        env.pop("NOTIFY_SOCKET", None)
        return Server(self.name, cmd, env=env, cwd=workdir, port_regex=self.listen, port=None)

    def check_source(self, server: Server) -> Path:
        """The pypid package the server imported; RuntimeError unless it is the one in src."""
        found = next((m.group(1) for line in list(server.lines)
                      if (m := IMPORTED.match(line))), None)
        if found is None:
            raise RuntimeError(f"{self.name}: the server did not say which pypid it imported")
        package = Path(found).resolve().parent
        if package != (self.src / "pypid").resolve():
            raise RuntimeError(f"{self.name} runs {package}, not {self.src / 'pypid'}")
        return package


class HttpServerTarget(Target):
    """python -m http.server on a static PEP 503 tree: validates the harness, not a contender."""

    name = "http.server"
    listen = re.compile(r"Serving HTTP on (\S+) port (\d+)")

    def __init__(self, python: str) -> None:
        self.python = python

    def start(self, corpus: Corpus, workdir: Path, pin: Pin) -> Server:
        static = write_static_index(corpus)
        cmd = [*pin.prefix(), self.python, "-m", "http.server", "--bind", HOST,
               "--directory", str(static), "0"]
        env = {**os.environ, "PYTHONUNBUFFERED": "1"}
        return Server(self.name, cmd, env=env, cwd=workdir, port_regex=self.listen, port=None)


PYPISERVER_VERSION = "2.4.2"
GUNICORN_WORKERS = {
    # pypiserver runs gunicorn in-process (bottle's GunicornServer); its settings come from
    # GUNICORN_CMD_ARGS. Both were tried at 10k files; gthread was no slower and its p99 far
    # lower (see bench/README.md).
    "gthread": "--workers 1 --threads 8 -k gthread",
    "gevent": "--workers 1 --worker-connections 1000 -k gevent",
}


class PypiserverTarget(Target):
    """pypiserver from PyPI in its own venv (bench/out/venv-pypiserver): gunicorn, cached-dir.

    ``pypi-server run -p 0 -i 127.0.0.1 --server gunicorn --backend cached-dir
    --disable-fallback -a . -P . ROOT`` with GUNICORN_CMD_ARGS for one worker.
    """

    name = "pypiserver"
    listen = re.compile(r"Listening at: http://([^\s:]+):(\d+)")

    def __init__(self, venv: Path, worker: str = "gthread", python: str = sys.executable) -> None:
        self.venv = venv
        self.worker = worker
        self.python = python
        self.versions: dict[str, str] = {}

    def ensure_installed(self, log: Any = print) -> dict[str, str]:
        """Create the venv and pip install pypiserver (once); return the installed versions."""
        pip = self.venv / "bin" / "pip"
        want = [f"pypiserver[cache]=={PYPISERVER_VERSION}", "gunicorn", "passlib"]
        if self.worker == "gevent":
            want.append("gevent")
        marker = self.venv / (".bench-installed-" + "-".join(sorted(
            re.sub(r"[^a-z0-9.=]+", "_", w.lower()) for w in want)))
        if not marker.exists():
            log(f"installing {' '.join(want)} into {self.venv}")
            if not pip.exists():
                subprocess.run([self.python, "-m", "venv", str(self.venv)], check=True,
                               timeout=300)
            subprocess.run([str(pip), "install", "-q", "--disable-pip-version-check", *want],
                           check=True, timeout=900)
            marker.write_text("")
        out = subprocess.run([str(pip), "list", "--format=json", "--disable-pip-version-check"],
                             capture_output=True, text=True, check=True, timeout=120).stdout
        names = {"pypiserver", "gunicorn", "watchdog", "gevent", "passlib"}
        self.versions = {d["name"].lower(): d["version"] for d in json.loads(out)
                         if d["name"].lower() in names}
        return self.versions

    def gunicorn_args(self) -> str:
        args = GUNICORN_WORKERS[self.worker]
        # gunicorn >= 25 opens a control socket under ~/.gunicorn unless told not to
        help_text = subprocess.run([str(self.venv / "bin" / "gunicorn"), "--help"],
                                   capture_output=True, text=True, timeout=60,
                                   check=False).stdout
        if "--no-control-socket" in help_text:
            args += " --no-control-socket"
        return args

    def start(self, corpus: Corpus, workdir: Path, pin: Pin) -> Server:
        cmd = [*pin.prefix(), str(self.venv / "bin" / "pypi-server"), "run",
               "-p", "0", "-i", HOST, "--server", "gunicorn", "--backend", "cached-dir",
               "--disable-fallback", "-a", ".", "-P", ".", str(corpus.root)]
        env = {**os.environ, "PYTHONUNBUFFERED": "1", "GUNICORN_CMD_ARGS": self.gunicorn_args()}
        for var in ("PYTHONPATH", "NOTIFY_SOCKET", "VIRTUAL_ENV"):
            env.pop(var, None)
        return Server(self.name, cmd, env=env, cwd=workdir, port_regex=self.listen, port=None)


NGINX_CONF = """\
daemon off;
master_process {master};
worker_processes 1;
user root root;
pid {prefix}/nginx.pid;
error_log stderr warn;
events {{ worker_connections 4096; }}
http {{
    {types}
    default_type application/octet-stream;
    access_log off;
    sendfile on;
    tcp_nopush on;
    keepalive_timeout 65;
    keepalive_requests 1000000;
    gzip on;
    gzip_types application/vnd.pypi.simple.v1+json application/json;
    client_body_temp_path {prefix}/tmp/body;
    proxy_temp_path {prefix}/tmp/proxy;
    fastcgi_temp_path {prefix}/tmp/fastcgi;
    uwsgi_temp_path {prefix}/tmp/uwsgi;
    scgi_temp_path {prefix}/tmp/scgi;
    server {{
        listen {host}:{port};
        root {static};
        index index.html;
    }}
}}
"""


class NginxTarget(Target):
    """Debian's nginx serving ``corpus.write_static_index()``: one worker, sendfile, gzip on.

    The master (root) and its one worker run under taskset, so both sit on the server CPU.
    """

    name = "nginx"

    def __init__(self, binary: str = "nginx", *, master: bool = True) -> None:
        self.binary = binary
        self.master = master  # False: one process, no master (bench/instructions.py)
        self.version = ""

    def ensure_installed(self, log: Any = print) -> str:
        found = shutil.which(self.binary) or (
            "/usr/sbin/nginx" if Path("/usr/sbin/nginx").exists() else None)
        if not found:
            log("nginx not found: installing nginx-light with apt-get")
            env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
            subprocess.run(["apt-get", "-o", "DPkg::Lock::Timeout=300", "install", "-y", "-q",
                            "nginx-light"], env=env, check=True, timeout=900)
            found = shutil.which(self.binary) or "/usr/sbin/nginx"
        self.binary = found
        proc = subprocess.run([found, "-v"], capture_output=True, text=True, timeout=30,
                              check=False)
        self.version = (proc.stderr or proc.stdout).strip().rsplit("/", 1)[-1]
        return self.version

    def start(self, corpus: Corpus, workdir: Path, pin: Pin) -> Server:
        static = write_static_index(corpus)
        prefix = workdir / "nginx"
        (prefix / "tmp").mkdir(parents=True, exist_ok=True)
        port = free_port()
        mime = Path("/etc/nginx/mime.types")
        types = (f"include {mime};" if mime.exists() else
                 "types { text/html html; application/octet-stream whl gz; }")
        conf = prefix / "nginx.conf"
        conf.write_text(NGINX_CONF.format(prefix=prefix, types=types, host=HOST, port=port,
                                          static=static.resolve(),
                                          master="on" if self.master else "off"))
        cmd = [*pin.prefix(), self.binary, "-p", str(prefix), "-e", "stderr",
               "-c", str(conf)]
        return Server(self.name, cmd, env=dict(os.environ), cwd=workdir, port_regex=None,
                      port=port)

