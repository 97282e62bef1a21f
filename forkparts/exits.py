"""The child's exit statuses, and the exceptions that mean one.

DESIGN note: the child says how it ended only through its exit status, which
the parent decodes in its log (EXIT_NAMES); both sides read the codes from
here, so neither front door has to import the other to agree on them.
"""

# Child exit statuses (the parent decodes them in its log).
EXIT_OK = 0
EXIT_ERROR = 1            # the app raised, or our own code failed
EXIT_MEMORY_LIMIT = 3     # a MemoryError: --limit-memory, or RLIMIT_AS, a full machine
EXIT_CPU_LIMIT = 4        # --limit-cpu was hit (SIGXCPU)
EXIT_HOOK_FAILED = 5      # the post_fork hook raised
EXIT_TIMEOUT = 6          # --timeout reached: answered 500 if its response had not begun
EXIT_NAMES = {
    EXIT_ERROR: "error (see the error logged above)",
    EXIT_MEMORY_LIMIT: "out of memory: a MemoryError (--limit-memory, or another limit)",
    EXIT_CPU_LIMIT: "CPU limit hit (--limit-cpu)",
    EXIT_HOOK_FAILED: "post_fork hook failed",
    EXIT_TIMEOUT: "timeout: answered 500 unless its response had begun",
}


class ServerSignal(BaseException):
    """What the server raises into whatever code is running, from a signal
    handler of its own: a deadline, a limit, a stop.  A BaseException, so an
    app's ``except Exception`` does not swallow it; and code of the server
    that catches the app's or a hook's errors lets it through (run_hook)."""


class CPULimitExceeded(ServerSignal):
    """Raised from the SIGXCPU handler the parent installs under --limit-cpu."""


class TimedOut(ServerSignal):
    """Raised from the child's SIGALRM handler at its --timeout deadline, in
    whatever the app is doing (as gunicorn's sync worker does on its
    arbiter's SIGABRT): the request gets a 500 if nothing was sent, else a cut
    connection, the traceback says where the app was, and the child exits
    with EXIT_TIMEOUT.  A BaseException, so an app's ``except Exception``
    does not swallow it; an app that swallows it anyway, or a call that never
    returns to Python, is ended by the parent's SIGTERM, then SIGKILL."""
