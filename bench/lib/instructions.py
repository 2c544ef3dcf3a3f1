"""Instructions a request costs: pypid's worker and nginx counted by valgrind's callgrind.

    python bench/instructions.py [--files 54307] [--requests 3000] [--src DIR] [--no-nginx]

Requests per second and CPU time per request depend on the machine (the same pypid
cost 19 us a page on one CPU and 35 us on the next, while nginx cost the same on
both) and on what else runs on it. The number of instructions a request executes
does not: callgrind counts them exactly, whatever the load, so two runs of the same
code give the same figure and a change of the code shows as a change of the count.
Only user-space instructions are counted (the kernel's work for a request, about
the same for both servers, is not), and an instruction of Python's interpreter is
not worth the same time as one of nginx's on every CPU: the ratio of the counts is
a floor of what the code asks, not a speed.

pypid runs with one worker under callgrind with instrumentation off; the worker
turns it on when it gets ``START_SIGNAL`` and writes the counts when it gets
``DUMP_SIGNAL`` (callgrind's client requests, from a small C library built here with
gcc and valgrind's header, called through ctypes). nginx runs as one process without
a master, driven by ``callgrind_control``. Each scenario: a warm-up of the same
requests uncounted, then ``--requests`` requests over ``--connections`` keep-alive
connections (closed loop, as wrk), counted.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from abc import ABC, abstractmethod
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

# Only here: the same pages over and over (pip installing the usual dependencies),
# which a worker keeps in memory; the spread of --compare's pages reads most back.
SC_HOT = "project html hot"
HOT_PAGES = 20
LIB_ENV = "PYPID_BENCH_CG_LIB"  # the C library the worker loads
MARK_ENV = "PYPID_BENCH_CG_MARK"  # the file the worker writes what it did to
START_SIGNAL = signal.SIGRTMIN + 1
DUMP_SIGNAL = signal.SIGRTMIN + 2
CG_SOURCE = """\
#include <valgrind/callgrind.h>
void bench_cg_start(void) { CALLGRIND_START_INSTRUMENTATION; CALLGRIND_ZERO_STATS; }
void bench_cg_dump(void) { CALLGRIND_DUMP_STATS_AT("measured"); CALLGRIND_STOP_INSTRUMENTATION; }
"""
WAIT_RENDERED = 900.0  # seconds for the pages' renderer under callgrind
WAIT = 120.0  # seconds for the worker to act on a signal, or a dump to appear


def serve_counted() -> None:
    """In the server process: give pypid's worker the two signals, then run ``pypid serve``."""
    import ctypes  # noqa: PLC0415 - only in the server
    import runpy  # noqa: PLC0415

    from pypid.worker import loop  # noqa: PLC0415

    lib = ctypes.CDLL(os.environ[LIB_ENV])
    mark = Path(os.environ[MARK_ENV])
    run = loop.PypidWorker.run

    def say(what: str) -> None:
        mark.write_text(f"{what} {os.getpid()}\n")

    def on_start(*_: Any) -> None:
        lib.bench_cg_start()
        say("started")

    def on_dump(*_: Any) -> None:
        lib.bench_cg_dump()
        say("dumped")

    def run_counted(self: Any) -> None:
        signal.signal(START_SIGNAL, on_start)  # after gunicorn's own handlers
        signal.signal(DUMP_SIGNAL, on_dump)
        say("ready")
        run(self)

    loop.PypidWorker.run = run_counted  # type: ignore[method-assign]
    sys.argv[0] = "pypid"
    runpy.run_module("pypid", run_name="__main__", alter_sys=True)


# --------------------------------------------------------------------------- the client


def drive(port: int, lines: list[str], headers: dict[str, str], *, count: int,
          connections: int, expect: int) -> None:
    """``count`` GETs of ``lines`` (a path, maybe with its own headers after tabs) in
    turn, over ``connections`` keep-alive connections, each sending its next request
    once its answer has come (``bench.lib.httpclient``); RuntimeError at the first
    answer that is not ``expect``."""
    asyncio.run(_drive(port, lines, headers, count=count, connections=connections,
                       expect=expect))


