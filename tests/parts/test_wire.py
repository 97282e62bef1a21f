"""forkparts.wire: the child's socket I/O."""
import socket

from forkparts.wire import close_socket


def test_close_socket_is_the_c_close_under_socket_close():
    # socket.SocketType names the C socket type that socket.socket extends; if
    # a Python release changed that, close_socket would no longer skip
    # socket.close()'s Python layers, and this says so.
    assert close_socket is socket.socket.__mro__[1].close


def test_close_socket_closes_the_descriptor():
    left, right = socket.socketpair()
    try:
        close_socket(left)
        assert left.fileno() == -1
        assert right.recv(1) == b""   # the peer sees the end
    finally:
        right.close()
