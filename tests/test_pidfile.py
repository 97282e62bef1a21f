"""A pidfile left behind (issue 18: exercise 12's `kill -9` leaves root's
pidfile in the sticky /tmp, and the next server, running as nobody, died of a
PermissionError traceback, exit 1, leaving its temporary file): one line
naming the file, why and what to do, exit 2, nothing left behind; a stale
pidfile the user may replace still is replaced."""
import os
import pathlib
import pwd
import shutil
import signal
import subprocess
import tempfile

from tests.conftest import READY_RE, dead_pid, needs
from tests.parts.test_cli import EXIT_USAGE, assert_one_clear_line
from tests.test_signals import SYSTEM_PYTHON, copy_server_for_others

START_SECONDS = 30


def as_nobody(nobody):
    return dict(user=nobody.pw_uid, group=nobody.pw_gid, extra_groups=[])


def serve_until_ready(argv, cwd, **kw):
    proc = subprocess.Popen(argv, cwd=cwd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, **kw)
    line = proc.stdout.readline()
    assert READY_RE.match(line), (line, proc.stderr.read() if proc.poll() is not None else "")
    return proc


def stop(proc):
    proc.send_signal(signal.SIGTERM)
    try:
        return proc.wait(START_SECONDS)
    finally:
        proc.stdout.close()
        proc.stderr.close()


@needs(os.geteuid() == 0, "root, to leave a root-owned pidfile and run a server as nobody")
@needs(os.path.exists(SYSTEM_PYTHON), "needs %s" % SYSTEM_PYTHON)
def test_a_root_pidfile_left_in_a_sticky_directory_is_one_line_and_leaves_nothing():
    nobody = pwd.getpwnam("nobody")
    # Not under /tmp/pytest-of-root (0700); sticky and open to all, as /tmp.
    folder = pathlib.Path(tempfile.mkdtemp(prefix="forkserver-pidfile-"))
    try:
        os.chmod(str(folder), 0o1777)
        app = copy_server_for_others(folder / "app")
        pidfile = folder / "forkserver.pid"
        stale = "%d\n" % dead_pid()
        pidfile.write_text(stale)                    # root's, left by a kill -9
        argv = [SYSTEM_PYTHON, "forkserver.py", "tests.apps:hello", "--bind", "127.0.0.1:0",
                "--no-access-log", "--pidfile", str(pidfile)]
        result = subprocess.run(argv, cwd=str(app), capture_output=True, text=True,
                                timeout=START_SECONDS, **as_nobody(nobody))
        assert result.returncode == EXIT_USAGE, result.stderr
        assert_one_clear_line(result, "--pidfile %r" % str(pidfile), "uid 0 (root)",
                              "sticky directory", "remove it", "another --pidfile")
        assert sorted(os.listdir(str(folder))) == ["app", "forkserver.pid"]   # no .tmp
        assert pidfile.read_text() == stale

        # Started as root with --user nobody, the server replaces it (it writes
        # the pidfile before it drops root) and gives it to nobody.
        proc = serve_until_ready(argv + ["--user", "nobody"], str(app))
        assert pidfile.read_text() == "%d\n" % proc.pid
        assert os.stat(str(pidfile)).st_uid == nobody.pw_uid
        assert stop(proc) == 0
        assert not pidfile.exists()

        # A stale pidfile of nobody's own (a dead pid): nobody replaces it.
        pidfile.write_text(stale)
        os.chown(str(pidfile), nobody.pw_uid, nobody.pw_gid)
        proc = serve_until_ready(argv, str(app), **as_nobody(nobody))
        assert pidfile.read_text() == "%d\n" % proc.pid
        assert stop(proc) == 0
        assert sorted(os.listdir(str(folder))) == ["app"]
    finally:
        shutil.rmtree(str(folder))


def test_a_pidfile_that_cannot_be_replaced_leaves_no_temporary_file(tmp_path):
    (tmp_path / "fs.pid").mkdir()                 # a directory where the file should be
    from tests.parts.test_cli import run_cli
    result = run_cli("tests.apps:hello", "--pidfile", str(tmp_path / "fs.pid"))
    assert result.returncode == EXIT_USAGE
    assert_one_clear_line(result, "--pidfile %r" % str(tmp_path / "fs.pid"), "Is a directory")
    assert os.listdir(str(tmp_path)) == ["fs.pid"]


def test_a_pidfile_naming_a_running_server_is_not_taken_over(start_server, tmp_path):
    """gunicorn's "Already running on PID": a second server given the first
    one's pidfile refuses to start (one line, exit 2) and leaves the file to
    the first, which still removes it when it stops."""
    from tests.parts.test_cli import run_cli
    (tmp_path / "run").mkdir()
    pidfile = tmp_path / "run" / "fs.pid"
    first = start_server("tests.apps:hello", "--pidfile", str(pidfile))
    assert pidfile.read_text() == "%d\n" % first.pid
    second = run_cli("tests.apps:hello", "--no-prewarm", "--pidfile", str(pidfile))
    assert second.returncode == EXIT_USAGE
    assert_one_clear_line(second, "--pidfile %r" % str(pidfile),
                          "process %d, which is running" % first.pid, "another --pidfile",
                          "stale")
    assert pidfile.read_text() == "%d\n" % first.pid
    assert os.listdir(str(tmp_path / "run")) == ["fs.pid"]   # no temporary file
    assert first.stop() == 0
    assert not pidfile.exists()


def test_a_stale_pidfile_is_replaced(start_server, tmp_path):
    pidfile = tmp_path / "fs.pid"
    pidfile.write_text("%d\n" % dead_pid())      # left by a server killed with SIGKILL
    server = start_server("tests.apps:hello", "--pidfile", str(pidfile))
    assert pidfile.read_text() == "%d\n" % server.pid
    assert server.stop() == 0
    assert not pidfile.exists()
