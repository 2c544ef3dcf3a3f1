"""A differential fuzzer: pypid's own head parser against gunicorn's.

The worker answers a request in its loop only when ``pypid.http1`` takes the head
as plain; everything else goes, as bytes, to gunicorn's parser. A head read two
ways is a smuggling risk, so for every generated head (valid and broken: odd
methods, targets, escapes, versions, header bytes, repeats, obs-fold, bare LF,
CL/TE, lines at the limits) either pypid leaves it to gunicorn (``NEED_MORE``,
``BARE_LF`` or None), or gunicorn parses it without error and both agree on
where the request ends, its method, path, query, version, the headers the loop
reads and whether the connection closes after it.

Budget: 300 derandomized examples in CI (a few seconds). A longer run on demand:
``PYPID_FUZZ_EXAMPLES=100000 .venv-test/bin/python -m pytest -q
tests/attack/test_head_fuzz.py`` (set ``PYPID_FUZZ_SEED`` to a number for
other examples than CI's).

gunicorn before 22 keeps a value's trailing blanks (RFC 9110: they are not part
of it), so values are compared without them.
"""

from __future__ import annotations

import os
from typing import Any

import pytest
from gunicorn.config import Config
from gunicorn.http import RequestParser
from hypothesis import HealthCheck, Phase, example, given, seed, settings
from hypothesis import strategies as st

from pypid.http1 import BARE_LF, NEED_MORE, Limits, PlainHead, find_head, parse_head

EXAMPLES = int(os.environ.get("PYPID_FUZZ_EXAMPLES", "300"))
SEED = os.environ.get("PYPID_FUZZ_SEED")
CFG = Config()
LIMITS = Limits(CFG.limit_request_line, CFG.limit_request_fields, CFG.limit_request_field_size)
# What the loop reads of a head (worker._decide); Connection is compared as close/keep-alive.
MATTER = ("accept", "accept-encoding", "if-none-match", "if-modified-since", "range",
          "if-range", "authorization")
NEXT = b"GET /next HTTP/1.1\r\nHost: n\r\n\r\n"  # follows every head: where does it start?

# -- the generator: mostly plain heads with a few odd parts, so both sides of the
# line pypid draws are reached (about a third of the heads are plain).

METHODS = ["POST", "PUT", "OPTIONS", "CONNECT", "get", "Get", "GET\t", "GE T", "GET\x00",
           "HEAD ", "PRI", "G", "GETGETGETGETGETGETGET", ""]
VERSIONS = ["HTTP/1.0", "HTTP/1.2", "HTTP/2.0", "HTTP/0.9", "http/1.1", "HTTP/1.1 ",
            "HTTP/01.1", "HTTP/1.10", "HTTP/1", "HTTP/1.1\t", "HTTP/1.1\x00", " HTTP/1.1", ""]
PLAIN_CHARS = "abcSIMPLE09._~-!$&'()*+,;=:@"
ODD_CHARS = PLAIN_CHARS + "%/?#\\\"<>{}|^`[] \t\x00\x7f\x80\xff\u00e9"
# Header names with values that fit them.
FITTING = {
    "Host": ["x", "h:1"], "Accept": ["text/html", "*/*", "application/vnd.pypi.simple.v1+json"],
    "Accept-Encoding": ["gzip", "gzip, br", "identity;q=0"], "If-None-Match": ["*", "\"e\""],
    "If-Modified-Since": ["Sat, 05 Dec 2026 03:00:00 GMT"], "Range": ["bytes=0-9"],
    "If-Range": ["\"e\""], "Authorization": ["Basic YWxpY2U6cHc="],
    "Connection": ["close", "keep-alive", "Close", "KEEP-ALIVE", "close, keep-alive",
                   "keep-alive, close", "keep-alive,keep-alive", " close "],
    "accept": ["text/html"], "ACCEPT-ENCODING": ["br"], "X-Pypi": ["1"],
}
NAMES = list(FITTING)
ODD_NAMES = ["Content-Length", "Transfer-Encoding", "Expect", "Upgrade", "Trailer",
             "X-Forwarded-For", "X-Forwarded-Prefix", "Forwarded", "Accept_Encoding", "Accept ",
             " Accept", "Acc ept", "Acc\x00ept", "Acc\u00e9pt", ""]
