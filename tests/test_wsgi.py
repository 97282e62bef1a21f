"""WSGI behaviour over socket.socketpair(), in process, without forking.

serve_connection() runs in a thread on one end of a socketpair, exactly as a
child would call it; the test is the client on the other end.  Well-behaved
apps are wrapped in wsgiref.validate.validator, so any PEP 3333 violation on
the server's side (environ, wsgi.input, start_response, write) fails the test.
"""
import email.utils
import io
import re
import socket
import sys
import threading
import time
from wsgiref.validate import validator

import pytest

import wsgi_handler as wh
from forkparts.exits import EXIT_ERROR, EXIT_OK
from forkparts.http11 import SERVER_SOFTWARE
from forkparts.logs import Log
from tests import apps
from tests.conftest import read_until_close

pytestmark = pytest.mark.filterwarnings("error::wsgiref.validate.WSGIWarning")

CLIENT_ADDR = ("127.0.0.1", 54321)
EXCHANGE_TIMEOUT_SECONDS = 10.0
DATE_SLACK_SECONDS = 2
CLF_RE = re.compile(r'^(\S+) - - \[[^\]]+\] "([^"]*)" (\d{3}) (\d+|-)$')


class Reply:
    """What the client received, split into status, headers and raw body."""

    def __init__(self, raw, exit_status, error_log, access_log):
        self.raw = raw
        self.exit_status = exit_status
        self.error_log = error_log
        self.access_log = access_log
        head, _, self.body = raw.partition(b"\r\n\r\n")
        lines = head.decode("latin-1").split("\r\n")
        self.status_line = lines[0]
        self.status = int(lines[0].split()[1]) if lines[0].startswith("HTTP/") else None
        self.headers = [tuple(part.strip() for part in line.split(":", 1)) for line in lines[1:]]

    def header(self, name):
        values = [v for n, v in self.headers if n.lower() == name.lower()]
        assert len(values) <= 1, "repeated %s: %r" % (name, values)
        return values[0] if values else None




def exchange(tmp_path, app, request, close_client=False, **settings):
    """Serve one connection carrying ``request``; return the Reply."""
    error_path, access_path = tmp_path / "error.log", tmp_path / "access.log"
    with open(error_path, "ab") as err, open(access_path, "ab") as acc:
        log = Log(error_fd=err.fileno(), access_fd=acc.fileno(), level="debug")
        config = wh.HandlerConfig(log=log, **settings).freeze()
        server_end, client = socket.socketpair()
        outcome = []
        thread = threading.Thread(target=lambda: outcome.append(
            run_server(server_end, app, config)), daemon=True)
        thread.start()
        client.settimeout(EXCHANGE_TIMEOUT_SECONDS)
        client.sendall(request)
        if close_client:
            client.close()
            raw = b""
        else:
            client.shutdown(socket.SHUT_WR)
            raw = read_until_close(client)
            client.close()
        thread.join(EXCHANGE_TIMEOUT_SECONDS)
    assert outcome, "serve_connection did not return"
    if isinstance(outcome[0], BaseException):
        raise outcome[0]
    return Reply(raw, outcome[0], error_path.read_text(), access_path.read_text())


def run_server(sock, app, config):
    try:
        return wh.serve_connection(sock, CLIENT_ADDR, app, config)
    except BaseException as exc:  # noqa: BLE001 - handed to the test thread
        return exc


def get(path="/", version="1.1", method="GET", headers=(), body=b""):
    lines = ["%s %s HTTP/%s" % (method, path, version)]
    if version == "1.1":
        lines.append("Host: testhost")
    lines.extend(headers)
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + body


def capture_environ(seen):
    def app(environ, start_response):
        seen.update(environ)
        seen["_input_read"] = environ["wsgi.input"].read(1 << 20)
        start_response("200 OK", [("Content-Type", "text/plain")])
        return [b"ok"]
    return validator(app)


