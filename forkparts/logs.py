"""Logging: the error log, the access log and its atoms.

DESIGN note: every line is written whole with one os.write on a raw file
descriptor, so lines from many children never interleave and nothing waits in
a buffer that os._exit drops.  Parent and child share the one Log class; the
access-log atoms (gunicorn's) are built here from the environ and the response.
"""

import os
import re
import sys
import time

from forkparts.http11 import OWS

LEVELS = {"debug": 10, "info": 20, "warning": 30, "error": 40, "critical": 50}
LEVEL_NAMES = {number: name.upper() for name, number in LEVELS.items()}

# gunicorn's access log atoms.  CLF is the default format.
COMMON_LOG_FORMAT = '%(h)s %(l)s %(u)s %(t)s "%(r)s" %(s)s %(b)s'
COMBINED_LOG_FORMAT = COMMON_LOG_FORMAT + ' "%(f)s" "%(a)s"'
TRACE_STAMP = "%.6f [%d] "   # --trace: time.monotonic(), the writer's pid
# A message that can repeat for ever (accept() failing at the descriptor limit,
# ten times a second) is written at most once per this, per kind; the next
# one written says how many were left out (as the kernel's printk_ratelimit).
REPEAT_INTERVAL_SECONDS = 1.0


def exception_text():
    """The traceback of the exception being handled, or its last line if the
    traceback module cannot be imported (an app that used up the descriptors:
    the import opens traceback.py).  Imported only on the error path:
    children do not pay for it."""
    exc = sys.exc_info()[1]
    try:
        import traceback
        return traceback.format_exc().rstrip("\n")
    except Exception as failure:   # noqa: BLE001 - the 500 must still go out
        try:
            return "%s: %s (no traceback: %s: %s)" % (type(exc).__name__, exc,
                                                     type(failure).__name__, failure)
        except Exception:   # noqa: BLE001 - an exception whose __str__ fails too
            return "%s (no traceback)" % type(exc).__name__


class Log:
    """Error and access log writer over raw file descriptors."""

    def __init__(self, error_fd=2, access_fd=None, level="info",
                 access_format=COMMON_LOG_FORMAT):
        self.error_fd = error_fd
        self.access_fd = access_fd
        self.level = LEVELS[level]
        self.access_format = access_format
        self.ready_fd = 1       # where the ready line goes (capture_output moves stdout)
        self.repeats = {}       # kind -> [next time one may be written, left out since]

    def write_line(self, fd, line):
        data = line.encode("utf-8", "backslashreplace")
        if not data.endswith(b"\n"):
            data += b"\n"
        try:
            os.write(fd, data)
        except OSError:
            pass  # a closed or full log must never take a request down

    def log(self, level, message, *args, **kwargs):
        """One line at ``level`` (a name of LEVELS, or logging's number, as
        gunicorn's hooks pass it).  Like the logging module, ``message % args``
        when args are given, so a hook written for gunicorn's logger
        (``server.log.info("spawned %s", worker.pid)``) works here; a
        ``exc_info=True`` keyword adds the traceback."""
        number = level if isinstance(level, int) else LEVELS[level]
        if number < self.level:
            return
        if args:
            try:
                message = message % args
            except (TypeError, ValueError, KeyError) as exc:
                message = "%s %r (formatting failed: %s)" % (message, args, exc)
        if kwargs.get("exc_info"):
            message = "%s\n%s" % (message, exception_text())
        name = level.upper() if isinstance(level, str) else LEVEL_NAMES.get(number, str(number))
        stamp = time.strftime("%Y-%m-%d %H:%M:%S %z")
        self.write_line(self.error_fd, "[%s] [%d] [%s] %s" % (stamp, os.getpid(), name, message))

    def debug(self, message, *args, **kwargs):
        self.log("debug", message, *args, **kwargs)

    def info(self, message, *args, **kwargs):
        self.log("info", message, *args, **kwargs)

    def warning(self, message, *args, **kwargs):
        self.log("warning", message, *args, **kwargs)

    warn = warning   # logging's old name, which gunicorn configs still use

    def error(self, message, *args, **kwargs):
        self.log("error", message, *args, **kwargs)

    def critical(self, message, *args, **kwargs):
        self.log("critical", message, *args, **kwargs)

    def exception(self, message, *args, **kwargs):
        self.log("error", message, *args, exc_info=True)

    def limited(self, kind, level, message, clock=time.monotonic):
        """log(level, message), at most once per REPEAT_INTERVAL_SECONDS for
        ``kind`` (what the messages have in common, e.g. "accept() failed");
        the next line written counts those left out in between."""
        now = clock()
        state = self.repeats.get(kind)
        if state is not None and now < state[0]:
            state[1] += 1
            return
        if state is not None and state[1]:
            message += " (%d more %s not logged in the last %.0fs)" % (
                state[1], kind, REPEAT_INTERVAL_SECONDS)
        self.repeats[kind] = [now + REPEAT_INTERVAL_SECONDS, 0]
        self.log(level, message)

    def repeats_left_out(self):
        """At the end (the server stops): the counts no later line reported."""
        for kind, (_, count) in sorted(self.repeats.items()):
            if count:
                self.warning("%d more %s not logged" % (count, kind))
        self.repeats.clear()

    def trace(self, prefix, text, at=None):
        """--trace output, one write: each line "<T> [<pid>] <prefix><line>",
        T the monotonic clock (shared by every process on the machine) at
        ``at``, or now (docs/labs.md has the format)."""
        stamp = TRACE_STAMP % (time.monotonic() if at is None else at, os.getpid())
        self.write_line(self.error_fd, "\n".join(
            stamp + prefix + line for line in text.splitlines()))

    def access(self, atoms):
        if self.access_fd is None:
            return
        try:
            line = self.access_format % _AtomDict(atoms)
        except (KeyError, ValueError, TypeError) as exc:
            line = "access log format error: %s" % exc
        self.write_line(self.access_fd, line)