VALUES = ["", "x", "*", "close", "keep-alive", "Close", "KEEP-ALIVE", "close, keep-alive",
          "keep-alive, close", "keep-alive,keep-alive", "upgrade", "close,", " close ",
          "text/html", "gzip, br", "application/vnd.pypi.simple.v1+json;q=0.9, text/html",
          "\"abc\"", "W/\"abc\", \"d\"", "bytes=0-9", "bytes=0-9,20-", "Basic YWxpY2U6cHc=",
          "Sat, 05 Dec 2026 03:00:00 GMT", "0", "5", "chunked", "100-continue", "h2c", "a\tb"]
ODD_VALUES = ["a\x00b", "a\rb", "a\x7fb", "\u00e9", "\xff", "\t", "a\nb"]
ENDINGS = ["\n", "\r", " \r\n", "\r\r\n", "\r\n "]
TERMINATORS = ["\n", "", "\r", " \r\n"]


def mostly(plain: st.SearchStrategy[str], odd: st.SearchStrategy[str],
           one_in: int = 10) -> st.SearchStrategy[str]:
    """``plain`` but for about one draw in ``one_in``."""
    return st.integers(0, one_in - 1).flatmap(lambda n: odd if n == 0 else plain)


@st.composite
def targets(draw: Any) -> str:
    kind = draw(mostly(st.just("path"), st.sampled_from(
        ["absolute", "double", "star", "empty", "bare"]), 6))
    if kind == "star":
        return "*"
    if kind == "empty":
        return ""
    segments = draw(st.lists(mostly(
        st.one_of(st.sampled_from(["simple", "packages", "demo", "", "."]),
                  st.text(PLAIN_CHARS, max_size=8)),
        st.one_of(st.sampled_from(["..", "%2F", "%73imple", "%", "%zz", "a%00b"]),
                  st.text(ODD_CHARS, max_size=8)), 5), max_size=4))
    path = "/" + "/".join(segments)
    if draw(st.booleans()):
        path += "/"
    if draw(st.integers(0, 3)) == 0:
        path += "?" + draw(mostly(st.sampled_from(["format=json", "", "a=b&c=%20", "a?b"]),
                                  st.sampled_from(["x#y", "a b", "\u00e9", "%"]), 4))
    if kind == "absolute":
        return draw(st.sampled_from(["http://h", "https://h:1", "HTTP://h", "//h"])) + path
    if kind == "double":
        return "/" + path
    if kind == "bare":
        return path.lstrip("/")
    return path


@st.composite
def header_lines(draw: Any) -> str:
    name = draw(mostly(st.sampled_from(NAMES), st.one_of(
        st.sampled_from(ODD_NAMES), st.text("abcXYZ-_!#$%&'*+.^`|~09", min_size=1, max_size=12))))
    separator = draw(mostly(st.sampled_from([":", ": "]), st.sampled_from([":\t", " :", "::"])))
    fitting = st.sampled_from(FITTING.get(name, VALUES))
    value = draw(mostly(mostly(fitting, st.sampled_from(VALUES), 4),
                        st.one_of(st.sampled_from(ODD_VALUES), st.text(max_size=12))))
    if draw(st.integers(0, 19)) == 0:  # obs-fold: a continuation line
        value += "\r\n" + draw(st.sampled_from([" ", "\t"])) + draw(st.sampled_from(VALUES))
    if draw(st.integers(0, 9)) == 0:
        value += draw(st.sampled_from([" ", "\t", "  "]))  # trailing blanks
    return name + separator + value + draw(mostly(st.just("\r\n"), st.sampled_from(ENDINGS), 20))


def _pad_to(line: str, length: int) -> str:
    """``line`` (ending in CRLF) padded before its CRLF so that it is ``length`` long."""
    body = line.removesuffix("\r\n")
    return body + "a" * max(0, length - len(body)) + "\r\n"


