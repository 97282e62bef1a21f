"""Signals as a gunicorn operator sends them (issue 16, part 3): USR2's
zero-downtime upgrade, TTIN/TTOU, WINCH, and systemd's RELOADING=1/READY=1
around a HUP.  End to end through ``python forkserver.py``; processes
checked with psutil."""
import http.client
import importlib.util
import json
import os
import pathlib
import pwd
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from types import SimpleNamespace

import psutil
import pytest

import forkserver
from forkparts.admission import resize
from tests.apps_supervision import write_module
from tests.conftest import (FORKSERVER, READY_RE, ROOT, children_of, http_get, kill_tree,
                            needs, read_until_close, wait_for, zombies_of)

STRESS = os.path.join(ROOT, "scripts", "stress.py")
POLL_SECONDS = 0.02
START_SECONDS = 20.0          # a new parent on a shared 2-core machine
STOP_SECONDS = 30.0
HTTP_TIMEOUT_SECONDS = 10.0
NOTIFY_TIMEOUT_SECONDS = 10.0
# The load across a USR2: steady, bounded in time and count, loopback only.
LOAD_CLIENTS = 8
LOAD_SECONDS = 10.0
LOAD_MAX_CONNECTIONS = 20000
LOAD_MAX_SECONDS = 60.0
IMPORT_DELAY_SECONDS = 1.5    # a new parent whose app is slow to import
APP = "upapp:app"


class Detached:
    """forkserver started as a service manager starts it: its own session,
    no terminal (a session leader's terminal would hang up the new parent's
    process group when the old one exits: docs/operations.md), stdout and
    stderr to a file where every parent writes its ready line."""

    def __init__(self, tmp_path, args, env=None, python=sys.executable, root=ROOT, cwd=None,
                 access_log=False, python_args=()):
        self.out_path = str(tmp_path / "out.log")
        self.error_log = str(tmp_path / "error.log")
        self.pidfile = str(tmp_path / "forkserver.pid")
        self.proc = subprocess.Popen(
            [python] + list(python_args) + [os.path.join(root, "forkserver.py")] + list(args) + [
                "--error-log", self.error_log, "--pidfile", self.pidfile, "--bind",
                "127.0.0.1:0"] + ([] if access_log else ["--no-access-log"]),
            cwd=cwd or root, env=dict(env or os.environ, PYTHONUNBUFFERED="1"),
            stdout=open(self.out_path, "wb"), stderr=subprocess.STDOUT, start_new_session=True)
        self.pids = [self.proc.pid]
        try:
            self.pid, addresses = self.ready(1)
            self.port = int(next(a for a in addresses
                                 if a.startswith("http://")).rpartition(":")[2])
        except BaseException:   # nobody will call close(): leave nothing running
            self.close()
            raise

    def ready(self, count):
        """(pid, addresses) of the count-th ready line, waiting for it."""
        def nth():
            with open(self.out_path, "rb") as f:
                found = READY_RE.findall(f.read())
            return found[count - 1] if len(found) >= count else None
        pid, addresses = wait_for(nth, START_SECONDS, "ready line %d" % count)
        self.pids.append(int(pid))
        return int(pid), addresses.decode().split()

    def log_text(self):
        with open(self.error_log, errors="replace") as f:
            return f.read()

    def output(self):
        with open(self.out_path, errors="replace") as f:
            return f.read()

    def wait_log(self, text, timeout=START_SECONDS):
        return wait_for(lambda: text in self.log_text(), timeout, "%r in the error log" % text)

    def get_or_error(self, path="/"):
        try:
            return self.get(path)
        except OSError as exc:
            return repr(exc)

    def get(self, path="/"):
        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=HTTP_TIMEOUT_SECONDS)
        try:
            conn.request("GET", path)
            return conn.getresponse().read().decode()
        finally:
            conn.close()

    def pidfile_text(self, suffix=""):
        try:
            with open(self.pidfile + suffix) as f:
                return f.read().strip()
        except FileNotFoundError:
            return None

    def close(self):
        for pid in reversed(self.pids):
            kill_tree(pid)
        # A new parent whose ready line never came (a failing test) is in no
        # list: it is in the session the first parent leads.
        for proc in psutil.process_iter():
            try:
                if os.getsid(proc.pid) == self.proc.pid:
                    kill_tree(proc.pid)
            except (OSError, psutil.Error):
                pass
        if self.proc.poll() is None:
            self.proc.wait(STOP_SECONDS)


def start_versioned(tmp_path, *args, env=None):
    app_dir = tmp_path / "app"
    app_dir.mkdir()
    write_module(app_dir / "upapp.py", 1)
    return Detached(tmp_path, [APP, "--chdir", str(app_dir)] + list(args), env=env), \
        app_dir / "upapp.py"


def wait_gone(pid, timeout=STOP_SECONDS):
    wait_for(lambda: not psutil.pid_exists(pid) or psutil.Process(pid).status()
             == psutil.STATUS_ZOMBIE, timeout, "process %d to exit" % pid)


def notify_socket(tmp_path):
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(str(tmp_path / "notify"))
    sock.settimeout(NOTIFY_TIMEOUT_SECONDS)
    return sock


def notices(sock, until):
    """Datagrams from NOTIFY_SOCKET until one contains ``until``."""
    got = []
    while not any(until in message for message in got):
        got.append(sock.recv(4096).decode())
    return got


