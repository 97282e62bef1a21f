"""Strict HTTP/1.1 (issue 5): every case of tests/malformed.py through the real
head reader and body readers, whole, byte by byte and in seeded random
fragments; a subset end to end; slow and idle clients against the server."""
import os
import random
import re
import socket
import threading
import time
import zlib

import pytest

import wsgi_handler
from forkparts.http11 import DEFAULT_LIMITS, Limits
from forkparts.logs import Log
from tests import malformed
from tests.apps_strict import echo_request, swallow_body_errors, both_framings, unicode_digit_length
from tests.apps import bad_header
from tests.conftest import wait_children, http_get

# Small timeouts so that a reader waiting for bytes that never come shows as a
# 408 instead of the expected status, quickly.
HEADER_TIMEOUT_SECONDS = 0.5
# Fed a byte per recv, a 64 KiB head is 64 Ki reader turns: allow each some time
# on a loaded machine so the limit under test, not the clock, decides.
SECONDS_PER_FRAGMENT = 50e-6
READ_TIMEOUT_SECONDS = 0.5
KEEP_ALIVE_SECONDS = 1.0       # on, so that a smuggled request would be served
CLIENT_TIMEOUT_SECONDS = 10.0
MAX_FRAGMENT_BYTES = 17
FRAGMENT_SEEDS = (1, 2)
STATUS_LINE_RE = re.compile(rb"HTTP/1\.1 (\d{3}) ")


class FragmentingSocket:
    """A real socket whose recv() returns at most one fragment at a time, so the
    readers see exactly the given boundaries (a writer's small sends would be
    merged by the kernel)."""

    def __init__(self, sock, sizes):
        self._sock = sock
        self._sizes = list(sizes)

    def recv(self, n, *flags):
        if self._sizes:
            n = min(n, self._sizes[0])
        data = self._sock.recv(n, *flags)
        if self._sizes and data:
            self._sizes[0] -= len(data)
            if self._sizes[0] <= 0:
                self._sizes.pop(0)
        return data

    def __getattr__(self, name):
        return getattr(self._sock, name)


def fragment_sizes(mode, raw, name):
    if mode == "whole":
        return []
    if mode == "bytewise":
        return [1] * len(raw)
    rng = random.Random(zlib.crc32(name.encode()) + FRAGMENT_SEEDS[int(mode[-1]) - 1])
    sizes, left = [], len(raw)
    while left > 0:
        sizes.append(min(left, rng.randint(1, MAX_FRAGMENT_BYTES)))
        left -= sizes[-1]
    return sizes


def final_responses(data):
    """(status, head, body) of each non-1xx response in data."""
    found, pos = [], 0
    while True:
        end = data.find(b"\r\n\r\n", pos)
        match = STATUS_LINE_RE.match(data, pos)
        if end == -1 or not match:
            return found
        head = data[pos:end]
        length = re.search(rb"\r\nContent-Length: (\d+)", head)
        size = int(length.group(1)) if length else 0
        status = int(match.group(1))
        if status >= 200:
            found.append((status, head, data[end + 4:end + 4 + size]))
        pos = end + 4 + (size if status >= 200 else 0)


def run_client(sock, raw, eof, out):
    """Send, then read to EOF; shut down our side once a response is whole,
    so a keep-alive server ends instead of waiting for another request."""
    sock.settimeout(CLIENT_TIMEOUT_SECONDS)
    try:
        sock.sendall(raw)
        if eof:
            sock.shutdown(socket.SHUT_WR)
    except OSError:
        pass   # the server may close before reading a long request
    data = b""
    while True:
        try:
            chunk = sock.recv(65536)
        except OSError as exc:
            out["error"] = repr(exc)
            break
        if not chunk:
            break
        data += chunk
        if final_responses(data) and not eof:
            eof = True
            sock.shutdown(socket.SHUT_WR)
    out["data"] = data
    sock.close()