def dechunk(body):
    """Decode a chunked body; (data, complete?)."""
    out, rest = [], body
    while rest:
        size_line, sep, rest = rest.partition(b"\r\n")
        if not sep:
            return b"".join(out), False
        size = int(size_line, 16)
        if size == 0:
            return b"".join(out), rest == b"\r\n"
        out.append(rest[:size])
        if rest[size:size + 2] != b"\r\n":
            return b"".join(out), False
        rest = rest[size + 2:]
    return b"".join(out), False


# ---------------------------------------------------------------- the environ

PEP3333_KEYS = (
    "REQUEST_METHOD", "SCRIPT_NAME", "PATH_INFO", "QUERY_STRING", "SERVER_NAME",
    "SERVER_PORT", "SERVER_PROTOCOL", "REMOTE_ADDR", "REMOTE_PORT", "wsgi.version",
    "wsgi.url_scheme", "wsgi.input", "wsgi.errors", "wsgi.multithread",
    "wsgi.multiprocess", "wsgi.run_once", "wsgi.input_terminated", "wsgi.file_wrapper")


def test_environ_has_every_pep3333_key_with_true_values(tmp_path):
    seen = {}
    body = b"a=1&b=2"
    request = get("/a/b?x=1&y=%20", method="POST", headers=(
        "Content-Type: application/x-www-form-urlencoded",
        "Content-Length: %d" % len(body)), body=body)
    reply = exchange(tmp_path, capture_environ(seen), request)
    assert reply.status == 200
    assert set(PEP3333_KEYS) <= set(seen)
    assert seen["REQUEST_METHOD"] == "POST"
    assert (seen["SCRIPT_NAME"], seen["PATH_INFO"]) == ("", "/a/b")
    assert seen["QUERY_STRING"] == "x=1&y=%20"      # never decoded (PEP 3333)
    assert seen["CONTENT_TYPE"] == "application/x-www-form-urlencoded"
    assert seen["CONTENT_LENGTH"] == str(len(body))
    assert (seen["SERVER_NAME"], seen["SERVER_PORT"]) == ("testhost", "80")
    assert seen["SERVER_PROTOCOL"] == "HTTP/1.1"
    assert (seen["REMOTE_ADDR"], seen["REMOTE_PORT"]) == ("127.0.0.1", "54321")
    assert seen["wsgi.version"] == (1, 0)
    assert seen["wsgi.url_scheme"] == "http"
    assert seen["wsgi.multithread"] is False
    assert seen["wsgi.multiprocess"] is True
    assert seen["wsgi.run_once"] is True            # one request, then the child exits
    assert seen["wsgi.input_terminated"] is True
    assert seen["wsgi.file_wrapper"] is wh.FileWrapper
    assert seen["_input_read"] == body
    for key, value in seen.items():
        if key.isupper():
            assert type(value) is str, key          # native strings only
            value.encode("latin-1")


def test_run_once_is_false_when_a_child_may_serve_several_requests(tmp_path):
    seen = {}
    exchange(tmp_path, capture_environ(seen), get(), keep_alive=5.0)
    assert seen["wsgi.run_once"] is False


def test_server_name_and_port_come_from_the_host_header_or_the_config(tmp_path):
    seen = {}
    exchange(tmp_path, capture_environ(seen), get(headers=()).replace(
        b"Host: testhost", b"Host: example.org:8080"))
    assert (seen["SERVER_NAME"], seen["SERVER_PORT"]) == ("example.org", "8080")
    seen.clear()
    exchange(tmp_path, capture_environ(seen), get(version="1.0"),
             server_name="configured", server_port=8888)
    assert (seen["SERVER_NAME"], seen["SERVER_PORT"]) == ("configured", "8888")
    assert seen["SERVER_PROTOCOL"] == "HTTP/1.0"


