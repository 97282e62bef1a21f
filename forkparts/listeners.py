"""Listening sockets: binding the --bind addresses, and systemd's.

DESIGN note: a Listener is the server's own object around one listening
socket: what the parent polls and accepts from, and how the ready line names
it.  Binding (TCP with TCP_DEFER_ACCEPT, unix sockets with their stale-file
check and their file mode, inherited fds, systemd socket activation) happens
once, before the app's first fork; it is a room of its own because none of it
is the loop's business, and every bind failure is a ListenError (exit status 4);
check_address finds those that can be known without binding (--check-config).
Ending them is here too: at a stop the sockets bound here are shut down, not
only closed (Listener.stop_listening), because children forked just before
hold copies of them.
The addresses' grammar is the command line's (forkparts/cli.py, parse_bind).
"""

import errno
import os
import select
import socket
import stat
import struct
import sys

# The --bind grammar is the command line's (checked as the options are read);
# ASCII_DIGITS_RE is imported from here by the parts that bind and upgrade.
from forkparts.cli import ASCII_DIGITS_RE, UsageError, parse_bind  # noqa: F401


# Linux's SO_ATTACH_FILTER (socket(7)), which the socket module does not name.
SO_ATTACH_FILTER = 26
# A classic BPF program (Documentation/networking/filter.rst) for a TCP
# listener, which sees the TCP header at offset 0: byte 13 holds the flags.
#   ldb [13]; jset #0x02 (SYN), drop, keep; drop: ret #0; keep: ret #0xffffffff
DROP_SYN_PROGRAM = struct.pack("=" + "HBBI" * 4, 0x30, 0, 0, 13, 0x45, 0, 1, 0x02,
                               0x06, 0, 0, 0, 0x06, 0, 0, 0xFFFFFFFF)
# sock_diag(7): the kernel lists this network namespace's TCP sockets in a
# given state, as it does for ss(8).  The numbers are linux/netlink.h's,
# linux/sock_diag.h's, linux/inet_diag.h's and net/tcp_states.h's, which the
# socket module does not name.
NETLINK_SOCK_DIAG = 4
SOCK_DIAG_BY_FAMILY = 20
NLM_F_REQUEST_DUMP = 0x301
NLMSG_ERROR, NLMSG_DONE = 2, 3
TCP_SYN_RECV = 3                                 # a half-open connection
NLMSG_HEADER = struct.Struct("=IHHII")           # length, type, flags, sequence, port
DIAG_REQUEST = struct.Struct("=BBBBI48x")        # family, protocol, -, -, states, any id
DIAG_MESSAGE_ID = struct.Struct("!4xH2x16s")     # family, state..., local port, -, address


class ListenError(Exception):
    """Could not bind, listen or drop privileges: exit status 4."""


