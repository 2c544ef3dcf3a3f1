"""A heap log of each pypid worker, for finding where a worker's memory goes (bench only).

``bench/load.py --heap-log DIR`` puts this folder first on the server's PYTHONPATH, so
Python imports this file at start in the gunicorn master. It then starts, in each worker
the master forks, a thread that writes a line to ``DIR/PID.log`` every
``PYPID_HEAP_LOG_EVERY`` seconds (60): the worker's PSS, glibc's malloc figures
(``mallinfo2``: the heaps' size, what is in use and free in them, blocks mapped apart),
SQLite's own memory, pymalloc's arenas and blocks, and its thread count; and appends
glibc's ``malloc_info`` (each arena's size and its free chunks by size, XML) to
``DIR/PID.mi`` under a line naming the second, to tell which sizes churn.

With ``PYPID_HEAP_LOG_TRACE=1`` it also runs ``tracemalloc`` in each worker from its fork,
and every five minutes from the fifth writes to ``DIR/PID.tm`` the 30 source lines whose
live allocations grew most since the fifth minute. Tracing slows a worker several times
and a snapshot holds it for seconds: figures from such a run are for the heap only, and
pymalloc's report is blank (``sys._debugmallocstats`` says nothing under tracemalloc).

It shadows a system ``sitecustomize`` (Debian's does nothing a benchmark needs).
"""

from __future__ import annotations

import ctypes
import gc
import os
import re
import sys
import tempfile
import threading
import time
import tracemalloc

LOG_DIR = os.environ.get("PYPID_HEAP_LOG", "")
EVERY = float(os.environ.get("PYPID_HEAP_LOG_EVERY", "60"))
TRACE = os.environ.get("PYPID_HEAP_LOG_TRACE") == "1"
BASE_MINUTE, COMPARE_EVERY, TOP = 5, 5, 30
_MASTER = os.getpid()
_ARENAS = re.compile(rb"# arenas allocated current\s*=\s*([\d,]+)")
_IN_BLOCKS = re.compile(rb"# bytes in allocated blocks\s*=\s*([\d,]+)")


class _MallInfo2(ctypes.Structure):
    _fields_ = [(name, ctypes.c_size_t) for name in (
        "arena", "ordblks", "smblks", "hblks", "hblkhd", "usmblks", "fsmblks", "uordblks",
        "fordblks", "keepcost")]


def _mallinfo() -> str:
    try:
        call = ctypes.CDLL(None).mallinfo2  # glibc 2.33 and later
    except (OSError, AttributeError):
        return "malloc ?"
    call.restype = _MallInfo2
    info = call()
    return (f"malloc heaps {info.arena / 1e6:.2f} used {info.uordblks / 1e6:.2f} "
            f"free {info.fordblks / 1e6:.2f} apart {info.hblkhd / 1e6:.2f} ({info.hblks})")


def _malloc_info(path: str, seconds: float) -> None:
    libc = ctypes.CDLL(None)
    try:
        info, fopen, fclose = libc.malloc_info, libc.fopen, libc.fclose
    except AttributeError:
        return
    with open(path, "a") as out:
        out.write(f"==== {seconds:.0f}s\n")
    fopen.restype = ctypes.c_void_p
    fopen.argtypes = [ctypes.c_char_p, ctypes.c_char_p]
    info.argtypes = [ctypes.c_int, ctypes.c_void_p]
    fclose.argtypes = [ctypes.c_void_p]
    stream = fopen(path.encode(), b"a")
    if stream:
        info(0, stream)
        fclose(stream)


def _sqlite() -> str:
    try:
        lib = ctypes.CDLL("libsqlite3.so.0")  # the one the sqlite3 module uses
    except OSError:
        return "sqlite ?"
    lib.sqlite3_memory_used.restype = ctypes.c_int64
    return f"sqlite {lib.sqlite3_memory_used() / 1e6:.2f}"


def _pymalloc() -> str:
    report = getattr(sys, "_debugmallocstats", None)
    if report is None:
        return "pymalloc ?"
    sys.stderr.flush()
    saved = os.dup(2)
    with tempfile.TemporaryFile() as out:
        os.dup2(out.fileno(), 2)
        try:
            report()
        finally:
            os.dup2(saved, 2)
            os.close(saved)
        out.seek(0)
        text = out.read()
    arenas, blocks = _ARENAS.search(text), _IN_BLOCKS.search(text)
    if arenas is None or blocks is None:
        return "pymalloc ?"
    used = int(blocks.group(1).replace(b",", b""))
    return f"pymalloc arenas {int(arenas.group(1).replace(b',', b''))} blocks {used / 1e6:.2f}"


def _compare(base: tracemalloc.Snapshot | None, out_path: str,
             minute: int) -> tracemalloc.Snapshot:
    ignore = (tracemalloc.Filter(False, tracemalloc.__file__),
              tracemalloc.Filter(False, "*linecache.py"),
              tracemalloc.Filter(False, "<frozen importlib._bootstrap>"),
              tracemalloc.Filter(False, __file__))
    snap = tracemalloc.take_snapshot().filter_traces(ignore)
    if base is None:
        return snap
    with open(out_path, "a") as out:
        out.write(f"==== minute {minute} against minute {BASE_MINUTE}\n")
        for stat in snap.compare_to(base, "lineno")[:TOP]:
            out.write(f"{stat}\n")
    return base


def _run() -> None:
    from bench.lib.sampler import smaps_rollup  # noqa: PLC0415 - in a worker only; the repo is last on PYTHONPATH

    pid = os.getpid()
    start = time.monotonic()
    base: tracemalloc.Snapshot | None = None
    with open(os.path.join(LOG_DIR, f"{pid}.log"), "a", buffering=1) as log:
        while True:
            time.sleep(EVERY)
            seconds = time.monotonic() - start
            traced = ""
            if TRACE:
                traced = f" | traced {tracemalloc.get_traced_memory()[0] / 1e6:.2f}"
            pss = smaps_rollup(pid).get("Pss", -1024) / 1024
            log.write(f"{seconds:.0f}s pss {pss:.1f} | {_mallinfo()} | {_sqlite()} | "
                      f"{_pymalloc()} | threads {threading.active_count()} | "
                      f"gc {gc.get_count()}{traced}\n")
            _malloc_info(os.path.join(LOG_DIR, f"{pid}.mi"), seconds)
            minute = int(seconds // 60)
            if TRACE and minute >= BASE_MINUTE and (base is None or minute % COMPARE_EVERY == 0):
                base = _compare(base, os.path.join(LOG_DIR, f"{pid}.tm"), minute)


def _in_child() -> None:
    if os.getppid() != _MASTER:
        return  # not a worker of this master (a helper a worker forked)
    if TRACE:
        tracemalloc.start(1)
    threading.Thread(target=_run, name="heap-log", daemon=True).start()


if LOG_DIR:
    os.register_at_fork(after_in_child=_in_child)
