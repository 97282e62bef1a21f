"""Bad input to the server itself gets a clear error and loses nothing (issue
14, part 7): absurd numbers, abbreviated options, pidfiles and status files in
bad places or with a name planted beside them, --max-pending beyond the
descriptor limit, an explicit --prewarm that fails."""
import contextlib
import importlib.util
import json
import os
import pwd
import resource
import select
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time

import pytest

from tests.conftest import FORKSERVER, ROOT, READY_RE, dead_pid, needs, read_until_close
from tests.parts.test_cli import EXIT_APP_LOAD, EXIT_USAGE, assert_one_clear_line, run_cli, write_module

STATUS_INTERVAL_SECONDS = 1.0   # forkserver.STATUS_INTERVAL_SECONDS
START_SECONDS = 20


@pytest.mark.parametrize("args, option", [
    (("--timeout", "inf"), "--timeout"),
    (("--timeout", "nan"), "--timeout"),
    (("--graceful-timeout", "-inf"), "--graceful-timeout"),
    (("--keep-alive", "1e300"), "--keep-alive"),
    (("--header-timeout", "0"), "--header-timeout"),
    (("--read-timeout", "1e20"), "--read-timeout"),
    (("--max-children", "99999999999999999999"), "--max-children"),
    (("--backlog", "99999999999999999999"), "--backlog"),
    (("--limit-cpu", "12345678901234567890"), "--limit-cpu"),
    (("--limit-memory", "1e300"), "--limit-memory"),
    (("--max-fork-rate", "inf"), "--max-fork-rate"),
    (("--max-body", "1e3"), "--max-body"),
    (("--max-pending", "\u0663"), "--max-pending"),          # ARABIC-INDIC DIGIT THREE
    (("--bind", "127.0.0.1:\u00b2"), "--bind"),               # SUPERSCRIPT TWO
    (("--bind", "127.0.0.1:99999999999999999999"), "--bind"),
    (("--bind", "fd://\u0663"), "--bind"),
])
def test_absurd_number_is_exit_2_naming_the_option(args, option):
    result = run_cli("examples.hello:app", *args)
    assert result.returncode == EXIT_USAGE, result.stderr
    assert option in result.stderr and "Traceback" not in result.stderr
    assert "ready" not in result.stdout


@pytest.mark.parametrize("setting, value", [
    ("timeout", 'float("inf")'),
    ("keep_alive", "1e300"),
    ("max_children", "10 ** 20"),
    ("max_fork_rate", 'float("nan")'),
])
def test_absurd_number_in_a_config_file_is_exit_2_naming_the_setting(tmp_path, setting, value):
    config = tmp_path / "conf.py"
    config.write_text("%s = %s\n" % (setting, value))
    result = run_cli("examples.hello:app", "--config", str(config))
    assert result.returncode == EXIT_USAGE, result.stderr
    assert setting in result.stderr and "Traceback" not in result.stderr


def test_an_abbreviated_option_is_not_taken_for_a_longer_one():
    # An abbreviation must not silently mean --max-requests-per-connection
    # (gunicorn's own --max-requests is accepted with a warning: test_cli.py).
    result = run_cli("examples.hello:app", "--max-requests-per", "1000")
    assert result.returncode == EXIT_USAGE
    assert "--max-requests-per" in result.stderr and "Traceback" not in result.stderr


def test_pidfile_in_a_missing_directory_is_one_line_and_removes_the_unix_socket(tmp_path):
    sock = tmp_path / "fs.sock"
    result = run_cli("examples.hello:app", "--bind", "unix:%s" % sock,
                     "--pidfile", str(tmp_path / "missing" / "fs.pid"))
    assert result.returncode == EXIT_USAGE
    assert_one_clear_line(result, "--pidfile", "No such file or directory")
    assert not sock.exists()