@pytest.mark.parametrize("target,path_info", [
    ("/caf%C3%A9", "/caf\xc3\xa9"),                  # UTF-8 bytes as latin-1 (PEP 3333)
    ("/a%20b/%2Fslash", "/a b//slash"),
    ("/%e2%82%ac?q=%e2%82%ac", "/\xe2\x82\xac"),
    ("/bad%zzescape%", "/bad%zzescape%"),            # not an escape: kept as sent
    ("/one-digit%2", "/one-digit%2"),                 # as urllib.parse.unquote
    ("/sign%+1x", "/sign%+1x"),
    ("/mixed%4a%4", "/mixedJ%4"),
    ("/plain", "/plain"),
])
def test_path_info_is_percent_decoded_latin1(tmp_path, target, path_info):
    seen = {}
    exchange(tmp_path, capture_environ(seen), get(target))
    assert seen["PATH_INFO"] == path_info
    assert seen["PATH_INFO"].encode("latin-1").decode("utf-8", "replace")
    assert seen["QUERY_STRING"] == target.partition("?")[2]


def test_absolute_form_target_gives_path_and_host(tmp_path):
    seen = {}
    exchange(tmp_path, capture_environ(seen), get("http://other.example:81/p/q?z=1"))
    assert (seen["PATH_INFO"], seen["QUERY_STRING"]) == ("/p/q", "z=1")
    assert (seen["SERVER_NAME"], seen["SERVER_PORT"]) == ("other.example", "81")


def test_repeated_headers_are_joined_and_underscore_names_dropped(tmp_path):
    seen = {}
    exchange(tmp_path, capture_environ(seen), get(headers=(
        "X-Rep: one", "Accept: text/html", "x-rep: two, three", "X-Forwarded-For: 10.0.0.1",
        "X_Forwarded_For: 6.6.6.6", "X-Empty:", "User-Agent: t/1")))
    assert seen["HTTP_X_REP"] == "one, two, three"
    assert seen["HTTP_X_FORWARDED_FOR"] == "10.0.0.1"   # not impersonated by X_Forwarded_For
    assert seen["HTTP_ACCEPT"] == "text/html"
    assert seen["HTTP_X_EMPTY"] == ""
    assert seen["HTTP_USER_AGENT"] == "t/1"
    assert seen["HTTP_HOST"] == "testhost"
    assert not [k for k in seen if "X_FORWARDED_FOR" in k and k != "HTTP_X_FORWARDED_FOR"]


def test_header_values_with_obs_text_are_latin1_strings(tmp_path):
    seen = {}
    exchange(tmp_path, capture_environ(seen), get(headers=(
        "X-Name: caf\xc3\xa9", "Content-Type: text/plain; charset=\xe9")))
    assert seen["HTTP_X_NAME"].encode("latin-1").decode("utf-8") == "caf\u00e9"
    assert seen["CONTENT_TYPE"] == "text/plain; charset=\xe9"


def test_chunked_request_has_no_content_length_and_reads_whole(tmp_path):
    seen = {}
    exchange(tmp_path, capture_environ(seen), get(method="POST", headers=(
        "Transfer-Encoding: chunked",), body=b"3\r\nabc\r\n2\r\nde\r\n0\r\n\r\n"))
    assert "CONTENT_LENGTH" not in seen
    assert seen["_input_read"] == b"abcde"
    assert seen["HTTP_TRANSFER_ENCODING"] == "chunked"


def line_reader(environ, start_response):
    stream = environ["wsgi.input"]
    first = stream.readline()
    second = stream.readline(3)
    rest = [line for line in stream]
    start_response("200 OK", [("Content-Type", "text/plain")])
    return [repr([first, second, rest]).encode()]


def test_wsgi_input_readline_and_iteration_pass_the_validator(tmp_path):
    body = b"line one\nline two\nthree"
    reply = exchange(tmp_path, validator(line_reader), get(
        method="POST", headers=("Content-Length: %d" % len(body),), body=body))
    assert reply.status == 200
    assert dechunk(reply.body)[0] == repr(
        [b"line one\n", b"lin", [b"e two\n", b"three"]]).encode()