# ---------------------------------------------------------------- USR2

def test_usr2_under_load_hands_over_to_the_new_code_with_no_failed_request(tmp_path):
    server, module = start_versioned(tmp_path)
    old = server.pid
    stress = subprocess.Popen(
        [sys.executable, STRESS, "--port", str(server.port), "--json", "-c", str(LOAD_CLIENTS),
         "--duration", str(LOAD_SECONDS), "--total", str(LOAD_MAX_CONNECTIONS),
         "--max-seconds", str(LOAD_MAX_SECONDS)], stdout=subprocess.PIPE, text=True)
    try:
        old_children = set()
        deadline = time.monotonic() + LOAD_SECONDS / 3
        while time.monotonic() < deadline:   # the load is on; who serves it
            old_children.update(p.pid for p in children_of(old))
            time.sleep(POLL_SECONDS)
        assert old_children, "the load never reached the old parent"
        write_module(module, 2)
        os.kill(old, signal.SIGUSR2)
        new, _ = server.ready(2)
        assert server.proc.wait(STOP_SECONDS) == 0          # the old parent drained and left
        assert stress.poll() is None, "the load ended before the old parent did"
        out, _ = stress.communicate(timeout=LOAD_MAX_SECONDS)
    finally:
        if stress.poll() is None:
            stress.kill()
            stress.wait()
        try:
            checks_after_handover(server, old, old_children)
        finally:
            server.close()
    result = json.loads(out)
    assert stress.returncode == 0 and result["failed"] == 0 and not result["errors"], result
    assert result["completed"] > 0
    assert new != old


def checks_after_handover(server, old, old_children):
    new = server.pids[-1]
    assert server.get() == "version 2\n"                   # the new code
    assert server.pidfile_text() == str(new)
    assert server.pidfile_text(".oldbin") is None
    assert psutil.Process(new).ppid() != old
    assert not [p for p in old_children if psutil.pid_exists(p)], "orphans of the old parent"
    # zombies_of: a child reaped between the listing and its status is no zombie
    wait_for(lambda: not zombies_of(psutil.Process(new)), 5, "no zombie")
    log = server.log_text()
    assert "upgrade: new parent %d is ready" % new in log
    assert "[%d] [INFO] upgrade: started by parent %d" % (new, old) in log


SLOW_UPGRADE_APP = """
import time
time.sleep(%r)
VERSION = %r

def app(environ, start_response):
    if environ["PATH_INFO"] == "/sleep":
        time.sleep(5.0)   # long past the new parent's start (1 s of import)
    body = ("version %%s\\n" %% VERSION).encode()
    start_response("200 OK", [("Content-Length", str(len(body)))])
    return [body]
"""


@pytest.mark.parametrize("when", ["before the new parent is ready", "after it is ready"])
def test_sigterm_to_the_old_parent_during_usr2_lets_its_requests_finish(tmp_path, when):
    """docs/operations.md, USR2 step 5: a SIGTERM to the old parent is a
    graceful stop, as gunicorn's is.  The handover counted as a stop, so the
    SIGTERM (or, sent before, the new parent's ready) was the second one and
    stopped fast: every request in flight was cut (a trial: 4 of 4 empty
    replies, 502s behind nginx)."""
    app_dir = tmp_path / "app"
    app_dir.mkdir()
    module = app_dir / "slowup.py"
    module.write_text(SLOW_UPGRADE_APP % (0.0, 1))
    server = Detached(tmp_path, ["slowup:app", "--chdir", str(app_dir)])
    answers = []
    clients = [threading.Thread(target=lambda: answers.append(server.get_or_error("/sleep")))
               for _ in range(3)]
    try:
        old = server.pid
        for client in clients:
            client.start()
        wait_for(lambda: len(children_of(old)) >= 3, 10, "three requests in flight")
        module.write_text(SLOW_UPGRADE_APP % (1.0, 2))   # the new parent takes 1 s to import
        os.kill(old, signal.SIGUSR2)
        if when.startswith("after"):
            server.ready(2)
        else:
            server.wait_log("SIGUSR2: upgrading")
        os.kill(old, signal.SIGTERM)
        for client in clients:
            client.join(HTTP_TIMEOUT_SECONDS)
        assert answers == ["version 1\n"] * 3, answers
        assert server.proc.wait(STOP_SECONDS) == 0
        if when.startswith("before"):
            server.ready(2)
        assert server.get() == "version 2\n"
        log = server.log_text()
        assert "stopping fast" not in log and "killed" not in log, log
        assert "already stopping (graceful)" in log, log
    finally:
        for client in clients:
            client.join(HTTP_TIMEOUT_SECONDS)
        server.close()


def test_a_second_sigterm_after_the_handover_still_stops_fast(tmp_path):
    """The first SIGTERM after a handover is the graceful stop under way; a
    second one escalates, as DESIGN.md says of every stop."""
    app_dir = tmp_path / "app"
    app_dir.mkdir()
    (app_dir / "slowup.py").write_text(SLOW_UPGRADE_APP % (0.0, 1))
    server = Detached(tmp_path, ["slowup:app", "--chdir", str(app_dir)])
    inflight = []
    client = threading.Thread(target=lambda: inflight.append(server.get_or_error("/sleep")))
    try:
        old = server.pid
        client.start()
        wait_for(lambda: children_of(old), 10, "a request in flight")
        os.kill(old, signal.SIGUSR2)
        server.ready(2)
        os.kill(old, signal.SIGTERM)
        server.wait_log("SIGTERM: already stopping (graceful)")
        os.kill(old, signal.SIGTERM)
        server.wait_log("SIGTERM again: stopping fast")
        assert server.proc.wait(STOP_SECONDS) == 0
    finally:
        client.join(HTTP_TIMEOUT_SECONDS)
        server.close()


