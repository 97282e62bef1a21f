"""SIGHUP in a warmed parent: the same process executes itself afresh.

DESIGN note.  A HUP reloads in place where that is sound: the app's own
modules are imported again in the parent, and new connections get the new
code (Supervisor.reload).  A warmed parent ran the app's first request
(forkparts/prewarm.py), and a framework keeps what it built then in its own
modules, which an in-place reload does not import again: Django's URL
resolver keeps the old views.  So a warmed parent reloads as gunicorn's
workers do, in a fresh interpreter, and keeps its pid (gunicorn's HUP does;
systemd, a pidfile and a supervisor that watches the pid go on as before):

1. The trial.  The same command line runs with FORKSERVER_TRIAL set: it
   reads the options and the config file again and loads the app, then
   exits (0, or a start's status, its error on the error log).  The parent
   serves the old code meanwhile; the trial is its child, reaped by the
   loop (trial_exited).  A failed trial changes nothing: "reload failed,
   still serving the previous code", as an in-place reload says.
2. The exec.  The parent blocks the signals it handles (they wait, pending,
   across execve until the new code's handlers are in: Reexec.adopt), lets
   its listening sockets, --keep-alive's hand-back socket pair and the
   connections the accept filter holds stay open across exec, writes down
   the live children and the held connections' bytes (Carried), and
   executes the command line again, from the directory it was started in.
   Connections that arrive meanwhile wait in the listeners' backlog.
3. The new code starts as any start does (options, app, warm-up), takes
   the listeners it inherits as a USR2's new parent does
   (forkparts/upgrade.py, Inherited), and adopts what was carried: the
   children are its own (the same pid), timed out as before, reaped and
   counted; the held connections are held again.  If that start fails, it
   waits for the carried children to finish (--graceful-timeout) before
   it exits, since they die with it (PR_SET_PDEATHSIG).

A child of the old code marks its exit in the old exit marks
(children.exit_marks), which the new code cannot read: an adopted child's
exit is taken as forkserver's own.
"""

import contextlib
import os
import re
import signal
import socket
import stat
import struct
import sys
import tempfile
import time

from forkparts.acceptfilter import BODY_INCOMPLETE, READY
from forkparts.apps import AppLoadError
from forkparts.children import flush_stdio
from forkparts.cli import DEFAULT_BIND, USAGE_ERROR_ECHOES
from forkparts.listeners import ListenError, open_listener, sd_notify
from forkparts.logs import Log, restore_original_stdio
from forkparts.prewarm import new_code_failure
from forkparts.startsignals import STOP as STOP_SIGNALS
from forkparts.privileges import names_us, remove_pidfile
from forkparts.upgrade import (EXEC_FAILED_STATUS, FDS_ENV, LAUNCH_DIR, OLD_PID_ENV,
                               START_ENVIRON, command_line, describe_exit, listener_env)

REEXEC_ENV = "FORKSERVER_REEXEC"          # "why|served|high water|graceful timeout"
CARRIED_ENV = "FORKSERVER_CARRIED_FD"     # a file: the children, then the held connections
HANDBACK_ENV = "FORKSERVER_HANDBACK_FDS"  # "parent,child": --keep-alive's socket pair
PIDFILE_ENV = "FORKSERVER_OLD_PIDFILE"    # the old code's --pidfile, made absolute
ERROR_FD_ENV = "FORKSERVER_ERROR_FD"      # the old code's error log, until the new one's opens
TRIAL_ENV = "FORKSERVER_TRIAL"            # seconds the trial has to load the app
TRIAL_SECONDS = 120                       # then SIGALRM ends it (a hung import)
# One held connection: its fd, accepted_at, deadline, idle, state, bytes held.
HELD_RECORD = struct.Struct("<iddBBI")
OUTLIVE_POLL_SECONDS = 0.05


