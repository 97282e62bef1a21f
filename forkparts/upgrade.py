"""Zero-downtime upgrade (SIGUSR2): the old parent executes a new one.

DESIGN note.  As nginx's and gunicorn's binary upgrade: on SIGUSR2 the
parent forks, and the child executes the same command line afresh
(``sys.executable`` and ``sys.orig_argv``, the interpreter's options too:
command_line; from the directory the server was started in), so the new
parent runs the new forkserver code, the newly
installed libraries and the options and config file read again.  It
inherits what must not be re-made:

- the listening sockets: left open across exec (``os.set_inheritable``) and
  named in ``FORKSERVER_FDS`` (as gunicorn's ``GUNICORN_FD``), those it
  bound itself in ``FORKSERVER_OWNED_FDS`` too (the new parent owns them once
  ready: its stop shuts them down, Listener.stop_listening); systemd's
  own sockets are passed on as systemd passes them, ``LISTEN_FDS`` and
  ``LISTEN_PID`` naming the new process (sd_listen_fds(3)).  The new parent
  takes an inherited socket for each ``--bind`` address it matches (port 0
  matches any port of that host) instead of binding, closes those its new
  options no longer name, and binds only what is new;
- a pipe to tell the old parent it is ready (``FORKSERVER_READY_FD``): one
  byte, written after its ready line.  A pipe, not a signal, so the old
  parent never mistakes an operator's SIGTERM for it, nor a pid for another.

Until that byte arrives both parents accept from the same sockets (the
kernel gives each connection to one of them), so a slow start of the new
code delays nobody.  Then the old parent stops accepting, lets its children
finish within --graceful-timeout and exits: a graceful stop that sends
systemd ``MAINPID=<new>`` instead of ``STOPPING=1``, and leaves the unix
socket files to the new parent.  The pidfile is ``PATH.oldbin`` for the old
parent from SIGUSR2 on, ``PATH`` for the new one.  If the new parent exits
before it is ready (its code or the app does not import, a bind fails), the
old one logs why, puts the pidfile back and serves on as if nothing happened.

A room of its own because none of it is the loop's business: the loop only
notes SIGUSR2, polls the ready pipe and reaps the new parent if it fails.
"""

import os
import signal
import socket
import sys

from forkparts.apps import logical_cwd
from forkparts.cli import UsageError
from forkparts.listeners import ASCII_DIGITS_RE, adopt_fd, parse_bind, sd_notify
from forkparts.logs import restore_original_stdio

FDS_ENV = "FORKSERVER_FDS"              # "5,6": the listening sockets, by number
READY_FD_ENV = "FORKSERVER_READY_FD"    # the pipe the new parent says "ready" on
OLD_PID_ENV = "FORKSERVER_OLD_PID"      # the parent that executed us
OWNED_FDS_ENV = "FORKSERVER_OWNED_FDS"  # those of FDS_ENV the old parent bound itself
OLDBIN_SUFFIX = ".oldbin"               # nginx's and gunicorn's name for the old pidfile
READY_BYTE = b"R"
EXEC_FAILED_STATUS = 127                # as the shell's "command not found"
try:   # the directory the server was started in, by name: sys.argv[0] may be relative to it
    LAUNCH_DIR = logical_cwd()
except OSError:
    LAUNCH_DIR = None


def command_line():
    """The command that started this interpreter, to start it again (USR2,
    a HUP's trial and exec): sys.orig_argv keeps the interpreter's own
    options, which sys.argv drops (``python -u`` came back block-buffered,
    ``-O``, ``-X dev`` or ``-W`` undone), and ``-m forkserver`` as typed;
    but not -i (without_inspect)."""
    return [sys.executable] + (without_inspect(sys.orig_argv[1:]) if sys.orig_argv
                               else sys.argv)


def without_inspect(args):
    """The interpreter's arguments without -i: it turns the end of a start
    that failed (a trial's, a new parent's) into a prompt, which exits 0 on
    a closed stdin, so a broken new code would pass for a good one.  The
    options are read as the interpreter reads them: clusters (-ui), values
    attached or next (-Werror, -X dev), up to the program (a script, -m, -c)."""
    out = []
    while args:
        arg, args = args[0], args[1:]
        if arg == "-" or not arg.startswith("-"):
            return out + [arg] + args        # the script, and its own arguments
        if arg.startswith("--"):
            out.append(arg)
            if arg == "--check-hash-based-pycs" and args:
                out, args = out + args[:1], args[1:]
            continue
        flags = arg[1:]
        cut = next((n for n, flag in enumerate(flags) if flag in "cmWX"), len(flags))
        arg = "-" + flags[:cut].replace("i", "") + flags[cut:]
        out += [arg] if arg != "-" else []
        if flags[cut:cut + 1] in ("c", "m"):
            return out + args                # -m MODULE or -c CODE, and their arguments
        if flags[cut:] in ("W", "X") and args:
            out, args = out + args[:1], args[1:]
    return out