def releases(tmp_path):
    """A deploy's layout: releases/1 and releases/2, each an app of its
    version, and current -> releases/1."""
    for version in (1, 2):
        (tmp_path / "releases" / str(version)).mkdir(parents=True)
        write_module(tmp_path / "releases" / str(version) / "upapp.py", version)
    link = tmp_path / "current"
    link.symlink_to(tmp_path / "releases" / "1")
    return link


def switch(link, target):
    """ln -sfn, atomically: a new link renamed over the old one."""
    new = link.with_name("current.new")
    new.symlink_to(target)
    os.replace(new, link)


def test_sighup_after_a_symlink_switch_serves_the_new_release(tmp_path):
    """--chdir current, then current -> releases/2 and SIGHUP: the parent
    stayed in releases/1 (chdir resolves the link) and reloaded its code, as
    it did with the server started inside current: gunicorn enters the
    directory again, by its name, at each load."""
    link = releases(tmp_path)
    server = Detached(tmp_path, [APP, "--chdir", str(link)])
    try:
        assert server.get() == "version 1\n"
        switch(link, tmp_path / "releases" / "2")
        os.kill(server.pid, signal.SIGHUP)
        server.wait_log("reloaded upapp:app")
        assert server.get() == "version 2\n"
        assert os.readlink("/proc/%d/cwd" % server.pid) == str(tmp_path / "releases" / "2")
    finally:
        server.close()


def test_usr2_from_inside_a_switched_symlink_starts_the_new_release(tmp_path):
    """Started inside current (the shell's $PWD), then current -> releases/2,
    releases/1 removed, SIGUSR2: the new parent was started in the resolved
    releases/1, which was gone ("cannot execute python: No such file or
    directory"), and the old code served on.  $PWD names the directory, as
    for gunicorn."""
    link = releases(tmp_path)
    env = dict(os.environ, PWD=str(link))
    server = Detached(tmp_path, [APP], env=env, cwd=str(link))
    try:
        assert server.get() == "version 1\n"
        switch(link, tmp_path / "releases" / "2")
        shutil.rmtree(tmp_path / "releases" / "1")
        os.kill(server.pid, signal.SIGUSR2)
        server.ready(2)
        assert server.proc.wait(STOP_SECONDS) == 0
        assert server.get() == "version 2\n"
    finally:
        server.close()


def test_failed_usr2_keeps_the_old_parent_serving_with_its_pidfile(tmp_path):
    server, module = start_versioned(tmp_path)
    try:
        module.write_text("def app(:\n")                    # the new code does not import
        os.kill(server.pid, signal.SIGUSR2)
        server.wait_log("upgrade failed: new parent")
        log = server.log_text()
        assert re.search(r"upgrade failed: new parent \d+ exited with status 3 \(the app "
                         r"could not be loaded\) before it was ready", log), log
        assert "SyntaxError" in server.output()            # the new parent's own words
        assert server.proc.poll() is None
        assert server.get() == "version 1\n"
        assert server.pidfile_text() == str(server.pid)
        assert server.pidfile_text(".oldbin") is None
        wait_for(lambda: children_of(server.pid) == [], 5, "the failed parent reaped")
        write_module(module, 3)                             # fixed: the next USR2 works
        os.kill(server.pid, signal.SIGUSR2)
        new, _ = server.ready(2)
        assert server.proc.wait(STOP_SECONDS) == 0
        assert server.get() == "version 3\n"
        assert server.pidfile_text() == str(new)
    finally:
        server.close()


def test_usr2_under_capture_output_keeps_the_ready_line_and_access_log_on_stdout(tmp_path):
    """--capture-output points 1 and 2 at the error log, and a USR2's new
    parent inherited that as its stdout: its ready line, and with it the
    access log on stdout, went into the error log."""
    server = Detached(tmp_path, ["tests.apps:hello", "--capture-output"], access_log=True)
    try:
        assert server.get("/before") == "Hello, World!\n"
        os.kill(server.pid, signal.SIGUSR2)
        server.ready(2)                      # on stdout, where the first one was
        wait_gone(server.pid)
        assert server.get("/after") == "Hello, World!\n"
        wait_for(lambda: '"GET /after HTTP/1.1" 200' in server.output(), START_SECONDS,
                 "the new parent's access line on stdout")
        assert '"GET /' not in server.log_text()   # no access line there
    finally:
        server.close()


