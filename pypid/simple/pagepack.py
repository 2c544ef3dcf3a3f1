"""Rendered pages kept on disk, outside the Python heap: one unlinked file per worker.

A worker's page cache in memory is bounded (its RSS is), so with tens of
thousands of projects most pages would be rendered again on every visit. Each
page is rendered once per change instead and appended to this file; a later
visit reads it back with one ``pread`` from the OS page cache (several times
cheaper than rendering it: bench/ measures both), which holds no Python
objects, is in no worker's RSS and is given back by the kernel under memory
pressure.

The file is unlinked from the start (``O_TMPFILE``), so a crash leaves nothing
behind. Records are never rewritten: a changed page is appended again and the
old record counts as dead; when dead bytes outweigh live ones, or the file
reaches its cap, it is truncated and pages are written afresh. Every truncation
starts a new generation, checked after each read, so a reader that raced one
gets a miss, never another page's bytes.

Disk trouble (a nearly full disk, an I/O error, an unwritable folder) turns the
file off for a minute and empties it: pages are then rendered as without it,
nothing is lost, and uploads keep the disk's last free space.
"""

from __future__ import annotations

import errno
import logging
import mmap
import os
import struct
import threading
import time
import weakref
from array import array
from bisect import bisect_left
from collections import Counter
from collections.abc import Iterable
from pathlib import Path

from pypid.cachedb import unlinked_file

log = logging.getLogger("pypid.pages")

MAX_BYTES = 1024**3  # per worker; ~3.5 KB a project for all four variants
COMPACT_BYTES = 64 * 1024**2  # below this, dead records are not worth a truncation
MIN_FREE_BYTES = 512 * 1024**2  # leave this much (at most a tenth of the disk) to uploads
PAUSE_SECONDS = 60.0  # after a disk error
BATCH_BYTES = 1024 * 1024  # put_many writes this much at a time

GZIP_SUFFIX = "+gzip"  # the space of a space's gzipped copies (pagecache names them so)

# A sealed table written for other processes (``export_sealed``): its head, written last
# (magic, the body's length; 0: nothing to adopt), then per space a _SPACE head, its
# name (padded to 8 bytes) and its three arrays.
_TABLE_HEAD = struct.Struct("<8sQ")
_TABLE_MAGIC = b"pypidpg1"
_SPACE = struct.Struct("<II")  # bytes of the space's name, rows
AHEAD_CHECK_EVERY = 0.1  # seconds between two looks at a table not written yet
AHEAD_PATIENCE = 900.0  # then no more looks: its writer is gone

_SERIAL_SHIFT = 72
_OFFSET_SHIFT = 32
_OFFSET_MASK = (1 << 40) - 1
_LENGTH_MASK = (1 << 32) - 1


