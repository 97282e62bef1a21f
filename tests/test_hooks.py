"""Server hooks from --config (gunicorn's signatures): each runs in the
documented process and order, and a raising hook is logged and survived."""
import time

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
