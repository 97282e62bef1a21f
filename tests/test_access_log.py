"""Access-log atoms (gunicorn's --access-log-format), and whole lines when
many children write at once."""
import base64
import re
import socket
import threading
import time

from tests.conftest import http_get

POLL_SECONDS = 0.02
LOG_WAIT_SECONDS = 10.0


def wait_for_text(read, needle, timeout=LOG_WAIT_SECONDS):
    deadline = time.monotonic() + timeout
    while needle not in read() and time.monotonic() < deadline:
        time.sleep(POLL_SECONDS)
    return read()


FULL_FORMAT = ('%(h)s %(l)s %(u)s %(t)s "%(r)s" %(s)s %(b)s "%(f)s" "%(a)s" '
               '%(T)s %(D)s %(L)s %(M)s %(p)s %({x-req}i)s %({x-resp}o)s %(m)s %(U)s %(q)s %(H)s')
LINE_RE = re.compile(
    r'(?P<h>\S+) - (?P<u>\S+) \[(?P<t>\d\d/\w{3}/\d{4}:\d\d:\d\d:\d\d [+-]\d{4})\] '
    r'"(?P<r>[^"]*)" (?P<s>\d{3}) (?P<b>\d+|-) "(?P<f>[^"]*)" "(?P<a>[^"]*)" '
    r'(?P<T>\d+) (?P<D>\d+) (?P<L>\d+\.\d{6}) (?P<M>\d+) <(?P<p>\d+)> (?P<i>\S+) (?P<o>\S+) '
    r'(?P<m>\S+) (?P<U>\S+) (?P<q>\S*) (?P<H>\S+)$')
SLOW_MS = 300


def test_access_log_format_atoms(start_server):
    server = start_server("tests.apps_deploy:with_response_header",
                          "--access-log-format", FULL_FORMAT)
    headers = {"Referer": "http://example.test/from", "User-Agent": "atom-test/1.0",
               "X-Req": "in-value", "Authorization": "Basic YWxpY2U6c2VjcmV0"}  # alice:secret
    status, _, body = http_get(server, "/some/path?ms=%d" % SLOW_MS, headers=headers)
    assert (status, body) == (200, b"logged\n")
    line = wait_for_text(server.access_text, "\n").strip()
    match = LINE_RE.match(line)
    assert match, line
    atoms = match.groupdict()
    assert (atoms["h"], atoms["u"]) == ("127.0.0.1", "alice")
    assert atoms["r"] == "GET /some/path?ms=%d HTTP/1.1" % SLOW_MS
    assert (atoms["s"], atoms["b"]) == ("200", str(len(b"logged\n")))
    assert (atoms["f"], atoms["a"]) == (headers["Referer"], headers["User-Agent"])
    assert (atoms["i"], atoms["o"]) == ("in-value", "out-value")
    assert (atoms["m"], atoms["U"], atoms["q"], atoms["H"]) == (
        "GET", "/some/path", "ms=%d" % SLOW_MS, "HTTP/1.1")
    assert int(atoms["D"]) >= SLOW_MS * 1000 and int(atoms["M"]) >= SLOW_MS
    assert float(atoms["L"]) >= SLOW_MS / 1000.0 and atoms["T"] == "0"
    assert int(atoms["p"]) not in (server.pid, 0)      # written by the child


CONCURRENT_CLIENTS = 16
CONCURRENT_REQUESTS = 240
PAD_BYTES = 1500          # long lines: more room for two writes to interleave