@st.composite
def heads(draw: Any) -> bytes:
    method = draw(mostly(st.sampled_from(["GET", "GET", "HEAD"]), st.sampled_from(METHODS)))
    version = draw(mostly(st.just("HTTP/1.1"), st.sampled_from(VERSIONS)))
    spaces = draw(mostly(st.just(" "), st.sampled_from(["  ", "\t", ""]), 20))
    line = method + spaces + draw(targets()) + spaces + version
    if draw(st.integers(0, 14)) == 0:  # a request line at gunicorn's limit
        fill = LIMITS.line + draw(st.integers(-3, 1)) - len(method + " / " + version)
        line = method + " /" + "a" * fill + " " + version
    lines = draw(st.lists(header_lines(), max_size=6, unique_by=lambda h: h.split(":")[0].lower()))
    if draw(st.integers(0, 9)) == 0:  # a header line at the field size limit (CRLF counts)
        lines.insert(draw(st.integers(0, len(lines))),
                     _pad_to("X-Pad: ", LIMITS.field_size + draw(st.integers(-3, 1))))
    if draw(st.integers(0, 19)) == 0:  # as many header lines as allowed, and one more
        lines += [f"X-{n}: 1\r\n" for n in range(LIMITS.fields + draw(st.integers(-1, 1)))]
    if draw(st.integers(0, 9)) == 0:  # a repeated line
        lines += draw(st.lists(st.sampled_from(lines or ["Accept: */*\r\n"]), max_size=2))
    prefix = draw(mostly(st.just(""), st.sampled_from(["\r\n", "\n", " "]), 20))
    ending = draw(mostly(st.just("\r\n"), st.sampled_from(ENDINGS), 20))
    terminator = draw(mostly(st.just("\r\n"), st.sampled_from(TERMINATORS), 20))
    return (prefix + line + ending + "".join(lines) + terminator).encode("utf-8")


# -- the two readings

def gunicorn_reads(data: bytes) -> tuple[Any, int]:
    """gunicorn's request for the first head of ``data``, and where the next one starts."""
    parser = RequestParser(CFG, iter([data]), ("127.0.0.1", 40000))
    req = next(parser)
    rest = parser.unreader.buf.getvalue()
    return req, len(data) - len(rest)


def _values(req: Any, name: str) -> list[str]:
    wanted = name.upper()
    return [value.rstrip(" \t") for key, value in req.headers if key == wanted]


def check(head_bytes: bytes) -> None:
    """The property: pypid leaves the head to gunicorn, or both read it alike."""
    data = head_bytes + NEXT
    end = find_head(data)
    if end in (NEED_MORE, BARE_LF):
        return
    head = parse_head(data[:end], LIMITS)
    if head is None:
        return
    try:
        req, consumed = gunicorn_reads(data)
    except Exception as exc:  # noqa: BLE001 - any refusal is the finding
        pytest.fail(f"pypid takes a head gunicorn refuses ({exc!r}): {data[:end + 4]!r}")
    assert consumed == end + 4, f"request ends at {end + 4} for pypid, {consumed} for gunicorn"
    assert_same(head, req)


def assert_same(head: PlainHead, req: Any) -> None:
    assert (head.method, head.path, head.query) == (req.method, req.path, req.query)
    assert req.version == (1, 1)
    assert not req.fragment
    for name in MATTER:
        mine = head.headers.get(name)
        assert _values(req, name) == ([] if mine is None else [mine]), name
    assert head.close == req.should_close(), f"close: pypid {head.close}, gunicorn says not"


def _seeded(test: Any) -> Any:
    return seed(int(SEED))(test) if SEED else test


# Shrinking a failure takes long: only on demand (a long run), not in CI.
PHASES = [Phase.explicit, Phase.generate] + ([Phase.shrink] if EXAMPLES > 300 else [])



@_seeded
@settings(max_examples=EXAMPLES, deadline=None, derandomize=SEED is None, database=None,
          suppress_health_check=list(HealthCheck), phases=PHASES)
@given(heads())
@example(b"GET /simple/ HTTP/1.1\r\nHost: x\r\n\r\n")
@example(b"HEAD /simple/demo/?format=json HTTP/1.1\r\nAccept: text/html\r\n"
         b"If-None-Match: \"e\"\r\nConnection: close\r\n\r\n")
