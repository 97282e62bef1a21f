"""What the server does with what an app gives start_response (the issue's
part 2): strict where a mistake could corrupt the stream or inject, tolerant
where the stock frameworks need it.  docs/security.md has the table.

Driven as tests/test_wsgi.py drives the child: serve_connection() in a thread
on one end of a socketpair, the test the client on the other.
"""
import http.cookies
import sys

import pytest

from forkparts.exits import EXIT_ERROR, EXIT_OK
from tests.test_wsgi import dechunk, exchange, get


def app_with(status, headers, body=b"body"):
    def app(environ, start_response):
        start_response(status, headers)
        return [body]
    return app


def head_lines(reply):
    return reply.raw.partition(b"\r\n\r\n")[0].split(b"\r\n")


# ------------------------------------------------ spaces around header values

def django_session_cookie():
    """The Set-Cookie value Django's WSGIHandler sends: Morsel.output(header="")
    is the empty header name, a space, then the cookie."""
    cookies = http.cookies.SimpleCookie()
    cookies["sessionid"] = "abc123"
    cookies["sessionid"]["httponly"] = True
    cookies["sessionid"]["path"] = "/"
    return cookies["sessionid"].output(header="")


def test_set_cookie_with_django_leading_space_is_sent_stripped(tmp_path):
    value = django_session_cookie()
    assert value.startswith(" ")   # the case itself: what Django really sends
    reply = exchange(tmp_path, app_with("200 OK", [
        ("Content-Type", "text/html"), ("Set-Cookie", value)]), get())
    assert reply.status == 200
    assert b"Set-Cookie: sessionid=abc123; HttpOnly; Path=/" in head_lines(reply)
    assert reply.body == b"body"
    assert "[ERROR]" not in reply.error_log
    assert reply.exit_status == EXIT_OK


@pytest.mark.parametrize("value", [" \tv", "v\t ", "\t v w \t"])
def test_spaces_and_tabs_around_a_header_value_are_stripped(tmp_path, value):
    reply = exchange(tmp_path, app_with("200 OK", [("X-A", value)]), get())
    assert reply.status == 200
    assert b"X-A: " + value.strip(" \t").encode() in head_lines(reply)


@pytest.mark.parametrize("value", [" a\r\nX-Injected: 1", "\r\n", " a\x00", "\x0bv"])
def test_stripping_never_lets_a_control_character_through(tmp_path, value):
    reply = exchange(tmp_path, app_with("200 OK", [("X-A", value)]), get())
    assert reply.status == 500
    assert b"X-Injected" not in reply.raw
    assert "invalid character in header 'X-A'" in reply.error_log


# ------------------------------------------------------------------- status

@pytest.mark.parametrize("status,line", [
    ("200", "HTTP/1.1 200 OK"),
    ("404", "HTTP/1.1 404 Not Found"),
    ("418", "HTTP/1.1 418 I'm a Teapot"),
    ("299", "HTTP/1.1 299 "),      # no standard phrase: RFC 9112 4 keeps the SP
    ("200 ", "HTTP/1.1 200 "),     # an empty phrase the app chose stays empty
])
def test_status_without_a_reason_phrase_gets_the_standard_one(tmp_path, status, line):
    reply = exchange(tmp_path, app_with(status, [("Content-Type", "text/plain")]), get())
    assert reply.status_line == line
    assert reply.body == b"body"
    assert "[ERROR]" not in reply.error_log


@pytest.mark.parametrize("status", ["100", "100 Continue", "101 Switching Protocols",
                                    "103 Early Hints", "199 Whatever"])
def test_interim_1xx_status_from_the_app_is_a_logged_500(tmp_path, status):
    reply = exchange(tmp_path, app_with(status, [("Content-Type", "text/plain")]), get())
    assert reply.status == 500
    assert b"HTTP/1.1 1" not in reply.raw
    assert "[ERROR]" in reply.error_log and "interim (1xx)" in reply.error_log
    assert reply.exit_status == EXIT_ERROR


@pytest.mark.parametrize("status", ["600 Weird", "600", "999 Nine", "700 X"])
def test_a_status_code_past_599_is_a_logged_500(tmp_path, status):
    """RFC 9110 15: "Values outside the range 100..599 are invalid".  They
    used to go out as sent (gunicorn and waitress send them too)."""
    reply = exchange(tmp_path, app_with(status, [("Content-Type", "text/plain")]), get())
    assert reply.status == 500
    assert b"HTTP/1.1 " + status[:3].encode() not in reply.raw
    assert "invalid status line" in reply.error_log