async def _drive(port: int, lines: list[str], headers: dict[str, str], *, count: int,
                 connections: int, expect: int) -> None:
    from bench.lib.host import HOST  # noqa: PLC0415
    from bench.lib.httpclient import Connection, request_bytes  # noqa: PLC0415
    from bench.lib.probe import split_path  # noqa: PLC0415

    requests = [request_bytes("GET", path, f"{HOST}:{port}", merged)
                for path, merged in (split_path(line, headers) for line in lines)]
    sent = 0

    async def client() -> None:
        nonlocal sent
        conn = Connection(port, WAIT)  # each answer within WAIT: the server runs ~50x slower
        try:
            while sent < count:
                line = lines[sent % len(lines)]
                raw = requests[sent % len(requests)]
                sent += 1
                reply = await conn.request(raw)
                if reply.status != expect:
                    raise RuntimeError(f"HTTP {reply.status} (expected {expect}): GET {line}")
        finally:
            await conn.close()

    await asyncio.gather(*(client() for _ in range(min(connections, count))))


# --------------------------------------------------------------------------- counting


def instructions(dump: Path) -> int:
    """The instructions (Ir) a callgrind dump counted."""
    for line in dump.read_text().splitlines():
        if line.startswith(("summary:", "totals:")):
            return int(line.split()[1])
    raise RuntimeError(f"{dump}: no summary or totals line")


def _new_dump(folder: Path, prefix: str, before: set[Path]) -> Path:
    deadline = time.monotonic() + WAIT
    while time.monotonic() < deadline:
        found = [p for p in folder.glob(prefix + ".*") if p not in before]
        for path in found:
            if "totals:" in path.read_text():  # written to the end
                return path
        time.sleep(0.2)
    raise RuntimeError(f"no new callgrind dump {folder / prefix}.* after {WAIT:.0f} s")


class Counter(ABC):
    """Zeroes and reads one server process's instruction count."""

    def __init__(self, folder: Path, pid: int) -> None:
        self.folder, self.pid = folder, pid
        self._before: set[Path] = set()

    @abstractmethod
    def start(self) -> None:
        """Count from now."""

    @abstractmethod
    def finish(self) -> int:
        """The instructions since ``start``."""


class SignalledWorker(Counter):
    """pypid's worker, which counts between ``START_SIGNAL`` and ``DUMP_SIGNAL``."""

    def __init__(self, folder: Path, pid: int, mark: Path) -> None:
        super().__init__(folder, pid)
        self.mark = mark

    def _tell(self, sig: int, answer: str) -> None:
        self.mark.write_text("")
        os.kill(self.pid, sig)
        deadline = time.monotonic() + WAIT
        while self.mark.read_text().split()[:1] != [answer]:
            if time.monotonic() > deadline:
                raise RuntimeError(f"the worker did not say {answer!r} in {WAIT:.0f} s")
            time.sleep(0.05)

    def start(self) -> None:
        self._before = set(self.folder.glob(f"pypid.{self.pid}.*"))
        self._tell(START_SIGNAL, "started")

    def finish(self) -> int:
        self._tell(DUMP_SIGNAL, "dumped")
        return instructions(_new_dump(self.folder, f"pypid.{self.pid}", self._before))


class Controlled(Counter):
    """A process under callgrind, zeroed and dumped with ``callgrind_control``."""

    def _control(self, option: str) -> None:
        subprocess.run(["callgrind_control", option, str(self.pid)], check=True,
                       capture_output=True, timeout=WAIT)

    def start(self) -> None:
        self._before = set(self.folder.glob(f"nginx.{self.pid}.*"))
        self._control("--zero")

    def finish(self) -> int:
        self._control("--dump=measured")
        return instructions(_new_dump(self.folder, f"nginx.{self.pid}", self._before))


# --------------------------------------------------------------------------- the run


@dataclass(frozen=True)
class Chosen:
    name: str  # as in bench/run.py --compare
    share: float  # of --requests and --warmup (nginx gzips /simple/ at each request)
    connections: int


def chosen_scenarios(many: int) -> list[Chosen]:
    from bench.lib import report  # noqa: PLC0415

    return [Chosen(report.SC_HTML, 1, 32), Chosen(SC_HOT, 1, 32), Chosen(report.SC_JSON, 1, 32),
            Chosen(report.SC_304, 1, 32), Chosen(report.SC_HTML_MANY, 1, many),
            Chosen(report.SC_DL, 1, 32), Chosen(report.SC_SIMPLE_GZ, 0.05, 32)]


