"""Children: what the parent knows of each, how one is set up, how one ends.

DESIGN note.  forkserver.py keeps the tutorial's lines (fork, close, the
reaping loop); the details around them live here: waitpid until 0
(exited_children, also the labs'), the record of a live child, the plan a child
reads right after fork() (what to close, which signal handlers to put back,
which limits to apply), dying with the parent (PR_SET_PDEATHSIG), the exit
marks that tell forkserver's own _exit from an app's os._exit, decoding a
wait status, and the log line for an exit that was not a clean one.
"""

import math
import mmap
import os
import resource
import select
import signal
import sys
import time
from collections import namedtuple
from gc import disable as disable_gc
from os import close as close_fd, getpid
from signal import ITIMER_REAL, set_wakeup_fd, setitimer
from time import monotonic

from forkparts.exits import (CPULimitExceeded, EXIT_ERROR, EXIT_HOOK_FAILED,
                             EXIT_MEMORY_LIMIT, EXIT_NAMES, EXIT_TIMEOUT, TimedOut)
from forkparts.listeners import backlog_waiting
from forkparts.logs import format_addr

PR_SET_CHILD_SUBREAPER = 36              # prctl(2) option, <linux/prctl.h>
PR_SET_PDEATHSIG = 1                     # prctl(2) option, <linux/prctl.h>
PID_MAX_FILE = "/proc/sys/kernel/pid_max"   # pids are below it (proc(5))
STATM_PATH = "/proc/self/statm"          # --limit-memory's measure of the address space
PID_MAX_LIMIT = 4 * 1024 * 1024          # Linux's ceiling on 64-bit (<linux/threads.h>)
KILL_GRACE_SECONDS = 2.0                 # after a timeout's SIGTERM, SIGKILL
# The parent's --timeout deadline comes this long after the child's own
# (SIGALRM: TimedOut, a 500): the parent's SIGTERM is for a child that did not end.
TIMEOUT_GRACE_SECONDS = 1.0
INFINITY = float("inf")
SIG_UNBLOCK = int(signal.SIG_UNBLOCK)


class Child:
    """What the parent knows of one live child."""
    __slots__ = ("pid", "addr", "started", "deadline", "term_at", "age")

    def __init__(self, pid, addr, started, deadline):
        self.pid = pid
        self.addr = addr
        self.started = started
        self.deadline = deadline
        self.term_at = None
        self.age = 0           # its connection's number, kept for child_exit's worker.age


def exit_child(marks, status, getpid=os.getpid, _exit=os._exit):
    """The child's only way out: mark the exit as ours (exit_marks), then _exit."""
    try:
        marks[getpid()] = 1
    except IndexError:
        pass   # pid_max raised after the start: no mark, no report
    finally:
        _exit(status)


class ChildPlan(namedtuple("ChildPlan", (
        "serve", "app", "config", "signals", "blocked", "close_fds", "alarm", "limits",
        "post_fork", "child_end", "setups", "log", "marks", "set_handler", "sigmask", "leave"),
        defaults=(exit_child,))):
    """What every child does right after fork(), prepared by the parent before
    the first fork and again after each reload.  ``serve`` is the child's
    front door, handed in: this module never imports wsgi_handler.

    The fields: serve(sock, addr, app, config, data, accepted_at) -> exit
    status; the signal handlers to put back, (signum, handler) pairs, and the
    signals blocked across fork(); the parent's descriptors to close; alarm,
    the child's own --timeout (0: none); limits, opts if --limit-memory or
    --limit-cpu; post_fork(sock) -> ok and child_end(), the child's hooks (or
    None); setups, run before any signal can arrive; log; marks (exit_marks);
    set_handler and sigmask, signal.signal and signal.pthread_sigmask or their
    C functions (accel); leave(marks, status), the way out (exit_child;
    --trace=process writes a line first).

    A tuple, unpacked by run() into locals, because run() is the one code that
    never runs in the parent: CPython never specializes it, so each attribute
    read there writes to the attribute's name and descriptor, pages every child
    would copy (docs/performance.md, "the child's set-up")."""
    __slots__ = ()

    def run(self, sock, addr, data, accepted_at, parked):
        """In the child: undo the parent, serve the connection, _exit.  Never returns."""
        (serve, app, config, signals, blocked, close_fds, alarm, limits,
         post_fork, child_end, setups, log, marks, set_handler, sigmask, leave) = self
        status = EXIT_ERROR
        try:
            # The parent's wake-up fd first, so no signal writes into its pipe, then
            # its handlers (SIGPIPE stays ignored, as Python starts it: a hang-up is an
            # exception); then the parent's own descriptors: listeners, pipe, parked.
            set_wakeup_fd(-1)
            for sig, handler in signals:
                set_handler(sig, handler)
            for setup in setups:
                setup()
            sigmask(SIG_UNBLOCK, blocked)
            for fd in close_fds:
                close_fd(fd)
            for held in parked.values():
                close_fd(held.sock.detach())
            disable_gc()   # the frozen heap stays shared; the app may gc.enable()
            if limits:
                apply_child_limits(limits)
            if alarm:   # our own deadline, from the accept: SIGALRM raises TimedOut
                left = alarm + accepted_at - monotonic()   # (timed_out_handler)
                setitimer(ITIMER_REAL, left if left > 0.001 else 0.001)   # 0 disarms
            if post_fork is not None and not post_fork(sock):
                status = EXIT_HOOK_FAILED
                return
            status = serve(sock, addr, app, config, data, accepted_at)
        except MemoryError:
            status = EXIT_MEMORY_LIMIT
        except TimedOut as exc:   # outside the app (the app's is handled where it is called)
            status = log_child_failure(log, addr, timed_out=exc)
        except BaseException:
            log_child_failure(log, addr)
        finally:   # worker_exit, then _exit: nothing from a hook returns into the parent
            leave(marks, status if child_end is None else end_child_hooks(child_end, log, addr, status))


