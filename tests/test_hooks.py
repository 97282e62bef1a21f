"""Server hooks from --config (gunicorn's signatures): each runs in the
documented process and order, and a raising hook is logged and survived."""
import time

import pytest

from tests.conftest import http_get

EXIT_HOOK_FAILED = 5           # forkparts.exits.EXIT_HOOK_FAILED: post_fork raised
POLL_SECONDS = 0.02
LOG_WAIT_SECONDS = 10.0

RECORDER = '''
import os
NOTES = {notes!r}
RAISE = {raising!r}
MARKER = {marker!r}

def _note(name, *extra):
    with open(NOTES, "a") as f:
        f.write(" ".join([name, str(os.getpid())] + [str(e) for e in extra]) + "\\n")
    if name in RAISE:
        raise RuntimeError("hook %s raised on purpose" % name)

def on_starting(server): _note("on_starting")
def when_ready(server): _note("when_ready")
def pre_fork(server): _note("pre_fork")
def child_exit(server, pid, status): _note("child_exit", pid, status)
def on_exit(server): _note("on_exit")

def post_fork(server, child_pid):
    _note("post_fork", child_pid)
    if os.path.exists(MARKER):      # raise once: the first child after the marker
        os.unlink(MARKER)
        raise RuntimeError("post_fork raised on purpose")
'''


def write_config(tmp_path, text, name="forkserver.conf.py"):
    path = tmp_path / name
    path.write_text(text)
    return str(path)


def recorder_config(tmp_path, raising=()):
    notes, marker = str(tmp_path / "notes.txt"), str(tmp_path / "post_fork.raise")
    path = write_config(tmp_path, RECORDER.format(notes=notes, raising=list(raising),
                                                  marker=marker))
    return path, notes, marker


def read_notes(path):
    with open(path) as f:
        return [line.split() for line in f.read().splitlines()]


def wait_for_text(read, needle, timeout=LOG_WAIT_SECONDS):
    deadline = time.monotonic() + timeout
    while needle not in read() and time.monotonic() < deadline:
        time.sleep(POLL_SECONDS)
    return read()


def test_hooks_run_in_documented_process_and_order(start_server, tmp_path):
    config, notes, _ = recorder_config(tmp_path)
    server = start_server("tests.apps:pid", "--config", config)
    served_by = []
    for _ in range(2):
        status, _, body = http_get(server, "/")
        assert status == 200
        served_by.append(int(body))
        # child_exit is noted once the parent reaped the child
        wait_for_text(lambda: open(notes).read(),
                      "child_exit %d %d " % (server.pid, served_by[-1]))
    assert server.stop() == 0
    parent = str(server.pid)
    per_request = [["pre_fork", parent], ["post_fork", "C", "C"], ["child_exit", parent, "C", "0"]]
    expected = [["on_starting", parent], ["when_ready", parent]]
    for child in served_by:
        expected += [[str(child) if f == "C" else f for f in step] for step in per_request]
    expected.append(["on_exit", parent])
    assert read_notes(notes) == expected


def test_raising_hooks_are_logged_by_name_and_survived(start_server, tmp_path):
    raising = ("on_starting", "when_ready", "pre_fork", "child_exit", "on_exit")
    config, notes, _ = recorder_config(tmp_path, raising=raising)
    server = start_server("tests.apps:hello", "--config", config)
    for _ in range(3):
        assert http_get(server, "/")[:3:2] == (200, b"Hello, World!\n")
    wait_for_text(server.log_text, "hook child_exit failed")
    assert server.stop() == 0
    log = server.log_text()
    for name in raising:
        assert "hook %s failed" % name in log
        assert "RuntimeError: hook %s raised on purpose" % name in log


def test_raising_post_fork_answers_500_and_the_next_child_serves(start_server, tmp_path):
    config, notes, marker = recorder_config(tmp_path)
    server = start_server("tests.apps:hello", "--config", config)
    open(marker, "w").close()
    status, _, body = http_get(server, "/")
    assert status == 500
    assert http_get(server, "/")[:3:2] == (200, b"Hello, World!\n")
    log = wait_for_text(server.log_text, "exited with status %d" % EXIT_HOOK_FAILED)
    assert "hook post_fork failed" in log and "post_fork raised on purpose" in log
    assert "exited with status %d" % EXIT_HOOK_FAILED in log
    assert server.ps.is_running()