def writes_errors(environ, start_response):
    errors = environ["wsgi.errors"]
    errors.write("first part, ")
    errors.write("same line\nsecond line\nunfinished")
    errors.writelines(["", " tail"])
    errors.flush()
    start_response("200 OK", [("Content-Type", "text/plain")])
    return [b"ok"]


def test_wsgi_errors_lines_reach_the_error_log_whole(tmp_path):
    reply = exchange(tmp_path, validator(writes_errors), get())
    assert reply.status == 200
    lines = reply.error_log.splitlines()
    assert "first part, same line" in lines
    assert "second line" in lines
    assert "unfinished tail" in lines


# ----------------------------------------------------------- start_response

def test_write_callable_sends_before_the_returned_iterable(tmp_path):
    reply = exchange(tmp_path, validator(apps.write_callable), get())
    assert reply.status == 200
    assert reply.header("Transfer-Encoding") == "chunked"
    assert dechunk(reply.body) == (b"written and returned\n", True)


def error_page_app(environ, start_response):
    """The PEP 3333 example: an error before any output replaces the status."""
    start_response("200 OK", [("Content-Type", "text/plain")])
    try:
        raise ValueError("caught by the app")
    except ValueError:
        start_response("503 Service Unavailable", [("Content-Type", "text/plain")],
                       sys.exc_info())
    return [b"sorry\n"]


def test_start_response_with_exc_info_before_output_replaces_the_status(tmp_path):
    reply = exchange(tmp_path, validator(error_page_app), get())
    assert reply.status == 503
    assert dechunk(reply.body) == (b"sorry\n", True)   # the validator hides the length
    assert reply.exit_status == EXIT_OK


def exc_info_after_output(environ, start_response):
    write = start_response("200 OK", [("Content-Type", "text/plain")])
    write(b"partial")
    try:
        raise ValueError("late failure")
    except ValueError:
        start_response("500 Internal Server Error", [("Content-Type", "text/plain")],
                       sys.exc_info())
    return [b"never sent"]


def test_start_response_with_exc_info_after_output_reraises_and_cuts(tmp_path):
    reply = exchange(tmp_path, exc_info_after_output, get())
    assert reply.status == 200
    data, complete = dechunk(reply.body)
    assert data == b"partial" and not complete        # no last chunk: not a whole body
    assert b"never sent" not in reply.raw
    assert "ValueError: late failure" in reply.error_log
    assert reply.exit_status == EXIT_ERROR


def fails_after_its_first_chunk(environ, start_response):
    start_response("200 OK", [("Content-Type", "text/plain")])
    yield b"chunk one\n"
    raise ValueError("failed midway")


def replaces_after_its_first_chunk(environ, start_response):
    start_response("200 OK", [("Content-Type", "text/plain")])
    yield b"chunk one\n"
    try:
        raise ValueError("late failure")
    except ValueError:
        start_response("503 Service Unavailable", [("Content-Type", "text/plain")],
                       sys.exc_info())
    yield b"sorry\n"


@pytest.mark.parametrize("app", [fails_after_its_first_chunk, replaces_after_its_first_chunk])
def test_a_head_request_whose_app_fails_after_its_first_chunk_gets_a_status(tmp_path, app):
    """A HEAD response has no body, so its head waits until the app ends and
    nothing has gone out when the app fails: the client gets a 500 (or the
    replacing status), the head alone, never a bare reset.  The head counted
    as sent once it was built, so this used to be a reset without a byte."""
    reply = exchange(tmp_path, app, get(method="HEAD"))
    expected = 503 if app is replaces_after_its_first_chunk else 500
    assert reply.status == expected, reply.raw
    assert reply.body == b""                      # RFC 9110 9.3.2: no content for HEAD
    assert reply.header("Connection") == "close"
    assert " %d " % expected in reply.access_log


def test_a_head_request_whose_app_fails_before_start_response_gets_the_head_alone(tmp_path):
    reply = exchange(tmp_path, body_before_start_response, get(method="HEAD"))
    assert reply.status == 500 and reply.body == b""
    assert reply.header("Content-Length") is not None


