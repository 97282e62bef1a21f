"""The warm-up: the app's first request, run in the parent before the first fork.

DESIGN note: lazy imports and first-request set-up are done once and
inherited by every child, and the code the request ran is specialized
(PEP 659) before the fork instead of in every child.  It is on by default
(GET /; issue 17), so it must be safe for an app that never heard of it:
what that request leaves open in the parent (a pooled database connection,
a socket, a thread, a subprocess left running) every child would inherit
and share.  So the request runs FIRST in a throwaway child (probe), which
reports the status it got and the descriptors, threads and processes the
app opened, started and kept; the parent warms
itself only when the report is clean, and otherwise says, in one warning,
what was left open and how to fix it, and serves unwarmed.  The whole
warm-up has a time budget; a default one never stops a start, an explicit
--prewarm PATH that fails does (exit 3).  Each request's client is a
throwaway process too (WarmUpClient), reaped here like the trial child.  The request goes through the
child's own entry point, which the front door passes in (``serve``), so
this part never imports a front door.  A room of its own because it is the
one place the parent runs app code on purpose, and it says what it did.
"""

import errno
import fcntl
import marshal
import math
import os
import signal
import socket
import sys
import time

from forkparts.apps import AppLoadError, is_our_file
from forkparts.children import (describe_status, end_child, flush_stdio,
                                 parent_death_signal, read_report)
from forkparts.logs import Log

PREWARM_PASSES = 16                      # > CPython 3.11's quickening warm-up of 8 calls
DEFAULT_PATH = "/"                       # the path of the default warm-up (issue 17)
# The default warm-up's time budget: a first request that takes longer is
# doing more than set-up (a slow query, a call to another service), which is
# no request to repeat in the parent; and a server restarted by a supervisor
# must not come up late because of an optimisation nobody asked for.  The
# probe gets this long; the parent's passes stop at the same deadline (after
# their first, which repeats what the probe just timed).
WARMUP_BUDGET_SECONDS = 1.0
# An explicit --prewarm PATH: the user asked for this request, so a slow
# first request is waited for, but a start never hangs on it.
EXPLICIT_BUDGET_SECONDS = 30.0
# The probe's own deadline, past the parent's: SIGALRM ends it even if the
# parent died without killing it (and prctl's parent-death signal is not to be had).
PROBE_ALARM_SLACK_SECONDS = 1.0
# The environ key set on every warm-up request (docs/operations.md), so an
# app can tell it apart from a client's.
ENVIRON_KEY = "forkserver.warmup"
# A warm-up answered 404 ran the app's not-found path, not a view: children
# then pay for the view's first call themselves (38 faults each on the README's
# Flask example before it had a / route: docs/performance.md).
NOT_FOUND_HINT = ("; that is the app's not-found path, not a view: --prewarm PATH "
                  "(a path a client asks for) warms the view too")
# The parent's wait for the warm-up client's status line after the handler
# has closed the connection.
READER_SECONDS = 1.0
# The warm-up client's wait for each piece of the response: as long as any
# warm-up may take (a slow first request is the warm-up's point), the
# parent's deadline ends it sooner (WarmUpClient.close).
READER_PIECE_SECONDS = EXPLICIT_BUDGET_SECONDS + PROBE_ALARM_SLACK_SECONDS
DEFAULT_HOST = "localhost"               # the warm-up's Host (warmup_host)
FD_PROBE_MAX = 65536                     # descriptors looked at without /proc (probed_fds)
REPORT_LOG_MAX_CHARS = 16 * 1024         # of the app's traceback, in the probe's report


def log_reloaded(log, loader):
    """An in-place reload's one line (a parent without the warm-up: a warmed
    one executes itself afresh instead, forkparts/reexec.py).  If none of the
    app's modules was imported again (the app is installed as a library: a
    wheel in site-packages), its code is the old one: a warning."""
    spec = loader.spec
    if not loader.reimported:
        log.warning("reloaded %s, but none of the app's modules was imported again: its "
                    "code is installed as a library (site-packages), which a reload leaves "
                    "as it is; SIGUSR2 starts a new parent that imports it afresh "
                    "(docs/operations.md, Reloading)" % spec)
    else:
        log.info("reloaded %s; new connections get the new code" % spec)


