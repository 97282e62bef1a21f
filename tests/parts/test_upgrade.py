"""forkparts.upgrade: which inherited socket a --bind address takes, the
environment a SIGUSR2 upgrade passes, and when an upgrade is refused."""
import os
import signal
import socket

import pytest

from forkparts.cli import UsageError
from forkparts.listeners import Listener
from forkparts.upgrade import (FDS_ENV, OLD_PID_ENV, OWNED_FDS_ENV, READY_BYTE, READY_FD_ENV,
                               Inherited, Upgrade, describe_exit, without_inspect)


class Log:
    def __init__(self):
        self.lines = []

    def info(self, line):
        self.lines.append(line)

    warning = error = info


@pytest.fixture
def tcp():
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    sock.listen(1)
    yield Listener(sock, "http://127.0.0.1:%d" % sock.getsockname()[1])
    sock.close()


def test_an_inet_bind_takes_the_socket_of_its_host_and_port(tcp):
    port = tcp.sock.getsockname()[1]
    inherited = Inherited([tcp])
    assert inherited.take("127.0.0.1:%d" % (port + 1 if port < 65535 else port - 1)) is None
    assert inherited.take("127.0.0.2:%d" % port) is None
    assert inherited.take("127.0.0.1:%d" % port) is tcp
    assert inherited.take("127.0.0.1:%d" % port) is None      # taken once


def test_port_0_takes_any_port_of_its_host_and_fd_takes_its_number(tcp):
    assert Inherited([tcp]).take("127.0.0.1:0") is tcp
    assert Inherited([tcp]).take("fd://%d" % tcp.fd) is tcp
    assert Inherited([tcp]).take("unix:/nowhere") is None


def test_a_unix_bind_takes_its_path_and_owns_the_file_only_once_ready(tmp_path):
    path = str(tmp_path / "s.sock")
    sock = socket.socket(socket.AF_UNIX)
    sock.bind(path)
    listener = Listener(sock, "unix:" + path)
    upgrade = Upgrade(None, Log(), {}, Inherited([listener]))
    assert upgrade.inherited.take("unix:" + path) is listener
    listener.close()                       # a failure before ready: the file stays
    assert os.path.exists(path)
    upgrade.tell_ready()
    assert listener.unix_path == path      # now ours: removed at our exit


def test_once_ready_the_new_parent_owns_what_the_old_one_had_bound(tcp):
    # Owned, its stop shuts the socket down (Listener.stop_listening) and
    # waits for connections half open, as the old parent's would; an fd://
    # socket stays its owner's.  Not before ready: the old parent still serves.
    theirs = socket.socket()
    theirs.bind(("127.0.0.1", 0))
    theirs.listen(1)
    passed = Listener(theirs, "fd://%d" % theirs.fileno())
    try:
        upgrade = Upgrade(None, Log(), {}, Inherited([tcp, passed], owned_fds=[tcp.fd]))
        assert upgrade.inherited.take("127.0.0.1:0") is tcp
        assert upgrade.inherited.take("fd://%d" % passed.fd) is passed
        assert not tcp.owned and not passed.owned
        upgrade.tell_ready()
        assert tcp.owned and not passed.owned
    finally:
        theirs.close()


def test_unused_inherited_sockets_are_closed_and_reported(tcp):
    r, w = os.pipe()
    try:
        inherited = Inherited([tcp], ready_fd=w, old_pid=12345)
        inherited.close_unused()
        log = Log()
        inherited.report(log)
        assert tcp.sock.fileno() == -1
        assert log.lines == ["upgrade: started by parent 12345",
                             "no --bind names the inherited %s any more; closed it"
                             % tcp.description]
        # A HUP's exec of that parent carries the old pid (no ready pipe): no
        # second "started by" line.
        log = Log()
        Inherited([], old_pid=12345).report(log)
        assert log.lines == []
    finally:
        os.close(r)
        os.close(w)


def test_the_environment_is_read_once_and_removed(monkeypatch, tcp):
    r, w = os.pipe()
    monkeypatch.setenv(FDS_ENV, str(tcp.fd))
    monkeypatch.setenv(READY_FD_ENV, str(w))
    monkeypatch.setenv(OLD_PID_ENV, "4242")
    monkeypatch.setenv(OWNED_FDS_ENV, str(tcp.fd))
    inherited = Inherited.from_environ(16)
    try:
        assert [l.description for l in inherited.sockets] == [tcp.description]
        assert (inherited.ready_fd, inherited.old_pid) == (w, 4242)
        assert inherited.owned_fds == {tcp.fd}
        assert not {FDS_ENV, READY_FD_ENV, OLD_PID_ENV, OWNED_FDS_ENV} & set(os.environ)
        assert not os.get_inheritable(tcp.fd)
    finally:
        inherited.sockets[0].sock.detach()   # the fixture closes it
        os.close(r)
        os.close(w)


