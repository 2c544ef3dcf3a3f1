"""Start and stop `python -m pypid serve` on port 0; build the corpus it serves."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Mapping
from pathlib import Path

import pytest

from tests.builders import make_sdist, make_wheel
from tests.integration.helpers import (
    LISTENING_RE,
    REPO_ROOT,
    Corpus,
    Dist,
    Server,
    request,
)

START_TIMEOUT = 30.0
STOP_TIMEOUT = 10.0


def build_corpus(root: Path) -> Corpus:
    """The package root every server of the session reads.

    app 1.0 -> lib>=1.0 -> base; the newest app and lib need Python >= 4 and must be
    skipped; sdonly has sdists only; Mixed_Case.Name tests name normalization; base lives
    in a sub-folder. Expected install of "app sdonly Mixed_Case.Name":
    app 1.0, lib 1.5, base 1.1, sdonly 1.0, mixed-case-name 1.0.
    """
    corpus = Corpus(root)
    sub = root / "sub" / "base"
    pay = b"0123456789abcdef" * 64  # makes Range reads meaningful

    def wheel(
        d: Path, name: str, ver: str, rp: str | None = None, deps: tuple[str, ...] = ()
    ) -> None:
        path = make_wheel(d, name, ver, requires_python=rp, requires_dist=deps, payload=pay)
        corpus.dists.append(Dist(name, ver, path, rp))

    def sdist(
        d: Path, name: str, ver: str, fmt: str = "tar.gz", deps: tuple[str, ...] = ()
    ) -> None:
        path = make_sdist(d, name, ver, requires_dist=deps, fmt=fmt)
        corpus.dists.append(Dist(name, ver, path, None))

    wheel(sub, "base", "1.0")
    wheel(sub, "base", "1.1")
    sdist(sub, "base", "1.1")
    wheel(root, "lib", "0.9", deps=("base",))
    wheel(root, "lib", "1.0", deps=("base>=1.0",))
    wheel(root, "lib", "1.5", rp=">=3.8", deps=("base>=1.1",))
    wheel(root, "lib", "2.0", rp=">=4,<5", deps=("base>=1.1",))
    wheel(root, "app", "0.5", deps=("lib",))
    wheel(root, "app", "1.0", deps=("lib>=1.0",))
    wheel(root, "app", "2.0", rp=">=4", deps=("lib>=2.0",))
    sdist(root, "sdonly", "0.9", fmt="zip")
    sdist(root, "sdonly", "1.0", deps=("base",))
    wheel(root, "Mixed_Case.Name", "1.0")
    for junk in ("garbage.whl", "foo-.tar.gz"):
        (root / junk).write_bytes(b"not a distribution\n")
        corpus.junk.append(junk)
    return corpus


TomlValue = str | int | bool | tuple[str, ...] | list[str]


def _toml(value: TomlValue) -> str:
    """A TOML literal for the simple values test configs use."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, str):
        return json.dumps(value)  # a JSON string is a valid TOML basic string
    return "[" + ", ".join(json.dumps(v) for v in value) + "]"


def write_config(
    path: Path,
    root: Path,
    *,
    url_prefix: str,
    upstream: str,
    trusted_proxies: tuple[str, ...] | None = None,
    settings: Mapping[str, Mapping[str, TomlValue]] | None = None,
) -> None:
    """A test config; trusted_proxies None keeps the default (127.0.0.1); settings adds or
    replaces keys by section, e.g. {"auth": {"htpasswd": "/x"}, "server": {"workers": 1}}."""
    sections: dict[str, dict[str, TomlValue]] = {
        "storage": {"root": str(root)},
        "upstream": {"mode": upstream},
        "server": {"workers": 2, "url_prefix": url_prefix},
        "log": {"access_log": True},
    }
    if upstream == "redirect":
        sections["upstream"]["url"] = "https://pypi.org/simple/"
    if trusted_proxies is not None:
        sections["server"]["trusted_proxies"] = trusted_proxies
    for section, keys in (settings or {}).items():
        sections.setdefault(section, {}).update(keys)
    text = "\n".join(
        f"[{section}]\n" + "".join(f"{k} = {_toml(v)}\n" for k, v in keys.items())
        for section, keys in sections.items()
    )
    path.write_text(text, encoding="utf-8")


def stop(proc: subprocess.Popen[bytes]) -> None:
    """SIGTERM the PID we started, SIGKILL after STOP_TIMEOUT."""
    if proc.poll() is not None:
        return
    os.kill(proc.pid, signal.SIGTERM)
    try:
        proc.wait(timeout=STOP_TIMEOUT)
    except subprocess.TimeoutExpired:
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(timeout=STOP_TIMEOUT)