@pytest.mark.parametrize("method", ["GET", "HEAD"])
def test_the_apps_content_length_on_a_204_is_not_sent(tmp_path, method):
    """RFC 9110 8.6: a server MUST NOT send Content-Length in a 204 (as
    gunicorn and waitress, it drops the app's); it used to go out, and the
    body with it was dropped."""
    reply = exchange(tmp_path, app_with("204 No Content", [("Content-Length", "5")],
                                        b"hello"), get(method=method))
    assert reply.status == 204
    assert not [line for line in head_lines(reply) if line.lower().startswith(b"content-length")]
    assert reply.raw.endswith(b"\r\n\r\n")   # and no body
    assert "[ERROR]" not in reply.error_log


def test_a_304_keeps_the_apps_content_length(tmp_path):
    """RFC 9110 8.6: a 304 may carry the length the 200 would have had."""
    reply = exchange(tmp_path, app_with("304 Not Modified", [("Content-Length", "5")], b""),
                     get())
    assert b"Content-Length: 5" in head_lines(reply)


@pytest.mark.parametrize("request_bytes", [
    b"HEAD / HTTP/1.1\r\n\r\n",                              # no Host: 400
    b"HEAD / HTTP/1.1\r\nHost: t\r\nBad Name: x\r\n\r\n",     # 400 from the parser
    b"HEAD /" + b"a" * 9000 + b" HTTP/1.1\r\nHost: t\r\n\r\n",   # 414 before the parse
], ids=["no-host", "bad-field-name", "long-target"])
def test_the_servers_own_error_to_a_head_request_has_no_body(tmp_path, request_bytes):
    """RFC 9110 9.3.2: a response to HEAD has no content, the server's own
    4xx too (the app's 500 already had none)."""
    reply = exchange(tmp_path, app_with("200 OK", []), request_bytes)
    assert reply.status in (400, 414)
    assert reply.raw.endswith(b"\r\n\r\n"), reply.raw


# ------------------------------------------------------ hop-by-hop headers

def responses(raw):
    """[(status, head, body)] of each response in raw (all with Content-Length)."""
    from tests.parts.test_parser import final_responses
    return final_responses(raw)


PIPELINED = get("/first") + get("/second")


def path_echo(headers):
    def app(environ, start_response):
        body = environ["PATH_INFO"].encode()
        start_response("200 OK", headers + [("Content-Length", str(len(body)))])
        return [body]
    return app


@pytest.mark.parametrize("headers", [
    [("Connection", "keep-alive")], [("Keep-Alive", "timeout=5, max=100")],
    [("connection", "Keep-Alive"), ("KEEP-ALIVE", "timeout=5")],
])
def test_app_connection_and_keep_alive_headers_are_dropped(tmp_path, headers):
    reply = exchange(tmp_path, path_echo(headers), PIPELINED, keep_alive=5.0)
    answers = responses(reply.raw)
    assert [body for _, _, body in answers] == [b"/first", b"/second"]   # still persistent
    for _, head, _ in answers:
        assert b"keep-alive" not in head.lower()
    assert "[ERROR]" not in reply.error_log


@pytest.mark.parametrize("value", ["close", "Close", "foo, close", " close\t"])
def test_app_connection_close_is_honoured_under_keep_alive(tmp_path, value):
    reply = exchange(tmp_path, path_echo([("Connection", value)]), PIPELINED, keep_alive=5.0)
    answers = responses(reply.raw)
    assert [body for _, _, body in answers] == [b"/first"]      # /second never served
    head = answers[0][1].split(b"\r\n")
    assert head.count(b"Connection: close") == 1
    assert len([line for line in head if line.lower().startswith(b"connection:")]) == 1
    assert "[ERROR]" not in reply.error_log


def restarting_app(first, second):
    """Calls start_response with ``first``, then again with exc_info and ``second``."""
    def app(environ, start_response):
        start_response("200 OK", first)
        try:
            raise ValueError("changed its mind")
        except ValueError:
            start_response("503 Service Unavailable", second + [("Content-Length", "0")],
                           sys.exc_info())
        return [b""]
    return app


