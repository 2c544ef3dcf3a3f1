"""A client connection as pypid's worker loop holds it, and its named states."""

from __future__ import annotations

import enum
import socket
from typing import Any


class State(enum.Enum):
    WAITING = "waiting for a request"  # in the selector until the keep-alive deadline
    READING = "reading a head"  # in the selector until the head deadline
    PAUSED = "answers queued"  # out of the selector: read requests wait for the answers to leave
    CLOSING = "closing"  # out of the selector: closed once the queued answers are sent
    IN_THREAD = "in a thread"


class Conn:
    """A client connection and what the loop holds for it."""

    __slots__ = ("sock", "fd", "client", "address", "server", "buf", "state", "deadline",
                 "out", "out_bytes")

    def __init__(self, sock: socket.socket, client: Any, server: Any) -> None:
        self.sock = sock
        self.fd = sock.fileno()
        self.client = client
        self.address = address(client)  # for the log and the login limit
        self.server = server
        self.buf = bytearray()
        self.state = State.IN_THREAD  # until the loop watches it
        self.deadline = 0.0  # for WAITING and READING
        self.out: list[bytes] = []  # answers not sent yet (see PypidWorker._flush_all)
        self.out_bytes = 0

    @property
    def in_selector(self) -> bool:
        return self.state in (State.WAITING, State.READING)


def unsent(parts: list[bytes], sent: int) -> list[memoryview]:
    """What of ``parts`` is left after the first ``sent`` bytes, without copying."""
    rest = []
    for part in parts:
        if sent >= len(part):
            sent -= len(part)
            continue
        rest.append(memoryview(part)[sent:])
        sent = 0
    return rest


def address(client: Any) -> str:
    return client[0] if isinstance(client, tuple) else str(client or "-")
