"""Synthetic package corpus for the benchmark, cached on disk by size.

``build_corpus(n)`` writes ``bench/out/corpus-<n>/``:

    packages/        the package root (flat): valid wheels and sdists, 1-3 per project
    manifest.json    projects, files (sha256, size, requires-python), the big files

Archives come from tests/builders.py, the builder the tests use. The first few
projects carry a ~100 KB wheel for the download test. Generation
is deterministic (seeded per project) and runs on every CPU; a finished corpus
is reused, a half-written one never is (it is built in a temp dir and renamed).

Run alone: ``python bench/corpus.py [--projects N | --files N] [--force] [--static]``.
"""

from __future__ import annotations

import argparse
import hashlib
import html
import json
import os
import random
import shutil
import time
from collections.abc import Iterator
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from pathlib import Path

from tests.builders import sdist_bytes, wheel_bytes

OUT_DIR = Path(__file__).resolve().parents[1] / "out"
# bump when the bytes change, so stale caches are rebuilt (2: tests/builders; 3: a 10 MB wheel)
CORPUS_FORMAT = 3
BIG_PROJECTS = 4  # projects 0..3 get a ~100 KB wheel
BIG_PAYLOAD = 100 * 1024
HUGE_PROJECT = BIG_PROJECTS  # and the next one a 10 MB wheel
HUGE_PAYLOAD = 10 * 1024 * 1024
REQUIRES = ("packaging>=21",)
WORDS = (
    "alpha", "beta", "gamma", "delta", "omega", "core", "utils", "client", "server", "tools",
    "async", "data", "net", "cli", "http", "json", "yaml", "crypto", "image", "stats",
)
REQUIRES_PYTHON = (None, None, ">=3.8", ">=3.9", ">=3.10, <4", "~=3.11", "!=3.9.*, >=3.8")


@dataclass(frozen=True)
class DistFile:
    project: str  # normalized name
    filename: str
    sha256: str
    size: int
    requires_python: str | None


@dataclass(frozen=True)
class Corpus:
    n_projects: int
    dir: Path
    root: Path  # the package root handed to a server
    projects: list[str]  # normalized names
    files: list[DistFile]
    big_files: list[str]  # filenames of the ~100 KB wheels
    build_seconds: float  # how long the (first) build took
    reused: bool  # True when loaded from the cache

    @property
    def total_bytes(self) -> int:
        return sum(f.size for f in self.files)

    @property
    def huge_files(self) -> list[str]:
        """The 10 MB wheel (none in a corpus of fewer projects)."""
        if len(self.projects) <= HUGE_PROJECT:
            return []
        return [f.filename for f in self.files if f.project == self.projects[HUGE_PROJECT]]


