"""forkserver: a WSGI server that forks one child per connection.

The classic design of "Let's Build A Web Server" part 3, made safe:

    parent:  listen -> loop { poll(listeners, wake-up pipe) -> accept -> fork
                              -> close its copy of the client socket
                              -> reap children: waitpid(-1, WNOHANG) until 0 }
    child:   close the listener -> reset signals -> wsgi_handler.serve_connection()
             -> os._exit(status)

The parent is single-threaded.  Signal handlers only note the signal; Python
writes the signal number to a wake-up pipe (``signal.set_wakeup_fd``) that the
main loop polls beside the listeners, so no signal is ever lost and no work is
done in a handler.  The main loop reaps, logs, enforces deadlines and the
child cap, reloads and stops.

The app is imported once in the parent before the first fork, so every child
shares it copy-on-write.  The parent imports only what it needs to accept and
fork: every megabyte of parent memory costs about 29 microseconds per
connection in page-table copies (docs/performance.md).

Exit statuses: see EXIT_* below and docs/operations.md.
"""

import errno
import gc
import mmap
import os
import resource
import select
import signal
import socket
import sys
import time
# signal.py wraps these C functions to turn results into enums: for an old
# handler that is our bound method, Handlers(value) raises and formats a
# ValueError.  The child and the fork path call the C functions directly:
# that Python work dirtied ~45 copy-on-write pages per child.
from _signal import pthread_sigmask as raw_sigmask, signal as raw_signal
# What a child calls, bound here: see Server.run_child.
from _signal import ITIMER_REAL, set_wakeup_fd, setitimer
from gc import disable as gc_disable
from os import _exit, close as close_fd, getpid
# What the parent calls per connection, bound here (Server.accept_from).
from socket import socket as PySocket
from _socket import socket as _c_socket
new_socket, init_socket = PySocket.__new__, _c_socket.__init__

import wsgi_handler
from wsgi_handler import (EXIT_ERROR, EXIT_HOOK_FAILED, EXIT_MEMORY_LIMIT, Drain, Log,
                          close_socket, format_addr, serve_connection)

import forkparts.prewarm
from forkparts.accel import (collapse_heap, configure as configure_accel, fill_allocator_holes,
                             relocate)
from forkparts.apps import AppLoadError, AppLoader, setup_paths
from forkparts.cli import DEFAULT_MAX_PENDING, UsageError
from forkparts.configfile import parse_options
from forkparts.listeners import ASCII_DIGITS_RE, ListenError, sd_notify
from forkparts.privileges import open_listeners, remove_pidfile, writable_by, write_atomically

__version__ = wsgi_handler.__version__

# ---------------------------------------------------------------- exit codes
EXIT_OK = 0
EXIT_FAILURE = 1       # an unexpected error in the server itself
EXIT_USAGE = 2         # bad command line or configuration (argparse's status)
EXIT_APP_LOAD = 3      # the app spec could not be resolved or the app failed to import
EXIT_LISTEN = 4        # could not bind, listen or drop privileges

# ------------------------------------------------------------------ defaults
FAST_STOP_SECONDS = 1.0                  # SIGINT/SIGQUIT: SIGTERM, then SIGKILL after this
STOP_HEAD_GRACE_SECONDS = 1.0            # SIGTERM: what an incomplete parked head has left
KILL_GRACE_SECONDS = 2.0                 # after a timeout's SIGTERM, SIGKILL
FORK_BACKOFF_SECONDS = 0.1               # after fork() fails with EAGAIN/ENOMEM
ACCEPT_BACKOFF_SECONDS = 0.1             # after accept() fails with EMFILE/ENFILE
RELOAD_POLL_SECONDS = 1.0                # --reload: how often source mtimes are checked
STATUS_INTERVAL_SECONDS = 1.0            # --status-file: written at most this often
PR_SET_CHILD_SUBREAPER = 36              # prctl(2) option, <linux/prctl.h>
PR_SET_PDEATHSIG = 1                     # prctl(2) option, <linux/prctl.h>
PID_MAX_FILE = "/proc/sys/kernel/pid_max"   # pids are below it (proc(5))
PID_MAX_LIMIT = 4 * 1024 * 1024          # Linux's ceiling on 64-bit (<linux/threads.h>)
RESERVED_FDS = 64                        # descriptors --max-pending leaves for the rest
# A request body of at most this (by Content-Length) is read by the accept
# filter before the fork, so a client that trickles a small body holds no
# child; larger bodies are the child's, under --read-timeout and --timeout.
PARENT_BODY_BYTES = 64 * 1024
# Requests that (nearly always) have no body: the filter's fast path forks
# them as soon as the head is in.
NO_BODY_PREFIXES = (b"GET ", b"HEAD ")
# Server methods run for every connection (the loop's, then the child's
# first): relocate_code copies their code side by side.
HOT_METHODS = ("serve_forever", "wait", "next_timeout", "accept_from", "filter_head",
               "fork_child", "reap_children", "update_title", "note_sigchld", "note_signal",
               "run_child")
READY_LINE = "forkserver ready: pid {pid} listening on {addresses}"

# Signals the parent handles; children put them back as they found them.
HANDLED_SIGNALS = (signal.SIGCHLD, signal.SIGTERM, signal.SIGINT, signal.SIGQUIT,
                   signal.SIGHUP, signal.SIGUSR1)
# The same as plain ints, for the calls made at every fork: the signal and
# socket constants are enum members, each on a page of its own that every
# use writes (a reference count) and every fork makes copy-on-write.
HANDLED_SIGNAL_NUMBERS = tuple(int(sig) for sig in HANDLED_SIGNALS)
SIG_BLOCK = int(signal.SIG_BLOCK)
SIG_UNBLOCK = int(signal.SIG_UNBLOCK)
MSG_DONTWAIT = int(socket.MSG_DONTWAIT)
INFINITY = float("inf")
REFUSE_DRAIN_BYTES = 1 << 20             # the most refuse() reads before it closes
MAX_POLL_SECONDS = 1.0                   # the longest the parent sleeps in poll()
# One loop turn accepts for at most this long, then goes round the loop (signals,
# reaping, deadlines, parked heads) even if the backlog is not empty: under
# steady load it never is.  A fork costs ~1-3 ms here, so a turn forks a few
# dozen children at most; docs/operations.md has the measured latencies.
ACCEPT_BUDGET_SECONDS = 0.02
STOP_SIGNALS = {signal.SIGTERM: "graceful", signal.SIGINT: "fast", signal.SIGQUIT: "fast"}


class Child:
    """What the parent knows of one live child."""
    __slots__ = ("pid", "addr", "started", "deadline", "term_at")

    def __init__(self, pid, addr, started, deadline):
        self.pid = pid
        self.addr = addr
        self.started = started
        self.deadline = deadline
        self.term_at = None


class Parked:
    """A connection held by the accept filter until its request is ready
    (request_state): the head, and a small body with it."""
    __slots__ = ("sock", "addr", "data", "accepted_at", "deadline", "head_end", "head_at",
                 "idle", "state")

    def __init__(self, sock, addr, data, accepted_at, deadline):
        self.sock = sock
        self.addr = addr
        self.data = data
        self.accepted_at = accepted_at
        self.deadline = deadline
        self.head_end = 0      # where the body starts, once the head is in
        self.head_at = 0.0     # when the head was complete
        self.idle = False      # a kept-alive connection handed back, no byte since
        self.state = HEAD_INCOMPLETE   # request_state(data), kept as data comes in

    def body_progress(self, now, grace, rate):
        """The head is in and the filter waits for a small body: mod_reqtimeout's
        MinRate.  The body gets a grace of `grace` seconds from the head, and
        a second more for each `rate` bytes received (--min-body-rate), so a body
        trickled at 1 byte every 5 s is cut while a slow, honest link goes on."""
        if not self.head_end:
            self.head_end, self.head_at = wsgi_handler.find_head_end(self.data), now
        received = len(self.data) - self.head_end
        self.deadline = self.head_at + grace + received / rate


