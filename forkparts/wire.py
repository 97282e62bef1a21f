"""The child's socket I/O: a buffered connection with deadlines (and the C
close, which the parent uses too).

DESIGN note: every recv and send of the child goes through here, each bounded
by a deadline (--header-timeout, --read-timeout, --min-body-rate,
SEND_TIMEOUT_SECONDS), so a slow or silent client can cost a child time but never
hang it; client hang-ups become one exception, ClientGone.  The parser and the
response never see the socket, only this object's buffer and send().
"""

import socket
import time

from forkparts.http11 import BadRequest, ClientGone, IncompleteBody, RequestTimeout
from forkparts.parser import check_partial_head, find_head_end

RECV_BYTES = 64 * 1024
# After an error response: shut down our side, then read and discard what the
# client still sends so that close() does not turn into a reset that destroys
# the response in flight (RFC 9112 9.6, "tear-down").
DRAIN_TIMEOUT_SECONDS = 1.0
MAX_DRAIN_BYTES = 1024 * 1024

# The C method under socket.socket.close(), whose two Python layers would only
# add copy-on-write pages to every child.  socket.SocketType is the public name
# of that C type (_socket.socket, the base of socket.socket; the same object on
# every CPython this package claims), so no private module is needed for it.
close_socket = socket.SocketType.close
SHUT_WR = socket.SHUT_WR


