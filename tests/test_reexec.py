"""SIGHUP in a warmed parent: the same process executes itself afresh
(forkparts/reexec.py).  What it carries across execve, checked from outside:
children in flight, kept-alive connections, a head still arriving, the
signals that come meanwhile, and a new start that fails."""
import errno
import http.client
import importlib.util
import os
import re
import signal
import socket
import subprocess
import sys
import threading
import time
from types import SimpleNamespace

from forkparts.acceptfilter import BODY_INCOMPLETE, READY
from forkparts.reexec import (Carried, Reexec, child_record, hold_again, parse_child,
                              read_carried, write_carried)
from tests.conftest import (FORKSERVER, ROOT, http_get, kill_tree, needs, read_until_close,
                            wait_for, wait_no_zombies)
from tests.test_signals import Detached, django_project

RELOAD_SECONDS = 30
SLOW_SECONDS = 4.0   # outlasts a reload on a loaded machine
IMPORT_DELAY_SECONDS = 1.5   # a trial, or a new parent, that takes a while

APP = '''import time
time.sleep({import_delay!r})
VERSION = {version!r}
PAD = {pad!r}


def app(environ, start_response):
    if environ["PATH_INFO"] == "/slow":
        time.sleep({slow!r})
    body = ("version %s\\n" % VERSION).encode()
    start_response("200 OK", [("Content-Type", "text/plain"),
                              ("Content-Length", str(len(body)))])
    return [body]
'''


def write_app(path, version, import_delay=0.0):
    """Each version a different size: a .pyc is trusted on (mtime, size)."""
    tmp = str(path) + ".tmp"
    with open(tmp, "w") as f:
        f.write(APP.format(version=version, pad="x" * version, slow=SLOW_SECONDS,
                           import_delay=import_delay))
    os.replace(tmp, str(path))


def start_app(start_server, tmp_path, *args, **kw):
    app_dir = tmp_path / "app"
    app_dir.mkdir()
    write_app(app_dir / "hupapp.py", 1)
    server = start_server("hupapp:app", "--chdir", str(app_dir), *args, **kw)
    wait_for(lambda: "prewarm GET /" in server.log_text(), 10, "the warm-up")
    return server, app_dir / "hupapp.py"


def reloaded(server, count=1):
    wait_for(lambda: server.log_text().count("reloaded hupapp:app in a fresh interpreter")
             >= count, RELOAD_SECONDS, "the reload")


def in_background(server, path):
    got = {}

    def run():
        try:
            got["response"] = http_get(server, path, timeout=30)
        except OSError as exc:
            got["error"] = exc
    thread = threading.Thread(target=run)
    thread.start()
    return thread, got


def test_a_hup_keeps_the_pid_and_lets_a_request_in_flight_finish_with_its_code(
        start_server, tmp_path):
    server, module = start_app(start_server, tmp_path)
    thread, got = in_background(server, "/slow")
    wait_for(lambda: server.children(), 5, "the slow child")
    (child,) = server.children()
    write_app(module, 2)
    server.signal(signal.SIGHUP)
    reloaded(server)
    assert http_get(server, "/")[2] == b"version 2\n"
    thread.join(10)
    assert got["response"][2] == b"version 1\n", got
    assert server.ps.is_running()
    wait_for(lambda: child.pid not in [c.pid for c in server.children()], 10,
             "the old code's child to end and be reaped by the new code")
    wait_no_zombies(server)
    log = server.log_text()
    assert "children of the previous code still serving: 1" in log, log
    assert server.stop() == 0
    assert "forked 2 children, one per connection" in server.log_text()   # across the exec


def test_a_kept_alive_connection_gets_the_new_code_on_its_next_request(start_server,
                                                                       tmp_path):
    """--keep-alive: the idle connection goes back to the parent on the HUP
    (wsgi_handler's hand_back), through the socket pair the new code keeps."""
    server, module = start_app(start_server, tmp_path, "--keep-alive", "10")
    conn = http.client.HTTPConnection(server.host, server.port, timeout=10)
    try:
        conn.request("GET", "/")
        assert conn.getresponse().read() == b"version 1\n"
        write_app(module, 2)
        server.signal(signal.SIGHUP)
        reloaded(server)
        wait_for(lambda: not server.children(), 10, "the kept-alive child to hand back")
        conn.request("GET", "/")
        response = conn.getresponse()
        assert response.status == 200 and response.read() == b"version 2\n"
    finally:
        conn.close()


def test_a_head_still_arriving_across_a_hup_is_served(start_server, tmp_path):
    """The accept filter holds a head that is not complete; its bytes and its
    socket are carried across the exec, and the new code serves it."""
    server, module = start_app(start_server, tmp_path)
    before = len(os.listdir("/proc/%d/fd" % server.pid))
    with server.connect() as sock:
        sock.sendall(b"GET / HTTP/1.1\r\nHost: x\r\n")
        # Held by the parent (accepted: one descriptor more), no child yet.
        wait_for(lambda: len(os.listdir("/proc/%d/fd" % server.pid)) == before + 1, 10,
                 "the parent to hold the connection")
        assert not server.children()
        write_app(module, 2)
        server.signal(signal.SIGHUP)
        reloaded(server)
        sock.sendall(b"Connection: close\r\n\r\n")
        answer = read_until_close(sock)
    assert answer.startswith(b"HTTP/1.1 200 ") and answer.endswith(b"version 2\n"), answer


