"""Apps for tests/test_supervision.py: one app that behaves by path, so a
single server can hang, allocate, burn CPU, and then show it still serves."""
import os
import signal
import subprocess
import time

from tests import apps

ORPHAN_SLEEP_SECONDS = "1"   # how long the orphaned grandchild outlives its parent
FORKED_LINGER_SECONDS = 10   # how long fork_lingering's process holds the client's socket


def spawn_orphan(environ, start_response):
    """Starts a grandchild and exits without waiting for it: the grandchild is
    orphaned and reparented to the nearest subreaper (or PID 1).  It sleeps ?s=
    seconds (ORPHAN_SLEEP_SECONDS), deaf to SIGTERM with ?deaf=1."""
    seconds = apps.query_param(environ, "s", ORPHAN_SLEEP_SECONDS)
    deaf = "trap '' TERM; " if apps.query_param(environ, "deaf", "") else ""
    child = subprocess.Popen(["sh", "-c", "%ssleep %s; :" % (deaf, seconds)],
                             stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                             stderr=subprocess.DEVNULL)
    return apps._reply(start_response, ("%d\n" % child.pid).encode())


def fork_lingering(environ, start_response):
    """Forks a process that holds every descriptor the child has, the client's
    socket too, for FORKED_LINGER_SECONDS (as an app's os.fork or a
    multiprocessing.Process with Linux's default start method does), and
    answers at once with its pid."""
    pid = os.fork()
    if pid == 0:
        signal.signal(signal.SIGALRM, signal.SIG_DFL)   # not the request's deadline
        time.sleep(FORKED_LINGER_SECONDS)
        os._exit(0)
    return apps._reply(start_response, ("%d\n" % pid).encode())


def hang_ignoring_hangup(environ, start_response):
    """Hangs, deaf to SIGHUP: under pexpect the server leads a session on a pty,
    and when it dies the kernel hangs up the pty's process group; a server
    under systemd has no tty.  Only the child's own deadline can end this one."""
    signal.signal(signal.SIGHUP, signal.SIG_IGN)
    return apps.hang(environ, start_response)


def hang_ignoring_term(environ, start_response):
    """Hangs, deaf to SIGTERM and to its own SIGALRM deadline: only the
    parent's SIGKILL, after the grace that follows its SIGTERM, ends it."""
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    signal.signal(signal.SIGALRM, signal.SIG_IGN)
    return apps.hang(environ, start_response)


def hang_ignoring_alarm(environ, start_response):
    """Hangs, deaf to its own SIGALRM deadline: the parent's SIGTERM ends it."""
    signal.signal(signal.SIGALRM, signal.SIG_IGN)
    return apps.hang(environ, start_response)


def hang_deaf(environ, start_response):
    """Hangs, deaf to SIGHUP, SIGTERM and SIGALRM: neither its own deadline
    nor a polite signal ends it; only a SIGKILL does."""
    for sig in (signal.SIGHUP, signal.SIGTERM, signal.SIGALRM):
        signal.signal(sig, signal.SIG_IGN)
    return apps.hang(environ, start_response)


def stream_then_hang(environ, start_response):
    """Sends a first chunk, then hangs: its response has begun."""
    start_response("200 OK", [("Content-Type", "text/plain")])
    yield b"first chunk\n"
    apps.hang(environ, start_response)


ROUTES = {
    "/": apps.hello,
    "/slow": apps.slow,
    "/hang": apps.hang,
    "/stream-then-hang": stream_then_hang,
    "/hang-ignoring-hangup": hang_ignoring_hangup,
    "/hang-ignoring-term": hang_ignoring_term,
    "/hang-ignoring-alarm": hang_ignoring_alarm,
    "/hang-deaf": hang_deaf,
    "/alloc": apps.allocate_forever,
    "/cpu": apps.burn_cpu,
    "/subprocess": apps.subprocess_true,
    "/pid": apps.pid,
    "/orphan": spawn_orphan,
    "/fork-lingering": fork_lingering,
}


def by_path(environ, start_response):
    """Dispatches on PATH_INFO to the apps above; 404 otherwise."""
    app = ROUTES.get(environ["PATH_INFO"])
    if app is None:
        return apps._reply(start_response, b"no such path\n", status="404 Not Found")
    return app(environ, start_response)


def module_source(version, import_delay_seconds=0.0):
    """Source of a tiny app module whose answer names its version; the test
    writes it into a tmp dir and edits it to check reloads.  Each version has
    a different length on purpose: a .pyc is trusted when the source's mtime
    (whole seconds) and size match, so a same-size edit within a second could
    be missed by any re-import (PEP 552)."""
    assert isinstance(version, int) and version > 0
    return (
        "import time\n"
        "time.sleep(%r)\n"
        "VERSION = %r\n"
        "PAD = %r\n"
        "def app(environ, start_response):\n"
        "    body = ('version %%s\\n' %% VERSION).encode()\n"
        "    start_response('200 OK', [('Content-Type', 'text/plain'),\n"
        "                              ('Content-Length', str(len(body)))])\n"
        "    return [body]\n" % (import_delay_seconds, version, "x" * version))


def write_module(path, version, import_delay_seconds=0.0):
    text = module_source(version, import_delay_seconds)
    tmp = str(path) + ".tmp"
    with open(tmp, "w") as f:
        f.write(text)
    os.replace(tmp, str(path))
