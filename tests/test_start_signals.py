"""Signals during the start, before the server's own handlers are in
(forkparts/startsignals.py): while a slow app imports, a stop signal ends
the start cleanly, also for PID 1 of a container, where the kernel drops a
signal that has no handler; a USR1 is handled once the server is up."""
import os
import shutil
import signal
import subprocess
import sys

import psutil

from tests.conftest import FORKSERVER, ROOT, kill_tree, needs, wait_for

IMPORT_SECONDS = 8.0    # the app's import: longer than a stop may take
EXIT_SECONDS = 5.0      # a stop during the import ends the process well before it ends
START_SECONDS = IMPORT_SECONDS + 20.0

SLOW_APP = """\
import os
import time
open(os.environ["SLOW_IMPORT_MARK"], "w").close()   # the import has begun
time.sleep(%r)


def app(environ, start_response):
    start_response("200 OK", [("Content-Type", "text/plain")])
    return [b"imported at last\\n"]
""" % IMPORT_SECONDS


class Start:
    """forkserver on an app whose import takes IMPORT_SECONDS, its output in
    a file; ``prefix`` runs it under another command (unshare)."""

    def __init__(self, tmp_path, prefix=(), app="slowimport:app", extra=()):
        if not (tmp_path / "slowimport.py").exists():
            (tmp_path / "slowimport.py").write_text(SLOW_APP)
        self.out_path = tmp_path / "out.log"
        self.mark = tmp_path / "importing"
        self.proc = subprocess.Popen(
            list(prefix) + [sys.executable, FORKSERVER, app, "--pythonpath", str(tmp_path),
                            "--bind", "127.0.0.1:0", "--no-prewarm"] + list(extra),
            cwd=ROOT, env=dict(os.environ, PYTHONUNBUFFERED="1", SLOW_IMPORT_MARK=str(self.mark)),
            stdout=open(self.out_path, "wb"), stderr=subprocess.STDOUT, start_new_session=True)

    def wait_importing(self):
        wait_for(self.mark.exists, START_SECONDS, "the app's import to begin")

    def output(self):
        return self.out_path.read_text(errors="replace")

    def wait(self, seconds):
        try:
            return self.proc.wait(seconds)
        except subprocess.TimeoutExpired:
            return None

    def stop(self):
        kill_tree(self.proc.pid)
        self.proc.wait(10)


def test_sigterm_while_the_app_imports_ends_the_start_cleanly(tmp_path):
    start = Start(tmp_path)
    try:
        start.wait_importing()
        os.kill(start.proc.pid, signal.SIGTERM)
        status = start.wait(EXIT_SECONDS)
        assert status == 0, (status, start.output())
        assert start.output() == "forkserver: SIGTERM before the server was ready: stopped\n"
    finally:
        start.stop()


def test_sigusr1_while_the_app_imports_is_handled_once_the_server_is_up(tmp_path):
    """Its default action ends a process: logrotate's USR1 during a slow start
    killed the server.  Now the logs are reopened once the server is up."""
    start = Start(tmp_path)
    try:
        start.wait_importing()
        os.kill(start.proc.pid, signal.SIGUSR1)
        wait_for(lambda: "forkserver ready" in start.output() or start.proc.poll() is not None,
                 START_SECONDS, "the ready line")
        assert start.proc.poll() is None, start.output()
        wait_for(lambda: "SIGUSR1: log files reopened" in start.output(), 5, "the reopen")
        os.kill(start.proc.pid, signal.SIGTERM)
        assert start.wait(EXIT_SECONDS) == 0, start.output()
    finally:
        start.stop()


@needs(shutil.which("unshare") and os.geteuid() == 0,
       "unshare and root are needed to run the server as PID 1 of a PID namespace")
def test_docker_stop_while_the_app_imports_stops_pid_1(tmp_path):
    """As PID 1 (a container without an init), a signal without a handler is
    dropped by the kernel: the SIGTERM of docker stop was lost and the
    server started and served until the SIGKILL."""
    start = Start(tmp_path, prefix=("unshare", "--pid", "--fork", "--mount-proc"))
    try:
        unshare = psutil.Process(start.proc.pid)
        pid1 = wait_for(unshare.children, 10, "the namespace's PID 1")[0]
        status = open("/proc/%d/status" % pid1.pid).read()
        assert [line.split()[-1] for line in status.splitlines()
                if line.startswith("NSpid:")] == ["1"]
        start.wait_importing()
        pid1.send_signal(signal.SIGTERM)
        assert start.wait(EXIT_SECONDS) == 0, start.output()
        assert start.output() == "forkserver: SIGTERM before the server was ready: stopped\n"
    finally:
        start.stop()


def test_sigterm_during_a_slow_on_starting_hook_ends_the_start(tmp_path):
    """A hook that raises is logged and the start goes on; a stop signal
    during one (migrations in on_starting) is no hook failure."""
    config = tmp_path / "slow.conf.py"
    config.write_text("import os, time\n\n\ndef on_starting(server):\n"
                      "    open(os.environ['SLOW_IMPORT_MARK'], 'w').close()\n"
                      "    time.sleep(%r)\n" % IMPORT_SECONDS)
    start = Start(tmp_path, app="tests.apps:hello", extra=("-c", str(config)))
    try:
        start.wait_importing()
        os.kill(start.proc.pid, signal.SIGTERM)
        assert start.wait(EXIT_SECONDS) == 0, start.output()
        assert start.output().endswith(
            "forkserver: SIGTERM before the server was ready: stopped\n"), start.output()
        assert "Traceback" not in start.output() and "hook" not in start.output()
    finally:
        start.stop()
