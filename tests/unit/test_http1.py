"""pypid.http1: which heads the worker's loop takes as plain, and what it reads from them.

None means "gunicorn's to judge": the loop never refuses a head itself.
"""

from __future__ import annotations

import random

import pytest

from pypid.http1 import (
    BARE_LF,
    MEMO_BLOCK_BYTES,
    MEMO_ENTRIES,
    NEED_MORE,
    HeadMemo,
    Limits,
    answer_parts,
    bare_lf,
    common_headers,
    find_head,
    parse_head,
)

H = b"Host: x"


@pytest.mark.parametrize(("head", "expected"), [
    # (method, path, query, close) for plain heads
    (b"GET /simple/a/ HTTP/1.1\r\n" + H, ("GET", "/simple/a/", "", False)),
    (b"HEAD /packages/a-1.0.tar.gz HTTP/1.1\r\n" + H,
     ("HEAD", "/packages/a-1.0.tar.gz", "", False)),
    (b"GET /simple/a/?format=application/vnd.pypi.simple.v1+json HTTP/1.1\r\n" + H,
     ("GET", "/simple/a/", "format=application/vnd.pypi.simple.v1+json", False)),
    (b"GET /simple/ HTTP/1.1\r\n" + H + b"\r\nConnection: close", ("GET", "/simple/", "", True)),
    (b"GET /simple/ HTTP/1.1\r\n" + H + b"\r\nConnection: Keep-Alive",
     ("GET", "/simple/", "", False)),
    (b"GET / HTTP/1.1", ("GET", "/", "", False)),  # no Host: gunicorn does not require one either
    (b"GET //simple/ HTTP/1.1\r\n" + H, ("GET", "//simple/", "", False)),  # the core's 404
])
def test_plain_heads(head: bytes, expected: tuple[str, str, str, bool]) -> None:
    memo = HeadMemo()
    for parsed in (parse_head(head), parse_head(head, memo=memo), parse_head(head, memo=memo)):
        assert parsed is not None  # read, read into the memo, found there: the same
        assert (parsed.method, parsed.path, parsed.query, parsed.close) == expected
        assert parsed.raw == head


@pytest.mark.parametrize("head", [
    b"POST / HTTP/1.1\r\nContent-Length: 3",  # a body
    b"GET / HTTP/1.1\r\nContent-Length: 0",
    b"GET / HTTP/1.1\r\nTransfer-Encoding: chunked",
    b"GET / HTTP/1.1\r\nExpect: 100-continue",
    b"GET / HTTP/1.1\r\nUpgrade: h2c\r\nConnection: Upgrade",
    b"GET / HTTP/1.1\r\nConnection: Upgrade",
    b"GET / HTTP/1.1\r\nConnection: keep-alive, close",  # a list: gunicorn reads it otherwise
    b"GET / HTTP/1.0",  # only HTTP/1.1
    b"GET / HTTP/2.0",
    b"get / HTTP/1.1",  # methods are case-sensitive
    b"OPTIONS * HTTP/1.1",
    b"GET http://evil.example/simple/ HTTP/1.1",  # absolute form
    b"GET /simple/%61/ HTTP/1.1",  # percent escapes in the path: decoded by gunicorn
    b"GET /simple/a#frag HTTP/1.1",
    b"GET /simple/ a HTTP/1.1",
    b"GET  /simple/ HTTP/1.1",
    b"GET /simple/ HTTP/1.1 ",
    b"GET /simple/\x80 HTTP/1.1",
    b"GET / HTTP/1.1\r\nA: 1\r\na: 2",  # a repeated header
    b"GET / HTTP/1.1\r\nX: 1\r\n folded",  # obs-fold
    b"GET / HTTP/1.1\r\nX : 1",  # space before the colon
    b"GET / HTTP/1.1\r\nNo colon",
    b"GET / HTTP/1.1\r\nX: \x00",
    b"GET / HTTP/1.1\r\nX: caf\xc3\xa9",  # obs-text
    b"GET / HTTP/1.1\r\nX: a\rb",
    b"GET / HTTP/1.1\r\n\r\nX: 1",  # an empty line inside
    b"GET / HTTP/1.1\r\nX: " + b"a" * 9000,  # past gunicorn's field limit
    b"GET /" + b"a" * 5000 + b" HTTP/1.1",  # past its line limit
    b"GET / HTTP/1.1\r\n" + b"X-A: 1\r\n" * 101,  # past its field count (and repeated)
])
def test_other_heads_are_gunicorns(head: bytes) -> None:
    memo = HeadMemo()
    assert parse_head(head) is None
    assert parse_head(head, memo=memo) is None
    assert parse_head(head, memo=memo) is None  # from the memo when it kept the block