# ------------------------------------------------- signatures checked at load

def run_to_exit(args, timeout=30):
    """Run forkserver expecting it to exit before serving (bad config)."""
    import subprocess
    import sys
    from tests.conftest import FORKSERVER, ROOT
    return subprocess.run([sys.executable, FORKSERVER] + args, cwd=ROOT, timeout=timeout,
                          capture_output=True, text=True)


EXIT_USAGE = 2


@pytest.mark.parametrize("source, says", [
    ("def post_fork(a, b, c, d): pass",
     "hook post_fork(a, b, c, d) (%s:1) cannot be called as the server calls it, "
     "post_fork(server, worker): missing a required argument: 'c'"),
    ("def pre_request(w): pass",
     "hook pre_request(w) (%s:1) cannot be called as the server calls it, "
     "pre_request(worker, req): too many positional arguments"),
    ("def child_exit(server): pass",
     "hook child_exit(server) (%s:1) cannot be called as the server calls it, "
     "child_exit(server, worker): too many positional arguments"),
    ("def on_starting(server, *, loud): pass",
     "on_starting(server): missing a required argument: 'loud'"),
    ("when_ready = 'ready'",
     "hook when_ready must be a function taking (server), not 'ready' (type str)"),
])
@pytest.mark.parametrize("mode", [["--check-config"], ["--bind", "127.0.0.1:0"]])
def test_a_hook_the_server_cannot_call_is_one_line_and_exit_2(tmp_path, source, says, mode):
    config = write_config(tmp_path, source + "\n", name="c.py")
    result = run_to_exit(["-c", config, "tests.apps:hello"] + mode)
    assert result.returncode == EXIT_USAGE, result.stdout
    lines = result.stderr.splitlines()
    assert len(lines) == 1 and "Traceback" not in result.stderr
    assert lines[0].startswith("forkserver: error: config file %r: " % config)
    # Python 3.12 says "missing a required keyword-only argument", 3.11 without.
    line = lines[0].replace("keyword-only argument", "argument")
    assert (says % config if "%s" in says else says) in line
    assert "ready" not in result.stdout and "config OK" not in result.stdout


def test_every_hook_wrongly_written_is_named_on_its_own_line(tmp_path):
    config = write_config(tmp_path, "def post_fork(a, b, c, d): pass\n"
                                    "def pre_request(w): pass\n"
                                    "def child_exit(server): pass\n")
    result = run_to_exit(["-c", config, "tests.apps:hello", "--check-config"])
    assert result.returncode == EXIT_USAGE
    named = [line.split("hook ")[1].split("(")[0] for line in result.stderr.splitlines()]
    assert named == ["post_fork", "pre_request", "child_exit"]


HOOK_FORMS = '''
import functools
NOTES = {notes!r}

def _note(*words):
    with open(NOTES, "a") as f:
        f.write(" ".join(map(str, words)) + "\\n")

def _recorder(server, worker, *, label="pre_fork"):
    _note(label, worker.age)

pre_fork = functools.partial(_recorder, label="pre_fork")   # bound by signature
def post_fork(server, worker, extra=None): _note("post_fork", extra)
def pre_request(*args): _note("pre_request", len(args))
def post_request(worker, req): _note("post_request", req.path)
def worker_exit(server, worker, **kw): _note("worker_exit", kw)
on_exit = print                                            # C: taken on trust
'''


def test_defaults_varargs_partials_and_gunicorns_short_post_request_are_served(
        start_server, tmp_path):
    notes = str(tmp_path / "notes.txt")
    config = write_config(tmp_path, HOOK_FORMS.format(notes=notes))
    server = start_server("tests.apps:hello", "--config", config)
    assert http_get(server, "/x")[:3:2] == (200, b"Hello, World!\n")
    text = wait_for_text(lambda: open(notes).read(), "worker_exit")
    assert server.stop() == 0
    assert text.splitlines() == ["pre_fork 1", "post_fork None", "pre_request 2",
                                 "post_request /x", "worker_exit {}"]
    assert "hook" not in server.log_text()


