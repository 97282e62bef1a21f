"""forkserver where Linux's /proc is not (macOS, the BSDs), as near as
Linux gets: the server run in a mount namespace of the test's own with an
empty /proc.  What needs /proc either works another way, or says at start
what it cannot do; nothing fails per connection.  Loopback only; the
namespace ends with its one process."""
import os
import re
import shutil
import signal
import subprocess
import sys

from tests.conftest import FORKSERVER, ROOT, http_get, kill_tree, needs, wait_for

START_SECONDS = 30.0
READY_LINE = re.compile(r"forkserver ready: pid \d+ listening on http://127\.0\.0\.1:(\d+)")
HIDE_PROC = 'mount -t tmpfs none /proc && exec "$@"'

NEEDS_MOUNT_NAMESPACE = needs(shutil.which("unshare") and os.geteuid() == 0,
                              "unshare and root are needed to hide /proc from the server")

# An app that keeps what its first request opened: a pooled connection, as
# a socket of its own.
LEAKY_APP = """
import socket

KEPT = []


def app(environ, start_response):
    if not KEPT:
        KEPT.append(socket.socket())
    start_response("200 OK", [("Content-Type", "text/plain")])
    return [b"ok\\n"]
"""


def without_proc(args, cwd, out):
    """``forkserver args`` with /proc empty: (its process, the port)."""
    command = (["unshare", "-m", "--propagation", "private", "sh", "-c", HIDE_PROC, "sh",
                sys.executable, FORKSERVER] + list(args))
    proc = subprocess.Popen(command, cwd=cwd, stdout=open(out, "wb"), stderr=subprocess.STDOUT,
                            env=dict(os.environ, PYTHONUNBUFFERED="1", PYTHONPATH=ROOT),
                            start_new_session=True)
    return proc


@NEEDS_MOUNT_NAMESPACE
def test_the_warm_up_still_sees_what_the_app_kept_open_without_proc(tmp_path):
    """The warm-up's trial child listed /proc/self/fd, and saw nothing
    without it: an app's kept socket (a pooled database connection) was
    warmed into the parent and shared by every child, with no warning.  It
    now looks at every descriptor number with fstat."""
    (tmp_path / "leaky.py").write_text(LEAKY_APP)
    out = tmp_path / "out.log"
    proc = without_proc(["leaky:app", "--bind", "127.0.0.1:0"], str(tmp_path), out)
    try:
        port = int(wait_for(lambda: READY_LINE.search(out.read_text(errors="replace")),
                            START_SECONDS, "the ready line").group(1))

        class Server:
            host = "127.0.0.1"
        Server.port = port
        assert http_get(Server, "/")[:3:2] == (200, b"ok\n")
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(START_SECONDS) == 0
    finally:
        kill_tree(proc.pid)
    text = out.read_text(errors="replace")
    assert "warm-up GET / not run in the parent" in text and "socket:[" in text, text
    assert "(16 passes)" not in text
    assert "huge pages: not available here" in text, text


@NEEDS_MOUNT_NAMESPACE
def test_limit_memory_without_proc_is_refused_at_start_not_per_connection(tmp_path):
    """--limit-memory reads the child's address space from /proc/self/statm:
    without it every connection failed with a traceback and an empty reply,
    and --check-config said the config was OK."""
    out = tmp_path / "out.log"
    proc = without_proc(["tests.apps:hello", "--limit-memory", "200", "--check-config"],
                        ROOT, out)
    try:
        assert proc.wait(START_SECONDS) == 2
    finally:
        kill_tree(proc.pid)
    text = out.read_text(errors="replace").strip()
    assert len(text.splitlines()) == 1, text
    assert text.startswith("forkserver: error: --limit-memory") and "/proc/self/statm" in text
