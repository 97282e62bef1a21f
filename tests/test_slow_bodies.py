"""Slow clients beyond the first head (issue 14, part 4).

A small body (Content-Length up to 64 KiB) is read by the parent's accept
filter before the fork, under mod_reqtimeout's MinRate: a grace of
--header-timeout, then --min-body-rate bytes/s.  A larger or chunked body is
the child's, under the same rule.  With --keep-alive every head gets its own
--header-timeout and every request its own --timeout."""
import time

from tests.conftest import read_until_close

APP = "tests.apps:echo_body"
GRACE_SECONDS = 1.0       # --header-timeout of these servers
RATE = 1000               # --min-body-rate of these servers
TRICKLE_SECONDS = 0.25
LATE_SECONDS = 3.0        # what "cut" means here: long before the old bound (--timeout 30 s)


def post_head(length, path="/"):
    return (b"POST %s HTTP/1.1\r\nHost: x\r\nContent-Type: application/octet-stream\r\n"
            b"Content-Length: %d\r\n\r\n" % (path.encode(), length))


def trickle(sock, count, chunk=b"x"):
    """Send chunk every TRICKLE_SECONDS up to count times; stop when the server cuts."""
    for _ in range(count):
        try:
            sock.sendall(chunk)
        except OSError:
            return
        time.sleep(TRICKLE_SECONDS)


def start(start_server, *extra):
    return start_server(APP, "--header-timeout", str(GRACE_SECONDS),
                        "--min-body-rate", str(RATE), *extra)


def test_small_body_trickled_is_408_from_the_parent_without_a_child(start_server):
    server = start(start_server)
    with server.connect() as sock:
        sock.sendall(post_head(100))
        started = time.monotonic()
        sock.sendall(b"x")
        time.sleep(GRACE_SECONDS / 2)
        assert server.children() == []      # the filter holds it: no child yet
        trickle(sock, int(LATE_SECONDS / TRICKLE_SECONDS))
        reply = read_until_close(sock)
    assert reply.startswith(b"HTTP/1.1 408"), reply[:60]
    assert time.monotonic() - started < LATE_SECONDS + 1
    assert "no complete request body" in server.log_text()


def test_small_body_at_an_honest_pace_is_served(start_server):
    server = start(start_server)
    body = b"y" * 4000          # 4 s at 1000 B/s needs the rate's extension past the grace
    with server.connect() as sock:
        sock.sendall(post_head(len(body)))
        for i in range(0, len(body), 500):
            sock.sendall(body[i:i + 500])
            time.sleep(0.25)    # 2000 B/s, over the 1000 B/s floor
        reply = read_until_close(sock)
    assert reply.startswith(b"HTTP/1.1 200") and reply.endswith(body)


def test_small_body_is_in_before_the_fork(start_server):
    server = start(start_server)
    body = b"z" * 2000
    with server.connect() as sock:
        sock.sendall(post_head(len(body)) + body[:1000])
        time.sleep(0.3)
        assert server.children() == []
        sock.sendall(body[1000:])
        reply = read_until_close(sock)
    assert reply.endswith(body)


def test_large_body_trickled_is_408_from_the_child(start_server):
    server = start(start_server)
    with server.connect() as sock:
        sock.sendall(post_head(1024 * 1024))      # over what the filter holds
        started = time.monotonic()
        trickle(sock, int(LATE_SECONDS * 2 / TRICKLE_SECONDS), b"x" * 10)
        reply = read_until_close(sock)
    # The app was already reading its body: the child answers 408 itself.
    assert reply.startswith(b"HTTP/1.1 408"), reply[:60]
    assert time.monotonic() - started < LATE_SECONDS + 1
    assert "slower than 1000 bytes/s" in server.log_text()


def test_min_body_rate_0_turns_the_rate_off_in_the_child(start_server):
    server = start_server(APP, "--header-timeout", str(GRACE_SECONDS), "--min-body-rate", "0")
    body = b"w" * 120
    with server.connect() as sock:
        sock.sendall(post_head(70 * 1024))         # the child's: a rate would cut it
        for i in range(0, len(body), 10):
            sock.sendall(body[i:i + 10])
            time.sleep(TRICKLE_SECONDS)
        sock.sendall(b"w" * (70 * 1024 - len(body)))
        reply = read_until_close(sock)
    assert reply.startswith(b"HTTP/1.1 200"), reply[:60]


