"""The tricks' switches and version gates (forkparts.accel.configure), and the
fast accept: a socket.socket like Listener.accept()'s, installed only on our
own Listener instances."""
import socket
from types import SimpleNamespace

import pytest

from forkparts import accel
from forkparts.cli import build_parser
from forkparts.listeners import Listener, bind_inet

BACKLOG = 16
SWITCHES = {"huge_pages": "--no-huge-pages", "allocator_fill": "--no-allocator-fill",
            "fast_accept": "--no-fast-accept",
            "raw_signals": "--no-raw-signals"}


class RecordingLog:
    def __init__(self):
        self.lines = []

    def info(self, line):
        self.lines.append(line)


@pytest.fixture
def listener():
    listener = bind_inet(("127.0.0.1", 0), BACKLOG, 0)
    yield listener
    listener.close()


@pytest.fixture(autouse=True)
def tricks_back_on():
    yield
    accel.enabled.update(dict.fromkeys(accel.TRICKS, True))


def test_every_trick_is_on_by_default_and_each_switch_turns_one_off():
    parser = build_parser()
    defaults = parser.parse_args(["app"])
    accel.configure(defaults, RecordingLog(), [])
    assert accel.enabled == dict.fromkeys(SWITCHES, True)
    for name, switch in SWITCHES.items():
        opts = parser.parse_args(["app", switch])
        accel.configure(opts, RecordingLog(), [])
        assert [n for n in SWITCHES if not accel.enabled[n]] == [name]
    assert parser.parse_args(["app", "--no-fast-accept", "--fast-accept"]).fast_accept is True


def test_a_version_outside_a_gate_turns_the_trick_off_with_one_info_line(listener):
    opts = SimpleNamespace(**dict.fromkeys(SWITCHES, True))
    log = RecordingLog()
    accel.configure(opts, log, [listener], version=(3, 99))
    assert accel.enabled == dict.fromkeys(SWITCHES, False) and opts.huge_pages is False
    assert len(log.lines) == len(SWITCHES)
    assert all("off on Python 3.99" in line for line in log.lines), log.lines
    assert vars(listener)["accept"] == listener.sock.accept    # the public accept() stays
    assert accel.fill_allocator_holes() == []


def test_switched_off_tricks_log_nothing_and_stay_off(listener):
    opts = SimpleNamespace(huge_pages=True, allocator_fill=False,
                           fast_accept=False, raw_signals=False)
    log = RecordingLog()
    accel.configure(opts, log, [listener])
    assert log.lines == []
    assert accel.enabled == dict(huge_pages=True, allocator_fill=False,
                                 fast_accept=False, raw_signals=False)
    assert vars(listener)["accept"] == listener.sock.accept     # the public socket API


def test_fast_accept_is_installed_on_our_listener_only(listener):
    opts = SimpleNamespace(**dict.fromkeys(SWITCHES, True))
    accel.configure(opts, RecordingLog(), [listener])
    assert vars(listener)["accept"].__func__ is accel.fast_accept
    assert "accept" not in vars(Listener)                     # no method shadowed
    assert socket.socket.accept.__qualname__ == "socket.accept"   # and socket.py's


def test_fast_accept_gives_the_same_kind_of_socket_as_the_public_accept(listener):
    address = listener.sock.getsockname()[:2]
    made = []
    for accept in (listener.accept, lambda: accel.fast_accept(listener)):
        client = socket.create_connection(address)
        sock, addr = accept()
        made.append((type(sock), sock.family, sock.type, sock.gettimeout(),
                     addr == client.getsockname()))
        client.sendall(b"ping")
        assert sock.recv(4) == b"ping"
        sock.close()
        assert sock.fileno() == -1          # closed through socket.py, fd released
        client.close()
    assert made[0] == made[1] == (socket.socket, socket.AF_INET, socket.SOCK_STREAM, None, True)


def test_raw_signals_are_the_c_functions_and_the_switch_gives_signal_pys():
    import _signal
    import signal
    assert accel.signal_calls() == (_signal.signal, _signal.pthread_sigmask)
    accel.configure(build_parser().parse_args(["app", "--no-raw-signals"]), RecordingLog(), [])
    assert accel.signal_calls() == (signal.signal, signal.pthread_sigmask)