def test_a_term_during_the_exec_stops_gracefully_and_loses_nothing(start_server, tmp_path):
    """The signals wait, blocked, across execve until the new code's start
    handles them: a SIGTERM right after the HUP ends the start cleanly, the
    request in flight answered first, not by the default action that would
    end the process and, by PR_SET_PDEATHSIG, its children.  And it removes
    what a stop removes: the pidfile and the unix socket file."""
    pidfile, unix = tmp_path / "server.pid", tmp_path / "server.sock"
    server, module = start_app(start_server, tmp_path, "--pidfile", str(pidfile),
                               "--bind", "127.0.0.1:0", "--bind", "unix:%s" % unix)
    thread, got = in_background(server, "/slow")
    wait_for(lambda: server.children(), 5, "the slow child")
    write_app(module, 2)
    server.signal(signal.SIGHUP)
    wait_for(lambda: "the new code is tried" in server.log_text(), 10, "the trial")
    deadline = time.monotonic() + RELOAD_SECONDS
    while "fresh interpreter, pid" not in server.log_text() and time.monotonic() < deadline:
        if "FORKSERVER_REEXEC" in environ_of(server.pid):   # executed: the new code starts
            break
        time.sleep(0.005)
    server.signal(signal.SIGTERM)
    assert server.wait_exit() == 0
    thread.join(10)
    assert got.get("response", (None,))[0] == 200, got
    # Stopped by the new code's start (its handlers are in before anything
    # else it does) or, if it was that quick, by the running server.
    out = open(str(tmp_path / "server0" / "pty.log"), errors="replace").read()
    assert ("SIGTERM before the server was ready: stopped" in out
            or "SIGTERM: stopping (graceful)" in server.log_text()), out
    assert "the new code did not start" not in out, out
    assert not pidfile.exists() and not unix.exists()


def environ_of(pid):
    try:
        with open("/proc/%d/environ" % pid, "rb") as f:
            return f.read().decode(errors="replace")
    except OSError:
        return ""


def test_a_taken_address_fails_the_trial_and_the_old_code_serves_on(start_server, tmp_path):
    """The trial binds what the new code would bind (not what it inherits):
    a config edited to bind a taken port is a failed reload naming it, not
    a new start that fails with the old code gone."""
    taken = socket.socket()
    taken.bind(("127.0.0.1", 0))
    taken.listen(1)
    config = tmp_path / "gunicorn.conf.py"
    config.write_text("bind = ['127.0.0.1:0']\n")
    try:
        server, module = start_app(start_server, tmp_path, "-c", str(config),
                                   default_bind=False)
        config.write_text("bind = ['127.0.0.1:0', '127.0.0.1:%d']\n" % taken.getsockname()[1])
        server.signal(signal.SIGHUP)
        wait_for(lambda: "reload failed" in server.log_text(), RELOAD_SECONDS, "the refusal")
        log = server.log_text()
        assert "127.0.0.1:%d" % taken.getsockname()[1] in log and "status 4" in log, log
        assert http_get(server, "/")[2] == b"version 1\n"
    finally:
        taken.close()


def fail_the_second_import(module, counter):
    """The trial imports the edited module; the new code's start, the
    second import, raises: what a trial cannot see."""
    module.write_text("import os\n"
                      "with open(%r, 'a') as _f:\n    _f.write('x')\n"
                      "if os.path.getsize(%r) > 1:\n    raise RuntimeError('the second import')\n"
                      % (str(counter), str(counter)) + module.read_text())


def test_a_new_start_that_fails_after_its_trial_waits_for_the_children(start_server, tmp_path):
    """What the trial cannot catch: an import that fails the second time
    (a file edited between the trial and the exec, a service that went
    away).  The process cannot go back to the old code; it waits for the
    children of the old code (they end with it) and exits with the start's
    status, so the request in flight is answered."""
    server, module = start_app(start_server, tmp_path)
    thread, got = in_background(server, "/slow")
    wait_for(lambda: server.children(), 5, "the slow child")
    fail_the_second_import(module, tmp_path / "imports")
    server.signal(signal.SIGHUP)
    assert server.wait_exit() == 3   # EXIT_APP_LOAD
    thread.join(10)
    assert got.get("response", (None,))[0] == 200, got
    out = open(str(tmp_path / "server0" / "pty.log"), errors="replace").read()
    assert "waiting up to 30s for the children of the previous code (1)" in out, out
    # In the error log too, where the reload's lines are (stderr: /dev/null
    # under nohup): they went to stderr alone, the log ending on "reloading".
    log = server.log_text()
    assert "[ERROR] cannot load app 'hupapp:app': " in log and "the second import" in log
    assert "[ERROR] the new code did not start; waiting up to 30s for the children" in log, log