def describe_status(status):
    """Decode a waitpid status: "exited with status 0" / "killed by SIGTERM"."""
    if os.WIFSIGNALED(status):
        sig = os.WTERMSIG(status)
        try:
            name = signal.Signals(sig).name
        except ValueError:
            name = "signal %d" % sig
        core = " (core dumped)" if os.WCOREDUMP(status) else ""
        return "killed by %s%s" % (name, core)
    code = os.WEXITSTATUS(status)
    reason = EXIT_NAMES.get(code)
    return "exited with status %d%s" % (code, " (%s)" % reason if reason else "")


def is_normal_exit(status):
    return os.WIFEXITED(status) and os.WEXITSTATUS(status) == 0


def why_killed(child, status, stopping):
    """What a signal death means, for the log: the stop, --timeout, the CPU limit."""
    sig = os.WTERMSIG(status)
    if child.term_at and stopping and sig in (signal.SIGTERM, signal.SIGKILL):
        return " (server stopping)"   # a fast stop or the stop deadline, not --timeout
    if sig == signal.SIGALRM or (child.term_at and sig in (signal.SIGTERM, signal.SIGKILL)):
        return " (timeout)"
    if sig == signal.SIGXCPU:
        return " (CPU limit hit)"
    if sig == signal.SIGKILL:   # as gunicorn asks: "Perhaps out of memory?"
        return " (not sent by the server: the kernel's OOM killer, or a hard limit?)"
    return ""


def log_abnormal_exit(log, child, status, age, stopping):
    what = describe_status(status)
    if os.WIFSIGNALED(status):
        what += why_killed(child, status, stopping)
    log.log("info" if stopping else "warning", "child %d (client %s, %.2fs) %s" % (
        child.pid, format_addr(child.addr), age, what))


def log_app_exit(log, child, status, age, stopping):
    """The child ended without forkserver's own _exit: the app (or a hook)
    called os._exit, so the status is the app's, not an EXIT_* code."""
    log.log("info" if stopping else "warning",
            "child %d (client %s, %.2fs) exited with status %d from inside the app "
            "(os._exit), not through forkserver: its connection may have had no answer"
            % (child.pid, format_addr(child.addr), age, os.WEXITSTATUS(status)))


def exit_marks():
    """One shared byte per pid: a child sets its own in exit_child, just
    before forkserver's _exit.  A child that ends without it (the app called
    os._exit, which runs no finally) is told apart at reaping even when its
    status is 0.  Anonymous and MAP_SHARED, so the children's writes reach the
    parent; only the pages touched are ever allocated."""
    try:
        with open(PID_MAX_FILE) as f:
            size = int(f.read())
    except (OSError, ValueError):
        size = PID_MAX_LIMIT
    return mmap.mmap(-1, size)


