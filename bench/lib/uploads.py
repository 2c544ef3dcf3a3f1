"""Uploads side by side: twine sending ``UPLOAD_FILES`` small wheels to pypid and to
pypiserver, each serving its own fresh root of hard links to the corpus (issue 18,
target 5: uploads at least 10x pypiserver's speed).

A fresh root each, because uploads add files and the corpus must stay as it is for the
other runs. pypid takes the upload with a login (bcrypt, checked once and remembered);
pypiserver as ``--compare`` runs it, without one (``-a . -P .``): any difference
favours pypiserver. Each target gets one unmeasured upload first (the first login, the
first write into the root), then ``rounds`` measured twine runs; the figure is the median.
"""

from __future__ import annotations

import dataclasses
import json
import os
import shutil
import statistics
import subprocess
import time
from pathlib import Path
from typing import Any

from bench.lib.corpus import Corpus
from bench.lib.host import HOST, Pin, log
from bench.lib.load import PASSWORD, USER, add_user
from bench.lib.probe import first_200
from bench.lib.server import START_TIMEOUT
from bench.lib.targets import PypidTarget, Target
from tests.builders import make_wheel

UPLOAD_FILES = 20
PAYLOAD_BYTES = 4096  # random bytes in each wheel: ~5 KB files


def fresh_root(corpus: Corpus, dest: Path) -> Path:
    """A new root of hard links to every file of the corpus, without its cache."""
    dest.mkdir(parents=True)
    for f in corpus.files:
        os.link(corpus.root / f.filename, dest / f.filename)
    return dest


def find_twine(python: str) -> str | None:
    beside = Path(python).parent / "twine"
    return str(beside) if beside.is_file() else shutil.which("twine")


def twine_upload(twine: str, port: int, wheels: list[Path], pin: Pin, home: Path) -> float:
    """Seconds one ``twine upload`` of ``wheels`` took; RuntimeError if it failed."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("TWINE_", "PYPID_"))}
    env.update(HOME=str(home), NO_PROXY="*", no_proxy="*")
    cmd = [*pin.prefix(), twine, "upload", "--non-interactive", "--disable-progress-bar",
           "--repository-url", f"http://{HOST}:{port}/", "-u", USER, "-p", PASSWORD,
           *map(str, wheels)]
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=600,
                          check=False)
    if proc.returncode != 0:
        raise RuntimeError(f"twine failed: {(proc.stdout + proc.stderr)[-800:]}")
    return time.perf_counter() - t0


def upload_login(htpasswd: Path) -> str:
    """pypid's config lines for uploads behind the logins in ``htpasswd``."""
    return f'[auth]\nhtpasswd = {json.dumps(str(htpasswd))}\nprotect = ["upload"]\n'


def upload_target(target: Target, work: Path) -> Target:
    """``target`` as it runs for the uploads: its own root (and a login, for pypid)."""
    if isinstance(target, PypidTarget):
        htpasswd = work / "htpasswd"
        add_user(target.python, target.src, work, htpasswd)
        return PypidTarget(target.python, target.workers, target.src, name=target.name,
                           settings=upload_login(htpasswd))
    return target


def measure_uploads(targets: dict[str, Target], corpus: Corpus, work: Path, *, rounds: int,
                    server_pin: Pin, client_pin: Pin, python: str) -> dict[str, Any]:
    """{target name: {"seconds": [...], "median_s": ...} or {"error": ...}} for pypid and
    pypiserver, or {"error": ...} when twine is not installed."""
    twine = find_twine(python)
    if twine is None:
        return {"error": "twine not found beside --python or on PATH"}
    out: dict[str, Any] = {}
    for name, given in targets.items():
        if name not in ("pypid", "pypiserver"):
            continue
        side = work / f"uploads-{name}"
        side.mkdir(parents=True)
        root = fresh_root(corpus, side / "root")
        target = upload_target(given, side)
        server = target.start(dataclasses.replace(corpus, root=root), side, server_pin)
        try:
            server.wait_listening(START_TIMEOUT)
            first_200(server, "/simple/", START_TIMEOUT)
            assert server.port is not None
            dist = side / "dist"
            twine_upload(twine, server.port, [make_wheel(dist / "warm", "upbench", "0.1")],
                         client_pin, side)
            seconds = []
            for r in range(rounds):
                wheels = [make_wheel(dist / str(r), "upbench", f"{r + 1}.{i}",
                                     payload=os.urandom(PAYLOAD_BYTES))
                          for i in range(UPLOAD_FILES)]
                seconds.append(twine_upload(twine, server.port, wheels, client_pin, side))
                log(f"    uploads r{r + 1} {name}: {UPLOAD_FILES} wheels in {seconds[-1]:.2f} s")
            out[name] = {"files": UPLOAD_FILES, "seconds": seconds,
                         "median_s": statistics.median(seconds)}
        except RuntimeError as exc:
            out[name] = {"error": str(exc).splitlines()[0]}
            log(f"    uploads {name} FAILED: {exc}")
        finally:
            server.stop()
            shutil.rmtree(side, ignore_errors=True)
    return out