def build_helper(work: Path) -> Path:
    """The C library the pypid worker calls (gcc and valgrind's header)."""
    header = Path("/usr/include/valgrind/callgrind.h")
    if shutil.which("gcc") is None or not header.exists():
        raise SystemExit("needs gcc and valgrind's headers: apt-get install gcc valgrind")
    source = work / "bench_cg.c"
    source.write_text(CG_SOURCE)
    lib = work / "bench_cg.so"
    subprocess.run(["gcc", "-shared", "-fPIC", "-O1", "-o", str(lib), str(source)],
                   check=True, timeout=120)
    return lib


def measure_server(kind: str, counter: Counter, port: int, corpus: Any, *, count: int,
                   warmup: int, only: list[str]) -> dict[str, Any]:
    from bench.lib import report  # noqa: PLC0415
    from bench.lib.compare import build_scenarios  # noqa: PLC0415
    from bench.lib.host import log  # noqa: PLC0415

    scenarios, _ = build_scenarios(kind, corpus, port, per_request=WAIT)
    by_name = {sc.name: sc for sc in scenarios}
    html = by_name[report.SC_HTML]
    by_name[SC_HOT] = replace(html, name=SC_HOT, paths=html.paths[:HOT_PAGES])
    out: dict[str, Any] = {}
    for chosen in chosen_scenarios(256):
        sc = by_name.get(chosen.name)
        if sc is None or (only and chosen.name not in only):
            continue
        n = max(50, round(count * chosen.share))
        drive(port, sc.paths, sc.headers, count=max(10, round(warmup * chosen.share)),
              connections=chosen.connections,
              expect=sc.expect)
        counter.start()
        t0 = time.monotonic()
        drive(port, sc.paths, sc.headers, count=n, connections=chosen.connections,
              expect=sc.expect)
        total = counter.finish()
        out[sc.name] = {"requests": n, "connections": chosen.connections,
                        "instructions": total, "per_request": total / n}
        log(f"{kind} {sc.name}: {total / n:,.0f} instructions a request ({n} requests, "
            f"{time.monotonic() - t0:.1f} s under callgrind)")
    return out


def callgrind_prefix(pin: Any, work: Path, name: str, *, at_start: bool) -> list[str]:
    return [*pin.prefix(), "valgrind", "--tool=callgrind", "--quiet",
            f"--instr-atstart={'yes' if at_start else 'no'}",
            f"--callgrind-out-file={work / name}.%p"]


class _Wrapped:
    """A Pin whose prefix runs the server under callgrind."""

    def __init__(self, prefix: list[str]) -> None:
        self._prefix = prefix

    def prefix(self) -> list[str]:
        return self._prefix


def run_pypid(args: argparse.Namespace, corpus: Any, work: Path, pin: Any) -> dict[str, Any]:
    from bench.lib.host import REPO  # noqa: PLC0415
    from bench.lib.probe import first_200  # noqa: PLC0415
    from bench.lib.server import START_TIMEOUT  # noqa: PLC0415
    from bench.lib.targets import PypidTarget  # noqa: PLC0415

    lib = build_helper(work)
    mark = work / "mark"
    target = PypidTarget(args.python, 1, args.src,
                         launch="import bench.lib.instructions as i; i.serve_counted()",
                         env={LIB_ENV: str(lib), MARK_ENV: str(mark),
                              "PYTHONPATH": f"{args.src}{os.pathsep}{REPO}"})
    server = target.start(corpus, work, _Wrapped(
        callgrind_prefix(pin, work, "pypid", at_start=False)))
    try:
        server.wait_listening(START_TIMEOUT)
        first_200(server, "/simple/", START_TIMEOUT)
        # under callgrind the pages' renderer is as slow as the rest: count pages read from
        # the shared file, not the worker's own renders meanwhile
        if not server.wait_pages_rendered(WAIT_RENDERED):
            raise RuntimeError("the pages were not rendered in time")
        deadline = time.monotonic() + WAIT
        while not (mark.exists() and mark.read_text().startswith("ready")):
            if time.monotonic() > deadline:
                raise RuntimeError("the worker did not start")
            time.sleep(0.1)
        worker = int(mark.read_text().split()[1])
        assert server.port is not None
        try:
            return measure_server("pypid", SignalledWorker(work, worker, mark), server.port,
                                  corpus, count=args.requests, warmup=args.warmup,
                                  only=args.only)
        except RuntimeError as exc:  # what the server said is most of the why
            raise RuntimeError(f"{exc}; the server's last lines:\n{server.tail(15)}") from None
    finally:
        server.stop()


