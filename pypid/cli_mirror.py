"""The ``pypid mirror`` commands: ``add`` (fetch and pin releases into the cache), ``list``
(what it holds) and ``prune`` (evict to ``upstream.cache_max_gb`` now)."""

from __future__ import annotations

import argparse
import dataclasses
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from pypid.config import Config, load_config
from pypid.mirror import BrokenDownload, Mirror, UnsafeNameError, UpstreamError
from pypid.mirror.holdings import holdings, prune
from pypid.mirror.lockfiles import read_lock
from pypid.mirror.priming import (
    Pinned,
    PrimingError,
    fetch_and_pin,
    parse_spec,
    read_requirements,
    select,
)
from pypid.mirror.store import MirrorStore
from pypid.storage.select import open_storage

EXIT_OK = 0
EXIT_FAILURE = 1
EXIT_USAGE = 2
GB = 1024**3
MakeCommand = Callable[..., argparse.ArgumentParser]


def add_commands(commands: Any, command: MakeCommand) -> None:
    """Add ``mirror add|list|prune`` to ``commands`` with the CLI's own ``command`` helper."""
    mirror = command(
        commands, "mirror", "the caching mirror (upstream.mode = \"cache\"): prime, list, prune",
        "Fetch releases into the mirror's cache and pin them (served offline, never\n"
        "evicted), list what the cache holds, or evict to upstream.cache_max_gb now.",
        "examples:\n  pypid mirror add -r requirements.txt\n  pypid mirror add requests==2.32.3\n"
        "  pypid mirror list\n  pypid mirror prune")
    actions = mirror.add_subparsers(dest="mirror_command", metavar="ACTION", required=True)
    add = command(actions, "add", "fetch and pin exact releases (every platform's files)",
                  "Fetch every file of each pinned release (NAME==VERSION), checked against\n"
                  "upstream's sha256, with its metadata; pin them. A requirements file's\n"
                  "--hash values narrow the files to those hashes; a lock file (pylock.toml,\n"
                  "uv.lock) gives exactly the files it lists, for every platform.",
                  "examples:\n  pypid mirror add -r requirements.txt\n"
                  "  pypid mirror add --lock uv.lock\n"
                  "  pypid mirror add urllib3==2.5.0 idna==3.10")
    add.add_argument("-r", "--requirement", action="append", default=[], metavar="FILE",
                     help="a requirements file of == pins (may be given several times)")
    add.add_argument("--lock", action="append", default=[], metavar="FILE",
                     help="a pylock.toml or uv.lock: exactly the files it lists, every platform")
    add.add_argument("specs", nargs="*", metavar="SPEC", help="NAME==VERSION")
    add.set_defaults(handler=_add)
    listing = command(actions, "list", "one line per cached file: name, size, pinned, last use",
                      "Print one line per cached file: file name, size in bytes, pinned or\n"
                      "cached, and its last use (UTC).", "example:\n  pypid mirror list")
    listing.set_defaults(handler=_list)
    pruning = command(actions, "prune", "evict unpinned files to upstream.cache_max_gb now",
                      "Remove the least recently used unpinned files until the cache holds at\n"
                      "most upstream.cache_max_gb (0: no limit, nothing is removed).",
                      "example:\n  pypid mirror prune")
    pruning.set_defaults(handler=_prune)


def _cache_config(args: argparse.Namespace) -> Config | None:
    config = load_config(args.config)
    if config.upstream.mode != "cache":
        print(f'pypid: upstream.mode is "{config.upstream.mode}", not "cache": there is no '
              "mirror to manage", file=sys.stderr)
        return None
    return config


def _add(args: argparse.Namespace) -> int:
    config = _cache_config(args)
    if config is None:
        return EXIT_FAILURE
    try:
        wanted: list[Pinned] = [p for f in args.requirement for p in read_requirements(Path(f))]
        wanted += [p for f in args.lock for p in read_lock(Path(f))]
        wanted += [parse_spec(spec) for spec in args.specs]
    except PrimingError as exc:
        print(f"pypid: {exc}", file=sys.stderr)
        return EXIT_USAGE
    if not wanted:
        print("pypid: name releases to add (NAME==VERSION, -r FILE or --lock FILE)",
              file=sys.stderr)
        return EXIT_USAGE
    # An explicit add fetches even when the server is told to stay offline.
    mirror = Mirror(dataclasses.replace(config.upstream, offline=False),
                    open_storage(config).mirror_shelf())  # what it fetches, every node has
    failed = 0
    for release in wanted:
        try:
            for item in select(mirror, release):
                fetched = fetch_and_pin(mirror, release.project, item)
                print(f"{item.filename}: {'fetched and pinned' if fetched else 'pinned'}")
        except (PrimingError, UpstreamError, BrokenDownload, UnsafeNameError) as exc:
            print(f"pypid: {release.project}=={release.version}: {exc}", file=sys.stderr)
            failed += 1
    return EXIT_FAILURE if failed else EXIT_OK


def _list(args: argparse.Namespace) -> int:
    config = _cache_config(args)
    if config is None:
        return EXIT_FAILURE
    for item in holdings(MirrorStore(Path(config.upstream.cache_root))):
        used = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(item.last_used))
        print(f"{item.filename} {item.size} {'pinned' if item.pinned else 'cached'} {used}")
    return EXIT_OK


def _prune(args: argparse.Namespace) -> int:
    config = _cache_config(args)
    if config is None:
        return EXIT_FAILURE
    limit = config.upstream.cache_max_gb
    if not limit:
        print("upstream.cache_max_gb is 0 (no limit): nothing to evict")
        return EXIT_OK
    evicted = prune(MirrorStore(Path(config.upstream.cache_root)), limit * GB)
    for item in evicted:
        print(f"evicted {item.filename} ({item.size} bytes)")
    print(f"{len(evicted)} files evicted")
    return EXIT_OK