THIRD_READ_FAILS_CONFIG = """
with open({counter!r}, "a") as _f:
    _f.write("x")
with open({counter!r}) as _f:
    if len(_f.read()) == 3:   # the start, the trial, then the new code's start
        raise RuntimeError("the config file's third read")
"""


def test_a_config_file_that_fails_after_the_trial_says_so_in_the_error_log(start_server,
                                                                           tmp_path):
    """The new code's options and config file are read before its log is
    open: their error, and the wait for the old children, went to stderr
    alone (nohup: /dev/null), the error log ending on "reloading"."""
    config = tmp_path / "conf.py"
    config.write_text(THIRD_READ_FAILS_CONFIG.format(counter=str(tmp_path / "reads")))
    server, module = start_app(start_server, tmp_path, "-c", str(config))
    thread, got = in_background(server, "/slow")
    wait_for(lambda: server.children(), 5, "the slow child")
    write_app(module, 2)
    server.signal(signal.SIGHUP)
    assert server.wait_exit() == 2   # EXIT_USAGE: a config file that fails
    thread.join(10)
    assert got.get("response", (None,))[0] == 200, got
    log = server.log_text()
    assert "[ERROR] the new code did not start before its error log was open (exit status 2)" \
        in log, log
    assert "RuntimeError: the config file's third read" in log   # what ended it, too
    out = open(str(tmp_path / "server0" / "pty.log"), errors="replace").read()
    assert "RuntimeError: the config file's third read" in out
    assert "[ERROR] the new code did not start; waiting up to 30s for the children" in log


COLD_APP = '''import time
FIRST = [True]


def app(environ, start_response):
    if FIRST[0]:   # a first request that builds for 1.5 s (a heavy lazy import), then fast
        FIRST[0] = False
        time.sleep(1.5)
    start_response("200 OK", [("Content-Type", "text/plain")])
    return [b"version 2\\n"]


PAD = %r
'''


def test_new_code_whose_first_request_takes_over_a_second_passes_its_trial(start_server,
                                                                           tmp_path):
    """The trial waits up to 30 s for the warm-up's answer, but its client
    gave up after 1 s of silence: good code whose first request is slow was
    refused ("answered no response"), every HUP, with no hint why."""
    server, module = start_app(start_server, tmp_path)
    module.write_text(COLD_APP % ("x" * 100))   # another size: the .pyc is not trusted
    server.signal(signal.SIGHUP)
    reloaded(server)
    assert http_get(server, "/")[2] == b"version 2\n"
    assert "reload failed" not in server.log_text()


@needs(importlib.util.find_spec("django") is not None, "Django is not installed")
def test_a_view_that_does_not_compile_fails_the_trial(start_server, tmp_path):
    """Django imports its URLconf, and the views, at the first request: the
    trial runs the warm-up's request too, so a broken view is a failed
    reload, the old code serving, not a new parent that answers 500."""
    project, views, env = django_project(tmp_path)
    server = start_server("mysite.wsgi", "--chdir", str(project), env=env)
    wait_for(lambda: "prewarm GET /" in server.log_text(), 30, "the warm-up")
    views.write_text(views.read_text() + "\nbroken = (\n")
    server.signal(signal.SIGHUP)
    wait_for(lambda: "reload failed" in server.log_text(), RELOAD_SECONDS, "the refusal")
    log = server.log_text()
    assert "the new code's warm-up GET / answered" in log and "SyntaxError" in log, log
    # Stamped as the server's lines are, with the trial's pid (they were bare).
    trial = re.search(r"\] \[(\d+)\] \[ERROR\] cannot load app 'mysite.wsgi'", log)
    assert trial and int(trial[1]) != server.pid, log
    assert http_get(server, "/hello/")[2] == b"the first view\n"
    assert "fresh interpreter, pid" not in log


def test_a_pidfile_the_config_file_moves_is_not_left_behind(start_server, tmp_path):
    config = tmp_path / "gunicorn.conf.py"
    first, second = tmp_path / "first.pid", tmp_path / "second.pid"
    config.write_text("pidfile = %r\n" % str(first))
    server, module = start_app(start_server, tmp_path, "-c", str(config))
    assert first.read_text() == "%d\n" % server.pid
    config.write_text("pidfile = %r\n" % str(second))
    server.signal(signal.SIGHUP)
    reloaded(server)
    assert second.read_text() == "%d\n" % server.pid and not first.exists()


def test_a_usr2_during_a_hups_trial_is_refused_and_the_reload_completes(start_server,
                                                                         tmp_path):
    """An upgrade's new parent and a HUP's exec would each take the sockets;
    the exec would leave the new parent's handover to a process image that
    no longer knows it.  So one at a time: USR2 waits for the HUP."""
    server, module = start_app(start_server, tmp_path)
    write_app(module, 2, import_delay=IMPORT_DELAY_SECONDS)
    server.signal(signal.SIGHUP)
    wait_for(lambda: "the new code is tried" in server.log_text(), 10, "the trial")
    server.signal(signal.SIGUSR2)
    wait_for(lambda: "upgrade refused: a reload is under way (trial" in server.log_text(), 10,
             "the refusal")
    reloaded(server)
    assert http_get(server, "/")[2] == b"version 2\n"
    assert server.ps.is_running() and "SIGUSR2: upgrading" not in server.log_text()