def end_child_hooks(child_end, log, addr, status):
    """worker_exit (``child_end``) as the child ends: its exit status, the
    timeout's if --timeout came in the hook (what the hook raises itself
    run_hook logs).  Never raises: the child's _exit comes next."""
    try:
        child_end()
        return status
    except TimedOut as exc:
        return log_child_failure(log, addr, timed_out=exc)
    except BaseException:
        return log_child_failure(log, addr)


def log_child_failure(log, addr, timed_out=None):
    """Log why a child failed outside the app; its exit status.  A timeout
    (``timed_out``, the TimedOut) is one line naming the function it came in
    (a hook of the config file, our head read, a log write to a full pipe):
    the traceback of our own code around it is no news."""
    try:
        if timed_out is not None:
            log.warning("--timeout reached in %s, outside the app, serving %s"
                        % (where_raised(timed_out), format_addr(addr)))
            return EXIT_TIMEOUT
        log.exception("child failed serving %s" % format_addr(addr))
    except BaseException:
        pass   # the child exits anyway; nothing must escape into the parent's loop
    return EXIT_TIMEOUT if timed_out is not None else EXIT_ERROR


# The signal handlers a TimedOut comes through (timed_out_handler's, and
# worker_abort's in forkparts/hooks.py, on_child_signals): never the place.
SIGNAL_PLUMBING = {(__file__, "on_alarm"),
                   (os.path.join(os.path.dirname(__file__), "hooks.py"), "handler")}


def where_raised(exc):
    """"name (file:line)": the innermost Python frame ``exc`` came through,
    but for the signal handlers that raised it (SIGNAL_PLUMBING)."""
    tb, where = exc.__traceback__, None
    while tb is not None:
        code = tb.tb_frame.f_code
        if (code.co_filename, code.co_name) not in SIGNAL_PLUMBING:
            where = "%s (%s:%d)" % (code.co_name, os.path.basename(code.co_filename),
                                    tb.tb_lineno)
        tb = tb.tb_next
    return where or "the child"


def exited_children():
    """Yield (pid, status) from waitpid(-1, WNOHANG) until it returns 0 or ECHILD."""
    while True:
        try:
            pid, status = os.waitpid(-1, os.WNOHANG)
        except ChildProcessError:
            return
        if pid == 0:
            return
        yield pid, status


def kill(pid, sig):
    try:
        os.kill(pid, sig)
    except ProcessLookupError:
        pass


def apply_child_limits(opts):
    """--limit-memory and --limit-cpu, in the child."""
    if opts.limit_memory:
        # RLIMIT_AS counts the whole address space, most of it shared with the
        # parent; the limit is what the child may add on top of that.
        with open(STATM_PATH, "rb") as f:
            size = int(f.read().split()[0]) * resource.getpagesize()
        limit = size + int(opts.limit_memory * 1024 * 1024)
        resource.setrlimit(resource.RLIMIT_AS, (limit, limit))
    if opts.limit_cpu:
        seconds = int(opts.limit_cpu)
        resource.setrlimit(resource.RLIMIT_CPU, (seconds, seconds + 1))
        signal.signal(signal.SIGXCPU, raise_cpu_limit)


def raise_cpu_limit(signum, frame):
    raise CPULimitExceeded("CPU limit of the child reached")


def timed_out_handler(parent_pid):
    """The SIGALRM handler under --timeout, set in the parent and inherited
    across fork (no child pays for setting it: each handler a child sets
    copies pages): in a child, at its deadline, TimedOut; the parent arms no
    timer, and a stray SIGALRM does nothing there (it used to end it)."""
    def on_alarm(signum, frame):
        if getpid() != parent_pid:
            raise TimedOut("--timeout reached")
    return on_alarm


def restart_after_sighup():
    """SA_RESTART for SIGHUP, as gunicorn's workers: the Drain notice
    (--keep-alive) must not make a blocking call of the app fail with EINTR
    (the idle poll still wakes up, on the wake-up fd)."""
    signal.siginterrupt(signal.SIGHUP, False)


def no_core_dumps():
    """Children of a server dump no core: a core holds the request's data."""
    _, hard = resource.getrlimit(resource.RLIMIT_CORE)
    resource.setrlimit(resource.RLIMIT_CORE, (0, hard))