def warm_up(serve, app, config, choice, log, signals=(), post_fork=None, hurry=False):
    """The warm-up of the app in the parent; True if it ran, False if it was
    off or not safe.

    ``choice`` is opts.prewarm: None (the default: GET /, within
    WARMUP_BUDGET_SECONDS, never stopping the start), False (--no-prewarm),
    or an explicit PATH (a request that fails stops the start:
    AppLoadError).  ``signals`` are the handlers a child puts back and
    ``post_fork`` the hook a child runs (a callable without arguments), both
    run in the probe as in a real child.  ``hurry``: clients wait (a HUP's
    new code), so any path's passes stop as the default's (hurried)."""
    if choice is False:
        return False
    explicit = choice is not None
    if not explicit and warmup_host() is None:
        log.warning("warm-up not run, serving unwarmed: the Django project's ALLOWED_HOSTS "
                    "lets in no host the warm-up could send (with DEBUG off an empty list "
                    "lets in none), so its request would be a DisallowedHost, logged and "
                    "mailed to the ADMINS")
        return False
    path = choice if explicit else DEFAULT_PATH
    budget = EXPLICIT_BUDGET_SECONDS if explicit else WARMUP_BUDGET_SECONDS
    deadline = time.monotonic() + budget
    report = probe(serve, app, config, path, deadline, signals, post_fork)
    failure = report.failure(budget, traceback=explicit)
    if failure and explicit:
        raise AppLoadError("--prewarm GET %s %s" % (path, failure))
    if not failure and not explicit and report.refused():
        # A refusal is no warm-up of the app's request path, and it may be
        # the app's error each time (Django's DisallowedHost: a line in its
        # log and an e-mail to its ADMINS): once in the trial child, not 16
        # times more in the parent.
        log.warning("warm-up GET %s not run in the parent, serving unwarmed: in a trial "
                    "child the app refused it (%s); choose a path it answers with "
                    "--prewarm PATH, or start with --no-prewarm" % (path, report.status))
        return False
    if failure or report.kept():
        log.warning(skipped_warning(path, failure, report, explicit))
        return False
    return prewarm(serve, app, config, path, log, passes_deadline(deadline, hurry), explicit)


def passes_deadline(deadline, hurry):
    """When the parent's passes stop; while clients wait (``hurry``) as the
    default's do: 16 passes of a 0.5 s --prewarm path held every request
    back 8 s after a HUP."""
    return min(deadline, time.monotonic() + WARMUP_BUDGET_SECONDS) if hurry else deadline


def new_code_failure(serve, app, config, choice):
    """A HUP's trial (forkparts/reexec.py): the new code's warm-up request,
    in a trial child as at a start, and why it failed; "" if it did not, or
    if the start would go on anyway (no warm-up; the default one skipped or
    out of time).  A view that does not compile, or an import that fails,
    shows only when a request runs it: Django imports its URLconf then."""
    if choice is False or (choice is None and warmup_host() is None):
        return ""
    path = choice if choice is not None else DEFAULT_PATH
    # The explicit budget for the default path too: the old code serves
    # meanwhile, and a broken view's first request (Django: the resolver, a
    # SyntaxError's traceback) can take over a second on a loaded machine.
    budget = EXPLICIT_BUDGET_SECONDS
    report = probe(serve, app, config, path, time.monotonic() + budget)
    if choice is None and (report.ended == TIMED_OUT or report.error.startswith(NOT_RUN)):
        return ""
    failure = report.failure(budget)
    return failure and "the new code's warm-up GET %s %s" % (path, failure)