class Reexec:
    """A HUP's trial and exec, in the old code; what it carried, in the new."""

    def __init__(self, log, blocked, exit_names, carried=None):
        self.log, self.blocked, self.exit_names = log, blocked, exit_names
        self.carried = carried
        self.trial = None      # the trial's pid, while it runs
        self.why = None
        self.again = False     # another HUP came during the trial

    def begin(self, server, why):
        """A reload of a warmed parent: start the trial."""
        if server.upgrade.child:   # its exec would orphan the new parent's handover
            self.log.info("%s: not reloading: an upgrade is under way (new parent %d), which "
                          "loads the new code" % (why, server.upgrade.child))
            return
        if self.trial is not None:
            self.again = True
            self.log.info("%s: a reload is under way (trial %d); another trial follows it"
                          % (why, self.trial))
            return
        self.why = why
        self.log.info("%s: reloading %s: the new code is tried in a fresh interpreter, then "
                      "this parent (pid %d) executes it" % (why, server.loader.spec, server.pid))
        sd_notify("RELOADING=1\nMONOTONIC_USEC=%d" % (
            time.clock_gettime_ns(time.CLOCK_MONOTONIC) // 1000))
        pid = start_trial(server.log.error_fd, server.sigmask, self.blocked,
                          list(server.listeners.values()))
        if pid > 0:
            self.trial = pid
        else:
            self.failed("cannot fork the trial: %s" % os.strerror(-pid))

    def refusal(self):
        """Why a SIGUSR2 cannot upgrade now (a HUP's trial runs), or None."""
        if self.trial is not None:
            return "a reload is under way (trial %d)" % self.trial
        return None

    def failed(self, why):
        self.log.error("reload failed, still serving the previous code: %s" % why)
        sd_notify("READY=1")

    def trial_exited(self, server, pid, status):
        """Was ``pid`` the trial?  Then exec the new code, or say why not."""
        if self.trial is None or pid != self.trial:
            return False
        self.trial = None
        try:
            os.killpg(pid, signal.SIGKILL)   # what the app started at import or warm-up
        except OSError:
            pass   # none left
        if server.stop_mode:
            return True
        if self.again:   # a HUP came during it: the code may have changed again since
            self.again = False
            self.log.info("%s: the trial %s, but a HUP came during it: the code as it is now "
                          "gets a trial of its own" % (self.why, describe_exit(
                              status, self.exit_names)))
            self.begin(server, self.why)
        elif os.WIFEXITED(status) and os.WEXITSTATUS(status) == 0:
            self.execute(server)
        elif os.WIFSIGNALED(status) and os.WTERMSIG(status) == signal.SIGALRM:
            self.failed("the new code's trial had not loaded the app after %ds" % TRIAL_SECONDS)
        else:
            self.failed("the new code's trial %s (its error is above)" % describe_exit(
                status, self.exit_names))
        return True

    def cancel(self):
        """Stopping: the trial goes (it is our child)."""
        if self.trial is not None:   # with what the app started in it (its group)
            for kill in (os.killpg, os.kill):
                try:
                    return kill(self.trial, signal.SIGKILL)
                except OSError:
                    pass

    def execute(self, server):
        """Step 2 of the DESIGN note; returns only if it could not exec
        (logged, and undone: the old code serves on)."""
        server.drain_kept_alive()   # their idle connections come back to the pair we keep
        try:
            env, keep, carried = self.carry(server)
        except OSError as exc:   # the directory gone (a deleted release), no fd left
            return self.failed("cannot write down what the new code takes over: %s" % exc)
        server.sigmask(signal.SIG_BLOCK, self.blocked)   # until the new start's handlers
        flush_stdio()
        try:
            for fd in keep:
                os.set_inheritable(fd, True)
            restore_original_stdio()   # --capture-output: the new code captures again
            if LAUNCH_DIR:
                os.chdir(LAUNCH_DIR)   # by name: a switched symlink is the new release
            os.execve(sys.executable, command_line(), env)
        except OSError as exc:
            self.exec_failed(server, keep, carried, exc)

    def carry(self, server):
        """(the new code's environment, the fds it keeps, the carried file)."""
        listeners = list(server.listeners.values())
        keep = [l.fd for l in listeners]
        # The signals noted but not yet handled, and those the server was
        # started with ignored (nohup's HUP): the new start takes both over.
        signals = "%s;%s" % (",".join(str(int(sig)) for sig in server.pending_signals),
                             ",".join(str(int(sig)) for sig, handler in
                                      server.start_signals.original.items()
                                      if handler == signal.SIG_IGN))
        env = dict(START_ENVIRON, **listener_env(listeners), **{   # LISTEN_PID: still us
            REEXEC_ENV: "%s|%d|%d|%s|%s" % (self.why, server.served, server.high_water,
                                            server.opts.graceful_timeout, signals)})
        if server.opts.pidfile:
            env[PIDFILE_ENV] = os.path.abspath(server.opts.pidfile)
        old = server.upgrade.inherited.old_pid
        if old and os.getppid() == old:   # a USR2's new parent, the old one draining
            env[OLD_PID_ENV] = str(old)
        if server.log.error_fd not in (None, 1, 2):   # Carried.say, before the new log opens
            env[ERROR_FD_ENV] = str(server.log.error_fd)
            keep.append(server.log.error_fd)
        if server.handback is not None:
            pair = (server.handback.fileno(), server.handler_config.handback.fileno())
            env[HANDBACK_ENV] = "%d,%d" % pair
            keep += pair
        carried = write_carried(server.children.values(), server.parked,
                                [os.path.abspath(l.unix_path) for l in listeners
                                 if l.unix_path])
        env[CARRIED_ENV] = str(carried)
        return env, keep + list(server.parked) + [carried], carried

    def exec_failed(self, server, keep, carried, exc):
        for fd in keep:
            os.set_inheritable(fd, False)
        os.close(carried)
        if server.opts.capture_output and server.log.error_fd not in (None, 1, 2):
            for fd in (1, 2):
                os.dup2(server.log.error_fd, fd)
        if LAUNCH_DIR and server.opts.chdir:
            try:
                os.chdir(server.opts.chdir)
            except OSError:
                pass   # the new code would have entered it again; the old stays where it is
        server.sigmask(signal.SIG_UNBLOCK, self.blocked)
        self.failed("cannot execute %s: %s" % (sys.executable, exc))

    # ------------------------------------------------------------ in the new code
    def carried_pair(self):
        """--keep-alive's socket pair of the code before, whose children may
        still hand connections back on it; None if there is none."""
        return self.carried.handback if self.carried else None

    def adopt(self, server):
        """In the parent a HUP executed: the children and held connections
        of the old code are ours now."""
        carried = self.carried
        if carried is None:
            return
        marks = server.exit_marks
        for pid, addr, started, deadline, age in carried.children:
            server.table.add(pid, addr, started, deadline)
            server.children[pid].age = age
            server.admission.count_ip(addr, 1)
            if pid < len(marks):
                marks[pid] = 1   # its mark is in the old code's map: taken as ours
        server.served, server.high_water = carried.served, carried.high_water
        for held in carried.held:
            hold_again(server, *held)
        old = carried.old_pidfile
        if old and old != os.path.abspath(server.opts.pidfile or "") and names_us(old):
            remove_pidfile(old)   # the config file names another now: one pidfile, ours
        carried.adopted = True
        carried.close_error_fd()   # the new code's own log serves from here
        if not server.warmed and not server.sources:
            server.log.warning("the new code is not warmed (the warm-up's line above says why): "
                               "a HUP now reloads its modules in place, without a trial; "
                               "USR2 or a restart warms it again (docs/operations.md, "
                               "Reloading)")
        server.log.info("%s: reloaded %s in a fresh interpreter, pid %d kept; children of "
                        "the previous code still serving: %d" % (
                            carried.why, server.loader.spec, server.pid,
                            len(carried.children)))
        server.run_hook("on_reload", server)   # the config file's as read now, as gunicorn's

    def warm_up(self, warm):
        """The new code's warm-up: ``warm(hurry)``, whose explicit --prewarm
        PATH stops a start that fails it (exit 3).  After a HUP's exec there
        is no old code to go back to, so it is a warning and no warm-up; and
        clients wait in the backlog meanwhile, so the passes hurry."""
        try:
            return warm(self.carried is not None)
        except AppLoadError as exc:
            if not self.carried:
                raise
            self.log.warning("the warm-up of the new code failed: %s; serving it unwarmed"
                             % exc)
            return False


def hold_again(server, sock, accepted_at, deadline, idle, state, data):
    """A connection the old code held, held by the new code as it was: its
    deadline, and a body's rate clock from its head (the deadline is
    head_at + grace + received / rate: Parked.body_progress)."""
    try:
        addr = sock.getpeername()
    except OSError:
        return sock.close()   # gone meanwhile
    opts = server.opts
    if state == BODY_INCOMPLETE and not server.filter.bodies:
        state = READY   # --min-body-rate 0 now: no body is held, a child reads the rest
    server.filter.park(sock, addr, data, accepted_at, state, idle=bool(idle))
    parked = server.parked[sock.fileno()]
    parked.deadline = deadline
    if state == BODY_INCOMPLETE:   # its clock restarted at the exec: a slow body cut early
        parked.head_at = deadline - opts.header_timeout - (
            len(data) - parked.head_end) / opts.min_body_rate
    if state == READY:   # waits for a free child, not for bytes (AcceptFilter.release)
        server.poller.unregister(sock.fileno())


def start_trial(error_fd, sigmask, blocked, listeners):
    """Fork and execute the trial: the same command line, from the directory
    the server was started in, its stderr the error log, the listeners open
    (an fd:// address is checked).  Its pid, or -errno if fork() failed.
    No subprocess: after --user the parent may not read the standard
    library, so it imports nothing it has not imported at start."""
    sigmask(signal.SIG_BLOCK, blocked)   # as at every fork: the wake-up pipe is ours
    try:
        pid = os.fork()
    except OSError as exc:
        pid = -(exc.errno or 1)
    if pid == 0:   # the child
        try:
            os.setpgid(0, 0)   # its own group: what the app starts in it is ended with it
            signal.set_wakeup_fd(-1)
            null = os.open(os.devnull, os.O_RDWR)
            for fd, to in ((null, 0), (null, 1), (error_fd if error_fd is not None else null, 2)):
                os.dup2(fd, to)
            for listener in listeners:
                os.set_inheritable(listener.fd, True)
            if LAUNCH_DIR:
                os.chdir(LAUNCH_DIR)
            sigmask(signal.SIG_UNBLOCK, blocked)
            signal.alarm(TRIAL_SECONDS)   # kept across exec: the config file is timed too
            os.execve(sys.executable, command_line(),
                      dict(START_ENVIRON, **listener_env(listeners),
                           **{TRIAL_ENV: str(TRIAL_SECONDS)}))
        except BaseException as exc:   # noqa: BLE001 - nothing may return into the loop
            os.write(2, ("forkserver: the reload's trial cannot start: %s\n" % exc).encode())
        finally:
            os._exit(EXEC_FAILED_STATUS)
    if pid > 0:
        try:
            os.setpgid(pid, pid)   # here too, so cancel() finds the group at once
        except OSError:
            pass   # the child did it, and may have executed since
    sigmask(signal.SIG_UNBLOCK, blocked)
    return pid


def trial_problems(opts, app, config, serve, inherited):
    """In the trial, beyond loading the app: its warm-up request (a failure
    there would stop the new code's start, or serve a view that does not
    compile), and the --bind addresses the new code would bind rather than
    inherit (a port taken, or one that needs root), bound and let go.  The
    errors, as a start's (AppLoadError: status 3; ListenError: 4).  ``serve``:
    the child's front door, handed in (no room imports wsgi_handler)."""
    problems = []
    failure = new_code_failure(serve, app, config, opts.prewarm)
    if failure:
        problems.append(AppLoadError(failure))
    taken = []
    if not (os.environ.get("LISTEN_FDS") and not opts.bind):
        for address in opts.bind or [DEFAULT_BIND]:
            taken.append(inherited.take(address))
            if taken[-1] is None:
                try:
                    open_listener(address, opts.backlog, opts.umask, opts.header_timeout).close()
                except ListenError as exc:
                    problems.append(exc)
    for listener in inherited.sockets + [l for l in taken if l is not None]:
        listener.sock.detach()   # the server's: left open (an fd:// is checked again)
    return problems


def child_record(child):
    addr = child.addr if isinstance(child.addr, tuple) else ("-", 0)
    return "%d %r %r %d %s %d" % (child.pid, child.started, child.deadline, child.age,
                                  addr[0], addr[1])


def write_carried(children, parked, unix_paths=()):
    """The children (a line of child_record, comma-separated), the unix
    socket files of ours (a line, NUL-separated) and the held connections
    (HELD_RECORD and bytes) into an unlinked file; its fd.  A file, not the
    environment: execve refuses a string over 128 KiB."""
    if hasattr(os, "memfd_create"):
        fd = os.memfd_create("forkserver-carried")
    else:
        with tempfile.TemporaryFile() as f:
            fd = os.dup(f.fileno())
    chunks = [",".join(child_record(c) for c in children).encode() + b"\n",
              "\0".join(unix_paths).encode() + b"\n"]
    for sock_fd, held in parked.items():
        chunks.append(HELD_RECORD.pack(sock_fd, held.accepted_at, held.deadline,
                                       bool(held.idle), held.state, len(held.data)))
        chunks.append(bytes(held.data))
    data = b"".join(chunks)
    written = 0
    while written < len(data):
        written += os.write(fd, data[written:])
    os.lseek(fd, 0, os.SEEK_SET)
    return fd


def read_carried(fd):
    """(children, unix socket files, held connections) from write_carried's file."""
    with os.fdopen(fd, "rb") as f:
        data = f.read()
    line, _, data = data.partition(b"\n")
    children = [parse_child(text) for text in line.decode().split(",") if text]
    paths, _, data = data.partition(b"\n")
    unix_paths = [path for path in paths.decode().split("\0") if path]
    held, at = [], 0
    while at < len(data):
        sock_fd, accepted_at, deadline, idle, state, size = HELD_RECORD.unpack_from(data, at)
        at += HELD_RECORD.size
        os.set_inheritable(sock_fd, False)
        held.append((socket.socket(fileno=sock_fd), accepted_at, deadline, idle, state,
                     data[at:at + size]))
        at += size
    return children, unix_paths, held


@contextlib.contextmanager
def reading_options(carried):
    """A HUP's new code reads its options and config file before its log is
    open: a usage error that ends the start (exit 2: a config file that
    fails now) goes to the old code's error log too, not to stderr alone."""
    def echo(text):
        carried.say(text, stderr=False)
    if carried:
        USAGE_ERROR_ECHOES.append(echo)
    try:
        yield
    finally:
        if carried:
            USAGE_ERROR_ECHOES.remove(echo)


def last_word(text, code, carried=None):
    """A start's error line, and its exit status: for a HUP's new code in
    the error log too (Carried.say)."""
    if carried:
        carried.say(text, error=code != 0)
    else:
        sys.stderr.write(text)
    return code


class Carried:
    """What a HUP's exec left us (read once from the environment, which is
    then cleaned: the app and our children never see it)."""

    def __init__(self, why, served, high_water, graceful, children=(), handback=None,
                 held=()):
        self.why, self.served, self.high_water = why, served, high_water
        self.graceful, self.children = graceful, list(children)
        self.handback, self.held = handback, list(held)
        self.adopted, self.old_pidfile, self.unix_paths, self.pending = False, None, [], []
        self.log = None   # the new code's, once its start has opened it (say)
        self.error_fd = None   # the old code's error log, until then

    @classmethod
    def from_environ(cls):
        """None unless a HUP executed this process."""
        reexec, carried, handback, old_pidfile, error_fd = [
            os.environ.pop(name, None)
            for name in (REEXEC_ENV, CARRIED_ENV, HANDBACK_ENV, PIDFILE_ENV, ERROR_FD_ENV)]
        if reexec is None:
            return None
        why, served, high_water, graceful, signals = reexec.rsplit("|", 4)   # why: any text
        pending, _, ignored = signals.partition(";")
        for sig in numbers(ignored):   # as the server was started: the start leaves them so
            signal.signal(sig, signal.SIG_IGN)
        pairs = None
        if handback:
            pairs = [socket.socket(fileno=int(fd)) for fd in handback.split(",")]
            for sock in pairs:
                sock.set_inheritable(False)
        children, unix_paths, held = read_carried(int(carried)) if carried else ([], [], [])
        found = cls(why, int(served), int(high_water), float(graceful), children, pairs, held)
        found.old_pidfile, found.unix_paths = old_pidfile, unix_paths
        if error_fd:
            found.error_fd = int(error_fd)
            os.set_inheritable(found.error_fd, False)
        found.pending = numbers(pending)
        return found

    def say(self, text, error=True, stderr=True):
        """A line of the new code's failed start: on stderr, as any start's,
        and in the error log, where the reload's own lines went (stderr may
        be /dev/null under nohup or a supervisor): the new code's log once
        its start has opened it, the old code's before (a config file that
        fails now).  ``error``: False for a stop, which is no error."""
        if stderr:
            sys.stderr.write(text)
        log = self.log or (self.error_fd is not None and Log(error_fd=self.error_fd))
        if log and log.error_fd not in (1, 2):
            line = re.sub(r"^forkserver: (error: )?", "", text.rstrip("\n"))
            (log.error if error else log.warning)(line)

    def close_error_fd(self):
        if self.error_fd is not None:
            os.close(self.error_fd)
            self.error_fd = None

    def let_go(self):
        """What a stop lets go of: the listening sockets, the held
        connections, our unix socket files and the pidfile."""
        for fd in os.environ.pop(FDS_ENV, "").split(","):   # if run() did not take them
            if fd.isdigit():
                os.close(int(fd))
        for sock, *_ in self.held:
            sock.close()
        for path in self.unix_paths:
            try:
                if stat.S_ISSOCK(os.lstat(path).st_mode):
                    os.unlink(path)
            except OSError:
                pass   # gone, or never ours
        if self.old_pidfile:
            remove_pidfile(self.old_pidfile)   # if it still names us

    def run_start(self, start, argv):
        """The new code's start, ``start(argv, self)``; then, unless it
        adopted what it carried, outlive: its status is a SystemExit's too
        (a bad option or config file, said on stderr by the parser)."""
        code = 1
        try:
            code = start(argv, self)
            return code
        except SystemExit as exc:
            code = exc.code if isinstance(exc.code, int) else 1
            raise
        finally:
            self.outlive(code)

    def outlive(self, code):
        """The new code did not start (exit status ``code``; 0: stopped by a
        signal while it started): its exit would end the carried children
        (PR_SET_PDEATHSIG), so wait for them first, the listening sockets
        closed (a client is refused now, not reset at the exit), and remove
        what a stop removes: the pidfile and our unix socket files."""
        if self.adopted:
            return
        stopped = code == 0
        if self.log is None and not stopped:
            self.say("forkserver: the new code did not start before its error log was open "
                     "(exit status %d)\n" % code)
        self.let_go()
        if not self.children:
            return
        for sig in STOP_SIGNALS:   # a second stop signal: now (the start's handler would raise)
            signal.signal(sig, signal.SIG_DFL)
        left = {pid for pid, *_ in self.children}
        self.say("forkserver: %s; waiting up to %gs for the children of the previous code "
                  "(%d), which end with this process\n"
                  % ("stopping" if stopped else "the new code did not start", self.graceful,
                     len(left)), error=not stopped)
        until = time.monotonic() + self.graceful
        while left and time.monotonic() < until:
            try:
                pid, _ = os.waitpid(-1, os.WNOHANG)
            except ChildProcessError:
                return
            if pid:
                left.discard(pid)
            else:
                time.sleep(OUTLIVE_POLL_SECONDS)


def numbers(text):
    return [int(n) for n in text.split(",") if n]


def parse_child(text):
    pid, started, deadline, age, host, port = text.split(" ")
    addr = (host, int(port)) if host != "-" else ""
    return int(pid), addr, float(started), float(deadline), int(age)