def parent_death_signal(parent_pid):
    """A function that a child calls to be SIGKILLed when its parent dies
    (prctl PR_SET_PDEATHSIG), or None where prctl(2) is not to be had.

    With the parent gone nobody enforces --timeout or reaps, and the child's
    own SIGALRM timer can be ignored by the app: SIGKILL is the one signal
    that always ends it.  A parent that dies between fork() and the prctl
    call sends nothing, so the child then checks that its parent is still
    the one that forked it (it was reparented otherwise) and exits."""
    try:
        import ctypes   # already loaded by collapse_heap (huge pages, the default)
        # Without use_errno: the call cannot fail with these arguments, and
        # saving errno around it wrote 7 more pages per child (20 minor
        # faults a child with it, 13 without, measured with wait4's rusage).
        prctl = ctypes.CDLL(None).prctl
    except (ImportError, OSError, AttributeError):
        return None
    sigkill = int(signal.SIGKILL)

    def die_with_parent(getppid=os.getppid, _exit=os._exit):   # no lookups in the child
        prctl(PR_SET_PDEATHSIG, sigkill, 0, 0, 0)
        if getppid() != parent_pid:
            _exit(EXIT_ERROR)
    return die_with_parent


def become_subreaper():
    """prctl(PR_SET_CHILD_SUBREAPER): orphaned grandchildren (an app's daemons)
    are reparented to us instead of PID 1, and reaped quietly like unknown pids.
    An OSError names what failed."""
    import ctypes
    try:
        prctl = ctypes.CDLL(None, use_errno=True).prctl
    except (OSError, AttributeError):
        raise OSError("--subreaper needs Linux prctl(2)") from None
    if prctl(PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) != 0:
        raise OSError("--subreaper: prctl failed: %s" % os.strerror(ctypes.get_errno()))


def own_children():
    """The pids whose parent is this process: /proc's list (CONFIG_PROC_CHILDREN),
    or each /proc/PID/stat's parent field; [] where /proc cannot say."""
    me = os.getpid()
    try:
        with open("/proc/%d/task/%d/children" % (me, me)) as f:
            return [int(pid) for pid in f.read().split()]
    except (OSError, ValueError):
        pass
    found = []
    for name in os.listdir("/proc") if os.path.isdir("/proc") else ():
        try:
            with open("/proc/%s/stat" % name) as f:   # "pid (comm) state ppid ..."
                if int(f.read().rpartition(")")[2].split()[1]) == me:
                    found.append(int(name))
        except (OSError, ValueError, IndexError):
            continue   # not a pid, or gone meanwhile
    return found


def adopted_gone(told, deadline, new_parent, log):
    """--subreaper, at a stop once the children are gone: the orphans the
    server adopted (an app's daemons) are stopped with it, as its children
    are: SIGTERM once each (``told``, the pids sent it), SIGKILL at the stop
    ``deadline``; True once none is left.  Not ``new_parent``, USR2's."""
    adopted = [pid for pid in own_children() if pid != new_parent]
    if not adopted:
        return True
    if time.monotonic() >= deadline:
        log.warning("stop deadline passed: killing %s (--subreaper): %s"
                    % (processes(len(adopted)), " ".join(map(str, adopted))))
        for pid in adopted:
            kill(pid, signal.SIGKILL)
            try:
                os.waitpid(pid, 0)
            except ChildProcessError:
                pass
        return True
    untold = [pid for pid in adopted if pid not in told]
    if untold:   # a daemon's own child is adopted once the daemon has ended
        told.update(untold)
        log.info("stopping: SIGTERM to %s (--subreaper): %s"
                 % (processes(len(untold)), " ".join(map(str, untold))))
        for pid in untold:
            kill(pid, signal.SIGTERM)
    return False


def relieve_cap(table, listeners, cap, log):
    """--keep-alive at --max-children: children idle between requests would
    hold every slot while new clients wait in the backlog (RFC 9112 9.5: an
    idle connection may be closed at any time).  If one waits, the children
    are told as on a reload (Drain, SIGHUP): an idle one hands its connection
    back to the parent, which holds it without a child, and ends; a busy one
    says Connection: close."""
    if not backlog_waiting(listeners):
        return
    log.limited("cap relief", "info", "at --max-children %d with kept-alive connections "
                "and clients waiting: idle connections go back to the parent" % cap)
    table.tell_all(signal.SIGHUP)


def processes(count):
    return "%d adopted process%s" % (count, "" if count == 1 else "es")


def flush_stdio():
    """Text buffered in the parent would be written again by every child."""
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except (AttributeError, ValueError, OSError):
            pass