def test_status_file_in_a_missing_directory_is_one_line(tmp_path):
    result = run_cli("examples.hello:app", "--pidfile", str(tmp_path / "fs.pid"),
                     "--status-file", str(tmp_path / "missing" / "status.json"))
    assert result.returncode == EXIT_USAGE
    assert_one_clear_line(result, "--status-file", "no such directory")
    assert not (tmp_path / "fs.pid").exists()


def nobody():
    needs(os.geteuid() == 0, "root, to run the server as nobody")
    return pwd.getpwnam("nobody")


def test_status_file_in_a_directory_the_user_cannot_write_is_one_line(tmp_path):
    nobody()
    closed = tempfile.mkdtemp(prefix="forkserver-closed-")   # 0700 root's, in /tmp
    try:
        os.chmod(closed, 0o755)          # nobody may look, not write
        result = run_cli("examples.hello:app", "--user", "nobody",
                         "--status-file", os.path.join(closed, "status.json"))
        assert result.returncode == EXIT_USAGE
        assert_one_clear_line(result, "--status-file", "not writable by uid")
        os.chmod(closed, 0o700)          # nobody may not even look
        result = run_cli("examples.hello:app", "--user", "nobody",
                         "--status-file", os.path.join(closed, "sub", "status.json"))
        assert result.returncode == EXIT_USAGE
        assert_one_clear_line(result, "--status-file", "Permission denied")
    finally:
        os.rmdir(closed)


def start(args, cwd=ROOT, preexec_fn=None, command=(sys.executable, FORKSERVER), env=None):
    proc = subprocess.Popen(list(command) + list(args), cwd=cwd, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            preexec_fn=preexec_fn)
    line = proc.stdout.readline()
    match = READY_RE.match(line)
    if not match:
        proc.kill()
        proc.wait()
        raise AssertionError("no ready line: %r %r" % (line, proc.stderr.read()))
    proc.port = int(match.group(2).rpartition(b":")[2])
    return proc


