"""Before/after: this checkout against a git commit, interleaved on the same corpora.

    python bench/run.py --baseline REF [--smoke | --quick] [--sizes 1000,10000,100000]
                                       [--rounds 3] [--duration 10] [--limit 0.05]

REF is checked out into a temporary ``git worktree`` (removed afterwards) and runs as
the target ``pypid@REF`` beside ``pypid`` (a snapshot of this checkout): the same
Python, the same pinning, REF's directory first on PYTHONPATH (each server reports
the ``pypid.__file__`` it imported, and the run stops unless it is the expected one).
Each version serves its own hard-linked copy of the corpus root, so their caches
never meet. Both servers stay up for a size; each round runs every scenario on both,
the order swapping every round, so drift in the machine's load hits both alike. A
figure is the median of --rounds runs; a scenario FAILs when after/before of req/s
is below 1 - --limit.
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from bench.lib.compare import Live, pins, settle_args, size_corpus, snapshot, start_live
from bench.lib.corpus import OUT_DIR
from bench.lib.host import REPO, dirty, git_rev, log, machine
from bench.lib.report import ORDER
from bench.lib.stats import fnum, fsize, summarize_runs
from bench.lib.targets import PypidTarget


@contextmanager
def git_worktree(repo: Path, ref: str) -> Iterator[tuple[Path, str]]:
    """REF checked out (detached) into a temporary worktree: (its directory, short commit)."""
    sha = subprocess.run(["git", "-C", str(repo), "rev-parse", "--short", "--verify",
                          f"{ref}^{{commit}}"], capture_output=True, text=True, timeout=30,
                         check=False)
    if sha.returncode != 0:
        raise SystemExit(f"--baseline {ref}: not a commit of {repo}: {sha.stderr.strip()}")
    commit = sha.stdout.strip()
    parent = Path(tempfile.mkdtemp(prefix="pypid-baseline-"))
    tree = parent / commit
    subprocess.run(["git", "-C", str(repo), "worktree", "add", "--detach", "--quiet",
                    str(tree), commit], check=True, timeout=300)
    try:
        yield tree, commit
    finally:
        subprocess.run(["git", "-C", str(repo), "worktree", "remove", "--force", str(tree)],
                       check=False, timeout=300)
        shutil.rmtree(parent, ignore_errors=True)


def measure_pair(lives: list[Live], corpus: Any, args: argparse.Namespace, *,
                 server_cpu: int | None, client_pin: Any) -> None:
    """Check both, then every round runs each scenario on both, swapping who goes first."""
    current = lives[0]
    try:
        for current in lives:
            current.check(corpus, args, server_cpu)
        names = set.intersection(*({sc.name for sc in live.ready} for live in lives))
        for r in range(args.rounds):
            for sc in lives[0].ready:
                if sc.name not in names:
                    continue
                for current in lives if r % 2 == 0 else lives[::-1]:
                    current.run(_same(current, sc), args, client_pin, r, server_cpu)
        for sc in lives[0].ready:  # noisy on either side: two more runs on both
            if sc.name in names and any(_noisy(live, sc.name, args) for live in lives):
                log(f"    {sc.name}: spread above {args.max_spread * 100:.0f}%: two more runs")
                for _ in range(2):
                    for current in lives:
                        runs = current.res["scenarios"][sc.name]["runs"]
                        runs.append(current.once(_same(current, sc), args, client_pin))
        for current in lives:
            current.summarize()
    except RuntimeError as exc:
        current.failed(exc)
        for other in lives:
            if other is not current:
                other.res.update(status="failed", reason=f"{current.target.name} failed")
    finally:
        for live in lives:
            live.stop()


def _same(live: Live, sc: Any) -> Any:
    return next(s for s in live.ready if s.name == sc.name)


def _noisy(live: Live, name: str, args: argparse.Namespace) -> bool:
    runs = live.res["scenarios"][name]["runs"]
    s = summarize_runs(runs)
    return len(runs) >= 3 and s["spread"] is not None and s["spread"] > args.max_spread


def _ratio(a: float | None, b: float | None) -> float | None:
    return a / b if a is not None and b else None


def render(results: dict[int, dict[str, Any]], meta: dict[str, Any]) -> tuple[str, list[str]]:
    """The before/after table and the scenarios that got slower than the limit allows."""
    before, after, limit = meta["before"], meta["after"], meta["limit"]
    lines = [
        f"pypid before/after: {meta['servers'][before]} vs {meta['servers'][after]}",
        f"server pinned to CPU {meta['server_cpu']}, wrk on CPU {meta['client_cpu']}: "
        f"wrk -t{meta['threads']} -c{meta['connections']} -d{meta['duration']:g}s; median of "
        f"{meta['rounds']} run(s) per figure, the two interleaved round by round",
        "",
        f"{'scenario':<17} {'files':>5} | {'before':>9} {'after':>9} {'ratio':>6} | "
        f"{'before':>7} {'after':>7} {'ratio':>6} | verdict",
        f"{'':<17} {'':>5} | {'req/s':>9} {'req/s':>9} {'':>6} | {'us/req':>7} {'us/req':>7} "
        f"{'':>6} |",
    ]
    lines.append("-" * len(lines[-2]))
    slower: list[str] = []
    for sc in ORDER:
        for size, pair in results.items():
            a, b = (pair.get(t, {}).get("scenarios", {}).get(sc, {}).get("summary")
                    for t in (before, after))
            if not a and not b:
                continue
            rps = _ratio(b and b["rps"], a and a["rps"])
            cpu = _ratio(b and b["cpu_us_per_req"], a and a["cpu_us_per_req"])
            word = "n/a" if rps is None else "PASS" if rps >= 1 - limit else "FAIL"
            if word == "FAIL":
                slower.append(f"{sc} at {fsize(size)} (x{rps:.3f})")
            lines.append(
                f"{sc:<17} {fsize(size):>5} | {fnum(a and a['rps']):>9} "
                f"{fnum(b and b['rps']):>9} {_fratio(rps):>6} | "
                f"{fnum(a and a['cpu_us_per_req']):>7} {fnum(b and b['cpu_us_per_req']):>7} "
                f"{_fratio(cpu):>6} | {word}")
    for size, pair in results.items():
        for t, r in pair.items():
            if r["status"] != "ok":
                lines.append(f"{t} at {fsize(size)} files: {r['status']}: {r['reason']}")
    lines += ["", f"{'start, memory':<17} {'files':>5} | {'1st /simple/ s':>14} "
                  f"{'PSS MB':>7}  (before -> after)"]
    for size, pair in results.items():
        first = [pair.get(t, {}).get("first_simple_s") for t in (before, after)]
        pss = [((pair.get(t, {}).get("mem_loaded") or {}).get("total_pss_kb") or 0) / 1024
               for t in (before, after)]
        lines.append(f"{'':<17} {fsize(size):>5} | {fnum(first[0]):>6} -> {fnum(first[1]):<5}"
                     f" {fnum(pss[0] or None)} -> {fnum(pss[1] or None)}")
    failed = [f"{t}@{fsize(s)}" for s, p in results.items() for t, r in p.items()
              if r["status"] != "ok"]
    lines.append("")
    if slower or failed:
        lines.append(f"FAIL: more than {limit * 100:g}% slower (req/s): "
                     + ("; ".join(slower) or "none") + ("; not measured: " + ", ".join(failed)
                                                        if failed else ""))
    else:
        lines.append(f"PASS: no scenario more than {limit * 100:g}% slower (req/s)")
    return "\n".join(lines), slower + failed


def _fratio(v: float | None) -> str:
    return "-" if v is None else f"x{v:.3f}"


def main(args: argparse.Namespace) -> int:
    """The before/after run; exit code 1 when a scenario is slower than the limit allows."""
    t_start = time.perf_counter()
    sizes = settle_args(args)
    server_pin, client_pin = pins(args)
    workers = args.workers or 1
    stamp = time.strftime("%Y%m%d-%H%M%S")
    work = OUT_DIR / f"baseline-{stamp}"
    src = args.src.resolve()
    changes = dirty(src)
    results: dict[int, dict[str, Any]] = {}
    corpora: dict[str, Any] = {}
    try:
        with git_worktree(REPO, args.baseline) as (tree, commit):
            before = PypidTarget(args.python, workers, tree, name=f"pypid@{args.baseline}",
                                 root_tag=f"before-{commit}")
            after = PypidTarget(args.python, workers, snapshot(src, work), name="pypid",
                                root_tag="after")
            servers = {
                before.name: f"{before.name} ({commit}, worktree {tree})",
                after.name: f"pypid ({git_rev(src) or '?'}{'+changes' if changes else ''}, "
                            f"snapshot of {src}), {workers} worker(s) each, Python "
                            f"{args.python}",
            }
            log(f"before/after: {before.name} vs {after.name} at "
                f"{', '.join(fsize(s) for s in sizes)} files; {args.rounds} round(s) of "
                f"{args.duration:g} s; server CPU {server_pin.cpu}, wrk CPU {client_pin.cpu}")
            for size in sizes:
                corpus, corpora[str(size)] = size_corpus(size)
                log(f"  {before.name} and {after.name} at {fsize(size)} files")
                lives = [start_live(t, corpus, work / f"{size}-{i}", server_pin)
                         for i, t in enumerate((before, after))]
                measure_pair(lives, corpus, args, server_cpu=server_pin.cpu,
                             client_pin=client_pin)
                results[size] = {live.target.name: live.res for live in lives}
    finally:
        if not args.keep:
            shutil.rmtree(work, ignore_errors=True)
    meta: dict[str, Any] = {
        "baseline": args.baseline, "before": f"pypid@{args.baseline}", "after": "pypid",
        "servers": servers, "limit": args.limit, "machine": machine(),
        "server_cpu": server_pin.cpu, "client_cpu": client_pin.cpu, "threads": args.threads,
        "connections": args.connections, "duration": args.duration, "warmup": args.warmup,
        "rounds": args.rounds, "sizes": sizes, "corpora": corpora,
        "pypid_uncommitted_changes": changes,
        "wall_seconds": round(time.perf_counter() - t_start, 1),
    }
    text, bad = render(results, meta)
    print(text)
    out = OUT_DIR / f"baseline-{stamp}.json"
    out.write_text(json.dumps({"meta": meta, "results": {str(k): v for k, v in results.items()},
                               "table": text}, indent=1))
    log(f"\nwrote {out}")
    return 1 if bad else 0
