"""Listeners: TCP_DEFER_ACCEPT on Linux (issue 5: a client that connects and
sends nothing costs no accept and no fork until the kernel gives up waiting),
and the mode of a unix socket file (issue 16: --umask 007 gives 0660, as
docs/deploy.md says), and how a stop ends a listener that children just
forked still hold (a reset there cost a proxy's POST: nginx answered 502)."""
import os
import socket
import stat

import pytest

from forkparts.listeners import adopt_fd, bind_inet, bind_unix

HEADER_TIMEOUT_SECONDS = 10.0
BACKLOG = 16


@pytest.mark.skipif(not hasattr(socket, "TCP_DEFER_ACCEPT"), reason="Linux only")
def test_tcp_listener_defers_accept_until_data_arrives():
    listener = bind_inet(("127.0.0.1", 0), BACKLOG, HEADER_TIMEOUT_SECONDS)
    try:
        # The kernel rounds the seconds to its SYN-ACK retransmission steps.
        assert listener.sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_DEFER_ACCEPT) > 0
        client = socket.create_connection(listener.sock.getsockname()[:2], timeout=5)
        try:
            listener.sock.settimeout(0.3)
            with pytest.raises(socket.timeout):
                listener.sock.accept()           # connected, silent: not accepted
            client.sendall(b"G")
            listener.sock.settimeout(5)
            accepted, _ = listener.sock.accept()  # data arrived: accepted at once
            assert accepted.recv(1) == b"G"
            accepted.close()
        finally:
            client.close()
    finally:
        listener.close()


def test_listener_accept_returns_a_socket_object_and_the_peer_address():
    listener = bind_inet(("127.0.0.1", 0), BACKLOG, 0)
    client = socket.create_connection(listener.sock.getsockname()[:2])
    try:
        sock, addr = listener.accept()
        with sock:
            assert type(sock) is socket.socket and addr == client.getsockname()
            client.sendall(b"ping")
            assert sock.recv(4) == b"ping"
    finally:
        client.close()
        listener.close()


UMASK_MODES = [(0o007, 0o660), (0o022, 0o644), (0o117, 0o660), (0o077, 0o600), (0o000, 0o666)]


@pytest.mark.parametrize("umask,mode", UMASK_MODES,
                         ids=["umask-%03o-mode-%04o" % pair for pair in UMASK_MODES])
def test_unix_socket_mode_is_0666_less_the_umask_as_for_any_file(tmp_path, umask, mode):
    path = str(tmp_path / "app.sock")
    listener = bind_unix(path, BACKLOG, umask)
    try:
        info = os.stat(path)
        assert stat.S_ISSOCK(info.st_mode) and oct(stat.S_IMODE(info.st_mode)) == oct(mode)
        client = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        client.connect(path)                      # listening once the mode is set
        client.close()
    finally:
        listener.close()
    assert not os.path.exists(path)


SYN_RETRY_WAIT_SECONDS = 0.3   # under the first SYN retransmission (1 s): a dropped SYN


def connect_outcome(family, address):
    """"connected", "refused", or "no answer" (the SYN was dropped)."""
    client = socket.socket(family)
    client.settimeout(SYN_RETRY_WAIT_SECONDS)
    try:
        client.connect(address)
        return "connected"
    except ConnectionRefusedError:
        return "refused"
    except socket.timeout:
        return "no answer"
    finally:
        client.close()


def test_a_closed_listener_refuses_though_a_just_forked_child_holds_a_copy():
    # The copy: a child forked just before the stop closes it only once it
    # runs.  Before, the socket listened on, and the copy's close reset
    # whatever the kernel had queued meanwhile, requests sent.
    listener = bind_inet(("127.0.0.1", 0), BACKLOG, 0)
    address = listener.sock.getsockname()
    childs_copy = os.dup(listener.fd)
    try:
        listener.close()
        assert connect_outcome(socket.AF_INET, address) == "refused"
    finally:
        os.close(childs_copy)