def skipped_warning(path, failure, report, explicit):
    """The one line that says why the parent was not warmed, and the fixes."""
    head = "warm-up GET %s not run in the parent, serving unwarmed: " % path
    off = "" if explicit else "; or start with --no-prewarm"
    if failure.startswith(NOT_RUN):   # a limit children will meet too
        return head + "the trial child " + failure
    if failure:
        return head + "in a trial child it %s; make GET %s answer below 500 quickly, or " \
            "choose another path with --prewarm PATH%s" % (failure, path, off)
    return head + ("in a trial child the app kept open what every child would inherit "
                   "and share: %s.  Close it before the fork, at the end of the warm-up "
                   "request (environ[%r] is True: engine.dispose() for SQLAlchemy, "
                   "connection.close() or CONN_MAX_AGE = 0 for Django%s), or in a post_fork "
                   "hook%s" % (report.kept(), ENVIRON_KEY,
                               "; wait for a process it started, or start it elsewhere"
                               if report.procs else "", off))


def prewarm(serve, app, config, path, log, deadline=math.inf, explicit=True):
    """A synthetic GET through the app in the parent (``serve``, the child's
    serve_connection, handles it), so lazy imports and first-request set-up
    are done once and inherited by children.  Repeated PREWARM_PASSES times,
    or until ``deadline`` (after the first pass): Python 3.11 specializes a function's bytecode in
    place after a few calls (PEP 659), and until then every call writes to
    the code object, which costs each child a copy-on-write page."""
    quiet = Log(error_fd=log.error_fd, level="critical")
    passes, status, not_run = 0, "", None
    with output_discarded():
        try:   # the first pass does the lazy imports and set-up
            while passes < PREWARM_PASSES and (not passes or time.monotonic() < deadline):
                status = prewarm_once(serve, app, config, path, quiet)
                passes += 1
        except NotRun as exc:   # the trial's calls succeeded, a pass's did not
            not_run = "its client could not be run: %s" % exc
    if not passes:
        if explicit:
            raise AppLoadError("--prewarm GET %s in the parent: %s" % (path, not_run))
        log.warning("warm-up GET %s not run in the parent, serving unwarmed: %s"
                    % (path, not_run))
        return False
    hint = NOT_FOUND_HINT if status.split(" ", 2)[1:2] == ["404"] else ""
    stopped = "; stopped: %s" % not_run if not_run else ""
    log.info("prewarm GET %s: %s (%d pass%s)%s%s" % (path, status, passes,
                                                    "" if passes == 1 else "es", hint, stopped))
    return True


class output_discarded:
    """Descriptors 1 and 2 on /dev/null for the parent's passes: what the app
    prints or logs there (Django's "Not Found: /" for a project without a
    root view) the trial child has already shown once (probe), and would
    otherwise come again for each of the PREWARM_PASSES."""

    def __enter__(self):
        flush_stdio()
        self.saved = []
        for fd in (1, 2):
            try:   # the copy at 3 or above: never in the other one's place
                self.saved.append((fd, fcntl.fcntl(fd, fcntl.F_DUPFD_CLOEXEC, 3)))
            except OSError:
                pass   # started with it closed (or no descriptor to spare)
        try:
            null = os.open(os.devnull, os.O_WRONLY)
        except OSError:   # no descriptor to spare: the passes' output is shown
            for _, saved in self.saved:
                os.close(saved)
            self.saved = []
            return self
        for fd, _ in self.saved:
            os.dup2(null, fd)
        os.close(null)

    def __exit__(self, *exc):
        flush_stdio()   # what the passes left buffered goes to /dev/null too
        for fd, saved in self.saved:
            os.dup2(saved, fd)
            os.close(saved)


class CapturedLog(Log):
    """A Log that keeps its lines instead of writing them."""

    def __init__(self):
        super().__init__(error_fd=-1, level="warning")
        self.lines = []

    def write_line(self, fd, line):
        self.lines.append(line)


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


def warm_up_config(config, log):
    """The server's handler config for a warm-up request: its limits, the
    names and proxy trust that shape the environ, and the child's title with
    a stand-in that sets nothing (the parent keeps its own title), so the
    request runs the code a child runs and CPython specializes that code and
    caches its attribute lookups before the first fork; unspecialized in a
    child, each attribute read there writes pages that child copies.  Its
    own log and a short send timeout; no keep-alive, hooks or trace."""
    return type(config)(
        limits=config.limits, log=log, send_timeout=1.0,
        server_name=config.server_name, server_port=config.server_port,
        url_scheme=config.url_scheme, forwarded=config.forwarded,
        set_title=None if config.set_title is None else no_title,
        title_query=config.title_query, proc_name=config.proc_name)


