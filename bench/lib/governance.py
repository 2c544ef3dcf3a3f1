"""What governance costs (``python bench/governance.py``): uploads with their audit lines,
``pypid audit --verify`` of a long log, a project page with many yanked files.

    python bench/governance.py uploads [--baseline 38b858a] [--files 20] [--rounds 3]
    python bench/governance.py verify [--entries 1000000] [--rounds 3]
    python bench/governance.py yanked [--page-files 1000] [--yanked 200] [--duration 5]

Not a test: it prints figures (stdout) and asserts no time. Servers run from this
checkout (a snapshot) or a baseline commit's worktree, one worker, pinned to the first
CPU; twine, the CLI and wrk run on the second, as in the rest of the bench.
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import shutil
import statistics
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path
from typing import Any

from bench.lib.baseline import git_worktree
from bench.lib.compare import snapshot
from bench.lib.corpus import OUT_DIR, Corpus
from bench.lib.host import HOST, REPO, Pin, ensure_wrk, git_rev, log, pick_cpus
from bench.lib.load import PASSWORD, USER, add_user
from bench.lib.probe import JSON_V1, Scenario, first_200, run_wrk
from bench.lib.procs import tree_cpu_seconds
from bench.lib.server import START_TIMEOUT, Server
from bench.lib.targets import PypidTarget
from bench.lib.uploads import find_twine, upload_login
from pypid.events import HEAD_NAME, LOG_NAME, ZERO_HASH, EventLog, encode, line_hash
from tests.builders import make_wheel

BASELINE = "38b858a"  # the last commit before uploads were written to the audit log
HTML = "text/html"


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("what", nargs="*", choices=("uploads", "verify", "yanked"),
                    help="which measurements (default: all three)")
    ap.add_argument("--rounds", type=int, default=3, help="each figure is the median of these")
    ap.add_argument("--python", default=sys.executable, help="interpreter of servers and CLI")
    ap.add_argument("--src", type=Path, default=REPO, help="directory holding pypid")
    ap.add_argument("--no-pin", dest="pin", action="store_false", help="no taskset pinning")
    ap.add_argument("--keep", action="store_true", help="keep the work dir under bench/out/")
    up = ap.add_argument_group("uploads")
    up.add_argument("--baseline", metavar="REF", default=BASELINE,
                    help=f"the commit to compare with (default {BASELINE})")
    up.add_argument("--files", type=int, default=20, help="wheels per twine run")
    up.add_argument("--twine", default=None, help="twine (default: beside --python, or PATH)")
    ver = ap.add_argument_group("verify")
    ver.add_argument("--entries", type=int, default=1_000_000, help="lines of the log")
    page = ap.add_argument_group("yanked")
    page.add_argument("--page-files", type=int, default=1000, help="files of the project")
    page.add_argument("--yanked", type=int, default=200, help="of them yanked")
    page.add_argument("--duration", type=float, default=5.0, help="seconds per wrk run")
    page.add_argument("--connections", type=int, default=32)
    args = ap.parse_args(argv)
    args.what = args.what or ["uploads", "verify", "yanked"]
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    server_pin, client_pin = pick_cpus(args.pin)
    work = OUT_DIR / f"governance-{time.strftime('%Y%m%d-%H%M%S')}"
    work.mkdir(parents=True)
    results: dict[str, Any] = {"src": f"{args.src} ({git_rev(args.src) or '?'})",
                               "loadavg_start": os.getloadavg()}
    try:
        if "uploads" in args.what:
            results["uploads"] = uploads(args, work / "uploads", server_pin, client_pin)
        if "verify" in args.what:
            results["verify"] = verify(args, work / "verify", client_pin)
        if "yanked" in args.what:
            results["yanked"] = yanked_page(args, work / "yanked", server_pin, client_pin)
    finally:
        if not args.keep:
            shutil.rmtree(work, ignore_errors=True)
    results["loadavg_end"] = os.getloadavg()
    out = OUT_DIR / f"{work.name}.json"
    out.write_text(json.dumps(results, indent=1))
    print(f"load average {results['loadavg_start'][0]:.2f} -> {results['loadavg_end'][0]:.2f} "
          "(other work on the machine moves these figures)")
    log(f"wrote {out}")
    return 0


# -- a server of the bench


@contextmanager
def serving(target: PypidTarget, root: Path, workdir: Path, pin: Pin) -> Iterator[Server]:
    """``target`` serving ``root`` until the block ends; ready once /simple/ is 200."""
    workdir.mkdir(parents=True, exist_ok=True)
    corpus = Corpus(0, workdir, root, [], [], [], 0.0, False)
    server = target.start(corpus, workdir, pin)
    try:
        server.wait_listening(START_TIMEOUT)
        target.check_source(server)
        first_200(server, "/simple/", START_TIMEOUT)
        yield server
    finally:
        server.stop()


def _median(values: list[float]) -> float:
    return statistics.median(values) if values else float("nan")


# -- a. uploads, with and without their audit lines


def uploads(args: argparse.Namespace, work: Path, server_pin: Pin,
            client_pin: Pin) -> dict[str, Any]:
    """twine uploading --files wheels to this checkout and to --baseline, both servers up
    at once, the order swapped every round; seconds per twine run, server CPU per file."""
    twine = args.twine or find_twine(args.python)
    if twine is None:
        raise SystemExit("twine not found: pass --twine PATH")
    dist = work / "dist"
    rounds = [[make_wheel(dist / str(r), "govbench", f"{r + 1}.{i}", payload=os.urandom(4096))
               for i in range(args.files)] for r in range(args.rounds)]
    figures: dict[str, dict[str, list[float]]] = {}
    with git_worktree(REPO, args.baseline) as (tree, commit):
        sides = {f"pypid@{commit}": tree, "pypid": snapshot(args.src.resolve(), work)}
        with upload_servers(sides, work, server_pin, args.python) as servers:
            warm = make_wheel(dist / "warm", "govbench", "0.1")
            for server in servers.values():  # unmeasured: the first login's bcrypt check
                _twine(twine, server, [warm], client_pin, work)
            for r, wheels in enumerate(rounds):
                names = list(servers) if r % 2 == 0 else list(servers)[::-1]
                for name in names:
                    wall, cpu = _twine(twine, servers[name], wheels, client_pin, work)
                    seen = figures.setdefault(name, {"seconds": [], "cpu_ms_per_file": []})
                    seen["seconds"].append(wall)
                    seen["cpu_ms_per_file"].append(cpu / len(wheels) * 1000)
                    log(f"  round {r + 1}: {name}: {wall:.2f} s")
    before, after = (_median(figures[name]["seconds"]) for name in sides)
    cpu_before, cpu_after = (_median(figures[name]["cpu_ms_per_file"]) for name in sides)
    print(f"uploads: twine, {args.files} wheels (~5 KB) per run, one worker, median of "
          f"{args.rounds} run(s)")
    for name, seconds, cpu in zip(sides, (before, after), (cpu_before, cpu_after), strict=True):
        print(f"  {name:<18} {seconds:6.2f} s  {args.files / seconds:6.1f} files/s  "
              f"server CPU {cpu:6.1f} ms/file")
    print(f"  after/before: time x{after / before:.3f}, server CPU x{cpu_after / cpu_before:.3f}"
          " (target: time within 10%)")
    return {"baseline": args.baseline, "runs": figures, "ratio_seconds": after / before,
            "ratio_cpu": cpu_after / cpu_before}


@contextmanager
def upload_servers(sides: dict[str, Path], work: Path, pin: Pin,
                   python: str) -> Iterator[dict[str, Server]]:
    """One upload server per side (empty root, a login), all running inside the block."""
    with ExitStack() as stack:
        servers: dict[str, Server] = {}
        for i, (name, src) in enumerate(sides.items()):
            side = work / f"side-{i}"
            (side / "root").mkdir(parents=True)
            htpasswd = side / "htpasswd"
            add_user(python, src, side, htpasswd)
            target = PypidTarget(python, 1, src, name=name, settings=upload_login(htpasswd))
            servers[name] = stack.enter_context(serving(target, side / "root", side, pin))
        yield servers


def _twine(twine: str, server: Server, wheels: list[Path], pin: Pin,
           work: Path) -> tuple[float, float]:
    """One twine run: (wall seconds, the server's CPU seconds)."""
    home = work / "home"
    home.mkdir(exist_ok=True)
    env = {k: v for k, v in os.environ.items() if not k.startswith(("TWINE_", "PYPID_"))}
    env.update(HOME=str(home), NO_PROXY="*", no_proxy="*")
    cmd = [*pin.prefix(), twine, "upload", "--non-interactive", "--disable-progress-bar",
           "--repository-url", f"http://{HOST}:{server.port}/", "-u", USER, "-p", PASSWORD,
           *map(str, wheels)]
    pids = server.remember_tree()
    cpu0, t0 = tree_cpu_seconds(pids), time.perf_counter()
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=600,
                          check=False)
    wall, cpu = time.perf_counter() - t0, tree_cpu_seconds(pids) - cpu0
    if proc.returncode != 0:
        raise RuntimeError(f"twine failed on {server.name}: {proc.stdout[-1500:]}"
                           f"{proc.stderr[-1500:]}")
    return wall, cpu