# The environment the server was started with, for the parent it executes
# (USR2, a HUP's exec): not what the app or -e/raw_env set since (Django's
# wsgi.py sets DJANGO_SETTINGS_MODULE), nor what a parent before us passed;
# nor PYTHONINSPECT, which is -i (without_inspect).
START_ENVIRON = {name: value for name, value in os.environ.items() if name not in (
    "FORKSERVER_FDS", "FORKSERVER_OWNED_FDS", "FORKSERVER_READY_FD", "FORKSERVER_OLD_PID",
    "FORKSERVER_REEXEC", "FORKSERVER_CARRIED_FD", "FORKSERVER_HANDBACK_FDS",
    "FORKSERVER_OLD_PIDFILE", "FORKSERVER_TRIAL", "FORKSERVER_ERROR_FD", "LISTEN_FDS",
    "LISTEN_PID", "LISTEN_FDNAMES", "PYTHONINSPECT")}


def describe_exit(status, names):
    """A waitpid status of a parent, with the meaning of its exit status."""
    if os.WIFSIGNALED(status):
        return "was killed by %s" % signal.Signals(os.WTERMSIG(status)).name
    code = os.WEXITSTATUS(status)
    return "exited with status %d%s" % (code, " (%s)" % names[code] if code in names else "")


INITIAL_PID_NAMESPACE = 0xEFFFFFFC   # include/linux/proc_ns.h: PROC_PID_INIT_INO


def under_a_container_init():
    """Is the parent process a container's minimal init, which exits when
    its child does (docker run --init, tini, dumb-init)?  It is PID 1 of a
    PID namespace other than the machine's (which has a fixed inode number,
    the kernel's PROC_PID_INIT_INO, whatever /proc a container mounts), and
    not systemd (LXD, systemd-nspawn), under which an upgrade works with
    NOTIFY_SOCKET as on a machine.  False where that cannot be read."""
    if os.getppid() != 1 or os.environ.get("NOTIFY_SOCKET"):
        return False
    try:
        if os.readlink("/proc/self/ns/pid") == "pid:[%d]" % INITIAL_PID_NAMESPACE:
            return False
        with open("/proc/1/comm") as f:
            return f.read().strip("\n") not in ("systemd", "init")
    except OSError:
        return False