def no_title(title):
    """The warm-up's stand-in for the child's setproctitle."""


def prewarm_once(serve, app, config, path, log):
    """GET path through the app, the handler logging to log; the status line."""
    try:
        client = WarmUpClient(path)
        try:
            run_request(serve, app, config, client.conn, log)
            return client.status(time.monotonic() + READER_SECONDS)
        finally:
            client.close()
    except OSError as exc:
        return "no response (%s)" % exc


def run_request(serve, app, config, conn, log):
    """The warm-up request on ``conn``, its handler logging to ``log``."""
    cfg = warm_up_config(config, log)
    cfg.environ_base[ENVIRON_KEY] = True   # copied into the request's environ
    serve(conn, ("127.0.0.1", 0), app, cfg)


def warmup_host():
    """The warm-up request's Host: "localhost", or for a Django project the
    first of "localhost" and its ALLOWED_HOSTS that Django's own
    validate_host lets in (read, never changed).  Django answers any other
    with DisallowedHost, logged and mailed to its ADMINS, at every start and
    USR2, and the project was never warmed.  Other apps get "localhost".
    None if it lets in none of them (DEBUG off and ALLOWED_HOSTS empty, or
    only unusable entries): then any request is refused, and mailed about."""
    settings = getattr(sys.modules.get("django.conf"), "settings", None)
    try:
        if settings is None or not settings.configured:
            return DEFAULT_HOST
        from django.http.request import split_domain_port, validate_host
        allowed = [h for h in settings.ALLOWED_HOSTS if isinstance(h, str)]
        if settings.DEBUG and not allowed:   # what Django's get_host lets in then
            allowed = [".localhost", "127.0.0.1", "[::1]"]
        names = [DEFAULT_HOST] + [h.lstrip(".") for h in allowed]
        for host in names:
            domain = split_domain_port(host)[0] if host.isascii() else ""
            if domain and validate_host(domain, allowed):
                return host
        return None
    except Exception:   # noqa: BLE001 - the project's settings are not ours to fail on
        return DEFAULT_HOST


class WarmUpClient:
    """The client of a warm-up request: a connection (``conn``, the server's
    end of a socketpair) whose request is sent, and a throwaway process,
    a child of the one that made it, that reads the response as it is sent
    (read_response): a socketpair holds only some 60 KB unread, so a larger
    page stalled the handler's send until its timeout.  ``status`` is the
    status line it got; ``close`` kills and reaps the reader."""

    def __init__(self, path):
        self.conn, theirs = attempt("socketpair", socket.socketpair)
        self.status_fd = self.pid = None
        try:
            theirs.sendall(b"GET %s HTTP/1.1\r\nHost: %s\r\nConnection: close\r\n\r\n"
                           % (path.encode("latin-1"), (warmup_host() or DEFAULT_HOST).encode()))
            theirs.shutdown(socket.SHUT_WR)   # all sent: a closing handler need not wait
            self.status_fd, self.pid = start_reader(self.conn, theirs)
        except (OSError, NotRun):
            self.close()
            raise
        finally:
            theirs.close()

    def status(self, deadline):
        """The response's status line, once the handler is done with ``conn``
        (here or in another process): "no response" if none came by ``deadline``."""
        self.conn.close()   # the reader's EOF, if the handler left it open
        line = read_report(self.status_fd, deadline)
        return (line or b"").rstrip(b"\r\n").decode("latin-1", "replace") or "no response"

    def close(self):
        self.conn.close()
        if self.status_fd is not None:
            os.close(self.status_fd)
            self.status_fd = None
        if self.pid:
            end_child(self.pid)
            self.pid = None