class ChildTable:
    """The live children, in fork order, and those sent SIGTERM that have
    KILL_GRACE_SECONDS to go before SIGKILL.  Fork order is not deadline
    order: a deadline runs from the accept, and a connection the parent held
    (a slow head, a kept-alive one handed back) is forked after later ones."""

    def __init__(self, log):
        self.log = log
        self.live = {}          # pid -> Child
        self.terminating = {}   # pid -> Child sent SIGTERM, awaiting SIGKILL
        self.check_at = INFINITY   # no child can time out before this

    def add(self, pid, addr, accepted_at, deadline):
        self.live[pid] = Child(pid, addr, accepted_at, deadline)
        if deadline and deadline < self.check_at:
            self.check_at = deadline

    def check_deadlines(self, now):
        """--timeout: SIGTERM a child past its deadline, SIGKILL it
        KILL_GRACE_SECONDS later."""
        # No copy of the table: neither loop adds or removes children.
        if now >= self.check_at:
            # Every child is looked at (fork order is not deadline order), but
            # only when one is due: about once per --timeout under load.
            self.check_at = INFINITY
            for child in self.live.values():
                if not child.deadline:
                    continue
                if child.deadline > now:
                    self.check_at = min(self.check_at, child.deadline)
                elif child.pid not in self.terminating:
                    self.log.warning("child %d (client %s) timed out after %.1fs; sending "
                                     "SIGTERM" % (child.pid, format_addr(child.addr),
                                                  now - child.started))
                    self.signal(child, signal.SIGTERM)
        for child in self.terminating.values():
            if now >= child.term_at + KILL_GRACE_SECONDS:
                self.log.warning("child %d did not exit within %gs of SIGTERM (it ignores "
                                 "it, or is stopped); sending SIGKILL"
                                 % (child.pid, KILL_GRACE_SECONDS))
                kill(child.pid, signal.SIGKILL)
                child.term_at = INFINITY

    def next_kill(self):
        """When the next SIGKILL is due (a SIGKILLed child's term_at is infinite)."""
        if not self.terminating:
            return INFINITY
        return min(c.term_at for c in self.terminating.values()) + KILL_GRACE_SECONDS

    def signal(self, child, sig):
        kill(child.pid, sig)
        if child.term_at is None:
            child.term_at = time.monotonic()
        self.terminating[child.pid] = child

    def terminate_all(self):
        for child in list(self.live.values()):
            self.signal(child, signal.SIGTERM)

    def tell_all(self, sig):
        """A notice to every child not being terminated (SIGHUP: Drain)."""
        for child in self.live.values():
            if child.pid not in self.terminating:
                kill(child.pid, sig)

    def forget(self, pid):
        """The Child record of a reaped pid, or None if it was not ours."""
        self.terminating.pop(pid, None)
        return self.live.pop(pid, None)

    def kill_all(self):
        """SIGKILL every child and wait for each: (pid, status) of those reaped."""
        for child in self.live.values():
            kill(child.pid, signal.SIGKILL)
            child.term_at = child.term_at or time.monotonic()   # ours: "(server stopping)"
        for pid in list(self.live):
            try:
                yield os.waitpid(pid, 0)
            except ChildProcessError:
                self.forget(pid)

    def log_exit(self, child, status, ours, stopping):
        """The log line for an exit that was not forkserver's clean one."""
        age = time.monotonic() - child.started
        if os.WIFEXITED(status) and not ours:
            log_app_exit(self.log, child, status, age, stopping)
        elif not is_normal_exit(status):
            log_abnormal_exit(self.log, child, status, age, stopping)


def read_report(fd, deadline):
    """The child's report line, b"" if it ended without one, None if none came
    by ``deadline``.  A newline ends it, not EOF: a process the app started
    may hold the pipe open."""
    poller = select.poll()
    poller.register(fd, select.POLLIN)
    data = b""
    while not data.endswith(b"\n"):
        left = deadline - time.monotonic()
        if left <= 0 or not poller.poll(math.ceil(left * 1000)):   # PEP 475: no EINTR
            return None
        chunk = os.read(fd, 65536)
        if not chunk:
            return b""
        data += chunk
    return data


def end_child(pid):
    """SIGKILL (harmless if it has exited: it is our unreaped child, so the
    pid is still its own), then reap it; its wait status, or None if a lab's
    SIGCHLD handler (--reaper once, --lab-print-in-handler) reaped it first."""
    try:
        os.kill(pid, signal.SIGKILL)
        return os.waitpid(pid, 0)[1]
    except (ProcessLookupError, ChildProcessError):
        return None
