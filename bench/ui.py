"""Web UI benchmark: requests/s of a cached project page and of the project list.

    python bench/ui.py [--projects 200] [--duration 10] [--connections 32]

One run, not a test. Builds a modest root (``--projects`` projects, two wheels each,
a Markdown README, dependencies between them), starts ``python -m pypid serve`` from
this checkout with one worker and no access log, pinned to the first CPU, renders
each measured page once, then runs wrk (one thread, pinned to the second CPU) on it.
"""

from __future__ import annotations

import argparse
import re
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # the repo: bench.lib, tests

from bench.lib.host import HOST, ensure_wrk, log, pick_cpus  # noqa: E402
from bench.lib.server import Server  # noqa: E402
from tests.builders import make_wheel  # noqa: E402

LISTENING = re.compile(r"Listening at: http://([^\s:]+):(\d+)")
README = "# {name}\n\nA *benchmark* project.\n\n```python\nimport {part}\n```\n\n" + (
    "Some words about it, and a [link](https://example.org/).\n\n" * 40)


def build(root: Path, projects: int) -> None:
    for i in range(projects):
        name = f"bench-ui-{i:04d}"
        deps = [f"bench-ui-{i - 1:04d}>=1"] if i else []
        for version in ("1.0", "1.1"):
            make_wheel(root, name, version, requires_dist=deps, description=(
                "text/markdown", README.format(name=name, part=name.replace("-", "_"))))


def wrk(url: str, args: argparse.Namespace, prefix: list[str]) -> float:
    out = subprocess.run([*prefix, ensure_wrk(), "-t1", f"-c{args.connections}",
                          f"-d{args.duration}s", "-H", "Accept-Encoding: identity", url],
                         capture_output=True, text=True, check=True,
                         timeout=args.duration + 60).stdout
    match = re.search(r"Requests/sec:\s+([0-9.]+)", out)
    errors = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    if match is None or errors is not None:
        raise SystemExit(f"wrk failed on {url}:\n{out}")
    return float(match.group(1))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--projects", type=int, default=200)
    parser.add_argument("--duration", type=int, default=10)
    parser.add_argument("--connections", type=int, default=32)
    args = parser.parse_args(argv)
    server_pin, client_pin = pick_cpus(True)
    with tempfile.TemporaryDirectory(prefix="pypid-bench-ui-") as tmp:
        work = Path(tmp)
        root = work / "packages"
        log(f"building {args.projects} projects in {root}")
        build(root, args.projects)
        config = work / "pypid.toml"
        config.write_text('[server]\nworkers = 1\n[log]\naccess_log = false\n'
                          '[upstream]\nmode = "off"\n', encoding="utf-8")
        cmd = [*server_pin.prefix(), sys.executable, "-m", "pypid", "serve", "--config",
               str(config), "--host", HOST, "--port", "0", "--root", str(root)]
        server = Server("pypid", cmd, env={"PATH": "/usr/bin:/bin", "PYTHONPATH": str(
            Path(__file__).resolve().parents[1])}, cwd=work, port_regex=LISTENING, port=None)
        try:
            server.wait_listening(120)
            base = f"http://{HOST}:{server.port}"
            _wait_ok(base + "/health")
            results = {}
            for label, path in (("UI project page (cached)", "/project/bench-ui-0100/"),
                                ("UI project list (cached)", "/projects/")):
                started = time.perf_counter()
                size = len(urllib.request.urlopen(base + path, timeout=30).read())  # noqa: S310
                first_ms = (time.perf_counter() - started) * 1000
                results[label] = (wrk(base + path, args, client_pin.prefix()), size, first_ms)
        finally:
            server.stop()
    print(f"\npypid web UI, {args.projects} projects, 1 worker on one CPU, wrk -t1 "
          f"-c{args.connections} -d{args.duration}s")
    print(f"{'page':28} {'req/s':>9} {'bytes':>8} {'first render':>13}")
    for label, (rate, size, first_ms) in results.items():
        print(f"{label:28} {rate:9.0f} {size:8d} {first_ms:10.1f} ms")
    return 0


def _wait_ok(url: str) -> None:
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        try:
            if urllib.request.urlopen(url, timeout=2).status == 200:  # noqa: S310
                return
        except OSError:
            time.sleep(0.1)
    raise SystemExit(f"{url} never answered 200")


if __name__ == "__main__":
    sys.exit(main())