def serve(raw, eof=False, sizes=(), app=None, tmp_path=None, limits=None):
    """One connection through serve_connection in-process.  Returns
    (response bytes, paths the app saw, error log text)."""
    seen = []
    app = app or echo_request

    def recording_app(environ, start_response):
        seen.append(environ["PATH_INFO"])
        return app(environ, start_response)

    log_path = str(tmp_path / "error.log")
    log_fd = os.open(log_path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
    config = wsgi_handler.HandlerConfig(
        header_timeout=HEADER_TIMEOUT_SECONDS + len(sizes) * SECONDS_PER_FRAGMENT,
        read_timeout=READ_TIMEOUT_SECONDS,
        keep_alive=KEEP_ALIVE_SECONDS, limits=limits or DEFAULT_LIMITS,
        log=Log(error_fd=log_fd, level="debug")).freeze()
    client, server = socket.socketpair()
    out = {}
    thread = threading.Thread(target=run_client, args=(client, raw, eof, out))
    thread.start()
    try:
        wsgi_handler.serve_connection(FragmentingSocket(server, sizes), ("127.0.0.1", 4242),
                                      recording_app, config, accepted_at=time.monotonic())
    finally:
        thread.join(CLIENT_TIMEOUT_SECONDS * 2)
        os.close(log_fd)
    with open(log_path, errors="replace") as f:
        return out.get("data", b""), seen, f.read()


def smuggling_probe(case):
    """Append a valid request after an error case (not after a truncated or
    stalled one, where the appended bytes would complete or unstall it)."""
    if case.eof or case.expect in (200, 408, malformed.CLOSE):
        return case.raw
    return case.raw + malformed.SMUGGLED


def check_outcome(case, data, seen):
    responses = final_responses(data)
    if case.expect == malformed.CLOSE:
        assert data == b"", "expected a quiet close, got %r" % data[:200]
        assert seen == []
        return
    assert len(responses) == 1, "expected one response, got %r" % data[:400]
    status, head, body = responses[0]
    assert status == case.expect, "%s: got %d, want %s\n%r" % (case.name, status, case.expect, data[:400])
    if case.expect >= 400:
        assert b"\r\nConnection: close" in head
        assert "/smuggled" not in seen, "a request was parsed after a framing error"
    for text in case.present:
        assert text in body, "%r missing from %r" % (text, body)
    for text in case.absent:
        assert text not in body, "%r leaked into %r" % (text, body)


MODES = ("whole", "bytewise", "random1", "random2")


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("case", malformed.CASES, ids=[c.name for c in malformed.CASES])
def test_malformed_case_through_the_readers(case, mode, tmp_path):
    raw = smuggling_probe(case)
    data, seen, log = serve(raw, case.eof, fragment_sizes(mode, raw, case.name), tmp_path=tmp_path)
    check_outcome(case, data, seen)
    assert "Traceback" not in log


def test_table_covers_at_least_80_adversarial_requests():
    errors = [c for c in malformed.CASES if c.expect != 200]
    assert len(errors) >= 80
    statuses = {c.expect for c in errors}
    assert {400, 408, 413, 414, 417, 431, 501, 505, malformed.CLOSE} <= statuses


def test_bare_lf_head_gets_400_not_408_while_the_connection_stays_open(tmp_path):
    """A reader that only looks for CRLFCRLF would wait for the header timeout."""
    raw = b"GET / HTTP/1.1\nHost: example.com\n\n"
    client, server = socket.socketpair()
    config = wsgi_handler.HandlerConfig(header_timeout=30.0, log=Log(
        error_fd=os.open(os.devnull, os.O_WRONLY))).freeze()
    thread = threading.Thread(target=wsgi_handler.serve_connection,
                              args=(server, ("127.0.0.1", 1), echo_request, config))
    thread.start()
    client.settimeout(5.0)
    client.sendall(raw)
    answer = client.recv(4096)
    client.close()
    thread.join(10)
    assert answer.startswith(b"HTTP/1.1 400 ")


def test_swallowed_chunked_error_is_still_400_and_nothing_is_smuggled(tmp_path):
    """The app swallows the body error: the stale reader must not be read on
    into "0 CRLF CRLF" and a smuggled request behind it."""
    raw = malformed.chunked(b"5\r\nhello0\r\n\r\n") + malformed.SMUGGLED
    for mode in MODES:
        data, seen, _ = serve(raw, sizes=fragment_sizes(mode, raw, "swallow"),
                              app=swallow_body_errors, tmp_path=tmp_path)
        responses = final_responses(data)
        assert [r[0] for r in responses] == [400], data[:300]
        assert seen == ["/"]


def test_length_error_swallowed_by_the_app_closes_the_connection(tmp_path):
    raw = malformed.cl(b"10")    # 5 of 10 body bytes, then EOF
    data, seen, _ = serve(raw, eof=True, app=swallow_body_errors, tmp_path=tmp_path)
    assert [r[0] for r in final_responses(data)] == [400]


def test_chunk_line_limit_is_configurable(tmp_path):
    limits = Limits(chunk_line=64)
    short = malformed.chunked(b"5;a=" + b"x" * 32 + b"\r\nhello\r\n0\r\n\r\n")
    long = malformed.chunked(b"5;a=" + b"x" * 100 + b"\r\nhello\r\n0\r\n\r\n")
    assert final_responses(serve(short, tmp_path=tmp_path, limits=limits)[0])[0][0] == 200
    assert final_responses(serve(long, tmp_path=tmp_path, limits=limits)[0])[0][0] == 400


@pytest.mark.parametrize("app", [both_framings, unicode_digit_length, bad_header])
def test_app_headers_are_validated_before_sending(app, tmp_path):
    data, _, _ = serve(malformed.req(), app=app, tmp_path=tmp_path)
    head = data.split(b"\r\n\r\n", 1)[0].lower()
    assert data.startswith(b"HTTP/1.1 500 ")
    assert not (b"content-length" in head and b"transfer-encoding" in head)
    assert b"pwned" not in data


# ---------------------------------------------------------------- end to end

E2E_CASES = (
    "cl_plus_sign", "cl_list_form", "cl_over_max_body", "cl_body_truncated", "cl_body_stalled",
    "cl_and_te_smuggle", "te_chunked_not_last", "te_gzip_chunked", "te_on_http10",
    "chunk_size_0x", "chunk_missing_crlf", "chunk_data_truncated", "trailer_host",
    "bare_lf_everywhere", "bare_cr_in_value", "obs_fold_space", "space_before_colon",
    "value_nul", "version_2_0", "version_1_10", "asterisk_with_get", "absolute_overrides_host",
    "host_missing", "two_leading_empty_lines", "expect_unknown", "too_many_fields",
    "rl_too_long", "head_too_long", "head_stalled",
)
E2E_HEADER_TIMEOUT = "1"
E2E_READ_TIMEOUT = "1"


def exchange(server, raw, eof):
    """Send raw bytes, read to EOF; the text <RESET> marks a reset connection."""
    out = {}
    run_client(server.connect(timeout=CLIENT_TIMEOUT_SECONDS), raw, eof, out)
    data = out.get("data", b"")
    return data + (b"<RESET>" if "error" in out else b"")


def test_malformed_subset_end_to_end(start_server):
    server = start_server("tests.apps_strict:echo_request", "--keep-alive", "2",
                          "--header-timeout", E2E_HEADER_TIMEOUT,
                          "--read-timeout", E2E_READ_TIMEOUT)
    cases = [malformed.BY_NAME[name] for name in E2E_CASES]
    results = {}

    def one(case):
        results[case.name] = exchange(server, smuggling_probe(case), case.eof)

    threads = [threading.Thread(target=one, args=(case,)) for case in cases]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(CLIENT_TIMEOUT_SECONDS * 2)
    for case in cases:
        data = results[case.name]
        assert not data.endswith(b"<RESET>"), "%s: reset instead of a graceful close" % case.name
        check_outcome(case, data, [])
    assert "/smuggled" not in server.access_text()
    assert "Traceback" not in server.log_text()


# ---------------------------------------------------------------- slow clients

SLOW_HEADER_TIMEOUT = "1"
TRICKLE_INTERVAL_SECONDS = 0.2
SLOW_CONNECTIONS = 20


def trickle(sock, data, interval, stop):
    """Send one byte per interval until stop is set or the server closes."""
    for i in range(len(data)):
        if stop.is_set():
            return
        try:
            sock.send(data[i:i + 1])
        except OSError:
            return
        time.sleep(interval)


def read_all(sock, timeout=CLIENT_TIMEOUT_SECONDS):
    sock.settimeout(timeout)
    data = b""
    while True:
        try:
            chunk = sock.recv(65536)
        except ConnectionResetError:
            return data + b"<RESET>"
        if not chunk:
            return data
        data += chunk


def test_trickling_head_gets_408_and_costs_no_child(start_server):
    server = start_server("tests.apps:hello", "--header-timeout", SLOW_HEADER_TIMEOUT)
    sock = server.connect()
    stop = threading.Event()
    head = b"GET / HTTP/1.1\r\nHost: example.com\r\nX-Slow: " + b"a" * 200 + b"\r\n\r\n"
    thread = threading.Thread(target=trickle, args=(sock, head, TRICKLE_INTERVAL_SECONDS, stop))
    thread.start()
    try:
        started = time.monotonic()
        children_seen = 0
        while time.monotonic() - started < 0.8:
            children_seen = max(children_seen, len(server.children()))
            time.sleep(0.05)
        answer = read_all(sock)
    finally:
        stop.set()
        thread.join(10)
        sock.close()
    assert children_seen == 0
    assert answer.startswith(b"HTTP/1.1 408 "), answer[:100]
    assert b"\r\nConnection: close\r\n" in answer


def test_silent_connection_costs_no_child_and_others_are_served(start_server):
    server = start_server("tests.apps:hello", "--header-timeout", SLOW_HEADER_TIMEOUT)
    silent = [server.connect() for _ in range(SLOW_CONNECTIONS)]
    stop = threading.Event()
    trickling = [server.connect() for _ in range(SLOW_CONNECTIONS)]
    threads = [threading.Thread(target=trickle, args=(s, b"GET / HTTP/1.1\r\n" + b"X" * 100,
                                                      TRICKLE_INTERVAL_SECONDS, stop))
               for s in trickling]
    for thread in threads:
        thread.start()
    try:
        deadline = time.monotonic() + 0.5
        while time.monotonic() < deadline:
            assert server.children() == [], "a silent or trickling connection holds a child"
            time.sleep(0.05)
        statuses = [http_get(server, "/")[0] for _ in range(10)]
        assert statuses == [200] * 10
    finally:
        stop.set()
        for thread in threads:
            thread.join(10)
        for sock in silent + trickling:
            sock.close()
    assert wait_children(server, 0) == 0


def test_max_children_per_ip_answers_503(start_server):
    server = start_server("tests.apps:slow", "--max-children-per-ip", "1")
    busy = server.connect()
    busy.sendall(b"GET /?s=1.5 HTTP/1.1\r\nHost: example.com\r\n\r\n")
    try:
        assert wait_children(server, 1) == 1
        second = server.connect()
        second.sendall(b"GET / HTTP/1.1\r\nHost: example.com\r\n\r\n")
        answer = read_all(second)
        second.close()
        assert answer.startswith(b"HTTP/1.1 503 ")
        assert b"\r\nConnection: close\r\n" in answer
        assert read_all(busy).startswith(b"HTTP/1.1 200 ")
    finally:
        busy.close()


TCP_STATE_CLOSE, TCP_STATE_CLOSE_WAIT = 7, 8   # tcpi_state, the first byte of TCP_INFO
BODY_IN_BUFFER = 90 * 1024   # more than one recv() reads, less than loopback buffers unread


def tcp_state(sock):
    return sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_INFO, 1)[0]


