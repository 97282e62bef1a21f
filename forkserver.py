"""forkserver: a WSGI server that forks one child per connection.

The classic design of "Let's Build A Web Server" part 3, made safe.  A
process's life here:

    parent:  load the app, bind, then loop (Server.serve_forever):
                 wait: poll(listeners, parked connections, wake-up pipe)
                 accept -> fork -> close its copy of the client socket
                 reap: waitpid(-1, WNOHANG) until 0, so no zombie is left
                 deadlines, signals (stop, reload), status
    child:   (ChildPlan.run, right after fork) put back the signal handlers,
             close the listeners -> wsgi_handler.serve_connection()
             -> os._exit(status): never returns into the parent's loop

Server.accept_from, Server.fork_child and Server.reap_children below are the
tutorial's lines.  Signal handlers only note the signal; Python writes the
signal number to a wake-up pipe (``signal.set_wakeup_fd``) that the loop
polls beside the listeners, so the loop never sleeps through one and no work
is done in a handler (SIGCHLDs still merge; the reaper's loop makes that
safe).  The app is imported once in the parent before the first fork, so
every child shares it copy-on-write.

Everything else lives in the package of parts, ``forkparts`` (its
__init__ lists the rooms); the lab's deliberate mistakes are small
overrides of this module's Server in forkparts/labs.py.
Exit statuses: see EXIT_* below and docs/operations.md.
"""

import errno
import gc
import os
import resource
import select
import signal
import socket
import sys
import time

import forkparts.prewarm
from forkparts import __version__  # noqa: F401 (forkserver.__version__)
from forkparts.acceptfilter import AcceptFilter, max_pending_room, refuse
from forkparts.accel import (configure as configure_accel, fill_allocator_holes, huge_pages_note,
                             signal_calls)
from forkparts.admission import Admission, resize
from forkparts.apps import (AppLoadError, SourceWatcher, app_loader, app_name, apply_env,
                            script_name, setup_paths, warn_about_app)
from forkparts.children import (TIMEOUT_GRACE_SECONDS, ChildPlan, ChildTable,
                                become_subreaper, describe_status, exit_marks,
                                adopted_gone, exited_children, flush_stdio, no_core_dumps,
                                parent_death_signal, relieve_cap, restart_after_sighup,
                                timed_out_handler)
from forkparts.cli import UsageError
from forkparts.configfile import effective_settings, parse_options, warn_config_changed
from forkparts.hooks import CHILD_HOOKS, HookCalls, Settings, Worker, worker_for_child
from forkparts.http11 import Limits
from forkparts.labs import server_class
from forkparts.listeners import ListenError, check_room_to_accept, sd_notify
from forkparts.logs import HttpTraceLog, Log, capture_output, format_addr, open_log, reopen_logs
from forkparts.privileges import (absolute_log_paths, log_file_problems, open_listeners,
                                  remove_pidfile, start_problems, warn_after_dropping)
from forkparts.proxy import ProxyTrust
from forkparts.reexec import (TRIAL_ENV, Carried, Reexec, last_word, reading_options,
                              trial_problems)
from forkparts.startsignals import StartSignals, StopBeforeReady
from forkparts.status import Status, load_setproctitle
from forkparts.trace import traced
from forkparts.upgrade import OLDBIN_SUFFIX, Inherited, Upgrade
from forkparts.wire import close_socket
from wsgi_handler import Drain, HandlerConfig, serve_connection

# ---------------------------------------------------------------- exit codes
EXIT_OK = 0
EXIT_FAILURE = 1       # an unexpected error in the server itself
EXIT_USAGE = 2         # bad command line or configuration (argparse's status)
EXIT_APP_LOAD = 3      # the app spec could not be resolved or the app failed to import
EXIT_LISTEN = 4        # could not bind, listen or drop privileges
EXIT_NAMES = {EXIT_FAILURE: "an error in the server", EXIT_USAGE: "usage or configuration",
              EXIT_APP_LOAD: "the app could not be loaded",
              EXIT_LISTEN: "could not bind, listen or drop privileges"}

# ------------------------------------------------------------------ the loop
FAST_STOP_SECONDS = 1.0                  # SIGINT/SIGQUIT: SIGTERM, then SIGKILL after this
FORK_BACKOFF_SECONDS = 0.1               # after fork() fails with EAGAIN/ENOMEM
ACCEPT_BACKOFF_SECONDS = 0.1             # after accept() fails with EMFILE/ENFILE
MAX_POLL_SECONDS = 1.0                   # the longest the parent sleeps in poll()
# One loop turn accepts for at most this long, then goes round the loop (signals,
# reaping, deadlines, parked heads) even if the backlog is not empty: under
# steady load it never is.  A fork costs ~1-3 ms here, so a turn forks a few
# dozen children at most; docs/operations.md has the measured latencies.
ACCEPT_BUDGET_SECONDS = 0.02
# --keep-alive at the cap: how often the parent looks for a client waiting in
# the backlog while kept-alive children hold every slot (relieve_cap).
CAP_RELIEF_SECONDS = 0.25
READY_LINE = "forkserver ready: pid {pid} listening on {addresses}"
# Signals the parent handles; children put them back as they found them.
# TTIN/TTOU: their default action stops the process (job control), which
# would hang every connection; gunicorn's operators send them to resize.
HANDLED_SIGNALS = (signal.SIGCHLD, signal.SIGTERM, signal.SIGINT, signal.SIGQUIT,
                   signal.SIGHUP, signal.SIGUSR1, signal.SIGUSR2, signal.SIGTTIN,
                   signal.SIGTTOU)