# -- b. pypid audit --verify of a long log


def verify(args: argparse.Namespace, work: Path, pin: Pin) -> dict[str, Any]:
    """A valid chained log of --entries lines written directly (encode, line_hash), then
    ``pypid audit --verify`` timed as an administrator runs it."""
    root = work / "root"
    t0 = time.perf_counter()
    size = write_log(root / ".pypid", args.entries)
    made = time.perf_counter() - t0
    conf = work / "pypid.toml"
    conf.write_text(f"[storage]\nroot = {json.dumps(str(root))}\n")
    env = {**os.environ, "PYTHONPATH": str(args.src)}
    cmd = [*pin.prefix(), args.python, "-m", "pypid", "audit", "--verify", "--config", str(conf)]
    seconds = []
    for r in range(args.rounds):
        t0 = time.perf_counter()
        proc = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=600,
                              check=False)
        seconds.append(time.perf_counter() - t0)
        if proc.returncode != 0 or f"{args.entries} entries" not in proc.stdout:
            raise RuntimeError(f"pypid audit --verify failed: {proc.stdout}{proc.stderr}")
        log(f"  round {r + 1}: {seconds[-1]:.2f} s")
    print(f"verify: `pypid audit --verify` of {args.entries:,} entries ({size / 1e6:.0f} MB, "
          f"written in {made:.1f} s): {_median(seconds):.2f} s, median of {args.rounds} "
          f"(min {min(seconds):.2f}, max {max(seconds):.2f}; target < 10 s)")
    return {"entries": args.entries, "bytes": size, "seconds": seconds}