def start_response_twice(environ, start_response):
    start_response("200 OK", [("Content-Type", "text/plain")])
    start_response("201 Created", [("Content-Type", "text/plain")])
    return [b"x"]


def body_before_start_response(environ, start_response):
    return [b"no status"]


def yields_text(environ, start_response):
    start_response("200 OK", [("Content-Type", "text/plain")])
    return ["text, not bytes"]


def app_with(status, headers):
    def app(environ, start_response):
        start_response(status, headers)
        return [b"body"]
    return app


BROKEN_APPS = [
    ("second-call-without-exc-info", start_response_twice, "second time"),
    ("no-start-response", body_before_start_response, "start_response"),
    ("str-body", yields_text, "not bytes"),
    ("status-reason-without-space", app_with("200OK", []), "invalid status"),
    ("status-bytes", app_with(b"200 OK", []), "native str"),
    ("status-two-digits", app_with("20 OK", []), "invalid status"),
    ("status-with-crlf", app_with("200 OK\r\nX-Injected: 1", []), "invalid status"),
    ("header-value-crlf", apps.bad_header, "invalid character"),
    ("header-value-lf", app_with("200 OK", [("X-A", "a\nb")]), "invalid character"),
    ("header-name-space", app_with("200 OK", [("Bad Name", "x")]), "invalid header name"),
    ("header-name-colon", app_with("200 OK", [("X-A:", "x")]), "invalid header name"),
    ("header-bytes", app_with("200 OK", [(b"X-A", b"x")]), "tuple"),
    ("header-not-latin1", app_with("200 OK", [("X-A", "\u20ac")]), "latin-1"),
    ("headers-tuple", app_with("200 OK", (("X-A", "x"),)), "must be a list"),
    ("hop-by-hop-trailer", app_with("200 OK", [("Trailer", "X-Sum")]), "hop-by-hop"),
    ("hop-by-hop-te", app_with("200 OK", [("Transfer-Encoding", "chunked")]), "hop-by-hop"),
    ("hop-by-hop-upgrade", app_with("200 OK", [("Upgrade", "h2c")]), "hop-by-hop"),
    ("bad-content-length", app_with("200 OK", [("Content-Length", "-1")]), "Content-Length"),
]


@pytest.mark.parametrize("case", BROKEN_APPS, ids=[c[0] for c in BROKEN_APPS])
def test_pep3333_violation_is_500_and_a_logged_error(tmp_path, case):
    _, app, logged = case
    reply = exchange(tmp_path, app, get())
    assert reply.status == 500
    assert reply.body == b"500 Internal Server Error\n"
    assert reply.header("Connection") == "close"
    assert b"X-Injected" not in reply.raw and b"pwned" not in reply.raw
    assert "[ERROR]" in reply.error_log and logged in reply.error_log
    assert reply.exit_status == EXIT_ERROR


# ------------------------------------------------------------------ app errors

def test_app_exception_before_headers_is_short_500_without_traceback(tmp_path):
    reply = exchange(tmp_path, apps.boom, get())
    assert reply.status == 500
    assert reply.body == b"500 Internal Server Error\n"
    assert int(reply.header("Content-Length")) == len(reply.body)
    assert b"Traceback" not in reply.raw and b"boom" not in reply.raw
    assert "Traceback (most recent call last)" in reply.error_log
    assert "RuntimeError: boom from the app" in reply.error_log
    assert reply.exit_status == EXIT_ERROR
    assert '" 500 ' in reply.access_log


def test_app_exception_after_headers_leaves_the_chunked_body_unfinished(tmp_path):
    reply = exchange(tmp_path, apps.boom_after_headers, get())
    assert reply.status == 200
    assert dechunk(reply.body) == (b"partial", False)
    assert "RuntimeError: boom after headers" in reply.error_log
    assert reply.exit_status == EXIT_ERROR


