"""forkparts/children.py: a child's record, its deadline, how its end is told."""
import os
import signal
import subprocess
import sys
import time
from types import SimpleNamespace

from forkparts.children import (ChildTable, describe_status, exit_marks, is_normal_exit,
                                why_killed)
from forkparts.exits import EXIT_HOOK_FAILED


def status_of(code=None, sig=None):
    """A real wait status: a process that exits with ``code`` or dies of ``sig``."""
    script = "import os, sys; os.kill(os.getpid(), %d)" % sig if sig else "import sys; sys.exit(%d)" % code
    proc = subprocess.Popen([sys.executable, "-c", script])
    _, status = os.waitpid(proc.pid, 0)
    proc.returncode = 0   # reaped here: Popen must not wait again
    return status


def test_describe_status_names_the_code_and_our_reason():
    assert describe_status(status_of(0)) == "exited with status 0"
    assert describe_status(status_of(EXIT_HOOK_FAILED)) == \
        "exited with status 5 (post_fork hook failed)"
    assert describe_status(status_of(sig=signal.SIGTERM)) == "killed by SIGTERM"
    assert is_normal_exit(status_of(0)) and not is_normal_exit(status_of(1))


def test_why_killed_tells_a_timeout_from_a_stop():
    status = status_of(sig=signal.SIGTERM)
    child = SimpleNamespace(term_at=1.0)
    assert why_killed(child, status, stopping=False) == " (timeout)"
    assert why_killed(child, status, stopping=True) == " (server stopping)"
    assert why_killed(SimpleNamespace(term_at=None), status, stopping=False) == ""


class Log:
    def __init__(self):
        self.lines = []

    def warning(self, text):
        self.lines.append(text)


def test_a_child_past_its_deadline_gets_sigterm_and_the_next_deadline_is_kept():
    log, table = Log(), ChildTable(Log())
    table.log = log
    late = subprocess.Popen(["sleep", "30"])
    early = subprocess.Popen(["sleep", "30"])
    try:
        now = time.monotonic()
        table.add(late.pid, ("127.0.0.1", 1), now - 5, now - 1)
        table.add(early.pid, ("127.0.0.1", 2), now, now + 60)
        table.check_deadlines(now)
        assert late.wait(5) == -signal.SIGTERM
        assert list(table.terminating) == [late.pid] and table.check_at == now + 60
        assert "timed out" in log.lines[0]
        assert table.forget(late.pid).pid == late.pid and not table.terminating
    finally:
        for proc in (late, early):
            proc.kill()
            proc.wait()


def test_exit_marks_have_a_byte_for_every_pid():
    with open("/proc/sys/kernel/pid_max") as f:
        assert len(exit_marks()) == int(f.read())
