"""S3 backend benchmark: pypid nodes on a bucket of a real SeaweedFS against a local root.

    python bench/s3.py [--duration 5] [--rounds 2] [--changes 1000] [--files 100000]

One run, not a test; prints one table (progress goes to stderr). It starts its own
SeaweedFS (``tests/s3store.py``'s ``start_store``, on loopback) and pypid nodes from
this checkout, one worker each, and measures:

1. a project page's req/s, an S3 node against a local-root node on the same files
   (wrk, one thread on the second CPU; the node on the first), turn about;
2. a cached ~100 KB file's req/s, the same way;
3. an uncached 100 MB file through a node (its copy removed before each GET) against a
   direct GET of the object from the store: MB/s;
4. changes seen on another node: yanks and unyanks through the API of one of two
   nodes, the other node's page polled every 5 ms until it shows the mark (8 at once);
5. a node restarted on a bucket of ``--files`` files it has seen: seconds from its
   spawn to its first project page. That bucket, its store and the node's caches are
   built once and kept in ``bench/out/s3-<files>/`` (how long that took is printed).
"""

from __future__ import annotations

import argparse
import base64
import http.client
import json
import os
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # the repo: bench.lib, tests

from bench.lib.corpus import OUT_DIR, build_corpus, projects_for_files  # noqa: E402
from bench.lib.host import HOST, log, pick_cpus  # noqa: E402
from bench.lib.s3nodes import (  # noqa: E402
    ADMIN,
    add_admin,
    fetch,
    first_ok,
    node_config,
    project_files,
    put_files,
    start_node,
    stream_seconds,
)
from bench.lib.server import Server  # noqa: E402
from bench.ui import build, wrk  # noqa: E402
from tests.builders import make_wheel  # noqa: E402
from tests.s3store import BUCKET, Store, start_store, stop_store  # noqa: E402

PAGE = "/simple/bench-ui-0100/"
SMALL_PROJECTS = 200
BIG_MB = 100
CHANGE_THREADS = 8
POLL_SECONDS = 0.005
CHANGE_TIMEOUT = 10.0  # a change not seen by then counts as this late
CHANGES_DEADLINE = 900.0  # the change phase stops here whatever is left
AUTH = {"Authorization": "Basic " + base64.b64encode(":".join(ADMIN).encode()).decode()}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--duration", type=int, default=5, help="seconds of each wrk run")
    parser.add_argument("--rounds", type=int, default=2, help="wrk runs of each, turn about")
    parser.add_argument("--connections", type=int, default=32)
    parser.add_argument("--changes", type=int, default=1000)
    parser.add_argument("--files", type=int, default=100_000, help="the restart's bucket")
    parser.add_argument("--only", choices=("nodes", "restart"),
                        help="run only measures 1-4 (nodes) or only 5 (restart)")
    args = parser.parse_args(argv)
    started = time.perf_counter()
    results: dict[str, Any] = {}
    if args.only != "restart":
        with tempfile.TemporaryDirectory(prefix="pypid-bench-s3-") as tmp:
            work = Path(tmp)
            store = start_store(work / "store")
            try:
                small_phases(store, work, args, results)
            finally:
                stop_store(store)
    if args.only != "nodes":
        restart_phase(args, results)
    report(args, results, time.perf_counter() - started)
    return 0


def small_phases(store: Store, work: Path, args: argparse.Namespace,
                 results: dict[str, Any]) -> None:
    server_pin, client_pin = pick_cpus(True)
    root = work / "packages"
    log(f"building {SMALL_PROJECTS} projects and a 100 KB wheel in {root}")
    build(root, SMALL_PROJECTS)
    cached = make_wheel(root, "bench-big", "1.0", payload=os.urandom(100 * 1024))
    huge = make_wheel(work / "huge", "bench-huge", "1.0",
                      payload=os.urandom(BIG_MB * 1024 * 1024))
    put_files(store, "bench", [*root.iterdir(), huge])
    local_cfg = node_config(work / "local", store=None, root=root)
    s3_cfgs = [node_config(work / f"s3-{i}", store=store, prefix="bench") for i in (1, 2)]
    add_admin(s3_cfgs[0])
    nodes: dict[str, Server] = {}
    try:
        nodes["local"] = start_node(local_cfg, server_pin.prefix())
        nodes["s3"] = start_node(s3_cfgs[0], server_pin.prefix())
        for label, path in (("page", PAGE), ("file", f"/packages/{cached.name}")):
            rates: dict[str, list[float]] = {"s3": [], "local": []}
            for _ in range(args.rounds):
                for kind in ("s3", "local"):
                    url = f"http://{HOST}:{nodes[kind].port}{path}"
                    first_ok(nodes[kind], path, 60)  # rendered, or copied, once
                    rates[kind].append(wrk(url, args, client_pin.prefix()))
                    log(f"{label} {kind}: {rates[kind][-1]:.0f} req/s")
            results[label] = rates
        results["huge"] = huge_file(store, work / "s3-1", nodes["s3"], huge, args.rounds + 1)
        nodes["s3-2"] = start_node(s3_cfgs[1], [])
        results["changes"] = changes(nodes["s3"], nodes["s3-2"], root, args.changes)
    finally:
        for server in nodes.values():
            server.stop()