def project_name(i: int) -> tuple[str, str]:
    """(display name, normalized name) for project i; a few display names need normalizing."""
    w1, w2 = WORDS[i % len(WORDS)], WORDS[(i // len(WORDS)) % len(WORDS)]
    normalized = f"{w1}-{w2}-{i:06d}"
    if i % 10 == 3:
        return f"{w1.title()}.{w2.title()}_{i:06d}", normalized
    return normalized, normalized


def _plan(i: int) -> tuple[random.Random, str | None, str, str, str]:
    """(rng, requires_python, v1, v2, pattern) of project i, drawn in a fixed order.

    ``pattern`` is one letter per file (w: wheel, s: sdist); the big projects get "B",
    the huge one "H".
    """
    rng = random.Random(f"pypid-bench-{i}")  # noqa: S311 (not crypto)
    rp = rng.choice(REQUIRES_PYTHON)
    if i < BIG_PROJECTS:
        return rng, rp, "1.0.0", "1.0.0", "B"
    if i == HUGE_PROJECT:
        return rng, rp, "1.0.0", "1.0.0", "H"
    v1, v2 = f"1.{rng.randrange(10)}.0", f"2.{rng.randrange(10)}.{rng.randrange(3)}"
    pattern = rng.choice(("w", "w", "s", "ws", "ws", "ww", "wsw", "wsw"))
    return rng, rp, v1, v2, pattern


def projects_for_files(n_files: int) -> int:
    """The fewest projects whose files number at least n_files (cheap: no archive is built).

    Sizes are asked for in files (1,000 / 10,000 / 100,000) and corpora are built and
    cached by projects; the average is about 1.87 files a project.
    """
    total, i = 0, 0
    while total < n_files:
        total += len(_plan(i)[4])
        i += 1
    return max(i, 1)


def _project_files(i: int) -> Iterator[tuple[str, bytes, str | None]]:
    """Yield (filename, bytes, requires_python) for project i: 1-3 files, wheels and sdists."""
    display, _ = project_name(i)
    rng, rp, v1, v2, pattern = _plan(i)
    if pattern in ("B", "H"):
        size = BIG_PAYLOAD if pattern == "B" else HUGE_PAYLOAD
        name, data = wheel_bytes(display, "1.0.0", requires_python=rp, requires_dist=REQUIRES,
                                 payload=rng.randbytes(size))
        yield name, data, rp
        return
    versions = iter((v1, v1 if pattern in ("ws", "wsw") else v2, v2))
    for kind in pattern:
        version = next(versions)
        build = wheel_bytes if kind == "w" else sdist_bytes
        name, data = build(display, version, requires_python=rp, requires_dist=REQUIRES)
        yield name, data, rp


def _build_range(args: tuple[Path, int, int]) -> list[DistFile]:
    """Worker: write the files of projects [start, stop) into root."""
    root, start, stop = args
    out: list[DistFile] = []
    for i in range(start, stop):
        _, normalized = project_name(i)
        for filename, data, rp in _project_files(i):
            (root / filename).write_bytes(data)
            out.append(DistFile(normalized, filename, hashlib.sha256(data).hexdigest(),
                                len(data), rp))
    return out


def corpus_dir(n_projects: int, out_dir: Path = OUT_DIR) -> Path:
    return out_dir / f"corpus-{n_projects}"


def _load(path: Path, n_projects: int) -> Corpus | None:
    try:
        manifest = json.loads((path / "manifest.json").read_text())
    except (OSError, ValueError):
        return None
    if manifest.get("format") != CORPUS_FORMAT or manifest.get("n_projects") != n_projects:
        return None
    files = [DistFile(**f) for f in manifest["files"]]
    return Corpus(n_projects, path, path / "packages", manifest["projects"], files,
                  manifest["big_files"], manifest["build_seconds"], reused=True)


def build_corpus(n_projects: int = 10_000, *, out_dir: Path = OUT_DIR, force: bool = False,
                 jobs: int | None = None) -> Corpus:
    """Return the cached corpus of this size, building it first if needed."""
    final = corpus_dir(n_projects, out_dir)
    if not force and (cached := _load(final, n_projects)) is not None:
        return cached
    t0 = time.perf_counter()
    tmp = out_dir / f".corpus-{n_projects}.tmp-{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)
    root = tmp / "packages"
    root.mkdir(parents=True)
    jobs = jobs or len(os.sched_getaffinity(0))
    step = max(1, min(500, n_projects // (jobs * 4) or 1))
    chunks = [(root, s, min(s + step, n_projects)) for s in range(0, n_projects, step)]
    files: list[DistFile] = []
    with ProcessPoolExecutor(max_workers=jobs) as pool:
        for part in pool.map(_build_range, chunks):
            files.extend(part)
    projects = [project_name(i)[1] for i in range(n_projects)]
    big = [f.filename for f in files if f.project in projects[:BIG_PROJECTS]]
    seconds = time.perf_counter() - t0
    manifest = {
        "format": CORPUS_FORMAT, "n_projects": n_projects, "build_seconds": round(seconds, 3),
        "projects": projects, "big_files": big, "files": [f.__dict__ for f in files],
    }
    (tmp / "manifest.json").write_text(json.dumps(manifest))
    if final.exists():
        shutil.rmtree(final)
    tmp.rename(final)
    return Corpus(n_projects, final, final / "packages", projects, files, big, seconds,
                  reused=False)


def linked_root(corpus: Corpus, tag: str) -> Path:
    """A second package root of hard links to the corpus's files, kept as ``roots/<tag>``.

    The same bytes without a copy, but a root (and so a ``.pypid`` cache) of its own:
    two pypid versions of different cache formats can serve the same corpus side by side.
    """
    roots = corpus.dir / "roots"
    dest, done = roots / tag, roots / f"{tag}.complete"
    if done.exists():
        return dest
    tmp = roots / f".{tag}.tmp-{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)
    shutil.rmtree(dest, ignore_errors=True)
    tmp.mkdir(parents=True)
    for f in corpus.files:
        os.link(corpus.root / f.filename, tmp / f.filename)
    tmp.rename(dest)
    done.write_text("")
    return dest


def write_static_index(corpus: Corpus) -> Path:
    """A static PEP 503 tree (simple/, packages -> root) for file-serving targets.

    Used by the http.server self-test target now and meant for an nginx target later.
    """
    static = corpus.dir / "static"
    if (static / ".complete").exists():
        return static
    shutil.rmtree(static, ignore_errors=True)
    (static / "simple").mkdir(parents=True)
    (static / "packages").symlink_to(corpus.root.resolve())
    by_project: dict[str, list[DistFile]] = {}
    for f in corpus.files:
        by_project.setdefault(f.project, []).append(f)
    head = '<!DOCTYPE html>\n<html><head><meta name="pypi:repository-version" content="1.0">'
    links = "".join(f'<a href="{p}/">{p}</a>\n' for p in corpus.projects)
    (static / "simple" / "index.html").write_text(f"{head}</head><body>\n{links}</body></html>\n")
    for project, pfiles in by_project.items():
        d = static / "simple" / project
        d.mkdir()
        body = "".join(
            f'<a href="../../packages/{f.filename}#sha256={f.sha256}"'
            + (f' data-requires-python="{html.escape(f.requires_python)}"'
               if f.requires_python else "")
            + f">{f.filename}</a>\n"
            for f in pfiles
        )
        (d / "index.html").write_text(f"{head}</head><body>\n{body}</body></html>\n")
    (static / ".complete").write_text("")
    return static


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    size = ap.add_mutually_exclusive_group()
    size.add_argument("--projects", type=int, default=10_000)
    size.add_argument("--files", type=int, default=None,
                      help="size in files: the fewest projects holding at least this many")
    ap.add_argument("--force", action="store_true", help="rebuild even if cached")
    ap.add_argument("--static", action="store_true",
                    help="also write the static PEP 503 tree (for nginx / http.server)")
    args = ap.parse_args(argv)
    n = projects_for_files(args.files) if args.files else args.projects
    c = build_corpus(n, force=args.force)
    if args.static:
        print(f"static tree {write_static_index(c)}")
    state = "reused" if c.reused else "built"
    print(f"{state} {c.root}: {len(c.projects)} projects, {len(c.files)} files, "
          f"{c.total_bytes / 1e6:.1f} MB, build took {c.build_seconds:.1f}s")
    return 0