def test_a_hup_during_an_upgrade_is_left_to_the_new_parent(tmp_path):
    app_dir = tmp_path / "app"
    app_dir.mkdir()
    write_app(app_dir / "hupapp.py", 1)
    server = Detached(tmp_path, ["hupapp:app", "--chdir", str(app_dir)])
    try:
        write_app(app_dir / "hupapp.py", 2, import_delay=IMPORT_DELAY_SECONDS)
        os.kill(server.pid, signal.SIGUSR2)
        server.wait_log("SIGUSR2: upgrading")
        os.kill(server.pid, signal.SIGHUP)
        server.wait_log("SIGHUP: not reloading: an upgrade is under way")
        new, _ = server.ready(2)
        wait_for(lambda: server.get_or_error() == "version 2\n", RELOAD_SECONDS, "the new code")
        assert "fresh interpreter" not in server.log_text()
        assert new != server.pid
    finally:
        server.close()


@needs(os.geteuid() == 0, "--user needs root")
def test_a_hup_the_dropped_user_cannot_start_keeps_the_old_code(start_server, tmp_path):
    """After --user the parent can open again only what that user may: here
    the log files (root's, in a directory of root's), and on this machine the
    interpreter too (under /root).  The trial runs as that user and fails
    with the reason, so the server is never executed into a start that
    cannot succeed: the old code serves on."""
    server = start_server("tests.apps:hello", "--user", "nobody")
    server.signal(signal.SIGHUP)
    wait_for(lambda: "reload failed, still serving the previous code" in server.log_text(),
             RELOAD_SECONDS, "the failed trial")
    assert http_get(server, "/")[0] == 200
    assert "fresh interpreter, pid" not in server.log_text()


def test_a_usr2_parent_executed_by_a_hup_still_refuses_usr2_while_the_old_one_drains(
        tmp_path):
    """USR2 makes N, the old parent O drains (a slow request); a HUP to N
    executes N afresh; N must still know O, whose pidfile.oldbin a second
    upgrade would otherwise take over."""
    app_dir = tmp_path / "app"
    app_dir.mkdir()
    write_app(app_dir / "hupapp.py", 1)
    server = Detached(tmp_path, ["hupapp:app", "--chdir", str(app_dir)])
    try:
        thread = threading.Thread(target=server.get_or_error, args=("/slow",))
        thread.start()
        wait_for(lambda: psutil_children(server.pid), 5, "the slow child")
        os.kill(server.pid, signal.SIGUSR2)
        new, _ = server.ready(2)
        server.wait_log("this parent (%d) stops accepting and drains" % server.pid)
        os.kill(new, signal.SIGHUP)
        server.wait_log("reloaded hupapp:app in a fresh interpreter, pid %d kept" % new)
        os.kill(new, signal.SIGUSR2)
        server.wait_log("upgrade refused: the previous parent %d is still draining" % server.pid)
        thread.join(15)
    finally:
        server.close()


def psutil_children(pid):
    import psutil
    try:
        return psutil.Process(pid).children()
    except psutil.Error:
        return []


def test_a_unix_socket_a_hup_drops_from_bind_loses_its_file(start_server, tmp_path):
    """The old code bound it, the new config file no longer names it: the
    new code closes it and, once it serves, removes its file (before, the
    file stayed behind, even after the stop)."""
    config, unix = tmp_path / "gunicorn.conf.py", tmp_path / "dropped.sock"
    config.write_text("bind = ['127.0.0.1:0', 'unix:%s']\n" % unix)
    server, module = start_app(start_server, tmp_path, "-c", str(config), default_bind=False)
    assert unix.exists()
    config.write_text("bind = ['127.0.0.1:0']\n")
    server.signal(signal.SIGHUP)
    reloaded(server)
    wait_for(lambda: not unix.exists(), 10, "the dropped socket's file to go")
    assert http_get(server, "/")[0] == 200


def test_a_hup_after_the_old_release_was_deleted_serves_the_new_one(start_server, tmp_path):
    """--chdir current, current -> rel1; a deploy points current at rel2,
    deletes rel1 and sends HUP: the parent's working directory is gone (it
    crashed on os.getcwd() with the signals blocked); the new code starts
    in current by name."""
    for release, version in (("rel1", 1), ("rel2", 2)):
        (tmp_path / release).mkdir()
        write_app(tmp_path / release / "hupapp.py", version)
    os.symlink("rel1", str(tmp_path / "current"))
    server = start_server("hupapp:app", "--chdir", str(tmp_path / "current"))
    wait_for(lambda: "prewarm GET /" in server.log_text(), 10, "the warm-up")
    os.symlink("rel2", str(tmp_path / "next"))
    os.replace(str(tmp_path / "next"), str(tmp_path / "current"))
    import shutil
    shutil.rmtree(str(tmp_path / "rel1"))
    server.signal(signal.SIGHUP)
    reloaded(server)
    assert http_get(server, "/")[2] == b"version 2\n"


