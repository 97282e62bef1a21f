"""The head reader and the body readers over a real socket, in every fragmentation.

Each case is a table row of raw bytes.  A writer thread sends it through one end
of a socketpair (whole, byte by byte, or in seeded random fragments) and then
shuts down its side; the code under test reads the other end exactly as the
child does.  Malformed framing in depth is tests/test_parser*; here the valid
behaviour and a few basic 400s.
"""
import random
import socket
import threading
import time

import pytest

import wsgi_handler as wh
from forkparts.bodies import ChunkedReader, InputStream, LengthReader, NoBody
from forkparts.http11 import (
    DEFAULT_LIMITS, MAX_HEAD_BYTES, BadRequest, ClientGone, HeaderFieldsTooLarge,
    IncompleteBody, RequestTimeout)
from forkparts.logs import Log
from forkparts.parser import parse_head
from forkparts.wire import Connection

FRAGMENT_SEED = 3333            # fixed, so a failure replays the same split
MAX_FRAGMENT_BYTES = 7          # small fragments cut through every boundary
FRAGMENT_PAUSE_SECONDS = 0.0002  # lets the reader see each fragment separately
READ_TIMEOUT_SECONDS = 5.0
MODES = ("whole", "bytewise", "fragments")


def split(data, mode, seed=FRAGMENT_SEED):
    if mode == "whole":
        return [data]
    if mode == "bytewise":
        return [data[i:i + 1] for i in range(len(data))]
    rng = random.Random(seed)
    pieces, i = [], 0
    while i < len(data):
        n = rng.randint(1, MAX_FRAGMENT_BYTES)
        pieces.append(data[i:i + n])
        i += n
    return pieces


class Feed:
    """A socketpair whose writer end is fed by a thread; the reader is a Connection."""

    def __init__(self, data, mode, close=True):
        self.reader, self.writer = socket.socketpair()
        self.pieces = split(data, mode)
        self.close = close
        self.thread = threading.Thread(target=self.run, daemon=True)
        self.thread.start()
        config = wh.HandlerConfig(log=Log(error_fd=2, level="critical"))
        self.conn = Connection(self.reader, config)

    def run(self):
        try:
            for piece in self.pieces:
                self.writer.sendall(piece)
                if len(self.pieces) > 1:
                    time.sleep(FRAGMENT_PAUSE_SECONDS)
            if self.close:
                self.writer.shutdown(socket.SHUT_WR)
        except OSError:
            pass  # the reader gave up (an error case) and closed its end

    def finish(self):
        self.thread.join(timeout=10)
        self.reader.close()
        self.writer.close()


@pytest.fixture
def feed():
    feeds = []

    def make(data, mode, close=True):
        f = Feed(data, mode, close)
        feeds.append(f)
        return f
    yield make
    for f in feeds:
        f.finish()


def deadline():
    return time.monotonic() + READ_TIMEOUT_SECONDS


def stream_for(conn, head):
    """The wsgi.input the child would build for this head on this connection."""
    request = parse_head(head)
    if request.body_kind == "length":
        reader = LengthReader(conn, request.content_length, READ_TIMEOUT_SECONDS)
    elif request.body_kind == "chunked":
        reader = ChunkedReader(conn, DEFAULT_LIMITS, READ_TIMEOUT_SECONDS)
    else:
        reader = NoBody()
    return InputStream(reader), reader


# ------------------------------------------------------------------ the head

HEADS = [
    b"GET / HTTP/1.1\r\nHost: a\r\n\r\n",
    b"GET /x?y=1 HTTP/1.0\r\n\r\n",
    b"POST /p HTTP/1.1\r\nHost: a\r\nContent-Length: 3\r\nX: " + b"v" * 600 + b"\r\n\r\n",
    b"\r\nGET /leading-empty-line HTTP/1.1\r\nHost: a\r\n\r\n",
]


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("head", HEADS, ids=range(len(HEADS)))
def test_read_head_returns_exactly_the_head_and_keeps_the_rest(feed, head, mode):
    rest = b"BODY-BYTES\r\n\r\nnot a head"
    f = feed(head + rest, mode)
    assert f.conn.read_head(deadline()) == head
    while not f.conn.eof:
        f.conn.recv_into_buffer(READ_TIMEOUT_SECONDS)
    assert bytes(f.conn.buf) == rest