def test_a_sigchld_lost_to_a_hooks_handler_is_made_up_on_a_later_turn(start_server, tmp_path):
    """DESIGN.md: reaping runs when SIGCHLD arrives and once more on every
    loop turn.  A hook that puts SIGCHLD back to its default loses every
    SIGCHLD; the loop reaped only on one, so each child stayed a zombie for
    the server's life.  With --timeout 1 the loop turns at the child's
    deadline, and that turn reaps it."""
    import psutil
    from tests.conftest import wait_for
    config = write_config(tmp_path, "import signal\n\ndef when_ready(server):\n"
                                    "    signal.signal(signal.SIGCHLD, signal.SIG_DFL)\n")
    server = start_server("tests.apps:pid", "--config", config, "--timeout", "1")
    status, _, body = http_get(server, "/")
    assert status == 200
    child = int(body)

    def reaped():
        try:
            return psutil.Process(child).ppid() != server.pid
        except psutil.NoSuchProcess:
            return True
    wait_for(reaped, 10, "child %d reaped without its SIGCHLD" % child)


# ---------------------------------- --timeout inside a hook is the request's

SLOW_HOOK = '''
import time

def {name}({params}):
    time.sleep({seconds})
'''
HOOK_PARAMS = {"pre_request": "worker, req", "post_request": "worker, req, environ, resp",
               "post_fork": "server, worker", "worker_exit": "server, worker",
               "post_worker_init": "worker"}
WORKER_ABORT = "\ndef worker_abort(worker):\n    pass\n"
EXIT_TIMEOUT = 6               # forkparts.exits.EXIT_TIMEOUT


def slow_hook_server(start_server, tmp_path, name, seconds=3, more=""):
    config = write_config(tmp_path, SLOW_HOOK.format(name=name, params=HOOK_PARAMS[name],
                                                     seconds=seconds) + more)
    return start_server("tests.apps:hello", "--config", config, "--timeout", "1")


@pytest.mark.parametrize("name", ["pre_request", "post_fork", "post_worker_init"])
def test_timeout_in_a_hook_before_the_app_answers_500_and_says_timeout(
        start_server, tmp_path, name):
    """The child's --timeout is a BaseException (TimedOut) raised wherever
    the child is: a hook that overran it used to have it caught as the hook's
    own failure, so the app then ran past its deadline and the parent's
    SIGTERM cut the connection with no answer (pre_request)."""
    from tests.conftest import raw_request
    server = slow_hook_server(start_server, tmp_path, name)
    reply = raw_request(server, b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
    assert reply.startswith(b"HTTP/1.1 500 "), reply
    log = wait_for_text(server.log_text, "exited with status %d" % EXIT_TIMEOUT)
    assert "exited with status %d" % EXIT_TIMEOUT in log
    assert "hook %s failed" % name not in log
    assert "killed by SIGTERM" not in log


@pytest.mark.parametrize("more", ["", WORKER_ABORT], ids=["", "with-worker_abort"])
@pytest.mark.parametrize("name", ["post_request", "worker_exit"])
def test_timeout_in_a_hook_after_the_response_ends_the_child_as_a_timeout(
        start_server, tmp_path, name, more):
    """After the response went out whole, a hook that overruns --timeout ends
    the child with the timeout's status and one line naming the hook, not a
    hook failure's traceback and a clean exit.  A worker_abort hook puts its
    own signal handler in the way, which the line used to name instead."""
    server = slow_hook_server(start_server, tmp_path, name, more=more)
    assert http_get(server, "/")[:3:2] == (200, b"Hello, World!\n")
    log = wait_for_text(server.log_text, "exited with status %d" % EXIT_TIMEOUT)
    assert "exited with status %d" % EXIT_TIMEOUT in log
    assert "--timeout reached in %s" % name in log
    assert "hook %s failed" % name not in log


@pytest.mark.parametrize("raised", ["KeyboardInterrupt", "GeneratorExit"])
def test_a_parent_hook_raising_a_base_exception_of_its_own_is_logged_and_survived(
        start_server, tmp_path, raised):
    """What a hook raises is the hook's failure, whatever its class (a hook
    that runs asyncio can raise CancelledError, a BaseException): only what
    the server raises into it from a signal of its own goes through.  Before
    the ServerSignal class, a narrower catch let a child_exit's
    KeyboardInterrupt stop the parent."""
    config = write_config(tmp_path, "def child_exit(server, worker):\n    raise %s()\n" % raised)
    server = start_server("tests.apps:hello", "--config", config)
    for _ in range(2):
        assert http_get(server, "/")[:3:2] == (200, b"Hello, World!\n")
    wait_for_text(server.log_text, "hook child_exit failed")
    assert server.ps.is_running()
    assert server.stop() == 0
