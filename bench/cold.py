"""Cold start alone: ``python bench/cold.py [--files 54307] [--runs 3] [--src DIR]``.

Each run serves a hard-linked copy of the corpus (in a temporary folder, removed at
the end) with no ``.pypid`` cache, two workers, every core, and prints the seconds from
spawn to the master's "indexed" log line, to ``Listening at:`` and to the first 200 of
``/simple/``, with the CPU seconds (user + system) of the master and its reaped children
(the load's pool) at that moment, and to the "rendered the pages" line (since 0ab6cb0 a
process forked as the workers start renders them, and they serve meanwhile: its CPU is
not in the figure); then the minimum and median over the runs. No assertion: figures
only (``--verbose``: the server's lines, timed).

The corpus is read through before each run: its files are in memory, as just after
they were copied in. ``--drop-caches`` (root) drops every page from memory instead, as
after a reboot: the files, and Python's and pypid's own modules, come from the disk.
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # the repo: bench.lib

from bench.lib.corpus import build_corpus, projects_for_files  # noqa: E402
from bench.lib.host import HOST, REPO, drop_page_cache, read_through  # noqa: E402
from bench.lib.probe import get  # noqa: E402
from bench.lib.targets import LAUNCH, byte_compile  # noqa: E402

LISTEN = re.compile(r"Listening at: http://([^\s:]+):(\d+)")
TIMEOUT = 120.0  # seconds a run may take


def cpu_seconds(pid: int) -> float:
    """utime + stime + cutime + cstime of ``pid`` (its reaped children included)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return sum(int(v) for v in fields[11:15]) / os.sysconf("SC_CLK_TCK")


def one_run(python: str, src: Path, root: Path, work: Path, verbose: bool = False
            ) -> dict[str, float]:
    shutil.rmtree(root / ".pypid", ignore_errors=True)
    conf = work / "pypid.toml"
    conf.write_text(f'[server]\nworkers = 2\n[storage]\nroot = "{root}"\n'
                    '[upstream]\nmode = "off"\n[log]\nlevel = "info"\naccess_log = false\n')
    cmd = [python, "-c", LAUNCH, "serve", "--config", str(conf), "--host", HOST,
           "--port", "0", "--root", str(root)]
    env = {**os.environ, "PYTHONPATH": str(src), "PYTHONUNBUFFERED": "1"}
    env.pop("NOTIFY_SOCKET", None)
    t0 = time.perf_counter()
    proc = subprocess.Popen(cmd, env=env, cwd=work, stdin=subprocess.DEVNULL,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    marks: dict[str, float] = {}
    port: list[int] = []
    lines: list[str] = []

    def drain() -> None:
        assert proc.stdout is not None
        for raw in proc.stdout:
            line = raw.decode("utf-8", "replace").rstrip()
            now = time.perf_counter() - t0
            lines.append(f"{now:6.2f} {line}")
            if "indexed" in line and "indexed" not in marks:
                marks["indexed"] = now
            if "rendered the pages of" in line and "pages" not in marks:
                marks["pages"] = now
            if (m := LISTEN.search(line)) and not port:
                marks["listening"] = now
                port.append(int(m.group(2)))

    reader = threading.Thread(target=drain, daemon=True)
    reader.start()
    try:
        deadline = t0 + TIMEOUT
        while time.perf_counter() < deadline:
            if proc.poll() is not None:
                raise RuntimeError("pypid exited:\n" + "\n".join(lines[-20:]))
            if port:
                try:
                    if get(port[0], "/simple/", timeout=5).status == 200:
                        marks["first_200"] = time.perf_counter() - t0
                        marks["cpu"] = cpu_seconds(proc.pid)
                        break
                except OSError:
                    pass
            time.sleep(0.01)
        else:
            raise RuntimeError("no 200 in time:\n" + "\n".join(lines[-20:]))
        while "pages" not in marks and time.perf_counter() < deadline:  # rendered after?
            time.sleep(0.01)
    finally:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        if verbose:
            print("\n".join(lines[:40]))
    return marks


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--files", type=int, default=54_307)
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--src", type=Path, default=REPO, help="the checkout whose pypid runs")
    ap.add_argument("--python", default=sys.executable)
    ap.add_argument("--verbose", action="store_true", help="print the server's lines, timed")
    ap.add_argument("--drop-caches", action="store_true",
                    help="start each run with nothing in memory, as after a reboot (root)")
    args = ap.parse_args()
    corpus = build_corpus(projects_for_files(args.files))
    byte_compile(args.python, args.src)  # as installed: not compiled again at each start
    with tempfile.TemporaryDirectory(prefix="pypid-cold-") as tmp:
        root, work = Path(tmp) / "root", Path(tmp)
        root.mkdir()
        for f in corpus.files:
            try:
                os.link(corpus.root / f.filename, root / f.filename)
            except OSError:  # another file system: a copy
                shutil.copyfile(corpus.root / f.filename, root / f.filename)
        print(f"{len(corpus.files)} files, {args.src}, "
              + ("nothing in memory (caches dropped)" if args.drop_caches
                 else "the files in memory"), flush=True)
        runs = []
        for n in range(args.runs):
            if args.drop_caches:
                if (problem := drop_page_cache()) is not None:
                    print(problem, file=sys.stderr)
                    return 2
            else:
                read_through([root / f.filename for f in corpus.files])
            load = os.getloadavg()[0]
            m = one_run(args.python, args.src, root, work, args.verbose)
            runs.append(m)
            print(f"run {n + 1}: indexed {m.get('indexed', 0):.2f} s, listening "
                  f"{m['listening']:.2f} s, first 200 {m['first_200']:.2f} s, "
                  f"CPU {m['cpu']:.2f} s, every page rendered {m.get('pages', 0):.2f} s "
                  f"(load {load:.1f} -> {os.getloadavg()[0]:.1f})", flush=True)
        walls = sorted(m["first_200"] for m in runs)
        cpus = sorted(m["cpu"] for m in runs)
        print(f"first 200: min {walls[0]:.2f} s, median {statistics.median(walls):.2f} s; "
              f"CPU (master and its reaped children): min {cpus[0]:.2f} s, "
              f"median {statistics.median(cpus):.2f} s", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
