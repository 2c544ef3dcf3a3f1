"""The event/audit log in a bucket: one object per line, ``.pypid/events/<seq>.json``.

Lines are what ``events.encode`` makes, chained by ``prev`` as in the local log.
A writer creates the next seq's object with ``If-None-Match: *``: when another
node took that seq first (412), it chains after that line and tries the next.
An object is whole or absent, so there is no torn line; seqs are zero-padded, so
the store lists them in order, and a reader lists only the keys after the last
one it read (``StartAfter``), stopping at a gap. A node's ``LogMirror`` holds the
lines it read before, so that a restart asks the store for the new ones only.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from pypid.events import (
    ZERO_HASH,
    Event,
    EventLogError,
    LogUnavailableError,
    decode,
    encode,
    line_hash,
    utc_now,
)
from pypid.storage.s3client import (
    BucketPlace,
    Clients,
    client_errors,
    is_missing,
    is_taken,
    is_unreachable,
    reason,
)
from pypid.storage.s3mirror import LogMirror, seq_of

log = logging.getLogger("pypid.audit")

EVENTS_DIR = ".pypid/events/"
SEQ_DIGITS = 12
ADOPT_THREADS = 16  # lines of an adopted log created at once
APPEND_TRIES = 1000  # seqs taken by other nodes in a row before giving up
READ_BATCH = 5000  # lines per read; the next read goes on
PAGE_LIMIT = 100_000


class BucketLog:
    """The log of one bucket place; ``note`` hears whether the store answered."""

    def __init__(self, clients: Clients, place: BucketPlace,
                 note: Callable[[str | None], None] = lambda _problem: None,
                 mirror: LogMirror | None = None) -> None:
        self.clients = clients
        self.place = place
        self.mirror = mirror
        self._mirror_end = -1  # the mirror's last seq once checked against the store
        self.path = f"{place.describe()}/{EVENTS_DIR.rstrip('/')}"
        self._note = note
        self._lock = threading.Lock()
        self._tail = (0, ZERO_HASH)  # the last seq seen here, and its line's hash

    def _key(self, seq: int) -> str:
        return f"{self.place.top}{EVENTS_DIR}{seq:0{SEQ_DIGITS}d}.json"

    def _seq_of(self, key: str) -> int | None:
        name = key.rsplit("/", 1)[-1]
        stem = name.removesuffix(".json")
        return int(stem) if stem.isdigit() and name.endswith(".json") else None

    # -- writing

    def append(self, action: str, *, user: str, client: str | None = None,
               **fields: Any) -> Event:
        """Create the next line's object; EventLogError when the store cannot take it."""
        with self._lock:
            try:
                seq, prev = self._find_tail()
                for _try in range(APPEND_TRIES):
                    line = encode(seq + 1, action, fields, when=utc_now(), user=user,
                                  client=client, prev=prev)
                    if self._create(seq + 1, line):
                        self._tail = (seq + 1, line_hash(line))
                        if self.mirror is not None:
                            self.mirror.extend([line])
                        break
                    seq, prev = seq + 1, line_hash(self._get(seq + 1))  # another node's
                else:
                    raise EventLogError(f"{self.path}: {APPEND_TRIES} lines were taken by "
                                        "other writers in a row; try again")
            except client_errors() as exc:
                self._note(f"{self.place.describe()}: unreachable: {reason(exc)}")
                kind = LogUnavailableError if is_unreachable(exc) else EventLogError
                raise kind(f"{self.path}: cannot write: {reason(exc)}") from None
        self._note(None)
        log.info("%s", line.decode())  # the journal's copy
        return decode(line)

    def adopt(self, lines: list[bytes]) -> None:
        """Make ``lines`` (a whole log from seq 1, its chain checked by the caller) this
        log, verbatim: a migration keeps its history. EventLogError when the log is not
        empty, or another writer took a seq meanwhile (the lines created stay: the error
        says how far it got)."""
        with self._lock:
            try:
                if self._find_tail()[0]:
                    raise EventLogError(f"{self.path}: not empty; a log is adopted only "
                                        "into an empty one")
                with ThreadPoolExecutor(ADOPT_THREADS) as pool:
                    made = list(pool.map(self._create, range(1, len(lines) + 1), lines))
            except client_errors() as exc:
                self._note(f"{self.place.describe()}: unreachable: {reason(exc)}")
                raise EventLogError(f"{self.path}: cannot write: {reason(exc)}") from None
            if not all(made):
                raise EventLogError(f"{self.path}: line {made.index(False) + 1} was written "
                                    "by another node meanwhile; the log is now mixed")
            if lines:
                self._tail = (len(lines), line_hash(lines[-1]))
                if self.mirror is not None:
                    self.mirror.extend(lines)
        self._note(None)

    def _create(self, seq: int, line: bytes) -> bool:
        try:
            self.clients.create_only().put_object(
                Bucket=self.place.bucket, Key=self._key(seq), Body=line,
                ContentLength=len(line), ContentType="application/json")
        except client_errors() as exc:
            if is_taken(exc):
                return False
            raise
        return True

    def _find_tail(self) -> tuple[int, str]:
        """The last line's seq and hash: the keys after the last one seen here."""
        seq, digest = self._tail
        last = seq
        for found in self._seqs_after(seq):
            if found != last + 1:
                break
            last = found
        if last != seq:
            seq, digest = last, line_hash(self._get(last))
            self._tail = (seq, digest)
        return seq, digest

    def repair(self) -> bool:
        """Nothing to repair: an object is whole or absent."""
        return False

    # -- reading

    def _get(self, seq: int) -> bytes:
        answer = self.clients.plain().get_object(Bucket=self.place.bucket, Key=self._key(seq))
        with answer["Body"] as body:
            data: bytes = body.read()
        return data

    def _seqs_after(self, seq: int) -> Iterator[int]:
        """The seqs of the objects after ``seq``, in order (a page of 1,000 at a time)."""
        client = self.clients.plain()
        request: dict[str, Any] = {"Bucket": self.place.bucket,
                                   "Prefix": self.place.top + EVENTS_DIR}
        if seq:
            request["StartAfter"] = self._key(seq)
        for _page in range(PAGE_LIMIT):
            answer = client.list_objects_v2(**request)
            for item in answer.get("Contents", ()):
                found = self._seq_of(item["Key"])
                if found is not None:
                    yield found
            token = answer.get("NextContinuationToken")
            if not answer.get("IsTruncated") or not token:
                return
            request["ContinuationToken"] = token

    def size(self) -> int:
        """No cheap size in a bucket: -1, so a reader always asks for new lines."""
        return -1

    def read(self, offset: int = 0) -> tuple[list[Event], int]:
        """The lines after seq ``offset`` (up to READ_BATCH), and the last seq read."""
        if self.mirror is not None and offset < self._check_mirror():
            lines = self.mirror.lines_after(offset, READ_BATCH)
            if lines:
                return self._decoded(lines), offset + len(lines)
        events: list[Event] = []
        lines = []
        seq = offset
        try:
            for found in self._seqs_after(offset):
                if found != seq + 1 or len(events) >= READ_BATCH:
                    break  # a gap (a line not listed yet): the next read goes on
                lines.append(self._get(found))
                seq = found
        except client_errors() as exc:
            self._note(f"{self.place.describe()}: unreachable: {reason(exc)}")
            log.debug("audit log %s: cannot read: %s", self.path, reason(exc))
        else:
            self._note(None)
        if lines and self.mirror is not None:
            self.mirror.extend(lines)
        return self._decoded(lines), seq

    def _decoded(self, lines: list[bytes]) -> list[Event]:
        events = []
        for line in lines:
            try:
                events.append(decode(line))
            except ValueError:
                log.warning("audit log %s: skipping a line that is not an entry", self.path)
        if lines and seq_of(lines[-1]) > self._tail[0]:
            self._tail = (seq_of(lines[-1]), line_hash(lines[-1]))
        return events

    def _check_mirror(self) -> int:
        """The mirror's last seq, once the store still holds that line as mirrored (else the
        mirror is dropped: the bucket was replaced or rewound). -1 while it cannot say."""
        if self._mirror_end >= 0 or self.mirror is None:
            return self._mirror_end
        last, line = self.mirror.last()
        try:
            same = last == 0 or self._get(last) == line
        except client_errors() as exc:
            if not is_missing(exc):
                return -1  # the store is away: ask again at the next read
            same = False
        if not same:
            log.warning("audit log %s: this node's copy %s does not match the bucket's; "
                        "dropped it, reading the log from the store", self.path,
                        self.mirror.path)
            self.mirror.drop()
            last = 0
        self._mirror_end = last
        return last

    def scan(self) -> Iterator[Event]:
        """Every line, oldest first."""
        offset = 0
        for _batch in range(PAGE_LIMIT):
            events, offset = self.read(offset)
            if not events:
                return
            yield from events

    def verify(self) -> tuple[int, str | None]:
        """(lines checked, None) when the chain holds, else (N, "line N: what is wrong")."""
        prev, count = ZERO_HASH, 0
        try:
            for found in self._seqs_after(0):
                number = count + 1
                if found != number:
                    return count, f"line {number}: missing (the next line is {found})"
                line = self._get(found)
                try:
                    event = decode(line)
                except ValueError:
                    return count, f"line {number}: not an audit entry"
                if event.seq != number:
                    return count, f"line {number}: seq is not {number}"
                if not line.endswith(f',"prev":"{prev}"}}'.encode()):
                    return count, (f"line {number}: its prev hash does not match line "
                                   f"{number - 1}" if number > 1 else
                                   "line 1: its prev hash is not the first line's (64 zeros)")
                prev, count = line_hash(line), number
        except client_errors() as exc:
            return count, f"line {count + 1}: cannot be read: {reason(exc)}"
        return count, None
