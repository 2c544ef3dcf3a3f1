"""The sidecar cache beside the files: hashes, metadata facts, upload times.

A SQLite file in ``<root>/.pypid/``, shared by the master and every worker. All
of it but the yank marks can be rebuilt from the files; losing it costs one
re-hash of the root. A corrupt file is moved aside and rebuilt; an unwritable
cache folder degrades to a private in-memory cache with one warning.
"""

from __future__ import annotations

import contextlib
import errno
import logging
import os
import sqlite3
import tempfile
import threading
import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

from pypid.storage import FileIdentity

log = logging.getLogger("pypid.cache")

DB_NAME = "index.sqlite3"
SCHEMA_VERSION = 2
_SCHEMA = """
CREATE TABLE IF NOT EXISTS files (
    relpath TEXT PRIMARY KEY,
    size INTEGER NOT NULL,
    mtime_ns INTEGER NOT NULL,
    inode INTEGER NOT NULL,
    sha256 TEXT,
    requires_python TEXT,
    metadata_sha256 TEXT,
    upload_time REAL NOT NULL,
    error TEXT,
    project TEXT,
    version TEXT
);
"""


@dataclass(frozen=True, slots=True)
class FileRow:
    """What the cache knows of one file, valid while its identity still matches."""

    relpath: str
    size: int
    mtime_ns: int
    inode: int
    sha256: str | None
    requires_python: str | None
    metadata_sha256: str | None
    upload_time: float
    error: str | None = None
    project: str | None = None  # normalized, as parsed once from the file name
    version: str | None = None  # normalized PEP 440 text

    @property
    def identity(self) -> FileIdentity:
        return FileIdentity(self.size, self.mtime_ns, self.inode)

    def fields(self) -> tuple[str, int, int, int, str | None, str | None, str | None, float,
                              str | None, str | None, str | None]:
        """The row as a plain tuple, in column order (``FileRow(*fields)`` makes it again):
        what SQLite takes, and far cheaper to pickle than the object."""
        return (self.relpath, self.size, self.mtime_ns, self.inode, self.sha256,
                self.requires_python, self.metadata_sha256, self.upload_time, self.error,
                self.project, self.version)


_SELECT = ("SELECT relpath, size, mtime_ns, inode, sha256, requires_python, metadata_sha256,"
           " upload_time, error, project, version FROM files")
_INSERT = ("INSERT OR REPLACE INTO files (relpath, size, mtime_ns, inode, sha256, requires_python,"
           " metadata_sha256, upload_time, error, project, version)"
           " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)")


class CacheDB:
    """Thread- and fork-safe access: one connection per (process, thread)."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self.path: str = str(directory / DB_NAME)
        self._local = threading.local()
        self._memory_conn: sqlite3.Connection | None = None
        self._prepare()

    @property
    def on_disk(self) -> bool:
        """False once an unwritable folder made it fall back to memory."""
        return self.path != ":memory:"

    def _prepare(self) -> None:
        try:
            self.directory.mkdir(mode=0o750, exist_ok=True)
            conn = self._connect()
            conn.close()
        except sqlite3.DatabaseError as exc:
            if not isinstance(exc, sqlite3.OperationalError) or "not a database" in str(exc):
                self._move_aside(exc)
            else:
                self._use_memory(exc)
        except OSError as exc:
            self._use_memory(exc)

    def _move_aside(self, exc: Exception) -> None:
        aside = f"{self.path}.corrupt-{int(time.time())}"
        log.warning("cache %s is unreadable (%s); moved to %s and rebuilding",
                    self.path, exc, aside)
        for suffix in ("", "-wal", "-shm"):
            with contextlib.suppress(FileNotFoundError):
                os.replace(self.path + suffix, aside + suffix)
        self._connect().close()

    def _use_memory(self, exc: Exception) -> None:
        log.warning("cannot write the cache in %s (%s); keeping it in memory only, so every "
                    "start re-hashes the root", self.directory, exc)
        self.path = ":memory:"

    def _connect(self) -> sqlite3.Connection:
        if self.path == ":memory:":
            if self._memory_conn is None:
                self._memory_conn = sqlite3.connect(":memory:", check_same_thread=False,
                                                    isolation_level=None)
                self._memory_conn.executescript(_SCHEMA)
            return self._memory_conn
        conn = sqlite3.connect(self.path, timeout=30, isolation_level=None)
        conn.execute("PRAGMA journal_mode=WAL")
        conn.execute("PRAGMA synchronous=NORMAL")
        version = conn.execute("PRAGMA user_version").fetchone()[0]
        if version != SCHEMA_VERSION:
            conn.executescript("DROP TABLE IF EXISTS files;" if version else "")
            conn.executescript(_SCHEMA)
            conn.execute(f"PRAGMA user_version={SCHEMA_VERSION}")
        return conn

    def conn(self) -> sqlite3.Connection:
        """This thread's connection (a new one after a fork: SQLite must not cross fork)."""
        local = self._local
        if getattr(local, "pid", None) != os.getpid():
            local.conn = self._connect()
            local.pid = os.getpid()
        return local.conn

    def close(self) -> None:
        """Close this thread's connection (the master calls it before forking workers)."""
        conn = getattr(self._local, "conn", None)
        if conn is not None and conn is not self._memory_conn:
            conn.close()
        self._local = threading.local()

    def iter_files(self) -> Iterator[FileRow]:
        """Every row, one at a time (a large root must not be held twice in memory)."""
        conn = self.conn()
        yield from (FileRow(*row) for row in conn.execute(_SELECT))

    def get(self, relpath: str) -> FileRow | None:
        row = self.conn().execute(_SELECT + " WHERE relpath = ?", (relpath,)).fetchone()
        return FileRow(*row) if row else None

    def put(self, rows: Iterable[FileRow]) -> None:
        conn = self.conn()
        with _transaction(conn):
            conn.executemany(_INSERT, [row.fields() for row in rows])

    def forget(self, versions: Iterable[tuple[str, FileIdentity]]) -> None:
        """Delete the rows of these (relpath, identity) file versions, but no newer one."""
        conn = self.conn()
        with _transaction(conn):
            conn.executemany(
                "DELETE FROM files WHERE relpath = ? AND size = ? AND mtime_ns = ? AND inode = ?",
                [(relpath, *identity) for relpath, identity in versions])


class _transaction:
    """BEGIN IMMEDIATE ... COMMIT, rolled back on error (autocommit connections)."""

    def __init__(self, conn: sqlite3.Connection) -> None:
        self.conn = conn

    def __enter__(self) -> None:
        if not self.conn.in_transaction:
            self.conn.execute("BEGIN IMMEDIATE")
            self.own = True
        else:
            self.own = False

    def __exit__(self, exc_type: object, *_: object) -> None:
        if not self.own:
            return
        self.conn.execute("ROLLBACK" if exc_type else "COMMIT")


def unlinked_file(directory: Path, prefix: str) -> int:
    """A new scratch file in the cache folder that no name points to (``O_TMPFILE``, else
    made and unlinked at once, named ``prefix...`` meanwhile): a crash leaves nothing."""
    flags = os.O_RDWR | os.O_CLOEXEC
    tmpfile = getattr(os, "O_TMPFILE", 0)
    if tmpfile:
        try:
            return os.open(directory, flags | tmpfile, 0o600)
        except OSError as exc:
            if exc.errno not in (errno.EOPNOTSUPP, errno.EISDIR, errno.EINVAL):
                raise
    fd, path = tempfile.mkstemp(prefix=prefix, dir=directory)
    os.unlink(path)
    return fd