def test_short_body_against_declared_content_length_is_an_error(tmp_path):
    app = app_with("200 OK", [("Content-Type", "text/plain"), ("Content-Length", "10")])
    reply = exchange(tmp_path, app, get())
    assert reply.header("Content-Length") == "10"
    assert reply.body == b"body"
    assert "4 of its Content-Length of 10" in reply.error_log


class ClosingBody:
    """An iterable that records close(); optionally fails while iterated."""

    def __init__(self, chunks, fail_at=None):
        self.chunks = chunks
        self.fail_at = fail_at
        self.closed = 0

    def __iter__(self):
        for i, chunk in enumerate(self.chunks):
            if i == self.fail_at:
                raise RuntimeError("fails while iterated")
            yield chunk

    def close(self):
        self.closed += 1


class LazyStart(ClosingBody):
    """Calls start_response only when iterated, as a generator app does."""

    def __init__(self, chunks, start):
        super().__init__(chunks)
        self.start = start

    def __iter__(self):
        self.start()
        return super().__iter__()


def closing_app(body, status="200 OK", headers=None):
    headers = headers if headers is not None else [("Content-Type", "text/plain")]

    def app(environ, start_response):
        if isinstance(body, LazyStart):
            body.start = lambda: start_response(status, headers)
        else:
            start_response(status, headers)
        return body
    return app


@pytest.mark.parametrize("fail_at,headers,method", [
    (None, None, "GET"),                             # the ordinary case
    (None, None, "HEAD"),                            # body never sent
    (0, None, "GET"),                                # fails before the first chunk
    (1, None, "GET"),                                # fails after the first chunk
    ("lazy", [("Upgrade", "h2c")], "GET"),           # rejected header, while iterated
], ids=["ok", "head", "fail-first", "fail-later", "bad-header"])
def test_app_iterable_close_is_always_called_once(tmp_path, fail_at, headers, method):
    if fail_at == "lazy":
        body = LazyStart([b"one", b"two"], None)
    else:
        body = ClosingBody([b"one", b"two"], fail_at)
    exchange(tmp_path, closing_app(body, headers=headers), get(method=method))
    assert body.closed == 1


def test_iterable_closed_when_the_client_is_gone(tmp_path):
    body = ClosingBody([b"x" * 65536] * 64)
    reply = exchange(tmp_path, closing_app(body), get(), close_client=True)
    assert body.closed == 1
    assert reply.exit_status == EXIT_OK
    assert "went away" in reply.error_log and "[DEBUG]" in reply.error_log
    assert "[ERROR]" not in reply.error_log and "Traceback" not in reply.error_log


# ------------------------------------------------------------------- framing

def generator_app(environ, start_response):
    start_response("200 OK", [("Content-Type", "text/plain")])
    yield b"gen"
    yield b""
    yield b"erated"


def test_list_body_gets_content_length(tmp_path):
    reply = exchange(tmp_path, validator(apps.hello), get())
    assert reply.header("Content-Length") == "14"
    assert reply.header("Transfer-Encoding") is None
    assert reply.body == b"Hello, World!\n"


def test_unknown_length_is_chunked_on_http11(tmp_path):
    reply = exchange(tmp_path, validator(generator_app), get())
    assert reply.header("Transfer-Encoding") == "chunked"
    assert reply.header("Content-Length") is None
    assert reply.body == b"3\r\ngen\r\n6\r\nerated\r\n0\r\n\r\n"  # empty chunk skipped


def test_unknown_length_is_close_delimited_on_http10(tmp_path):
    reply = exchange(tmp_path, validator(generator_app), get(version="1.0"))
    assert reply.status_line.startswith("HTTP/1.1 200")
    assert reply.header("Transfer-Encoding") is None
    assert reply.header("Content-Length") is None
    assert reply.header("Connection") == "close"
    assert reply.body == b"generated"