def start_server(
    workdir: Path,
    root: Path,
    *,
    url_prefix: str = "",
    upstream: str = "off",
    trusted_proxies: tuple[str, ...] | None = None,
    settings: Mapping[str, Mapping[str, TomlValue]] | None = None,
) -> Server:
    """Start `python -m pypid serve` on 127.0.0.1:0 and wait until /health answers 200."""
    workdir.mkdir(parents=True, exist_ok=True)
    cfg = workdir / "pypid.toml"
    write_config(
        cfg,
        root,
        url_prefix=url_prefix,
        upstream=upstream,
        trusted_proxies=trusted_proxies,
        settings=settings,
    )
    return launch(cfg, root, log=workdir / "server.log", url_prefix=url_prefix)


def launch(cfg: Path, root: Path, *, log: Path, url_prefix: str = "",
           extra_env: Mapping[str, str] | None = None) -> Server:
    """Start `python -m pypid serve --config cfg` (in log's folder, output to log) on
    127.0.0.1:0 and wait until /health answers 200; ``extra_env`` is added to its env."""
    env = {k: v for k, v in os.environ.items() if k not in ("NOTIFY_SOCKET", "PYPID_CONFIG")
           and not k.lower().endswith("_proxy")}  # a mirror would send loopback through it
    env.update(extra_env or {})
    env["PYTHONPATH"] = str(REPO_ROOT)
    env.setdefault("PYPID_BCRYPT_ROUNDS", "4")  # cheap hashes for test users
    cmd = [sys.executable, "-m", "pypid", "serve", "--config", str(cfg)]
    cmd += ["--host", "127.0.0.1", "--port", "0", "--root", str(root)]
    with log.open("wb") as logf:
        proc = subprocess.Popen(  # stopped by stop() in the fixture's finally
            cmd, cwd=log.parent, env=env, stdin=subprocess.DEVNULL, stdout=logf, stderr=logf
        )
    try:
        server = _wait_ready(proc, log, url_prefix, root)
    except BaseException:
        stop(proc)
        raise
    return server


def _wait_ready(proc: subprocess.Popen[bytes], log: Path, prefix: str, root: Path) -> Server:
    deadline = time.monotonic() + START_TIMEOUT
    server: Server | None = None
    while time.monotonic() < deadline and proc.poll() is None:
        if server is None:
            m = LISTENING_RE.search(log.read_text("utf-8", "replace"))
            if m:
                server = Server(proc, m.group(1), int(m.group(2)), prefix, root, log)
        if server is not None:
            try:
                if request(server.url("/health"), timeout=2).status == 200:
                    return server
            except OSError:
                pass
        time.sleep(0.1)
    state = f"exited with {proc.returncode}" if proc.poll() is not None else "still starting"
    text = log.read_text("utf-8", "replace")
    print(f"--- pypid server log ({log}) ---\n{text}", file=sys.stderr)
    pytest.fail(f"pypid serve not ready within {START_TIMEOUT}s ({state}); log:\n{text[-4000:]}")


# The second server of the session (test_prefix_upstream, test_proxy): prefix, upstream
# redirect, and no trusted proxy.
OTHER_SERVER: dict = {"url_prefix": "/pypi", "upstream": "redirect", "trusted_proxies": ()}

# Every server started this session, for the failure report (conftest).
STARTED: list[Server] = []


class ServerPool:
    """Starts one server on the corpus per distinct config and remembers it."""

    def __init__(self, tmp: pytest.TempPathFactory, corpus: Corpus) -> None:
        self._tmp = tmp
        self._corpus = corpus
        self.servers: dict[tuple[str, str, tuple[str, ...] | None], Server] = {}

    def __call__(
        self,
        *,
        url_prefix: str = "",
        upstream: str = "off",
        trusted_proxies: tuple[str, ...] | None = None,
    ) -> Server:
        key = (url_prefix, upstream, trusted_proxies)
        if key not in self.servers:
            workdir = self._tmp.mktemp("server")
            self.servers[key] = start_server(
                workdir,
                self._corpus.root,
                url_prefix=url_prefix,
                upstream=upstream,
                trusted_proxies=trusted_proxies,
            )
            STARTED.append(self.servers[key])
        return self.servers[key]

    def stop_all(self) -> None:
        for srv in self.servers.values():
            stop(srv.proc)
            if "Traceback" in srv.log_text():
                print(f"--- pypid server log ({srv.log}) ---\n{srv.log_text()}", file=sys.stderr)