def describe_status(status):
    """Decode a waitpid status: ("exited", code) / ("killed", signal name)."""
    if os.WIFSIGNALED(status):
        sig = os.WTERMSIG(status)
        try:
            name = signal.Signals(sig).name
        except ValueError:
            name = "signal %d" % sig
        core = " (core dumped)" if os.WCOREDUMP(status) else ""
        return "killed by %s%s" % (name, core)
    code = os.WEXITSTATUS(status)
    reason = wsgi_handler.EXIT_NAMES.get(code)
    return "exited with status %d%s" % (code, " (%s)" % reason if reason else "")


def exit_child(marks, status):
    """The child's only way out: mark the exit as ours (exit_marks), then _exit."""
    try:
        marks[getpid()] = 1
    except IndexError:
        pass   # pid_max raised after the start: no mark, no report
    finally:
        _exit(status)


def log_child_failure(log, addr):
    try:
        log.exception("child failed serving %s" % format_addr(addr))
    except BaseException:
        pass   # the child exits anyway; nothing must escape into the parent's loop


def exit_marks():
    """One shared byte per pid: a child sets its own in run_child's finally,
    just before forkserver's _exit.  A child that ends without it (the app
    called os._exit, which runs no finally) is told apart at reaping even
    when its status is 0.  Anonymous and MAP_SHARED, so the children's writes
    reach the parent; only the pages touched are ever allocated."""
    try:
        with open(PID_MAX_FILE) as f:
            size = int(f.read())
    except (OSError, ValueError):
        size = PID_MAX_LIMIT
    return mmap.mmap(-1, size)


def is_normal_exit(status):
    return os.WIFEXITED(status) and os.WEXITSTATUS(status) == 0


# ================================================================ the parent

