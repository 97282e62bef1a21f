#!/usr/bin/env python3
"""eintr_demo.py: signals delivered while accept() blocks, and accept() still works.

The tutorial wraps accept() in a retry loop:

    try:
        client_connection, client_address = listen_socket.accept()
    except IOError as e:
        code, msg = e.args
        if code == errno.EINTR:   # restart accept if it was interrupted
            continue

Since Python 3.5 that loop is dead code (PEP 475): when a system call fails
with EINTR, Python runs the signal handlers and, if none raised, retries the
call itself, with its timeout recomputed.  This script shows it.  The main
thread blocks in a plain accept() on a loopback socket; a helper thread sends
it --signals SIGUSR1s one at a time with pthread_kill, waiting for each to be
handled, and only then connects.  Each handler call records the line it
interrupted: the accept() line.  accept() returns the connection; no EINTR
ever reaches our code.

With --raise, the handler raises instead: then (and only then) the exception
propagates out of accept(), which is how Python lets a handler abort a call.

    python scripts/eintr_demo.py --signals 20
"""
import argparse
import json
import signal
import socket
import sys
import threading
import time

DEFAULT_SIGNALS = 10
MAX_SIGNALS = 10000
HANDLED_WAIT_SECONDS = 5.0     # per signal: the handler must have run by then
POLL_SECONDS = 0.001
EXIT_OK, EXIT_FAILED, EXIT_USAGE = 0, 1, 2


class Interrupted(Exception):
    """Raised by the handler under --raise."""


class Recorder:
    """The SIGUSR1 handler: counts calls and remembers where they landed."""

    def __init__(self, raise_after=None):
        self.count = 0
        self.lines = set()
        self.raise_after = raise_after

    def __call__(self, signum, frame):
        self.count += 1
        self.lines.add("%s:%d" % (frame.f_code.co_name, frame.f_lineno))
        if self.raise_after is not None and self.count >= self.raise_after:
            raise Interrupted("handler raised after %d signals" % self.count)


def blocked_in_accept(native_id, fd):
    """True while the thread sleeps in a system call on ``fd``: its
    /proc/self/task/TID/syscall line is "NR FIRST-ARG ..." (proc(5)), and
    the main thread's only call on the listener is accept()."""
    try:
        with open("/proc/self/task/%d/syscall" % native_id) as f:
            fields = f.read().split()
    except OSError:
        return False
    return len(fields) > 1 and fields[1] == hex(fd)


def wait_until(predicate, seconds):
    deadline = time.monotonic() + seconds
    while not predicate():
        if time.monotonic() > deadline:
            return False
        time.sleep(POLL_SECONDS)
    return True


def send_signals(target, recorder, count, listener, errors):
    """Helper thread: count signals to the main thread, each sent while it is
    blocked in accept() and handled before the next, then connect so that
    accept() can return."""
    ident, native_id = target
    fd, address = listener.fileno(), listener.getsockname()
    try:
        for sent in range(1, count + 1):
            if not wait_until(lambda: blocked_in_accept(native_id, fd), HANDLED_WAIT_SECONDS):
                errors.append("the main thread never blocked in accept()")
                return
            signal.pthread_kill(ident, signal.SIGUSR1)
            if not wait_until(lambda: recorder.count >= sent, HANDLED_WAIT_SECONDS):
                errors.append("signal %d was not handled in %.0fs" % (sent, HANDLED_WAIT_SECONDS))
                return
        with socket.create_connection(address, timeout=HANDLED_WAIT_SECONDS) as sock:
            sock.sendall(b"hello")
    except OSError as exc:   # --raise: the listener may be gone already
        errors.append("helper: %s" % exc)


def run(count, raise_handler):
    recorder = Recorder(raise_after=count if raise_handler else None)
    signal.signal(signal.SIGUSR1, recorder)
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(1)
    errors = []
    target = (threading.get_ident(), threading.get_native_id())
    helper = threading.Thread(target=send_signals, daemon=True, args=(
        target, recorder, count, listener, errors))
    helper.start()
    result = {"signals_sent": count, "accepted_from": None, "exception": None}
    try:
        conn, addr = listener.accept()          # blocks; the signals land here
        result["accepted_from"] = "%s:%d" % addr
        conn.close()
    except Interrupted as exc:
        result["exception"] = "%s: %s" % (type(exc).__name__, exc)
    helper.join(HANDLED_WAIT_SECONDS)
    listener.close()
    result.update(signals_handled=recorder.count, interrupted_at=sorted(recorder.lines),
                  helper_errors=errors)
    return result


def print_report(r):
    print("signals delivered while accept() blocked: %d (sent %d)" % (
        r["signals_handled"], r["signals_sent"]))
    print("the handler ran at: %s" % ", ".join(r["interrupted_at"]))
    if r["accepted_from"]:
        print("accept() returned a connection from %s: Python retried it after every "
              "EINTR (PEP 475), no retry loop needed" % r["accepted_from"])
    if r["exception"]:
        print("accept() raised %s: a handler that raises aborts the call" % r["exception"])
    for error in r["helper_errors"]:
        print("helper: %s" % error)


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--signals", type=int, default=DEFAULT_SIGNALS,
                   help="SIGUSR1s to send while accept() blocks (default %(default)s)")
    p.add_argument("--raise", dest="raise_handler", action="store_true",
                   help="make the handler raise at the last signal")
    p.add_argument("--json", action="store_true", help="print the result as JSON")
    opts = p.parse_args(argv)
    if not 1 <= opts.signals <= MAX_SIGNALS:
        p.error("--signals must be between 1 and %d" % MAX_SIGNALS)
    result = run(opts.signals, opts.raise_handler)
    if opts.json:
        print(json.dumps(result, indent=2))
    else:
        print_report(result)
    in_accept = all(line.startswith("accept:") for line in result["interrupted_at"])
    ok = result["signals_handled"] == opts.signals and in_accept and (
        result["exception"] if opts.raise_handler else result["accepted_from"])
    return EXIT_OK if ok else EXIT_FAILED


if __name__ == "__main__":
    sys.exit(main())
