"""End to end: the real server under pexpect, spoken to with http.client, raw
sockets and curl.  The start_server fixture checks for zombies after each test
and stops the server with SIGTERM."""
import hashlib
import http.client
import json
import os
import re
import shutil
import subprocess
import time

import pytest

from tests import apps
from tests.conftest import http_get, raw_request

TEN_MB = 10 * 1024 * 1024
BLOCK_BYTES = 64 * 1024
CONTINUE_WAIT_SECONDS = 5.0       # how long a client waits for the interim 100
LOG_WAIT_SECONDS = 5.0
CLIENT_TIMEOUT_SECONDS = 30.0
CLF_RE = re.compile(r'^(\S+) - - \[\d\d/\w{3}/\d{4}:\d\d:\d\d:\d\d [+-]\d{4}\] '
                    r'"([^"]*)" (\d{3}) (\d+|-)$')
CONTINUE = b"HTTP/1.1 100 Continue\r\n\r\n"


def split_response(raw):
    head, _, body = raw.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    headers = {}
    for line in lines[1:]:
        name, _, value = line.partition(":")
        headers[name.strip().lower()] = value.strip()
    return lines[0], headers, body


def wait_for_log(read, pattern, timeout=LOG_WAIT_SECONDS):
    """Poll a log (children write it after the response) until pattern appears."""
    deadline = time.monotonic() + timeout
    while True:
        text = read()
        if re.search(pattern, text) or time.monotonic() > deadline:
            return text
        time.sleep(0.02)


def get_json(server, target, headers=None):
    status, _, body = http_get(server, target, headers=headers)
    assert status == 200
    return json.loads(body)


# ------------------------------------------------------------ basic methods

def test_get_answers_with_date_server_close_and_an_access_log_line(start_server):
    server = start_server("tests.apps:hello")
    status, headers, body = http_get(server, "/hello?who=me")
    assert (status, body) == (200, b"Hello, World!\n")
    assert headers["Content-Length"] == "14"
    assert headers["Connection"] == "close"
    assert headers["Server"].startswith("forkserver/")
    assert headers["Date"].endswith(" GMT")
    log = wait_for_log(server.access_text, r"GET /hello")
    match = CLF_RE.match(log.splitlines()[0])
    assert match, log
    assert match.groups() == ("127.0.0.1", "GET /hello?who=me HTTP/1.1", "200", "14")


def test_head_sends_the_headers_and_no_body(start_server):
    server = start_server("tests.apps:hello")
    raw = raw_request(server, b"HEAD /hello HTTP/1.1\r\nHost: t\r\n\r\n")
    status_line, headers, body = split_response(raw)
    assert status_line == "HTTP/1.1 200 OK"
    assert headers["content-length"] == "14"
    assert body == b""


def test_post_with_content_length_reaches_the_app_whole(start_server):
    server = start_server("tests.apps:echo_body")
    payload = bytes(range(256)) * 40 + b"\r\n\r\nnot a head\n"
    status, _, body = http_get(server, "/echo", method="POST", body=payload)
    assert (status, body) == (200, payload)


def test_post_chunked_with_extensions_and_trailers(start_server):
    server = start_server("tests.apps:echo_body")
    raw = raw_request(server, b"POST /e HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\n"
                      b"5;ext=1\r\nhello\r\n7\r\n, world\r\n0\r\nX-Sum: 12\r\n\r\n")
    status_line, headers, body = split_response(raw)
    assert status_line == "HTTP/1.1 200 OK"
    assert body == b"hello, world"


def test_request_body_is_iterable_by_lines(start_server):
    server = start_server("tests.apps_core:echo_lines")
    conn = http.client.HTTPConnection(server.host, server.port, timeout=CLIENT_TIMEOUT_SECONDS)
    try:
        lines = [b"first\n", b"second line\n", b"no newline"]
        conn.request("POST", "/lines", body=iter(lines), encode_chunked=True)
        resp = conn.getresponse()
        assert resp.getheader("Transfer-Encoding") == "chunked"
        assert resp.read() == b"".join(lines)
    finally:
        conn.close()


# ------------------------------------------------------------ 100-continue