def test_the_memo_keeps_blocks_not_request_lines_and_is_bounded() -> None:
    memo = HeadMemo()
    block = b"\r\nHost: x\r\nAccept: text/html"
    first = parse_head(b"GET /simple/a/ HTTP/1.1" + block, memo=memo)
    second = parse_head(b"HEAD /simple/b/ HTTP/1.1" + block, memo=memo)
    assert first is not None and second is not None
    assert (second.method, second.path) == ("HEAD", "/simple/b/")
    assert second.headers is first.headers and list(memo.blocks) == [block]
    assert parse_head(b"GET /simple/a/ HTTP/1.1\r\nConnection: close" + block,
                      memo=memo).close  # type: ignore[union-attr]
    for i in range(MEMO_ENTRIES + 10):
        parse_head(b"GET / HTTP/1.1\r\nX-N: %d" % i, memo=memo)
    assert len(memo.blocks) <= MEMO_ENTRIES and len(memo.lines) <= MEMO_ENTRIES
    long_block = b"\r\nX: " + b"a" * MEMO_BLOCK_BYTES
    assert parse_head(b"GET / HTTP/1.1" + long_block, memo=memo) is not None
    assert long_block not in memo.blocks  # read each time: memory stays bounded
    assert long_block.decode()[2:] not in memo.lines


def test_a_block_not_seen_whole_is_read_from_the_lines_seen() -> None:
    memo = HeadMemo()
    parse_head(b"GET /a/ HTTP/1.1\r\nHost: x\r\nIf-None-Match: \"1\"\r\nAccept: y", memo=memo)
    again = parse_head(b"GET /a/ HTTP/1.1\r\nHost: x\r\nIf-None-Match: \"2\"\r\nAccept: y",
                       memo=memo)
    assert again is not None and again.headers == {
        "host": "x", "if-none-match": '"2"', "accept": "y"}
    assert memo.lines["Host: x"] == ("host", "x")
    assert list(memo.blocks) == [] and 'If-None-Match: "2"' not in memo.lines
    assert parse_head(b"GET / HTTP/1.1\r\nHost: x\r\nhost: y", memo=memo) is None  # twice
    assert parse_head(b"GET / HTTP/1.1\r\nHost: x\r\nContent-Length: 0", memo=memo) is None


def test_validators_at_the_end_are_read_each_time_and_the_rest_kept() -> None:
    """pip's revalidations: the same block but for the If-None-Match it ends with."""
    memo = HeadMemo()
    for tag in (b"1", b"2", b"3"):
        parsed = parse_head(b"GET /a/ HTTP/1.1\r\nHost: x\r\nIf-None-Match: \"" + tag + b"\"",
                            memo=memo)
        assert parsed is not None
        assert parsed.headers == {"host": "x", "if-none-match": f'"{tag.decode()}"'}
    assert list(memo.blocks) == [b"\r\nHost: x"]
    assert memo.blocks[b"\r\nHost: x"] == ({"host": "x"}, False)  # its dict never changed