class HttpTraceLog(Log):
    """--trace http: each access line carries the trace's stamp, so it tells
    which child wrote it and when, beside the heads that child traced.  A
    class of its own (open_logs picks it), so the access line of a server
    without --trace pays for no test."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.access_format = "%(_trace)s" + self.access_format

    def access(self, atoms):
        atoms["_trace"] = TRACE_STAMP % (time.monotonic(), os.getpid())
        super().access(atoms)


def check_access_format(fmt):
    """Raise ValueError naming what is wrong with an --access-log-format,
    so a bad one is refused at start, not written on every request."""
    sample = {atom: "-" for atom in "hlutrmUqHsBbfaTDMLp"}
    sample.update(_environ={}, _resp_headers={})
    try:
        fmt % _AtomDict(sample)
    except (KeyError, ValueError, TypeError) as exc:
        raise ValueError("bad --access-log-format %r: %s" % (fmt, exc)) from None


class _AtomDict(dict):
    """Access-log atoms, with gunicorn's ``{name}i`` / ``{name}o`` / ``{name}e``
    (names in any case, as gunicorn's; Content-Type and Content-Length are
    the environ's CONTENT_TYPE and CONTENT_LENGTH, not HTTP_*)."""

    def __missing__(self, key):
        if len(key) > 3 and key[0] == "{" and key[-2] == "}":
            name, kind = key[1:-2].lower(), key[-1]
            environ = self["_environ"]
            if kind == "i":
                name = name.upper().replace("-", "_")
                value = environ.get(name if name in BODY_FIELDS else "HTTP_" + name)
            elif kind == "o":
                value = self["_resp_headers"].get(name)
            elif kind == "e":
                value = environ.get(key[1:-2])
                if value is None:
                    value = next((v for k, v in environ.items() if k.lower() == name), None)
            else:
                return "-"
            return "-" if value is None else log_safe(str(value))
        return "-"


BODY_FIELDS = ("CONTENT_TYPE", "CONTENT_LENGTH")   # PEP 3333: no HTTP_ prefix
# What a client's value may not put in an access line as it is: a quote or
# backslash (a field's end, in the quoted atoms of the combined format) and
# control characters (a newline would start a line of the client's own: a
# decoded %0A in the path, a Basic user name; C1 controls and the Unicode
# line separators too, where a reader's splitlines() ends a line).  In
# nginx's notation: \" \\ \xHH (\u2028 for the separators).
LOG_UNSAFE = re.compile(r'["\\\x00-\x1f\x7f-\x9f\u2028\u2029]')
LOG_ESCAPES = {'"': '\\"', "\\": "\\\\"}


def log_safe(value):
    if LOG_UNSAFE.search(value) is None:
        return value
    return LOG_UNSAFE.sub(log_escape, value)


def log_escape(match):
    char = match.group()
    return LOG_ESCAPES.get(char) or ("\\x%02x" if char < "\u0100" else "\\u%04x") % ord(char)


def access_atoms(environ, response, status, started):
    """The access log's atoms for one response (gunicorn's names)."""
    elapsed = time.time() - started
    req_line = "%s %s %s" % (environ["REQUEST_METHOD"], environ.get("RAW_URI", ""),
                             environ["SERVER_PROTOCOL"])
    sent = response.sent_body
    resp_headers = {n.lower(): v for n, v in (response.headers or [])}
    return {   # the client's values through log_safe
        "h": log_safe(environ.get("REMOTE_ADDR") or "-"), "l": "-",
        "u": log_safe(remote_user(environ)),
        "t": time.strftime("[%d/%b/%Y:%H:%M:%S %z]", time.localtime(started)),
        "r": log_safe(req_line), "m": environ["REQUEST_METHOD"],
        "U": log_safe(environ["PATH_INFO"]), "q": log_safe(environ["QUERY_STRING"]),
        "H": environ["SERVER_PROTOCOL"],
        "s": str(status), "B": str(sent), "b": str(sent) if sent else "-",
        "f": log_safe(environ.get("HTTP_REFERER", "-")),
        "a": log_safe(environ.get("HTTP_USER_AGENT", "-")),
        "T": str(int(elapsed)), "D": str(int(elapsed * 1e6)),
        "M": str(int(elapsed * 1e3)), "L": "%.6f" % elapsed, "p": "<%d>" % os.getpid(),
        "_environ": environ, "_resp_headers": resp_headers,
    }


def remote_user(environ):
    """The %(u)s atom: REMOTE_USER, else the user of Basic credentials (RFC 7617
    section 2, as gunicorn logs it), else "-"."""
    if environ.get("REMOTE_USER"):
        return environ["REMOTE_USER"]
    scheme, _, credentials = environ.get("HTTP_AUTHORIZATION", "").partition(" ")
    if scheme.lower() != "basic":
        return "-"
    import binascii
    try:
        user = binascii.a2b_base64(credentials.strip(OWS)).decode("utf-8").partition(":")[0]
    except ValueError:
        # binascii.Error, UnicodeDecodeError, and the plain ValueError that
        # a2b_base64 raises for non-ASCII (obs-text) credentials: a client's
        # bad header must not crash the child after its response.
        return "-"
    return user or "-"


def format_addr(addr):
    if not addr:
        return "unix"
    if isinstance(addr, str):
        return addr or "unix"
    return "%s:%s" % (addr[0], addr[1]) if len(addr) > 1 else str(addr[0])


def open_log(path, default_fd):
    """The descriptor to log to: ``default_fd`` for "-", None for no log,
    else the file opened for appending (an OSError names what failed)."""
    if path is None:
        return None
    if path == "-":
        return default_fd
    return os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)