class Listener:
    """A listening socket and how to describe it.

    accept() returns (socket, address): the socket's own accept (the public
    socket API), an attribute of the instance, not a method of the class, so
    forkparts.accel may put a faster one in its place without shadowing a
    method.  A shadowed method costs the parent a page at every accept: the
    attribute lookup takes a reference to the class's function before it
    finds the instance's (docs/performance.md, "Pages the split added to
    every connection")."""

    def __init__(self, sock, description, unix_path=None, owned=False):
        self.sock = sock
        self.accept = sock.accept   # () -> (socket, address)
        self.fd = sock.fileno()
        # Plain ints for socket.socket(family, type, 0, fd) at each accept:
        # given only the fd, the constructor asks the kernel with getsockopt.
        self.family = int(sock.family)
        self.type = int(sock.type)
        poller = select.poll()
        poller.register(self.fd, select.POLLIN)
        self.pending = poller.poll   # pending(0): is a connection waiting?
        self.description = description
        self.unix_path = unix_path     # the socket file, removed at close by its owner
        self.activated = False         # passed by systemd (LISTEN_FDS)
        # Bound here, so no other process serves it: stop_listening may end
        # it (not systemd's socket, an fd://, nor, in an upgrade, the old
        # parent's after the hand-over or the new parent's before it is
        # ready: forkparts/upgrade.py).
        self.owned = owned

    def stop_listening(self):
        """Refuse new connections on this socket in every process that holds
        it, not only this one: close() alone ends only the parent's copy, and
        a child forked just before a stop keeps the socket listening until it
        runs far enough to close its own copy (milliseconds, more under load).
        Meanwhile the kernel completes handshakes into a queue nobody accepts,
        and that copy's close resets them, with a proxy's POST already sent:
        nginx answers 502 ("recv() failed (104: Connection reset by peer)")
        and does not retry a POST.  shutdown() acts on the socket itself: new
        connections are refused at once (a proxy retries those elsewhere).  A
        TCP socket resets its queue then (take it first: drain_backlog); a unix
        socket keeps its queue for accept()."""
        if self.owned:
            self.owned = False
            try:
                self.sock.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass

    def refuse_new(self):
        """Before the queue is taken (drain_backlog): no new connection may
        enter it, so none completes between the last accept() and
        stop_listening.  A unix socket is shut down now: it refuses new
        connections and keeps its queue.  A TCP one would reset its queue, so
        it drops new connection requests instead (Linux's SO_ATTACH_FILTER): a
        dropped SYN is sent again after a second (RFC 6298 2.1), meets the
        closed port and is refused, and a proxy retries it elsewhere.
        Elsewhere that window stays open, microseconds wide."""
        if self.family == socket.AF_UNIX:
            self.stop_listening()
        elif self.owned and sys.platform.startswith("linux"):   # 26 is Linux's number
            try:
                import ctypes
                program = ctypes.create_string_buffer(DROP_SYN_PROGRAM, len(DROP_SYN_PROGRAM))
                fprog = struct.pack("@HP", len(DROP_SYN_PROGRAM) // 8, ctypes.addressof(program))
                self.sock.setsockopt(socket.SOL_SOCKET, SO_ATTACH_FILTER, fprog)
            except (ImportError, OSError):
                pass

    def half_open(self):
        """How many connections to this listener's port the kernel holds half
        open: the client's SYN is in, nothing is in the accept queue yet.
        With TCP_DEFER_ACCEPT (set_defer_accept) that lasts until the client's
        first bytes, so its connect() may have returned long before: a client
        paused between connect and send, or a proxy's POST on its way.
        stop_listening would reset it when they come.  Linux lists them
        (half_open_connections); 0 for a unix socket, one not ours, or
        where the kernel cannot be asked."""
        if self.family == socket.AF_UNIX or not self.owned:
            return 0
        host, port = self.sock.getsockname()[:2]
        address = socket.inet_pton(self.family, host.partition("%")[0])
        if any(address):   # bound to one address
            return half_open_connections(self.family).count((address, port))
        # A wildcard: any local address, IPv4 ones too on a dual-stack socket.
        families = {self.family, socket.AF_INET}
        return sum(local_port == port for family in families
                   for _, local_port in half_open_connections(family))

    def close(self):
        self.stop_listening()
        try:
            self.sock.close()
        except OSError:
            pass
        if self.unix_path:
            remove_quietly(self.unix_path)
            self.unix_path = None


def half_open_connections(family):
    """(local address, local port) of each half-open TCP connection of
    ``family`` in this network namespace (sock_diag(7)); [] if the kernel
    cannot be asked (not Linux, or no sock_diag)."""
    request = DIAG_REQUEST.pack(family, socket.IPPROTO_TCP, 0, 0, 1 << TCP_SYN_RECV)
    found = []
    try:
        with socket.socket(socket.AF_NETLINK, socket.SOCK_DGRAM, NETLINK_SOCK_DIAG) as nl:
            nl.settimeout(1.0)   # the kernel answers at once; never hang a stop on it
            nl.send(NLMSG_HEADER.pack(NLMSG_HEADER.size + DIAG_REQUEST.size,
                                      SOCK_DIAG_BY_FAMILY, NLM_F_REQUEST_DUMP, 1, 0) + request)
            while True:
                data, offset = nl.recv(1 << 16), 0
                while offset + NLMSG_HEADER.size <= len(data):
                    length, kind = NLMSG_HEADER.unpack_from(data, offset)[:2]
                    if kind in (NLMSG_DONE, NLMSG_ERROR) or length < NLMSG_HEADER.size:
                        return found
                    port, address = DIAG_MESSAGE_ID.unpack_from(data, offset + NLMSG_HEADER.size)
                    found.append((address[:4] if family == socket.AF_INET else address, port))
                    offset += (length + 3) & ~3
                if not data:
                    return found
    except (AttributeError, OSError):   # AttributeError: no AF_NETLINK here
        return []


def open_listener(address, backlog, umask, defer_seconds):
    kind, value = parse_bind(address)
    if kind == "unix":
        return bind_unix(value, backlog, umask)
    if kind == "fd":
        return adopt_fd(value, backlog)
    return bind_inet(value, backlog, defer_seconds)


def bind_inet(hostport, backlog, defer_seconds):
    host, port = hostport
    family, _, _, _, sockaddr = resolve(host, port)[0]
    sock = socket.socket(family, socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        if family == socket.AF_INET6:
            sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
        sock.bind(sockaddr)
        sock.listen(backlog)
    except OSError as exc:
        sock.close()
        hint = (" (another server listens there, perhaps another user's: --bind %s:0 "
                "picks a free port, named on the ready line)" % (
                    "[%s]" % host if ":" in host else host or "127.0.0.1")
                if exc.errno == errno.EADDRINUSE else "")
        raise ListenError("cannot listen on %s:%d: %s%s" % (
            host, port, exc.strerror, hint)) from None
    set_defer_accept(sock, defer_seconds)
    bound = sock.getsockname()
    if family == socket.AF_INET6:
        return Listener(sock, "http://[%s]:%d" % (bound[0], bound[1]), owned=True)
    return Listener(sock, "http://%s:%d" % (bound[0], bound[1]), owned=True)


def resolve(host, port):
    """getaddrinfo for a listening socket; a ListenError names a host that
    does not resolve."""
    # As bytes when ASCII: a str host is IDNA-encoded, which imports
    # encodings.idna, stringprep and unicodedata (0.3 MB of parent that every
    # fork copies page tables for).
    name = host.encode("ascii") if host and host.isascii() else host
    try:
        return socket.getaddrinfo(name, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
    except socket.gaierror as exc:
        raise ListenError("cannot resolve %r: %s" % (host, exc.strerror)) from None


def backlog_waiting(fds):
    """True if a connection waits in the backlog of a listener in ``fds``
    (a poll that does not wait)."""
    poller = select.poll()
    for fd in fds:
        poller.register(fd, select.POLLIN)
    return bool(poller.poll(0))


def set_defer_accept(sock, seconds):
    """Linux TCP_DEFER_ACCEPT: accept() returns only once the client has sent data,
    so a client that connects and says nothing costs no fork (until the kernel
    gives up waiting, when it meets --header-timeout)."""
    option = getattr(socket, "TCP_DEFER_ACCEPT", None)
    if option is not None and seconds > 0:
        try:
            sock.setsockopt(socket.IPPROTO_TCP, option, max(int(seconds), 1))
        except OSError:
            pass


# The mode --umask is taken from, as open(2) creates a file with 0666: only the
# write bit lets a peer connect(2) (unix(7)), execute means nothing on a socket,
# so --umask 007 gives 0660 as it would for any file the server writes.
SOCKET_FILE_MODE = 0o666
# sockaddr_un's sun_path: 108 bytes on Linux, 104 on macOS and the BSDs; the
# path, without its NUL, must be shorter (CPython refuses it otherwise with
# "AF_UNIX path too long" and no errno).
SUN_PATH_BYTES = 108 if sys.platform.startswith("linux") else 104
# While bound but not yet chmod'ed the file is 0000: no one but root may connect
# before its mode is the one asked for.
BIND_UMASK = 0o777


def unix_path_problem(path):
    """A ListenError if ``path`` is too long for a unix socket here, else None."""
    size = len(os.fsencode(path))
    if size < SUN_PATH_BYTES:
        return None
    return ListenError("cannot listen on unix:%s: the path is %d bytes, and a unix socket's "
                       "must be under %d here (sun_path): choose a shorter one, for example "
                       "under /run" % (path, size, SUN_PATH_BYTES))


def bind_unix(path, backlog, umask):
    problem = unix_path_problem(path)
    if problem:
        raise problem
    remove_stale_socket(path)
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    old = os.umask(BIND_UMASK)
    try:
        sock.bind(path)
    except OSError as exc:
        sock.close()
        raise ListenError("cannot listen on unix:%s: %s" % (path, exc.strerror or exc)) from None
    finally:
        os.umask(old)
    try:
        os.chmod(path, SOCKET_FILE_MODE & ~umask)
        sock.listen(backlog)
    except OSError as exc:
        sock.close()
        remove_quietly(path)
        raise ListenError("cannot listen on unix:%s: %s" % (path, exc.strerror)) from None
    return Listener(sock, "unix:" + path, unix_path=path, owned=True)


def remove_quietly(path):
    try:
        os.unlink(path)
    except OSError:
        pass


def remove_stale_socket(path):
    """Replace a socket file nobody listens on; refuse one that is alive."""
    try:
        mode = os.lstat(path).st_mode
    except FileNotFoundError:
        return
    if not stat.S_ISSOCK(mode):
        raise ListenError("unix:%s exists and is not a socket" % path)
    probe = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        probe.connect(path)
    except OSError:
        os.unlink(path)   # stale: left by a server that died
        return
    finally:
        probe.close()
    raise ListenError("unix:%s is in use by another server" % path)


def check_address(address):
    """What binding ``address`` would fail on that can be known without
    binding (--check-config): a host that does not resolve, a unix socket's
    missing directory or a file in its place, an fd that is not a socket.
    The ListenError a start would raise, or None.  A port another server
    holds is known only by binding it."""
    kind, value = parse_bind(address)
    if kind == "inet":
        try:
            resolve(*value)
        except ListenError as exc:
            return exc
        return None
    if kind == "fd":
        try:
            is_socket = stat.S_ISSOCK(os.fstat(value).st_mode)
        except OSError as exc:
            return ListenError("fd://%d is not a socket: %s" % (value, exc.strerror))
        return None if is_socket else ListenError("fd://%d is not a socket: %s" % (
            value, os.strerror(errno.ENOTSOCK)))
    if unix_path_problem(value):
        return unix_path_problem(value)
    if os.path.lexists(value) and not stat.S_ISSOCK(os.lstat(value).st_mode):
        return ListenError("unix:%s exists and is not a socket" % value)
    directory = os.path.dirname(os.path.abspath(value))
    if not os.path.isdir(directory):
        return ListenError("cannot listen on unix:%s: %s" % (value, os.strerror(errno.ENOENT)))
    return None


def adopt_fd(fd, backlog):
    try:
        sock = socket.socket(fileno=fd)
    except OSError as exc:
        raise ListenError("fd://%d is not a socket: %s" % (fd, exc.strerror)) from None
    if sock.type != socket.SOCK_STREAM:
        raise ListenError("fd://%d is not a stream socket" % fd)
    try:
        sock.listen(backlog)
    except OSError as exc:
        raise ListenError("fd://%d cannot listen: %s" % (fd, exc.strerror)) from None
    return Listener(sock, describe_socket(sock, "fd://%d" % fd))


def describe_socket(sock, fallback):
    name = sock.getsockname()
    if sock.family == socket.AF_UNIX:
        return "unix:" + (name if isinstance(name, str) else fallback)
    if sock.family == socket.AF_INET6:
        return "http://[%s]:%d" % name[:2]
    if sock.family == socket.AF_INET:
        return "http://%s:%d" % name
    return fallback


def systemd_listeners(backlog):
    """Sockets passed by systemd (sd_listen_fds): fds 3 .. 3+LISTEN_FDS-1."""
    if os.environ.get("LISTEN_PID") != str(os.getpid()):
        return []
    try:
        count = int(os.environ.get("LISTEN_FDS", "0"))
    except ValueError:
        raise UsageError("LISTEN_FDS is not a number: %r" % os.environ["LISTEN_FDS"]) from None
    for name in ("LISTEN_PID", "LISTEN_FDS", "LISTEN_FDNAMES"):
        os.environ.pop(name, None)   # not for the app nor our children
    listeners = [adopt_fd(3 + i, backlog) for i in range(count)]
    for listener in listeners:
        listener.activated = True   # a SIGUSR2 upgrade passes them on as systemd did
    return listeners


def sd_notify(message):
    """Send a systemd notification (READY=1, STOPPING=1) if NOTIFY_SOCKET is set."""
    path = os.environ.get("NOTIFY_SOCKET")
    if not path:
        return
    if path.startswith("@"):
        path = "\0" + path[1:]
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
            sock.sendto(message.encode("ascii"), path)
    except OSError:
        pass


def check_room_to_accept():
    """Raise EMFILE now if no descriptor is left for a client connection:
    under a limit that the parent's own descriptors fill (ulimit -n 6 with
    the listener and the wake-up pipe), the server would say it is ready and
    then fail every accept() for ever."""
    try:
        os.close(os.open(os.devnull, os.O_RDONLY))
    except OSError as exc:
        raise OSError(exc.errno, "%s: none left for a client connection"
                      % exc.strerror) from None