def test_no_free_child_answers_503_after_reading_the_body_so_the_close_is_clean(start_server):
    """A head completed while every child slot is busy waits --header-timeout
    for one, then gets 503 from the parent.  The body the client sent with it
    is read before the close: a close with unread data would reset the
    connection, and a reset can destroy the 503 on its way."""
    server = start_server("tests.apps:slow", "--max-children", "1", "--header-timeout", "1")
    waiting = server.connect()
    waiting.sendall(b"POST / HTTP/1.1\r\nHost: example.com\r\n")   # parked: no child yet
    time.sleep(0.3)
    busy = server.connect()
    busy.sendall(b"GET /?s=4 HTTP/1.1\r\nHost: example.com\r\n\r\n")
    try:
        assert wait_children(server, 1) == 1          # the only slot is taken
        waiting.sendall(b"Content-Length: %d\r\n\r\n" % BODY_IN_BUFFER)
        time.sleep(0.3)   # the parent reads the head's end, then stops polling it
        waiting.sendall(b"x" * BODY_IN_BUFFER)   # so all of the body waits unread
        answer = read_all(waiting)
        assert answer.startswith(b"HTTP/1.1 503 "), answer[:200]
        # A FIN only: the connection stays half-closed, never reset.
        deadline = time.monotonic() + 0.5
        while time.monotonic() < deadline:
            assert tcp_state(waiting) == TCP_STATE_CLOSE_WAIT, "the parent reset the connection"
            time.sleep(0.02)
        assert "no free child" in server.log_text()
        assert read_all(busy).startswith(b"HTTP/1.1 200 ")
    finally:
        waiting.close()
        busy.close()