def write_log(directory: Path, entries: int) -> int:
    """A valid log of uploads, yanks, unyanks and status changes, and its head; its size."""
    directory.mkdir(parents=True)
    prev, batch = ZERO_HASH, []
    with open(directory / LOG_NAME, "wb") as out:
        for seq in range(1, entries + 1):
            project = f"project-{seq % 5000:04d}"
            name = f"project_{seq % 5000:04d}-{seq // 5000}.0-py3-none-any.whl"
            kind = seq % 8
            if kind < 5:
                fields: dict[str, Any] = {"project": project, "file": name,
                                          "sha256": f"{seq:064x}", "size": 10_000 + seq % 977}
                action, user = "upload", "alice"
            elif kind < 7:
                fields = {"project": project, "file": name, "reason": "broken build"}
                action, user = ("yank", "unyank")[kind - 5], "cli:root"
            else:
                fields = {"project": project, "status": "deprecated", "reason": "use another"}
                action, user = "status", "bob"
            line = encode(seq, action, fields, when=f"2026-12-05T06:{seq // 60 % 60:02d}:"
                          f"{seq % 60:02d}.{seq % 999_999:06d}Z", user=user,
                          client="10.0.0.7", prev=prev)
            prev = line_hash(line)
            batch.append(line)
            if len(batch) == 10_000:
                out.write(b"\n".join(batch) + b"\n")
                batch.clear()
        if batch:
            out.write(b"\n".join(batch) + b"\n")
    (directory / HEAD_NAME).write_text(f"{entries} {prev}\n", encoding="ascii")
    return (directory / LOG_NAME).stat().st_size


