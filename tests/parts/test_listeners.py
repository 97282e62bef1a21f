"""TCP_DEFER_ACCEPT on Linux listeners (issue 5): a client that connects and
sends nothing costs no accept and no fork until the kernel gives up waiting."""
import socket

import pytest

from forkparts.listeners import bind_inet

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