def test_each_kept_alive_head_gets_its_own_header_timeout(start_server):
    server = start_server("tests.apps:hello", "--keep-alive", "20",
                          "--header-timeout", str(GRACE_SECONDS))
    with server.connect() as sock:
        sock.sendall(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
        sock.settimeout(10)
        assert sock.recv(65536).startswith(b"HTTP/1.1 200")
        started = time.monotonic()
        trickle(sock, int(LATE_SECONDS * 2 / TRICKLE_SECONDS), b"G")   # a head, slowly
        reply = read_until_close(sock)
    # Cut (408 or closed) after --header-timeout, not after --keep-alive.
    assert reply == b"" or reply.startswith(b"HTTP/1.1 408"), reply[:60]
    assert time.monotonic() - started < LATE_SECONDS + 1


def test_timeout_applies_to_each_kept_alive_request_not_the_connection(start_server):
    server = start_server("tests.apps:slow", "--keep-alive", "10", "--timeout", "2")
    with server.connect() as sock:
        sock.settimeout(10)
        for _ in range(3):      # 3 s on one connection, each request 1 s
            sock.sendall(b"GET /?s=1 HTTP/1.1\r\nHost: x\r\n\r\n")
            data = b""
            while not data.endswith(b"slow done\n"):
                chunk = sock.recv(65536)
                assert chunk, data
                data += chunk
            assert data.startswith(b"HTTP/1.1 200")
        sock.sendall(b"GET /?s=5 HTTP/1.1\r\nHost: x\r\n\r\n")   # this one is too long
        started = time.monotonic()
        reply = read_until_close(sock)
        assert not reply.startswith(b"HTTP/1.1 200"), reply[:60]
        assert time.monotonic() - started < 2 + LATE_SECONDS


def test_min_body_rate_0_turns_the_rate_off_in_the_parent_too(start_server):
    server = start_server(APP, "--header-timeout", str(GRACE_SECONDS), "--min-body-rate", "0")
    body = b"v" * 3000
    with server.connect() as sock:
        sock.sendall(post_head(len(body)))
        for i in range(0, len(body), 500):      # 2.5 s: past the grace, no rate to meet
            sock.sendall(body[i:i + 500])
            time.sleep(0.5)
        reply = read_until_close(sock)
    assert reply.startswith(b"HTTP/1.1 200") and reply.endswith(body), reply[:60]


def test_a_small_body_still_coming_at_sigterm_is_served(start_server):
    import signal
    server = start_server(APP)              # defaults: the body has 10 s from its head
    with server.connect() as sock:
        sock.sendall(post_head(10) + b"hello")
        time.sleep(0.3)
        server.signal(signal.SIGTERM)
        time.sleep(1.5)                     # past STOP_HEAD_GRACE_SECONDS: a body keeps its own
        sock.sendall(b"world")
        reply = read_until_close(sock)
    assert reply.startswith(b"HTTP/1.1 200") and reply.endswith(b"helloworld"), reply[:60]
    assert server.wait_exit() == 0


SLOW_READER_APP = """
    import time

    def app(environ, start_response):
        total = 0
        while True:
            data = environ["wsgi.input"].read(64 * 1024)
            if not data:
                break
            total += len(data)
            time.sleep(0.2)             # the app, not the client, is slow
        body = b"%d" % total
        start_response("200 OK", [("Content-Length", str(len(body)))])
        return [body]
"""


def test_the_body_rate_is_the_clients_not_the_apps(start_server, tmp_path):
    import textwrap
    (tmp_path / "slowreader.py").write_text(textwrap.dedent(SLOW_READER_APP))
    server = start_server("slowreader:app", "--header-timeout", str(GRACE_SECONDS),
                          "--min-body-rate", "1000000", cwd=str(tmp_path))
    body = b"r" * (1024 * 1024)          # sent at once; read at 320 KB/s by the app
    with server.connect() as sock:
        sock.sendall(post_head(len(body)) + body)
        reply = read_until_close(sock)
    assert reply.startswith(b"HTTP/1.1 200") and reply.endswith(b"%d" % len(body)), reply[:80]
