"""A client connection as pypid's worker loop holds it, and its named states."""

from __future__ import annotations

import enum
import os
import socket
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from datetime import datetime

    from pypid.http1 import PlainHead
    from pypid.simple.reply import Reply


class State(enum.Enum):
    WAITING = "waiting for a request"  # in the selector until the keep-alive deadline
    READING = "reading a head"  # in the selector until the head deadline
    PAUSED = "answers queued"  # out of the selector: read requests wait for the answers to leave
    CLOSING = "closing"  # out of the selector: closed once the queued answers are sent
    IN_THREAD = "in a thread"
    SENDING = "socket full"  # in the selector for writing; then reads its next request
    SENDING_LAST = "socket full, closing"  # the same, then closed


class Conn:
    """A client connection and what the loop holds for it."""

    __slots__ = ("sock", "fd", "client", "address", "server", "buf", "state", "deadline",
                 "out", "out_bytes", "body")

    def __init__(self, sock: socket.socket, client: Any, server: Any) -> None:
        self.sock = sock
        self.fd = sock.fileno()
        self.client = client
        self.address = address(client)  # for the log and the login limit
        self.server = server
        self.buf = bytearray()
        self.state = State.IN_THREAD  # until the loop watches it
        self.deadline = 0.0  # for WAITING and READING
        self.out: list[bytes | memoryview] = []  # answers not sent yet (see Sending)
        self.out_bytes = 0
        self.body: FileBody | None = None  # a file to send after ``out``

    def close(self) -> None:
        """Close the socket and the file being sent."""
        if self.body is not None:
            body, self.body = self.body, None
            os.close(body.fd)
        self.sock.close()

    @property
    def in_selector(self) -> bool:
        return self.state in _SELECTED


_SELECTED = (State.WAITING, State.READING, State.SENDING, State.SENDING_LAST)


class FileBody:
    """The part of an open file still to send after the head; ``log``: what the access
    log line needs once it has all left."""

    __slots__ = ("fd", "offset", "left", "length", "start", "sendfile", "log")

    def __init__(self, fd: int, offset: int, length: int,
                 log: tuple[PlainHead, Reply, datetime] | None) -> None:
        self.fd = fd
        self.offset = offset
        self.left = length
        self.length = length
        self.start = offset
        self.sendfile = True  # False: this file cannot be sent with sendfile
        self.log = log


def unsent(parts: list[bytes | memoryview], sent: int) -> list[bytes | memoryview]:
    """What of ``parts`` is left after the first ``sent`` bytes, without copying."""
    rest: list[bytes | memoryview] = []
    for part in parts:
        if sent >= len(part):
            sent -= len(part)
            continue
        rest.append(memoryview(part)[sent:])
        sent = 0
    return rest


def address(client: Any) -> str:
    return client[0] if isinstance(client, tuple) else str(client or "-")