@example(b"GET //simple/ HTTP/1.1\r\nRange: bytes=0-9\r\nIf-Range: \"e\"\r\n\r\n")
def test_pypid_reads_a_head_as_gunicorn_does(head: bytes) -> None:
    check(head)


# -- the corners, pinned (each a head the generator reaches)

AGREED = [
    b"GET /simple/ HTTP/1.1\r\nAccept:text/html\r\n\r\n",
    b"GET /simple/ HTTP/1.1\r\nAccept: \t text/html \t\r\n\r\n",
    b"GET /simple/ HTTP/1.1\r\nConnection: keep-alive\r\n\r\n",
    b"GET /simple/ HTTP/1.1\r\nConnection: Close\r\n\r\n",
    b"GET /a?b?c HTTP/1.1\r\n\r\n",
    b"GET //simple//demo/ HTTP/1.1\r\n\r\n",
    b"GET /" + b"a" * (LIMITS.line - len(b"GET / HTTP/1.1")) + b" HTTP/1.1\r\n\r\n",
    b"GET / HTTP/1.1\r\n" + b"".join(b"X-%d: 1\r\n" % i for i in range(LIMITS.fields)) + b"\r\n",
    b"GET /simple/ HTTP/1.1\r\nAccept_Encoding: gzip\r\n\r\n",  # gunicorn drops it
]
LEFT_TO_GUNICORN = [
    b"GET /simple/ HTTP/1.1\nHost: x\n\n", b"GET /simple/ HTTP/1.1\r\nHost: x\n\r\n",
    b"GET /simple/ HTTP/1.1\r\nHost: x\r\n  folded\r\n\r\n",
    b"GET /simple/ HTTP/1.1\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n",
    b"GET /simple/ HTTP/1.1\r\nContent-Length: 0\r\nContent-Length: 5\r\n\r\n",
    b"GET http://h/simple/ HTTP/1.1\r\n\r\n", b"GET /simple/ HTTP/1.0\r\n\r\n",
    b"GET /simple/ HTTP/1.1\r\nExpect: 100-continue\r\n\r\n",
    b"GET /simple/%2F HTTP/1.1\r\n\r\n", b"GET /simple/#x HTTP/1.1\r\n\r\n",
    b"\r\nGET /simple/ HTTP/1.1\r\n\r\n",
    b"GET /simple/ HTTP/1.1\r\nAccept: a\r\naccept: b\r\n\r\n",
    b"GET /simple/ HTTP/1.1\r\nConnection: upgrade\r\n\r\n",
    b"GET / HTTP/1.1\r\n" + b"".join(b"X-%d: 1\r\n" % i for i in range(LIMITS.fields + 1))
    + b"\r\n",
]


# Heads the two read differently until issue 13: now pypid leaves them to gunicorn.
ONCE_DISAGREED = [
    b"GET / HTTP/1.1\r\n" + _pad_to("X-Pad: ", LIMITS.field_size).encode() + b"\r\n",
    b"GET / HTTP/1.1\r\n" + _pad_to("X-Pad: ", LIMITS.field_size - 1).encode() + b"\r\n",
    b"GET / HTTP/1.1\r\nConnection: close, keep-alive\r\n\r\n",
    b"GET / HTTP/1.1\r\nConnection: keep-alive, close\r\n\r\n",
]


@pytest.mark.parametrize("head", ONCE_DISAGREED,
                         ids=["field-size", "field-size-1", "close-keep", "keep-close"])
def test_pypid_takes_these_heads_only_as_gunicorn_does(head: bytes) -> None:
    check(head)


@pytest.mark.parametrize("head", AGREED, ids=range(len(AGREED)))
def test_both_read_these_heads_alike(head: bytes) -> None:
    end = find_head(head + NEXT)
    assert end >= 0 and parse_head((head + NEXT)[:end], LIMITS) is not None
    check(head)


@pytest.mark.parametrize("head", LEFT_TO_GUNICORN, ids=range(len(LEFT_TO_GUNICORN)))
def test_pypid_leaves_these_heads_to_gunicorn(head: bytes) -> None:
    end = find_head(head + NEXT)
    assert end < 0 or parse_head((head + NEXT)[:end], LIMITS) is None