def start_reader(conn, theirs):
    """Fork the warm-up's client, which reads ``theirs`` (read_response).
    The read end of its status pipe, and its pid."""
    status_read, status_write = attempt("pipe", os.pipe)
    try:
        pid = attempt("fork", os.fork)
    except NotRun:
        os.close(status_read)
        os.close(status_write)
        raise
    if pid == 0:
        os.close(status_read)
        read_response(conn, theirs, status_write)   # never returns
    os.close(status_write)
    return status_read, pid


def read_response(conn, theirs, fd):
    """In the reader process: the warm-up's client.  Read the response to its
    end (EOF when the handler closes the connection), write its status line
    and a newline to ``fd``, and _exit."""
    head = b""
    try:
        signal.set_wakeup_fd(-1)   # never write into the parent's pipe
        conn.close()               # else the connection's EOF never comes
        theirs.settimeout(READER_PIECE_SECONDS)
        while True:
            chunk = theirs.recv(65536)
            if not chunk:
                break
            head = head if len(head) >= 64 else head + chunk[:64]
    except BaseException:
        pass   # what came is what the parent gets
    try:
        write_all(fd, head.split(b"\r\n", 1)[0] + b"\n")
    finally:
        os._exit(0)


# ------------------------------------------------------------ the probe
TIMED_OUT = "timed out"
NOT_RUN = "could not be run: "   # a Report's error when a call the warm-up needs failed


class NotRun(Exception):
    """A call the warm-up needs failed: its name, the error, and the limit
    that error points to (fork's EAGAIN under RLIMIT_NPROC is lab 13's)."""

    def __init__(self, call, exc):
        limit = ""
        if exc.errno in (errno.EMFILE, errno.ENFILE):
            limit = " (a limit on open files, RLIMIT_NOFILE?)"
        elif call == "fork" and exc.errno == errno.EAGAIN:
            limit = " (a limit on processes, RLIMIT_NPROC?)"
        super().__init__("%s() failed: %s%s" % (call, exc.strerror or exc, limit))


def attempt(call, function):
    """function(), its OSError raised as NotRun(call, ...)."""
    try:
        return function()
    except OSError as exc:
        raise NotRun(call, exc) from None


class Report:
    """What the probe child saw: the status line, the descriptors and threads
    the app opened during the request and kept, the app's logged lines; or,
    from the parent's side, that none came (``ended``: TIMED_OUT, or how the
    child ended)."""

    def __init__(self, fields, ended=None):
        self.status = fields.get("status", "")
        self.fds = fields.get("fds", [])             # [fd, readlink name]
        self.threads = fields.get("threads", [])     # names of new Python threads
        self.tasks = fields.get("tasks", 0)          # new kernel threads, C ones too
        self.procs = fields.get("procs", [])         # [pid, comm]: still running
        self.log = fields.get("log", "")
        self.error = fields.get("error", "")         # the probe itself failed
        self.ended = ended

    def failure(self, budget, traceback=True):
        """Why the warm-up request failed, in words, or "" if it did not; with
        the app's traceback, or only its last line."""
        if self.ended == TIMED_OUT:
            return "did not answer within %g s (the trial child was killed)" % budget
        if self.ended:
            return "ended before it answered (%s)" % self.ended
        if self.error.startswith(NOT_RUN):
            return self.error
        if self.error:
            return "failed: %s" % self.error
        code = self.status.split(" ", 2)[1:2]
        if code and code[0].isdigit() and int(code[0]) < 500:
            return ""
        detail = without_our_frames(self.log)
        if detail and not traceback:
            return "answered %s (%s)" % (self.status, detail.splitlines()[-1])
        return "answered %s%s" % (self.status, (":\n" + detail) if detail else "")

    def refused(self):
        """True if the app answered with a client error other than 404 (400,
        401, 403, 405, ...): the default warm-up then warms nothing of use."""
        code = self.status.split(" ", 2)[1:2]
        return bool(code) and code[0].isdigit() and 400 <= int(code[0]) < 500 \
            and code[0] != "404"

    def kept(self):
        """What the app left open, in words ("" if nothing)."""
        kept = ["fd %d -> %s" % (fd, name) for fd, name in self.fds]
        if self.threads or self.tasks:
            kept.append("%d thread(s): %s" % (max(len(self.threads), self.tasks),
                                              ", ".join(self.threads) or "started from C"))
        if self.procs:   # the parent's passes would start one each, its own children
            kept.append("%d process(es) it started, still running: %s" % (
                len(self.procs), ", ".join("%d (%s)" % (pid, comm) for pid, comm in self.procs)))
        return ", ".join(kept)