def huge_file(store: Store, node_dir: Path, node: Server, huge: Path,
              rounds: int) -> dict[str, list[float]]:
    """MB/s of the 100 MB object: through the node with no copy of it, and from the store."""
    speeds: dict[str, list[float]] = {"node": [], "store": []}
    client = store.client()
    try:
        for _ in range(rounds):
            (node_dir / "copies" / huge.name).unlink(missing_ok=True)
            conn = http.client.HTTPConnection(HOST, node.port, timeout=120)
            try:
                started = time.perf_counter()
                conn.request("GET", f"/packages/{huge.name}")
                resp = conn.getresponse()
                size, _ = stream_seconds(resp.read)
                seconds = time.perf_counter() - started  # from the request on
            finally:
                conn.close()
            assert resp.status == 200 and size == huge.stat().st_size, resp.status
            speeds["node"].append(size / seconds / 1e6)
            started = time.perf_counter()
            body = client.get_object(Bucket=BUCKET, Key=f"bench/{huge.name}")["Body"]
            size, _ = stream_seconds(body.read)
            speeds["store"].append(size / (time.perf_counter() - started) / 1e6)
            log(f"100 MB: node {speeds['node'][-1]:.0f} MB/s, store "
                f"{speeds['store'][-1]:.0f} MB/s")
    finally:
        client.close()
    return speeds