def run_nginx(args: argparse.Namespace, corpus: Any, work: Path,
              pin: Any) -> tuple[str, dict[str, Any]]:
    """(nginx's version, its figures)."""
    from bench.lib.probe import first_200  # noqa: PLC0415
    from bench.lib.server import START_TIMEOUT  # noqa: PLC0415
    from bench.lib.targets import NginxTarget  # noqa: PLC0415

    target = NginxTarget(master=False)
    version = target.ensure_installed()
    server = target.start(corpus, work, _Wrapped(
        callgrind_prefix(pin, work, "nginx", at_start=True)))
    try:
        first_200(server, "/simple/", START_TIMEOUT)
        assert server.port is not None
        return version, measure_server("nginx", Controlled(work, server.pid), server.port,
                                       corpus, count=args.requests, warmup=args.warmup,
                                       only=args.only)
    finally:
        server.stop()


def render(results: dict[str, dict[str, Any]], meta: dict[str, Any]) -> list[str]:
    pypid, nginx = results.get("pypid", {}), results.get("nginx", {})
    lines = [f"instructions a request (user space, callgrind): pypid {meta['pypid']}, "
             f"nginx {meta.get('nginx', 'not run')}, {meta['files']:,} files, "
             f"{meta['requests']:,} requests counted a scenario",
             f"{'scenario':20} {'conns':>5} {'pypid':>10} {'nginx':>10} {'pypid/nginx':>12}"]
    for name, mine in pypid.items():
        theirs = nginx.get(name)
        ratio = f"{mine['per_request'] / theirs['per_request']:.2g}x" if theirs else "-"
        other = f"{theirs['per_request']:,.0f}" if theirs else "-"
        lines.append(f"{name:20} {mine['connections']:>5} {mine['per_request']:>10,.0f} "
                     f"{other:>10} {ratio:>12}")
    return lines


def main(argv: list[str] | None = None) -> int:
    from bench.lib.corpus import build_corpus, projects_for_files  # noqa: PLC0415
    from bench.lib.host import REPO, dirty, git_rev, log, pick_cpus  # noqa: PLC0415

    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--files", type=int, default=54_307)
    ap.add_argument("--requests", type=int, default=3000, help="counted a scenario")
    ap.add_argument("--warmup", type=int, default=500, help="uncounted, before each scenario")
    ap.add_argument("--python", default=sys.executable)
    ap.add_argument("--src", type=Path, default=REPO, help="the pypid checkout to count")
    ap.add_argument("--no-nginx", action="store_true")
    ap.add_argument("--scenarios", default="",
                    help="only these, comma-separated (names as in the table)")
    ap.add_argument("--keep", action="store_true",
                    help="keep callgrind's files (for callgrind_annotate) beside the figures")
    args = ap.parse_args(argv)
    args.only = [name.strip() for name in args.scenarios.split(",") if name.strip()]
    if shutil.which("valgrind") is None:
        raise SystemExit("needs valgrind: apt-get install valgrind")
    corpus = build_corpus(projects_for_files(args.files))
    server_pin, _ = pick_cpus(True)
    work = REPO / "bench" / "out" / f"instructions-{time.strftime('%Y%m%d-%H%M%S')}"
    work.mkdir(parents=True)
    (work / "pypid").mkdir()
    results = {"pypid": run_pypid(args, corpus, work / "pypid", server_pin)}
    changed = " (uncommitted changes)" if dirty(args.src) else ""
    meta = {"pypid": f"{git_rev(args.src) or args.src}{changed}", "files": args.files,
            "requests": args.requests,
            "valgrind": subprocess.run(["valgrind", "--version"], capture_output=True,
                                       text=True, check=False).stdout.strip()}
    if not args.no_nginx:
        (work / "nginx").mkdir()
        version, results["nginx"] = run_nginx(args, corpus, work / "nginx", server_pin)
        meta["nginx"] = version
    lines = render(results, meta)
    print("\n".join(lines))
    out = work.with_suffix(".json")
    out.write_text(json.dumps({"meta": meta, "results": results, "table": lines}, indent=1))
    if args.keep:
        log(f"callgrind's files: {work}/*/*.<pid>.<n> (callgrind_annotate FILE)")
    else:
        shutil.rmtree(work, ignore_errors=True)
    log(f"figures: {out}")
    return 0
