"""The lab's deliberate mistakes, each a small override of the correct server.

DESIGN note.  docs/labs.md has students reproduce the classic mistakes of a
forking server on purpose: no fork at all (the iterative server), no reaper, a reaper that reaps one child per
SIGCHLD, print() in the signal handler, a parent that forgets to close the
client socket, a child that keeps the listener, children orphaned when the
parent dies, a heap that is not frozen.  Each mistake is a mixin here that
overrides a few methods of forkserver.Server (most one or two; the reapers'
base class five, four of them scaffolding), so that it reads as a diff
against the correct code in forkserver.py (named in each docstring), and the
parent's loop never tests a lab switch.  (One lab reaches into the child:
--lab-parent-keeps-client also makes responses close-delimited, as the
tutorial's were, through HandlerConfig.close_delimited.)  server_class() puts the mixins the
command line asks for in front of the real class.

This module never imports forkserver: the Server class is handed in.
"""

import signal

from forkparts.children import exited_children, flush_stdio
from forkparts.exits import ServerSignal
from forkparts.logs import format_addr


class LabTimeout(ServerSignal):
    """--lab-iterative: the request overran --timeout (a BaseException, so
    that an app's ``except Exception`` does not swallow it)."""


def raise_timeout(signum, frame):
    raise LabTimeout("the request overran --timeout")


class Iterative:
    """--lab-iterative (lab 0): the tutorial's first server, before it forks.
    The parent serves each connection itself, from request to close, and
    only then accepts the next one: a second client waits in the backlog
    until the first is answered.  Correct version: Server.fork_child (fork,
    and let the child serve).  The app runs in the parent, so --timeout is
    a SIGALRM that raises LabTimeout inside it (a 500) instead of killing a
    child, and an error anywhere is logged, never out of the main loop.  Not
    with --keep-alive or the other switches (check_switches)."""

    def fork_child(self, sock, addr, data, accepted_at):
        self.served += 1
        signal.signal(signal.SIGALRM, raise_timeout)
        signal.setitimer(signal.ITIMER_REAL, self.opts.timeout)   # 0: none
        try:
            self.child_plan.serve(sock, addr, self.app, self.handler_config, data, accepted_at)
        except Exception:
            self.log.exception("serving %s failed" % format_addr(addr))
        except LabTimeout:
            self.log.warning("client %s: over --timeout %gs; closed" % (
                format_addr(addr), self.opts.timeout))
        finally:
            signal.setitimer(signal.ITIMER_REAL, 0)
            signal.signal(signal.SIGALRM, signal.SIG_DFL)
            self.status.title_dirty = True   # the request's title was the parent's
        return 0

    def cleanup(self):
        """The stop line counts forks: none here.  What it served, it says apart."""
        served, self.served = self.served, 0
        super().cleanup()
        self.log.info("--lab-iterative: the parent served %d %s itself, one after another"
                      % (served, "connection" if served == 1 else "connections"))


ITERATIVE_EXCLUDES = ("keep_alive", "lab_parent_keeps_client", "lab_child_keeps_listener",
                      "lab_print_in_handler", "lab_orphans")


def check_switches(opts):
    """The usage error of a combination that means nothing, or None."""
    if not opts.lab_iterative:
        return None
    given = ["--" + name.replace("_", "-") for name in ITERATIVE_EXCLUDES
             if getattr(opts, name)] + (["--reaper %s" % opts.reaper]
                                        if opts.reaper != "loop" else [])
    if given:
        return ("--lab-iterative serves in the parent and forks no child, so it does not "
                "combine with %s" % ", ".join(given))
    return None


class ReapInHandler:
    """The tutorial's reaper: waitpid() inside the SIGCHLD handler.
    Correct version: Server.note_sigchld only notes the signal, and
    Server.reap_children calls waitpid in the main loop.  The mistake is
    sigchld_handler and reap_in_handler; reap_children, next_timeout,
    stopped and cleanup are scaffolding, so that the lab's server still logs
    each exit and stops without leaving a zombie behind."""
    reap_only_one = False

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.reaped = []   # (pid, status) reaped by the handler, for the loop to log

    def sigchld_handler(self):
        return self.reap_in_handler

    def reap_in_handler(self, signum, frame):
        self.sigchld_seen = True
        for pid, status in exited_children():
            self.reaped.append((pid, status))
            self.reaped_in_handler(pid, status)
            if self.reap_only_one:
                return

    def reaped_in_handler(self, pid, status):
        pass

    def reap_children(self):
        """The loop only takes what the handler reaped: it never calls waitpid."""
        self.sigchld_seen = False
        while self.reaped:
            self.child_exited(*self.reaped.pop(0))

    def next_timeout(self):
        timeout = super().next_timeout()
        return min(timeout, 0.05) if self.stop_mode else timeout   # nobody reaps for us: poll

    def stopped(self):
        self.reaped.extend(exited_children())   # a stop always ends with nothing left
        self.reap_children()
        return super().stopped()

    def cleanup(self):
        self.reaped.extend(exited_children())
        self.reaped.clear()
        super().cleanup()