def test_the_operators_own_forkserver_variables_reach_the_new_code(start_server, tmp_path):
    """Only the variables forkserver passes to itself are left out of the
    new code's environment, not every FORKSERVER_* name."""
    server, module = start_app(start_server, tmp_path, extra_env={"FORKSERVER_MINE": "kept"})
    module.write_text("import os\n" + module.read_text().replace(
        "VERSION = 1", "VERSION = os.environ.get('FORKSERVER_MINE')"))
    server.signal(signal.SIGHUP)
    reloaded(server)
    assert http_get(server, "/")[2] == b"version kept\n"


def test_a_second_stop_while_the_failed_start_waits_ends_it_without_a_traceback(
        start_server, tmp_path):
    server, module = start_app(start_server, tmp_path)
    thread, got = in_background(server, "/slow")
    wait_for(lambda: server.children(), 5, "the slow child")
    fail_the_second_import(module, tmp_path / "imports")
    server.signal(signal.SIGHUP)
    server.proc.expect("waiting up to", timeout=RELOAD_SECONDS)   # the old code's child
    server.signal(signal.SIGTERM)   # a second stop: now, as a second stop escalates
    assert server.wait_exit() == -signal.SIGTERM
    thread.join(10)
    out = (tmp_path / "server0" / "pty.log").read_text(errors="replace")
    after = out.partition("waiting up to")[2]   # before it: the app's own import error
    assert after and "Traceback" not in after, out


def test_what_the_app_starts_in_the_trial_ends_with_it(start_server, tmp_path):
    """A process the app starts at import (a queue worker, an agent) is
    started by each trial too; it must not outlive the trial, holding the
    live listening sockets after the server stops."""
    server, module = start_app(start_server, tmp_path)
    spawned = tmp_path / "spawned"
    module.write_text(
        "import os, subprocess\n"
        "_p = subprocess.Popen(['sleep', '60'])\n"
        "with open(%r, 'a') as _f:\n    _f.write('%%d %%d\\n' %% (os.getpid(), _p.pid))\n"
        % str(spawned) + module.read_text().replace("VERSION = 1", "VERSION = 2"))
    server.signal(signal.SIGHUP)
    reloaded(server)
    assert http_get(server, "/")[2] == b"version 2\n"
    pairs = [line.split() for line in spawned.read_text().splitlines()]
    trial = [int(child) for importer, child in pairs if int(importer) != server.pid]
    try:
        assert trial, pairs
        wait_for(lambda: not any(alive(pid) for pid in trial), 10, "the trial's sleep to end")
    finally:   # the server's own imports started one each too: ours to stop
        for _, child in pairs:
            try:
                os.kill(int(child), signal.SIGKILL)
            except OSError:
                pass


def test_a_stop_during_the_trial_ends_what_the_app_started_in_it(tmp_path):
    """A SIGTERM while the trial imports: cancel() killed the trial alone
    (its group only when reaped, and a stopping server may exit first), so
    what the app had started there lived on, orphaned.  Here the trial is
    a shell leading its group, with a sleep of its own."""
    pids = tmp_path / "pids"
    trial = subprocess.Popen(["sh", "-c", "sleep 60 & echo $! > %s; wait" % pids],
                             start_new_session=True)
    reexec = Reexec(log=None, blocked=(), exit_names={})
    try:
        wait_for(lambda: pids.exists() and pids.read_text().strip(), 10, "the trial's sleep")
        sleep = int(pids.read_text())
        reexec.trial = trial.pid
        reexec.cancel()
        assert trial.wait(10) == -signal.SIGKILL
        wait_for(lambda: not alive(sleep), 10, "the trial's sleep to end")
    finally:
        kill_tree(trial.pid)
        if pids.exists() and pids.read_text().strip():
            try:
                os.kill(int(pids.read_text()), signal.SIGKILL)
            except OSError:
                pass


PAUSE_APP = '''import time
VERSION = %r


def app(environ, start_response):
    time.sleep(0.2)   # every request: a page that queries for 0.2 s
    start_response("200 OK", [("Content-Type", "text/plain")])
    return [b"version %%d\\n" %% VERSION]
'''


def test_the_new_codes_explicit_warm_up_hurries_while_clients_wait(start_server, tmp_path):
    """--prewarm PATH at a start runs its 16 passes (30 s at most); after a
    HUP's exec the clients wait in the backlog meanwhile, so the passes
    after the first stop within a second, as the default warm-up's do."""
    app_dir = tmp_path / "app"
    app_dir.mkdir()
    (app_dir / "pauseapp.py").write_text(PAUSE_APP % 1)
    server = start_server("pauseapp:app", "--chdir", str(app_dir), "--prewarm", "/page")
    assert "prewarm GET /page: HTTP/1.1 200 OK (16 passes)" in server.log_text()
    (app_dir / "pauseapp.py").write_text(PAUSE_APP % 22)
    server.signal(signal.SIGHUP)
    wait_for(lambda: "reloaded pauseapp:app in a fresh interpreter" in server.log_text(),
             RELOAD_SECONDS, "the reload")
    assert http_get(server, "/")[2] == b"version 22\n"
    passes = re.findall(r"prewarm GET /page: HTTP/1.1 200 OK \((\d+) passes\)",
                        server.log_text())
    assert len(passes) == 2 and 1 <= int(passes[1]) < 16, passes