class Upgrade:
    """SIGUSR2 in a running parent; and, in a parent it executed, the old
    parent to tell once ready."""

    def __init__(self, pidfile, log, exit_names, inherited=None):
        self.pidfile, self.log, self.exit_names = pidfile, log, exit_names
        self.inherited = inherited or Inherited()
        self.child = 0           # the new parent we executed, while it lives
        self.ready_fd = None     # the read end of its ready pipe, until it speaks
        self.handed_over = False

    def refusal(self, stopping):
        """Why SIGUSR2 cannot upgrade now, or None."""
        if stopping:
            return "the server is stopping"
        if self.child:
            return "an upgrade is already under way (new parent %d)" % self.child
        old = self.inherited.old_pid
        if old and os.getppid() == old:
            return "the previous parent %d is still draining" % old
        if os.getpid() == 1:
            return "this is PID 1: its exit would end the container; restart it instead"
        if under_a_container_init():
            return ("the parent process is this container's init (PID 1 of its PID "
                    "namespace: docker run --init, tini, dumb-init), which ends the container "
                    "when this process exits; restart it instead")
        return None

    def start(self, listeners, restore_signals, blocked, pre_exec):
        """Fork and execute the new parent; returns the ready pipe's read end,
        or None if the fork failed (logged; nothing changed)."""
        argv = command_line()
        try:
            ready_r, ready_w = os.pipe()
        except OSError as exc:
            self.log.error("SIGUSR2: upgrade failed: pipe(): %s; still serving" % exc.strerror)
            return None
        self.move_pidfile(self.pidfile, self.pidfile and self.pidfile + OLDBIN_SUFFIX)
        signal.pthread_sigmask(signal.SIG_BLOCK, blocked)   # as at every fork: see fork_child
        try:
            pid = os.fork()
        except OSError as exc:
            pid = -1
            self.log.error("SIGUSR2: upgrade failed: fork(): %s; still serving" % exc.strerror)
        if pid == 0:
            os.close(ready_r)
            exec_new_parent(argv, list(listeners), ready_w, restore_signals, blocked, pre_exec)
        signal.pthread_sigmask(signal.SIG_UNBLOCK, blocked)
        os.close(ready_w)
        if pid < 0:
            os.close(ready_r)
            self.move_pidfile(self.pidfile and self.pidfile + OLDBIN_SUFFIX, self.pidfile)
            return None
        os.set_blocking(ready_r, False)
        self.child, self.ready_fd = pid, ready_r
        self.log.info("SIGUSR2: upgrading: new parent %d executes %s; this parent (%d) "
                      "serves until it is ready" % (pid, " ".join(argv), os.getpid()))
        return ready_r

    def read_ready(self, unwatch):
        """The ready pipe is readable: True if the new parent said it is ready
        (then this parent hands over), False at EOF (it exited: reaped below).
        ``unwatch(fd)`` takes the pipe out of the poll set before it is
        closed: its number may be reused at once (by the backlog taken next)."""
        try:
            said = os.read(self.ready_fd, 1)
        except BlockingIOError:
            return False
        unwatch(self.ready_fd)
        os.close(self.ready_fd)
        self.ready_fd = None
        if said != READY_BYTE:
            return False
        self.handed_over = True
        self.log.info("upgrade: new parent %d is ready; this parent (%d) stops accepting "
                      "and drains" % (self.child, os.getpid()))
        sd_notify("MAINPID=%d" % self.child)   # from the main pid: NotifyAccess=main suffices
        return True

    def disown(self, listeners):
        """Stopping while a new parent holds our sockets: their files are its."""
        if self.child:
            for listener in listeners:
                listener.unix_path = None
                listener.owned = False   # a shutdown would end the new parent's too

    def child_exited(self, pid, status):
        """Was ``pid`` the new parent?  Before it was ready that is a failed
        upgrade: say so and put the pidfile back."""
        if not pid or pid != self.child:
            return False
        self.child = 0
        if self.handed_over:
            self.log.warning("upgrade: new parent %d %s" % (
                pid, describe_exit(status, self.exit_names)))
            return True
        self.log.error("upgrade failed: new parent %d %s before it was ready (its own error "
                       "is on stderr); still serving the old code with pid %d" % (
                           pid, describe_exit(status, self.exit_names), os.getpid()))
        self.move_pidfile(self.pidfile and self.pidfile + OLDBIN_SUFFIX, self.pidfile)
        return True

    def move_pidfile(self, old, new):
        if not old:
            return
        try:
            os.replace(old, new)
        except FileNotFoundError:
            pass
        except OSError as exc:
            self.log.warning("upgrade: cannot rename %r to %r: %s" % (old, new, exc.strerror))

    def tell_ready(self):
        """In a parent started by SIGUSR2, once it serves: own the sockets
        the old parent bound and their files, and tell the old parent (which
        then disowns and closes its copies, drains and exits).  Owned, a stop
        of ours ends them as the old parent's would (Listener.stop_listening),
        not only our copy, which reset what was queued or half open."""
        inherited = self.inherited
        inherited.report(self.log)
        for listener, path in inherited.unix_paths:
            listener.unix_path = path
        for listener in inherited.to_own:
            listener.owned = True
        for path in inherited.dropped_paths:
            try:
                os.unlink(path)
            except OSError:
                pass   # gone already
        if inherited.ready_fd is None:
            return
        try:
            os.write(inherited.ready_fd, READY_BYTE)
            self.log.info("upgrade: ready; the old parent %d drains and exits"
                          % inherited.old_pid)
        except OSError as exc:   # it is gone already (EPIPE): nobody to tell
            self.log.info("upgrade: the old parent %d is gone (%s)" % (
                inherited.old_pid, exc.strerror))
        os.close(inherited.ready_fd)
        inherited.ready_fd = None


def exec_new_parent(argv, listeners, ready_w, restore_signals, blocked, pre_exec):
    """In the forked child: leave the sockets and the pipe open across exec,
    name them in the environment, run pre_exec, exec.  Never returns."""
    what = "execute %s" % argv[0]
    try:
        signal.set_wakeup_fd(-1)   # the old parent's pipe is not ours to wake
        for sig, handler in restore_signals:
            signal.signal(sig, handler)
        signal.pthread_sigmask(signal.SIG_UNBLOCK, blocked)
        env = dict(START_ENVIRON, **{READY_FD_ENV: str(ready_w), OLD_PID_ENV: str(os.getppid())},
                   **listener_env(listeners))
        for fd in [l.fd for l in listeners] + [ready_w]:
            os.set_inheritable(fd, True)
        pre_exec()
        restore_original_stdio()   # --capture-output's 1 and 2 are the old parent's choice
        if LAUNCH_DIR:
            what = "enter the directory it was started in, %s" % LAUNCH_DIR
            os.chdir(LAUNCH_DIR)   # by name: a switched symlink is the new release
            what = "execute %s" % argv[0]
        os.execve(argv[0], argv, env)
    except BaseException as exc:   # noqa: BLE001 - nothing may return into the old loop
        os.write(2, ("forkserver: upgrade: cannot %s: %s\n" % (what, exc)).encode())
    finally:
        os._exit(EXEC_FAILED_STATUS)