def probe(serve, app, config, path, deadline, signals=(), post_fork=None):
    """The warm-up request in a throwaway child, which reports and _exits;
    the child is killed at ``deadline`` at the latest, and always reaped
    here (no zombie, no orphan), as is the request's client (WarmUpClient),
    a child of this process too.  A Report."""
    flush_stdio()   # what the app printed is not written twice
    try:
        client = WarmUpClient(path)
    except NotRun as exc:   # as in trial_child
        return Report({"error": NOT_RUN + str(exc)})
    except OSError as exc:   # sending the request
        return Report({"error": "%s%s" % (NOT_RUN, exc.strerror or exc)})
    try:
        report = trial_child(serve, app, config, client, deadline, signals, post_fork)
        if not report.ended:
            report.status = client.status(deadline)
        return report
    finally:
        client.close()


def trial_child(serve, app, config, client, deadline, signals, post_fork):
    """Fork the child that runs the request on client.conn (run_probe); its
    Report, the status line not in it (the client has that)."""
    die_with_parent = parent_death_signal(os.getpid())
    try:
        read_end, write_end = attempt("pipe", os.pipe)
    except NotRun as exc:
        return Report({"error": NOT_RUN + str(exc)})
    try:
        pid = attempt("fork", os.fork)
    except NotRun as exc:   # EAGAIN under RLIMIT_NPROC (lab 13): no warm-up
        os.close(read_end)
        os.close(write_end)
        return Report({"error": NOT_RUN + str(exc)})
    if pid == 0:
        os.close(read_end)
        os.close(client.status_fd)
        if die_with_parent:
            die_with_parent()
        run_probe(write_end, serve, app, config, client.conn,
                  deadline - time.monotonic(), signals, post_fork)   # never returns
    os.close(write_end)
    client.conn.close()   # the child's now
    try:
        line = read_report(read_end, deadline)
    finally:
        os.close(read_end)
        status = end_child(pid)
    if line is None:
        return Report({}, TIMED_OUT)
    return Report(marshal.loads(bytes.fromhex(line.decode()))) if line else Report(
        {}, how_it_ended(status))


def how_it_ended(status):
    """A wait status in words; an exit status is the app's (os._exit), not
    one of ours, so describe_status's names for ours do not apply."""
    if status is None:
        return "ended (reaped by a lab's SIGCHLD handler)"
    if os.WIFEXITED(status):
        return "exited with status %d" % os.WEXITSTATUS(status)
    return describe_status(status)


def run_probe(fd, serve, app, config, conn, seconds, signals, post_fork):
    """In the throwaway child: be a child (the parent's signal handlers put
    back, its own deadline), run the request, report, _exit.  Never returns."""
    try:
        signal.set_wakeup_fd(-1)   # never write into the parent's pipe
        for sig, handler in signals:
            signal.signal(sig, handler)
        signal.setitimer(signal.ITIMER_REAL, max(seconds, 0) + PROBE_ALARM_SLACK_SECONDS)
        fields = trial(serve, app, config, conn, post_fork)
    except BaseException as exc:   # the report says it; the parent decides
        fields = {"error": "%s: %s" % (type(exc).__name__, exc)}
    try:
        # marshal, not json: the parent then imports nothing for the report
        # (json is 0.1 MB of its memory, paid by every fork); hex, so the one
        # newline ends the line.
        write_all(fd, marshal.dumps(fields).hex().encode() + b"\n")
    finally:
        os._exit(0)