def test_a_broken_hup_under_python_i_is_refused_not_executed(start_server, tmp_path):
    """python -i forkserver.py: the trial kept -i, its exit 3 became a
    prompt on /dev/null, which exits 0, so broken code passed its trial and
    the server died executing it."""
    server, module = start_app(start_server, tmp_path, python_args=["-i"])
    module.write_text(module.read_text() + "\nbroken = (\n")
    server.signal(signal.SIGHUP)
    wait_for(lambda: "reload failed" in server.log_text(), RELOAD_SECONDS, "the refusal")
    assert "trial exited with status 3" in server.log_text()
    assert http_get(server, "/")[2] == b"version 1\n"
    server.signal(signal.SIGTERM)
    wait_for(lambda: "stopped:" in server.log_text(), RELOAD_SECONDS, "the stop")
    # Stopped; -i's prompt, the user's own, waits on the terminal (3.13's
    # REPL does not take pexpect's EOF as the older one does): ended here.
    server.proc.kill(signal.SIGKILL)
    server.proc.wait()


COUNTING_CONFIG = """
def on_reload(server):
    with open({notes!r}, "a") as f:
        f.write("children %d\\n" % len(server.children))
"""


def test_on_reload_sees_the_children_of_the_previous_code(start_server, tmp_path):
    """gunicorn's on_reload runs with the old workers still in its table; the
    new code ran it before it had adopted the children still serving."""
    notes = tmp_path / "notes"
    config = tmp_path / "conf.py"
    config.write_text(COUNTING_CONFIG.format(notes=str(notes)))
    server, module = start_app(start_server, tmp_path, "-c", str(config))
    thread, got = in_background(server, "/slow")
    wait_for(lambda: server.children(), 5, "the slow child")
    write_app(module, 2)
    server.signal(signal.SIGHUP)
    reloaded(server)
    wait_for(lambda: notes.exists() and notes.read_text(), 5, "on_reload")
    thread.join(10)
    assert notes.read_text() == "children 1\n"
    assert got.get("response", (None,))[0] == 200, got


TIMED_CONFIG = """
import os, signal
if "FORKSERVER_TRIAL" in os.environ:   # what is left of the trial's alarm, here
    left = signal.alarm(0)
    signal.alarm(left)
    with open(%r, "w") as f:
        f.write(str(left))
"""


def test_the_trials_time_limit_covers_its_config_file(start_server, tmp_path):
    """A config file that hangs in the trial (a mount gone, a secret store
    that does not answer) held every later HUP and USR2 back: the trial's
    alarm was set only after the config file had run."""
    left = tmp_path / "left"
    config = tmp_path / "conf.py"
    config.write_text(TIMED_CONFIG % str(left))
    server, module = start_app(start_server, tmp_path, "-c", str(config))
    write_app(module, 2)
    server.signal(signal.SIGHUP)
    reloaded(server)
    assert 0 < int(left.read_text()) <= 120


def test_the_interpreters_options_survive_a_hup_and_a_usr2(tmp_path):
    """python -O -W ... forkserver.py: the exec'd parent ran sys.executable
    with sys.argv, without the interpreter's options (python -u came back
    block-buffered after a HUP, -O and -X dev undone).  Detached, as a
    service manager starts it: a terminal's hangup when the old parent
    leaves would end the new one's children (docs/operations.md)."""
    app_dir = tmp_path / "app"
    app_dir.mkdir()
    (app_dir / "flagsapp.py").write_text(
        "import sys\n"
        "def app(environ, start_response):\n"
        "    body = ('%d %s' % (sys.flags.optimize, sys.warnoptions)).encode()\n"
        "    start_response('200 OK', [('Content-Length', str(len(body)))])\n"
        "    return [body]\n")
    server = Detached(tmp_path, ["flagsapp:app", "--chdir", str(app_dir)],
                      python_args=["-O", "-W", "always::SyntaxWarning"])
    try:
        expected = "1 ['always::SyntaxWarning']"
        assert server.get() == expected
        os.kill(server.pid, signal.SIGHUP)
        server.wait_log("reloaded flagsapp:app in a fresh interpreter")
        assert server.get() == expected
        os.kill(server.pid, signal.SIGUSR2)
        server.ready(2)
        assert server.proc.wait(RELOAD_SECONDS) == 0   # the old parent, drained
        assert server.get() == expected
    finally:
        server.close()


def alive(pid):
    try:
        with open("/proc/%d/stat" % pid) as f:
            return f.read().split(") ", 1)[1][0] not in "ZX"
    except OSError:
        return False


