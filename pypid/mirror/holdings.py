"""What the mirror's cache holds, which files are pinned, and eviction to ``cache_max_gb``.

A pin is an empty marker ``pins/<project>/<filename>`` under the cache root:
``pypid mirror add`` makes it, and eviction never removes a pinned file. The last
use of a cached file is its access time (the server touches it when a worker
first serves it; the kernel's relatime keeps it within a day after that).
"""

from __future__ import annotations

import contextlib
import os
import time
from dataclasses import dataclass
from pathlib import Path

from pypid.mirror.store import MirrorStore

METADATA_SUFFIX = ".metadata"


@dataclass(frozen=True, slots=True)
class CachedFile:
    project: str
    filename: str
    size: int  # with its .metadata, if cached
    pinned: bool
    last_used: float  # epoch seconds


def pin_path(store: MirrorStore, project: str, filename: str) -> Path:
    store.file_path(project, filename)  # the same name checks
    return store.root / "pins" / project / filename


def pin(store: MirrorStore, project: str, filename: str) -> None:
    path = pin_path(store, project, filename)
    store.make_dir(path.parent)
    path.touch()
    store.adopt(path)


def holdings(store: MirrorStore) -> list[CachedFile]:
    """Every whole file the cache holds, by project and name."""
    found = []
    try:
        projects = sorted(os.listdir(store.files))
    except OSError:
        return []
    for project in projects:
        names = store.cached_files(project)
        for filename in names:
            if filename.endswith(METADATA_SUFFIX):
                continue
            path = store.files / project / filename
            try:
                st = os.stat(path)
            except OSError:
                continue
            size = st.st_size
            if filename + METADATA_SUFFIX in names:
                with contextlib.suppress(OSError):
                    size += os.stat(str(path) + METADATA_SUFFIX).st_size
            pinned = pin_path(store, project, filename).exists()
            found.append(CachedFile(project, filename, size, pinned, st.st_atime))
    return found


def prune(store: MirrorStore, max_bytes: int) -> list[CachedFile]:
    """Evict the least recently used unpinned files until the cache holds at most
    ``max_bytes``; returns what went. Pinned files stay, even above the limit."""
    held = holdings(store)
    total = sum(item.size for item in held)
    evicted = []
    for item in sorted((i for i in held if not i.pinned), key=lambda i: i.last_used):
        if total <= max_bytes:
            break
        path = store.files / item.project / item.filename
        for victim in (path, Path(str(path) + METADATA_SUFFIX)):
            with contextlib.suppress(FileNotFoundError):
                victim.unlink()
        total -= item.size
        evicted.append(item)
    return evicted


def touch_used(path: str) -> None:
    """Mark a cached file as used now (its access time), keeping its modification time."""
    with contextlib.suppress(OSError):
        st = os.stat(path)
        os.utime(path, ns=(time.time_ns(), st.st_mtime_ns))