class ReapOnce(ReapInHandler):
    """--reaper once (lab 5): one waitpid per SIGCHLD.  Signals do not queue:
    each exit sends a SIGCHLD, but one sent while another is still pending
    merges into it (and CPython runs the Python handler once for all that
    arrived before it ran), so of children that exit together, all but one
    stay zombies until a later signal.  Correct version: Server.reap_children
    loops until waitpid returns 0."""
    reap_only_one = True


class NoReaper(ReapInHandler):
    """--reaper none (lab 4): nobody calls waitpid, so every exited child
    stays a zombie.  Correct version: Server.sigchld_handler."""

    def sigchld_handler(self):
        return signal.SIG_DFL


class PrintInHandler(ReapInHandler):
    """--lab-print-in-handler (lab 11): print() from the SIGCHLD handler.  If
    the handler interrupted the main loop inside a write to the same buffered
    stdout, the buffer's lock is held and print() raises RuntimeError
    ("reentrant call inside ...").  The tutorial's server dies of it wherever
    the main loop happened to be; here it is noted and the main loop logs it
    (the reap itself is kept).  Correct version: Server.note_sigchld records
    and the main loop logs (Server.child_exited)."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.handler_errors = []

    def reaped_in_handler(self, pid, status):
        try:
            print("Child %d terminated with status %d" % (pid, status))
        except RuntimeError as exc:
            self.handler_errors.append("%s (while reaping child %d)" % (exc, pid))

    def fork_child(self, sock, addr, data, accepted_at):
        # The tutorial's print, with signals open, so SIGCHLD can interrupt it
        # while it holds stdout's buffer lock.
        flush_stdio()
        pid = super().fork_child(sock, addr, data, accepted_at)
        if pid:
            print("Forked child %d for %s" % (pid, format_addr(addr)))
        return pid

    def reap_children(self):
        while self.handler_errors:
            self.log.error(
                "--lab-print-in-handler: print() in the SIGCHLD handler failed: %s. "
                "The handler interrupted the main loop's own print() on the same "
                "buffered stdout; unguarded, this exception would have killed the "
                "server. A correct handler only records (docs/labs.md, lab 11)."
                % self.handler_errors.pop(0))
        super().reap_children()


class ParentKeepsClient:
    """--lab-parent-keeps-client (lab 3): the tutorial's missing close().  The
    parent's copy of every client socket stays open, so the client never sees
    the end of a close-delimited response and the parent runs out of
    descriptors.  Correct version: Server.close_client.  The switch also
    turns off, in the child (HandlerConfig.close_delimited), two things that
    would hide the leak: the Content-Length, and the shutdown(SHUT_WR) before
    the child's close (wire.Connection.shut_down), which sends the FIN
    whatever other processes still hold the socket."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.kept_clients = []

    def close_client(self, sock):
        self.kept_clients.append(sock)

    def cleanup(self):
        for sock in self.kept_clients:
            sock.close()
        super().cleanup()


class ChildKeepsListener:
    """--lab-child-keeps-listener (lab 10): the child does not close its copy
    of the listening socket, so a stopped parent's port stays taken while any
    child lives.  Correct version: Server.child_closes."""

    def child_closes(self):
        return self.parent_fds()

    def begin_stop(self, mode, why):
        # As the tutorial's parent, close only its own copy: the correct one
        # also shuts the socket down (Listener.stop_listening), which ends
        # the children's copies too and would hide this lab's mistake.
        for listener in self.listeners.values():
            listener.owned = False
        super().begin_stop(mode, why)


class Orphans:
    """--lab-orphans (lab 12): children are not told to die with the parent,
    so a SIGKILLed parent leaves them to PID 1.  Correct version:
    Server.die_with_parent (parent_death_signal)."""

    def die_with_parent(self):
        return None


class NoGcFreeze:
    """--no-gc-freeze (lab 8): the heap is not moved to the permanent
    generation, so a collection in a child writes every object's header and
    copies the page it sits on.  Correct version: Supervisor.freeze."""

    def freeze(self):
        pass


def lab_mixins(opts):
    """The mixins the command line asks for, outermost first."""
    mixins = [Iterative] if opts.lab_iterative else []
    if opts.lab_print_in_handler:
        mixins.append(PrintInHandler)
    if opts.reaper == "once":
        mixins.append(ReapOnce)
    elif opts.reaper == "none":
        mixins.append(NoReaper)
    for switch, mixin in (("lab_parent_keeps_client", ParentKeepsClient),
                          ("lab_child_keeps_listener", ChildKeepsListener),
                          ("lab_orphans", Orphans), ("no_gc_freeze", NoGcFreeze)):
        if getattr(opts, switch):
            mixins.append(mixin)
    return mixins


def server_class(opts, base):
    """``base`` itself, or a subclass with the lab's mistakes in front of it."""
    mixins = lab_mixins(opts)
    if not mixins:
        return base
    return type("Lab" + base.__name__, (*mixins, base), {"__module__": __name__})

