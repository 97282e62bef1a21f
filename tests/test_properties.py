"""Property tests of the parser and the body readers (issue 5), with hypothesis.

Deadlines are off (CI machines are noisy); example counts are bounded so the
module runs in about 20 seconds."""
import string

import pytest
from hypothesis import HealthCheck, given, settings, strategies as st

import forkparts.parser
import wsgi_handler
from forkparts.bodies import FORBIDDEN_TRAILERS, ChunkedReader
from forkparts.http11 import DEFAULT_LIMITS, BadRequest, ClientGone, HTTPError
from forkparts.parser import Request, parse_head, parse_head_by_line
from forkparts.wire import Connection
from tests import malformed

ANY_BYTES_EXAMPLES = 2500
VALID_EXAMPLES = 600
PROPERTY_SETTINGS = settings(deadline=None, max_examples=ANY_BYTES_EXAMPLES,
                             suppress_health_check=[HealthCheck.too_slow])
VALID_SETTINGS = settings(deadline=None, max_examples=VALID_EXAMPLES,
                          suppress_health_check=[HealthCheck.too_slow])

TCHARS = "!#$%&'*+-.^`|~" + string.ascii_letters + string.digits   # no "_" (dropped)
PATH_CHARS = string.ascii_letters + string.digits + "-._~!$&'()*+,;=:@/"
QUERY_CHARS = PATH_CHARS + "?"
VALUE_CHARS = "".join(chr(c) for c in range(0x21, 0x7f))
# Fields with framing or routing meaning: generated separately, never at random.
# The framing fields, and the singletons a repeat of which is 400 (RFC 9110 5.3:
# a generated list may repeat a name; Content-Type repeated failed on 3.12 in CI).
RESERVED = {"host", "content-length", "transfer-encoding", "expect", "connection",
            "content-type", "authorization"}


class EOFSocket:
    """A socket already at EOF: the readers only see Connection's buffer."""

    def settimeout(self, timeout):
        pass

    def recv(self, n):
        return b""


def head_reader(data):
    """The real head reader over a buffer that holds all of data."""
    config = wsgi_handler.HandlerConfig().freeze()
    conn = Connection(EOFSocket(), config, data)
    return conn, conn.read_head(deadline=float("inf"))


def chunked_body(data):
    config = wsgi_handler.HandlerConfig().freeze()
    conn = Connection(EOFSocket(), config, data)
    reader = ChunkedReader(conn, config.limits, timeout=1.0)
    parts = []
    while True:
        part = reader.read_some(4096)
        if not part:
            return b"".join(parts), reader.trailers
        parts.append(part)


def parse_or_http_error(data):
    """A Request, an HTTPError or ClientGone; anything else fails the test."""
    try:
        _, head = head_reader(data)
        return parse_head(head)
    except (HTTPError, ClientGone) as exc:
        return exc


# Bytes that look like HTTP often enough to get past the first checks.
HTTPISH = st.lists(st.sampled_from([
    b"GET", b"POST", b" ", b"/", b"HTTP/1.1", b"HTTP/1.0", b"\r\n", b"\n", b"\r", b":",
    b"Host", b"Content-Length", b"Transfer-Encoding", b"chunked", b"5", b"0", b"\t",
    b"\x00", b"\xff", b"*", b"http://a", b"?", b"#", b"_", b",", b"Expect", b"100-continue",
]), max_size=40).map(b"".join)


@PROPERTY_SETTINGS
@given(st.one_of(st.binary(max_size=300), HTTPISH))
def test_any_bytes_give_a_request_or_an_http_error(data):
    result = parse_or_http_error(data + b"\r\n\r\n")
    assert isinstance(result, (Request, HTTPError,
                               ClientGone))


@PROPERTY_SETTINGS
@given(st.sampled_from(malformed.CASES), st.integers(0, 400), st.binary(min_size=1, max_size=4))
def test_mutated_table_cases_give_a_request_or_an_http_error(case, where, junk):
    raw = case.raw[:where] + junk + case.raw[where + len(junk):]
    result = parse_or_http_error(raw)
    assert isinstance(result, (Request, HTTPError,
                               ClientGone))


@PROPERTY_SETTINGS
@given(st.one_of(st.binary(max_size=200), st.lists(st.sampled_from(
    [b"0", b"5", b"a", b"\r\n", b";", b"=", b'"', b"x", b"\n", b" ", b"hello", b"X-T: 1"]),
    max_size=30).map(b"".join)))
def test_any_chunked_body_gives_data_or_an_http_error(data):
    try:
        body, trailers = chunked_body(data)
    except (HTTPError, ClientGone):
        return
    assert isinstance(body, bytes) and len(body) <= len(data)