@pytest.mark.parametrize("mode", MODES)
def test_read_head_of_a_closed_connection_is_client_gone(feed, mode):
    f = feed(b"", mode)
    with pytest.raises(ClientGone):
        f.conn.read_head(deadline())


@pytest.mark.parametrize("mode", MODES)
def test_connection_closed_inside_the_head_is_400(feed, mode):
    f = feed(b"GET / HTTP/1.1\r\nHost: a\r\n", mode)
    with pytest.raises(BadRequest):
        f.conn.read_head(deadline())


@pytest.mark.parametrize("mode", MODES)
def test_bare_lf_in_head_is_400_without_waiting_for_the_end(feed, mode):
    f = feed(b"GET / HTTP/1.1\nHost: a\r\n", mode, close=False)
    with pytest.raises(BadRequest):
        f.conn.read_head(deadline())


def test_head_that_never_ends_is_408_at_the_deadline(feed):
    f = feed(b"GET / HTTP/1.1\r\n", "whole", close=False)
    with pytest.raises(RequestTimeout):
        f.conn.read_head(time.monotonic() + 0.3)


def test_oversized_head_is_431_before_the_end_arrives(feed):
    huge = b"GET / HTTP/1.1\r\n" + b"X-A: b\r\n" * (MAX_HEAD_BYTES // 8 + 10)
    f = feed(huge, "whole", close=False)
    with pytest.raises(HeaderFieldsTooLarge):
        f.conn.read_head(deadline())


# ------------------------------------------------------------------ bodies

H11 = b"POST /up HTTP/1.1\r\nHost: a\r\n"
CHUNKED = H11 + b"Transfer-Encoding: chunked\r\n\r\n"
LINES_BODY = b"first line\nsecond\n\nlast without newline"

BODIES = [
    # (id, head, wire body, decoded body, trailers)
    ("length", H11 + b"Content-Length: 11\r\n\r\n", b"hello world", b"hello world", []),
    ("length-zero", H11 + b"Content-Length: 0\r\n\r\n", b"", b"", []),
    ("no-body", H11 + b"\r\n", b"", b"", []),
    ("length-binary", H11 + b"Content-Length: 256\r\n\r\n", bytes(range(256)),
     bytes(range(256)), []),
    ("length-lines", H11 + b"Content-Length: %d\r\n\r\n" % len(LINES_BODY), LINES_BODY,
     LINES_BODY, []),
    ("chunked", CHUNKED, b"5\r\nhello\r\n6\r\n world\r\n0\r\n\r\n", b"hello world", []),
    ("chunked-empty", CHUNKED, b"0\r\n\r\n", b"", []),
    ("chunked-hex-case", CHUNKED, b"a\r\n0123456789\r\nA\r\nabcdefghij\r\n0\r\n\r\n",
     b"0123456789abcdefghij", []),
    ("chunked-leading-zeros", CHUNKED, b"0003\r\nabc\r\n000\r\n\r\n", b"abc", []),
    ("chunked-extensions", CHUNKED,
     b"5;name=value\r\nhello\r\n6 ; a ; b=\"q;\\\"x\"\r\n world\r\n0;last\r\n\r\n",
     b"hello world", []),
    ("chunked-trailers", CHUNKED,
     b"3\r\nabc\r\n0\r\nX-Checksum: 123\r\nX-Other:  two \r\n\r\n", b"abc",
     [("x-checksum", "123"), ("x-other", "two")]),
    ("chunked-lines", CHUNKED,
     b"%x\r\n%s\r\n0\r\n\r\n" % (len(LINES_BODY), LINES_BODY), LINES_BODY, []),
    ("chunked-lines-split", CHUNKED,
     b"4\r\nfirs\r\n9\r\nt line\nse\r\n1\r\nc\r\n%x\r\n%s\r\n0\r\n\r\n"
     % (len(LINES_BODY) - 14, LINES_BODY[14:]), LINES_BODY, []),
]
BODY_IDS = [b[0] for b in BODIES]
# What the client sends after the body: it must never leak into wsgi.input.
AFTER = b"GET /next HTTP/1.1\r\nHost: a\r\n\r\n"


def body_case(feed, case, mode):
    _, head, wire, decoded, trailers = case
    f = feed(head + wire + AFTER, mode)
    assert f.conn.read_head(deadline()) == head
    stream, reader = stream_for(f.conn, head)
    return f, stream, reader, decoded, trailers


def assert_rest_untouched(f, reader, trailers):
    assert reader.done
    assert stream_eof_repeats(reader)
    assert getattr(reader, "trailers", []) == trailers
    assert f.conn.read_head(deadline()) == AFTER


def lf_lines(data):
    """Lines as file.readline() cuts them: after each LF only (not CR, VT, FF)."""
    return [line + b"\n" for line in data.split(b"\n")[:-1]] + (
        [data.rpartition(b"\n")[2]] if data and not data.endswith(b"\n") else [])


def stream_eof_repeats(reader):
    return all(reader.read_some(100) == b"" for _ in range(3))


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("case", BODIES, ids=BODY_IDS)
def test_read_all_yields_exactly_the_body_then_empty(feed, case, mode):
    f, stream, reader, decoded, trailers = body_case(feed, case, mode)
    assert stream.read() == decoded
    assert stream.read() == b""
    assert stream.read(10) == b""
    assert_rest_untouched(f, reader, trailers)


@pytest.mark.parametrize("size", [1, 3, 64 * 1024])
@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("case", BODIES, ids=BODY_IDS)
def test_read_n_returns_at_most_n_and_the_whole_body(feed, case, mode, size):
    f, stream, reader, decoded, trailers = body_case(feed, case, mode)
    parts = []
    while True:
        data = stream.read(size)
        assert len(data) <= size
        if not data:
            break
        parts.append(data)
    assert b"".join(parts) == decoded
    # read(n) fills up to n unless the body ends: only the last part is short.
    assert all(len(p) == size for p in parts[:-1])
    assert_rest_untouched(f, reader, trailers)


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("case", BODIES, ids=BODY_IDS)
def test_readline_splits_after_each_newline(feed, case, mode):
    f, stream, reader, decoded, trailers = body_case(feed, case, mode)
    lines = []
    while True:
        line = stream.readline()
        if not line:
            break
        lines.append(line)
    assert lines == lf_lines(decoded)
    assert_rest_untouched(f, reader, trailers)


@pytest.mark.parametrize("mode", MODES)
def test_readline_with_a_size_never_returns_more(feed, mode):
    case = BODIES[BODY_IDS.index("chunked-lines-split")]
    f, stream, reader, decoded, trailers = body_case(feed, case, mode)
    parts = []
    while True:
        part = stream.readline(4)
        if not part:
            break
        assert len(part) <= 4
        assert b"\n" not in part[:-1]
        parts.append(part)
    assert b"".join(parts) == decoded
    assert_rest_untouched(f, reader, trailers)


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("case", [BODIES[4], BODIES[-1]], ids=["length", "chunked"])
def test_readlines_and_iteration_give_the_lines(feed, case, mode):
    f, stream, reader, decoded, trailers = body_case(feed, case, mode)
    assert stream.readline() == b"first line\n"
    assert stream.readlines() == [b"second\n", b"\n", b"last without newline"]
    assert list(stream) == []
    assert_rest_untouched(f, reader, trailers)


@pytest.mark.parametrize("case", [BODIES[4], BODIES[-1]], ids=["length", "chunked"])
def test_iteration_yields_lines_until_the_body_ends(feed, case):
    f, stream, reader, decoded, trailers = body_case(feed, case, "fragments")
    assert list(stream) == lf_lines(decoded)
    assert_rest_untouched(f, reader, trailers)


@pytest.mark.parametrize("case", [BODIES[4], BODIES[-1]], ids=["length", "chunked"])
def test_readlines_hint_stops_after_enough_bytes(feed, case):
    f, stream, reader, decoded, trailers = body_case(feed, case, "whole")
    assert stream.readlines(3) == [b"first line\n"]
    assert stream.read() == decoded[len(b"first line\n"):]


@pytest.mark.parametrize("mode", MODES)
def test_mixed_reads_reassemble_the_body(feed, mode):
    case = BODIES[BODY_IDS.index("chunked-lines-split")]
    f, stream, reader, decoded, trailers = body_case(feed, case, mode)
    got = stream.read(2) + stream.readline() + stream.read(5) + b"".join(stream.readlines())
    assert got == decoded
    assert_rest_untouched(f, reader, trailers)


def test_first_read_calls_the_continue_callback_once(feed):
    case = BODIES[0]
    f = feed(case[1] + case[2], "whole")
    head = f.conn.read_head(deadline())
    calls = []
    _, reader = stream_for(f.conn, head)
    stream = InputStream(reader, lambda: calls.append(1))
    assert calls == []
    assert stream.read(1) == b"h"
    assert stream.read() == b"ello world"
    assert calls == [1]


# ------------------------------------------------------------ a few basic 400s

TRUNCATED = [
    ("length-short", H11 + b"Content-Length: 10\r\n\r\n", b"abc"),
    ("chunk-data-short", CHUNKED, b"5\r\nab"),
    ("no-last-chunk", CHUNKED, b"5\r\nhello\r\n"),
    ("no-trailer-end", CHUNKED, b"5\r\nhello\r\n0\r\n"),
]


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("case", TRUNCATED, ids=[c[0] for c in TRUNCATED])
def test_body_cut_short_by_the_client_is_an_incomplete_body(feed, case, mode):
    _, head, wire = case
    f = feed(head + wire, mode)
    f.conn.read_head(deadline())
    stream, _ = stream_for(f.conn, head)
    with pytest.raises(IncompleteBody) as info:
        stream.read()
    assert info.value.status == 400
    # An OSError to the app too, as a socket's failed read (frameworks take it
    # for the client's broken request); it was not one before.
    assert isinstance(info.value, OSError)
    with pytest.raises(OSError):   # sticky, and still one
        stream.read()


BAD_CHUNKED = [
    ("bad-size", b"xyz\r\nabc\r\n0\r\n\r\n"),
    ("no-crlf-after-data", b"3\r\nabcX\r\n0\r\n\r\n"),
    ("negative-size", b"-3\r\nabc\r\n0\r\n\r\n"),
    ("size-overflow", b"1" * 17 + b"\r\nabc\r\n0\r\n\r\n"),
    ("forbidden-trailer", b"3\r\nabc\r\n0\r\nX-Ok: 1\r\nContent-Length: 99\r\n\r\n"),
]


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("case", BAD_CHUNKED, ids=[c[0] for c in BAD_CHUNKED])
def test_malformed_chunk_framing_is_400(feed, case, mode):
    f = feed(CHUNKED + case[1], mode)
    f.conn.read_head(deadline())
    stream, _ = stream_for(f.conn, CHUNKED)
    with pytest.raises(BadRequest):
        stream.read()


def test_stalled_body_is_408_after_the_read_timeout(feed):
    head = H11 + b"Content-Length: 10\r\n\r\n"
    f = feed(head + b"abc", "whole", close=False)
    f.conn.read_head(deadline())
    stream = InputStream(LengthReader(f.conn, 10, 0.3))
    assert stream.read(3) == b"abc"
    with pytest.raises(RequestTimeout):
        stream.read(1)


LONG_LINE_BYTES = 300 * 1024    # spans several RECV_BYTES reads


@pytest.mark.parametrize("size", [-1, LONG_LINE_BYTES - 1, LONG_LINE_BYTES + 1, 100 * 1024])
def test_readline_of_a_line_spanning_many_recvs(feed, size):
    line = b"y" * (LONG_LINE_BYTES - 1) + b"\n"
    body = line + b"rest\n"
    head = H11 + b"Content-Length: %d\r\n\r\n" % len(body)
    f = feed(head + body, "whole")
    f.conn.read_head(deadline())
    stream, _ = stream_for(f.conn, head)
    expected = line if size < 0 else line[:size]
    assert stream.readline(size) == expected
    assert stream.read() == body[len(expected):]