def test_what_is_carried_reads_back_as_written(tmp_path):
    """The children and held connections, through the file, both ways; the
    children in a file, not the environment (execve's 128 KiB a string)."""
    class Child:
        pid, started, deadline, age, addr = 4321, 12.5, 44.25, 7, ("::1", 5555)
    assert parse_child(child_record(Child)) == (4321, ("::1", 5555), 12.5, 44.25, 7)
    many = []
    for pid in range(2, 3002):
        child = Child()
        child.pid, child.addr = pid, ("127.0.0.1", 40000) if pid % 2 else ""
        many.append(child)
    a, b = socket.socketpair()

    class Held:
        accepted_at, deadline, idle, state, data = 1.5, 11.5, False, 0, bytearray(b"GET / HT")
    fd = write_carried(many, {a.fileno(): Held}, ["/run/x.sock", "/tmp/y z.sock"])
    a.detach()   # the file names it; read_carried takes it over
    children, unix_paths, held = read_carried(fd)
    assert unix_paths == ["/run/x.sock", "/tmp/y z.sock"]
    assert len(children) == 3000 and children[0] == (2, "", 12.5, 44.25, 7)
    assert children[1] == (3, ("127.0.0.1", 40000), 12.5, 44.25, 7)
    ((sock, accepted_at, deadline, idle, state, data),) = held
    assert (accepted_at, deadline, idle, state, data) == (1.5, 11.5, 0, 0, b"GET / HT")
    sock.sendall(b"x")
    assert b.recv(1) == b"x"
    sock.close()
    b.close()
    os.environ.pop("FORKSERVER_REEXEC", None)
    assert Carried.from_environ() is None


def test_a_held_body_keeps_its_rate_clock_across_the_exec():
    """A small body the accept filter held, trickling in: its deadline is
    the head's time + the grace + a second per --min-body-rate bytes.  The
    new code took the exec's moment for the head's, so the next bytes set
    a deadline up to the exec's age too early (cut early); and with
    --min-body-rate 0 in the new config it divided by zero."""
    from tests.parts.test_acceptfilter import filter_for_test
    head = b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 4000\r\n\r\n"
    for rate, held_state in ((500.0, BODY_INCOMPLETE), (0.0, READY)):
        flt, forked = filter_for_test()
        flt.opts.min_body_rate, flt.bodies = rate, rate > 0
        ours, theirs = socket.socketpair()
        server = SimpleNamespace(opts=flt.opts, filter=flt, parked=flt.parked,
                                 poller=flt.poller)
        head_at, received = 100.0, 1000   # the head came in at 100.0, then 1000 bytes
        deadline = head_at + flt.opts.header_timeout + received / 500.0
        hold_again(server, ours, 90.0, deadline, False, BODY_INCOMPLETE, head + b"x" * received)
        parked = flt.parked[ours.fileno()]
        assert parked.deadline == deadline and parked.state == held_state
        if rate:
            assert parked.head_at == head_at
            theirs.sendall(b"x" * 500)
            flt.on_readable(ours.fileno())   # 500 bytes more: a second more, from the head
            assert parked.deadline == head_at + flt.opts.header_timeout + 1500 / 500.0
        ours.close()
        theirs.close()


def test_a_trial_that_cannot_fork_is_a_failed_reload_not_an_exec(monkeypatch):
    """fork() failing (EAGAIN at a pids limit) must not leave the server to
    run the trial's branch: one error line, and the next HUP may try again."""
    lines = []
    log = SimpleNamespace(info=lines.append, error=lines.append, error_fd=2)
    server = SimpleNamespace(upgrade=SimpleNamespace(child=0), loader=SimpleNamespace(spec="a:b"),
                             pid=os.getpid(), log=log, listeners={},
                             sigmask=signal.pthread_sigmask)

    def no_fork():
        raise BlockingIOError(errno.EAGAIN, "Resource temporarily unavailable")
    monkeypatch.setattr(os, "fork", no_fork)
    reexec = Reexec(log, (signal.SIGHUP,), {})
    reexec.begin(server, "SIGHUP")
    assert reexec.trial is None and reexec.refusal() is None
    assert lines[-1] == ("reload failed, still serving the previous code: cannot fork the "
                         "trial: Resource temporarily unavailable"), lines
    assert signal.SIGHUP not in signal.pthread_sigmask(signal.SIG_BLOCK, [])


def test_a_signal_noted_before_the_exec_is_acted_on_by_the_new_code(start_server, tmp_path):
    """A SIGTERM whose handler ran while on_reload did its work (noted, not
    yet handled) was dropped by execve: the server served on.  It is sent
    again, blocked, before the exec, and the new code stops."""
    notes = tmp_path / "on_reload"
    config = tmp_path / "hooks.conf.py"
    config.write_text("import time\n"
                      "def on_reload(server):\n"
                      "    open(%r, 'w').close()\n"
                      "    time.sleep(1.5)\n" % str(notes))
    server, module = start_app(start_server, tmp_path, "-c", str(config))
    write_app(module, 2)
    server.signal(signal.SIGHUP)
    wait_for(notes.exists, RELOAD_SECONDS, "on_reload")
    server.signal(signal.SIGTERM)
    assert server.wait_exit() == 0