# What a child does on the stop signals if the parent was started with them
# ignored (a shell's background job has SIGINT and SIGQUIT ignored): the
# parent handles them regardless, as gunicorn's master does, and a child acts
# on them as documented (docs/operations.md): KeyboardInterrupt, or its end.
CHILD_STOP_SIGNALS = {signal.SIGINT: signal.default_int_handler,
                      signal.SIGQUIT: signal.SIG_DFL, signal.SIGTERM: signal.SIG_DFL}
# The same as plain ints, for the calls made at every fork: each enum member
# sits on a page of its own that every use writes (a reference count) and
# every fork makes copy-on-write.
HANDLED_SIGNAL_NUMBERS = tuple(int(sig) for sig in HANDLED_SIGNALS)
SIG_BLOCK, SIG_UNBLOCK = int(signal.SIG_BLOCK), int(signal.SIG_UNBLOCK)
STOP_SIGNALS = {signal.SIGTERM: "graceful", signal.SIGINT: "fast", signal.SIGQUIT: "fast"}
RESIZE_SIGNALS = {signal.SIGTTIN: 1, signal.SIGTTOU: -1}   # --max-children +1 / -1
INFINITY = float("inf")


class Supervisor(HookCalls):
    """What a long-running parent adds around the tutorial's loop (Server,
    below): set-up before the first fork, signals (stop, reload, reopen
    logs), the graceful and fast stops, hooks (HookCalls), title and
    status.  State shared with the loop lives here; the loop's own steps
    are Server's."""
    start_signals = StartSignals(install=False)   # run() gives each server main()'s

    def __init__(self, opts, loader, app, listeners, log, hooks):
        self.opts, self.loader, self.app, self.log, self.hooks = opts, loader, app, log, hooks
        # What gunicorn's hooks read of their ``server`` (forkparts/hooks.py).
        self.pid, self.cfg, self.worker = os.getpid(), Settings(opts), None
        self.listeners = {l.fd: l for l in listeners}
        self.table = ChildTable(log)
        self.children = self.table.live   # pid -> Child, in fork order
        self.pending_signals = []
        self.sigchld_seen = False
        self.high_water = self.served = 0
        self.stop_mode = self.stop_deadline = self.stop_why = None
        self.adopted_told = set()   # --subreaper: adopted pids sent SIGTERM (adopted_gone)
        self.poller = select.poll()
        self.accepting = False
        # --keep-alive: when the loop at the cap next looks for clients waiting
        # (relieve_cap), and when it must wake up to do so.
        self.relief_at, self.relief_wake = (0.0 if opts.keep_alive else INFINITY), INFINITY
        self.wake_r, self.wake_w = os.pipe()
        self.admission = Admission(opts)
        self.filter = AcceptFilter(opts, log, self.poller, opts.limit_request_head,
                                   self.may_fork, self.fork_child, self.admission.count_ip)
        self.parked = self.filter.parked   # fd -> Parked
        self.sources = SourceWatcher(loader) if opts.reload else None
        self.upgrade = Upgrade(opts.pidfile, log, EXIT_NAMES)   # run() gives it what we inherited
        self.reexec = Reexec(log, HANDLED_SIGNAL_NUMBERS, EXIT_NAMES)   # run(): what a HUP carried
        titles = load_setproctitle()   # the optional C extension, or None
        self.set_title = titles.setproctitle if titles else None
        self.status = Status(opts.status_file, self.set_title, [l.description for l in listeners],
                             log, opts.proc_name, getattr(titles, "setthreadtitle", None))
        # Made by prepare().
        self.handler_config = self.child_signals = self.child_plan = self.run_child = None
        self.deadline_span = 0.0   # prepare()
        self.heap_filler = None
        self.handback = self.exit_marks = self.set_handler = self.sigmask = None
        self.warmed = False
        self.flush_before_fork = bool(hooks)
        self.plain_exits = not (opts.max_children_per_ip or hooks.get("child_exit"))

    # ------------------------------------------------------------ setup
    def prepare(self):
        """Everything between loading the app and the first accept."""
        handback = None
        # The parent's --timeout deadline, from the accept: TIMEOUT_GRACE_SECONDS
        # after the child's own (which answers 500); with --keep-alive the
        # child re-arms its own per request and the parent keeps none.
        opts = self.opts
        self.deadline_span = (opts.timeout + TIMEOUT_GRACE_SECONDS
                              if opts.timeout and not opts.keep_alive else 0.0)
        pair = self.reexec.carried_pair()   # read even if --keep-alive is gone: never stuck
        if self.opts.keep_alive or pair:   # idle connections handed back by children (Drain)
            self.handback, handback = pair or socket.socketpair(socket.AF_UNIX, socket.SOCK_DGRAM)
            self.handback.setblocking(False)
            self.poller.register(self.handback.fileno(), select.POLLIN)
        self.handler_config = build_handler_config(self.opts, self.log, self.set_title,
                                                   self.listeners, handback,
                                                   self.request_hooks())
        self.set_handler, self.sigmask = signal_calls()   # accel: raw or signal.py's
        self.install_signals()
        warn_about_app(self.log, self.app)
        self.warmed = warm_up(self)   # on by default, if the app allows it safely
        if self.sources:   # what the warm-up imported is the app's too
            self.sources.rescan()
        no_core_dumps()
        self.opts.max_pending = max_pending_room(self.opts.max_pending, self.log)
        self.exit_marks = exit_marks()
        self.reexec.adopt(self)   # a HUP executed us: the children and connections of before
        self.plan_children()
        self.freeze_heap()
        if self.opts.huge_pages:   # at start only: see collapse_heap
            self.log.info(huge_pages_note())
        self.update_title(time.monotonic())
        flush_stdio()   # what the app printed: once here, not at every fork

    def install_signals(self):
        for fd in (self.wake_r, self.wake_w):
            os.set_blocking(fd, False)
        signal.set_wakeup_fd(self.wake_w, warn_on_full_buffer=False)
        # What each child restores: what the server was started with.
        self.child_signals = self.start_signals.for_children(HANDLED_SIGNALS, CHILD_STOP_SIGNALS)
        note = self.note_signal   # one bound method for all: each child
        for sig in HANDLED_SIGNALS:   # touches each handler as it resets them
            signal.signal(sig, note)
        signal.signal(signal.SIGCHLD, self.sigchld_handler())
        if self.opts.timeout:   # a child's own deadline answers 500 (TimedOut)
            signal.signal(signal.SIGALRM, timed_out_handler(os.getpid()))
        self.poller.register(self.wake_r, select.POLLIN)
        if self.start_signals.kept:   # a USR1 during the start: at the first turn
            self.pending_signals.extend(self.start_signals.kept)
            os.write(self.wake_w, b"\0")

    def note_signal(self, signum, frame):
        self.pending_signals.append(signum)

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
        self.freeze()

    def freeze(self):
        gc.freeze()

    # ------------------------------------------------------------ signals, reload
    def handle_signals(self):
        while self.pending_signals:
            sig = self.pending_signals.pop(0)
            if sig in STOP_SIGNALS:
                self.begin_stop(STOP_SIGNALS[sig], signal.Signals(sig).name)
            elif sig == signal.SIGHUP:
                self.reload("SIGHUP")
            elif sig == signal.SIGUSR1:
                reopen_logs(self.opts, self.log)
                self.loader.reopen_log_files(self.log)   # a --paste file's
            elif sig == signal.SIGUSR2:
                self.begin_upgrade()
            elif sig in RESIZE_SIGNALS:
                resize(self, RESIZE_SIGNALS[sig], signal.Signals(sig).name)

    def reload(self, why):
        """Import the app's modules again, in place: new connections get the
        new code; kept-alive children are told to finish (drain_kept_alive);
        systemd hears RELOADING=1, then READY=1.  Warmed: forkparts/reexec.py."""
        if self.stop_mode:
            return
        if self.warmed or self.sources:   # a framework keeps what it built (--reload: settings)
            return self.reexec.begin(self, why)
        self.log.info("%s: reloading %s" % (why, self.loader.spec))
        sd_notify("RELOADING=1\nMONOTONIC_USEC=%d" % (
            time.clock_gettime_ns(time.CLOCK_MONOTONIC) // 1000))
        try:
            self.app = self.loader.reload()
        except AppLoadError as exc:
            self.log.error("reload failed, still serving the previous code: %s" % exc)
            sd_notify("READY=1")
            return
        self.run_hook("on_reload", self)
        if self.sources:
            self.sources.rescan()
        self.filter.renew_buffer()
        self.plan_children()
        self.freeze_heap()
        flush_stdio()
        forkparts.prewarm.log_reloaded(self.log, self.loader)
        warn_config_changed(self.opts, self.log)
        sd_notify("READY=1")
        self.drain_kept_alive()

    # ------------------------------------------------------------ upgrading (USR2)
    def begin_upgrade(self):
        """SIGUSR2: execute a new parent that inherits the listeners
        (forkparts/upgrade.py); this one serves until it says it is ready."""
        refused = self.upgrade.refusal(self.stop_mode) or self.reexec.refusal()
        if refused:
            self.log.warning("SIGUSR2: upgrade refused: %s" % refused)
            return
        flush_stdio()
        ready_fd = self.upgrade.start(self.listeners.values(), self.child_signals,
                                      HANDLED_SIGNAL_NUMBERS,
                                      lambda: self.run_hook("pre_exec", self))
        if ready_fd is not None:
            self.poller.register(ready_fd, select.POLLIN)

    def upgrade_ready(self):
        """The new parent's pipe spoke: ready (drain and go), or EOF (it died)."""
        if self.upgrade.read_ready(self.poller.unregister):
            self.begin_stop("graceful", "upgrade")

    def relieve_cap(self, now):
        """--keep-alive at --max-children, every CAP_RELIEF_SECONDS while it lasts."""
        if self.stop_mode or len(self.children) < self.admission.cap:
            self.relief_at, self.relief_wake = 0.0, INFINITY   # at once, the next time
            return
        self.relief_at = self.relief_wake = now + CAP_RELIEF_SECONDS
        relieve_cap(self.table, self.listeners, self.admission.cap, self.log)

    def drain_kept_alive(self):
        """--keep-alive: every child closes its connection after the response in
        progress, at once if idle (wsgi_handler.Drain): new code, or a stop."""
        if self.opts.keep_alive:
            self.table.tell_all(signal.SIGHUP)

    # ------------------------------------------------------------ stopping
    def begin_stop(self, mode, why):
        if self.stop_mode:
            self.escalate_stop(mode, why)
            return
        self.stop_mode, self.stop_why = mode, why
        self.log.info("%s: stopping (%s), %d children in flight" % (why, mode, len(self.children)))
        if not self.upgrade.handed_over:   # else the new parent is systemd's MAINPID now
            sd_notify("STOPPING=1")
        self.upgrade.disown(self.listeners.values())
        self.reexec.cancel()
        self.stop_deadline = time.monotonic() + (
            FAST_STOP_SECONDS if mode == "fast" else self.opts.graceful_timeout)
        keep = ()
        if mode == "graceful":   # kept: listeners with a connection half open
            keep = self.filter.drain_backlog(self.listeners.values(), self.opts.backlog)
        self.close_listeners(keep)
        self.filter.stop(mode == "graceful", self.stop_deadline)
        if mode == "fast":
            self.table.terminate_all()
        else:
            self.drain_kept_alive()

    def escalate_stop(self, mode, why):
        if why == "upgrade" or (mode == "graceful" and self.stop_why == "upgrade"):
            self.log.info("%s: already stopping (%s)" % (why, self.stop_mode))   # USR2 step 5:
            self.stop_why = None   # a handover is no stop signal; the next one escalates
        elif self.stop_mode == "graceful":
            self.log.info("%s again: stopping fast" % why)
            self.stop_mode = "fast"
            self.stop_deadline = time.monotonic() + FAST_STOP_SECONDS
            self.close_listeners(self.filter.unsettled(self.listeners.values(), self.opts.backlog,
                                                       wait=False))
            self.filter.refuse_all()
            self.table.terminate_all()
        else:
            self.log.info("%s again: killing %d children" % (why, len(self.children)))
            self.stop_deadline = time.monotonic()

    def close_listeners(self, keep=()):
        """Close the listeners, but those in ``keep``: a graceful stop goes on
        accepting from them while a connection to them is half open."""
        self.set_accepting(False)
        for listener in self.listeners.values():
            if listener not in keep:
                listener.close()
        self.listeners = {listener.fd: listener for listener in keep}
        # A child forked from now on (a parked head, handed over) must not
        # close the listeners' old descriptor numbers: they are closed, or
        # already reused by another socket.
        self.plan_children()

    def stopped(self):
        """True once every child is gone, killing what is left at the deadline."""
        if self.handback is not None and not self.children:
            self.filter.take_back(self.handback)   # what the last children handed back
        if self.listeners:   # kept by begin_stop
            keep = self.filter.unsettled(self.listeners.values(), self.opts.backlog)
            if len(keep) < len(self.listeners):
                self.close_listeners(keep)
        if not self.children and not self.parked and not self.listeners:
            return not self.opts.subreaper or adopted_gone(
                self.adopted_told, self.stop_deadline, self.upgrade.child, self.log)
        if time.monotonic() < self.stop_deadline:
            return False
        if self.parked:
            self.log.warning("stop deadline passed: %d parked requests get 503" % len(self.parked))
            self.filter.refuse_all()
        self.log.warning("stop deadline passed: killing %d children" % len(self.children))
        for pid, status in self.table.kill_all():
            self.child_exited(pid, status)
        return True

    # ------------------------------------------------------------ title, status
    def update_title(self, now):
        self.status.update_title(len(self.children), self.high_water, now)

    def write_status(self):
        """--status-file: the parent's own counts for scripts/watch_children.py."""
        self.status.write(children=len(self.children), high_water=self.high_water,
                          served=self.served, max_children=self.opts.max_children,
                          parked=len(self.parked), stopping=bool(self.stop_mode))

    def cleanup(self):
        for listener in self.listeners.values():
            listener.close()
        for _ in exited_children():
            pass
        if self.child_plan is not None:   # it got as far as serving
            self.log.repeats_left_out()
            # Forks, not answers: a child may die before it answers (its
            # own warning says so); the access log counts the answers.
            self.log.info("stopped: forked %d %s, one per connection, at most %d at once "
                          "(high-water mark)" % (self.served, "child" if self.served == 1
                                                 else "children", self.high_water))


class Server(Supervisor):
    """The parent: accepts, forks, reaps, supervises.  One instance per process.

    A connection's life in the parent, one loop turn (serve_forever):

        wait()              poll the listeners, the parked connections and the
                            wake-up pipe that signal handlers write to
        accept_from()       accept(); the accept filter's first look
        fork_child()        fork(); the child runs ChildPlan.run() and never
                            returns; the parent records it, closes its copy
        reap_children()     waitpid(-1, WNOHANG) until 0: no zombie is left
        check_deadlines()   --timeout: SIGTERM, then SIGKILL

    The lab's deliberate mistakes are subclasses that override a method or
    a few (forkparts/labs.py), --trace=process one more in front of them
    (forkparts/trace.py); this class is the correct version."""

    def sigchld_handler(self):
        return self.note_sigchld

    def note_sigchld(self, signum, frame):
        self.sigchld_seen = True   # the main loop reaps (reap_children)

    # ------------------------------------------------------------ main loop
    def serve_forever(self):
        """The main loop: wait, then do what is due.

        Every turn's work is behind a cheap test, so the common turns (a
        connection forked, children reaped) call few Python functions.  Each
        function run writes the reference counts of its code and function
        objects; after a fork those pages are shared with the child, and each
        page written costs a copy-on-write fault (docs/performance.md)."""
        self.set_accepting(True)
        admission, status = self.admission, self.status
        while True:
            self.wait()
            if self.pending_signals:
                self.handle_signals()
            # On SIGCHLD, and once more every turn (waitpid's 0 is cheap): a
            # SIGCHLD lost some other way (a hook's handler) is made up here.
            self.reap_children()
            now = time.monotonic()
            if self.table.terminating or now >= self.table.check_at:
                self.table.check_deadlines(now)
            if self.parked:
                self.filter.check()
            if self.stop_mode and self.stopped():
                return
            if self.sources and self.sources.changed():
                self.reload("--reload: %s changed" % self.sources.changed_name)
            if (not self.accepting or self.stop_mode or admission.paused_until
                    or admission.rate or len(self.children) >= admission.cap):
                self.set_accepting(self.may_accept())
                if self.relief_at <= now:   # --keep-alive at the cap
                    self.relieve_cap(now)
            if status.title_dirty and now >= status.title_due:
                self.update_title(now)
            if status.file_dirty:
                self.write_status()

    def wait(self):
        try:
            events = self.poller.poll(max(self.next_timeout() * 1000.0, 0.0))
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
                self.filter.on_readable(fd)
            elif self.handback is not None and fd == self.handback.fileno():
                self.filter.take_back(self.handback)
            elif fd == self.upgrade.ready_fd:
                self.upgrade_ready()

    def next_timeout(self):
        """Seconds until the next thing the loop must do by itself (at most
        MAX_POLL_SECONDS: a wake-up lost anywhere then delays the loop by at
        most that, instead of until the next event)."""
        times = [self.table.check_at, self.table.next_kill(), self.stop_deadline or INFINITY,
                 self.admission.paused_until or INFINITY, self.relief_wake]
        if self.parked or self.stop_mode:
            times.append(self.filter.next_deadline())
        if self.sources:
            times.append(self.sources.next_check)
        if self.status.title_dirty:
            times.append(self.status.title_due)
        if self.status.file_dirty:
            times.append(self.status.next_write())
        return min(min(times) - time.monotonic(), MAX_POLL_SECONDS)

    def may_accept(self):   # stopping: only listeners close_listeners kept are left
        return (not self.stop_mode or bool(self.listeners)) and self.may_fork()

    def may_fork(self):
        return self.admission.may_fork(len(self.children))

    def set_accepting(self, on):
        if on == self.accepting:
            return
        for fd in self.listeners:
            if on:
                self.poller.register(fd, select.POLLIN)
            else:
                self.poller.unregister(fd)
        self.accepting = on

    # ------------------------------------------------------------ accept, fork, close
    def accept_from(self, listener):
        """Accept until the backlog is empty or the turn's ACCEPT_BUDGET_SECONDS
        are spent, forking a child for each connection whose request is ready."""
        admission, first_look = self.admission, self.opts.accept_filter
        budget_end = time.monotonic() + ACCEPT_BUDGET_SECONDS
        while True:
            if ((self.stop_mode or admission.paused_until or admission.rate
                    or len(self.children) >= admission.cap) and not self.may_accept()):
                return
            if self.sigchld_seen:
                # Reap between accepts: under a burst the backlog never empties,
                # and children that already answered would otherwise stay
                # zombies, counted against --max-children, until it does.
                self.reap_children()
            try:
                sock, addr = listener.accept()
            except (BlockingIOError, InterruptedError):
                return
            except OSError as exc:
                self.accept_failed(exc)
                return
            now = time.monotonic()
            data = self.filter.first_look(sock, addr, now) if first_look else b""
            if data is not None and admission.per_ip_limit and admission.over_ip_limit(addr):
                self.log.limited("over --max-children-per-ip", "warning",
                                 "client %s: over --max-children-per-ip %d; 503" % (
                                     format_addr(addr), admission.per_ip_limit))
                refuse(sock, 503)
            elif data is not None:
                self.fork_child(sock, addr, data, now)
            if now >= budget_end or self.pending_signals or not listener.pending(0):
                return   # the turn's time spent, a signal waiting, or the backlog empty

    def accept_failed(self, exc):
        if exc.errno in (errno.ECONNABORTED, errno.EPROTO):
            return
        self.log.limited("accept() failed", "error", "accept() failed: %s; pausing %.1fs" % (
            os.strerror(exc.errno), ACCEPT_BACKOFF_SECONDS))
        self.admission.pause(ACCEPT_BACKOFF_SECONDS)

    def fork_child(self, sock, addr, data, accepted_at):
        """Fork a child for the connection, then close the parent's copy of it.
        Returns the child's pid (0 if fork() failed)."""
        if self.flush_before_fork:
            if "pre_fork" in self.hooks:
                self.run_hook("pre_fork", self, Worker(None, self.pid, self.served + 1,
                                                       self.log, self.cfg, self.opts.timeout))
            flush_stdio()
        # Read here, not in the child's branch below: code that runs only in a
        # child is never specialized, so each attribute read there would look
        # its name up again and write pages every child copies.
        run_child, parked = self.run_child, self.parked
        # Blocked across fork: a signal in the child before it resets its
        # handlers would write to the parent's wake-up pipe.
        self.sigmask(SIG_BLOCK, HANDLED_SIGNAL_NUMBERS)
        try:
            pid = os.fork()
        except OSError as exc:
            self.sigmask(SIG_UNBLOCK, HANDLED_SIGNAL_NUMBERS)
            self.fork_failed(sock, addr, exc)
            return 0
        if pid == 0:   # the child: ChildPlan.run, which never returns
            run_child(sock, addr, data, accepted_at, parked)
        span = self.deadline_span   # one object read: each costs the parent a page
        self.table.add(pid, addr, accepted_at, accepted_at + span if span else 0.0)
        if self.admission.counts_forks:
            self.admission.forked(addr)
        self.served += 1
        if self.flush_before_fork:   # hooks: child_exit's worker.age
            self.children[pid].age = self.served
        self.high_water = max(self.high_water, len(self.children))
        self.status.title_dirty = True
        self.sigmask(SIG_UNBLOCK, HANDLED_SIGNAL_NUMBERS)
        self.close_client(sock)
        return pid

    # The child has its own copy of the client socket; the parent's must go
    # (lab 3 shows what happens if it stays).  This is sock.close() without
    # socket.py's two Python frames: socket.SocketType.close, the C close.
    close_client = staticmethod(close_socket)

    def fork_failed(self, sock, addr, exc):
        self.log.limited("fork() failed", "error",
                         "fork() failed: %s; answering %s with 503 and pausing %.1fs" % (
                             os.strerror(exc.errno), format_addr(addr), FORK_BACKOFF_SECONDS))
        refuse(sock, 503)
        self.admission.pause(FORK_BACKOFF_SECONDS)

    # ------------------------------------------------------------ the child's plan
    def plan_children(self):
        """The plan every child runs (ChildPlan.run), remade after each reload."""
        opts = self.opts
        signals = self.child_signals
        if opts.keep_alive:   # SIGHUP: finish the response, then close (Drain)
            signals = tuple((sig, Drain.note if sig == signal.SIGHUP else handler)
                            for sig, handler in signals)
        self.use_plan(ChildPlan(
            serve_connection, self.app, self.handler_config, tuple(signals),
            blocked=HANDLED_SIGNAL_NUMBERS, close_fds=self.child_closes(),
            alarm=opts.timeout if opts.timeout and not opts.keep_alive else 0,
            limits=opts if opts.limit_memory or opts.limit_cpu else None,
            post_fork=self.child_start if CHILD_HOOKS.intersection(self.hooks) else None,
            child_end=self.child_end if "worker_exit" in self.hooks else None,
            setups=self.child_setups(), log=self.log, marks=self.exit_marks,
            set_handler=self.set_handler, sigmask=self.sigmask))

    def use_plan(self, plan):
        """The children's plan, and its run bound once for fork_child."""
        self.child_plan, self.run_child = plan, plan.run

    def parent_fds(self):
        fds = (self.wake_r, self.wake_w)
        return fds + (self.handback.fileno(),) if self.handback is not None else fds

    def child_closes(self):
        """The descriptors a child closes at once: the parent's, and the
        listeners (the socket objects are never used there)."""
        return self.parent_fds() + tuple(self.listeners)

    def child_setups(self):
        """What a child runs before it may receive a signal: the parent-death
        signal, and, forked while stopping with --keep-alive, the Drain notice
        (one response, then close)."""
        setups = (self.die_with_parent(),)
        if self.opts.keep_alive:
            setups += (restart_after_sighup,)
        if self.stop_mode and self.opts.keep_alive:
            setups += (Drain.drain_now,)
        return tuple(setup for setup in setups if setup is not None)

    def die_with_parent(self):
        """The child's PR_SET_PDEATHSIG set-up, or None (lab 12 shows why)."""
        return parent_death_signal(os.getpid())

    # ------------------------------------------------------------ reaping
    def reap_children(self):
        """Reap every child that has exited: exited_children() calls
        waitpid(-1, WNOHANG) until it returns 0 or ECHILD, so one SIGCHLD for
        many exits (signals do not queue) still leaves no zombie."""
        self.sigchld_seen = False
        children, marks = self.children, self.exit_marks
        for pid, status in exited_children():
            # A clean exit of a child nobody waits on needs no more than
            # forgetting it; the rest goes through child_exited.
            if (status == 0 and self.plain_exits and not self.table.terminating and pid in children
                    and pid < len(marks) and marks[pid]):
                marks[pid] = 0
                del children[pid]
                self.status.title_dirty = True
            else:
                self.child_exited(pid, status)

    def child_exited(self, pid, status):
        child = self.table.forget(pid)
        marks = self.exit_marks
        ours = pid >= len(marks) or marks[pid]   # see exit_marks
        if pid < len(marks):
            marks[pid] = 0
        if child is None:
            if (self.upgrade.child_exited(pid, status)   # the new parent of a USR2
                    or self.reexec.trial_exited(self, pid, status)):   # a HUP's trial
                return
            # Not ours: as PID 1 or a subreaper we adopt orphans.  Reap quietly.
            self.log.debug("reaped unknown process %d: %s" % (pid, describe_status(status)))
            return
        self.admission.count_ip(child.addr, -1)
        self.table.log_exit(child, status, ours, bool(self.stop_mode))
        if "child_exit" in self.hooks:
            self.run_hook("child_exit", self, Worker(pid, self.pid, child.age, self.log,
                                                     self.cfg, self.opts.timeout, status))
        self.status.title_dirty = True


def build_handler_config(opts, log, set_title, listeners, handback=None,
                         request_hooks=(None, None)):
    first = next(iter(listeners.values()), None)
    host, port = "localhost", "80"
    if first is not None and first.description.startswith("http://"):
        host, _, port = first.description[7:].rpartition(":")
        host = host.strip("[]")
    limits = Limits(
        request_line=opts.limit_request_line, fields=opts.limit_request_fields,
        field=opts.limit_request_field_size, head=opts.limit_request_head,
        body=opts.max_body, chunk_line=opts.limit_chunk_line)
    return HandlerConfig(
        limits=limits, server_name=host, server_port=port,
        header_timeout=opts.header_timeout, read_timeout=opts.read_timeout,
        min_body_rate=opts.min_body_rate,
        keep_alive=opts.keep_alive, max_requests=opts.max_requests_per_connection,
        request_timeout=opts.timeout if opts.keep_alive else 0.0,
        close_delimited=opts.lab_parent_keeps_client, trace="http" in opts.trace,
        forwarded=ProxyTrust(opts.forwarded_allow_ips, opts.forwarded_headers),
        handback=handback,
        set_title=set_title, title_query=opts.title_with_query, log=log,
        proc_name=opts.proc_name, pre_request=request_hooks[0],
        post_request=request_hooks[1], script_name=script_name()).freeze()


def warm_up(server):
    """The warm-up (forkparts.prewarm; --prewarm, --no-prewarm) through the
    child's entry point; its trial child puts back the handlers a child does,
    and runs the post_fork hook if the app left something open.  True if
    the parent was warmed."""
    if server.opts.reload and server.opts.prewarm is None:
        server.log.info("--reload: no warm-up unless --prewarm PATH asks for one, so every "
                        "edit is served as written (a warmed framework keeps what it built)")
        return False

    def post_fork():
        server.run_hook("post_fork", server, worker_for_child(server, 0))
    return server.reexec.warm_up(lambda hurry: forkparts.prewarm.warm_up(
        serve_connection, server.app, server.handler_config, server.opts.prewarm, server.log,
        server.child_signals, post_fork if "post_fork" in server.hooks else None, hurry))


def main(argv=None):
    carried = Carried.from_environ()   # a HUP executed this process (forkparts/reexec.py)
    return carried.run_start(start, argv) if carried else start(argv, None)


def start(argv, carried):
    with reading_options(carried):   # a HUP's new code: its usage errors to the old log too
        opts, hooks = parse_options(argv)
    if opts.print_config:
        sys.stdout.write(effective_settings(opts, hooks))
        sys.stderr.writelines("forkserver: warning: %s\n" % w for w in opts.config_warnings)
        return EXIT_OK
    if opts.check_config or TRIAL_ENV in os.environ:
        return check_config(opts, os.environ.pop(TRIAL_ENV, None))
    try:
        start_signals = StartSignals()   # a stop signal from here on ends the start cleanly
        start_signals.carry(carried.pending if carried else ())   # a HUP's exec: noted before
        log = open_logs(opts)
        if carried:   # its errors go to the error log too, with the reload's own lines
            carried.log = log
        for note in opts.config_notes:
            log.info(note)
        for warning in opts.config_warnings:
            log.warning(warning)
        apply_env(opts)
        setup_paths(opts)
        return run(opts, hooks, log, start_signals, carried)
    except StopBeforeReady as exc:   # docker stop during a slow import, even as PID 1
        return last_word("forkserver: %s\n" % exc, EXIT_OK, carried)
    except UsageError as exc:
        return last_word("forkserver: error: %s\n" % exc, EXIT_USAGE, carried)
    except AppLoadError as exc:
        return last_word("forkserver: error: cannot load app %r: %s\n" % (app_name(opts), exc),
                         EXIT_APP_LOAD, carried)
    except ListenError as exc:
        return last_word("forkserver: error: %s\n" % exc, EXIT_LISTEN, carried)
    except OSError as exc:
        if exc.errno not in (errno.EMFILE, errno.ENFILE):
            raise
        # The loop answers EMFILE at accept() itself; this is most often a
        # start under a limit so low that the parent's own descriptors do not
        # fit (or a hook that ran out of them: either way, one clear line).
        sys.stderr.write("forkserver: error: out of file descriptors: %s (ulimit -n is %d)\n"
                         % (exc, resource.getrlimit(resource.RLIMIT_NOFILE)[0]))
        return EXIT_FAILURE


def open_logs(opts):
    absolute_log_paths(opts)
    try:
        log = (HttpTraceLog if "http" in opts.trace else Log)(
            error_fd=open_log(opts.error_log, 2), access_fd=open_log(opts.access_log, 1),
            level=opts.log_level, access_format=opts.access_log_format)
    except OSError as exc:
        raise UsageError("cannot open log file %r: %s" % (exc.filename, exc.strerror)) from None
    if opts.capture_output:
        capture_output(log)
    return log


def check_config(opts, trial=None):
    """--check-config: the config is read (parse_options); load the app and
    look at what a start would open, bind, write and become, without doing
    any of it; say what is wrong, each in a start's words, and exit with the
    status a start would (its first problem's): 0, 2, 3 or 4.  ``trial``: a
    HUP's trial (forkparts/reexec.py), which must load the app within that
    many seconds, and says nothing if it is OK; the server is its parent."""
    problems = log_file_problems(opts)
    if trial:   # the server's sockets, not for the app's subprocesses: taken first
        signal.alarm(signal.alarm(0) or int(trial))   # start_trial's, counting since the exec
        inherited = Inherited.from_environ(opts.backlog)
    try:
        apply_env(opts)
        setup_paths(opts)
        app = app_loader(opts).load()
        if trial:   # what only a request finds (a view that does not compile), and binds
            problems += trial_problems(opts, app, build_handler_config(opts, Log(), None, {}),
                                       serve_connection, inherited)
    except (UsageError, AppLoadError) as exc:
        problems.append(exc)
    problems += start_problems(opts, os.getppid() if trial else None)   # after --chdir
    if not trial:
        sys.stderr.writelines("forkserver: warning: %s\n" % w for w in opts.config_warnings)
    say = Log().error if trial else lambda text: sys.stderr.write("forkserver: error: %s\n" % text)
    for problem in problems:   # a trial's: stamped, with its pid, in the server's error log
        say("cannot load app %r: %s" % (app_name(opts), problem)
            if isinstance(problem, AppLoadError) else str(problem))
    if problems:
        return {AppLoadError: EXIT_APP_LOAD, ListenError: EXIT_LISTEN}.get(
            type(problems[0]), EXIT_USAGE)
    if not trial:
        sys.stdout.write("forkserver: config OK: app %s loads%s (not tried: binding the "
                         "addresses, the warm-up request)\n" % (
                             app_name(opts),
                             " with config file %s" % opts.config if opts.config else ""))
    return EXIT_OK


def run(opts, hooks, log, start_signals, carried=None):
    inherited = Inherited.from_environ(opts.backlog)   # a SIGUSR2 upgrade's sockets
    loader = app_loader(opts)
    app = loader.load()
    # Binds (or takes what it inherited), writes the pidfile, drops privileges.
    listeners = open_listeners(opts, inherited)
    try:
        configure_accel(opts, log, listeners)   # the tricks' switches and version gates
        warn_after_dropping(opts, log, listeners)
        if opts.subreaper:
            try:
                become_subreaper()
            except OSError as exc:
                raise UsageError(str(exc)) from None
        server = traced(opts, server_class(opts, Server))(opts, loader, app, listeners, log, hooks)
        server.upgrade.inherited, server.reexec.carried = inherited, carried
        server.start_signals = start_signals   # prepare() takes over from them
        del app   # the server holds it; a reload must be able to free the first one
    except BaseException:
        for listener in listeners:
            listener.close()
        if opts.pidfile:
            remove_pidfile(opts.pidfile)
        raise
    try:
        if not carried:   # a HUP's exec runs on_reload once it has adopted (reexec.py)
            server.run_hook("on_starting", server)
        check_room_to_accept()   # EMFILE: main's one line, not a server that never serves
        server.prepare()
        announce(server, listeners)
        server.serve_forever()
    finally:
        server.cleanup()
        if opts.pidfile:
            remove_pidfile(opts.pidfile)
            remove_pidfile(opts.pidfile + OLDBIN_SUFFIX)   # ours after a SIGUSR2
        if opts.status_file:
            remove_pidfile(opts.status_file)   # a stale status would lie
        server.run_hook("on_exit", server)
    return EXIT_OK


def announce(server, listeners):
    line = READY_LINE.format(pid=os.getpid(),
                             addresses=" ".join(l.description for l in listeners))
    log = server.log   # the original stdout, even under --capture-output
    start = not server.reexec.carried   # a HUP's exec logs "reloaded" (reexec.adopt) instead
    if start:   # of the ready line and when_ready: once per pid, as gunicorn's
        os.write(log.ready_fd, (line + "\n").encode())
    if log.ready_fd != 1:
        os.close(log.ready_fd)
        log.ready_fd = 1
    sd_notify("READY=1\nMAINPID=%d" % os.getpid())
    if start:
        server.run_hook("when_ready", server)
    server.upgrade.tell_ready()   # started by SIGUSR2: the old parent may go


if __name__ == "__main__":
    sys.exit(main())