def test_usr2_serves_old_code_while_the_new_imports_and_tells_systemd_the_new_mainpid(tmp_path):
    notify = notify_socket(tmp_path)
    env = dict(os.environ, NOTIFY_SOCKET=str(tmp_path / "notify"))
    server, module = start_versioned(tmp_path, env=env)
    try:
        assert notices(notify, "READY=1") == ["READY=1\nMAINPID=%d" % server.pid]
        write_module(module, 2, import_delay_seconds=IMPORT_DELAY_SECONDS)
        os.kill(server.pid, signal.SIGUSR2)
        server.wait_log("SIGUSR2: upgrading")
        assert server.get() == "version 1\n"                # the old one serves meanwhile
        os.kill(server.pid, signal.SIGUSR2)
        server.wait_log("SIGUSR2: upgrade refused: an upgrade is already under way")
        new, _ = server.ready(2)
        got = notices(notify, "MAINPID=%d" % new)
        got += notices(notify, "MAINPID=%d" % new) if len(got) == 1 else []
        assert sorted(got) == ["MAINPID=%d" % new, "READY=1\nMAINPID=%d" % new], got
        assert server.proc.wait(STOP_SECONDS) == 0
        assert server.get() == "version 2\n"
        os.kill(new, signal.SIGUSR2)                       # the new one may upgrade again
        server.ready(3)
        wait_gone(new)
        notify.settimeout(0.5)
        later = []
        try:
            while True:
                later.append(notify.recv(4096).decode())
        except socket.timeout:
            pass
        assert "STOPPING=1" not in later, later            # a handover is not a stop
    finally:
        server.close()
        notify.close()


def unix_get(path):
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    sock.settimeout(HTTP_TIMEOUT_SECONDS)
    sock.connect(path)
    with sock:
        sock.sendall(b"GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        data = b""
        while True:
            chunk = sock.recv(65536)
            if not chunk:
                return data.partition(b"\r\n\r\n")[2].decode()
            data += chunk


def test_usr2_keeps_the_unix_socket_file_for_the_new_parent_which_removes_it_at_exit(tmp_path):
    path = str(tmp_path / "fs.sock")
    server, module = start_versioned(tmp_path, "--bind", "unix:" + path)
    try:
        assert unix_get(path) == "version 1\n"
        write_module(module, 2)
        os.kill(server.pid, signal.SIGUSR2)
        new, addresses = server.ready(2)
        assert "unix:" + path in addresses
        assert server.proc.wait(STOP_SECONDS) == 0
        assert os.path.exists(path)                       # the old parent left it
        assert unix_get(path) == "version 2\n"
        os.kill(new, signal.SIGTERM)
        wait_gone(new)
        assert not os.path.exists(path)                   # the new one owned it
    finally:
        server.close()


def test_a_parent_started_by_usr2_stops_its_listeners_as_their_owner(tmp_path):
    # Once ready, the new parent is the one owner of the sockets it
    # inherited: its own SIGTERM must end them as the first parent would
    # (shut down, after a connection half open has sent its request), not
    # only close its copy, which reset that request.
    server, module = start_versioned(tmp_path)
    try:
        os.kill(server.pid, signal.SIGUSR2)
        new, _ = server.ready(2)
        assert server.proc.wait(STOP_SECONDS) == 0
        client = socket.create_connection(("127.0.0.1", server.port), timeout=HTTP_TIMEOUT_SECONDS)
        with client:
            time.sleep(0.2)
            os.kill(new, signal.SIGTERM)
            time.sleep(0.3)                       # the stop has begun; the request comes now
            client.sendall(b"GET / HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n")
            response = read_until_close(client)
        assert response.startswith(b"HTTP/1.1 200 "), response[:80]
        wait_gone(new)
    finally:
        server.close()


SYSTEM_PYTHON = "/usr/bin/python3"   # one that nobody may run (ours may sit in /root)


def copy_server_for_others(app):
    """forkserver and the test apps it serves, in a directory anyone may read."""
    skip = shutil.ignore_patterns("__pycache__")
    app.mkdir()
    for name in ("forkserver.py", "wsgi_handler.py"):
        shutil.copy(os.path.join(ROOT, name), str(app / name))
    shutil.copytree(os.path.join(ROOT, "forkparts"), str(app / "forkparts"), ignore=skip)
    (app / "tests").mkdir()
    for name in ("__init__.py", "apps.py", "apps_deploy.py"):
        shutil.copy(os.path.join(ROOT, "tests", name), str(app / "tests" / name))
    for path in [app] + [p for p in app.rglob("*")]:
        os.chmod(str(path), 0o755 if path.is_dir() else 0o644)
    return app


@needs(os.geteuid() == 0, "needs root to start the server as nobody")
@needs(os.path.exists(SYSTEM_PYTHON), "needs %s" % SYSTEM_PYTHON)
def test_usr2_works_after_user_dropped_root(tmp_path):
    # The new parent is executed as the user the old one became: it must not
    # try to drop privileges again, and what it re-opens must be that user's.
    nobody = pwd.getpwnam("nobody")
    # Not under /tmp/pytest-of-root, which is 0700.
    folder = pathlib.Path(tempfile.mkdtemp(prefix="forkserver-usr2-"))
    try:
        os.chmod(str(folder), 0o777)
        (folder / "error.log").touch()
        os.chown(str(folder / "error.log"), nobody.pw_uid, nobody.pw_gid)
        # The new parent runs as nobody from the directory the server started
        # in: a copy nobody may read, as an installed app is (the checkout may
        # sit in a 0700 directory, as mktemp -d makes them).
        app = copy_server_for_others(folder / "app")
        server = Detached(folder, ["tests.apps_deploy:whoami", "--user", "nobody"],
                          python=SYSTEM_PYTHON, root=str(app))
        try:
            os.kill(server.pid, signal.SIGUSR2)
            try:
                new, _ = server.ready(2)
            except AssertionError:
                raise AssertionError(server.output() + server.log_text()) from None
            assert server.proc.wait(STOP_SECONDS) == 0
            assert json.loads(server.get())["server"] == new
            assert psutil.Process(new).uids().real == nobody.pw_uid
            assert server.pidfile_text() == str(new)
        finally:
            server.close()
    finally:
        shutil.rmtree(str(folder))


# As systemd starts a socket-activated service: the socket on fd 3, LISTEN_*
# naming the process (set by this shim, which then execs: exec keeps the pid).
ACTIVATION_SHIM = ("import os, sys\n"
                   "fd = int(sys.argv[1])\n"
                   "os.dup2(fd, 3)\n"
                   "if fd != 3: os.close(fd)\n"
                   "os.environ['LISTEN_PID'] = str(os.getpid())\n"
                   "os.environ['LISTEN_FDS'] = '1'\n"
                   "os.execv(sys.executable, [sys.executable] + sys.argv[2:])\n")


def test_usr2_passes_systemds_socket_on_as_systemd_does(tmp_path):
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(16)
    port, fd = listener.getsockname()[1], listener.fileno()
    app_dir = tmp_path / "app"
    app_dir.mkdir()
    write_module(app_dir / "upapp.py", 1)
    out = str(tmp_path / "out.log")
    proc = subprocess.Popen(
        [sys.executable, "-c", ACTIVATION_SHIM, str(fd), FORKSERVER, APP, "--chdir",
         str(app_dir), "--error-log", str(tmp_path / "error.log"), "--no-access-log"],
        cwd=ROOT, pass_fds=(fd,), stdout=open(out, "wb"), stderr=subprocess.STDOUT,
        start_new_session=True)
    listener.close()                                      # only the server holds it now
    pids = [proc.pid]

    def ready_lines():
        with open(out, "rb") as f:
            return READY_RE.findall(f.read())
    try:
        wait_for(ready_lines, START_SECONDS, "the ready line")
        write_module(app_dir / "upapp.py", 2)
        os.kill(proc.pid, signal.SIGUSR2)
        wait_for(lambda: len(ready_lines()) == 2, START_SECONDS, "the new parent")
        new, addresses = ready_lines()[1]
        pids.append(int(new))
        assert addresses.decode() == "http://127.0.0.1:%d" % port
        assert proc.wait(STOP_SECONDS) == 0
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=HTTP_TIMEOUT_SECONDS)
        conn.request("GET", "/")
        assert conn.getresponse().read() == b"version 2\n"
        conn.close()
        assert "LISTEN_FDS" not in psutil.Process(int(new)).environ()   # removed for the app
    finally:
        for pid in reversed(pids):
            kill_tree(pid)