# -- c. a project page with yanked files


def yanked_page(args: argparse.Namespace, work: Path, server_pin: Pin,
                client_pin: Pin) -> dict[str, Any]:
    """One project of --page-files files; its HTML and JSON page under wrk with none and
    with --yanked of them yanked (audit lines appended, the page waited for), in turn."""
    ensure_wrk()
    root = work / "root"
    names = [make_wheel(root, "bigpage", f"1.{i}").name for i in range(args.page_files)]
    marked = names[::max(1, len(names) // args.yanked)][:args.yanked]
    events = EventLog(root / ".pypid")
    path = "/simple/bigpage/"
    scenarios = [Scenario("page html", [path], {"Accept": HTML}),
                 Scenario("page json", [path], {"Accept": JSON_V1})]
    rps: dict[tuple[str, str], list[float]] = {}
    cpu: dict[tuple[str, str], list[float]] = {}
    target = PypidTarget(args.python, 1, snapshot(args.src.resolve(), work))
    with serving(target, root, work / "server", server_pin) as server:
        assert server.port is not None
        for r in range(args.rounds):
            for state in ("none", "yanked"):
                action = "yank" if state == "yanked" else "unyank"
                if r or state == "yanked":
                    for name in marked:
                        events.append(action, user="cli:bench", project="bigpage", file=name,
                                      reason="bench" if action == "yank" else None)
                _wait_page(server.port, len(marked) if state == "yanked" else 0)
                for sc in scenarios:
                    run_wrk(server.port, sc, work, duration=1, connections=args.connections,
                            threads=1, pin=client_pin)  # warm-up: the page cache
                    pids = server.remember_tree()
                    cpu0 = tree_cpu_seconds(pids)
                    w = run_wrk(server.port, sc, work, duration=args.duration,
                                connections=args.connections, threads=1, pin=client_pin)
                    if w["errors"]:
                        raise RuntimeError(f"{sc.name} ({state}): {w['errors']} errors")
                    rps.setdefault((sc.name, state), []).append(w["rps"])
                    cpu.setdefault((sc.name, state), []).append(
                        (tree_cpu_seconds(pids) - cpu0) / w["requests"] * 1e6)
                    log(f"  round {r + 1}: {sc.name}, {state}: {w['rps']:,.0f} req/s")
    print(f"yanked: GET {path} ({args.page_files} files), none yanked vs {len(marked)} "
          f"yanked; wrk -c{args.connections} -d{args.duration:g}s, one worker, median of "
          f"{args.rounds}")
    out: dict[str, Any] = {}
    for sc in scenarios:
        none, some = (_median(rps[(sc.name, s)]) for s in ("none", "yanked"))
        us_none, us_some = (_median(cpu[(sc.name, s)]) for s in ("none", "yanked"))
        print(f"  {sc.name}: {none:8,.0f} req/s none, {some:8,.0f} req/s yanked: "
              f"x{some / none:.3f}  (server {us_none:.0f} -> {us_some:.0f} us/req)")
        out[sc.name] = {"rps_none": rps[(sc.name, "none")],
                        "rps_yanked": rps[(sc.name, "yanked")], "ratio": some / none,
                        "us_per_req_none": cpu[(sc.name, "none")],
                        "us_per_req_yanked": cpu[(sc.name, "yanked")]}
    return out


def _wait_page(port: int, count: int, timeout: float = 30.0) -> None:
    """Until the JSON page shows ``count`` yanked files."""
    deadline = time.perf_counter() + timeout
    while time.perf_counter() < deadline:
        body = _json_page(port)
        if body is not None and sum(f["yanked"] is not False for f in body["files"]) == count:
            return
        time.sleep(0.05)
    raise RuntimeError(f"the page never showed {count} yanked files")


def _json_page(port: int) -> dict[str, Any] | None:
    conn = http.client.HTTPConnection(HOST, port, timeout=10)
    try:
        conn.request("GET", "/simple/bigpage/", headers={"Accept": JSON_V1})
        resp = conn.getresponse()
        data = resp.read()
        return json.loads(data) if resp.status == 200 else None
    finally:
        conn.close()