def reopen_log_file(path, fd):
    """Point ``fd`` at a new file of the same name (logrotate moved the old one).
    ``fd`` stays close-on-exec if it was (dup2 would make it inheritable, and a
    USR2 re-exec would carry the rotated file on); 1 and 2 stay inheritable."""
    if not path or path == "-" or fd is None:
        return
    new = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    os.dup2(new, fd, inheritable=os.get_inheritable(fd))
    os.close(new)


# Descriptors 1 and 2 as the server was started with, once --capture-output
# has pointed them at the error log (kept for the process's life, close-on-exec).
ORIGINAL_STDIO = []


def restore_original_stdio():
    """In a USR2's new parent, just before its exec: 1 and 2 as the server was
    started with, so its ready line and an access log on stdout go where the
    old parent's went, not into the error log."""
    for fd, original in zip((1, 2), ORIGINAL_STDIO):
        os.dup2(original, fd)


def capture_output(log):
    """--capture-output, as gunicorn's: descriptors 1 and 2 (the app's print
    and tracebacks, sys.stdout and sys.stderr) become the error log file.
    The ready line keeps the original stdout (log.ready_fd), since scripts
    and service managers wait for it there, and so does an access log on
    stdout (the default), which would otherwise fill the error log."""
    if log.error_fd in (1, 2):
        return   # --error-log -: stdout and stderr are already where they go
    if not ORIGINAL_STDIO:   # the first time; a USR1 comes here again
        ORIGINAL_STDIO.extend((os.dup(1), os.dup(2)))
    log.ready_fd = os.dup(ORIGINAL_STDIO[0])
    if log.access_fd == 1:   # an access log on stdout stays there, out of the error log
        log.access_fd = ORIGINAL_STDIO[0]
    os.dup2(log.error_fd, 1)
    os.dup2(log.error_fd, 2)


def reopen_logs(opts, log):
    """SIGUSR1, as gunicorn and nginx: reopen the log files.

    Each file on its own, the error log first: a file that cannot be
    reopened (after --user the new file must be writable by that user,
    logrotate's "create MODE USER GROUP") keeps its old one until the next
    SIGUSR1, and the others are reopened all the same; the error about it
    goes to the error log's new file if that one could be reopened."""
    failed = []
    try:
        reopen_log_file(opts.error_log, log.error_fd)
        if opts.capture_output and log.error_fd not in (1, 2):
            capture_output(log)
            os.close(log.ready_fd)
            log.ready_fd = 1
    except OSError as exc:
        failed.append(exc)
    try:
        reopen_log_file(opts.access_log, log.access_fd)
    except OSError as exc:
        failed.append(exc)
    for exc in failed:
        log.error("SIGUSR1: cannot reopen log file %r: %s; still writing to the "
                  "old one" % (exc.filename, exc.strerror))
    if not failed:
        log.info("SIGUSR1: log files reopened")