def trial(serve, app, config, conn, post_fork):
    """The request; what it left open that was not open before.  If it left
    something and there is a post_fork hook, the hook runs (where a child of
    the warmed parent would run it) and what it closed is not counted; an
    app that leaves nothing never sees the extra call."""
    before = open_fds(), thread_names(), task_count(), running_children()
    captured = CapturedLog()
    run_request(serve, app, config, conn, captured)
    left = left_open(*before)
    if post_fork is not None and any(left.values()):
        post_fork()
        left = left_open(*before)
    return dict(left, log=last_chars("\n".join(captured.lines)))


def last_chars(text, limit=REPORT_LOG_MAX_CHARS):
    """The end of ``text`` (the traceback's last frames and its error are
    what tell), within ``limit`` characters, from the start of a line, and
    a first line that says what was cut (a deep recursion's began "^^^^")."""
    if len(text) <= limit:
        return text
    tail = text[-limit:]
    tail = tail[tail.find("\n") + 1:] or tail
    return "[... the first %d characters cut]\n%s" % (len(text) - len(tail), tail)


def left_open(fds, threads, tasks, procs):
    """The descriptors, threads and processes started since ``fds``,
    ``threads``, ``tasks`` and ``procs``."""
    return {"fds": [[fd, name] for fd, name in sorted(open_fds().items()) if fds.get(fd) != name],
            "threads": [name for name in thread_names() if name not in threads],
            "tasks": max(task_count() - tasks, 0),
            "procs": [[pid, comm] for pid, comm in sorted(running_children().items())
                      if pid not in procs]}


def open_fds():
    """{fd: what it is (readlink of /proc/self/fd/N)}; the listing's own
    descriptor, closed by the time it is read, is left out.  Without /proc
    (macOS, the BSDs) every number is looked at instead (probed_fds): it
    saw nothing there, and an app's pooled connection was warmed into the
    parent unseen."""
    found = {}
    try:
        entries = os.listdir("/proc/self/fd")
    except OSError:
        return probed_fds()
    for entry in entries:
        try:
            found[int(entry)] = os.readlink("/proc/self/fd/" + entry)
        except OSError:
            pass
    return found


def probed_fds():
    """{fd: its kind and inode, "socket:[123]"} for every descriptor below
    the descriptor limit (at most FD_PROBE_MAX), by fstat: what open_fds
    sees where there is no /proc to list."""
    import resource
    import stat
    soft = resource.getrlimit(resource.RLIMIT_NOFILE)[0]
    top = FD_PROBE_MAX if soft == resource.RLIM_INFINITY else min(soft, FD_PROBE_MAX)
    found = {}
    for fd in range(top):
        try:
            info = os.fstat(fd)
        except OSError:
            continue
        kind = ("socket" if stat.S_ISSOCK(info.st_mode) else
                "pipe" if stat.S_ISFIFO(info.st_mode) else "file")
        found[fd] = "%s:[%d]" % (kind, info.st_ino)
    return found


def thread_names():
    """The Python threads alive; an app that never imported threading has none."""
    threading = sys.modules.get("threading")
    if threading is None:
        return []
    return [t.name for t in threading.enumerate() if t is not threading.main_thread()]


def task_count():
    """Kernel threads of this process (a C library's too); 0 without /proc."""
    try:
        return len(os.listdir("/proc/self/task"))
    except OSError:
        return 0


def running_children():
    """{pid: comm} of this process's children that still run (a subprocess
    the app started and left: in the warmed parent, 16 passes would leave 16,
    and every child would inherit their Popen objects).  One that has
    exited is no hazard: the server's reaper takes it.  Linux's list of a
    thread's children (the main thread's: the request ran there); empty
    without it."""
    found = {}
    try:
        with open("/proc/self/task/%d/children" % os.getpid()) as f:
            pids = f.read().split()
    except OSError:
        return found
    for pid in pids:
        try:
            with open("/proc/%s/stat" % pid) as f:
                stat = f.read()
        except OSError:   # gone already
            continue
        name_end = stat.rindex(")")
        if stat[name_end + 2:name_end + 3] not in ("Z", "X"):
            found[int(pid)] = stat[stat.index("(") + 1:name_end]
    return found


def write_all(fd, data):
    while data:
        data = data[os.write(fd, data):]
