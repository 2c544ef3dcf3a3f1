"""Raw HTTP/1.1 for wire attacks: bytes out as written, every answer on a connection back.

``exchange`` sends bytes and reads until the server closes (or a timeout says it
hung); ``split_answers`` cuts what came back into answers by their own framing,
so a test can count them: one request, one answer, never two.
"""

from __future__ import annotations

import contextlib
import socket
from dataclasses import dataclass


@dataclass
class Answer:
    status: int
    headers: dict[str, str]  # lower-cased names; a repeated one keeps its last value
    body: bytes


@dataclass
class Exchange:
    answers: list[Answer]
    rest: bytes  # bytes after the last whole answer: none, when the server frames well
    closed: bool  # the server closed the connection (else the read timed out)

    @property
    def finals(self) -> list[Answer]:
        """The answers without the interim ones (100 Continue)."""
        return [a for a in self.answers if a.status >= 200]

    def shows(self, text: bytes) -> bool:
        return any(text in a.body for a in self.answers)


def split_answers(data: bytes, *, head_request: bool = False) -> tuple[list[Answer], bytes]:
    """The whole answers at the start of ``data``, and what follows them."""
    answers = []
    while True:
        end = data.find(b"\r\n\r\n")
        if end < 0 or not data.startswith(b"HTTP/1."):
            return answers, data
        lines = data[:end].decode("latin-1").split("\r\n")
        try:
            status = int(lines[0].split(" ", 2)[1])
        except (IndexError, ValueError):
            return answers, data
        headers = {}
        for line in lines[1:]:
            name, _, value = line.partition(":")
            headers[name.strip().lower()] = value.strip()
        rest = data[end + 4:]
        if status < 200 or status in (204, 304) or head_request:
            body = b""
        elif headers.get("transfer-encoding", "").lower() == "chunked":
            decoded = _unchunk(rest)
            if decoded is None:
                return answers, data
            body, rest = decoded
        elif "content-length" in headers:
            length = int(headers["content-length"])
            if len(rest) < length:
                return answers, data
            body, rest = rest[:length], rest[length:]
        else:  # framed by the close
            body, rest = rest, b""
        answers.append(Answer(status, headers, body))
        data = rest


def _unchunk(data: bytes) -> tuple[bytes, bytes] | None:
    body = b""
    while True:
        line_end = data.find(b"\r\n")
        if line_end < 0:
            return None
        size = int(data[:line_end].split(b";")[0], 16)
        data = data[line_end + 2:]
        if size == 0:
            trailer_end = data.find(b"\r\n")  # no trailers from pypid
            return (body, data[trailer_end + 2:]) if trailer_end >= 0 else None
        if len(data) < size + 2:
            return None
        body, data = body + data[:size], data[size + 2:]


def connect(host: str, port: int, *, receive_window: int | None = None,
            timeout: float = 10.0) -> socket.socket:
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    if receive_window is not None:  # before connect: it sets the advertised window
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, receive_window)
    sock.settimeout(timeout)
    sock.connect((host, port))
    return sock


def read_until_close(sock: socket.socket, limit: int = 16 * 1024 * 1024) -> tuple[bytes, bool]:
    """Everything the server sends until it closes: (bytes, closed). False: timed out."""
    chunks, size = [], 0
    try:
        while size < limit:
            chunk = sock.recv(65536)
            if not chunk:
                return b"".join(chunks), True
            chunks.append(chunk)
            size += len(chunk)
    except ConnectionResetError:
        return b"".join(chunks), True
    except TimeoutError:
        pass
    return b"".join(chunks), False


def exchange(host: str, port: int, data: bytes, *, timeout: float = 10.0,
             head_request: bool = False) -> Exchange:
    """Send ``data`` in one write, then read every answer until the server closes."""
    with connect(host, port, timeout=timeout) as sock:
        with contextlib.suppress(BrokenPipeError, ConnectionResetError):
            sock.sendall(data)  # closed early: what it answered is still to be read
        received, closed = read_until_close(sock)
    answers, rest = split_answers(received, head_request=head_request)
    return Exchange(answers, rest, closed)
