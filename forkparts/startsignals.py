"""The signals of the start: before the server's own handlers are in.

DESIGN note: from the start of main() until prepare() installs the
server's handlers, the app is imported, the listeners bound, the pidfile
written and the first hooks run: for a Django project that is seconds.  A
signal whose default action ends a process does nothing to PID 1 (a
container's first process, when there is no init) unless it has a handler:
the kernel drops it.  So docker stop's SIGTERM, or Ctrl-C under docker run
-it, sent while a slow app imported was lost, and the server started and
served until the SIGKILL.  Elsewhere the same signal killed the process
with nothing logged, and a USR1 from logrotate during a slow start ended
the server outright.

So the start has handlers of its own (StartSignals).  A stop signal (TERM,
INT, QUIT) raises StopBeforeReady wherever the start is, even inside the
app's import; it is no error of the app's (apps.py lets it through), and
the start's own clean-up (the listeners closed, the pidfile removed) runs
as it does for any failed start, then main() exits 0 with one line.  The
others the server handles (HUP, USR1, USR2, TTIN, TTOU) are kept and handled
once the server's handlers are in.  A signal the server was started with
ignored (nohup's HUP) stays ignored until then, as before.  The children
restore the dispositions the server was started with (original), not these.
"""

import signal

from forkparts.exits import ServerSignal

STOP = (signal.SIGTERM, signal.SIGINT, signal.SIGQUIT)
KEPT = (signal.SIGHUP, signal.SIGUSR1, signal.SIGUSR2, signal.SIGTTIN, signal.SIGTTOU)


class StopBeforeReady(ServerSignal):
    """A stop signal before the server was ready: the start ends, cleanly.
    A BaseException, so that an app's ``except Exception`` around its own
    import does not swallow it."""

    def __init__(self, signum):
        super().__init__(signum)
        self.signum = signum

    def __str__(self):
        return "%s before the server was ready: stopped" % signal.Signals(self.signum).name


class StartSignals:
    """The start's handlers: installed when made; the server's own replace
    them in prepare() (Supervisor.install_signals), which takes ``original``
    and ``kept`` from here."""

    def __init__(self, install=True):
        self.original = {}   # signal -> the disposition the server was started with
        self.kept = []       # KEPT signals received, in order
        for sig in STOP + KEPT if install else ():
            self.original[sig] = signal.getsignal(sig)
            if self.original[sig] != signal.SIG_IGN:
                signal.signal(sig, self.handler)
        if install:   # a HUP's exec left them blocked until now (forkparts/reexec.py)
            signal.pthread_sigmask(signal.SIG_UNBLOCK, STOP + KEPT + (signal.SIGCHLD,))

    def carry(self, pending):
        """A HUP's exec: the signals the old code had noted but not handled,
        as if they had come now (forkparts/reexec.py)."""
        for sig in pending:
            if self.original.get(sig, signal.SIG_IGN) != signal.SIG_IGN:
                self.handler(sig, None)

    def handler(self, signum, frame):
        if signum in STOP:
            raise StopBeforeReady(signum)
        self.kept.append(signum)

    def for_children(self, signals, ignored_stop):
        """What each child restores for ``signals``: what the server was
        started with (call it before the server's own handlers go in), as the
        C function takes it: SIG_DFL and SIG_IGN as plain ints (getsignal
        gives them as enum members).  A stop signal started ignored gets its
        handler from ``ignored_stop`` instead (forkserver.CHILD_STOP_SIGNALS)."""
        restored = []
        for sig in signals:
            handler = self.original[sig] if sig in self.original else signal.getsignal(sig)
            if handler == signal.SIG_IGN and sig in ignored_stop:
                handler = ignored_stop[sig]
            restored.append((int(sig), int(handler) if isinstance(handler, int) else handler))
        return tuple(restored)
