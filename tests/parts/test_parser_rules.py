"""The last leniencies of gunicorn's own request corpus (the issue's part 8):
a repeated singleton field is 400 in both parser lanes, and a trailer field
RFC 9110 6.5.1 rules out makes wsgi.input raise at the body's end (400
before the response head, a cut connection after it).  The raw cases are
in tests/malformed.py; these tests pin what the table cannot see.
"""
import pytest

import forkparts.parser
from forkparts.http11 import DEFAULT_LIMITS, BadRequest, HTTPError
from forkparts.parser import parse_head, parse_head_by_line
from tests.test_wsgi import dechunk, exchange, get

SINGLETONS = ("Host", "Content-Length", "Content-Type", "Authorization")
VALUES = {"Host": "a.example", "Content-Length": "0", "Content-Type": "text/plain",
          "Authorization": "Basic YWxpY2U6"}


def head_with(*fields):
    return ("GET / HTTP/1.1\r\n" + "".join(f + "\r\n" for f in fields) + "\r\n").encode("latin-1")


def outcome(parse, head):
    try:
        return parse(head)
    except HTTPError as exc:
        return type(exc), exc.detail


@pytest.mark.parametrize("name", SINGLETONS)
@pytest.mark.parametrize("same", [True, False], ids=["same-value", "other-value"])
def test_a_repeated_singleton_is_400_in_both_parser_lanes(name, same):
    first = "%s: %s" % (name, VALUES[name])
    second = first if same else "%s: %s" % (name.lower(), VALUES[name] + "9")
    fields = [first, "X-Between: 1", second]
    if name != "Host":
        fields.insert(0, "Host: h.example")
    head = head_with(*fields)
    expected = (BadRequest, "repeated %s header" % name.lower())
    assert outcome(parse_head, head) == expected
    assert outcome(lambda h: parse_head_by_line(h, DEFAULT_LIMITS), head) == expected


def test_one_content_type_and_authorization_stay_in_the_one_pass_lane():
    head = head_with("Host: h.example", "Content-Type: text/plain", "Authorization: Bearer t",
                     "Accept: */*")
    original = forkparts.parser.parse_head_by_line
    forkparts.parser.parse_head_by_line = None   # the fast lane must not hand these over
    try:
        request = parse_head(head)
    finally:
        forkparts.parser.parse_head_by_line = original
    assert request == parse_head_by_line(head, DEFAULT_LIMITS)
    assert request.header("authorization") == "Bearer t"


# ------------------------------------------------------- forbidden trailers

def chunked_post(trailer_line):
    return get("/", method="POST", headers=("Transfer-Encoding: chunked",),
               body=b"5\r\nhello\r\n0\r\n" + trailer_line + b"\r\n\r\n")


def reads_then_answers(environ, start_response):
    body = environ["wsgi.input"].read()
    start_response("200 OK", [("Content-Type", "text/plain")])
    return [b"read %d" % len(body)]


def answers_then_reads(swallow):
    """Sends its head and some body, then reads the request body."""
    def app(environ, start_response):
        write = start_response("200 OK", [("Content-Type", "text/plain")])
        write(b"early")
        try:
            environ["wsgi.input"].read()
        except HTTPError:
            if not swallow:
                raise
        return [b"late"]
    return app


@pytest.mark.parametrize("line", [b"Content-Length: 5", b"Transfer-Encoding: chunked",
                                  b"Host: evil.example", b"Authorization: Basic YQ==",
                                  b"X-Ok: 1\r\nContent-Type: text/evil"])
def test_forbidden_trailer_is_400_before_the_head(tmp_path, line):
    reply = exchange(tmp_path, reads_then_answers, chunked_post(line))
    assert reply.status == 400
    assert reply.header("Connection") == "close"
    assert b"read" not in reply.raw
    assert "RFC 9110 6.5.1" in reply.error_log and "Traceback" not in reply.error_log


@pytest.mark.parametrize("swallow", [False, True], ids=["raised", "swallowed"])
def test_forbidden_trailer_after_the_head_cuts_the_response(tmp_path, swallow):
    reply = exchange(tmp_path, answers_then_reads(swallow), chunked_post(b"Host: evil.example"))
    assert reply.status == 200
    data, complete = dechunk(reply.body)
    assert not complete            # no last chunk: the client sees a broken response
    assert data.startswith(b"early")
    if not swallow:
        assert data == b"early"
    assert "RFC 9110 6.5.1" in reply.error_log


def test_allowed_trailers_reach_the_app(tmp_path):
    seen = {}

    def app(environ, start_response):
        environ["wsgi.input"].read()
        seen["trailers"] = list(environ["forkserver.trailers"])
        start_response("200 OK", [("Content-Type", "text/plain")])
        return [b"ok"]
    reply = exchange(tmp_path, app, chunked_post(b"X-Checksum: 12\r\nServer-Timing: db;dur=5"))
    assert reply.status == 200
    assert seen["trailers"] == [("x-checksum", "12"), ("server-timing", "db;dur=5")]


@pytest.mark.parametrize("method", [b"get", b"GeT", b"head", b"post", b"m-search"])
def test_a_method_with_a_lower_case_letter_is_501_in_both_lanes(tmp_path, method):
    """Methods are case-sensitive (RFC 9110 9.1) and every one there is is
    upper case.  "get" used to reach the app, which frameworks upper-case and
    serve as GET, and "head" got a body as if it were GET."""
    head = method + b" /x HTTP/1.1\r\nHost: t\r\n\r\n"
    for parse in (parse_head, parse_head_by_line):
        with pytest.raises(HTTPError) as info:
            parse(head, DEFAULT_LIMITS)
        assert info.value.status == 501 and method.decode() in str(info.value)
    reply = exchange(tmp_path, lambda environ, start_response: [b"reached"], head)
    assert reply.status == 501 and b"reached" not in reply.raw


@pytest.mark.parametrize("method", [b"GET", b"M-SEARCH", b"PROPFIND", b"BREW"])
def test_an_upper_case_method_of_any_name_reaches_the_app(method):
    request = parse_head(method + b" /x HTTP/1.1\r\nHost: t\r\n\r\n", DEFAULT_LIMITS)
    assert request.method == method.decode()