class Server:
    """The parent: accepts, forks, reaps, supervises.  One instance per process."""

    def __init__(self, opts, loader, app, listeners, log, hooks):
        self.opts = opts
        self.loader = loader
        self.app = app
        self.listeners = {l.fd: l for l in listeners}
        self.log = log
        self.hooks = hooks
        self.children = {}        # pid -> Child, in fork order (= deadline order)
        self.terminating = {}     # pid -> Child sent SIGTERM, awaiting SIGKILL
        self.parked = {}          # fd -> Parked
        self.kept_clients = []    # lab: the parent "forgets" to close these
        self.per_ip = {}
        self.pending_signals = []
        self.reaped = []          # (pid, status) noted by a reaping signal handler
        self.handler_errors = []  # lab 11: print() failures inside the handler
        self.sigchld_seen = False
        self.high_water = 0
        self.served = 0
        self.stop_mode = self.stop_deadline = None
        self.paused_until = 0.0
        self.fork_tokens, self.fork_tokens_at = max(opts.max_fork_rate, 1.0), time.monotonic()
        self.mtimes = loader.source_mtimes() if opts.reload else {}
        self.next_mtime_check = time.monotonic() + RELOAD_POLL_SECONDS
        self.handler_config = None
        self.poller = select.poll()
        self.accepting = False
        self.set_title = load_setproctitle()
        self.wake_r, self.wake_w = os.pipe()
        self.saved_handlers = {}
        self.title_dirty = False   # counts changed: retitle once, at the loop turn's end
        self.title_prefix = "forkserver: parent " + " ".join(
            l.description for l in self.listeners.values())
        self.status_dirty = bool(opts.status_file)   # --status-file needs rewriting
        self.status_due = 0.0                         # not before this (monotonic)
        self.deadline_check_at = INFINITY   # no child can time out before this
        # Made by prepare(): install_signals, plan_children, fill_allocator_holes,
        # and with --keep-alive the socket children hand idle connections back on.
        self.child_signals = self.child_plan = self.filter_view = self.heap_filler = None
        self.handback = self.exit_marks = None
        self.note_fast_paths()

    def note_fast_paths(self):
        """What the common case of the loop can skip (see serve_forever)."""
        opts, hooks = self.opts, self.hooks
        self.flush_before_fork = bool(hooks) or opts.lab_print_in_handler
        self.plain_exits = not (opts.max_children_per_ip or opts.trace or hooks.get("child_exit"))
        self.reap_inline = opts.reaper == "loop" and not opts.lab_print_in_handler
        self.child_cap = opts.max_children or INFINITY
        self.filter_bodies = opts.min_body_rate > 0   # request_state

    # ------------------------------------------------------------ setup
    def install_signals(self):
        for fd in (self.wake_r, self.wake_w):
            os.set_blocking(fd, False)
        signal.set_wakeup_fd(self.wake_w, warn_on_full_buffer=False)
        note = self.note_signal   # one bound method, not one per signal: fewer
        for sig in HANDLED_SIGNALS:   # objects for each child to touch when it resets them
            self.saved_handlers[sig] = signal.getsignal(sig)
            signal.signal(sig, note)
        signal.signal(signal.SIGCHLD, self.sigchld_handler())
        self.poller.register(self.wake_r, select.POLLIN)
        # What each child restores, as the C function takes it: SIG_DFL and
        # SIG_IGN as plain ints (getsignal gives them as enum members).
        self.child_signals = tuple(
            (int(sig), int(handler) if isinstance(handler, int) else handler)
            for sig, handler in self.saved_handlers.items())

    def sigchld_handler(self):
        if self.opts.reaper == "none":
            return signal.SIG_DFL        # lab: nobody reaps, zombies pile up
        if self.opts.lab_print_in_handler or self.opts.reaper == "once":
            return self.reap_in_handler  # lab: the tutorial's reaper
        return self.note_sigchld

    def note_signal(self, signum, frame):
        self.pending_signals.append(signum)

    def note_sigchld(self, signum, frame):
        self.sigchld_seen = True

    def reap_in_handler(self, signum, frame):
        """The tutorial's handler: waitpid in the handler, print from it.
        Reentrant print on buffered stdout is exactly what lab 11 shows."""
        self.sigchld_seen = True
        for pid, status in exited_children():
            self.reaped.append((pid, status))
            if self.opts.lab_print_in_handler:
                self.print_in_handler(pid, status)
            if self.opts.reaper == "once":
                return

    def print_in_handler(self, pid, status):
        """Lab 11: print() from the handler.  If the handler interrupted the main
        loop inside a write to the same buffered stdout, the buffer's lock is
        held and print() raises RuntimeError("reentrant call inside ...").  The
        tutorial's server dies of it wherever the main loop happened to be; here
        it is noted and the main loop logs it (the reap itself is kept)."""
        try:
            print("Child %d terminated with status %d" % (pid, status))
        except RuntimeError as exc:
            self.handler_errors.append("%s (while reaping child %d)" % (exc, pid))

    def log_handler_errors(self):
        while self.handler_errors:
            self.log.error(
                "--lab-print-in-handler: print() in the SIGCHLD handler failed: %s. "
                "The handler interrupted the main loop's own print() on the same "
                "buffered stdout; unguarded, this exception would have killed the "
                "server. A correct handler only records (docs/labs.md, lab 11)."
                % self.handler_errors.pop(0))

    def prepare(self):
        """Everything between loading the app and the first accept."""
        handback = None
        if self.opts.keep_alive:   # idle connections handed back by children (Drain)
            self.handback, handback = socket.socketpair(socket.AF_UNIX, socket.SOCK_DGRAM)
            self.handback.setblocking(False)
            self.poller.register(self.handback.fileno(), select.POLLIN)
        self.handler_config = build_handler_config(self.opts, self.log, self.set_title,
                                                   self.listeners, handback)
        self.install_signals()
        self.warn_about_threads()
        # Our own per-connection code, side by side (relocate_code): the
        # parent's loop, then a child's first function.
        ours = [getattr(Server, name).__code__ for name in HOT_METHODS]
        if self.opts.prewarm:
            prewarm(self.app, self.handler_config, self.opts.prewarm, self.log, ours)
        else:
            relocate(ours)
        if self.opts.limit_memory or self.opts.limit_cpu:
            resource.setrlimit(resource.RLIMIT_CORE, (0, resource.getrlimit(resource.RLIMIT_CORE)[1]))
        else:
            soft, hard = resource.getrlimit(resource.RLIMIT_CORE)
            resource.setrlimit(resource.RLIMIT_CORE, (0, hard))  # no core dumps from children
        if self.opts.accept_filter:
            self.filter_view = memoryview(bytearray(self.handler_config.limits.head + 1))
        self.bound_max_pending()   # parked connections also come from stops and hand-backs
        self.exit_marks = exit_marks()
        self.plan_children()
        self.freeze_heap()
        if self.opts.huge_pages:   # at start only: see collapse_heap
            self.log.info("huge pages: %d MiB of the parent's heap"
                          % (collapse_heap() // (1 << 20)))
        self.update_title()
        flush_stdio()   # what the app printed: once here, not at every fork

    def bound_max_pending(self):
        """Each parked connection is a descriptor of the parent's: --max-pending
        must leave RESERVED_FDS for listeners, logs, the app's own files and the
        socket of the connection being forked."""
        soft, _ = resource.getrlimit(resource.RLIMIT_NOFILE)
        room = INFINITY if soft == resource.RLIM_INFINITY else max(soft - RESERVED_FDS, 1)
        if self.opts.max_pending is None:   # the default: as many as fit, silently
            self.opts.max_pending = min(DEFAULT_MAX_PENDING, room)
        if self.opts.max_pending <= room:
            return
        self.log.warning("--max-pending %d is more than RLIMIT_NOFILE (%d) leaves room for; "
                         "holding at most %d (raise it with ulimit -n or LimitNOFILE=)"
                         % (self.opts.max_pending, soft, room))
        self.opts.max_pending = room

    def freeze_heap(self):
        # Move everything alive now into the permanent generation: a collection
        # in a child then never writes to these objects' headers, so their pages
        # stay shared (gc.freeze docs; 10 MB private per collection at Flask size).
        # Unfreeze first: after a reload the old modules sit in the permanent
        # generation, and their reference cycles (functions <-> module globals)
        # would never be collected: every SIGHUP would leak a copy of the app.
        self.heap_filler = None
        gc.unfreeze()
        gc.collect()
        self.heap_filler = fill_allocator_holes()
        if not self.opts.no_gc_freeze:
            gc.freeze()

    def warn_about_threads(self):
        threading = sys.modules.get("threading")
        if threading is None or threading.active_count() <= 1:
            return
        names = ", ".join(t.name for t in threading.enumerate()
                          if t is not threading.main_thread())
        self.log.warning("importing the app started threads (%s): fork() copies "
                         "only the main thread, so a lock they hold can deadlock a child" % names)

    # ------------------------------------------------------------ main loop
    def serve_forever(self):
        """The main loop: wait, then do what is due.

        Every turn's work is behind a cheap test, so the common turns (a
        connection forked, children reaped) call few Python functions.  Each
        function run writes the reference counts of its code and function
        objects; after a fork those pages are shared with the child, and each
        page written costs a copy-on-write fault (docs/performance.md)."""
        self.set_accepting(True)
        opts = self.opts
        while True:
            self.wait()
            if self.pending_signals:
                self.handle_signals()
            if self.sigchld_seen or self.reaped:
                self.reap_children()
            if self.terminating or time.monotonic() >= self.deadline_check_at:
                self.check_deadlines()
            if self.parked:
                self.check_parked()
            if self.stop_mode and self.stopped():
                return
            if opts.reload:
                self.check_reload()
            if (not self.accepting or self.stop_mode or self.paused_until
                    or opts.max_fork_rate or len(self.children) >= self.child_cap):
                self.set_accepting(self.may_accept())
            if self.title_dirty:
                self.update_title()
            if self.status_dirty:
                self.write_status()

    def wait(self):
        timeout = self.next_timeout()
        try:
            events = self.poller.poll(max(timeout * 1000.0, 0.0))
        except InterruptedError:
            return
        for fd, _ in events:
            if fd == self.wake_r:
                try:   # one read: if more is left, poll says so at once
                    os.read(fd, 4096)
                except BlockingIOError:
                    pass
            elif fd in self.listeners:
                self.accept_from(self.listeners[fd])
            elif fd in self.parked:
                self.on_parked_readable(fd)
            elif self.handback is not None and fd == self.handback.fileno():
                self.take_back()

    def next_timeout(self):
        """Seconds until the next thing the loop must do by itself (at most MAX_POLL_SECONDS)."""
        times = [self.deadline_check_at]   # INFINITY when no child has a deadline
        if self.terminating:   # (a generator expression is a function made at every call)
            times.extend(c.term_at + KILL_GRACE_SECONDS for c in self.terminating.values())
        if self.parked:
            times.append(min(p.deadline for p in self.parked.values()))
        if self.stop_deadline:
            times.append(self.stop_deadline)
        if self.paused_until:
            times.append(self.paused_until)
        if self.opts.reload:
            times.append(self.next_mtime_check)
        if self.status_dirty:
            times.append(self.status_due)
        if self.opts.reaper != "loop" and self.stop_mode:
            times.append(time.monotonic() + 0.05)   # nobody reaps for us: poll
        # Never more than MAX_POLL_SECONDS: a wake-up lost anywhere (one was
        # seen here: poll() asleep with a connection in the listener's queue)
        # then delays the loop by at most that, instead of until the next event.
        # (A SIGKILLed child's term_at is infinite.)
        return min(min(times) - time.monotonic(), MAX_POLL_SECONDS)

    def may_accept(self):
        return not self.stop_mode and self.may_fork()

    def may_fork(self):
        """Is a child slot free (--max-children, --max-fork-rate, a back-off)?"""
        now = time.monotonic()
        if self.paused_until:
            if now < self.paused_until:
                return False
            self.paused_until = 0.0
        cap = self.opts.max_children
        if cap and len(self.children) >= cap:
            return False
        if self.opts.max_fork_rate:
            self.refill_fork_tokens(now)
            if self.fork_tokens < 1:
                self.paused_until = now + (1 - self.fork_tokens) / self.opts.max_fork_rate
                return False
        return True

    def refill_fork_tokens(self, now):
        # The bucket holds at least one token: with a rate below 1/s (one fork
        # every few seconds) a bucket of `rate` tokens would never allow one.
        rate = self.opts.max_fork_rate
        self.fork_tokens = min(max(rate, 1.0), self.fork_tokens + (now - self.fork_tokens_at) * rate)
        self.fork_tokens_at = now

    def set_accepting(self, on):
        if on == self.accepting:
            return
        for fd in self.listeners:
            if on:
                self.poller.register(fd, select.POLLIN)
            else:
                self.poller.unregister(fd)
        self.accepting = on

    # ------------------------------------------------------------ accepting
    def accept_from(self, listener):
        """Accept until the backlog is empty or the turn's ACCEPT_BUDGET_SECONDS
        are spent, forking a child for each connection whose request is ready."""
        opts, cap = self.opts, self.child_cap
        limit = self.handler_config.limits.head if opts.accept_filter else 0
        pending = listener.pending
        budget_end = time.monotonic() + ACCEPT_BUDGET_SECONDS
        while True:
            if ((self.stop_mode or self.paused_until or opts.max_fork_rate
                    or len(self.children) >= cap) and not self.may_accept()):
                return
            if self.sigchld_seen:
                # Reap between accepts: under a burst the backlog never empties,
                # and children that already answered would otherwise stay
                # zombies, counted against --max-children, until it does.
                self.reap_children()
            try:
                # socket.accept() converts family and type to enums for the
                # new object: ~20 pages touched per connection in the parent.
                fd, addr = listener.sock._accept()
            except (BlockingIOError, InterruptedError):
                return
            except OSError as exc:
                self.accept_failed(exc)
                return
            # socket.socket(family, type, 0, fd) minus the Python frames of
            # socket.py's __init__ (every page the parent writes after a fork
            # is a fault): the C __init__, then the two slots it sets.
            sock = new_socket(PySocket)
            init_socket(sock, listener.family, listener.type, 0, fd)
            sock._io_refs, sock._closed = 0, False
            now = time.monotonic()
            if opts.max_children_per_ip and self.over_ip_limit(sock, addr):
                data = None   # refused (503); the turn's budget still counts it
            else:
                data = self.filter_head(sock, addr, now, limit) if limit else b""
            if data is not None:
                self.fork_child(sock, addr, data, now)
            if now >= budget_end or self.pending_signals or not pending(0):
                return   # the turn's time spent, a signal waiting, or the backlog empty

    def filter_head(self, sock, addr, now, limit):
        """The accept filter: what the client sent, if its head is complete;
        None if the connection was parked or is gone."""
        try:
            # Into one buffer kept for this: recv() would malloc limit+1
            # bytes (64 KiB) per connection and shrink them, writing heap
            # pages that every fork has just shared.
            count = sock.recv_into(self.filter_view, limit + 1, MSG_DONTWAIT)
        except BlockingIOError:
            count = -1         # nothing sent yet: parked below
        except OSError:
            sock.close()       # reset before a word
            return None
        if count == 0:
            sock.close()       # closed without a word
            return None
        data = self.filter_view[:count].tobytes() if count > 0 else b""
        # A GET or HEAD whose CRLFCRLF is in is ready (a malformed head is
        # the child's to answer): request_state's full check for the rest.
        # (find, not "in": bytes.__contains__ first tries the argument as an
        # int, and raises and drops a TypeError for every connection.)
        if data.find(b"\r\n\r\n") == -1 or not data.startswith(NO_BODY_PREFIXES):
            state = request_state(data, limit, self.filter_bodies)
            if state != READY:
                self.park(sock, addr, data, now, state)
                return None
        return data

    def accept_failed(self, exc):
        if exc.errno in (errno.ECONNABORTED, errno.EPROTO):
            return
        self.log.error("accept() failed: %s; pausing %.1fs" % (
            os.strerror(exc.errno), ACCEPT_BACKOFF_SECONDS))
        self.paused_until = time.monotonic() + ACCEPT_BACKOFF_SECONDS

    def over_ip_limit(self, sock, addr):
        """--max-children-per-ip: refuse (503) a client at its limit."""
        ip = addr[0] if isinstance(addr, tuple) else ""
        limit = self.opts.max_children_per_ip
        if ip and self.per_ip.get(ip, 0) >= limit:
            self.log.warning("client %s: over --max-children-per-ip %d; 503" % (format_addr(addr), limit))
            refuse(sock, 503)
            return True
        return False

    def take_back(self):
        """Idle kept-alive connections a child handed back on the Drain notice
        (wsgi_handler ConnectionHandler.hand_back): held like new ones, so
        their next request gets a child with the code of now (while stopping,
        for STOP_HEAD_GRACE_SECONDS: see stop_parked)."""
        for _ in range(self.opts.max_pending):
            try:
                _, fds, _, _ = socket.recv_fds(self.handback, 16, 1)
            except (BlockingIOError, InterruptedError):
                return
            for fd in fds:
                sock = socket.socket(fileno=fd)
                if len(self.parked) >= self.opts.max_pending and close_if_quiet(sock):
                    continue
                try:
                    addr = sock.getpeername()
                except OSError:
                    sock.close()   # the client left meanwhile
                    continue
                self.park(sock, addr, b"", time.monotonic(), HEAD_INCOMPLETE, idle=True)

    def park(self, sock, addr, data, now, state, idle=False):
        if len(self.parked) >= self.opts.max_pending:
            # An idle handed-back connection goes first, closed without a word
            # (a 503 on it could be taken as the answer to its next request).
            oldest = min(self.parked.values(), key=lambda p: (not p.idle, p.accepted_at))
            self.log.warning("accept filter full (%d): dropping %s" % (
                len(self.parked), format_addr(oldest.addr)))
            self.unpark(oldest.sock.fileno())
            if oldest.idle:
                oldest.sock.close()
            else:
                refuse(oldest.sock, 503)
        fd = sock.fileno()
        parked = self.parked[fd] = Parked(sock, addr, bytearray(data), now,
                                          now + self.opts.header_timeout)
        parked.state = state
        if idle:   # handed back: idle for up to --keep-alive, then closed silently
            parked.idle = True
            parked.deadline = now + (STOP_HEAD_GRACE_SECONDS if self.stop_mode
                                     else self.opts.keep_alive)
        if state == BODY_INCOMPLETE:
            parked.body_progress(now, self.opts.header_timeout, self.opts.min_body_rate)
        self.poller.register(fd, select.POLLIN)
        self.count_ip(addr, 1)

    def unpark(self, fd):
        try:
            self.poller.unregister(fd)
        except KeyError:
            pass  # a complete head waiting for a free child is no longer polled
        parked = self.parked.pop(fd)
        self.count_ip(parked.addr, -1)
        return parked

    def count_ip(self, addr, delta):
        """--max-children-per-ip counts a client's children and the connections
        the accept filter holds for it, so one address cannot fill either."""
        if not self.opts.max_children_per_ip or not isinstance(addr, tuple):
            return
        count = self.per_ip.get(addr[0], 0) + delta
        if count > 0:
            self.per_ip[addr[0]] = count
        else:
            self.per_ip.pop(addr[0], None)

    def on_parked_readable(self, fd):
        parked = self.parked[fd]
        limit = self.handler_config.limits.head
        try:
            data = parked.sock.recv(limit + 1 + PARENT_BODY_BYTES - len(parked.data), MSG_DONTWAIT)
        except BlockingIOError:
            return
        except OSError:
            data = b""
        if not data:
            self.unpark(fd)
            if parked.data.strip(b"\r\n") and not parked.idle:
                refuse(parked.sock, 400)   # closed inside the head: as the child would say
            else:
                parked.sock.close()
            return
        if parked.idle:   # the next request of a handed-back connection begins
            parked.idle = False
            parked.accepted_at = time.monotonic()
            parked.deadline = parked.accepted_at + (
                STOP_HEAD_GRACE_SECONDS if self.stop_mode else self.opts.header_timeout)
        parked.data += data
        state = parked.state = request_state(parked.data, limit, self.filter_bodies)
        if state == BODY_INCOMPLETE:
            parked.body_progress(time.monotonic(), self.opts.header_timeout,
                                 self.opts.min_body_rate)
        if state != READY:
            return
        if self.may_fork():
            self.unpark(fd)
            self.fork_child(parked.sock, parked.addr, bytes(parked.data), parked.accepted_at)
        else:
            # At the cap: stop polling it (its body would keep poll() busy);
            # check_parked forks it when a child slot frees up.
            self.poller.unregister(fd)

    def close_idle(self, parked):
        """Close an idle parked connection, unless a request has just begun on
        it: then it is held like one that is coming in."""
        if close_if_quiet(parked.sock):
            return
        now = time.monotonic()
        parked.idle, parked.accepted_at = False, now
        parked.deadline = now + (STOP_HEAD_GRACE_SECONDS if self.stop_mode
                                 else self.opts.header_timeout)
        self.parked[parked.sock.fileno()] = parked
        self.poller.register(parked.sock.fileno(), select.POLLIN)
        self.count_ip(parked.addr, 1)

    def check_parked(self):
        if not self.parked:
            return
        now = time.monotonic()
        for fd, parked in list(self.parked.items()):
            state = parked.state   # only on_parked_readable changes its data
            if now >= parked.deadline:
                self.unpark(fd)
                if parked.idle:   # RFC 9112 9.5: an idle connection is closed, no 408
                    self.close_idle(parked)
                    continue
                if state == READY:   # complete, but no child was free
                    self.log.warning("client %s: no free child in %.0fs; 503" % (
                        format_addr(parked.addr), now - parked.accepted_at))
                    refuse(parked.sock, 503)
                    continue
                status = 503 if self.stop_mode else 408   # stopping: do not come back
                self.log.info("client %s: no complete request %s in %.0fs; %d" % (
                    format_addr(parked.addr), "body" if parked.head_end else "head",
                    now - parked.accepted_at, status))
                refuse(parked.sock, status)
            elif state == READY and self.may_fork():
                self.unpark(fd)
                self.fork_child(parked.sock, parked.addr, bytes(parked.data), parked.accepted_at)

    # ------------------------------------------------------------ forking
    def fork_child(self, sock, addr, data, accepted_at):
        if self.flush_before_fork:
            self.run_hook("pre_fork", self)
            flush_stdio()
        # Blocked across fork: a signal in the child before it resets its
        # handlers would write to the parent's wake-up pipe.
        raw_sigmask(SIG_BLOCK, HANDLED_SIGNAL_NUMBERS)
        try:
            pid = os.fork()
        except OSError as exc:
            raw_sigmask(SIG_UNBLOCK, HANDLED_SIGNAL_NUMBERS)
            self.fork_failed(sock, addr, exc)
            return
        if pid == 0:
            self.run_child(sock, addr, data, accepted_at)   # never returns
        # Recorded here rather than in a method of its own: see serve_forever.
        opts = self.opts
        deadline = accepted_at + opts.timeout if opts.timeout and not opts.keep_alive else 0.0
        self.children[pid] = Child(pid, addr, accepted_at, deadline)
        if deadline and deadline < self.deadline_check_at:
            self.deadline_check_at = deadline
        if opts.max_children_per_ip:
            self.count_ip(addr, 1)
        if opts.max_fork_rate:
            self.fork_tokens -= 1
        self.served += 1
        if len(self.children) > self.high_water:
            self.high_water = len(self.children)
        if opts.trace:
            self.log.trace("", "fork: child %d for %s" % (pid, format_addr(addr)))
        self.title_dirty = True
        raw_sigmask(SIG_UNBLOCK, HANDLED_SIGNAL_NUMBERS)
        if self.opts.lab_parent_keeps_client:
            self.kept_clients.append(sock)   # lab 3: the tutorial's missing close()
        else:
            close_socket(sock)   # the C close: socket.close() is two Python layers
        if self.opts.lab_print_in_handler:
            # Lab 11: the tutorial's print, with signals open, so SIGCHLD can
            # interrupt it while it holds stdout's buffer lock.
            print("Forked child %d for %s" % (pid, format_addr(addr)))

    def fork_failed(self, sock, addr, exc):
        self.log.error("fork() failed: %s; answering %s with 503 and pausing %.1fs" % (
            os.strerror(exc.errno), format_addr(addr), FORK_BACKOFF_SECONDS))
        refuse(sock, 503)
        self.paused_until = time.monotonic() + FORK_BACKOFF_SECONDS

    def run_child(self, sock, addr, data, accepted_at):
        """In the child: set up, serve one connection, and _exit.  Never returns.
        It reads one tuple (plan_children) and calls C functions bound globally:
        each attribute looked up here writes a page (docs/performance.md)."""
        status = EXIT_ERROR
        marks = self.exit_marks
        try:
            (app, config, signals, close_fds, alarm, limits, post_fork,
             setups) = self.child_plan
            # Undo the parent: its wake-up fd first, so no signal writes into
            # the parent's pipe, then its handlers (SIGPIPE stays ignored, as
            # Python starts it, so a hang-up is an exception, not a death).
            set_wakeup_fd(-1)
            for sig, handler in signals:
                raw_signal(sig, handler)
            for setup in setups:   # before any signal: die with the parent, Drain
                setup()
            raw_sigmask(SIG_UNBLOCK, HANDLED_SIGNAL_NUMBERS)
            for fd in close_fds:   # the wake-up pipe, the listeners
                close_fd(fd)
            if self.parked:
                for parked in self.parked.values():
                    close_fd(parked.sock.detach())
            gc_disable()   # the frozen heap stays shared; the app may gc.enable()
            if limits:
                apply_child_limits(self.opts)
            if alarm:
                # Our own deadline: even if the parent is gone, SIGALRM ends us.
                setitimer(ITIMER_REAL, alarm)
            if post_fork and not self.child_post_fork(sock):
                status = EXIT_HOOK_FAILED
                return
            status = serve_connection(sock, addr, app, config, data, accepted_at)
        except MemoryError:
            status = EXIT_MEMORY_LIMIT
        except BaseException:
            log_child_failure(self.log, addr)
        finally:
            exit_child(marks, status)

    def plan_children(self):
        """What every child reads, in one tuple (run_child): made before the
        first fork and again after each reload."""
        opts = self.opts
        close_fds = (self.wake_r, self.wake_w)
        if self.handback is not None:
            close_fds += (self.handback.fileno(),)
        if not opts.lab_child_keeps_listener:
            close_fds += tuple(self.listeners)   # the socket objects are never used there
        signals = self.child_signals
        if opts.keep_alive:   # SIGHUP: finish the response, then close (Drain)
            signals = tuple((sig, Drain.note if sig == signal.SIGHUP else handler)
                            for sig, handler in signals)
        self.child_plan = (
            self.app, self.handler_config, signals, close_fds,
            opts.timeout if opts.timeout and not opts.keep_alive else 0,
            bool(opts.limit_memory or opts.limit_cpu), bool(self.hooks.get("post_fork")),
            self.child_setups())

    def child_setups(self):
        """What a child runs before it may receive a signal: the parent-death
        signal (not in lab 12), and, forked while stopping with --keep-alive,
        the Drain notice (one response, then close)."""
        setups = () if self.opts.lab_orphans else (parent_death_signal(os.getpid()),)
        if self.opts.keep_alive:
            # SA_RESTART, as gunicorn's workers: the Drain notice must not make
            # a blocking call of the app fail with EINTR (the idle poll still
            # wakes up, on the wake-up fd).
            setups += (lambda: signal.siginterrupt(signal.SIGHUP, False),)
        if self.stop_mode and self.opts.keep_alive:
            setups += (Drain.drain_now,)
        return tuple(setup for setup in setups if setup is not None)

    def child_post_fork(self, sock):
        try:
            self.hooks["post_fork"](self, os.getpid())
            return True
        except BaseException:
            self.log.exception("hook post_fork failed; answering 500")
            try:
                sock.sendall(wsgi_handler.error_response(500))
            except OSError:
                pass
            return False

    # ------------------------------------------------------------ reaping
    def reap_children(self):
        if self.sigchld_seen and self.opts.trace:
            self.log.trace("", "SIGCHLD received")
        self.sigchld_seen = False
        if self.handler_errors:
            self.log_handler_errors()
        if self.reap_inline:
            # exited_children(), inline (see serve_forever): a clean exit of a
            # child nobody waits on needs no more than forgetting it.
            children, marks = self.children, self.exit_marks
            while True:
                try:
                    pid, status = os.waitpid(-1, os.WNOHANG)
                except ChildProcessError:
                    break
                if pid == 0:
                    break
                if (status == 0 and self.plain_exits and not self.terminating and pid in children
                        and pid < len(marks) and marks[pid]):
                    marks[pid] = 0
                    del children[pid]
                    self.title_dirty = True
                else:
                    self.child_exited(pid, status)
        while self.reaped:
            pid, status = self.reaped.pop(0)
            self.child_exited(pid, status)

    def child_exited(self, pid, status):
        child = self.children.pop(pid, None)
        self.terminating.pop(pid, None)
        marks = self.exit_marks
        ours = pid >= len(marks) or marks[pid]   # see exit_marks
        if pid < len(marks):
            marks[pid] = 0
        if child is None:
            # Not ours: as PID 1 or a subreaper we adopt orphans.  Reap quietly.
            self.log.debug("reaped unknown process %d: %s" % (pid, describe_status(status)))
            return
        self.count_ip(child.addr, -1)
        if self.opts.trace:
            self.log.trace("", "reaped %d: %s" % (pid, describe_status(status)))
        if os.WIFEXITED(status) and not ours:
            self.log_app_exit(child, status)
        elif not is_normal_exit(status):
            self.log_abnormal_exit(child, status)
        self.run_hook("child_exit", self, pid, status)
        self.title_dirty = True

    def log_app_exit(self, child, status):
        """The child ended without forkserver's own _exit: the app (or a
        hook) called os._exit, so the status is the app's, not an EXIT_* code."""
        self.log.log("info" if self.stop_mode else "warning",
                     "child %d (client %s, %.2fs) exited with status %d from inside the app "
                     "(os._exit), not through forkserver: its connection may have had no answer"
                     % (child.pid, format_addr(child.addr), time.monotonic() - child.started,
                        os.WEXITSTATUS(status)))

    def log_abnormal_exit(self, child, status):
        age = time.monotonic() - child.started
        what = describe_status(status)
        if os.WIFSIGNALED(status):
            sig = os.WTERMSIG(status)
            if child.term_at and self.stop_mode and sig in (signal.SIGTERM, signal.SIGKILL):
                what += " (server stopping)"   # a fast stop or the stop deadline, not --timeout
            elif sig == signal.SIGALRM or (child.term_at and sig in (signal.SIGTERM, signal.SIGKILL)):
                what += " (timeout)"
            elif sig == signal.SIGXCPU:
                what += " (CPU limit hit)"
        level = "info" if self.stop_mode else "warning"
        self.log.log(level, "child %d (client %s, %.2fs) %s" % (
            child.pid, format_addr(child.addr), age, what))

    # ------------------------------------------------------------ deadlines
    def check_deadlines(self):
        now = time.monotonic()
        # No copy of the table: neither branch adds or removes children
        # (signal_child only fills self.terminating).
        self.deadline_check_at = INFINITY
        for child in self.children.values():
            if not child.deadline or child.deadline > now:
                if child.deadline:   # fork order is deadline order
                    self.deadline_check_at = child.deadline
                break
            if child.pid not in self.terminating:
                self.log.warning("child %d (client %s) timed out after %.1fs; sending SIGTERM" % (
                    child.pid, format_addr(child.addr), now - child.started))
                self.signal_child(child, signal.SIGTERM)
        for child in self.terminating.values():
            if now >= child.term_at + KILL_GRACE_SECONDS:
                self.log.warning("child %d ignored SIGTERM; sending SIGKILL" % child.pid)
                kill(child.pid, signal.SIGKILL)
                child.term_at = INFINITY

    def signal_child(self, child, sig):
        kill(child.pid, sig)
        if child.term_at is None:
            child.term_at = time.monotonic()
        self.terminating[child.pid] = child

    # ------------------------------------------------------------ signals
    def handle_signals(self):
        while self.pending_signals:
            sig = self.pending_signals.pop(0)
            if sig in STOP_SIGNALS:
                self.begin_stop(STOP_SIGNALS[sig], signal.Signals(sig).name)
            elif sig == signal.SIGHUP:
                self.reload("SIGHUP")
            elif sig == signal.SIGUSR1:
                self.reopen_logs()

    def reopen_logs(self):
        try:
            reopen_log_file(self.opts.access_log, self.log.access_fd)
            reopen_log_file(self.opts.error_log, self.log.error_fd)
        except OSError as exc:
            # After --user the new file must be writable by that user (logrotate's
            # "create MODE USER GROUP"); until it is, keep writing to the old one.
            self.log.error("SIGUSR1: cannot reopen log file %r: %s; still writing to the "
                           "old one" % (exc.filename, exc.strerror))
            return
        self.log.info("SIGUSR1: log files reopened")

    def reload(self, why):
        if self.stop_mode:
            return
        self.log.info("%s: reloading %s" % (why, self.loader.spec))
        try:
            app = self.loader.reload()
        except AppLoadError as exc:
            self.log.error("reload failed, still serving the previous code: %s" % exc)
            return
        self.app = app
        self.mtimes = self.loader.source_mtimes() if self.opts.reload else {}
        if self.opts.accept_filter:
            self.filter_view = memoryview(bytearray(self.handler_config.limits.head + 1))
        self.plan_children()
        self.freeze_heap()
        flush_stdio()
        self.log.info("reloaded %s; new connections get the new code" % self.loader.spec)
        self.drain_kept_alive()

    def drain_kept_alive(self):
        """--keep-alive: tell every child to close its connection after the
        response in progress, at once if idle (wsgi_handler.Drain), so a
        proxy's pooled connections meet the new code, or let a stop go."""
        if not self.opts.keep_alive:
            return
        for child in self.children.values():
            if child.pid not in self.terminating:
                kill(child.pid, signal.SIGHUP)

    def check_reload(self):
        if not self.opts.reload or time.monotonic() < self.next_mtime_check:
            return
        self.next_mtime_check = time.monotonic() + RELOAD_POLL_SECONDS
        mtimes = self.loader.source_mtimes()
        changed = [path for path, m in self.mtimes.items() if mtimes.get(path, m) != m]
        if changed:
            self.mtimes.update(mtimes)
            self.reload("--reload: %s changed" % os.path.basename(changed[0]))

    # ------------------------------------------------------------ stopping
    def begin_stop(self, mode, why):
        now = time.monotonic()
        if self.stop_mode:
            self.escalate_stop(why)
            return
        self.stop_mode = mode
        self.log.info("%s: stopping (%s), %d children in flight" % (why, mode, len(self.children)))
        sd_notify("STOPPING=1")
        self.stop_deadline = now + (FAST_STOP_SECONDS if mode == "fast"
                                    else self.opts.graceful_timeout)
        if mode == "graceful":
            self.drain_backlog()
        self.close_listeners()
        self.stop_parked(graceful=mode == "graceful")
        if mode == "fast":
            for child in list(self.children.values()):
                self.signal_child(child, signal.SIGTERM)
        else:
            self.drain_kept_alive()

    def escalate_stop(self, why):
        if self.stop_mode == "graceful":
            self.log.info("%s again: stopping fast" % why)
            self.stop_mode = "fast"
            self.stop_deadline = time.monotonic() + FAST_STOP_SECONDS
            self.refuse_parked()
            for child in list(self.children.values()):
                self.signal_child(child, signal.SIGTERM)
        else:
            self.log.info("%s again: killing %d children" % (why, len(self.children)))
            self.stop_deadline = time.monotonic()

    def drain_backlog(self):
        """A graceful stop first takes the connections the kernel has already
        accepted for us: closing a listener resets those still in its queue,
        and a proxy does not retry a POST whose connection was reset (502).
        They are held like any new connection; stop_parked decides."""
        now = time.monotonic()
        for listener in self.listeners.values():
            for _ in range(self.opts.backlog):
                try:
                    sock, addr = listener.sock.accept()
                except OSError:   # BlockingIOError: the queue is empty
                    break
                self.park(sock, addr, b"", now, HEAD_INCOMPLETE)

    def close_listeners(self):
        self.set_accepting(False)
        for listener in self.listeners.values():
            listener.close()
        self.listeners = {}
        # A child forked from now on (a parked head, handed over) must not
        # close the listeners' old descriptor numbers: they are closed, or
        # already reused by another socket.
        self.plan_children()

    def stop_parked(self, graceful):
        """On a graceful stop, a complete parked request stays parked and
        check_parked forks it when a slot is free (never past --max-children),
        or answers 503 if none frees up before the stop deadline; an incomplete
        one has STOP_HEAD_GRACE_SECONDS more to complete (a proxy that has just
        connected is sending it), then 503.  An idle handed-back connection
        gets the same grace: a request on it is served (and the connection
        closed after it), a quiet one is closed.  A proxy that picks this
        server meanwhile uses up its pooled connections, or meets the closed
        listener and marks the server failed; either way it stops picking the
        idle ones before they close, so none is closed under a request it was
        sending.  On a fast stop every parked connection gets 503."""
        now = time.monotonic()
        for fd, parked in list(self.parked.items()):
            if not graceful:
                self.unpark(fd)
                refuse(parked.sock, 503)
            elif parked.head_end:   # the head is in, a small body is coming
                parked.deadline = min(parked.deadline, self.stop_deadline)
            else:
                parked.deadline = min(parked.deadline, now + STOP_HEAD_GRACE_SECONDS)
        self.check_parked()

    def refuse_parked(self):
        for fd in list(self.parked):
            parked = self.unpark(fd)
            if parked.idle:
                parked.sock.close()
            else:
                refuse(parked.sock, 503)

    def stopped(self):
        """True once every child is gone, killing what is left at the deadline."""
        if self.opts.reaper != "loop":
            reap_all(self.reaped)
            self.reap_children()
        if self.handback is not None and not self.children:
            self.take_back()   # what the last children handed back before they exited
        if not self.children and not self.parked:
            return True
        if time.monotonic() < self.stop_deadline:
            return False
        if self.parked:
            self.log.warning("stop deadline passed: %d parked requests get 503" % len(self.parked))
            self.refuse_parked()
        self.log.warning("stop deadline passed: killing %d children" % len(self.children))
        for pid in list(self.children):
            kill(pid, signal.SIGKILL)
        for pid in list(self.children):
            try:
                _, status = os.waitpid(pid, 0)
                self.child_exited(pid, status)
            except ChildProcessError:
                self.children.pop(pid, None)
        return True

    # ------------------------------------------------------------ misc
    def run_hook(self, name, *args):
        hook = self.hooks.get(name)
        if hook is None:
            return
        try:
            hook(*args)
        except BaseException:
            self.log.exception("hook %s failed" % name)

    def update_title(self):
        self.title_dirty = False
        self.status_dirty = bool(self.opts.status_file)
        if self.set_title is None:
            return
        self.set_title("%s children=%d high-water=%d" % (
            self.title_prefix, len(self.children), self.high_water))

    def write_status(self):
        """--status-file: the parent's own counts for scripts/watch_children.py,
        rewritten (atomically) at most once per STATUS_INTERVAL_SECONDS."""
        now = time.monotonic()
        if not self.status_dirty or now < self.status_due:
            return
        self.status_dirty = False
        self.status_due = now + STATUS_INTERVAL_SECONDS
        text = ('{"pid": %d, "children": %d, "high_water": %d, "served": %d, '
                '"max_children": %d, "parked": %d, "stopping": %s, "time": %.3f}\n' % (
                    os.getpid(), len(self.children), self.high_water, self.served,
                    self.opts.max_children, len(self.parked),
                    "true" if self.stop_mode else "false", time.time()))
        try:
            write_atomically(self.opts.status_file, text)
        except OSError as exc:
            self.log.warning("cannot write --status-file %r: %s" % (
                self.opts.status_file, exc.strerror))

    def cleanup(self):
        for listener in self.listeners.values():
            listener.close()
        for sock in self.kept_clients:
            sock.close()
        reap_all(self.reaped)
        self.reaped.clear()
        if self.child_plan is None:
            return   # never got as far as serving (prepare failed)
        self.log.info("stopped: served %d connections, at most %d children at once (high-water mark)"
                      % (self.served, self.high_water))


# ================================================================ helpers

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


def reap_all(out):
    """Reap every exited child; statuses appended to ``out``."""
    out.extend(exited_children())


def kill(pid, sig):
    try:
        os.kill(pid, sig)
    except ProcessLookupError:
        pass


def flush_stdio():
    # Text buffered in the parent would be written again by every child.
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except (AttributeError, ValueError, OSError):
            pass


HEAD_INCOMPLETE, BODY_INCOMPLETE, READY = range(3)   # request_state()


def request_state(data, limit, bodies=True):
    """Accept filter: a connection goes to a child once it is READY: its head
    is complete (or can never be: too long, or a bare CR/LF the child answers
    400), and so is its body if that is small (filter_body_bytes) and the
    filter waits for bodies (not with --min-body-rate 0: no rate to hold
    them to)."""
    if len(data) > limit + PARENT_BODY_BYTES:
        return READY
    try:
        end = wsgi_handler.find_head_end(data)
    except wsgi_handler.HTTPError:
        return READY
    if end == -1:
        return READY if len(data) > limit else HEAD_INCOMPLETE
    if not bodies or len(data) - end >= filter_body_bytes(data, end):
        return READY
    return BODY_INCOMPLETE


def filter_body_bytes(data, end):
    """How much body the accept filter waits for after the head ending at end:
    its Content-Length if that is at most PARENT_BODY_BYTES, else 0.  Only a
    plain, single, small Content-Length: the child alone parses the request
    (a repeated or bad one is its 400), answers Expect: 100-continue (the
    client sends nothing before it) and reads chunked bodies."""
    head = data[:end].lower()
    at = head.find(b"\r\ncontent-length:")
    if at == -1 or head.find(b"\r\ncontent-length:", at + 1) != -1 or (
            b"\r\nexpect:" in head or b"\r\ntransfer-encoding:" in head):
        return 0
    value = head[at + 17:head.find(b"\r\n", at + 17)].strip(b" \t")
    if not ASCII_DIGITS_RE.fullmatch(value.decode("latin-1")) or int(value) > PARENT_BODY_BYTES:
        return 0
    return int(value)


def close_if_quiet(sock):
    """Close an idle connection unless the client has begun a request on it
    (closing over unread bytes resets the connection and loses the request).
    True if it was closed."""
    try:
        if sock.recv(1, socket.MSG_PEEK | MSG_DONTWAIT):
            return False
    except BlockingIOError:
        pass
    except OSError:
        pass   # reset: nothing to lose
    sock.close()
    return True


def refuse(sock, status):
    """Answer from the parent without blocking (503, 408), then close.

    First it reads what the client has already sent (a body behind a complete
    head, up to REFUSE_DRAIN_BYTES): close() with unread data sends a reset
    instead of a FIN, and a reset can cost the client the answer in flight.
    What is still on its way is not waited for: the parent never blocks."""
    try:
        sock.send(wsgi_handler.error_response(status), MSG_DONTWAIT)
        sock.shutdown(socket.SHUT_WR)
        drained = 0
        while drained < REFUSE_DRAIN_BYTES:
            chunk = sock.recv(65536, MSG_DONTWAIT)
            if not chunk:
                break
            drained += len(chunk)
    except OSError:
        pass   # BlockingIOError: all that has arrived is read
    sock.close()


def apply_child_limits(opts):
    if opts.limit_memory:
        # RLIMIT_AS counts the whole address space, most of it shared with the
        # parent; the limit is what the child may add on top of that.
        with open("/proc/self/statm", "rb") as f:
            size = int(f.read().split()[0]) * resource.getpagesize()
        limit = size + int(opts.limit_memory * 1024 * 1024)
        resource.setrlimit(resource.RLIMIT_AS, (limit, limit))
    if opts.limit_cpu:
        seconds = int(opts.limit_cpu)
        resource.setrlimit(resource.RLIMIT_CPU, (seconds, seconds + 1))
        signal.signal(signal.SIGXCPU, raise_cpu_limit)


def raise_cpu_limit(signum, frame):
    raise wsgi_handler.CPULimitExceeded("CPU limit of the child reached")


def load_setproctitle():
    """The optional setproctitle's C function, or None.

    Its package __init__ imports ``logging`` (0.7 MB more parent, paid again
    in page tables by every fork), so the extension is loaded by itself."""
    import importlib.util
    try:
        spec = importlib.util.find_spec("setproctitle")
    except (ImportError, ValueError):
        return None
    for folder in (spec.submodule_search_locations or []) if spec else []:
        for name in sorted(os.listdir(folder)):
            if name.startswith("_setproctitle.") and name.endswith(".so"):
                return load_extension("_setproctitle", os.path.join(folder, name))
    return None


def load_extension(name, path):
    import importlib.util
    try:
        spec = importlib.util.spec_from_file_location(name, path)
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        return module.setproctitle
    except (ImportError, OSError, AttributeError):
        return None


def reopen_log_file(path, fd):
    if not path or path == "-" or fd is None:
        return
    new = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    os.dup2(new, fd)
    os.close(new)


def open_log(path, default_fd):
    if path is None:
        return None
    if path == "-":
        return default_fd
    try:
        return os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    except OSError as exc:
        raise UsageError("cannot open log file %r: %s" % (path, exc.strerror)) from None


def build_handler_config(opts, log, set_title, listeners, handback=None):
    first = next(iter(listeners.values()), None)
    host, port = "localhost", "80"
    if first is not None and first.description.startswith("http://"):
        host, _, port = first.description[7:].rpartition(":")
        host = host.strip("[]")
    limits = wsgi_handler.Limits(
        request_line=opts.limit_request_line, fields=opts.limit_request_fields,
        field=opts.limit_request_field_size, head=opts.limit_request_head,
        body=opts.max_body, chunk_line=opts.limit_chunk_line)
    return wsgi_handler.HandlerConfig(
        limits=limits, server_name=host, server_port=port,
        header_timeout=opts.header_timeout, read_timeout=opts.read_timeout,
        min_body_rate=opts.min_body_rate,
        keep_alive=opts.keep_alive, max_requests=opts.max_requests_per_connection,
        request_timeout=opts.timeout if opts.keep_alive else 0.0,
        close_delimited=opts.lab_parent_keeps_client, trace=opts.trace,
        forwarded=wsgi_handler.ProxyTrust(opts.forwarded_allow_ips, opts.forwarded_headers),
        handback=handback,
        set_title=set_title, title_query=opts.title_with_query, log=log).freeze()


def prewarm(app, config, path, log, first=()):
    """--prewarm (forkparts.prewarm), through the child's entry point."""
    forkparts.prewarm.prewarm(serve_connection, app, config, path, log, first)


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

    def die_with_parent():
        prctl(PR_SET_PDEATHSIG, sigkill, 0, 0, 0)
        if os.getppid() != parent_pid:
            _exit(EXIT_ERROR)
    return die_with_parent


def become_subreaper():
    """prctl(PR_SET_CHILD_SUBREAPER): orphaned grandchildren (an app's daemons)
    are reparented to us instead of PID 1, and reaped quietly like unknown pids."""
    import ctypes
    try:
        prctl = ctypes.CDLL(None, use_errno=True).prctl
    except (OSError, AttributeError):
        raise UsageError("--subreaper needs Linux prctl(2)") from None
    if prctl(PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) != 0:
        raise UsageError("--subreaper: prctl failed: %s" % os.strerror(ctypes.get_errno()))


def main(argv=None):
    opts, hooks = parse_options(argv)
    log = None
    try:
        log = Log(error_fd=open_log(opts.error_log, 2), access_fd=open_log(opts.access_log, 1),
                  level=opts.log_level, access_format=opts.access_log_format)
        for warning in opts.config_warnings:
            log.warning(warning)
        setup_paths(opts)
        return run(opts, hooks, log)
    except UsageError as exc:
        sys.stderr.write("forkserver: error: %s\n" % exc)
        return EXIT_USAGE
    except AppLoadError as exc:
        sys.stderr.write("forkserver: error: cannot load app %r: %s\n" % (opts.app, exc))
        return EXIT_APP_LOAD
    except ListenError as exc:
        sys.stderr.write("forkserver: error: %s\n" % exc)
        return EXIT_LISTEN


def run(opts, hooks, log):
    loader = AppLoader(opts.app)
    app = loader.load()
    # Binds, writes the pidfile, then drops privileges (--user/--group).
    listeners = open_listeners(opts)
    configure_accel(opts, log, listeners)   # the tricks' switches and version gates
    if opts.pidfile and not writable_by(os.path.dirname(os.path.abspath(opts.pidfile)),
                                        os.geteuid(), os.getegid()):
        log.warning("--pidfile %r: its directory is not writable by uid %d, so the pidfile "
                    "will stay after the server stops (give it a directory of its own, e.g. "
                    "systemd's RuntimeDirectory=)" % (opts.pidfile, os.geteuid()))
    try:
        if opts.subreaper:
            become_subreaper()
        server = Server(opts, loader, app, listeners, log, hooks)
    except BaseException:
        for listener in listeners:
            listener.close()
        if opts.pidfile:
            remove_pidfile(opts.pidfile)
        raise
    try:
        server.run_hook("on_starting", server)
        server.prepare()
        announce(server, listeners)
        server.serve_forever()
    finally:
        server.cleanup()
        if opts.pidfile:
            remove_pidfile(opts.pidfile)
        if opts.status_file:
            remove_pidfile(opts.status_file)   # a stale status would lie
        server.run_hook("on_exit", server)
    return EXIT_OK


def announce(server, listeners):
    line = READY_LINE.format(pid=os.getpid(),
                             addresses=" ".join(l.description for l in listeners))
    os.write(1, (line + "\n").encode())
    sd_notify("READY=1\nMAINPID=%d" % os.getpid())
    server.run_hook("when_ready", server)


if __name__ == "__main__":
    sys.exit(main())