BAD_NUMBERS = ["x", "3,", "-1", "٣"]


@pytest.mark.parametrize("name, value", [
    (name, value) for name in (FDS_ENV, OWNED_FDS_ENV, READY_FD_ENV, OLD_PID_ENV)
    for value in BAD_NUMBERS] + [(READY_FD_ENV, "3,4"), (OLD_PID_ENV, "3,4")])
def test_a_bad_number_is_a_usage_error_naming_its_variable(monkeypatch, name, value):
    monkeypatch.setenv(name, value)
    with pytest.raises(UsageError, match="^%s=" % name):
        Inherited.from_environ(16)


def test_no_environment_means_nothing_inherited():
    inherited = Inherited.from_environ(16)
    assert (inherited.sockets, inherited.ready_fd, inherited.old_pid) == ([], None, 0)


def test_usr2_is_refused_while_stopping_or_while_an_upgrade_is_under_way():
    upgrade = Upgrade(None, Log(), {})
    assert upgrade.refusal(stopping="graceful") == "the server is stopping"
    assert upgrade.refusal(stopping=None) is None
    upgrade.child = 99
    assert upgrade.refusal(None) == "an upgrade is already under way (new parent 99)"
    upgrade = Upgrade(None, Log(), {}, Inherited(old_pid=os.getppid()))
    assert upgrade.refusal(None) == "the previous parent %d is still draining" % os.getppid()


def test_describe_exit_names_the_parents_exit_status():
    assert describe_exit(3 << 8, {3: "the app could not be loaded"}) == (
        "exited with status 3 (the app could not be loaded)")
    assert describe_exit(signal.SIGKILL, {}) == "was killed by SIGKILL"


def test_the_ready_pipe_leaves_the_poll_set_before_its_number_is_freed():
    # Closed first, its number could be reused at once by a connection the
    # graceful stop takes from the backlog, which unregistering would unwatch.
    r, w = os.pipe()
    upgrade = Upgrade(None, Log(), {})
    upgrade.child, upgrade.ready_fd = 77, r
    os.write(w, READY_BYTE)
    still_open = []
    assert upgrade.read_ready(lambda fd: still_open.append(os.fstat(fd) is not None))
    assert still_open == [True] and upgrade.ready_fd is None and upgrade.handed_over
    os.close(w)


def test_eof_on_the_ready_pipe_is_not_ready():
    r, w = os.pipe()
    os.close(w)
    upgrade = Upgrade(None, Log(), {})
    upgrade.child, upgrade.ready_fd = 77, r
    assert not upgrade.read_ready(lambda fd: None)
    assert upgrade.ready_fd is None and not upgrade.handed_over


def test_a_fork_that_fails_changes_nothing_and_says_so(monkeypatch, tmp_path):
    import errno
    pidfile = tmp_path / "fs.pid"
    pidfile.write_text("%d\n" % os.getpid())

    def no_fork():
        raise OSError(errno.EAGAIN, os.strerror(errno.EAGAIN))
    monkeypatch.setattr(os, "fork", no_fork)
    log = Log()
    upgrade = Upgrade(str(pidfile), log, {})
    fds_before = len(os.listdir("/proc/self/fd"))
    assert upgrade.start([], (), (signal.SIGUSR2,), lambda: None) is None
    assert pidfile.read_text() == "%d\n" % os.getpid() and not os.path.exists(
        str(pidfile) + ".oldbin")
    assert log.lines == ["SIGUSR2: upgrade failed: fork(): %s; still serving"
                         % os.strerror(errno.EAGAIN)]
    assert len(os.listdir("/proc/self/fd")) == fds_before and upgrade.child == 0


@pytest.mark.parametrize("args, expected", [
    (["-i", "forkserver.py", "app:app", "-i"], ["forkserver.py", "app:app", "-i"]),
    (["-ui", "-m", "forkserver", "app:app"], ["-u", "-m", "forkserver", "app:app"]),
    (["-iu", "-mforkserver"], ["-u", "-mforkserver"]),
    (["-W", "ignore", "-i", "-X", "dev", "s.py"], ["-W", "ignore", "-X", "dev", "s.py"]),
    (["-iWi", "-Xi=1", "s.py"], ["-Wi", "-Xi=1", "s.py"]),   # a value's i is no flag
    (["-iW", "i", "s.py"], ["-W", "i", "s.py"]),
    (["-ic", "main()", "-i"], ["-c", "main()", "-i"]),
    (["--check-hash-based-pycs", "always", "-i", "-"], ["--check-hash-based-pycs", "always", "-"]),
    (["-O", "-O", "forkserver.py"], ["-O", "-O", "forkserver.py"]),
])
def test_the_command_line_again_is_the_interpreters_without_i(args, expected):
    """-i would turn a failed start of the new code into a prompt that exits
    0 on a closed stdin: a HUP's trial of broken code passed."""
    assert without_inspect(args) == expected