# ---------------------------------------------------------------- TTIN, TTOU, WINCH

def status_file(path):
    with open(path) as f:
        return json.load(f)


def test_ttin_and_ttou_change_max_children_and_never_stop_the_server(start_server, tmp_path):
    status = str(tmp_path / "status.json")
    server = start_server("tests.apps:hello", "--max-children", "2", "--status-file", status)
    steps = [(signal.SIGTTIN, "SIGTTIN: --max-children 2 -> 3", 3),
             (signal.SIGTTOU, "SIGTTOU: --max-children 3 -> 2", 2),
             (signal.SIGTTOU, "SIGTTOU: --max-children 2 -> 1", 1),
             (signal.SIGTTOU, "SIGTTOU: --max-children 1 -> 1", 1),   # never below 1
             (signal.SIGWINCH, None, 1)]
    for sig, line, cap in steps:
        server.signal(sig)
        if line:
            wait_for(lambda: line in server.log_text(), 10, repr(line))
        assert server.ps.status() != psutil.STATUS_STOPPED
        assert http_get(server, "/")[0] == 200
        wait_for(lambda: status_file(status)["max_children"] == cap, 5, "max_children %d" % cap)


# ---------------------------------------------------------------- systemd around HUP

def test_sighup_tells_systemd_reloading_then_ready(start_server, tmp_path):
    notify = notify_socket(tmp_path)
    app_dir = tmp_path / "app"
    app_dir.mkdir()
    write_module(app_dir / "upapp.py", 1)
    try:
        server = start_server(APP, "--chdir", str(app_dir),
                              extra_env={"NOTIFY_SOCKET": str(tmp_path / "notify")})
        assert notices(notify, "READY=1") == ["READY=1\nMAINPID=%d" % server.pid]
        # A reload (a warmed parent executes itself: its start says READY=1 and
        # its pid, the same), then a failed one (the old code says READY=1).
        ready = ("READY=1\nMAINPID=%d" % server.pid, "READY=1")
        for edit, ready_notice in zip((lambda: write_module(app_dir / "upapp.py", 2),
                                       lambda: (app_dir / "upapp.py").write_text("def app(:\n")),
                                      ready):
            edit()
            before = time.clock_gettime_ns(time.CLOCK_MONOTONIC) // 1000
            server.signal(signal.SIGHUP)
            reloading = notify.recv(4096).decode()
            after = time.clock_gettime_ns(time.CLOCK_MONOTONIC) // 1000
            match = re.fullmatch(r"RELOADING=1\nMONOTONIC_USEC=(\d+)", reloading)
            assert match and before <= int(match.group(1)) <= after, reloading
            assert notify.recv(4096).decode() == ready_notice
        assert http_get(server, "/")[2] == b"version 2\n"
    finally:
        notify.close()


# ---------------------------------------------------------------- HUP on a Django project