token = st.text(TCHARS, min_size=1, max_size=12)
methods = token.map(str.upper)   # a token without lower-case letters (RFC 9110 9.1; parser.py)
field_names = token.filter(lambda n: n.lower() not in RESERVED)
field_values = st.one_of(
    st.just(""),
    st.text(VALUE_CHARS, min_size=1, max_size=20),
    st.tuples(st.text(VALUE_CHARS, min_size=1, max_size=8), st.text(" \t", min_size=1, max_size=2),
              st.text(VALUE_CHARS, min_size=1, max_size=8)).map("".join),
)
paths = st.lists(st.text(PATH_CHARS.replace("/", ""), max_size=8), max_size=4).map(
    lambda parts: "/" + "/".join(parts))
queries = st.one_of(st.none(), st.text(QUERY_CHARS, max_size=16))
hosts = st.one_of(st.from_regex(r"[a-z0-9]{1,10}(\.[a-z]{2,5})?(:[0-9]{1,5})?", fullmatch=True),
                  st.just("[::1]:8080"))


@VALID_SETTINGS
@given(methods.filter(lambda m: m != "CONNECT"), paths, queries, hosts,
       st.lists(st.tuples(field_names, field_values), max_size=8),
       st.integers(0, 10 ** 6), st.sampled_from(["1.1", "1.0"]), st.text(" \t", max_size=2))
def test_valid_requests_parse_to_what_was_generated(method, path, query, host, fields, length,
                                                    version, ows):
    target = path if query is None else path + "?" + query
    lines = ["%s %s HTTP/%s" % (method, target, version), "Host:%s%s%s" % (ows, host, ows)]
    lines += ["%s:%s%s%s" % (n, ows, v, ows) for n, v in fields]
    lines.append("Content-Length: %d" % length)
    conn, head = head_reader(("\r\n".join(lines) + "\r\n\r\nBODY").encode("latin-1"))
    request = parse_head(head)
    assert bytes(conn.buf) == b"BODY"     # the head reader took the head, not the body
    assert (request.method, request.path, request.query) == (method, path, query or "")
    assert request.version == (1, int(version[-1]))
    assert request.host == host
    expected = [("host", host)] + [(n.lower(), v) for n, v in fields]
    expected.append(("content-length", str(length)))
    assert list(request.headers) == expected
    assert (request.body_kind, request.content_length) == (("length", length) if length else ("none", 0))


chunk_exts = st.one_of(st.just(""), st.tuples(
    st.just(";"), token, st.one_of(st.just(""), token.map(lambda v: "=" + v), st.just('="q s"'))
).map("".join))


@VALID_SETTINGS
@given(st.lists(st.tuples(st.binary(min_size=1, max_size=50), chunk_exts, st.booleans()), max_size=6),
       st.lists(st.tuples(field_names, st.text(VALUE_CHARS, min_size=1, max_size=10)), max_size=3))
def test_valid_chunked_bodies_decode_to_what_was_generated(chunks, trailers):
    wire = b"".join(b"%s%s\r\n%s\r\n" % ((b"%X" if upper else b"%x") % len(data), ext.encode(), data)
                    for data, ext, upper in chunks)
    wire += b"0\r\n" + b"".join(b"%s: %s\r\n" % (n.encode(), v.encode()) for n, v in trailers) + b"\r\n"
    if any(n.lower() in FORBIDDEN_TRAILERS for n, _ in trailers):
        with pytest.raises(BadRequest, match="RFC 9110 6.5.1"):
            chunked_body(wire + b"NEXT")
        return
    body, got_trailers = chunked_body(wire + b"NEXT")
    assert body == b"".join(data for data, _, _ in chunks)
    assert got_trailers == [(n.lower(), v) for n, v in trailers]


# parse_head takes common heads in one pass (SIMPLE_HEAD_RE) and hands every
# other head to parse_head_by_line.  Both lanes must agree on every input:
# the same Request, or the same error with the same detail.
def parse_outcome(parse, head):
    try:
        return parse(head)
    except HTTPError as exc:
        return type(exc), exc.detail


def agree(head):
    by_line = parse_outcome(
        lambda data: parse_head_by_line(data, DEFAULT_LIMITS), head)
    assert parse_outcome(parse_head, head) == by_line
    return by_line


LANE_TARGETS = st.one_of(st.tuples(paths, queries).map(lambda pq: pq[0] + ("?" + pq[1] if pq[1] is not None else "")),
                         st.sampled_from(["*", "/a#f", "http://h.example/x?y", "h.example:80", "/a b", "/%41"]))
LANE_VERSIONS = st.sampled_from(["1.1", "1.0", "1.9", "2.0", "0.9", "1.10", "1.1 "])
LANE_HOSTS = st.one_of(st.none(), hosts, st.sampled_from(["", "bad host", "a@b", "[::1", "x:y"]),
                       st.tuples(hosts, hosts).map(list))
CONNECTION_VALUES = ["close", "Close", "keep-alive", " KEEP-ALIVE ", "clo se", "upgrade, close",
                     "a,,b", "\xa0close", "close\t", "", "keep-alive, close", "xclose"]
