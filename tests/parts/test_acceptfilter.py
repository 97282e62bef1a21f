"""forkparts/acceptfilter.py: when a parked connection is ready for a child."""
import socket
import time
from types import SimpleNamespace

import pytest

from forkparts import acceptfilter
from forkparts.acceptfilter import (BODY_INCOMPLETE, HEAD_INCOMPLETE, PARENT_BODY_BYTES, READY,
                                    AcceptFilter, Parked, close_if_quiet, filter_body_bytes,
                                    max_pending_room, request_state)
from forkparts.listeners import bind_inet

LIMIT = 64 * 1024
GET = b"GET / HTTP/1.1\r\nHost: x\r\n\r\n"


def post(length, body=b"", extra=b""):
    return (b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: %s\r\n%s\r\n" % (length, extra)) + body


@pytest.mark.parametrize("data, state", [
    (b"", HEAD_INCOMPLETE),
    (b"GET / HTTP/1.1\r\nHost: x\r\n", HEAD_INCOMPLETE),
    (GET, READY),
    (post(b"5", b"ab"), BODY_INCOMPLETE),
    (post(b"5", b"abcde"), READY),
    (post(b"%d" % (PARENT_BODY_BYTES + 1)), READY),          # large: the child's
    (post(b"5", extra=b"Expect: 100-continue\r\n"), READY),  # nothing comes before 100
    (post(b"5", extra=b"Content-Length: 5\r\n"), READY),     # repeated: the child's 400
    (post(b"\xd9\xa1"), READY),                              # not ASCII digits
    (b"GET / HTTP/1.1\nHost: x\r\n\r\n", READY),              # bare LF: the child's 400
    (b"GET /" + b"a" * LIMIT, READY),                         # can never complete: 414/431
])
def test_request_state(data, state):
    assert request_state(data, LIMIT) == state


# An unfinished head with a line already over its limit: the filter held it
# until --header-timeout (a 408 ten seconds later); the child's answer, 414 or
# 431, is sent at once now, as on a kept-alive connection.
@pytest.mark.parametrize("data, state", [
    (b"GET /" + b"a" * 9000, READY),                                   # request line, unended
    (b"GET /" + b"a" * 9000 + b" HTTP/1.1\r\nHost: h\r\n", READY),     # request line, ended
    (b"GET / HTTP/1.1\r\nHost: h\r\nX: " + b"a" * 9000, READY),       # a field, unended
    (b"GET / HTTP/1.1\r\nX: " + b"a" * 9000 + b"\r\nHost: h\r\n", READY),
    (b"GET /" + b"a" * 8000 + b" HTTP/1.1\r\nX: " + b"a" * 8000, HEAD_INCOMPLETE),
    (b"GET / HTTP/1.1\r\n" + b"X: v\r\n" * 101, READY),                  # too many fields
    (b"GET / HTTP/1.1\r\n" + b"X: v\r\n" * 100, HEAD_INCOMPLETE),
])
def test_a_line_over_its_limit_is_ready_before_the_head_ends(data, state):
    from forkparts.http11 import Limits
    limits = Limits(request_line=8190, fields=100, field=8190)
    assert request_state(data, LIMIT, True, limits) == state


def test_without_a_body_rate_a_complete_head_is_ready():
    assert request_state(post(b"5", b"ab"), LIMIT, bodies=False) == READY


def test_filter_body_bytes_reads_only_a_plain_small_length():
    data = post(b" 7 ")
    assert filter_body_bytes(data, len(data)) == 7
    chunked = b"POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\nContent-Length: 3\r\n\r\n"
    assert filter_body_bytes(chunked, len(chunked)) == 0


def test_a_trickled_body_gets_a_grace_then_the_minimum_rate():
    parked = Parked(None, None, bytearray(post(b"1000")), 0.0, 10.0)
    parked.body_progress(now=5.0, grace=10.0, rate=500.0)
    assert parked.deadline == 15.0
    parked.data += b"x" * 1000
    parked.body_progress(now=6.0, grace=10.0, rate=500.0)
    assert parked.deadline == 17.0   # 1000 bytes at 500 B/s: 2 s more, from the head's time


def test_max_pending_leaves_room_for_the_rest_of_the_descriptors():
    import resource
    soft, _ = resource.getrlimit(resource.RLIMIT_NOFILE)
    log = SimpleNamespace(warnings=[])
    log.warning = log.warnings.append
    assert max_pending_room(None, log) == min(1024, soft - 64)
    assert max_pending_room(soft * 2, log) == soft - 64 and log.warnings


def test_close_if_quiet_keeps_a_connection_whose_client_began_a_request():
    ours, theirs = socket.socketpair()
    theirs.sendall(b"G")
    assert not close_if_quiet(ours) and ours.fileno() != -1
    ours.recv(1)
    assert close_if_quiet(ours) and ours.fileno() == -1
    theirs.close()


def filter_for_test(may_fork=True):
    opts = SimpleNamespace(min_body_rate=500.0, max_pending=4, header_timeout=10.0,
                           keep_alive=0.0, limit_request_line=8190,
                           limit_request_fields=100, limit_request_field_size=8190)
    forked = []
    log = SimpleNamespace(warning=lambda *a: None, info=lambda *a: None,
                          limited=lambda *a: None)
    flt = AcceptFilter(opts, log, __import__("select").poll(), LIMIT, lambda: may_fork,
                       lambda sock, addr, data, at: forked.append(data), lambda addr, d: None)
    return flt, forked


def test_a_head_in_two_pieces_is_parked_then_forked_whole():
    flt, forked = filter_for_test()
    ours, theirs = socket.socketpair()
    theirs.sendall(GET[:10])
    assert flt.first_look(ours, ("127.0.0.1", 1), 0.0) is None and len(flt.parked) == 1
    theirs.sendall(GET[10:])
    flt.on_readable(ours.fileno())
    assert forked == [GET] and not flt.parked
    ours.close()
    theirs.close()


def test_the_full_filter_drops_the_oldest_with_503():
    flt, _ = filter_for_test()
    pairs = [socket.socketpair() for _ in range(5)]
    for i, (ours, theirs) in enumerate(pairs):
        flt.park(ours, ("127.0.0.1", i), b"", float(i), HEAD_INCOMPLETE)
    assert len(flt.parked) == 4
    assert pairs[0][1].recv(100).startswith(b"HTTP/1.1 503")
    flt.refuse_all()
    for ours, theirs in pairs:
        ours.close()
        theirs.close()


def filter_with_warnings():
    flt, _ = filter_for_test()
    warnings = []
    flt.log.warning = warnings.append
    return flt, warnings


@pytest.mark.skipif(not hasattr(socket, "TCP_DEFER_ACCEPT"), reason="Linux only")
def test_a_stop_keeps_a_listener_open_until_a_half_open_connection_sends():
    # The client's connect() has returned; its request is on its way.  Shut
    # down now, the listener would reset it (a proxy's POST: 502).
    flt, warnings = filter_with_warnings()
    listener = bind_inet(("127.0.0.1", 0), 16, 10.0)
    listener.sock.setblocking(False)   # as the server's are
    client = socket.create_connection(listener.sock.getsockname()[:2], timeout=5)
    try:
        assert flt.drain_backlog([listener], 16) == [listener] and not flt.parked
        client.sendall(GET)
        assert listener.pending(5000)                  # the kernel completes it now
        assert flt.unsettled([listener], 16) == [listener]   # taken; too soon to ask again
        assert len(flt.parked) == 1
        time.sleep(acceptfilter.HALF_OPEN_CHECK_SECONDS)
        assert flt.unsettled([listener], 16) == [] and not listener.owned
        (parked,) = flt.parked.values()
        assert parked.sock.recv(100) == GET            # taken whole, not reset
        assert not warnings
        flt.refuse_all()
        assert client.recv(100).startswith(b"HTTP/1.1 503")
    finally:
        client.close()
        listener.close()


@pytest.mark.skipif(not hasattr(socket, "TCP_DEFER_ACCEPT"), reason="Linux only")
def test_a_stop_waits_for_a_silent_connection_only_so_long(monkeypatch):
    monkeypatch.setattr(acceptfilter, "HALF_OPEN_PATIENCE_SECONDS", 0.0)
    flt, warnings = filter_with_warnings()
    listener = bind_inet(("127.0.0.1", 0), 16, 10.0)
    listener.sock.setblocking(False)   # as the server's are
    silent = [socket.create_connection(listener.sock.getsockname()[:2], timeout=5)
              for _ in range(2)]
    try:
        assert flt.drain_backlog([listener], 16) == [] and not listener.owned
        assert warnings == ["stopping: 2 connections to %s still half open (no request yet); "
                            "closing the listener resets them" % listener.description]
    finally:
        for client in silent:
            client.close()
        listener.close()


@pytest.mark.skipif(not hasattr(socket, "TCP_DEFER_ACCEPT"), reason="Linux only")
def test_while_a_stop_waits_the_kernel_is_asked_at_most_so_often(monkeypatch):
    asked = []
    flt, warnings = filter_with_warnings()
    listener = bind_inet(("127.0.0.1", 0), 16, 10.0)
    listener.sock.setblocking(False)
    monkeypatch.setattr(listener, "half_open", lambda: asked.append(1) or 1)
    try:
        assert flt.drain_backlog([listener], 16) == [listener] and len(asked) == 1
        assert flt.next_deadline() <= time.monotonic() + acceptfilter.HALF_OPEN_CHECK_SECONDS
        assert flt.unsettled([listener], 16) == [listener] and len(asked) == 1   # too soon
        flt.check_half_open_at = time.monotonic()
        assert flt.unsettled([listener], 16) == [listener] and len(asked) == 2
        assert flt.unsettled([listener], 16, wait=False) == [] and not listener.owned
        assert len(warnings) == 1 and "1 connection to" in warnings[0]
        assert flt.next_deadline() == acceptfilter.INFINITY   # nothing kept: no wake-up
    finally:
        listener.close()


def test_a_connection_parked_during_a_stop_gets_the_stops_grace():
    flt, _ = filter_for_test()
    now = time.monotonic()
    flt.stop(True, now + 30.0)
    head, body = socket.socketpair(), socket.socketpair()
    try:
        flt.park(head[0], ("127.0.0.1", 1), b"GET / HTTP/1.1\r\n", now, HEAD_INCOMPLETE)
        flt.park(body[0], ("127.0.0.1", 2), post(b"100", b"x"), now, BODY_INCOMPLETE)
        deadlines = {p.addr[1]: p.deadline for p in flt.parked.values()}
        assert deadlines[1] == now + acceptfilter.STOP_HEAD_GRACE_SECONDS   # not --header-timeout
        assert deadlines[2] <= now + 30.0
    finally:
        flt.refuse_all()
        for pair in (head, body):
            pair[1].close()
