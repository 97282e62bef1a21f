"""Shared fixtures: start forkserver under pexpect, stop it by pid, check zombies."""
import functools
import os
import re
import signal
import socket
import subprocess
import sys
import time

import pexpect
import psutil
import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
FORKSERVER = os.path.join(ROOT, "forkserver.py")
# Up to the line's end, so a partial read cannot cut an address and all are seen.
# .ci/run sets this: there, a missing prerequisite (nginx, root, IPv6 loopback,
# setproctitle) fails the test instead of skipping it, so CI never passes by
# silently not checking.
IN_CI = os.environ.get("FORKSERVER_CI") == "1"
READY_RE = re.compile(rb"forkserver ready: pid (\d+) listening on (\S+(?: \S+)*)\r?\n")


class ServerProcess:
    """A forkserver started by a test.  Logs go to files so nobody must read the pty."""

    def __init__(self, args, tmp_path, cwd=ROOT, env=None, timeout=20, extra_env=None,
                 default_bind=True, log_files=True, python_args=()):
        self.error_log = str(tmp_path / "error.log")
        self.access_log = str(tmp_path / "access.log")
        argv = [FORKSERVER] + list(args)
        # log_files=False: the log files come from a --config file.
        if "--error-log" not in args and log_files:
            argv += ["--error-log", self.error_log]
        if "--access-log" not in args and "--no-access-log" not in args and log_files:
            argv += ["--access-log", self.access_log]
        # default_bind=False: the addresses come from a --config file or LISTEN_FDS.
        if default_bind and not any(a in ("--bind", "-b") or a.startswith("--bind=")
                                    for a in args):
            argv += ["--bind", "127.0.0.1:0"]
        run_env = dict(env if env is not None else os.environ)
        run_env["PYTHONUNBUFFERED"] = "1"
        run_env.update(extra_env or {})
        self.output_file = open(str(tmp_path / "pty.log"), "wb")
        self.proc = pexpect.spawn(sys.executable, list(python_args) + argv, cwd=cwd, env=run_env,
                                  timeout=timeout, logfile=self.output_file)
        self.proc.expect(READY_RE)
        self.pid = int(self.proc.match.group(1))
        self.addresses = self.proc.match.group(2).decode().split()
        self.address = self.addresses[0]
        self.host, self.port = None, None
        if self.address.startswith("http://"):
            host, _, port = self.address[7:].rpartition(":")
            self.host, self.port = host.strip("[]"), int(port)
        self.ps = psutil.Process(self.pid)

    @property
    def url(self):
        return "http://%s:%d" % (self.host, self.port)

    def connect(self, timeout=10):
        return socket.create_connection((self.host, self.port), timeout=timeout)

    def children(self):
        return children_of(self.pid)

    def log_text(self):
        with open(self.error_log, errors="replace") as f:
            return f.read()

    def access_text(self):
        with open(self.access_log, errors="replace") as f:
            return f.read()

    def signal(self, sig):
        os.kill(self.pid, sig)

    def wait_exit(self, timeout=40):
        """Wait for the server to exit; return its exit status."""
        deadline = time.monotonic() + timeout
        while self.proc.isalive() and time.monotonic() < deadline:
            try:
                self.proc.expect(pexpect.EOF, timeout=0.2)
            except pexpect.TIMEOUT:
                pass
        if self.proc.isalive():
            raise AssertionError("server %d did not exit within %ss" % (self.pid, timeout))
        self.proc.close()
        return self.proc.exitstatus if self.proc.exitstatus is not None else -self.proc.signalstatus

    def stop(self, timeout=40):
        """SIGTERM (pexpect's terminate() sends SIGHUP first, which means reload)."""
        if self.proc.isalive():
            try:
                self.signal(signal.SIGTERM)
            except ProcessLookupError:
                pass
        return self.wait_exit(timeout)

    def kill_everything(self):
        """Last-resort cleanup: SIGKILL the server and every descendant we started."""
        kill_tree(self.pid)
        try:
            self.proc.close(force=True)
        except Exception:
            pass
        self.output_file.close()


def children_of(pid, recursive=False):
    """The processes whose parent is ``pid`` (and their descendants if
    ``recursive``), found by parent pid alone.

    Not psutil's Process.children(): it also drops a child whose start time
    looks older than its parent's, a guard against pid reuse that misfires on
    this VM, where start times are derived from a boot time that jitters.  A
    test saw [] from it for seconds while ps listed three children, which
    would also hide zombies from zombies_of()."""
    by_parent = {}
    for proc in psutil.process_iter(["ppid"]):
        by_parent.setdefault(proc.info["ppid"], []).append(proc)
    found, todo = [], [pid]
    while todo:
        for proc in by_parent.get(todo.pop(), []):
            found.append(proc)
            if recursive:
                todo.append(proc.pid)
    return found


def kill_tree(pid):
    """SIGKILL a process we started and all its descendants, then reap them."""
    try:
        root = psutil.Process(pid)
    except psutil.NoSuchProcess:
        return
    procs = children_of(pid, recursive=True) + [root]
    for proc in procs:
        try:
            proc.kill()
        except psutil.NoSuchProcess:
            pass
    deadline = time.monotonic() + 5
    for proc in procs:
        while not dead_or_reaped(proc) and time.monotonic() < deadline:
            time.sleep(0.01)


def dead_or_reaped(proc):
    """Gone, or a zombie: reaped here if it is ours.  Another's zombie is dead
    all the same; its reaping is its parent's, or PID 1's, which on some
    machines takes a second or two (psutil.wait_procs waited for that)."""
    try:
        if proc.status() != psutil.STATUS_ZOMBIE:
            return False
        proc.wait(0)
    except psutil.NoSuchProcess:
        pass
    except psutil.TimeoutExpired:
        pass
    return True