@pytest.mark.parametrize("first,second,served", [
    ([("Connection", "close")], [], [503, 503]),
    ([], [("Connection", "close")], [503]),
], ids=["close-replaced", "close-in-replacement"])
def test_the_replacing_headers_of_an_exc_info_call_decide_connection_close(
        tmp_path, first, second, served):
    reply = exchange(tmp_path, restarting_app(first, second), PIPELINED, keep_alive=5.0)
    assert [status for status, _, _ in responses(reply.raw)] == served


@pytest.mark.parametrize("name,value", [
    ("Transfer-Encoding", "chunked"), ("TE", "trailers"), ("Trailer", "X-Sum"),
    ("Upgrade", "websocket"), ("transfer-encoding", "identity"),
])
def test_app_framing_headers_are_a_logged_500(tmp_path, name, value):
    reply = exchange(tmp_path, app_with("200 OK", [(name, value)]), get())
    assert reply.status == 500
    assert reply.header("Transfer-Encoding") is None and reply.header("Upgrade") is None
    assert "[ERROR]" in reply.error_log
    assert "hop-by-hop header %r is the server's" % name in reply.error_log


# ------------------------------------------------- BaseException from the app

class Quit(BaseException):
    """Neither Exception nor one of the standard ones."""


RAISED = [SystemExit(3), SystemExit(0), KeyboardInterrupt(), GeneratorExit(), Quit("quit")]


def raises_before_head(exc):
    def app(environ, start_response):
        start_response("200 OK", [("Content-Type", "text/plain")])
        raise exc
    return app


def raises_after_head(exc):
    def app(environ, start_response):
        start_response("200 OK", [("Content-Type", "text/plain")])
        yield b"partial"
        raise exc
    return app


def served(tmp_path, app):
    """exchange(), but an exception out of serve_connection fails the test
    instead of reaching pytest (a KeyboardInterrupt would stop the session)."""
    try:
        return exchange(tmp_path, app, get())
    except BaseException as exc:  # noqa: BLE001 - what the child would die of
        pytest.fail("serve_connection raised %r" % exc)


@pytest.mark.parametrize("exc", RAISED, ids=[type(e).__name__ for e in RAISED])
def test_base_exception_before_the_head_is_a_logged_500(tmp_path, exc):
    reply = served(tmp_path, raises_before_head(exc))
    assert reply.status == 500
    assert reply.body == b"500 Internal Server Error\n"
    assert reply.header("Connection") == "close"
    assert "[ERROR] app raised %s serving GET /" % type(exc).__name__ in reply.error_log
    assert reply.exit_status == EXIT_ERROR


@pytest.mark.parametrize("exc", RAISED, ids=[type(e).__name__ for e in RAISED])
def test_base_exception_after_the_head_cuts_the_connection(tmp_path, exc):
    reply = served(tmp_path, raises_after_head(exc))
    assert reply.status == 200
    assert dechunk(reply.body) == (b"partial", False)   # no last chunk: never whole
    assert b"500" not in reply.body
    assert "app raised %s" % type(exc).__name__ in reply.error_log
    assert reply.exit_status == EXIT_ERROR


def test_base_exception_from_close_of_the_iterable_is_logged(tmp_path):
    class Body:
        def __iter__(self):
            return iter([b"fine"])

        def close(self):
            raise SystemExit(2)

    def app(environ, start_response):
        start_response("200 OK", [("Content-Type", "text/plain")])
        return Body()
    reply = served(tmp_path, app)
    assert dechunk(reply.body) == (b"fine", True)
    assert "error closing the app's iterable" in reply.error_log


# ------------------------------------------- a write() kept from a request

def keeps_its_first_write():
    kept = []

    def app(environ, start_response):
        write = start_response("200 OK", [("Content-Type", "text/plain")])
        if not kept:
            kept.append(write)
            write(b"first")
            return []
        kept[0](b"INJECTED")   # the old response's write, in the new request
        return [b"second"]
    return app


def test_write_kept_from_an_earlier_response_raises_in_the_app(tmp_path):
    reply = exchange(tmp_path, keeps_its_first_write(), PIPELINED, keep_alive=5.0)
    assert b"INJECTED" not in reply.raw
    first, _, rest = reply.raw.partition(b"\r\n0\r\n\r\n")   # the first, chunked, ends
    assert first.startswith(b"HTTP/1.1 200 ") and first.endswith(b"\r\n\r\n5\r\nfirst")
    assert rest.startswith(b"HTTP/1.1 500 ")
    assert "write() of a response that has already ended" in reply.error_log
