"""Apps for tests/test_fork_hygiene.py: a child reports what it inherited."""
import json
import signal

# The signals the parent handles (forkserver.HANDLED_SIGNALS), and SIGPIPE,
# which a child must leave ignored as Python starts it.
REPORTED_SIGNALS = ("SIGCHLD", "SIGTERM", "SIGINT", "SIGQUIT", "SIGHUP", "SIGUSR1", "SIGPIPE")


def handler_name(handler):
    """SIG_DFL / SIG_IGN / default_int_handler, or the handler's qualified name."""
    if isinstance(handler, signal.Handlers):
        return handler.name
    return getattr(handler, "__qualname__", repr(handler))


def inherited_signals(environ, start_response):
    """What the child's signal state is when the app runs, as JSON."""
    report = {
        "handlers": {name: handler_name(signal.getsignal(getattr(signal, name)))
                     for name in REPORTED_SIGNALS},
        # set_wakeup_fd returns the previous fd: -1 unless the parent's pipe is still set.
        "wakeup_fd": signal.set_wakeup_fd(-1),
        "blocked": sorted(signal.Signals(s).name
                          for s in signal.pthread_sigmask(signal.SIG_BLOCK, [])),
    }
    body = json.dumps(report).encode()
    start_response("200 OK", [("Content-Type", "application/json"),
                              ("Content-Length", str(len(body)))])
    return [body]
