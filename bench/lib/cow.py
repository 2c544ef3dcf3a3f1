"""Which of the master's memory pages a worker has made its own copy of, and what is on them
(``python bench/cow.py MASTER WORKER``; Linux, as root: it reads ``/proc/PID/pagemap``
and ``/proc/PID/mem``).

A page the gunicorn master and its workers share is counted once in their PSS together.
When a worker writes to it (an object's reference count, a new object put in a free slot,
a freed one) the kernel gives the worker its own copy, and the two copies count twice.
For each writable mapping of the worker this counts the pages it still shares with the
master, the ones it copied, and its own (not in the master); then it reads a sample of
the copied pages from the master and names the Python objects found on them (a word
that is a plausible reference count followed by a pointer to a type object). See
bench/README.md, "An hour at 54,307 files".
"""

from __future__ import annotations

import argparse
import random
import struct
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass

PAGE = 4096
_PFN_MASK = (1 << 55) - 1
_PRESENT = 1 << 63
_ARENA_MAX = (1 << 20) + 2 * PAGE  # pymalloc's arenas are 1 MiB (the kernel may merge them)


@dataclass(frozen=True)
class Mapping:
    start: int
    end: int
    writable: bool
    name: str

    @property
    def kind(self) -> str:
        if self.name:
            return self.name
        return "anonymous, up to 1 MiB" if self.end - self.start <= _ARENA_MAX else (
            "anonymous, larger")


def mappings(pid: int) -> list[Mapping]:
    found = []
    with open(f"/proc/{pid}/maps") as maps:
        for line in maps:
            parts = line.split(maxsplit=5)
            start, end = (int(x, 16) for x in parts[0].split("-"))
            found.append(Mapping(start, end, "w" in parts[1],
                                 parts[5].strip() if len(parts) > 5 else ""))
    return found


def frames(pid: int, start: int, end: int) -> list[int | None]:
    """The physical frame of each page from ``start`` to ``end`` (None: not in memory)."""
    with open(f"/proc/{pid}/pagemap", "rb") as pagemap:
        pagemap.seek(start // PAGE * 8)
        data = pagemap.read((end - start) // PAGE * 8)
    return [v & _PFN_MASK if v & _PRESENT else None
            for v in struct.unpack(f"<{len(data) // 8}Q", data)]


@dataclass
class Census:
    shared: Counter[str]
    copied: Counter[str]
    own: Counter[str]
    copied_pages: list[int]


def census(master: int, worker: int) -> Census:
    held = [m for m in mappings(master) if m.writable]
    out = Census(Counter(), Counter(), Counter(), [])
    for m in mappings(worker):
        if not m.writable:
            continue
        theirs = frames(worker, m.start, m.end)
        inherited = any(h.start <= m.start and m.end <= h.end for h in held)
        ours = frames(master, m.start, m.end) if inherited else [None] * len(theirs)
        for i, (a, b) in enumerate(zip(ours, theirs, strict=True)):
            if b is None:
                continue
            if a is None:
                out.own[m.kind] += 1
            elif a == b:
                out.shared[m.kind] += 1
            else:
                out.copied[m.kind] += 1
                out.copied_pages.append(m.start + i * PAGE)
    return out


class Memory:
    """Reads another process's memory; names type objects by their ``tp_name``."""

    def __init__(self, pid: int) -> None:
        self._mem = open(f"/proc/{pid}/mem", "rb")  # noqa: SIM115 - closed by close()
        self._names: dict[int, str | None] = {}

    def read(self, address: int, size: int) -> bytes:
        try:
            self._mem.seek(address)
            return self._mem.read(size)
        except (OSError, ValueError, OverflowError):
            return b""

    def type_name(self, address: int) -> str | None:
        if address not in self._names:
            self._names[address] = self._read_type_name(address)
        return self._names[address]

    def _read_type_name(self, address: int) -> str | None:
        head = self.read(address, 32)  # ob_refcnt, ob_type, ob_size, tp_name
        if len(head) < 32:
            return None
        tp_name = struct.unpack_from("<Q", head, 24)[0]
        if not 0x10000 < tp_name < 1 << 47:
            return None
        raw = self.read(tp_name, 64).split(b"\0", 1)[0]
        if 1 < len(raw) < 60 and all(33 <= c < 127 for c in raw):
            return raw.decode()
        return None

    def objects(self, page: int) -> Iterator[tuple[str, int]]:
        """(type name, offset) of what looks like an object header on the page."""
        data = self.read(page, PAGE)
        for offset in range(0, len(data) - 16, 8):
            refcount, type_address = struct.unpack_from("<qQ", data, offset)
            if 0 < refcount < 1 << 24 and 0x10000 < type_address < 1 << 47:
                name = self.type_name(type_address)
                if name is not None:
                    yield name, offset

    def close(self) -> None:
        self._mem.close()


def report(master: int, worker: int, sample: int, seed: int) -> str:
    found = census(master, worker)
    kinds = sorted(set(found.shared) | set(found.copied) | set(found.own),
                   key=lambda k: -(found.copied[k] + found.own[k]))
    lines = [f"worker {worker} against master {master}: MB of the worker's resident pages",
             f"{'mapping':<44} {'copied':>8} {'shared':>8} {'own':>8}"]
    for kind in kinds:
        if found.copied[kind] + found.shared[kind] + found.own[kind] < 16:  # under 64 KB
            continue
        lines.append(f"{kind[-44:]:<44} {found.copied[kind] * PAGE / 2**20:>8.1f} "
                     f"{found.shared[kind] * PAGE / 2**20:>8.1f} "
                     f"{found.own[kind] * PAGE / 2**20:>8.1f}")
    lines.append(f"{'all':<44} {sum(found.copied.values()) * PAGE / 2**20:>8.1f} "
                 f"{sum(found.shared.values()) * PAGE / 2**20:>8.1f} "
                 f"{sum(found.own.values()) * PAGE / 2**20:>8.1f}")
    pages = random.Random(seed).sample(found.copied_pages,  # noqa: S311 - a sample
                                       min(sample, len(found.copied_pages)))
    memory = Memory(master)
    try:
        commonest: Counter[str] = Counter()
        every: Counter[str] = Counter()
        for page in pages:
            names = Counter(name for name, _ in memory.objects(page))
            every.update(names)
            commonest[names.most_common(1)[0][0] if names else "(no object header)"] += 1
    finally:
        memory.close()
    lines += ["", f"{len(pages)} copied pages read from the master: the commonest object "
                  "on each (objects counted on them all)"]
    for name, count in commonest.most_common(15):
        lines.append(f"  {name:<32} {count:>6} pages  {every.get(name, 0):>8} objects")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("master", type=int, help="the gunicorn master's pid")
    ap.add_argument("worker", type=int, help="a worker's pid")
    ap.add_argument("--sample", type=int, default=3000, help="copied pages to read (3000)")
    ap.add_argument("--seed", type=int, default=1)
    args = ap.parse_args(argv)
    print(report(args.master, args.worker, args.sample, args.seed))
    return 0