def listener_env(listeners):
    """The environment that names ``listeners`` to the parent this process
    executes (this pid: a HUP's exec, forkparts/reexec.py; or a new one):
    FDS_ENV and OWNED_FDS_ENV, and systemd's own as systemd passes them."""
    env = {}
    activated = [l.fd for l in listeners if l.activated]
    if activated:   # systemd's, at 3..3+n-1 since we started (sd_listen_fds(3))
        env.update(LISTEN_PID=str(os.getpid()), LISTEN_FDS=str(len(activated)))
    env[FDS_ENV] = ",".join(str(l.fd) for l in listeners if not l.activated)
    env[OWNED_FDS_ENV] = ",".join(str(l.fd) for l in listeners if l.owned and not l.activated)
    return env


class Inherited:
    """What a parent executed by SIGUSR2 inherits (read once from the
    environment, which is then cleaned: the app and our children never see it)."""

    def __init__(self, sockets=(), ready_fd=None, old_pid=0, owned_fds=()):
        self.sockets, self.ready_fd, self.old_pid = list(sockets), ready_fd, old_pid
        self.owned_fds = frozenset(owned_fds)
        self.unix_paths = []   # (listener, path): socket files to own once ready
        self.to_own = []       # taken, and bound by a parent (not fd://): ours once ready
        self.closed = []       # descriptions of inherited sockets no --bind names
        self.dropped_paths = []   # their unix socket files the old parent bound

    @classmethod
    def from_environ(cls, backlog):
        values = {name: os.environ.pop(name, "") for name in (
            FDS_ENV, OWNED_FDS_ENV, READY_FD_ENV, OLD_PID_ENV)}
        for name, value in values.items():
            for text in (value.split(",") if name in (FDS_ENV, OWNED_FDS_ENV) else [value]):
                if value and not ASCII_DIGITS_RE.fullmatch(text):
                    raise UsageError("%s=%r: %r is not a number (set by a SIGUSR2 upgrade "
                                     "only)" % (name, value, text))
        fds, owned, ready, old = values.values()
        numbers, owned = (fds.split(",") if fds else []), (owned.split(",") if owned else [])
        sockets = [adopt_fd(int(n), backlog) for n in numbers]
        for listener in sockets:
            os.set_inheritable(listener.fd, False)   # not for the app's subprocesses
        if ready:
            os.set_inheritable(int(ready), False)
        return cls(sockets, int(ready) if ready else None, int(old) if old else 0,
                   [int(n) for n in owned])

    def take(self, address):
        """The inherited listener that --bind ``address`` names, or None."""
        kind, value = parse_bind(address)
        for listener in self.sockets:
            if matches(listener.sock, kind, value):
                self.sockets.remove(listener)
                if kind == "unix":
                    self.unix_paths.append((listener, value))
                if listener.fd in self.owned_fds:
                    self.to_own.append(listener)
                return listener
        return None

    def close_unused(self):
        """Close the inherited sockets that no --bind names any more (the old
        parent's copies go when it exits); the file of a unix socket the old
        parent bound goes once we are ready (tell_ready: until then the old
        parent may still serve on it, and this start may fail)."""
        for listener in self.sockets:
            self.closed.append(listener.description)
            if listener.fd in self.owned_fds and listener.sock.family == socket.AF_UNIX:
                path = listener.sock.getsockname()
                if isinstance(path, str) and path.startswith("/"):
                    self.dropped_paths.append(path)
            listener.close()
        self.sockets = []

    def report(self, log):
        if self.old_pid and self.ready_fd is not None:   # not again after a HUP's exec
            log.info("upgrade: started by parent %d" % self.old_pid)
        for description in self.closed:
            log.warning("no --bind names the inherited %s any more; closed it" % description)


def matches(sock, kind, value):
    """Is ``sock`` bound where --bind (parse_bind's kind, value) says?"""
    if kind == "fd":
        return sock.fileno() == value
    name = sock.getsockname()
    if kind == "unix":
        return sock.family == socket.AF_UNIX and name == value
    host, port = value
    name_host = host.encode("ascii") if host.isascii() else host
    try:
        infos = socket.getaddrinfo(name_host, port, type=socket.SOCK_STREAM,
                                   flags=socket.AI_PASSIVE)
    except socket.gaierror:
        return False
    family, _, _, _, sockaddr = infos[0]
    return (sock.family == family and name[0] == sockaddr[0]
            and (port == 0 or name[1] == port))