def test_max_children_per_ip_counts_connections_held_by_the_accept_filter(start_server):
    """Two trickling heads from 127.0.0.1 hold no child, but they fill the
    address's share: a third connection gets 503 until they are gone."""
    server = start_server("tests.apps:hello", "--max-children-per-ip", "2")
    partial = [server.connect() for _ in range(2)]
    try:
        for sock in partial:
            sock.sendall(b"GET / HTTP/1.1\r\nHost: exa")
        time.sleep(0.3)   # let the parent park both
        assert server.children() == []
        third = server.connect()
        third.sendall(b"GET / HTTP/1.1\r\nHost: example.com\r\n\r\n")
        assert read_all(third).startswith(b"HTTP/1.1 503 ")
        third.close()
    finally:
        for sock in partial:
            sock.close()
    deadline = time.monotonic() + 5
    while http_get(server, "/")[0] != 200 and time.monotonic() < deadline:
        time.sleep(0.05)
    assert http_get(server, "/")[0] == 200


def test_fork_rate_is_bounded(start_server):
    """--max-fork-rate 2: a token bucket of 2, so 6 forks need at least 2 s."""
    server = start_server("tests.apps:hello", "--max-fork-rate", "2")
    started = time.monotonic()
    statuses = [http_get(server, "/")[0] for _ in range(6)]
    assert statuses == [200] * 6
    assert time.monotonic() - started >= 1.5