@pytest.mark.parametrize("framing,body", [
    (b"Content-Length: 5", b"hello"),
    (b"Transfer-Encoding: chunked", b"5\r\nhello\r\n0\r\n\r\n"),
], ids=["content-length", "chunked"])
def test_100_continue_arrives_before_any_body_byte_is_sent(start_server, framing, body):
    server = start_server("tests.apps:echo_body")
    with server.connect() as sock:
        sock.sendall(b"POST /c HTTP/1.1\r\nHost: t\r\n%s\r\n"
                     b"Expect: 100-continue\r\n\r\n" % framing)
        sock.settimeout(CONTINUE_WAIT_SECONDS)
        interim = b""
        while len(interim) < len(CONTINUE):
            data = sock.recv(len(CONTINUE) - len(interim))
            assert data, "closed before the 100 Continue"
            interim += data
        assert interim == CONTINUE
        sock.sendall(body)
        sock.settimeout(CLIENT_TIMEOUT_SECONDS)
        raw = b"".join(iter(lambda: sock.recv(65536), b""))
    status_line, _, body = split_response(raw)
    assert (status_line, body) == ("HTTP/1.1 200 OK", b"hello")


def test_no_100_continue_when_the_app_answers_without_reading(start_server):
    server = start_server("tests.apps:ignore_body")
    raw = raw_request(server, b"PUT /big HTTP/1.1\r\nHost: t\r\nContent-Length: 1000000\r\n"
                      b"Expect: 100-continue\r\n\r\n")
    assert b"100 Continue" not in raw
    status_line, _, body = split_response(raw)
    assert (status_line, body) == ("HTTP/1.1 403 Forbidden", b"not read\n")


# ------------------------------------------------------------ large bodies