def test_an_fd_bind_survives_more_than_one_hup(tmp_path):
    """--bind fd://N: the new code makes N its own (not inherited by the
    app's subprocesses); the next trial must still be able to check it."""
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    port, fd = listener.getsockname()[1], listener.fileno()
    app_dir = tmp_path / "app"
    app_dir.mkdir()
    write_app(app_dir / "hupapp.py", 1)
    log = tmp_path / "error.log"
    out = tmp_path / "out.log"
    proc = subprocess.Popen([sys.executable, FORKSERVER, "hupapp:app", "--chdir", str(app_dir),
                             "--bind", "fd://%d" % fd, "--no-access-log", "--error-log", str(log)],
                            cwd=ROOT, pass_fds=(fd,), stdout=open(str(out), "wb"))
    try:
        listener.close()
        wait_for(lambda: b"forkserver ready" in out.read_bytes(), 30, "the start")
        for version in (2, 3):
            write_app(app_dir / "hupapp.py", version)
            proc.send_signal(signal.SIGHUP)
            wait_for(lambda: log.read_text().count("in a fresh interpreter, pid") == version - 1,
                     RELOAD_SECONDS, "reload %d" % (version - 1))
            conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
            conn.request("GET", "/")
            assert conn.getresponse().read() == b"version %d\n" % version
            conn.close()
        assert "reload failed" not in log.read_text()
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(30) == 0
    finally:
        kill_tree(proc.pid)


def test_a_failing_explicit_warm_up_fails_the_trial(start_server, tmp_path):
    """--prewarm PATH that fails stops a start (exit 3): the trial runs it,
    so the reload fails and the old code serves on."""
    server, module = start_app(start_server, tmp_path, "--prewarm", "/")
    module.write_text(module.read_text().replace(
        "    body = (", "    if environ.get('forkserver.warmup'):\n"
                        "        raise RuntimeError('no warm-up today')\n    body = (", 1)
        .replace("VERSION = 1", "VERSION = 22"))
    server.signal(signal.SIGHUP)
    wait_for(lambda: "reload failed" in server.log_text(), RELOAD_SECONDS, "the refusal")
    assert "no warm-up today" in server.log_text()
    assert http_get(server, "/")[2] == b"version 1\n"


def test_a_warm_up_that_fails_only_after_the_trial_serves_the_new_code_unwarmed(
        start_server, tmp_path):
    """The explicit warm-up failing in the new code although it passed in
    the trial (a service gone meanwhile): there is no old code to go back
    to, so the new code serves, unwarmed, with a warning; not exit 3."""
    server, module = start_app(start_server, tmp_path, "--prewarm", "/")
    counter = tmp_path / "imports"
    module.write_text(
        "import os\n"
        "with open(%r, 'a') as _f:\n    _f.write('x')\n"
        "SECOND = os.path.getsize(%r) > 1\n" % (str(counter), str(counter))
        + module.read_text().replace(
            "    body = (", "    if SECOND and environ.get('forkserver.warmup'):\n"
                           "        raise RuntimeError('gone since the trial')\n    body = (", 1)
        .replace("VERSION = 1", "VERSION = 33"))
    server.signal(signal.SIGHUP)
    wait_for(lambda: "serving it unwarmed" in server.log_text(), RELOAD_SECONDS, "the warning")
    assert server.ps.is_running()
    assert http_get(server, "/")[2] == b"version 33\n"
    wait_for(lambda: "a HUP now reloads its modules in place" in server.log_text(), 10,
             "the line that says HUP changed its way")


def test_the_new_code_starts_in_the_environment_the_server_was_started_with(start_server,
                                                                            tmp_path):
    """Not the old code's: Django's wsgi.py does os.environ.setdefault(
    "DJANGO_SETTINGS_MODULE", ...), which an exec passing os.environ on
    would keep at its first value forever."""
    server, module = start_app(start_server, tmp_path)
    source = module.read_text()
    module.write_text("import os\nos.environ.setdefault('HUP_SETTING', 'first')\n" + source
                      .replace("VERSION = 1", "VERSION = os.environ['HUP_SETTING']"))
    server.signal(signal.SIGHUP)
    reloaded(server)
    assert http_get(server, "/")[2] == b"version first\n"
    module.write_text(module.read_text().replace("'first'", "'second'"))
    server.signal(signal.SIGHUP)
    reloaded(server, 2)
    assert http_get(server, "/")[2] == b"version second\n"


def test_a_kept_alive_connection_is_not_stuck_when_the_config_drops_keep_alive(start_server,
                                                                            tmp_path):
    config = tmp_path / "forkserver.conf.py"
    config.write_text("keep_alive = 10\n")
    server, module = start_app(start_server, tmp_path, "-c", str(config))
    conn = http.client.HTTPConnection(server.host, server.port, timeout=10)
    try:
        conn.request("GET", "/")
        assert conn.getresponse().read() == b"version 1\n"
        config.write_text("keep_alive = 0\n")
        server.signal(signal.SIGHUP)
        reloaded(server)
        conn.sock.settimeout(10)
        assert conn.sock.recv(1) == b""   # closed as idle, not held in an unread socket
    finally:
        conn.close()
