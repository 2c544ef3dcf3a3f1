"""The bench's command line: ``python bench/run.py`` (see bench/README.md).

Without a mode flag: one target, several rounds (single.py). ``--compare`` / ``--quick``:
pypid, pypiserver and nginx side by side (compare.py). ``--baseline REF``: this
checkout against the commit REF, before/after (baseline.py).
"""

from __future__ import annotations

import argparse
import signal
import sys
from pathlib import Path

from bench.lib import baseline, compare, single
from bench.lib.host import REPO

DESCRIPTION = "pypid benchmark: start-up time, memory and throughput on a synthetic corpus."


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=DESCRIPTION)
    ap.add_argument("--projects", type=int, default=10_000, help="corpus size (projects)")
    ap.add_argument("--rounds", type=int, default=None,
                    help="each figure is the median of these (default 3; 1 with --quick)")
    ap.add_argument("--duration", type=float, default=None,
                    help="seconds per wrk run (default 10; 5 with --quick)")
    ap.add_argument("--warmup", type=float, default=None,
                    help="seconds of unmeasured wrk before each run (0: none; default 2; "
                         "with --compare before a scenario's first run only)")
    ap.add_argument("--connections", type=int, default=32)
    ap.add_argument("--threads", type=int, default=None,
                    help="wrk threads (default: 1 when pinned, else 2)")
    ap.add_argument("--workers", type=int, default=None,
                    help="pypid's gunicorn workers (default: pypid's own, 2; 1 with --compare)")
    ap.add_argument("--target", choices=("pypid", "http.server"), default="pypid",
                    help="http.server: a static tree, to check the harness itself")
    ap.add_argument("--python", default=sys.executable, help="interpreter that runs the server")
    ap.add_argument("--src", type=Path, default=REPO,
                    help="directory holding the pypid package (default: this checkout)")
    ap.add_argument("--no-pin", dest="pin", action="store_false", help="no taskset pinning")
    ap.add_argument("--nice", type=int, default=None,
                    help="run servers and wrk under nice -n N. Default 0; with --compare -10 "
                         "when root: on a machine busy with other work a single-threaded "
                         "server (nginx, wrk) would otherwise get a smaller share of its CPU "
                         "than a many-threaded one")
    ap.add_argument("--keep", action="store_true",
                    help="keep the run's work dir (config, path lists) under bench/out/")
    cmp = ap.add_argument_group("side by side (--compare, see bench/compare.py)")
    cmp.add_argument("--compare", action="store_true",
                     help="pypid, pypiserver and nginx one after the other on the same "
                          "corpora; one table with the ratios")
    cmp.add_argument("--quick", action="store_true",
                     help="with --compare: 1 round, 5 s runs, sizes 1000,10000")
    cmp.add_argument("--smoke", action="store_true",
                     help="with --compare or --baseline: 1 round, 1 s runs, no warm-up, "
                          "size 200: proves the harness works, its figures mean nothing")
    cmp.add_argument("--sizes", default=None,
                     help="corpus sizes in FILES, comma-separated (default 1000,10000,100000)")
    cmp.add_argument("--targets", default="pypid,pypiserver,nginx",
                     help="which of pypid,pypiserver,nginx to run (default: all three)")
    cmp.add_argument("--no-footprint", dest="footprint", action="store_false",
                     help="skip the run of pypid with two workers, not pinned, after the "
                          "side by side at each size (cold start with every core, peak PSS)")
    cmp.add_argument("--no-uploads", dest="uploads", action="store_false",
                     help="skip the uploads (twine sending 20 wheels to pypid and to "
                          "pypiserver, each on its own copy of the corpus) at each size")
    cmp.add_argument("--pypiserver-worker", choices=("gthread", "gevent"), default="gthread",
                     help="pypiserver's gunicorn worker class (GUNICORN_CMD_ARGS)")
    cmp.add_argument("--request-timeout", type=float, default=30.0,
                     help="bound on any single probe request; a server slower than this at a "
                          "size is reported as 'timeout' there (default 30 s)")
    cmp.add_argument("--max-spread", type=float, default=0.25,
                     help="rerun a scenario (2 more runs) when (max-min)/median of its req/s "
                          "exceeds this (default 0.25)")
    before = ap.add_argument_group("before/after (--baseline, see bench/lib/baseline.py)")
    before.add_argument("--baseline", metavar="REF", default=None,
                        help="this checkout against the git commit REF (checked out into a "
                             "temporary git worktree, run with the same Python), interleaved "
                             "round by round on the same corpora; the sizes, rounds and "
                             "durations of --compare; each scenario's ratio after/before")
    before.add_argument("--limit", type=float, default=0.05,
                        help="with --baseline: the slowdown (req/s) a scenario may show "
                             "before it FAILs (default 0.05)")
    return ap.parse_args(argv)



def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    # SIGTERM (timeout, kill) unwinds like Ctrl-C, so the finally blocks stop our servers
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    if args.baseline:
        return baseline.main(args)
    if args.compare or args.quick or args.smoke:
        return compare.main(args)
    return single.run(args)