DJANGO_VIEW = ("from django.http import HttpResponse\n\n\n"
               "def hello(request):\n"
               "    return HttpResponse(%r, content_type='text/plain')\n")
DJANGO_URLS_TAIL = ("\nfrom django.urls import path as _path  # noqa: E402\n"
                    "from mysite import views as _views  # noqa: E402\n"
                    "urlpatterns += [_path('hello/', _views.hello)]\n")
DJANGO_SETUP_SECONDS = 120


def django_project(tmp_path):
    """A `django-admin startproject mysite` project with a view at /hello/:
    (project directory, views.py, environment)."""
    env = dict(os.environ)
    env.pop("DJANGO_SETTINGS_MODULE", None)        # mysite/wsgi.py names its own
    done = subprocess.run([sys.executable, "-m", "django", "startproject", "mysite"],
                          cwd=str(tmp_path), env=env, capture_output=True,
                          timeout=DJANGO_SETUP_SECONDS)
    assert done.returncode == 0, done.stderr
    project = tmp_path / "mysite"
    views, urls = project / "mysite" / "views.py", project / "mysite" / "urls.py"
    views.write_text(DJANGO_VIEW % "the first view\n")
    urls.write_text(urls.read_text() + DJANGO_URLS_TAIL)
    return project, views, env


@needs(importlib.util.find_spec("django") is not None, "Django is not installed")
def test_sighup_serves_the_edited_view_of_a_django_project(start_server, tmp_path):
    project, views, env = django_project(tmp_path)
    server = start_server("mysite.wsgi", "--chdir", str(project), "--no-prewarm", env=env)
    assert http_get(server, "/hello/")[2] == b"the first view\n"
    views.write_text(DJANGO_VIEW % "the view, edited\n")   # another size: see module_source
    server.signal(signal.SIGHUP)
    wait_for(lambda: "reloaded mysite.wsgi" in server.log_text(), 30, "the reload")
    assert http_get(server, "/hello/")[2] == b"the view, edited\n"


@needs(importlib.util.find_spec("django") is not None, "Django is not installed")
def test_reload_option_serves_an_edited_django_view(start_server, tmp_path):
    """--reload, for development, has no default warm-up: Django imports its
    urls and views at the first request, in each child, so an edited view is
    served as written (the parent never imported it: nothing to reload)."""
    project, views, env = django_project(tmp_path)
    server = start_server("mysite.wsgi", "--chdir", str(project), "--reload", env=env)
    wait_for(lambda: "--reload: no warm-up" in server.log_text(), 30, "the start")
    assert http_get(server, "/hello/")[2] == b"the first view\n"
    views.write_text(DJANGO_VIEW % "the view, edited\n")
    wait_for(lambda: http_get(server, "/hello/")[2] == b"the view, edited\n", 30,
             "the edited view to be served")
    assert "prewarm GET" not in server.log_text()


def test_reload_option_serves_a_django_view_the_warm_up_imported(start_server, tmp_path):
    """Django imports urls and views at the first request: in the parent, the
    warm-up's (asked for with --prewarm /hello/).  --reload notices an edited
    view, and the warmed parent executes itself afresh (forkparts/reexec.py),
    so the edited view is served; an in-place reload kept Django's URL
    resolver, and with it the old view."""
    project, views, env = django_project(tmp_path)
    server = start_server("mysite.wsgi", "--chdir", str(project), "--reload",
                          "--prewarm", "/hello/", env=env)
    wait_for(lambda: "prewarm GET /" in server.log_text(), 30, "the warm-up")
    assert http_get(server, "/hello/")[2] == b"the first view\n"
    views.write_text(DJANGO_VIEW % "the view, edited\n")
    wait_for(lambda: "reloaded mysite.wsgi" in server.log_text(), 30, "the reload")
    log = server.log_text()
    assert "--reload: views.py changed: reloading mysite.wsgi" in log, log
    assert http_get(server, "/hello/")[2] == b"the view, edited\n"


@needs(importlib.util.find_spec("django") is not None, "Django is not installed")
def test_reload_option_applies_an_edited_django_settings_file(start_server, tmp_path):
    """Django reads settings.py once, into its own object: an in-place
    re-import logged "reloaded" and served the old value.  --reload runs the
    new code in a fresh interpreter, as gunicorn's --reload restarts its
    workers."""
    project, views, env = django_project(tmp_path)
    settings = project / "mysite" / "settings.py"
    settings.write_text(settings.read_text() + "\nGREETING = 'the first greeting'\n")
    views.write_text("from django.conf import settings\n" + DJANGO_VIEW.replace(
        "HttpResponse(%r,", "HttpResponse(settings.GREETING + %r,") % "\n")
    server = start_server("mysite.wsgi", "--chdir", str(project), "--reload", env=env)
    assert http_get(server, "/hello/")[2] == b"the first greeting\n"
    settings.write_text(settings.read_text().replace("the first", "the edited"))
    wait_for(lambda: "reloaded mysite.wsgi" in server.log_text(), 30, "the reload")
    assert http_get(server, "/hello/")[2] == b"the edited greeting\n"