def test_declared_content_length_is_kept_for_a_generator(tmp_path):
    app = closing_app(iter([b"ab", b"cd"]),
                      headers=[("Content-Type", "text/plain"), ("Content-Length", "4")])
    reply = exchange(tmp_path, validator(app), get())
    assert reply.header("Content-Length") == "4"
    assert reply.header("Transfer-Encoding") is None
    assert reply.body == b"abcd"


@pytest.mark.parametrize("method,status,body_app", [
    ("HEAD", "200 OK", apps.hello),
    ("HEAD", "200 OK", generator_app),
    ("GET", "204 No Content", None),
    ("GET", "304 Not Modified", None),
])
def test_no_body_for_head_204_and_304(tmp_path, method, status, body_app):
    if body_app is None:
        body_app = closing_app(iter([b"must not be sent"]), status=status, headers=[])
    reply = exchange(tmp_path, body_app, get(method=method))
    assert reply.status_line == "HTTP/1.1 " + status
    assert reply.body == b""
    assert reply.header("Transfer-Encoding") is None
    if method == "HEAD" and body_app is apps.hello:
        assert reply.header("Content-Length") == "14"   # what a GET would send


def test_every_response_has_a_current_date_server_and_connection_close(tmp_path):
    reply = exchange(tmp_path, validator(apps.hello), get())
    sent = email.utils.parsedate_to_datetime(reply.header("Date")).timestamp()
    assert abs(sent - time.time()) <= DATE_SLACK_SECONDS
    assert reply.header("Date").endswith(" GMT")
    assert reply.header("Server") == SERVER_SOFTWARE
    assert reply.header("Connection") == "close"


def test_app_date_and_server_headers_are_not_duplicated(tmp_path):
    app = app_with("200 OK", [("Content-Type", "text/plain"), ("Date", "x"), ("Server", "mine")])
    reply = exchange(tmp_path, app, get())
    assert (reply.header("Date"), reply.header("Server")) == ("x", "mine")


# -------------------------------------------------------------- file_wrapper

def test_file_wrapper_sends_a_real_file_with_sendfile_and_its_length(tmp_path, monkeypatch):
    def not_iterated(self):
        raise AssertionError("the file was iterated, not sent with sendfile")
    monkeypatch.setattr(wh.FileWrapper, "__next__", not_iterated)
    reply = exchange(tmp_path, apps.file_wrapper, get())
    with open(apps.__file__, "rb") as f:
        expected = f.read()
    assert reply.header("Content-Length") == str(len(expected))
    assert reply.body == expected


def test_file_wrapper_hidden_by_middleware_is_iterated(tmp_path):
    reply = exchange(tmp_path, validator(apps.file_wrapper), get())
    with open(apps.__file__, "rb") as f:
        assert dechunk(reply.body) == (f.read(), True)


def test_file_wrapper_over_a_non_file_is_iterated(tmp_path):
    def app(environ, start_response):
        start_response("200 OK", [("Content-Type", "text/plain")])
        return environ["wsgi.file_wrapper"](io.BytesIO(b"in memory" * 1000), 4096)
    reply = exchange(tmp_path, validator(app), get())
    assert dechunk(reply.body) == (b"in memory" * 1000, True)


# ---------------------------------------------------------------- access log

def test_access_log_line_is_common_log_format(tmp_path):
    exchange(tmp_path, validator(apps.hello), get("/hello?x=1"))
    reply = exchange(tmp_path, validator(apps.hello), get(method="HEAD"))
    lines = reply.access_log.splitlines()
    assert len(lines) == 2
    first, second = (CLF_RE.match(line) for line in lines)
    assert first.groups() == ("127.0.0.1", "GET /hello?x=1 HTTP/1.1", "200", "14")
    assert second.groups() == ("127.0.0.1", "HEAD / HTTP/1.1", "200", "-")


