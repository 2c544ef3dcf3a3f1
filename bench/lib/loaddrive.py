"""The load run's clients: readers in a closed loop, uploaders at a fixed rate, one tally.

Every client is a coroutine with its own keep-alive connection, all in one event loop
(this process, pinned to the client CPU). A request fails when its answer is not the
one its ``Ask`` expects, or when it ends in a connection error or a timeout.
"""

from __future__ import annotations

import asyncio
import collections
import random
import time
from dataclasses import dataclass, field

from bench.lib.httpclient import Connection, StaleConnection
from bench.lib.loadmix import Ask, Mix

IDLE_REOPEN = 2.0  # an uploader opens a new connection after this long idle (keep-alive is 5 s)
MAX_EXAMPLES = 20  # failures kept verbatim for the report
# latencies kept per kind: every one up to this, then a uniform sample of them (reservoir),
# so an hour at 20,000 requests/s does not hold 70 million floats
KEEP_LATENCIES = 500_000


@dataclass
class Tally:
    requests: collections.Counter[str] = field(default_factory=collections.Counter)
    latencies: dict[str, list[float]] = field(default_factory=lambda: collections.defaultdict(list))
    statuses: collections.Counter[tuple[str, int]] = field(default_factory=collections.Counter)
    answered: collections.Counter[str] = field(default_factory=collections.Counter)
    failures: collections.Counter[str] = field(default_factory=collections.Counter)
    examples: list[str] = field(default_factory=list)  # "12.3 s kind: what went wrong"
    # requests re-sent once on a new connection (StaleConnection), by the answer before
    retries: collections.Counter[str] = field(default_factory=collections.Counter)
    seconds: float = 0.0  # wall time of the whole run
    slowest: dict[str, float] = field(default_factory=dict)  # kind -> max latency (s)
    _rng: random.Random = field(default_factory=lambda: random.Random(0))  # noqa: S311

    def latency(self, kind: str, seconds: float) -> None:
        """Record one answer's latency: all of them, or a uniform sample past KEEP_LATENCIES."""
        if seconds > self.slowest.get(kind, -1.0):
            self.slowest[kind] = seconds
        kept = self.latencies[kind]
        if len(kept) < KEEP_LATENCIES:
            kept.append(seconds)
            return
        j = self._rng.randrange(self.answered[kind])  # answered counts this one already
        if j < KEEP_LATENCIES:
            kept[j] = seconds

    def fail(self, t: float, kind: str, what: str) -> None:
        self.failures[kind] += 1
        if len(self.examples) < MAX_EXAMPLES:
            self.examples.append(f"{t:6.1f} s  {kind}: {what}")


class Driver:
    """Runs ``clients`` clients for ``seconds`` against the server on ``port``."""

    def __init__(self, mix: Mix, port: int, *, clients: int, uploaders: int,
                 upload_rate: float, seconds: float, timeout: float, seed: int) -> None:
        if not 0 <= uploaders < clients:
            raise ValueError("need 0 <= uploaders < clients")
        self.mix, self.port = mix, port
        self.clients, self.uploaders, self.upload_rate = clients, uploaders, upload_rate
        self.seconds, self.timeout, self.seed = seconds, timeout, seed
        self.tally = Tally()
        self.t0 = 0.0

    def run(self) -> Tally:
        asyncio.run(self._main())
        return self.tally

    async def _main(self) -> None:
        self.t0 = time.monotonic()
        deadline = self.t0 + self.seconds
        tasks = [self._uploader(i, deadline) for i in range(self.uploaders)]
        tasks += [self._reader(i, deadline) for i in range(self.clients - self.uploaders)]
        # a request in flight at the deadline may take up to timeout to end
        await asyncio.wait_for(asyncio.gather(*tasks), self.seconds + self.timeout + 30)
        self.tally.seconds = time.monotonic() - self.t0

    async def _reader(self, i: int, deadline: float) -> None:
        rng = random.Random(self.seed * 1_000_003 + i)  # noqa: S311 (a mix, not crypto)
        conn = Connection(self.port, self.timeout)
        try:
            while time.monotonic() < deadline:
                await self._exchange(conn, self.mix.read(rng))
        finally:
            await conn.close()

    async def _uploader(self, i: int, deadline: float) -> None:
        rng = random.Random(self.seed * 1_000_003 - i - 1)  # noqa: S311
        conn = Connection(self.port, self.timeout)
        every = self.uploaders / self.upload_rate
        due = self.t0 + every * i / self.uploaders  # staggered
        try:
            while due < deadline:
                await asyncio.sleep(max(0.0, due - time.monotonic()))
                due += every
                if time.monotonic() - conn.last_used > IDLE_REOPEN:
                    await conn.close()
                ask = self.mix.upload(rng)
                if await self._exchange(conn, ask):
                    self.mix.uploaded(ask)
        finally:
            await conn.close()

    async def _exchange(self, conn: Connection, ask: Ask) -> bool:
        """One request, re-sent once if its kept-alive connection had been closed."""
        t = time.monotonic() - self.t0
        self.tally.requests[ask.kind] += 1
        try:
            try:
                reply = await conn.request(ask.raw)
            except StaleConnection:
                self.tally.retries[f"{ask.kind} after {conn.previous}"] += 1
                reply = await conn.request(ask.raw)
        # (a timeout is an OSError: TimeoutError)
        except (OSError, asyncio.IncompleteReadError, asyncio.LimitOverrunError,
                ValueError) as exc:
            self.tally.fail(t, ask.kind, f"{type(exc).__name__}: {exc}".strip(": "))
            return False
        conn.previous = f"{ask.kind} {reply.status}"
        self.tally.statuses[(ask.kind, reply.status)] += 1
        self.tally.answered[ask.kind] += 1
        self.tally.latency(ask.kind, reply.seconds)
        problem = ask.problem(reply)
        if problem:
            self.tally.fail(t, ask.kind, problem)
            return False
        return True