@pytest.mark.parametrize("family", ["tcp", "unix"])
def test_refuse_new_lets_the_queue_be_taken_and_no_connection_join_it(tmp_path, family):
    if family == "tcp":
        listener = bind_inet(("127.0.0.1", 0), BACKLOG, 0)
        address, kind, late = listener.sock.getsockname(), socket.AF_INET, "no answer"
    else:
        address = str(tmp_path / "app.sock")
        listener, kind, late = bind_unix(address, BACKLOG, 0o077), socket.AF_UNIX, "refused"
    queued = socket.socket(kind)
    queued.connect(address)
    queued.sendall(b"POST")
    try:
        listener.refuse_new()
        assert connect_outcome(kind, address) == late   # TCP: its SYN retried, then refused
        listener.sock.settimeout(5)
        accepted, _ = listener.sock.accept()
        with accepted:
            assert accepted.recv(4) == b"POST"
        listener.close()
        if kind == socket.AF_INET:   # a unix socket's file is gone
            assert connect_outcome(kind, address) == "refused"
    finally:
        queued.close()
        listener.close()


def test_a_socket_not_bound_here_is_left_listening_for_its_owner():
    # fd://, systemd's socket, an upgrade's: closing ours leaves theirs as it was.
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    sock.listen(BACKLOG)
    owners_copy = os.dup(sock.fileno())
    listener = adopt_fd(sock.detach(), BACKLOG)
    address = listener.sock.getsockname()
    try:
        listener.refuse_new()
        listener.close()
        assert connect_outcome(socket.AF_INET, address) == "connected"
    finally:
        os.close(owners_copy)


@pytest.mark.skipif(not hasattr(socket, "TCP_DEFER_ACCEPT"), reason="Linux only")
def test_half_open_counts_a_connected_client_until_its_first_bytes(tmp_path):
    # With TCP_DEFER_ACCEPT the client's connect() returns while the kernel
    # still holds the connection half open: nothing to accept yet, and a stop
    # that shut the listener down then reset it when the request came.
    listener = bind_inet(("127.0.0.1", 0), BACKLOG, HEADER_TIMEOUT_SECONDS)
    other = bind_inet(("127.0.0.1", 0), BACKLOG, HEADER_TIMEOUT_SECONDS)
    unix = bind_unix(str(tmp_path / "app.sock"), BACKLOG, 0o077)
    try:
        assert listener.half_open() == 0
        clients = [socket.create_connection(listener.sock.getsockname()[:2], timeout=5)
                   for _ in range(2)]
        assert listener.half_open() == 2 and other.half_open() == 0
        clients[0].sendall(b"G")
        listener.sock.settimeout(5)
        accepted, _ = listener.sock.accept()
        accepted.close()
        assert listener.half_open() == 1
        unix_client = socket.socket(socket.AF_UNIX)
        unix_client.connect(str(tmp_path / "app.sock"))
        assert unix.half_open() == 0
        unix_client.close()
        for client in clients:
            client.close()
    finally:
        for each in (listener, other, unix):
            each.close()


@pytest.mark.skipif(not hasattr(socket, "TCP_DEFER_ACCEPT"), reason="Linux only")
def test_half_open_is_not_counted_on_a_socket_not_bound_here():
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    sock.listen(BACKLOG)
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_DEFER_ACCEPT, 5)
    listener = adopt_fd(sock.detach(), BACKLOG)
    try:
        client = socket.create_connection(listener.sock.getsockname()[:2], timeout=5)
        assert listener.half_open() == 0   # its owner's to stop, not ours
        client.close()
    finally:
        listener.close()


@pytest.mark.skipif(not hasattr(socket, "TCP_DEFER_ACCEPT"), reason="Linux only")
def test_half_open_counts_only_its_own_address_unless_bound_to_all():
    # Two listeners on one port (127.0.0.1 and 127.0.0.2, both loopback):
    # a stop must not wait on one for the other's connections; a wildcard
    # listener counts those to any of its addresses.
    one = bind_inet(("127.0.0.1", 0), BACKLOG, HEADER_TIMEOUT_SECONDS)
    port = one.sock.getsockname()[1]
    two = bind_inet(("127.0.0.2", port), BACKLOG, HEADER_TIMEOUT_SECONDS)
    anywhere = bind_inet(("0.0.0.0", 0), BACKLOG, HEADER_TIMEOUT_SECONDS)
    clients = []
    try:
        clients.append(socket.create_connection(("127.0.0.2", port), timeout=5))
        assert (one.half_open(), two.half_open()) == (0, 1)
        for host in ("127.0.0.1", "127.0.0.3"):
            clients.append(socket.create_connection((host, anywhere.sock.getsockname()[1]),
                                                    timeout=5))
        assert anywhere.half_open() == 2 and one.half_open() == 0
    finally:
        for client in clients:
            client.close()
        for listener in (one, two, anywhere):
            listener.close()