def changes(one: Server, two: Server, root: Path, count: int) -> dict[str, Any]:
    """Yank/unyank on one node, poll the other until it shows it: seconds after the API
    answered, for each change (CHANGE_THREADS files at once, nodes turn about)."""
    wheels = sorted(p.name for p in root.glob("bench_ui_00*-1.0-py3-none-any.whl"))
    late: list[float] = []
    lock = threading.Lock()
    deadline = time.monotonic() + CHANGES_DEADLINE
    per_thread = -(-count // CHANGE_THREADS)

    def run(index: int) -> None:
        name = wheels[index]
        project = name.split("-", 1)[0].replace("_", "-")
        conns = {n.port: http.client.HTTPConnection(HOST, n.port, timeout=30)
                 for n in (one, two)}
        yanked = False
        try:
            for k in range(per_thread):
                if time.monotonic() > deadline or index * per_thread + k >= count:
                    return
                writer, reader = (one, two) if k % 2 == 0 else (two, one)
                want: object = False if yanked else f"change {index}-{k}"
                conn = conns[writer.port]
                body = json.dumps({"reason": want}).encode() if want else None
                conn.request("DELETE" if yanked else "PUT", f"/api/v1/files/{name}/yank",
                             body=body, headers={**AUTH, "Content-Type": "application/json"})
                resp = conn.getresponse()
                resp.read()
                if resp.status not in (200, 204):
                    raise RuntimeError(f"yank answered {resp.status}")
                done = time.perf_counter()
                yanked = not yanked
                while (project_files(reader.port, project, conns[reader.port])
                       .get(name, {}).get("yanked") != want):
                    if time.perf_counter() - done > CHANGE_TIMEOUT:
                        break
                    time.sleep(POLL_SECONDS)
                with lock:
                    late.append(min(time.perf_counter() - done, CHANGE_TIMEOUT))
        finally:
            for conn in conns.values():
                conn.close()

    threads = [threading.Thread(target=run, args=(i,)) for i in range(CHANGE_THREADS)]
    started = time.perf_counter()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(CHANGES_DEADLINE + 60)
    log(f"{len(late)} changes in {time.perf_counter() - started:.0f} s")
    return {"late": sorted(late), "seconds": time.perf_counter() - started}


def restart_phase(args: argparse.Namespace, results: dict[str, Any]) -> None:
    """Build (once) a bucket of ``--files`` files and a node that has seen it; restart it."""
    corpus = build_corpus(projects_for_files(args.files))
    place = OUT_DIR / f"s3-{args.files}"
    facts_path = place / "built.json"
    facts = json.loads(facts_path.read_text()) if facts_path.is_file() else {}
    ports_path = place / "ports.json"
    ports = json.loads(ports_path.read_text()) if ports_path.is_file() else None
    store = start_store(place / "store", ports)
    ports_path.write_text(json.dumps(store.ports))
    try:
        cfg = node_config(place / "node", store=store, prefix="files")
        if "bucket_seconds" not in facts:
            log(f"putting {len(corpus.files)} files into the bucket (once; kept in {place})")
            began = time.perf_counter()
            put_files(store, "files", (corpus.root / f.filename for f in corpus.files),
                      lambda n: log(f"  {n} files put"))
            facts["bucket_seconds"] = time.perf_counter() - began
            facts_path.write_text(json.dumps(facts))
        page = f"/simple/{corpus.projects[len(corpus.projects) // 2]}/"
        if "first_index_seconds" not in facts:
            log("the node's first start: it reads every file once (kept for the restarts)")
            node = start_node(cfg, [], timeout=4 * 3600)
            try:
                facts["first_index_seconds"] = first_ok(node, page, 60)
            finally:
                node.stop()
            facts_path.write_text(json.dumps(facts))
        restarts = []
        for _ in range(args.rounds):
            node = start_node(cfg, [], timeout=600)
            try:
                restarts.append(first_ok(node, page, 600))
                assert fetch(node.port, page)[0] == 200
            finally:
                node.stop()
            log(f"restart on {len(corpus.files)} files: first page after {restarts[-1]:.2f} s")
        results["restart"] = {"files": len(corpus.files), "seconds": restarts, **facts}
    finally:
        stop_store(store)


def report(args: argparse.Namespace, results: dict[str, Any], took: float) -> None:
    def ratio(label: str) -> tuple[float, float, float]:
        s3, local = max(results[label]["s3"]), max(results[label]["local"])
        return s3, local, s3 / local

    print(f"\npypid on S3 (SeaweedFS on loopback) vs a local root, 1 worker per node; wrk -t1 "
          f"-c{args.connections} -d{args.duration}s, best of {args.rounds} rounds, turn about")
    print(f"{'measure':40} {'s3':>10} {'baseline':>10} {'ratio':>7}  target")
    for label, what in (("page", f"project page {PAGE} req/s"),
                        ("file", "cached 100 KB file req/s")):
        if label in results:
            s3, local, r = ratio(label)
            print(f"{what:40} {s3:10.0f} {local:10.0f} {r:7.2f}  >= 0.8 (local root)")
    if "huge" in results:
        node, direct = (statistics.median(results["huge"][k]) for k in ("node", "store"))
        print(f"{'uncached 100 MB file MB/s (median)':40} {node:10.0f} {direct:10.0f} "
              f"{node / direct:7.2f}  >= 0.5 (direct GET from the store)")
    late = results.get("changes", {}).get("late")
    if late:
        p99 = late[min(len(late) - 1, int(len(late) * 0.99))]
        over = sum(1 for s in late if s > 2.0)
        print(f"{'change seen on the other node, s':40} p50 {statistics.median(late):.3f}  "
              f"p99 {p99:.3f}  max {late[-1]:.3f}  ({len(late)} changes, {over} over 2 s; "
              "target p99 <= 2 s)")
    restart = results.get("restart")
    if restart is None:
        print(f"this run took {took:.0f} s (a 2-core machine: every figure is noisy)")
        return
    print(f"{'restart on ' + format(restart['files'], ',') + ' files: first page, s':40} "
          f"{min(restart['seconds']):10.2f}  (rounds: "
          f"{', '.join(f'{s:.2f}' for s in restart['seconds'])}; target < 5 s)")
    print(f"  that bucket was built once: put in {restart['bucket_seconds']:.0f} s, first "
          f"index by a node {restart['first_index_seconds']:.0f} s (bench/out/s3-"
          f"{args.files}/)")
    print(f"this run took {took:.0f} s (a 2-core machine: every figure is noisy)")


if __name__ == "__main__":
    sys.exit(main())
