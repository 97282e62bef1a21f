"""--trace process: each child's life as stamped lines, for the lab's timeline.

DESIGN note.  The lab (docs/labs.md) and scripts/timeline.py read a child's
life off the trace: fork, exit, SIGCHLD, reap, one line each, in the form
"<T> [<pid>] text" (Log.trace; T is time.monotonic(), which every process on
the machine shares, so a child's lines and its parent's can be compared).
The zombie lifetime of a child is T(reaped) - T(exit), so each line is
stamped at the moment it names, not when it is written: a SIGCHLD when the
handler ran, a reap when waitpid returned that child (a lab reaper that reaps
inside the handler hands the moment over in reaped_in_handler), an exit just
before the child's os._exit.

The tracing is a mixin in front of the server class (lab mistakes included),
picked once at start by traced(): a server without --trace=process runs the
correct code with no test for it on any path.  The http mode lives in the
child (wsgi_handler traces the heads) and in logs.HttpTraceLog.

This module never imports forkserver: the server class is handed in.
"""

import os
import time

from forkparts.children import describe_status
from forkparts.logs import format_addr


class ProcessTrace:
    """fork, SIGCHLD, reap lines of the parent; the exit line of each child."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.plain_exits = False   # every reap goes through child_exited, and its line
        self.sigchld_times = []    # when the handler ran, one entry per run
        self.reap_times = {}       # pid -> when a handler's waitpid returned it
        self.final_reap = False    # inside stopped(): its SIGKILL and waitpid are no reaper's

    def prepare(self):
        super().prepare()
        # A SIGCHLD before the first fork is the warm-up's (forkparts/prewarm.py):
        # its trial child's, or a request's client process's, forked and reaped
        # there: said so, not left to look like a lost child.
        for stamp in self.sigchld_times:
            self.log.trace("", "SIGCHLD received (the warm-up's trial child or client)", stamp)
        self.sigchld_times.clear()

    def sigchld_handler(self):
        handler = super().sigchld_handler()
        if not callable(handler):
            return handler   # --reaper none: SIG_DFL, nothing runs

        def stamp_and_handle(signum, frame):
            self.sigchld_times.append(time.monotonic())
            handler(signum, frame)
        return stamp_and_handle

    def reaped_in_handler(self, pid, status):
        """A lab's handler just got ``pid`` from waitpid (forkparts/labs.py)."""
        self.reap_times[pid] = time.monotonic()
        super().reaped_in_handler(pid, status)

    def signals_received(self, before=float("inf")):
        """The SIGCHLD lines not yet written whose handler ran ``before`` the
        line about to be written, so each process's lines stay in time order.
        A handler can run between any two bytecodes, also after the stamp of
        that line was taken: its line then waits for the next one.  It can
        even run inside another handler, between that one's stamp and its
        append (CPython runs Python handlers re-entrantly), so the stamps are
        sorted first: a burst of exits appended them out of order."""
        pending = self.sigchld_times
        pending.sort()
        while pending and pending[0] < before:
            self.log.trace("", "SIGCHLD received", pending.pop(0))

    def reap_children(self):
        self.signals_received()
        super().reap_children()

    def stopped(self):
        """The stop's last resort (SIGKILL at its deadline, then waitpid for
        each child left) writes no reap line: it is nobody's reaper, and a
        lab without one (--reaper none) must show its zombies never reaped."""
        self.final_reap = True
        try:
            return super().stopped()
        finally:
            self.final_reap = False

    def child_exited(self, pid, status):
        reaped_at = self.reap_times.pop(pid, None) or time.monotonic()
        self.signals_received(before=reaped_at)
        if self.final_reap:
            pass
        elif pid in self.children:
            self.log.trace("", "reaped %d: %s" % (pid, describe_status(status)), reaped_at)
        elif self.opts.subreaper or os.getpid() == 1:   # an orphan it adopted
            self.log.trace("", "reaped other %d: %s" % (pid, describe_status(status)),
                           reaped_at)
        super().child_exited(pid, status)

    def fork_child(self, sock, addr, data, accepted_at):
        pid = super().fork_child(sock, addr, data, accepted_at)
        if pid:
            forked_at = time.monotonic()
            self.signals_received(before=forked_at)
            self.log.trace("", "fork: child %d for %s" % (pid, format_addr(addr)), forked_at)
        return pid

    def plan_children(self):
        super().plan_children()
        plan = self.child_plan
        self.use_plan(plan._replace(leave=exit_traced(self.log, plan.leave)))


def exit_traced(log, leave):
    """The child's way out (children.exit_child), with its last line first."""
    def trace_and_leave(marks, status):
        log.trace("", "exit: status %d" % status)
        leave(marks, status)
    return trace_and_leave


def traced(opts, base):
    """``base`` itself, or, under --trace=process, ProcessTrace in front of it."""
    if "process" not in opts.trace:
        return base
    return type("Traced" + base.__name__, (ProcessTrace, base), {"__module__": __name__})
