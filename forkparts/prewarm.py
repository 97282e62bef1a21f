"""--prewarm: the app's first request, run in the parent before the first fork.

DESIGN note: lazy imports and first-request set-up are done once and
inherited by every child, and the code the request ran is specialized
(PEP 659) before the fork instead of in every child.  The request goes
through the child's own entry point, which the front door passes in
(``serve``), so this part never imports a front door.  A room of its own
because it is the one place the parent runs app code on purpose, and it
says what it did (the status line, and the app's traceback if it failed).
"""

import socket
import sys

from forkparts.accel import relocate
from forkparts.apps import AppLoadError, is_our_file
from forkparts.logs import Log

PREWARM_PASSES = 16                      # > CPython 3.11's quickening warm-up of 8 calls


def prewarm(serve, app, config, path, log, first=()):
    """--prewarm: a synthetic GET through the app in the parent (``serve``,
    the child's serve_connection, handles it), so lazy
    imports and first-request setup are done once and inherited by children.
    Repeated PREWARM_PASSES times: Python 3.11 specializes a function's
    bytecode in place after a few calls (PEP 659), and until then every call
    writes to the code object, which costs each child a copy-on-write page.
    After the first pass, the code the request ran is copied side by side,
    after ``first`` (relocate_code: our own code only), and the later passes
    specialize the copies."""
    check_prewarm(serve, app, config, path)   # lazy imports and set-up first
    quiet = Log(error_fd=log.error_fd, level="critical")
    hot = list(first) + code_run_by(prewarm_once, serve, app, config, path, quiet)
    log.debug("prewarm: %d of our functions given code objects moved together (%d ran)"
              % (relocate(hot), len(hot)))
    for _ in range(PREWARM_PASSES - 2):
        prewarm_once(serve, app, config, path, quiet)
    log.info("prewarm GET %s: %s" % (path, prewarm_once(serve, app, config, path, quiet)))


class CapturedLog(Log):
    """A Log that keeps its lines instead of writing them."""

    def __init__(self):
        super().__init__(error_fd=-1, level="warning")
        self.lines = []

    def write_line(self, fd, line):
        self.lines.append(line)


def check_prewarm(serve, app, config, path):
    """The first --prewarm request: an app that fails it (raises, exits, answers
    5xx or nothing) stops the start (AppLoadError), with its own traceback."""
    captured = CapturedLog()
    status = prewarm_once(serve, app, config, path, captured)
    code = status.split(" ", 2)[1:2]
    if code and code[0].isdigit() and int(code[0]) < 500:
        return
    detail = without_our_frames("\n".join(captured.lines))
    raise AppLoadError("--prewarm GET %s answered %s%s" % (
        path, status, (":\n" + detail) if detail else ""))


def without_our_frames(text):
    """A logged traceback without the frames of forkserver's own files."""
    kept, skipping = [], False
    for line in text.splitlines():
        if line.startswith('  File "'):
            skipping = is_our_file(line[8:].partition('"')[0])
        elif not line.startswith("    "):
            skipping = False
        if not skipping:
            kept.append(line)
    return "\n".join(kept)


def code_run_by(call, *args):
    """The code objects of every Python function that call(*args) runs, in
    the order they first ran."""
    seen, order = set(), []

    def note(frame, event, arg):
        # By id: code objects compare equal by content, even across files.
        if event == "call" and id(frame.f_code) not in seen:
            seen.add(id(frame.f_code))
            order.append(frame.f_code)
    previous = sys.getprofile()   # an app's profiler, if any, is put back
    sys.setprofile(note)
    try:
        call(*args)
    finally:
        sys.setprofile(previous)
    return order


def prewarm_once(serve, app, config, path, log):
    """GET path through the app, the handler logging to log; the status line."""
    ours, theirs = socket.socketpair()
    try:
        theirs.sendall(b"GET %s HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n"
                       % path.encode("latin-1"))
        # A handler config of the same kind, with only the limits kept.
        cfg = type(config)(limits=config.limits, log=log, send_timeout=1.0)
        serve(ours, ("127.0.0.1", 0), app, cfg)
        theirs.settimeout(1.0)
        status = theirs.recv(64).split(b"\r\n", 1)[0].decode("latin-1", "replace")
        return status or "no response"
    except OSError as exc:
        return "no response (%s)" % exc
    finally:
        ours.close()
        theirs.close()