@pytest.mark.parametrize("block", [
    b"\r\nHost: x\r\nIf-None-Match: \"a\"",
    b"\r\nHost: x\r\nif-none-match:\t\"a\" \t",  # a tab: the full reading
    b"\r\nHost: x\r\nRange: bytes=0-9\r\nIf-Range: \"a\"",
    b"\r\nIf-Modified-Since: Sat, 05 Dec 2026 10:00:00 GMT",  # nothing before it
    b"\r\nHost: x\r\nIf-None-Match: \"a\"\r\nIf-None-Match: \"b\"",  # twice
    b"\r\nIf-None-Match: \"a\"\r\nHost: x\r\nIf-None-Match: \"b\"",  # twice, apart
    b"\r\nHost: x\r\nIf-None-Match : \"a\"",  # space before the colon
    b"\r\nHost: x\r\nIf-None-Match",  # no colon
    b"\r\nHost: x\r\nIf-None-Match: \"\x00\"",  # a control character
    b"\r\nHost: x\r\nIf-None-Match: \"\x7f\"",
    b"\r\nHost: x\r\nIf-None-Match: \"caf\xc3\xa9\"",  # obs-text
    b"\r\nHost: x\r\nIf-None-Match: \"" + b"a" * 9000 + b"\"",  # past the field size
    b"\r\nContent-Length: 0\r\nIf-None-Match: \"a\"",  # the rest not plain
    b"\r\nConnection: close\r\nIf-None-Match: \"a\"",
    b"".join(b"\r\nX-%d: 1" % i for i in range(99)) + b"\r\nRange: x\r\nIf-Range: y",
    b"".join(b"\r\nX-%d: 1" % i for i in range(98)) + b"\r\nRange: x\r\nIf-Range: y",
    b"\r\nHost: x" + b"\r\nIf-None-Match: \"a\"" * 6,  # a name five times over
    b"\r\nHost: x\r\nRange: a\r\nIf-Range: b\r\nIf-None-Match: c\r\nIf-Modified-Since: d",
    b"\r\nHost: x" + b"\r\nIf-None-Match: \"a\"" * 700,  # 32 KB of them: read once
])
def test_a_memo_reads_validators_as_a_full_reading_does(block: bytes) -> None:
    memo = HeadMemo()
    head = b"GET /a/ HTTP/1.1" + block
    alone = parse_head(head)
    for parsed in (parse_head(head, memo=memo), parse_head(head, memo=memo)):
        assert (parsed is None) == (alone is None)
        if parsed is not None and alone is not None:
            assert (parsed.headers, parsed.close) == (alone.headers, alone.close)


def test_limits_come_from_gunicorn() -> None:
    head = b"GET / HTTP/1.1\r\n" + b"".join(b"X-%d: 1\r\n" % i for i in range(5)) + H
    assert parse_head(head, Limits(fields=6)) is not None
    assert parse_head(head, Limits(fields=5)) is None
    assert parse_head(b"GET /abc HTTP/1.1", Limits(line=17)) is not None
    assert parse_head(b"GET /abcd HTTP/1.1", Limits(line=17)) is None


def test_headers_are_read_lower_cased_and_stripped() -> None:
    parsed = parse_head(b"GET / HTTP/1.1\r\nAccept:  text/html \t\r\nIF-NONE-MATCH: \"x\"")
    assert parsed is not None
    assert parsed.headers.get("accept") == "text/html"
    assert parsed.headers.get("if-none-match") == '"x"'
    assert parsed.headers.get("range") is None