LANE_CONNECTIONS = st.one_of(st.none(), st.lists(st.sampled_from(CONNECTION_VALUES), min_size=1, max_size=3))
LANE_EXTRA = st.lists(st.sampled_from(
    ["Content-Length: 3", "Transfer-Encoding: chunked", "Expect: 100-continue", "X_Y: 1",
     " folded", "Bad Name: 1", "A:\x7f", "A: \xff\xfe", "A:", "A: b \t "]), max_size=2)


@VALID_SETTINGS
@given(st.one_of(token, st.just("CONNECT")), LANE_TARGETS, LANE_VERSIONS, LANE_HOSTS,
       LANE_CONNECTIONS, st.lists(st.tuples(field_names, field_values), max_size=4), LANE_EXTRA,
       st.integers(0, 300), st.binary(max_size=3))
def test_both_parser_lanes_agree_on_heads_near_the_common_one(
        method, target, version, host, connections, fields, extra, where, junk):
    lines = ["%s %s HTTP/%s" % (method, target, version)]
    lines += ["Host: %s" % h for h in ([host] if isinstance(host, str) else host or [])]
    lines += ["Connection: %s" % c for c in connections or []]
    lines += ["%s: %s" % f for f in fields] + extra
    head = ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")
    if junk:   # and the same head with a few bytes replaced anywhere
        head = head[:where] + junk + head[where + len(junk):]
        head = head if head.endswith(b"\r\n\r\n") else head + b"\r\n\r\n"
    agree(head)


@pytest.mark.parametrize("version", ["1.0", "1.1"])
@pytest.mark.parametrize("value", CONNECTION_VALUES)
def test_both_parser_lanes_agree_on_connection_tokens(value, version):
    agree(("GET / HTTP/%s\r\nHost: h\r\nConnection: %s\r\n\r\n" % (version, value)).encode("latin-1"))
    agree(("GET / HTTP/%s\r\nConnection: x\r\nHost: h\r\nConnection: %s\r\n\r\n"
           % (version, value)).encode("latin-1"))


def test_both_parser_lanes_agree_on_the_malformed_table():
    for case in malformed.CASES:
        end = case.raw.find(b"\r\n\r\n")
        agree(case.raw[:end + 4] if end != -1 else case.raw + b"\r\n\r\n")


def test_the_one_pass_lane_takes_the_common_head():
    """The fast lane is really taken: if parse_head_by_line ran, this fails."""
    head = b"GET /a?b=1 HTTP/1.1\r\nHost: h.example\r\nConnection: Close\r\nAccept: */*\r\n\r\n"
    original = forkparts.parser.parse_head_by_line
    forkparts.parser.parse_head_by_line = None
    try:
        request = parse_head(head)
    finally:
        forkparts.parser.parse_head_by_line = original
    assert request == agree(head)
    assert (request.path, request.query, request.host, request.keep_alive) == ("/a", "b=1", "h.example", False)


# start_response checks a common response in one loop and one match, and
# hands anything else to check_status and check_headers: both must agree.
class Unsent:
    """Just what Response.start_response reads before the head is sent."""
    status = None
    headers_sent = False
    write = None


def start_outcome(status, headers):
    response = Unsent()
    try:
        wsgi_handler.Response.start_response(response, status, headers)
    except wsgi_handler.ResponseError as exc:
        return str(exc)
    return response.status, response.headers


def checked_outcome(status, headers):
    try:
        return wsgi_handler.check_status(status), wsgi_handler.check_headers(headers)
    except wsgi_handler.ResponseError as exc:
        return str(exc)


HEADER_TEXT = st.one_of(token, st.text(VALUE_CHARS + " \t\r\n\x00\x7f\xe9\u20ac:", max_size=8),
                        st.sampled_from(["Connection", "TE", "a\r\nb", "X\n", " v", "v ", ""]))
HEADER_ITEMS = st.one_of(st.tuples(HEADER_TEXT, HEADER_TEXT), st.just(("a", b"b")),
                         st.just(["a", "b"]), st.just(("a", "b", "c")))
STATUSES = st.one_of(st.sampled_from(["200 OK", "404 Not Found", "200", "99 X", "200 OK\r\n",
                                      "200 \xe9", "200 \u20ac", b"200 OK"]),
                     st.text(VALUE_CHARS + " \n", max_size=12))


@PROPERTY_SETTINGS
@given(STATUSES, st.one_of(st.lists(HEADER_ITEMS, max_size=4), st.just(()), st.just(None)))
def test_start_response_and_the_named_checks_agree(status, headers):
    assert start_outcome(status, headers) == checked_outcome(status, headers)


def test_start_response_takes_a_common_response_in_one_pass():
    original = wsgi_handler.check_headers
    wsgi_handler.check_headers = None   # called on the slow lane only
    try:
        outcome = start_outcome("200 OK", [("Content-Type", "text/plain"), ("X-A", "b\tc")])
    finally:
        wsgi_handler.check_headers = original
    assert outcome == ("200 OK", [("Content-Type", "text/plain"), ("X-A", "b\tc")])