@needs(importlib.util.find_spec("django") is not None, "Django is not installed")
def test_sighup_serves_the_edited_view_of_a_warmed_django_project(start_server, tmp_path):
    """The default options warm the project up: its URL resolver and views
    live in the parent.  A HUP serves the edited view all the same (the
    parent executes itself afresh, keeping its pid and pidfile), and a
    request in flight across it is answered by the code it began with."""
    project, views, env = django_project(tmp_path)
    (project / "mysite" / "views.py").write_text(
        views.read_text() + "\n\ndef slow(request):\n"
        "    import time\n    time.sleep(4)\n"
        "    return HttpResponse('slow, first\\n', content_type='text/plain')\n")
    urls = project / "mysite" / "urls.py"
    urls.write_text(urls.read_text() + "urlpatterns += [_path('slow/', _views.slow)]\n")
    server = start_server("mysite.wsgi", "--chdir", str(project), "--pidfile", "server.pid",
                          env=env)
    wait_for(lambda: "prewarm GET /" in server.log_text(), 30, "the warm-up")
    assert http_get(server, "/hello/")[2] == b"the first view\n"
    in_flight = {}
    slow = threading.Thread(target=lambda: in_flight.update(r=http_get(server, "/slow/")))
    slow.start()
    wait_for(lambda: server.children(), 5, "the slow request's child")
    views.write_text(views.read_text().replace("the first view", "the view, edited")
                     .replace("slow, first", "slow, edited"))
    server.signal(signal.SIGHUP)
    wait_for(lambda: "reloaded mysite.wsgi" in server.log_text(), 30, "the reload")
    assert http_get(server, "/hello/")[2] == b"the view, edited\n"
    slow.join(10)
    assert in_flight["r"][0] == 200 and in_flight["r"][2] == b"slow, first\n"
    assert server.ps.is_running() and (project / "server.pid").read_text() == "%d\n" % server.pid
    log = server.log_text()
    assert "in a fresh interpreter, pid %d kept" % server.pid in log, log
    assert "URL resolver keeps the old views" not in log


def test_sighup_on_a_warmed_parent_executes_it_afresh_and_an_unwarmed_one_in_place(
        start_server):
    """One line each: a warmed parent's names the fresh interpreter and the
    pid it keeps; an unwarmed parent reloads the app's modules in place."""
    server = start_server("tests.apps:hello")
    wait_for(lambda: "prewarm GET /" in server.log_text(), 10, "the warm-up")
    server.signal(signal.SIGHUP)
    wait_for(lambda: "reloaded tests.apps:hello" in server.log_text(), 30, "the reload")
    (line,) = [l for l in server.log_text().splitlines() if "reloaded tests.apps:hello" in l]
    assert "[INFO]" in line and "in a fresh interpreter, pid %d kept" % server.pid in line, line
    assert http_get(server, "/")[0] == 200
    unwarmed = start_server("tests.apps:hello", "--no-prewarm")
    unwarmed.signal(signal.SIGHUP)
    wait_for(lambda: "reloaded tests.apps:hello" in unwarmed.log_text(), 30, "the reload")
    assert "fresh interpreter" not in unwarmed.log_text()


def test_sighup_of_a_warmed_parent_reads_the_config_file_again(start_server, tmp_path):
    """As gunicorn's HUP: an edited config file (here its raw_env) is read
    again, the server keeps its pid.  Run from another directory (--chdir),
    as a relative path must still be found."""
    config = tmp_path / "gunicorn.conf.py"
    config.write_text("raw_env = ['GREETING=the first']\n")
    server = start_server("tests.apps:greeting", "-c", "gunicorn.conf.py", "--chdir", "/",
                          "--pythonpath", ROOT, cwd=str(tmp_path))
    assert http_get(server, "/")[2] == b"the first"
    config.write_text("raw_env = ['GREETING=the edited']\n")
    server.signal(signal.SIGHUP)
    wait_for(lambda: "reloaded tests.apps:greeting" in server.log_text(), 30, "the reload")
    assert http_get(server, "/")[2] == b"the edited"
    assert "changed since the start" not in server.log_text()


def test_sighup_of_an_unwarmed_parent_says_the_config_file_is_not_read_again(start_server,
                                                                             tmp_path):
    """The in-place reload (--no-prewarm) keeps the start's settings; an
    edited file (timeout = 1, an operator's fix) gets a warning."""
    config = tmp_path / "gunicorn.conf.py"
    config.write_text("timeout = 30\n")
    server = start_server("tests.apps:hello", "-c", "gunicorn.conf.py", "--chdir", "/",
                          "--pythonpath", ROOT, "--no-prewarm", cwd=str(tmp_path))
    server.signal(signal.SIGHUP)
    wait_for(lambda: "reloaded tests.apps:hello" in server.log_text(), 30, "the reload")
    assert "changed since the start" not in server.log_text()
    config.write_text("timeout = 1   # edited\n")
    server.signal(signal.SIGHUP)
    wait_for(lambda: server.log_text().count("reloaded tests.apps:hello") == 2, 30, "reload 2")
    (line,) = [l for l in server.log_text().splitlines() if "changed since the start" in l]
    assert "[WARNING]" in line and "gunicorn.conf.py changed" in line and "SIGUSR2" in line


# ---------------------------------------------------------------- hooks

HOOKS_CONFIG = '''
import os
NOTES = {notes!r}

def _note(*words):
    with open(NOTES, "a") as f:
        f.write(" ".join(str(w) for w in words) + "\\n")

def on_starting(server): _note("on_starting", os.getpid())
def when_ready(server): _note("when_ready", os.getpid())
def on_reload(server): _note("on_reload", os.getpid())
def pre_exec(server): _note("pre_exec", os.getpid())
def nworkers_changed(server, new_value, old_value): _note("nworkers_changed", new_value, old_value)
'''