class Connection:
    """The client socket plus the bytes received but not consumed yet."""

    unsent = 0   # of the data of a send that failed (set on the instance then)

    def __init__(self, sock, config, initial=b""):
        self.sock = sock
        self.config = config
        self.buf = bytearray(initial)
        self.eof = False
        self.body_rate = 0.0     # while a body is read: its least rate (start_body)
        self.body_due = 0.0      # the body's grace ends (monotonic); 0 = not yet started
        self.body_bytes = 0      # bytes received since the body started

    def start_body(self):
        """Apache mod_reqtimeout's MinRate for the body of the request: after a
        grace of --header-timeout from its first read, the body must keep
        coming at --min-body-rate bytes/s, or the client gets 408 (a body
        trickled at 1 byte every 5 s never stalls a whole --read-timeout)."""
        self.body_rate = self.config.min_body_rate
        self.body_due, self.body_bytes = 0.0, len(self.buf)

    def end_body(self):
        self.body_rate = 0.0

    def recv_into_buffer(self, timeout):
        """One recv; False at EOF.  Raises RequestTimeout or ClientGone."""
        what = "timed out waiting for the client"
        if self.body_rate:
            if not self.body_due:
                self.body_due = time.monotonic() + self.config.header_timeout
            left = self.body_due + self.body_bytes / self.body_rate - time.monotonic()
            if left < timeout:
                timeout, what = left, "request body slower than %g bytes/s" % self.body_rate
        if timeout <= 0 and not self.body_rate:
            raise RequestTimeout(what)
        # Past the body's rate deadline, one more look without waiting: the
        # rate is the client's, not the app's, and what has already arrived
        # counts, however slowly the app reads it.
        self.sock.settimeout(max(timeout, 1e-6))
        try:
            data = self.sock.recv(RECV_BYTES)
        except socket.timeout:
            raise RequestTimeout(what) from None
        except ConnectionError as exc:
            raise ClientGone(str(exc)) from None
        if not data:
            self.eof = True
            return False
        self.buf += data
        self.body_bytes += len(data)
        return True

    def read_head(self, deadline):
        """Bytes of the next head, read with a loop of recv until the blank line."""
        end = self.buf.find(b"\r\n\r\n")
        if end > 0 and not self.buf.startswith(b"\r\n"):
            # Complete already (the accept filter waited for it): parse_head's
            # grammar rejects a bare CR or LF, so find_head_end's scan is not
            # needed here.
            head = bytes(self.buf[:end + 4])
            del self.buf[:end + 4]
            return head
        limits = self.config.limits
        scanned = 0
        while True:
            end = find_head_end(self.buf, scanned)
            if end != -1:
                head = bytes(self.buf[:end])
                del self.buf[:end]
                return head
            check_partial_head(self.buf, limits, scanned)
            scanned = len(self.buf)
            if not self.recv_into_buffer(deadline - time.monotonic()):
                if not self.buf.strip(b"\r\n"):
                    raise ClientGone("closed before sending a request")
                raise BadRequest("connection closed inside the request head")

    def take(self, n, timeout):
        """Up to n bytes (at least one unless at EOF)."""
        if not self.buf and not self.eof:
            self.recv_into_buffer(timeout)
        data = bytes(self.buf[:n])
        del self.buf[:n]
        return data

    def read_line(self, limit, timeout, what):
        """One CRLF-terminated line (without CRLF), bounded by ``limit``."""
        start = 0
        while True:
            end = self.buf.find(b"\r\n", start)
            if end != -1 and end <= limit:
                line = bytes(self.buf[:end])
                del self.buf[:end + 2]
                return line
            if len(self.buf) > limit + 1:
                raise BadRequest("%s longer than %d bytes" % (what, limit))
            start = max(len(self.buf) - 1, 0)
            if self.eof or not self.recv_into_buffer(timeout):
                raise IncompleteBody("connection closed inside a %s" % what)

    def send(self, data):
        """All of ``data``, within the send timeout: one send() call in the
        common case, as sendall() would be.  When it fails, ``unsent`` says how
        much of ``data`` did not go out (sendall's socket.timeout carries no
        count), so a response cut short logs the bytes that did."""
        sock = self.sock
        sock.settimeout(self.config.send_timeout)
        try:
            sent = sock.send(data)
        except BaseException as exc:   # TimedOut too: nothing of it went out
            self.unsent = len(data)
            raise gone(exc) from None
        if sent < len(data):   # the socket's buffer is full: the client reads slowly
            self.send_rest(memoryview(data)[sent:])

    def send_rest(self, view):
        """The rest, all of it within one send timeout from now."""
        deadline = time.monotonic() + self.config.send_timeout
        try:
            while view:
                left = deadline - time.monotonic()
                if left <= 0:
                    raise socket.timeout("timed out")
                self.sock.settimeout(left)
                view = view[self.sock.send(view):]
        except BaseException as exc:
            self.unsent = len(view)
            raise gone(exc) from None

    def shut_down(self):
        """End our side (FIN) before the close: a process the app forked during
        the request holds the socket too, and close() alone sends nothing while
        it does (a client reading to EOF would wait for that process)."""
        try:
            self.sock.shutdown(SHUT_WR)
        except OSError:
            pass   # the client is gone, or the response was aborted (closed)

    def close_gracefully(self):
        """Shut down our side, then read and drop what the client still sends,
        within DRAIN_TIMEOUT_SECONDS and MAX_DRAIN_BYTES."""
        sock = self.sock
        try:
            sock.shutdown(socket.SHUT_WR)
            end = time.monotonic() + DRAIN_TIMEOUT_SECONDS
            drained = 0
            while drained < MAX_DRAIN_BYTES:
                left = end - time.monotonic()
                if left <= 0:
                    break
                sock.settimeout(left)
                data = sock.recv(RECV_BYTES)
                if not data:
                    break
                drained += len(data)
        except OSError:
            pass


def gone(exc):
    """What a failed send raises: ClientGone for a client that stopped reading
    or went away, any other exception as it is."""
    if isinstance(exc, socket.timeout):
        return ClientGone("client did not read the response in time")
    if isinstance(exc, ConnectionError):   # BrokenPipeError, ConnectionResetError
        return ClientGone(str(exc))
    return exc


def set_no_delay(sock):
    """TCP_NODELAY for a persistent connection: a chunked response's small
    writes must not wait for the client's delayed ACK (RFC 896 and RFC 1122
    4.2.3.2 together cost ~40 ms a request).  Unix sockets have no such option."""
    try:
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    except OSError:
        pass


def abort(sock):
    """Close with a TCP reset (SO_LINGER 0): the client sees an error, not an end."""
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00")
        sock.close()
    except OSError:
        pass