def get(port):
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        sock.sendall(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
        return read_until_close(sock)


def stop(proc):
    proc.terminate()
    try:
        return proc.wait(START_SECONDS)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        proc.stderr_text = proc.stderr.read().decode(errors="replace")
        proc.stdout.close()
        proc.stderr.close()


def test_pidfile_is_written_before_dropping_privileges_and_owned_by_the_user(tmp_path):
    user = nobody()
    os.chmod(str(tmp_path), 0o1777)      # a sticky, shared directory, as /tmp
    pidfile = tmp_path / "fs.pid"
    pidfile.write_text("%d\n" % dead_pid())   # left by a root run killed with SIGKILL
    proc = start(["examples.hello:app", "--bind", "127.0.0.1:0", "--user", "nobody",
                  "--pidfile", str(pidfile), "--no-access-log"])
    try:
        assert pidfile.read_text() == "%d\n" % proc.pid
        # The user's own: in a sticky directory, a later run as that user
        # can replace (rename over) it.
        assert os.stat(str(pidfile)).st_uid == user.pw_uid
        assert [p for p in os.listdir(str(tmp_path)) if p.endswith(".tmp")] == []
    finally:
        stop(proc)
    assert "Traceback" not in proc.stderr_text


def test_a_user_that_cannot_read_the_python_installation_is_told_at_start():
    """With the interpreter under /root (mode 0700), as here, --user nobody
    can import nothing new after the drop: every request that needs a module
    not yet imported answers 500.  One warning at start says so; where that
    user can read the installation, none."""
    user = nobody()
    stdlib = os.path.dirname(os.__file__)
    readable = subprocess.run(["test", "-r", stdlib, "-a", "-x", stdlib], user=user.pw_uid,
                              group=user.pw_gid, extra_groups=[]).returncode == 0
    proc = start(["examples.hello:app", "--bind", "127.0.0.1:0", "--user", "nobody",
                  "--no-access-log"])
    assert stop(proc) == 0
    warned = "cannot read the Python installation (%s)" % stdlib in proc.stderr_text
    assert warned == (not readable), proc.stderr_text
    assert "Traceback" not in proc.stderr_text


def test_a_symlink_planted_at_the_status_files_temporary_name_is_not_followed(tmp_path):
    victim = tmp_path / "precious.txt"
    victim.write_text("precious\n")
    status = tmp_path / "status.json"
    proc = start(["examples.hello:app", "--bind", "127.0.0.1:0", "--no-access-log",
                  "--status-file", str(status)])
    try:
        # The name an older forkserver used for its temporary file: PATH.PID.tmp.
        planted = tmp_path / ("status.json.%d.tmp" % proc.pid)
        os.symlink(str(victim), str(planted))
        deadline = time.monotonic() + 10
        first = status.stat().st_mtime_ns if status.exists() else None
        while time.monotonic() < deadline:
            assert get(proc.port).startswith(b"HTTP/1.1 200")   # rewritten within 1 s
            time.sleep(STATUS_INTERVAL_SECONDS / 2)
            if status.exists() and status.stat().st_mtime_ns != first:
                break
        time.sleep(STATUS_INTERVAL_SECONDS * 1.5)
        assert victim.read_text() == "precious\n"
        assert json.loads(status.read_text())["pid"] == proc.pid
        assert os.path.islink(str(planted))
    finally:
        stop(proc)


def test_max_pending_is_bounded_by_the_descriptor_limit(tmp_path):
    def low_limit():
        resource.setrlimit(resource.RLIMIT_NOFILE, (200, 200))
    proc = start(["examples.hello:app", "--bind", "127.0.0.1:0", "--no-access-log",
                  "--max-pending", "5000"], preexec_fn=low_limit)
    try:
        assert get(proc.port).startswith(b"HTTP/1.1 200")
    finally:
        stop(proc)
    err = proc.stderr_text
    assert "--max-pending 5000 is more than RLIMIT_NOFILE (200) leaves room for" in err, err


def test_the_default_max_pending_fits_a_low_descriptor_limit_silently(tmp_path):
    def low_limit():
        resource.setrlimit(resource.RLIMIT_NOFILE, (200, 200))
    proc = start(["examples.hello:app", "--bind", "127.0.0.1:0", "--no-access-log"],
                 preexec_fn=low_limit)
    stop(proc)
    assert "max-pending" not in proc.stderr_text


def test_a_start_under_a_tiny_descriptor_limit_is_served_or_one_clear_line():
    """ulimit -n from 5 to 12: the parent's own descriptors, the allocator
    fill's copy of fd 2 and the warm-up's socketpairs and pipes meet the
    limit one after another.  Each start either serves (the warm-up, if it
    cannot run, says which call failed and which limit it met) or ends with
    one line naming the limit; before, tracebacks of our os.dup (the
    allocator fill) and of os.listdir (finding setproctitle)."""
    served = refused = unwarmed = 0
    for limit in range(5, 13):
        def low_limit(limit=limit):
            resource.setrlimit(resource.RLIMIT_NOFILE, (limit, limit))
        proc = subprocess.Popen([sys.executable, FORKSERVER, "examples.hello:app", "--bind",
                                 "127.0.0.1:0", "--no-access-log"], cwd=ROOT,
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                preexec_fn=low_limit)
        try:
            ready = select.select([proc.stdout], [], [], START_SECONDS)[0]
            match = READY_RE.match(proc.stdout.readline()) if ready else None   # b"": it ended
            if match:
                port = int(match.group(2).rpartition(b":")[2])
                assert get(port).startswith(b"HTTP/1.1 200"), limit
                served += 1
        finally:
            code = stop(proc)
        err = proc.stderr_text
        assert "Traceback" not in err, (limit, err)
        if match:
            if "not run" in err:
                assert "(a limit on open files, RLIMIT_NOFILE?)" in err, err
                unwarmed += 1
            continue
        refused += 1
        assert code == 1 and err.startswith("forkserver: error: out of file descriptors: "), err
        assert err.endswith("(ulimit -n is %d)\n" % limit) and err.count("\n") == 1, err
    assert served and refused and unwarmed, (served, refused, unwarmed)


FAILING_APP = """
    import sys

    def helper():
        raise RuntimeError("database is down")

    def app(environ, start_response):
        if environ["PATH_INFO"] == "/exit":
            sys.exit(3)
        helper()
"""


@pytest.mark.parametrize("path, error", [("/", "RuntimeError: database is down"),
                                         ("/exit", "SystemExit: 3")])
def test_an_explicit_prewarm_that_fails_stops_the_start_with_exit_3(tmp_path, path, error):
    write_module(tmp_path, "failingapp", FAILING_APP)
    result = run_cli("failingapp:app", "--prewarm", path, cwd=str(tmp_path))
    assert result.returncode == EXIT_APP_LOAD, result.stderr
    assert "ready" not in result.stdout
    err = result.stderr
    assert err.count("Traceback") == 1, err
    assert error in err and "failingapp.py" in err
    assert "wsgi_handler.py" not in err and "forkserver.py" not in err, err


@pytest.mark.parametrize("fmt", ["%(h)d", "%(h", "%s %s", "%(s)s %"])
def test_a_bad_access_log_format_is_refused_at_start(fmt):
    result = run_cli("examples.hello:app", "--access-log-format", fmt)
    assert result.returncode == EXIT_USAGE, result.stderr
    assert "--access-log-format" in result.stderr and "Traceback" not in result.stderr
    assert "ready" not in result.stdout


def test_the_access_log_counts_the_bytes_of_the_servers_own_error_response(start_server):
    server = start_server("tests.apps:boom")
    with server.connect() as sock:
        sock.sendall(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
        reply = read_until_close(sock)
    body = reply.partition(b"\r\n\r\n")[2]
    assert reply.startswith(b"HTTP/1.1 500") and body == b"500 Internal Server Error\n"
    deadline = time.monotonic() + 10
    while '"GET / HTTP/1.1" 500' not in server.access_text() and time.monotonic() < deadline:
        time.sleep(0.05)
    assert server.access_text().rstrip().endswith('"GET / HTTP/1.1" 500 %d' % len(body)), \
        server.access_text()


@needs(importlib.util.find_spec("setproctitle") is not None, "setproctitle (extra proctitle)")
@pytest.mark.parametrize("flag, shown", [((), False), (("--title-with-query",), True)])
def test_process_titles_hide_the_query_string_unless_asked(start_server, flag, shown):
    server = start_server("tests.apps:slow", *flag)
    with server.connect() as sock:
        sock.sendall(b"GET /?s=1&token=s3cret HTTP/1.1\r\nHost: x\r\n\r\n")
        deadline, title = time.monotonic() + 10, ""
        while "GET" not in title and time.monotonic() < deadline:
            kids = server.children()
            title = " ".join(kids[0].cmdline()).strip() if kids else ""
            time.sleep(0.02)
        read_until_close(sock)
    assert ("token=s3cret" in title) == shown, title
    assert title.endswith(" HTTP/1.1") and ("GET /?... HTTP/1.1" in title) != shown, title


def test_a_planted_symlink_at_the_temporary_name_is_never_followed(tmp_path, monkeypatch):
    # Every temporary name collides with a planted link (urandom pinned): the
    # write fails rather than open the link's target (O_EXCL|O_NOFOLLOW).
    from forkparts import privileges
    victim = tmp_path / "precious.txt"
    victim.write_text("precious\n")
    target = tmp_path / "status.json"
    monkeypatch.setattr(privileges.os, "urandom", lambda n: b"\0" * n)
    planted = tmp_path / ("status.json.%d.%s.tmp" % (os.getpid(), "00" * 4))
    os.symlink(str(victim), str(planted))
    with pytest.raises(FileExistsError):
        privileges.write_atomically(str(target), "{}\n")
    assert victim.read_text() == "precious\n" and not target.exists()
    assert os.path.islink(str(planted))


@pytest.mark.parametrize("option", ["--user", "--group"])
def test_a_non_ascii_user_or_group_number_is_one_line_and_removes_the_socket(tmp_path, option):
    sock = tmp_path / "fs.sock"
    result = run_cli("examples.hello:app", "--bind", "unix:%s" % sock, option, "\u00b2")
    assert result.returncode == 4, result.stderr
    assert_one_clear_line(result, "no such")
    assert not sock.exists()


@contextlib.contextmanager
def in_roots_directory(name):
    """The path ``name`` in a new directory of root's, mode 0755 (nobody may
    look, not write); the directory and what the server left are removed."""
    nobody()
    closed = tempfile.mkdtemp(prefix="forkserver-run-")
    os.chmod(closed, 0o755)
    path = os.path.join(closed, name)
    try:
        yield path
    finally:
        if os.path.lexists(path):
            os.unlink(path)
        os.rmdir(closed)


def test_a_pidfile_in_a_directory_the_user_cannot_write_stays_roots_and_is_warned(tmp_path):
    with in_roots_directory("fs.pid") as pidfile:
        proc = start(["examples.hello:app", "--bind", "127.0.0.1:0", "--user", "nobody",
                      "--pidfile", pidfile, "--no-access-log"])
        try:
            assert os.stat(pidfile).st_uid == 0    # not handed to a user who could rewrite it
        finally:
            stop(proc)
        assert "will stay after the server stops" in proc.stderr_text


def test_a_unix_socket_in_a_directory_the_user_cannot_write_is_warned_about(tmp_path):
    """As the pidfile: the socket file root made there cannot be removed by
    the user the server runs as; it stayed behind without a word."""
    with in_roots_directory("fs.sock") as path:
        proc = start(["examples.hello:app", "--bind", "unix:" + path, "--bind", "127.0.0.1:0",
                      "--user", "nobody",
                      "--no-access-log"])
        stop(proc)
        assert "--bind unix:%s: its directory is not writable by uid" % path \
            in proc.stderr_text, proc.stderr_text
        assert "socket file will stay after the server stops" in proc.stderr_text


def test_a_log_file_the_user_cannot_open_again_is_warned_about_at_start():
    """Root makes the log files before --user; the server writes on through
    the descriptor, but SIGUSR1 (and a warmed server's SIGHUP, whose new
    code opens them afresh) failed only then, with nothing said at start."""
    with in_roots_directory("error.log") as error_log:
        proc = start(["examples.hello:app", "--bind", "127.0.0.1:0", "--user", "nobody",
                      "--error-log", error_log, "--no-access-log"])
        try:
            assert b"200 OK" in get(proc.port)
            proc.send_signal(signal.SIGUSR1)
            deadline = time.monotonic() + START_SECONDS
            while "SIGUSR1" not in open(error_log).read() and time.monotonic() < deadline:
                time.sleep(0.05)
        finally:
            stop(proc)
        text = open(error_log).read()
        assert os.stat(error_log).st_uid == 0
        assert ("--error-log %r: uid %d cannot open it (Permission denied), so SIGUSR1 cannot "
                "reopen it" % (error_log, pwd.getpwnam("nobody").pw_uid)) in text, text
        assert text.index("cannot open it") < text.index("SIGUSR1: cannot reopen log file")


def test_a_start_directory_the_user_cannot_enter_is_warned_about():
    """USR2 and a HUP's trial start the new code in the directory the server
    was started in: started from root's home with --user, every HUP was a
    failed reload ("Permission denied"), with nothing said at start."""
    nobody()
    closed = tempfile.mkdtemp(prefix="forkserver-home-")   # root's, 0700
    try:
        proc = start(["examples.hello:app", "--chdir", ROOT, "--bind", "127.0.0.1:0",
                      "--user", "nobody", "--no-access-log"], cwd=closed)
        stop(proc)
        assert "uid %d cannot enter %s, the directory the server was started in" % (
            pwd.getpwnam("nobody").pw_uid, closed) in proc.stderr_text, proc.stderr_text
    finally:
        os.rmdir(closed)


def test_a_start_directory_the_user_cannot_read_is_warned_about_under_m():
    """python -m forkserver puts the start directory on sys.path, so the new
    parent must list it to import from it: a 0711 directory let the check
    of "enter" pass, then USR2 failed with "No module named forkserver"."""
    nobody()
    closed = tempfile.mkdtemp(prefix="forkserver-home-")
    os.chmod(closed, 0o711)
    try:
        proc = start(["examples.hello:app", "--chdir", ROOT, "--bind", "127.0.0.1:0",
                      "--user", "nobody", "--no-access-log"], cwd=closed,
                     command=(sys.executable, "-m", "forkserver"),
                     env=dict(os.environ, PYTHONPATH=ROOT))   # this checkout's
        stop(proc)
        assert "uid %d cannot read or enter %s, the directory the server was started in" % (
            pwd.getpwnam("nobody").pw_uid, closed) in proc.stderr_text, proc.stderr_text
        proc = start(["examples.hello:app", "--chdir", ROOT, "--bind", "127.0.0.1:0",
                      "--user", "nobody", "--no-access-log"], cwd=closed)
        stop(proc)   # a script's imports come from its own directory: entering is enough
        assert "the directory the server was started in" not in proc.stderr_text
    finally:
        os.rmdir(closed)


def test_a_chdir_the_user_cannot_enter_is_warned_about():
    """--chdir is entered as root, before --user: the start works, but USR2
    and every HUP's new code enter it again as that user, and failed
    ("--chdir: Permission denied", status 2) with nothing said at start."""
    nobody()
    closed = tempfile.mkdtemp(prefix="forkserver-app-")   # root's, 0700
    app = os.path.join(closed, "closedapp.py")
    with open(app, "w") as f:
        f.write("def app(environ, start_response):\n"
                "    start_response('200 OK', [('Content-Length', '2')])\n"
                "    return [b'ok']\n")
    try:
        proc = start(["closedapp:app", "--chdir", closed, "--bind", "127.0.0.1:0",
                      "--user", "nobody", "--no-access-log"])
        stop(proc)
        assert "uid %d cannot read or enter --chdir %s, where SIGUSR2 and a SIGHUP" % (
            pwd.getpwnam("nobody").pw_uid, closed) in proc.stderr_text, proc.stderr_text
        assert "give that user a directory it may read and enter" in proc.stderr_text
    finally:
        shutil.rmtree(closed)


def test_a_log_file_the_user_can_open_is_not_warned_about(tmp_path):
    error_log = tmp_path / "error.log"
    proc = start(["examples.hello:app", "--bind", "127.0.0.1:0", "--error-log", str(error_log),
                  "--no-access-log"])
    stop(proc)
    assert "cannot open it" not in error_log.read_text()


@pytest.mark.parametrize("path", ["healthz", "http://localhost/", "/a b", "/#top", "*"])
def test_a_prewarm_path_not_starting_with_a_slash_is_exit_2_naming_it(path):
    # Before: "healthz" was logged as a warm-up ("prewarm GET healthz: HTTP/1.1
    # 400 Bad Request (16 passes)") though the parser refused it before the app.
    result = run_cli("examples.hello:app", "--prewarm", path)
    assert result.returncode == EXIT_USAGE, result.stderr
    assert_one_clear_line(result, "--prewarm", repr(path), "starting with /")


def test_a_prewarm_path_in_a_config_file_is_checked_as_the_options(tmp_path):
    config = tmp_path / "conf.py"
    config.write_text("prewarm = 'healthz'\n")
    result = run_cli("examples.hello:app", "--config", str(config))
    assert result.returncode == EXIT_USAGE, result.stderr
    assert_one_clear_line(result, "setting prewarm", "'healthz'", "starting with /")


@pytest.mark.parametrize("order", ["no-first", "no-last"])
def test_no_access_log_with_access_log_is_exit_2_and_writes_nothing(tmp_path, order):
    log = str(tmp_path / "a.log")
    for value in (log, "-"):
        args = ["--no-access-log", "--access-log", value]
        if order == "no-last":
            args = args[1:] + args[:1]
        result = run_cli("examples.hello:app", *args)
        assert result.returncode == EXIT_USAGE, result.stderr
        assert_one_clear_line(result, "--no-access-log", "--access-log", "not allowed with")
    assert not os.path.exists(log)


def test_no_access_log_overrides_a_config_files_accesslog(start_server, tmp_path):
    log = tmp_path / "a.log"
    config = tmp_path / "conf.py"
    config.write_text("accesslog = %r\n" % str(log))
    server = start_server("examples.hello:app", "--config", str(config), "--no-access-log")
    with socket.create_connection((server.host, server.port), timeout=10) as client:
        client.sendall(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
        assert read_until_close(client).startswith(b"HTTP/1.1 200")
    assert server.stop() == 0
    assert not log.exists()


HELD_HEADROOM_BYTES = 16 << 20    # the parent's address space beyond what it has
HELD_CONNECTIONS = 600            # heads of 60 KB each: 36 MB, past the headroom
HELD_WAIT_SECONDS = 10.0


def test_heads_held_past_the_parents_memory_get_503_and_the_parent_lives(start_server):
    """A MemoryError while the parent holds incomplete heads (the accept
    filter) ended the parent with a traceback: every client cut off, the
    port refused, nothing restarted it (a trial under prlimit --as).  Now
    each connection the parent cannot hold gets a 503."""
    import psutil
    from tests.conftest import http_get, wait_for
    server = start_server("tests.apps:hello")
    parent = psutil.Process(server.pid)
    soft, hard = parent.rlimit(psutil.RLIMIT_AS)
    # Never complete, and every line within its limit (a line over it goes
    # to a child at once, for its 431): 60 KB the parent holds.
    head = b"GET / HTTP/1.1\r\nHost: t\r\n" + b"".join(
        b"X-Pad-%d: %s\r\n" % (i, b"p" * 7500) for i in range(8))
    socks, refused = [], 0
    try:
        parent.rlimit(psutil.RLIMIT_AS, (parent.memory_info().vms + HELD_HEADROOM_BYTES, hard))
        for _ in range(HELD_CONNECTIONS):
            sock = socket.create_connection(("127.0.0.1", server.port), timeout=HELD_WAIT_SECONDS)
            socks.append(sock)
            sock.sendall(head)
        wait_for(lambda: "out of memory" in server.log_text() or not server.proc.isalive(),
                 HELD_WAIT_SECONDS, "the parent to run out of memory")
        time.sleep(0.5)   # the 503s on their way
        held = []
        for sock in socks:
            sock.settimeout(0)   # a timeout would poll for it first
            try:
                refused += sock.recv(64).startswith(b"HTTP/1.1 503")
            except BlockingIOError:
                held.append(sock)
            except ConnectionError:
                pass   # cut with the parent
        for sock in held:   # complete: copied to fork them, out of memory still
            try:
                sock.sendall(b"\r\n")
            except OSError:
                pass
        time.sleep(1.0)
    finally:
        if server.proc.isalive():
            parent.rlimit(psutil.RLIMIT_AS, (soft, hard))
        for sock in socks:
            sock.close()
    log = server.log_text()
    assert server.proc.isalive() and "Traceback" not in log, log
    assert refused and "out of memory holding" in log, (refused, log)
    assert http_get(server, "/")[0] == 200


def test_an_app_that_uses_up_the_descriptors_still_gets_its_500(start_server):
    """The error path imported traceback lazily, and the import needs a
    descriptor: the client got an empty reply, and the log our own
    traceback (a trial: 300 of 300 /exhaust requests; gunicorn answers 500)."""
    from tests.conftest import http_get, wait_for
    server = start_server("tests.apps:uses_up_descriptors", "--no-prewarm")
    status, _, _ = http_get(server, "/")
    assert status == 500
    wait_for(lambda: "RuntimeError: the app used up" in server.log_text(), 10, "the app's error")
    log = server.log_text()
    assert "forkparts" not in log and "wsgi_handler" not in log, log


def test_slow_heads_under_ulimit_n_64_are_held_not_refused(tmp_path):
    """RLIMIT_NOFILE less 64 left one parked connection at ulimit -n 64: each
    slow head dropped the one before with 503, though the parent held 9
    descriptors (a trial: 296 of 300 split heads got 503; gunicorn 0)."""
    def low_limit():
        resource.setrlimit(resource.RLIMIT_NOFILE, (64, 64))
    proc = start(["examples.hello:app", "--bind", "127.0.0.1:0", "--no-access-log"],
                 preexec_fn=low_limit)
    socks = []
    try:
        for _ in range(8):   # heads in two parts: held in the parent meanwhile
            sock = socket.create_connection(("127.0.0.1", proc.port), timeout=10)
            sock.sendall(b"GET / HTTP/1.1\r\nHost: x\r\n")
            socks.append(sock)
        time.sleep(0.3)
        for sock in socks:
            sock.sendall(b"\r\n")
        answers = [read_until_close(sock)[:12] for sock in socks]
    finally:
        for sock in socks:
            sock.close()
        stop(proc)
    assert answers == [b"HTTP/1.1 200"] * 8, answers


def test_a_limit_the_parents_own_descriptors_fill_is_refused_not_ready():
    """ulimit -n 7 and two listeners: they and the wake-up pipe take 3 to 6,
    and none is left to accept() into.  The server said it was ready, then
    failed every accept for ever (a trial: ulimit -n 6 and one listener,
    where setproctitle, when installed, ran out first)."""
    proc = subprocess.Popen(
        [sys.executable, FORKSERVER, "examples.hello:app", "--bind", "127.0.0.1:0",
         "--bind", "127.0.0.1:0", "--no-access-log", "--no-prewarm"], cwd=ROOT,
        stdout=subprocess.PIPE, stderr=subprocess.PIPE,
        preexec_fn=lambda: resource.setrlimit(resource.RLIMIT_NOFILE, (7, 7)))
    try:
        ready = select.select([proc.stdout], [], [], START_SECONDS)[0]
        line = proc.stdout.readline() if ready else b""
    finally:
        code = stop(proc)
    assert not line.startswith(b"forkserver ready"), (line, proc.stderr_text)
    assert code == 1 and proc.stderr_text == (
        "forkserver: error: out of file descriptors: [Errno 24] Too many open files: none "
        "left for a client connection (ulimit -n is 7)\n"), proc.stderr_text


@pytest.mark.parametrize("keep_alive", [False, True])
@pytest.mark.parametrize("head, status", [
    (b"GET /" + b"a" * 9000 + b" HTTP/1.1\r\nHost: h\r\n", b"414"),
    (b"GET /" + b"a" * 9000, b"414"),
    (b"GET / HTTP/1.1\r\nHost: h\r\nX: " + b"a" * 9000, b"431"),
    (b"GET / HTTP/1.1\r\nHost: h\r\n" + b"".join(b"X-%d: v\r\n" % i for i in range(150)),
     b"431"),
], ids=["request-line-ended", "request-line-unended", "field-unended", "too-many-fields"])
def test_a_line_over_its_limit_is_answered_before_the_head_ends(start_server, head, status,
                                                                keep_alive):
    """A head still arriving whose request line or a field is already over
    its limit (8190) got 408 at --header-timeout, ten seconds later, from
    the parent's accept filter (and, for a field, from a kept-alive
    connection's child): a complete head with the same line got 414 at once."""
    args = ("--keep-alive", "5") if keep_alive else ()
    server = start_server("tests.apps:hello", *args)
    with server.connect(timeout=5) as sock:   # well under the 10 s of a 408
        if keep_alive:
            sock.sendall(b"GET /first HTTP/1.1\r\nHost: h\r\n\r\n")
            assert sock.recv(65536).startswith(b"HTTP/1.1 200 ")
        sock.sendall(head)
        assert read_until_close(sock).startswith(b"HTTP/1.1 " + status)