def zombies_of(ps):
    zombies = []
    for child in children_of(ps.pid):
        try:
            if child.status() == psutil.STATUS_ZOMBIE:
                zombies.append(child)
        except psutil.NoSuchProcess:
            pass   # reaped between the listing and the look
    return zombies


def wait_no_zombies(server, timeout=3.0):
    """Poll with a deadline (a single snapshot races the reaper)."""
    deadline = time.monotonic() + timeout
    while True:
        zombies = zombies_of(server.ps)
        if not zombies or time.monotonic() > deadline:
            break
        time.sleep(0.02)
    assert not zombies, "zombie children: %s" % [z.pid for z in zombies]


def wait_children(server, count, timeout=5.0):
    """How many children the server has: ``count`` as soon as it is seen, or
    the number at the deadline (one listing, never a second one after it)."""
    deadline = time.monotonic() + timeout
    while True:
        seen = len(server.children())
        if seen == count or time.monotonic() >= deadline:
            return seen
        time.sleep(0.02)


def dead_pid():
    """A pid no process has (a reaped child's; pid_max may be 32768 here, so
    a made-up number can be a live process)."""
    proc = subprocess.Popen(["true"])
    proc.wait()
    return proc.pid


@pytest.fixture
def start_server(tmp_path):
    """start_server("tests.apps:hello", "--timeout", "5") -> ServerProcess.

    Every server is checked for zombies and stopped with SIGTERM at teardown;
    whatever survives is killed, so a failing test leaves nothing behind.
    """
    started = []

    def start(app, *args, **kw):
        sub = tmp_path / ("server%d" % len(started))
        sub.mkdir()
        server = ServerProcess((app,) + args, sub, **kw)
        started.append(server)
        return server

    yield start
    errors = []
    for server in started:
        try:
            if server.proc.isalive():
                wait_no_zombies(server)
                server.stop()
        except Exception as exc:  # noqa: BLE001 - report after cleaning up
            errors.append(exc)
        finally:
            server.kill_everything()
    if errors:
        raise errors[0]


def http_get(server, path, method="GET", body=None, headers=None, timeout=10):
    import http.client
    conn = http.client.HTTPConnection(server.host, server.port, timeout=timeout)
    try:
        conn.request(method, path, body=body, headers=headers or {})
        resp = conn.getresponse()
        return resp.status, dict(resp.getheaders()), resp.read()
    finally:
        conn.close()


def unix_get(path, url="/", timeout=10):
    """GET over a unix socket: (status, body)."""
    import http.client
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    sock.settimeout(timeout)
    sock.connect(path)
    conn = http.client.HTTPConnection("localhost", timeout=timeout)
    conn.sock = sock
    try:
        conn.request("GET", url)
        resp = conn.getresponse()
        return resp.status, resp.read()
    finally:
        conn.close()


def raw_request(server, data, timeout=10, shutdown=False):
    """Send raw bytes, return everything the server sends until it closes."""
    with server.connect(timeout=timeout) as sock:
        sock.sendall(data)
        if shutdown:
            sock.shutdown(socket.SHUT_WR)
        return read_until_close(sock)


def read_until_close(sock):
    """Everything until EOF; a reset is marked with b"<RESET>" at the end."""
    chunks = []
    while True:
        try:
            chunk = sock.recv(65536)
        except ConnectionResetError:
            chunks.append(b"<RESET>")
            break
        if not chunk:
            break
        chunks.append(chunk)
    return b"".join(chunks)


@functools.lru_cache(maxsize=None)
def is_default_python():
    """The Python that `python` names on PATH (.ci/run's first, default pass)."""
    try:
        found = subprocess.run(["python", "-c", "import sys; print(sys.executable)"],
                               capture_output=True, text=True, timeout=30).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return False
    return bool(found) and os.path.realpath(found) == os.path.realpath(sys.executable)


def default_python_only(what):
    """A test of a tool (a measurement script, the lab guide's terminals) whose
    subject is not the interpreter: .ci/run runs it in its first pass only, on
    the default Python; the server's own tests run on every claimed version."""
    return pytest.mark.skipif(not is_default_python(),
                              reason="%s: run once, on the default Python" % what)


def needs(condition, reason):
    """Like skipif(not condition), but under CI (IN_CI) the test fails instead."""
    return pytest.mark.forkserver_needs(ok=bool(condition), reason=reason)


def pytest_configure(config):
    config.addinivalue_line("markers", "forkserver_needs(ok, reason): a prerequisite")
    # SIGINT and SIGQUIT as a terminal gives them.  A shell without job
    # control (a script's `cmd &`) starts a background command with both
    # ignored, and every server a test starts would inherit that: its
    # children then ignore them too, as they should (a child puts back what
    # the server was given).  The tests of Ctrl-C, SIGQUIT and worker_int are
    # about a server started from a terminal.
    signal.signal(signal.SIGINT, signal.default_int_handler)
    signal.signal(signal.SIGQUIT, signal.SIG_DFL)


def pytest_runtest_setup(item):
    for mark in item.iter_markers("forkserver_needs"):
        if not mark.kwargs["ok"]:
            if IN_CI:
                pytest.fail("CI must run this test, but: " + mark.kwargs["reason"])
            pytest.skip(mark.kwargs["reason"])


def wait_for(predicate, timeout=10.0, what="condition", poll=0.02):
    """The first true value of predicate(), polled every ``poll`` seconds;
    AssertionError naming ``what`` after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(poll)
    raise AssertionError("timed out after %.0fs waiting for %s" % (timeout, what))
