"""forkserver as a container runs it: the first process of its own PID
namespace (``unshare --pid --fork``), or the child of a minimal init that
ends the container when its child exits (docker run --init, tini,
dumb-init).  Loopback only; the namespaces end with their PID 1."""
import os
import re
import shutil
import signal
import subprocess
import sys
import time

import psutil

from tests.conftest import FORKSERVER, ROOT, http_get, kill_tree, needs, wait_for

START_SECONDS = 30.0
SETTLE_SECONDS = 3.0   # what an upgrade needs to hand over, were it not refused
READY_LINE = re.compile(r"forkserver ready: pid \d+ listening on http://127\.0\.0\.1:(\d+)")

NEEDS_NAMESPACES = needs(shutil.which("unshare") and os.geteuid() == 0,
                         "unshare and root are needed for a PID namespace of the test's own")

# A minimal init, as tini and dumb-init behave for this purpose: it starts
# its command, passes on the signals it is sent, and exits with the command.
INIT = """
import signal, subprocess, sys
child = subprocess.Popen(sys.argv[1:])
for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGUSR2):
    signal.signal(sig, lambda signum, frame: child.send_signal(signum))
sys.exit(child.wait())
"""


class Container:
    """``command`` run as PID 1 of a new PID namespace (under ``init`` if
    given); its output in a file."""

    def __init__(self, tmp_path, args, init=False):
        self.out_path = tmp_path / "out.log"
        command = [sys.executable, FORKSERVER] + list(args) + ["--bind", "127.0.0.1:0"]
        if init:
            command = [sys.executable, "-c", INIT] + command
        self.proc = subprocess.Popen(
            ["unshare", "--pid", "--fork", "--mount-proc"] + command, cwd=ROOT,
            env=dict(os.environ, PYTHONUNBUFFERED="1"), stdout=open(self.out_path, "wb"),
            stderr=subprocess.STDOUT, start_new_session=True)
        self.host = "127.0.0.1"
        self.port = int(wait_for(lambda: READY_LINE.search(self.output()), START_SECONDS,
                                 "the ready line").group(1))
        pid1 = psutil.Process(self.proc.pid).children()[0]
        self.server = pid1.children()[0] if init else pid1

    def output(self):
        return self.out_path.read_text(errors="replace")

    def namespace_processes(self):
        return psutil.Process(self.proc.pid).children(recursive=True)

    def close(self):
        kill_tree(self.proc.pid)
        self.proc.wait(10)


@NEEDS_NAMESPACES
def test_usr2_under_a_containers_init_is_refused_and_the_server_serves_on(tmp_path):
    """Under an init that exits with its child, an upgrade's old parent
    exiting ended the container, the new parent with it: every connection
    after the handover was refused."""
    container = Container(tmp_path, ["tests.apps:hello", "--no-access-log"], init=True)
    try:
        assert container.server.ppid() != 1   # the host's view; in the namespace it is 1
        container.server.send_signal(signal.SIGUSR2)
        wait_for(lambda: "SIGUSR2: upgrade refused" in container.output(), 10,
                 "the refusal in:\n" + container.output())
        time.sleep(SETTLE_SECONDS)
        assert "the parent process is this container's init" in container.output()
        assert container.proc.poll() is None, container.output()
        assert http_get(container, "/")[0] == 200
    finally:
        container.close()


ORPHANS_APP = "tests.apps_container:orphans"


@NEEDS_NAMESPACES
def test_as_pid_1_the_orphans_of_the_apps_subprocesses_are_reaped(tmp_path):
    """A container without an init: every orphan in it is the server's to
    reap (a grandchild whose parent, the child, has exited)."""
    container = Container(tmp_path, [ORPHANS_APP, "--no-access-log"])
    try:
        for _ in range(10):
            assert http_get(container, "/")[0] == 200

        # The orphans sleep 0.3 s, then exit, and PID 1 must reap them: a
        # zombie would stay in the list for good.
        wait_for(lambda: container.namespace_processes() == [container.server], 10,
                 "every orphan to exit and be reaped")
        container.server.send_signal(signal.SIGTERM)
        assert container.proc.wait(20) == 0, container.output()
    finally:
        container.close()
