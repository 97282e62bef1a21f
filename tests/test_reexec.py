"""SIGHUP in a warmed parent: the same process executes itself afresh
(forkparts/reexec.py).  What it carries across execve, checked from outside:
children in flight, kept-alive connections, a head still arriving, the
signals that come meanwhile, and a new start that fails."""
import http.client
import os
import signal
import socket
import threading
import time

from forkparts.reexec import Carried, HELD_RECORD, child_record, parse_child
from tests.conftest import http_get, needs, read_until_close, wait_for, wait_no_zombies
from tests.test_signals import Detached

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
    assert server.ps.is_running() and child.pid not in [c.pid for c in server.children()]
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
    with server.connect() as sock:
        sock.sendall(b"GET / HTTP/1.1\r\nHost: x\r\n")
        time.sleep(0.2)
        assert not server.children()   # the parent holds it: no child before the whole head
        write_app(module, 2)
        server.signal(signal.SIGHUP)
        reloaded(server)
        sock.sendall(b"Connection: close\r\n\r\n")
        answer = read_until_close(sock)
    assert answer.startswith(b"HTTP/1.1 200 ") and answer.endswith(b"version 2\n"), answer


def test_a_term_during_the_exec_stops_gracefully_and_loses_nothing(start_server, tmp_path):
    """The signals wait, blocked, across execve until the new code handles
    them: a SIGTERM right after the HUP is a graceful stop (the request in
    flight is answered), not the default action that would end the process
    and, by PR_SET_PDEATHSIG, its children."""
    server, module = start_app(start_server, tmp_path)
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
    assert "SIGTERM: stopping (graceful)" in server.log_text()


def environ_of(pid):
    try:
        with open("/proc/%d/environ" % pid, "rb") as f:
            return f.read().decode(errors="replace")
    except OSError:
        return ""


def test_a_new_start_that_fails_after_its_trial_waits_for_the_children(start_server, tmp_path):
    """The trial loads the app; binding is the start's.  A config edited to
    bind an address that is taken passes the trial and fails the start: the
    process then waits for the children of the old code before it exits
    (they die with it), so the request in flight is answered."""
    taken = socket.socket()
    taken.bind(("127.0.0.1", 0))
    taken.listen(1)
    config = tmp_path / "gunicorn.conf.py"
    config.write_text("bind = ['127.0.0.1:0']\n")
    try:
        server, module = start_app(start_server, tmp_path, "-c", str(config),
                                   default_bind=False)
        thread, got = in_background(server, "/slow")
        wait_for(lambda: server.children(), 5, "the slow child")
        config.write_text("bind = ['127.0.0.1:0', '127.0.0.1:%d']\n"
                          % taken.getsockname()[1])
        server.signal(signal.SIGHUP)
        assert server.wait_exit() == 4   # EXIT_LISTEN
        thread.join(10)
        assert got.get("response", (None,))[0] == 200, got
        out = open(str(tmp_path / "server0" / "pty.log"), errors="replace").read()
        assert "waiting up to 30s for the children of the previous code (1)" in out, out
    finally:
        taken.close()


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
    assert server.ps.is_running() and not [c for c in server.children()
                                           if "forkserver" in " ".join(c.cmdline())]


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


def test_what_is_carried_reads_back_as_written(tmp_path):
    """The environment's records, both ways (no process needed)."""
    class Child:
        pid, started, deadline, age, addr = 4321, 12.5, 44.25, 7, ("::1", 5555)
    assert parse_child(child_record(Child)) == (4321, ("::1", 5555), 12.5, 44.25, 7)
    Child.addr = ""
    assert parse_child(child_record(Child))[1] == ""
    assert HELD_RECORD.size == 4 + 8 + 8 + 1 + 1 + 4
    os.environ.pop("FORKSERVER_REEXEC", None)
    assert Carried.from_environ() is None