def read_notes(path):
    try:
        with open(path) as f:
            return [line.split() for line in f.read().splitlines()]
    except FileNotFoundError:
        return []


def test_on_reload_pre_exec_and_nworkers_changed_hooks_from_the_config_file(tmp_path):
    notes = str(tmp_path / "notes.txt")
    config = tmp_path / "forkserver.conf.py"
    config.write_text(HOOKS_CONFIG.format(notes=notes))
    server, module = start_versioned(tmp_path, "--config", str(config), "--max-children", "4")
    try:
        wait_for(lambda: len(read_notes(notes)) == 2, 10, "when_ready")
        os.kill(server.pid, signal.SIGTTIN)
        wait_for(lambda: len(read_notes(notes)) == 3, 10, "nworkers_changed")
        # The hook of the config file as it is now, read again (gunicorn's HUP
        # calls the new config's on_reload): it was the old one's.
        config.write_text(HOOKS_CONFIG.format(notes=notes).replace(
            '_note("on_reload"', '_note("on_reload_as_edited"'))
        os.kill(server.pid, signal.SIGHUP)   # a warmed parent: executes itself, same pid
        server.wait_log("reloaded upapp:app in a fresh interpreter")
        os.kill(server.pid, signal.SIGUSR2)
        new, _ = server.ready(2)
        wait_for(lambda: len(read_notes(notes)) == 7, 10, "the new parent's start")
        pid = str(server.pid)
        assert read_notes(notes) == [["on_starting", pid], ["when_ready", pid],
                                     ["nworkers_changed", "5", "4"],
                                     ["on_reload_as_edited", pid],   # no start hooks
                                     ["pre_exec", str(new)],   # in the child, before exec
                                     ["on_starting", str(new)], ["when_ready", str(new)]]
    finally:
        server.close()


def stub_server(max_children):
    calls = []
    stub = SimpleNamespace(
        opts=SimpleNamespace(max_children=max_children, status_file=None),
        admission=SimpleNamespace(cap=max_children), status=SimpleNamespace(file_dirty=False),
        log=SimpleNamespace(info=lambda line: calls.append(("log", line))),
        run_hook=lambda *args: calls.append(args))
    return stub, calls


def test_ttin_and_ttou_call_nworkers_changed_with_gunicorns_arguments():
    stub, calls = stub_server(2)
    resize(stub, 1, "SIGTTIN")
    resize(stub, -1, "SIGTTOU")
    resize(stub, -1, "SIGTTOU")
    resize(stub, -1, "SIGTTOU")           # at 1: no change, no call
    assert [c for c in calls if c[0] != "log"] == [
        ("nworkers_changed", stub, 3, 2), ("nworkers_changed", stub, 2, 3),
        ("nworkers_changed", stub, 1, 2)]
    assert stub.opts.max_children == stub.admission.cap == 1
    stub, calls = stub_server(0)                                 # no cap: nothing to change
    resize(stub, 1, "SIGTTIN")
    assert calls == [("log", "SIGTTIN: --max-children is 0 (no cap); nothing to change")]


INSTALL_SIGNALS = """
import os, select, signal
from types import SimpleNamespace
import forkserver
server = forkserver.Server.__new__(forkserver.Server)
server.opts = SimpleNamespace(reaper="signal", lab_print_in_handler=False, timeout=30)
server.wake_r, server.wake_w = os.pipe()
server.poller = select.poll()
server.install_signals()
handlers = [signal.getsignal(sig) for sig in forkserver.HANDLED_SIGNALS
            if sig != signal.SIGCHLD]
print(len(handlers), len({id(h) for h in handlers}), handlers[0].__func__.__name__)
"""


def test_the_handled_signals_share_one_handler_object():
    """Each child puts the parent's old handlers back (ChildPlan.run), which
    touches every handler object: one bound method for all the signals is one
    page the child copies, a fresh bound method per signal one page each."""
    out = subprocess.run([sys.executable, "-c", INSTALL_SIGNALS], cwd=ROOT, text=True,
                         capture_output=True, timeout=30)
    assert out.returncode == 0, out.stderr
    count, distinct, name = out.stdout.split()
    assert int(count) == len(forkserver.HANDLED_SIGNALS) - 1
    assert (distinct, name) == ("1", "note_signal")


def test_a_hup_that_imports_none_of_the_apps_modules_says_its_code_is_the_old_one(
        start_server, tmp_path):
    """An app installed as a library (a wheel in site-packages) is not
    imported again by a reload, which re-imports the app's own modules only:
    the reload line said "new connections get the new code" all the same."""
    library = tmp_path / "lib" / "site-packages"
    library.mkdir(parents=True)
    (library / "installedapp.py").write_text(
        "def app(environ, start_response):\n"
        "    start_response('200 OK', [('Content-Type', 'text/plain')])\n"
        "    return [b'installed\\n']\n")
    server = start_server("installedapp:app", "--pythonpath", str(library), "--no-prewarm")
    server.signal(signal.SIGHUP)
    wait_for(lambda: "reloaded installedapp:app" in server.log_text(), 10, "the reload line")
    assert "[WARNING] reloaded installedapp:app, but none of the app's modules was imported " \
        "again" in server.log_text()
    assert "new connections get the new code" not in server.log_text()