def blocks(total):
    block = bytes(range(256)) * (BLOCK_BYTES // 256)
    for start in range(0, total, BLOCK_BYTES):
        yield block[:min(BLOCK_BYTES, total - start)]


def expected_digest(total):
    sha = hashlib.sha256()
    for block in blocks(total):
        sha.update(block)
    return ("%d %s" % (total, sha.hexdigest())).encode()


@pytest.mark.parametrize("chunked", [False, True], ids=["content-length", "chunked"])
def test_10mb_request_body_is_streamed_to_the_app(start_server, chunked):
    server = start_server("tests.apps_core:digest")
    conn = http.client.HTTPConnection(server.host, server.port, timeout=CLIENT_TIMEOUT_SECONDS)
    try:
        headers = {} if chunked else {"Content-Length": str(TEN_MB)}
        conn.request("POST", "/up", body=blocks(TEN_MB), headers=headers,
                     encode_chunked=chunked)
        resp = conn.getresponse()
        assert (resp.status, resp.read()) == (200, expected_digest(TEN_MB))
    finally:
        conn.close()


def test_10mb_response_body_is_streamed_chunked(start_server):
    server = start_server("tests.apps:stream")
    conn = http.client.HTTPConnection(server.host, server.port, timeout=CLIENT_TIMEOUT_SECONDS)
    try:
        conn.request("GET", "/down?n=%d" % TEN_MB)
        resp = conn.getresponse()
        assert resp.getheader("Transfer-Encoding") == "chunked"
        total = 0
        while True:
            data = resp.read(BLOCK_BYTES)
            if not data:
                break
            assert data.count(b"x") == len(data)
            total += len(data)
        assert total == TEN_MB
    finally:
        conn.close()


def test_file_wrapper_sends_the_file(start_server):
    server = start_server("tests.apps:file_wrapper")
    status, headers, body = http_get(server, "/file")
    with open(apps.__file__, "rb") as f:
        expected = f.read()
    assert (status, body) == (200, expected)
    assert headers["Content-Length"] == str(len(expected))


# ------------------------------------------------------------ the environ

def test_unicode_percent_encoded_path_and_query_string(start_server):
    server = start_server("tests.apps_core:environ_json")
    env = get_json(server, "/caf%C3%A9/%E2%82%AC%20x%2Fy?q=caf%C3%A9&a=1&a=2&empty")
    # PEP 3333: the decoded bytes as latin-1; the app re-encodes to get UTF-8 back.
    assert env["PATH_INFO"].encode("latin-1").decode("utf-8") == "/café/€ x/y"
    assert env["QUERY_STRING"] == "q=caf%C3%A9&a=1&a=2&empty"
    assert env["REQUEST_METHOD"] == "GET"
    assert env["SERVER_PROTOCOL"] == "HTTP/1.1"
    assert env["REMOTE_ADDR"] == "127.0.0.1"
    assert env["wsgi.multiprocess"] is True and env["wsgi.multithread"] is False


def test_repeated_headers_are_joined_and_underscored_names_dropped(start_server):
    server = start_server("tests.apps_core:environ_json")
    raw = raw_request(server, b"GET /h HTTP/1.1\r\nHost: t\r\nX-Rep: a\r\nX-Rep: b\r\n"
                      b"X-Real-Ip: 1.2.3.4\r\nX_Real_Ip: 6.6.6.6\r\n\r\n")
    env = json.loads(split_response(raw)[2])
    assert env["HTTP_X_REP"] == "a, b"
    assert env["HTTP_X_REAL_IP"] == "1.2.3.4"


# ------------------------------------------------------------ app errors

def test_app_exception_is_a_short_500_and_a_logged_traceback(start_server):
    server = start_server("tests.apps:boom")
    status, _, body = http_get(server, "/boom")
    assert status == 500
    assert b"Traceback" not in body and b"boom" not in body
    log = wait_for_log(server.log_text, r"RuntimeError: boom from the app")
    assert "Traceback (most recent call last)" in log
    assert "RuntimeError: boom from the app" in log


def test_app_exception_after_headers_cuts_a_chunked_body(start_server):
    server = start_server("tests.apps:boom_after_headers")
    raw = raw_request(server, b"GET /x HTTP/1.1\r\nHost: t\r\n\r\n")
    status_line, headers, body = split_response(raw)
    assert status_line == "HTTP/1.1 200 OK" and headers["transfer-encoding"] == "chunked"
    assert body.startswith(b"7\r\npartial\r\n")
    assert not body.endswith(b"0\r\n\r\n")     # no last chunk: the client sees an error


def test_app_exception_after_headers_resets_a_close_delimited_body(start_server):
    server = start_server("tests.apps:boom_after_headers")
    raw = raw_request(server, b"GET /x HTTP/1.0\r\n\r\n")
    status_line, headers, body = split_response(raw)
    assert status_line == "HTTP/1.1 200 OK"
    assert "content-length" not in headers and "transfer-encoding" not in headers
    # A clean close would make "partial" look whole: it must be a reset.
    assert body.endswith(b"<RESET>"), body


def test_client_hang_up_is_logged_at_debug_not_error(start_server):
    server = start_server("tests.apps:stream", "--log-level", "debug")
    with server.connect() as sock:
        sock.sendall(b"GET /down?n=%d HTTP/1.1\r\nHost: t\r\n\r\n" % (50 * TEN_MB))
        assert sock.recv(1024).startswith(b"HTTP/1.1 200")
    went_away = r"\[DEBUG\].*client 127\.0\.0\.1:\d+ went away"
    log = wait_for_log(server.log_text, went_away)
    assert re.search(went_away, log), log
    assert "[ERROR]" not in log and "Traceback" not in log
    assert "exited with" not in log      # the child ended normally


# ------------------------------------------------------------ framework examples

@pytest.mark.parametrize("spec", ["examples.flaskapp:app", "examples.pyramidapp:app",
                                  "examples.djangoapp:app", "examples.hello:app"])
def test_example_app_answers_hello(start_server, spec):
    server = start_server(spec)
    status, _, body = http_get(server, "/hello")
    assert status == 200
    assert b"Hello" in body


# ------------------------------------------------------------ curl

CURL = shutil.which("curl") or "curl"     # .ci/run installs it


def test_curl_i_shows_the_status_line_and_headers(start_server):
    server = start_server("examples.hello:app")
    out = subprocess.run([CURL, "-sS", "-i", server.url + "/hello"], capture_output=True,
                         timeout=CLIENT_TIMEOUT_SECONDS, check=True).stdout
    status_line, headers, body = split_response(out)
    assert status_line == "HTTP/1.1 200 OK"
    assert headers["connection"] == "close"
    assert body == b"Hello, World!\n"


def test_curl_chunked_upload_from_stdin(start_server, tmp_path):
    server = start_server("tests.apps_core:digest")
    data = tmp_path / "upload.bin"
    data.write_bytes(os.urandom(3 * 1024 * 1024 + 7))
    with open(data, "rb") as stdin:
        out = subprocess.run([CURL, "-sS", "-v", "-T", "-", server.url + "/up"], stdin=stdin,
                             capture_output=True, timeout=CLIENT_TIMEOUT_SECONDS, check=True)
    assert b"Transfer-Encoding: chunked" in out.stderr      # curl -T - really chunked it
    payload = data.read_bytes()
    assert out.stdout == ("%d %s" % (len(payload), hashlib.sha256(payload).hexdigest())).encode()


def test_clients_that_connect_and_close_are_not_errors(start_server):
    server = start_server("tests.apps:hello", "--log-level", "debug")
    for _ in range(3):
        server.connect().close()
    with server.connect() as sock:
        sock.sendall(b"GET / HTTP/1.1\r\n")     # half a head, then gone
    assert http_get(server, "/")[0] == 200
    log = server.log_text()
    assert "[ERROR]" not in log and "Traceback" not in log
    assert "exited with" not in log