class PagePack:
    """``(space, name, serial) -> bytes``, appended to an unlinked file in ``directory``.

    ``space`` names a kind of page ("text/html", "index", ...), ``name`` one page
    of it. Thread-safe; after a fork the child starts with an empty pack of its own
    (workers must not share offsets). Pages stored before ``seal()`` (the master's,
    rendered ahead: ``pypid.simple.prerender``) stay readable in every process
    forked after it, from a file nobody writes to again.
    """

    def __init__(self, directory: Path, max_bytes: int = MAX_BYTES,
                 min_free: int = MIN_FREE_BYTES) -> None:
        self.directory = Path(directory)
        self.max_bytes = max_bytes
        self.min_free = min_free
        self._lock = threading.Lock()
        self._fd = -1
        self._generation = 0  # bumped by every truncation
        self._troubled = False  # a failure was logged and no write has worked since
        self._sealed_fd = -1  # the pages stored before seal(): never written again
        self._sealed: dict[str, Sealed] = {}
        # (pages fd, table fd, when): sealed pages another process is writing (expect_sealed)
        self._ahead: tuple[int, int, float] | None = None
        self._ahead_next = 0.0
        self._forget()
        forget = weakref.WeakMethod(self._after_fork)
        os.register_at_fork(after_in_child=lambda: (method := forget()) and method())

    def _forget(self) -> None:
        # space -> name -> serial << 72 | offset << 32 | length
        self._where: dict[str, dict[str, int]] = {}
        # "<sealed space>+gzip" -> places (offset << 32 | length, 0: none) in this file of
        # the gzipped copies of that space's sealed pages, by their row in its table: a
        # worker asked for every page gzipped would otherwise hold a dict entry, a name and
        # an int for each (~200 bytes; ~12 MB at 29,000 projects and two media types)
        self._beside: dict[str, array[int]] = {}
        self._end = 0
        self._dead = 0
        self._paused_until = 0.0
        self._pid = os.getpid()

    def _after_fork(self) -> None:
        self._lock = threading.Lock()  # another thread may have held it at the fork
        if self._fd >= 0:
            os.close(self._fd)  # the parent's file: its offsets are not ours
            self._fd = -1
        self._forget()
        self._generation += 1

    @property
    def size(self) -> int:
        """Bytes in the file (live and dead)."""
        return self._end

    def get(self, space: str, name: str, serial: int) -> bytes | None:
        """The bytes stored for this page at this serial, or None."""
        generation = self._generation
        names = self._where.get(space)
        value = names.get(name) if names is not None else None
        fd = self._fd
        if value is None or value >> _SERIAL_SHIFT != serial:
            # a sealed gzipped copy's place, if this is such a space (one lookup, no call)
            value = (self._beside_place(space, name, serial) if space in self._beside
                     else None)
            if value is None:
                sealed = self._sealed.get(space)
                if sealed is None and self._ahead is not None and self._adopt_ahead():
                    sealed = self._sealed.get(space)
                value = sealed.find(name, serial) if sealed is not None else None
                if value is None:
                    return None
                fd = self._sealed_fd
        length = value & _LENGTH_MASK
        try:
            data = os.pread(fd, length, value >> _OFFSET_SHIFT & _OFFSET_MASK)
        except OSError:
            return None
        if self._generation != generation or len(data) != length:
            return None  # truncated since the lookup: the bytes may be another page's
        return data

    def put(self, space: str, name: str, serial: int, data: bytes) -> None:
        """Store ``data`` for this page; a failure only means it is not stored."""
        self._put_batch([(space, name, serial, data)], len(data))

    def put_many(self, pages: Iterable[tuple[str, str, int, bytes]]) -> None:
        """``put`` for many pages (space, name, serial, data), with one write and one look
        at the disk's free space per BATCH_BYTES instead of one per page."""
        batch: list[tuple[str, str, int, bytes]] = []
        size = 0
        for page in pages:
            batch.append(page)
            size += len(page[3])
            if size >= BATCH_BYTES:
                self._put_batch(batch, size)
                batch, size = [], 0
        if batch:
            self._put_batch(batch, size)

    def _put_batch(self, batch: list[tuple[str, str, int, bytes]], size: int) -> None:
        # The write happens under the lock: a truncation must not land between
        # reserving an offset and filling it.
        with self._lock:
            if not self._writable(size):
                return
            offset = self._end
            data = batch[0][3] if len(batch) == 1 else b"".join(page[3] for page in batch)
            try:
                written = os.pwrite(self._fd, data, offset)
                if written != len(data):
                    raise OSError(errno.ENOSPC, "short write")
            except OSError as exc:
                self._fail(exc)
                return
            self._end += len(data)
            self._register(((space, name, serial, len(page)) for space, name, serial, page
                            in batch), offset)
            if self._troubled:
                self._troubled = False
                log.info("page file in %s: storing pages again", self.directory)

    def adopt(self, fd: int, size: int, pages: Iterable[tuple[str, str, int, int]]) -> bool:
        """Append the first ``size`` bytes of the file ``fd`` holds: ``pages`` (space, name,
        serial, length) written one after another by another process (``prerender``'s
        helpers). False: not stored (the caller renders those pages itself)."""
        with self._lock:
            if not self._writable(size):
                return False
            offset = self._end
            try:
                copied = 0
                while copied < size:
                    step = _copy(fd, self._fd, size - copied, copied, offset + copied)
                    if step <= 0:
                        raise OSError(errno.EIO, "short copy")
                    copied += step
            except OSError as exc:
                self._fail(exc)
                return False
            self._end += size
            self._register(pages, offset)
            return True

    def seal(self) -> None:
        """Keep the pages stored so far as they are, for this process and every one forked
        from it; later pages go to a new file.

        Kept in sorted arrays, not dicts of ints: a worker reading an int the master
        made writes its reference count, un-sharing the memory page that holds it.
        """
        with self._lock:
            if self._fd < 0 or self._sealed_fd >= 0:
                return
            self._sealed = {space: Sealed(names) for space, names in self._where.items()}
            self._sealed_fd, self._fd = self._fd, -1
            self._forget()

    def write_to(self, fd: int) -> None:
        """Store pages in ``fd``, an empty file, from now on: the process that renders pages
        for others (``pypid.simple.ahead``) writes the file they were told to expect."""
        with self._lock:
            if self._fd >= 0:
                os.close(self._fd)
            self._forget()
            self._fd = fd

    def export_sealed(self, fd: int) -> None:
        """``seal()``, then write the sealed tables to ``fd`` (an empty file) for the
        processes told to ``expect_sealed`` them; its head goes last, so a reader sees a
        whole table or none. Nothing sealed: a head saying so."""
        self.seal()
        parts = []
        for space, sealed in self._sealed.items():
            name = space.encode()
            parts += [_SPACE.pack(len(name), len(sealed.hashes)), name, bytes(-len(name) % 8),
                      sealed.hashes.tobytes(), sealed.serials.tobytes(), sealed.places.tobytes()]
        body = b"".join(parts)
        write_all(fd, body, _TABLE_HEAD.size)
        write_all(fd, _TABLE_HEAD.pack(_TABLE_MAGIC, len(body)), 0)

    def expect_sealed(self, pages_fd: int, table_fd: int) -> None:
        """Another process is rendering pages into ``pages_fd`` and will write their table
        to ``table_fd`` (``write_to``, ``export_sealed``): this process, and every one forked
        from it, adopts them as sealed pages at its first page not found once the table is
        whole (``AHEAD_CHECK_EVERY``; for ``AHEAD_PATIENCE``). Until then a page not found
        is rendered as any other. Both files stay open for processes forked later."""
        self._ahead = (pages_fd, table_fd, time.monotonic())
        self._ahead_next = 0.0

    def export_nothing(self, fd: int) -> None:
        """Tell the processes told to ``expect_sealed`` that no table will come."""
        write_all(fd, _TABLE_HEAD.pack(_TABLE_MAGIC, 0), 0)

    def _adopt_ahead(self) -> bool:
        """Adopt the expected table if it is whole (True: adopted)."""
        ahead = self._ahead
        now = time.monotonic()
        if ahead is None or now < self._ahead_next:
            return False
        self._ahead_next = now + AHEAD_CHECK_EVERY
        pages_fd, table_fd, since = ahead
        try:
            head = os.pread(table_fd, _TABLE_HEAD.size, 0)
            if len(head) < _TABLE_HEAD.size or not any(head):  # zeros: the body came first
                if now - since > AHEAD_PATIENCE:
                    log.warning("page file in %s: the pages rendered ahead never came; "
                                "pages are rendered as asked for", self.directory)
                    self._ahead = None
                return False
            magic, length = _TABLE_HEAD.unpack(head)
            if magic != _TABLE_MAGIC:
                raise ValueError("not a page table")
            tables = {}
            if length:
                view = memoryview(mmap.mmap(table_fd, _TABLE_HEAD.size + length,
                                            prot=mmap.PROT_READ))
                tables = _read_tables(view[_TABLE_HEAD.size:])
            sealed_fd = os.dup(pages_fd) if tables else -1
        except (OSError, ValueError, struct.error) as exc:
            log.warning("page file in %s: cannot read the pages rendered ahead (%s); pages "
                        "are rendered as asked for", self.directory, exc)
            self._ahead = None
            return False
        with self._lock:
            self._ahead = None
            if tables and self._sealed_fd < 0:
                self._sealed, self._sealed_fd = tables, sealed_fd
                return True
        if sealed_fd >= 0:
            os.close(sealed_fd)
        return False

    def close(self) -> None:
        with self._lock:
            if self._sealed_fd >= 0:
                os.close(self._sealed_fd)
                self._sealed_fd, self._sealed = -1, {}
            if self._fd >= 0:
                os.close(self._fd)
                self._fd = -1
            self._forget()
            self._generation += 1

    # -- under self._lock

    def _beside_place(self, space: str, name: str, serial: int) -> int | None:
        """Where this file holds the page, if ``space`` is a sealed one's gzipped copies."""
        places = self._beside.get(space)
        sealed = self._sealed.get(space[: -len(GZIP_SUFFIX)]) if places is not None else None
        row = sealed.row(name, serial) if sealed is not None else -1  # None: closed meanwhile
        return (places[row] or None) if row >= 0 else None

    def _register(self, pages: Iterable[tuple[str, str, int, int]], offset: int) -> None:
        """Note where pages (space, name, serial, length) written from ``offset`` on are."""
        for space, name, serial, length in pages:
            if space.endswith(GZIP_SUFFIX) and self._put_beside(space, name, serial,
                                                               offset << _OFFSET_SHIFT | length):
                offset += length
                continue
            names = self._where.setdefault(space, {})
            old = names.get(name)
            if old is not None:
                self._dead += old & _LENGTH_MASK
            names[name] = serial << _SERIAL_SHIFT | offset << _OFFSET_SHIFT | length
            offset += length

    def _put_beside(self, space: str, name: str, serial: int, place: int) -> bool:
        sealed = self._sealed.get(space[: -len(GZIP_SUFFIX)])
        row = sealed.row(name, serial) if sealed is not None else -1
        if row < 0:
            return False  # changed since the seal (or never in it): the dict's
        places = self._beside.get(space)
        if places is None:
            places = self._beside[space] = array("Q", bytes(8 * len(sealed.hashes)))
        self._dead += places[row] & _LENGTH_MASK
        places[row] = place
        return True

    def _writable(self, length: int) -> bool:
        if self._paused_until and time.monotonic() < self._paused_until:
            return False
        if self._fd < 0 and not self._open():
            return False
        if length > self.max_bytes:
            return False
        live = self._end - self._dead
        if self._end + length > self.max_bytes or (
                self._dead > COMPACT_BYTES and self._dead > live):
            self._truncate()
        # Every write looks (one fstatvfs, far cheaper than the page it stores): uploads
        # fill the disk between two writes, and they come first.
        try:
            free, total = disk_space(self._fd)
        except OSError as exc:
            self._fail(exc)
            return False
        min_free = min(self.min_free, total // 10)
        if free < min_free + length:
            self._fail(OSError(errno.ENOSPC, f"less than {_size(min_free)} free on its disk"))
            return False
        return True

    def _open(self) -> bool:
        try:
            self._fd = unlinked_file(self.directory, ".pages-")
        except OSError as exc:
            self._fail(exc)
            return False
        return True

    def _truncate(self) -> None:
        try:
            os.ftruncate(self._fd, 0)
        except OSError as exc:
            log.warning("page file in %s: cannot truncate it: %s", self.directory, exc)
        paused = self._paused_until
        self._forget()
        self._paused_until = paused
        self._generation += 1

    def _fail(self, exc: OSError) -> None:
        # Warn once per spell of trouble: a disk that stays full is said once.
        (log.debug if self._troubled else log.warning)(
            "page file in %s: %s; pages are rendered on each visit instead of stored "
            "(tried again every %d s)", self.directory, exc.strerror or exc, PAUSE_SECONDS)
        self._troubled = True
        if self._fd >= 0:
            self._truncate()  # give the space back
        self._paused_until = time.monotonic() + PAUSE_SECONDS


class Sealed:
    """One space's sealed pages: name hashes, serials and places (offset << 32 | length) in
    arrays sorted by hash. A hash two names share is left out (rendered again instead):
    a name not in the table that has a listed name's hash needs its serial too, and the
    sealed serials are older than any change made after the seal."""

    __slots__ = ("hashes", "serials", "places")

    hashes: array[int] | memoryview
    serials: array[int] | memoryview
    places: array[int] | memoryview

    def __init__(self, names: dict[str, int]) -> None:
        rows = sorted(zip(map(hash, names), names.values(), strict=True))
        hashes = [h for h, _ in rows]
        if len(set(hashes)) != len(hashes):  # rare: leave out every hash two names share
            counts = Counter(hashes)
            rows = [row for row in rows if counts[row[0]] == 1]
            hashes = [h for h, _ in rows]
        values = [v for _, v in rows]
        self.hashes = array("q", hashes)
        # Generators, not lists: each int made here is freed before the next (a list of
        # them would leave holes in the heap the workers inherit).
        self.serials = array("Q", (v >> _SERIAL_SHIFT for v in values))
        self.places = array("Q", (v & (1 << _SERIAL_SHIFT) - 1 for v in values))

    @classmethod
    def of(cls, hashes: memoryview, serials: memoryview, places: memoryview) -> Sealed:
        """A table read back from ``export_sealed``'s file (views of its mapping: shared
        by every process that maps it, in none's heap)."""
        sealed = cls.__new__(cls)
        sealed.hashes, sealed.serials, sealed.places = hashes, serials, places
        return sealed

    def find(self, name: str, serial: int) -> int | None:
        """``offset << 32 | length`` of the page, or None (``row``'s lookup, inline: every
        page read back passes here)."""
        key = hash(name)
        hashes = self.hashes
        at = bisect_left(hashes, key)
        if at == len(hashes) or hashes[at] != key or self.serials[at] != serial:
            return None
        return self.places[at]

    def row(self, name: str, serial: int) -> int:
        """The page's row in the table, or -1."""
        key = hash(name)
        at = bisect_left(self.hashes, key)
        if at == len(self.hashes) or self.hashes[at] != key or self.serials[at] != serial:
            return -1
        return at


def _read_tables(body: memoryview) -> dict[str, Sealed]:
    """The tables ``export_sealed`` wrote, as views of ``body``."""
    tables, at = {}, 0
    while at < len(body):
        size, rows = _SPACE.unpack_from(body, at)
        at += _SPACE.size
        space = bytes(body[at:at + size]).decode()
        at += size + -size % 8
        views = []
        for code in "qQQ":
            if at + 8 * rows > len(body):
                raise ValueError("a table cut short")
            views.append(body[at:at + 8 * rows].cast(code))
            at += 8 * rows
        tables[space] = Sealed.of(*views)
    return tables


def write_all(fd: int, data: bytes, offset: int) -> int:
    """Write all of ``data`` at ``offset`` (a write may be short); returns its length."""
    view = memoryview(data)
    while view:
        done = os.pwrite(fd, view, offset)
        view, offset = view[done:], offset + done
    return len(data)


def _size(count: int) -> str:
    """A size for a message.

    >>> _size(512 * 1024**2), _size(819_200)
    ('512 MB', '800 KB')
    """
    return f"{count // 1024**2} MB" if count >= 1024**2 else f"{count // 1024} KB"


def _copy(src: int, dst: int, count: int, at_src: int, at_dst: int) -> int:
    """Copy bytes between two files in the kernel where it can (else through memory)."""
    if hasattr(os, "copy_file_range"):
        try:
            return os.copy_file_range(src, dst, count, at_src, at_dst)
        except OSError as exc:
            if exc.errno not in (errno.EXDEV, errno.ENOSYS, errno.EINVAL, errno.EOPNOTSUPP):
                raise
    data = os.pread(src, min(count, BATCH_BYTES), at_src)
    return os.pwrite(dst, data, at_dst) if data else 0


def disk_space(fd: int) -> tuple[int, int]:
    """Bytes (free to unprivileged users, in all) on the disk holding ``fd``."""
    st = os.fstatvfs(fd)
    return st.f_bavail * st.f_frsize, st.f_blocks * st.f_frsize