@pytest.mark.parametrize(("buf", "expected"), [
    (b"", NEED_MORE),
    (b"GET / HTTP/1.1\r\nHost: x\r\n", NEED_MORE),
    (b"GET / HTTP/1.1\r\n\r\n", 14),
    (b"GET / HTTP/1.1\r\n\r\nGET / HTTP/1.1\r\n\r\n", 14),
    (b"GET / HTTP/1.1\n\n", BARE_LF),  # refused: parsers disagree on bare LF
    (b"GET / HTTP/1.1\r\nHost: x\n", BARE_LF),  # before the head is even complete
    (b"GET / HTTP/1.1\r\n\r\nGET / HTTP/1.1\n\n", 14),  # the first head is plain
    # A head that ends, with a bare LF inside: parse_head refuses it, bare_lf finds why.
    (b"GET / HTTP/1.1\nHost: x\n\nGET / HTTP/1.1\r\n\r\n", 38),
    (b"GET / HTTP/1.1\r\nHost: x\nContent-Length: 44\r\n\r\n", 42),
])
def test_find_head(buf: bytes, expected: int) -> None:
    assert find_head(buf) == expected


@pytest.mark.parametrize(("head", "bare"), [
    (b"GET / HTTP/1.1\r\nHost: x", False),
    (b"GET / HTTP/1.1\nHost: x", True),
    (b"GET / HTTP/1.1\r\nHost: x\nContent-Length: 44", True),
    (b"GET / HTTP/1.1\r\nX: a\rb", False),  # a lone CR: not plain either, but no bare LF
])
def test_bare_lf(head: bytes, bare: bool) -> None:
    assert bare_lf(head, len(head)) is bare
    if bare:
        assert parse_head(head) is None  # never plain: the worker refuses it, not gunicorn


def answer_head(status_line: str, headers: list[tuple[str, str]], common: bytes) -> bytes:
    """The head as the worker's loop sends it (``PypidWorker._answer_head``)."""
    first, rest = answer_parts(status_line, headers)
    return first + common + rest


def test_answer_head_is_gunicorns_layout() -> None:
    common = common_headers(b"gunicorn", b"Sat, 05 Dec 2026 00:00:00 GMT", close=False)
    head = answer_head("200 OK", [("Content-Type", "text/html"), ("Content-Length", "3")], common)
    assert head == (b"HTTP/1.1 200 OK\r\nServer: gunicorn\r\nDate: Sat, 05 Dec 2026 00:00:00 GMT"
                    b"\r\nConnection: keep-alive\r\nContent-Type: text/html\r\n"
                    b"Content-Length: 3\r\n\r\n")
    closing = answer_head("304 Not Modified", [], common_headers(b"s", b"d", close=True))
    assert closing == (b"HTTP/1.1 304 Not Modified\r\nServer: s\r\nDate: d\r\n"
                       b"Connection: close\r\n\r\n")


def test_a_memo_never_reads_a_head_otherwise_random_heads() -> None:
    """Heads made of usual, validator and odd lines in random orders, each parsed alone
    and through one memo (which keeps blocks between them): the same reading."""
    rng = random.Random(18)  # noqa: S311 (sampling)
    pieces = [b"Host: x", b"Accept: text/html", b"User-Agent: pip/24.0", b"Connection: close",
              b"Connection: keep-alive", b"If-None-Match: \"a\"", b"if-none-match: \"b\"",
              b"If-Modified-Since: Sat, 05 Dec 2026 10:00:00 GMT", b"Range: bytes=0-1",
              b"If-Range: \"a\"", b"IF-RANGE:\t\"c\"", b"If-None-Match : x", b"If-None-Match",
              b"Ix: 1", b"Rx: 2", b"If-None-Match: \x01", b"Content-Length: 0", b"X: \xe9",
              b"range: bytes=5-"]
    memo = HeadMemo()
    for _ in range(3000):
        lines = [rng.choice(pieces) for _ in range(rng.randint(0, 6))]
        head = b"\r\n".join([b"GET /a/ HTTP/1.1", *lines])
        alone, kept = parse_head(head), parse_head(head, memo=memo)
        assert (kept is None) == (alone is None), head
        if kept is not None and alone is not None:
            assert (kept.headers, kept.close) == (alone.headers, alone.close), head