def test_file_wrapper_sends_from_the_current_file_position(tmp_path):
    path = tmp_path / "data.bin"
    path.write_bytes(bytes(range(256)) * 8)

    def app(environ, start_response):
        f = open(path, "rb")
        f.seek(1000)   # e.g. a file with a header the app skips
        start_response("200 OK", [("Content-Type", "application/octet-stream")])
        return environ["wsgi.file_wrapper"](f)
    reply = exchange(tmp_path, app, get())
    assert reply.header("Content-Length") == str(2048 - 1000)
    assert reply.body == path.read_bytes()[1000:]


def test_file_wrapper_of_an_empty_file_is_an_empty_200(tmp_path):
    path = tmp_path / "empty.txt"
    path.write_bytes(b"")

    def app(environ, start_response):
        start_response("200 OK", [("Content-Type", "text/plain")])
        return environ["wsgi.file_wrapper"](open(path, "rb"))
    reply = exchange(tmp_path, app, get())
    assert reply.status == 200
    assert reply.header("Content-Length") == "0"
    assert reply.body == b""
    assert "[ERROR]" not in reply.error_log


def test_file_wrapper_of_a_gzip_file_sends_what_it_reads_not_the_file_on_disk(tmp_path):
    """A gzip file has the fileno of the compressed file: sendfile took its
    size for the Content-Length, then failed (a reset).  Its read() is what
    the app means: iterated, the decompressed bytes."""
    import gzip
    path = tmp_path / "data.gz"
    text = b"line of text\n" * 2000
    with gzip.open(path, "wb") as f:
        f.write(text)

    def app(environ, start_response):
        start_response("200 OK", [("Content-Type", "text/plain")])
        return environ["wsgi.file_wrapper"](gzip.open(path, "rb"))
    reply = exchange(tmp_path, app, get())
    assert reply.status == 200 and reply.header("Content-Length") is None
    assert dechunk(reply.body) == (text, True)


def test_file_wrapper_of_a_proxy_of_a_file_is_still_sent_with_sendfile(tmp_path, monkeypatch):
    """A NamedTemporaryFile, or Django's File (a FieldFile's), holds the open
    file under ``.file``: its bytes are the file's, so sendfile sends it (a
    review: the gzip fix had them iterated, 4 KiB at a time for Django)."""
    import tempfile

    def not_iterated(self):
        raise AssertionError("the file was iterated, not sent with sendfile")
    monkeypatch.setattr(wh.FileWrapper, "__next__", not_iterated)
    data = bytes(range(256)) * 64

    def app(environ, start_response):
        f = tempfile.NamedTemporaryFile(dir=str(tmp_path))
        f.write(data)
        f.seek(0)
        start_response("200 OK", [("Content-Type", "application/octet-stream")])
        return environ["wsgi.file_wrapper"](f)
    reply = exchange(tmp_path, app, get())
    assert reply.header("Content-Length") == str(len(data)) and reply.body == data


def test_file_wrapper_of_a_proc_file_sends_its_text(tmp_path):
    """/proc's files are regular files of size 0 whose read() gives text:
    'Content-Length: 0' and an empty body, before."""
    def app(environ, start_response):
        start_response("200 OK", [("Content-Type", "text/plain")])
        return environ["wsgi.file_wrapper"](open("/proc/self/status", "rb"))
    reply = exchange(tmp_path, app, get())
    body, complete = dechunk(reply.body)
    assert reply.status == 200 and complete and body.startswith(b"Name:"), reply.body[:200]


@pytest.mark.parametrize("target, script_name, path_info", [
    ("/app/x/y?q=1", "/app", "/x/y"), ("/app", "/app", ""), ("/app/", "/app", "/"),
    ("/apple", "", "/apple"), ("/other", "", "/other"), ("/app%2Fx", "/app", "/x"),
])
def test_script_name_splits_the_path_as_gunicorn_does(tmp_path, target, script_name, path_info):
    seen = {}
    exchange(tmp_path, capture_environ(seen), get(target), script_name="/app")
    assert (seen["SCRIPT_NAME"], seen["PATH_INFO"]) == (script_name, path_info)
