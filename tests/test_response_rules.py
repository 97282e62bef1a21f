"""What the server does with what an app gives start_response (the issue's
part 2): strict where a mistake could corrupt the stream or inject, tolerant
where the stock frameworks need it.  docs/security.md has the table.

Driven as tests/test_wsgi.py drives the child: serve_connection() in a thread
on one end of a socketpair, the test the client on the other.
"""
import http.cookies

import pytest

import wsgi_handler as wh
from tests.test_wsgi import exchange, get


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
    assert reply.exit_status == wh.EXIT_OK


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