def test_access_log_lines_stay_whole_under_many_children(start_server):
    server = start_server("tests.apps_deploy:with_response_header",
                          "--access-log-format", FULL_FORMAT)
    pad = "p" * PAD_BYTES
    failures, lock = [], threading.Lock()

    def client(count):
        for _ in range(count):
            try:
                status = http_get(server, "/", headers={"X-Req": pad})[0]
            except OSError as exc:
                status = repr(exc)
            if status != 200:
                with lock:
                    failures.append(status)
    threads = [threading.Thread(target=client, args=(CONCURRENT_REQUESTS // CONCURRENT_CLIENTS,))
               for _ in range(CONCURRENT_CLIENTS)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert not failures
    deadline = time.monotonic() + LOG_WAIT_SECONDS
    while server.access_text().count("\n") < CONCURRENT_REQUESTS and time.monotonic() < deadline:
        time.sleep(POLL_SECONDS)
    lines = server.access_text().splitlines()
    assert len(lines) == CONCURRENT_REQUESTS
    assert all(LINE_RE.match(line) and pad in line for line in lines)


BIG_BYTES = 32 << 20            # tests.apps:big: more than any socket buffer holds
READ_BYTES = 256 * 1024         # what the impatient client reads before it leaves


def access_status_and_bytes(server):
    line = wait_for_text(server.access_text, "\n").strip()
    match = re.search(r'" (\d{3}) (\d+|-)(?: |$)', line)
    assert match, line
    return match.group(1), match.group(2)


def test_a_client_that_leaves_mid_body_is_logged_with_the_status_and_bytes_it_got(
        start_server):
    """As nginx logs it: the 200 that went out and the body bytes that did,
    not 499 and "-" (the client had its 200 and part of the body)."""
    server = start_server("tests.apps:big")
    sock = server.connect()
    sock.sendall(b"GET /big HTTP/1.1\r\nHost: t\r\n\r\n")
    got = b""
    while len(got) < READ_BYTES:
        got += sock.recv(65536)
    sock.close()                  # with unread data: a reset
    assert got.startswith(b"HTTP/1.1 200 OK")
    status, sent = access_status_and_bytes(server)
    assert status == "200" and sent != "-", (status, sent)
    assert READ_BYTES // 2 < int(sent) < BIG_BYTES, sent


def test_a_chunked_response_cut_short_logs_its_body_bytes_without_the_framing(start_server):
    """The failed send of a chunk held its framing (size line, CRLF) too, and
    all of it was taken off the body's bytes: 300 - 106 gave 194, or 94."""
    server = start_server("tests.apps:paced_chunks")
    sock = server.connect()
    sock.sendall(b"GET / HTTP/1.1\r\nHost: t\r\n\r\n")
    got = b""
    while b"\r\n\r\n64\r\n" + b"0" * 100 not in got:   # the head and the first chunk
        chunk = sock.recv(65536)
        assert chunk, got
        got += chunk
    sock.close()
    status, sent = access_status_and_bytes(server)
    assert status == "200" and sent in ("100", "200"), (status, sent)


def test_a_timeout_sending_to_a_client_that_does_not_read_names_the_client(start_server):
    """The app had given its whole response; --timeout came while it was
    being sent.  The error log used to blame the app with a traceback of our
    send, and the access log said 500 although a 200 had gone out."""
    server = start_server("tests.apps:big", "--timeout", "1")
    sock = server.connect()
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        sock.sendall(b"GET /big HTTP/1.1\r\nHost: t\r\n\r\n")
        text = wait_for_text(server.log_text, "reads it too slowly, or not at all")
    finally:
        sock.close()
    assert re.search(r"--timeout reached sending the response to GET /big: the client reads "
                     r"it too slowly, or not at all \(\d+ bytes of its body sent, some perhaps "
                     r"still in the kernel's buffers\)", text), text
    assert "Traceback" not in text
    status, sent = access_status_and_bytes(server)
    assert status == "200" and (sent == "-" or int(sent) < BIG_BYTES), (status, sent)


def test_a_clients_quotes_backslashes_and_newlines_cannot_forge_fields_or_lines(start_server):
    """What the client sends reaches the line escaped as nginx writes it (\\",
    \\\\, \\xHH; gunicorn escapes the quote): a quote in the User-Agent ended
    the quoted field and added fields of the client's own, and a %0A in the
    path or a newline in a Basic user name started a line of its own."""
    server = start_server("tests.apps_deploy:with_response_header", "--access-log-format",
                          '%(h)s %(u)s "%(r)s" %(s)s "%(f)s" "%(a)s" %(U)s %({x-req}i)s')
    user = base64.b64encode(b'bo"b\nFAKE 200:pw').decode()
    headers = {"Referer": 'http://r/"x', "User-Agent": 'evil" "injected\\',
               "X-Req": 'q"uote', "Authorization": "Basic " + user}
    assert http_get(server, "/a%0AFAKE%22line?x=1", headers=headers)[0] == 200
    text = wait_for_text(server.access_text, "\n")
    assert text == ('127.0.0.1 bo\\"b\\x0aFAKE 200 "GET /a%0AFAKE%22line?x=1 HTTP/1.1" 200 '
                    '"http://r/\\"x" "evil\\" \\"injected\\\\" /a\\x0aFAKE\\"line q\\"uote\n')


def test_content_type_and_length_and_environ_names_in_any_case_as_gunicorn(start_server):
    server = start_server("tests.apps_deploy:with_response_header", "--access-log-format",
                          "%({content-type}i)s %({Content-Length}i)s %({remote_addr}e)s "
                          "%({REQUEST_METHOD}e)s %({X-Resp}o)s %({absent}i)s")
    status = http_get(server, "/", method="POST", body=b"hello",
                      headers={"Content-Type": "text/plain"})[0]
    assert status == 200
    assert wait_for_text(server.access_text, "\n") == "text/plain 5 127.0.0.1 POST out-value -\n"
