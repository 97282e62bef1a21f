"""The child's side of forkserver: one connection in, one or more responses out.

    read head -> parse_head (pure, no socket) -> body reader (wsgi.input)
              -> environ -> app -> response writer -> close

The parent (``forkserver``) forks once per connection and calls
``serve_connection()`` exactly once in the child, which returns an exit status.
This module never forks, never installs signal handlers and never imports
``forkserver``.  It holds the connection handler and PEP 3333's side (the
response, the environ, wsgi.errors, wsgi.file_wrapper); the HTTP/1.1 grammar,
the parser, the body readers, the socket I/O, proxy trust and logging are
parts in ``forkparts`` (the checks of the app's status and headers too,
``forkparts.pep3333``).  It stays light: every module imported here is paid
for again by every child, so only ``re``, ``socket``, ``time``, ``os`` and the
small ``http.HTTPStatus`` enum are used at import time.
"""

import io
import os
import re
import socket
import time

from forkparts.bodies import (
    EMPTY_INPUT, MAX_UNREAD_BODY_BYTES, NO_BODY, ChunkedReader, InputStream, LengthReader,
    drain_unread)
from forkparts.exits import (
    EXIT_CPU_LIMIT, EXIT_ERROR, EXIT_MEMORY_LIMIT, EXIT_OK, EXIT_TIMEOUT, CPULimitExceeded,
    TimedOut)
from forkparts.http11 import (
    DEFAULT_LIMITS, DIGITS_RE, HEADER_TIMEOUT_SECONDS, HOP_BY_HOP, MIN_BODY_RATE,
    READ_TIMEOUT_SECONDS, SEND_TIMEOUT_SECONDS, SERVER_SOFTWARE, ClientGone, HTTPError,
    RequestTimeout, error_response, http_date)
from forkparts.logs import Log, access_atoms, format_addr
from forkparts.parser import parse_head
from forkparts.wire import Connection, abort, close_socket, gone, set_no_delay

# A body chunk up to this size is copied behind the head into one send().
COALESCE_MAX_BYTES = 64 * 1024

NO_BODY_STATUSES = frozenset((204, 304))


# --------------------------------------------------------------------------
# Configuration handed down by the parent (frozen: one per server).
# --------------------------------------------------------------------------

class HandlerConfig:
    """What the child needs to know; built once in the parent, read-only after."""

    def __init__(self, **kw):
        self.limits = kw.pop("limits", DEFAULT_LIMITS)
        self.server_name = kw.pop("server_name", "localhost")
        self.server_port = str(kw.pop("server_port", "80"))
        self.url_scheme = kw.pop("url_scheme", "http")
        self.header_timeout = kw.pop("header_timeout", HEADER_TIMEOUT_SECONDS)
        self.min_body_rate = kw.pop("min_body_rate", MIN_BODY_RATE)
        self.read_timeout = kw.pop("read_timeout", READ_TIMEOUT_SECONDS)
        self.send_timeout = kw.pop("send_timeout", SEND_TIMEOUT_SECONDS)
        self.keep_alive = kw.pop("keep_alive", 0.0)
        # --keep-alive: the parent's end for idle connections handed back (Drain).
        self.handback = kw.pop("handback", None)
        self.max_requests = kw.pop("max_requests", 100)
        self.request_timeout = kw.pop("request_timeout", 0.0)
        self.close_delimited = kw.pop("close_delimited", False)
        self.trace = kw.pop("trace", False)
        self.forwarded = kw.pop("forwarded", None)
        self.set_title = kw.pop("set_title", None)
        self.title_query = kw.pop("title_query", False)
        self.proc_name = kw.pop("proc_name", "forkserver")     # --proc-name: the title's prefix
        # The child's hooks (forkparts/hooks.py), None when not configured.
        self.pre_request = kw.pop("pre_request", None)
        self.post_request = kw.pop("post_request", None)
        self.script_name = kw.pop("script_name", "")   # $SCRIPT_NAME: the app's mount
        self.log = kw.pop("log", None) or Log()
        # wsgi.errors: made here, in the parent, so a child allocates none.
        # It is flushed after every request, so no partial line crosses one.
        self.errors = ErrorStream(self.log)
        # The environ entries every request shares: build_environ copies them.
        self.environ_base = {
            "SCRIPT_NAME": self.script_name, "SERVER_NAME": self.server_name,
            "SERVER_PORT": self.server_port,
            "SERVER_SOFTWARE": SERVER_SOFTWARE, "wsgi.version": (1, 0),
            "wsgi.url_scheme": self.url_scheme, "wsgi.errors": self.errors,
            "wsgi.multithread": False, "wsgi.multiprocess": True,
            "wsgi.run_once": not self.keep_alive, "wsgi.input_terminated": True,
            "wsgi.file_wrapper": FileWrapper,
        }
        if kw:
            raise TypeError("unknown HandlerConfig settings: " + ", ".join(sorted(kw)))

    def __setattr__(self, name, value):
        if getattr(self, "_frozen", False):
            raise AttributeError("HandlerConfig is read-only")
        object.__setattr__(self, name, value)

    def freeze(self):
        object.__setattr__(self, "_frozen", True)
        return self



class ErrorStream:
    """``wsgi.errors``: text in, whole lines out through the error log."""

    def __init__(self, log):
        self.log = log
        self.partial = ""

    def write(self, text):
        text = self.partial + text
        lines = text.split("\n")
        self.partial = lines.pop()
        if lines:
            self.log.write_line(self.log.error_fd, "\n".join(lines))
        return len(text)

    def writelines(self, seq):
        for text in seq:
            self.write(text)

    def flush(self):
        if self.partial:
            self.log.write_line(self.log.error_fd, self.partial)
            self.partial = ""


# What sendfile may send as it is: a file opened in binary mode, unwrapped.
SENDFILE_TYPES = (io.BufferedReader, io.BufferedRandom, io.FileIO)


class FileWrapper:
    """``wsgi.file_wrapper``: iterable over a file; sent with sendfile() when possible."""

    def __init__(self, filelike, blksize=8192):
        self.filelike = filelike
        self.blksize = blksize
        if hasattr(filelike, "close"):
            self.close = filelike.close

    def __iter__(self):
        return self

    def __next__(self):
        data = self.filelike.read(self.blksize)
        if data:
            return data
        raise StopIteration

    def sendable_size(self):
        """Bytes from the current position to EOF of a regular file whose
        bytes are what read() gives (open(path, "rb"), or a proxy of one
        under ``.file``: Django's File, a NamedTemporaryFile), or None:
        iterated then.  A gzip or codecs file has the fileno of the
        compressed file, and /proc's files say they are empty."""
        filelike = raw = self.filelike
        for _ in range(3):   # Django's FieldFile -> File -> the open file
            if isinstance(raw, SENDFILE_TYPES):
                break
            raw = getattr(raw, "file", None)
        else:
            return None
        try:
            st = os.fstat(raw.fileno())
            if st.st_mode & 0o170000 != 0o100000:   # not S_IFREG
                return None
            if not st.st_size and (not hasattr(raw, "peek") or raw.peek(1)):
                return None   # /proc's: "empty", yet read() gives its text
            return max(st.st_size - filelike.tell(), 0)
        except (AttributeError, OSError, ValueError):
            return None


# --------------------------------------------------------------------------
# The response: start_response / write exactly as PEP 3333 says.
# --------------------------------------------------------------------------

class Response:
    """Per-request response state and the WSGI callables."""

    def __init__(self, conn, request, config):
        self.conn = conn
        self.request = request
        self.config = config
        self.status = None
        self.headers = None
        self.headers_sent = False
        self.chunked = False
        self.length = None          # Content-Length promised, if any
        self.sent_body = 0
        self.keep_alive = False
        self.no_body = request.method == "HEAD"
        self.failed = None          # status logged when the app failed
        self.stream = None          # wsgi.input, to see a body error the app swallowed
        self.last = False           # --max-requests-per-connection reached
        self.app_close = False      # the app sent Connection: close
        self.done = False           # the app's call is over: write() refuses
        self.head = b""             # the head, not sent yet: it goes with the first body bytes

    # PEP 3333 "The start_response() Callable"
    def start_response(self, status, headers, exc_info=None):
        if exc_info:
            try:
                if self.headers_sent and not self.head:
                    raise exc_info[1].with_traceback(exc_info[2])
            finally:
                exc_info = None   # avoid a reference cycle (PEP 3333)
            if self.headers_sent:
                self.unsend_head()
            self.app_close = False   # the new headers replace the old ones
        elif self.status is not None:
            raise ResponseError("start_response called a second time without exc_info")
        # check_status and check_headers, for the common case in one loop and
        # one match (each Python function a child runs costs it pages); any
        # other case goes through them, and they name what is wrong.
        lines = [status] if type(status) is str and type(headers) is list else None
        for item in headers if lines is not None else ():
            if (type(item) is not tuple or len(item) != 2 or type(item[0]) is not str
                    or type(item[1]) is not str or item[0].lower() in HOP_BY_HOP):
                lines = None
                break
            lines.append(item[0] + "\r" + item[1])
        if lines is not None:
            text = "\n".join(lines)
            # One "\n" per header: a CR or LF inside a name or value cannot fake a line.
            if text.count("\n") == len(headers) and RESPONSE_HEAD_RE.fullmatch(text):
                self.status, self.headers = status, headers[:]
                return self.write
        self.status = check_status(status)
        self.headers = check_headers(headers)
        # Only a dropped header (Connection, Keep-Alive) shortens the list.
        self.app_close = len(self.headers) != len(headers) and app_closes(headers)
        return self.write

    def unsend_head(self):
        """Forget a head that was built but has not gone out (it waits for
        the first body bytes, and a HEAD or 204 response has none): PEP
        3333's "headers sent" means sent, so start_response with exc_info
        may still replace it and a failure still gets its 500."""
        self.head, self.headers_sent = b"", False
        self.length, self.chunked, self.keep_alive = None, False, False
        self.no_body = self.request.method == "HEAD"

    def write(self, data):
        if self.status is None:
            raise ResponseError("write() before start_response()")
        if self.done:
            # A write callable kept from an earlier request on a persistent
            # connection: its bytes would land inside the next response.
            raise ResponseError("write() of a response that has already ended")
        if not isinstance(data, (bytes, bytearray, memoryview)):
            raise ResponseError("response body must be bytes, not %s" % type(data).__name__)
        if not self.headers_sent:
            self.send_head(None)
        self.send_body(bytes(data))
        self.out(b"")   # PEP 3333: write() transmits; the head at least goes now

    def status_code(self):
        return int(self.status[:3])

    def send_head(self, known_length):
        """Decide the framing (RFC 9112 6.3) and build the head, which goes
        out with the first body bytes (``out``)."""
        if self.stream is not None and self.stream.error is not None:
            # The app swallowed a body error and answered anyway: the client
            # gets the real status (run_app renders it, with Connection: close).
            raise self.stream.error
        names, declared = [], []   # loops, not comprehensions: each is a function call
        for name, value in self.headers:
            name = name.lower()
            names.append(name)
            if name == "content-length":
                declared.append(value)
        code = int(self.status[:3])
        self.no_body = self.no_body or code < 200 or code in NO_BODY_STATUSES
        if declared and code != 204 and not self.config.close_delimited:   # the common case
            if len(declared) > 1 or not DIGITS_RE.fullmatch(declared[0].encode("latin-1")):
                raise ResponseError("invalid Content-Length from the app: %r" % declared)
            self.length = int(declared[0])
        else:
            self.frame_undeclared(known_length, declared)
        self.keep_alive = self.can_keep_alive() if self.config.keep_alive else False
        lines = ["HTTP/1.1 " + self.status]
        for header in self.headers:
            lines.append("%s: %s" % header)
        if "date" not in names:
            lines.append("Date: " + http_date())
        if "server" not in names:
            lines.append("Server: " + SERVER_SOFTWARE)
        if not self.keep_alive:
            lines.append("Connection: close")
        elif self.request.version < (1, 1):
            lines.append("Connection: keep-alive")
        head = "\r\n".join(lines) + "\r\n\r\n"
        if self.config.trace:
            self.config.log.trace("> ", head.rstrip("\r\n").replace("\r\n", "\n"))
        self.headers_sent = True
        self.head = head.encode("latin-1")

    def frame_undeclared(self, known_length, declared):
        """send_head's framing when the app gave no Content-Length, or one
        that is not sent: the lab's close-delimited responses
        (--lab-parent-keeps-client) ignore it, and a 204 never has one (RFC
        9110 8.6; a 304 may), as gunicorn and waitress drop the app's."""
        if declared:
            self.headers = [h for h in self.headers if h[0].lower() != "content-length"]
        if self.config.close_delimited or self.no_body:
            pass
        elif known_length is not None:
            self.length = known_length
            self.headers.append(("Content-Length", str(known_length)))
        elif self.request.version >= (1, 1):
            self.chunked = True
            self.headers.append(("Transfer-Encoding", "chunked"))

    def out(self, data):
        """Send data, with the head in the same write while it is pending: one
        syscall, and no small segment for Nagle to hold back (RFC 896)."""
        if self.head and len(data) <= COALESCE_MAX_BYTES:
            data, self.head = self.head + data, b""
        elif self.head:
            self.conn.send(self.head)
            self.head = b""
        if data:
            self.conn.send(data)

    def can_keep_alive(self):
        if (not self.config.keep_alive or not self.request.keep_alive or self.last
                or self.app_close or Drain.requested):
            return False   # RFC 9112 9.6: the last response says Connection: close
        reader = self.stream.reader if self.stream is not None else None
        if isinstance(reader, LengthReader) and reader.remaining > MAX_UNREAD_BODY_BYTES:
            return False   # too much unread body to drain: the connection ends
        if isinstance(reader, ChunkedReader) and not reader.done:
            return False   # unread, of a length nobody knows: it may be too much to drain
        if reader is not None and self.stream.on_first_read is not None:
            # Expect: 100-continue, and the app answers without reading: no
            # 100 went out, so the client may send the body or not (RFC 9110
            # 10.1.1).  Draining would take its next request for the body.
            return False
        if self.config.close_delimited:
            return False
        # A close-delimited body (HTTP/1.0, unknown length) ends the connection.
        return self.no_body or self.chunked or self.length is not None

    def send_body(self, data):
        if not data or self.no_body:
            return
        if self.length is not None:
            room = self.length - self.sent_body
            if len(data) > room:
                self.out(data[:room])
                self.sent_body += room
                raise ResponseError("app sent more than its Content-Length of %d" % self.length)
        self.sent_body += len(data)
        try:
            if self.chunked:
                self.out(b"%x\r\n%s\r\n" % (len(data), data))
            else:
                self.out(data)
        except BaseException:
            # What did not go out of this send (Connection.unsent) ends with
            # the body's bytes; a chunk's CRLF follows them.
            tail = 2 if self.chunked else 0
            self.sent_body -= min(max(self.conn.unsent - tail, 0), len(data))
            raise

    def finish(self):
        if self.stream is not None and self.stream.error is not None:
            # The app swallowed a body error (a bad trailer, a body cut short)
            # and answered anyway: before the head that is the error's status
            # (send_head), after it a cut connection, never a whole response.
            raise self.stream.error
        if not self.headers_sent:
            self.send_head(0)
        self.out(b"0\r\n\r\n" if self.chunked else b"")
        if self.chunked:
            return
        if self.length is not None and self.sent_body < self.length and not self.no_body:
            raise ResponseError("app sent %d of its Content-Length of %d bytes"
                                % (self.sent_body, self.length))

    def send_file(self, wrapper):
        """Send a FileWrapper with os.sendfile when the framing allows it."""
        size = wrapper.sendable_size()
        if size is None or self.config.close_delimited:
            return False
        if not self.headers_sent:
            self.send_head(size)
        if self.chunked or self.no_body:
            return self.no_body
        self.out(b"")   # the head, before the kernel sends the file
        count = size if self.length is None else min(size, self.length - self.sent_body)
        if count <= 0:
            return True   # socket.sendfile() rejects count=0: nothing to send
        self.conn.sock.settimeout(self.config.send_timeout)
        start = wrapper.filelike.tell()
        try:
            # socket.sendfile() starts at offset 0 unless told: start where the
            # app left the file, as iterating it would.
            sent = self.conn.sock.sendfile(wrapper.filelike, start, count)
        except BaseException as exc:
            # sendfile() leaves the file where it stopped: what went out.
            self.sent_body += max(wrapper.filelike.tell() - start, 0)
            raise gone(exc) from None
        self.sent_body += sent
        return True


# Where a response is sent once the app has given it (raised_in_our_send).
SEND_CODES = (Connection.send.__code__, Connection.send_rest.__code__,
              Response.send_file.__code__)


def raised_in_our_send(exc):
    """True if ``exc`` came while the response was being sent (the app had
    given it), not while the app ran."""
    tb = exc.__traceback__
    while tb is not None:
        if tb.tb_frame.f_code in SEND_CODES:
            return True
        tb = tb.tb_next
    return False


# --------------------------------------------------------------------------
# The environ (PEP 3333 "environ Variables").
# --------------------------------------------------------------------------

# RFC 3986 2.1:  pct-encoded = "%" HEXDIG HEXDIG  (anything else stays as sent,
# as urllib.parse.unquote does: "%2" or "%+1" is not an escape).
PCT_ENCODED_RE = re.compile(r"%([0-9A-Fa-f]{2})")
# PEP 3333: the two request fields whose environ keys have no HTTP_ prefix.
UNPREFIXED_KEYS = {"content-type": "CONTENT_TYPE", "content-length": "CONTENT_LENGTH"}


def unquote_path(path):
    """Percent-decode to bytes, then latin-1: PEP 3333's native-string rule.

    The target is ASCII (the request-line grammar), so byte N is chr(N)."""
    if "%" not in path:
        return path
    return PCT_ENCODED_RE.sub(lambda m: chr(int(m.group(1), 16)), path)


def build_environ(request, addr, config, stream):
    """The environ of one request: one function, each field of the request
    read once (a child copies the pages of each function it runs)."""
    method, target, version, headers, path, query, host, body_kind = request[:8]
    environ = config.environ_base.copy()
    environ["REQUEST_METHOD"] = method
    environ["PATH_INFO"] = unquote_path(path) if "%" in path else path
    if config.script_name:
        mount_path(environ, config.script_name)
    environ["QUERY_STRING"] = query
    environ["REQUEST_URI"] = environ["RAW_URI"] = target
    environ["SERVER_PROTOCOL"] = "HTTP/%d.%d" % version
    environ["REMOTE_ADDR"] = addr[0] if addr else ""
    environ["REMOTE_PORT"] = str(addr[1]) if addr and len(addr) > 1 else ""
    environ["wsgi.input"] = stream
    for name, value in headers:
        if "_" in name:
            continue  # "X_Forwarded_For" must not impersonate "X-Forwarded-For"
        key = UNPREFIXED_KEYS.get(name) or "HTTP_" + name.upper().replace("-", "_")
        if key in environ:
            environ[key] += ("; " if key == "HTTP_COOKIE" else ", ") + value
        else:
            environ[key] = value
    if body_kind == "chunked":
        environ.pop("CONTENT_LENGTH", None)
    if host is not None:
        # RFC 9112 3.2.2: an absolute-form target's authority replaces Host,
        # so frameworks that build URLs from HTTP_HOST see the same host.
        environ["HTTP_HOST"] = host
    if host:
        server, _, port = host.rpartition(":") if host.rfind(":") > host.rfind("]") else (host, "", "")
        environ["SERVER_NAME"] = server or host
        if port:
            environ["SERVER_PORT"] = port
    if config.forwarded is not None and not environ.keys().isdisjoint(config.forwarded.headers):
        config.forwarded(environ)
    return environ


def mount_path(environ, prefix):
    """SCRIPT_NAME and PATH_INFO for an app mounted under ``prefix``
    ($SCRIPT_NAME), as gunicorn splits them: /app/x is "/app" and "/x", /app
    is "/app" and "".  A path outside the mount (/other, /apple) reaches the
    app whole, with SCRIPT_NAME "" (gunicorn answers it with an error)."""
    path = environ["PATH_INFO"]
    if path == prefix or path.startswith(prefix + "/"):
        environ["PATH_INFO"] = path[len(prefix):]
    else:
        environ["SCRIPT_NAME"] = ""


# --------------------------------------------------------------------------
# One connection.
# --------------------------------------------------------------------------


class Drain:
    """The parent's notice to a kept-alive child to end its connection: SIGHUP,
    sent on reload (so the next request on a proxy's pooled connection meets
    the new code) and on a graceful stop (so an idle connection does not hold
    the stop for --keep-alive).  The parent installs ``note`` as the child's
    SIGHUP handler before the child may receive signals; the response in
    progress then says Connection: close, and an idle connection is closed
    at once (IdleConnection.wait wakes up on the signal's wake-up fd)."""
    requested = False

    @staticmethod
    def note(signum, frame):
        Drain.requested = True

    @staticmethod
    def drain_now():
        Drain.requested = True


def serve_connection(sock, addr, app, config, initial=b"", accepted_at=None):
    """Serve one connection in a forked child; return the child's exit status."""
    if config.keep_alive:
        set_no_delay(sock)
    handler = ConnectionHandler(sock, addr, app, config, initial, accepted_at)
    try:
        return handler.run()
    finally:
        try:
            if isinstance(sock, socket.SocketType):
                close_socket(sock)
            else:
                sock.close()   # a test's stand-in
        except OSError:
            pass


class IdleConnection:
    """The wait between two requests of a kept-alive connection (--keep-alive):
    over when the client sends its next request, after --keep-alive idle
    seconds, at EOF, or on the parent's Drain notice, which hands the
    connection back to the parent.  Made at the first idle wait, so a child
    without keep-alive never runs any of it."""

    def __init__(self, conn, config):
        self.conn = conn
        self.config = config
        self.wake_fd = None       # drain_wakeup's pipe
        self.handed_back = False

    def wait(self):
        """True once the client sends something, False after --keep-alive idle
        seconds, at EOF, or on the parent's Drain notice (RFC 9112 9.5: an idle
        connection may be closed at any time; a client retries a request it
        had not sent)."""
        if self.conn.buf:
            return True
        if not Drain.requested:
            import select
            poller = select.poll()
            poller.register(self.conn.sock, select.POLLIN)
            wake = self.drain_wakeup()
            if wake is not None:
                poller.register(wake, select.POLLIN)
            events = poller.poll(self.config.keep_alive * 1000.0)
            if not Drain.requested:
                return any(fd != wake for fd, _ in events)
        self.hand_back()
        return False

    def hand_back(self):
        """On the Drain notice, an idle connection goes back to the parent
        (SCM_RIGHTS) instead of being closed: the parent holds it like a new
        one, and forks a child, with the code of now, for its next request.
        Closing it instead races the client: a proxy may be sending a request
        on it that very moment, and nginx does not retry a POST that met a
        closed pooled connection (502).  Without the parent's socket (a test's
        config) the connection is just closed."""
        if self.config.handback is None or self.conn.buf:
            return
        try:
            socket.send_fds(self.config.handback, [b"idle"], [self.conn.sock.fileno()])
            self.handed_back = True   # the parent's now: not to be shut down here
        except OSError as exc:
            self.config.log.warning("cannot hand the idle connection back to the parent: %s" % exc)

    def drain_wakeup(self):
        """A pipe the SIGHUP of Drain writes to (signal.set_wakeup_fd), so an
        idle poll wakes up; made at the first idle wait, None if it cannot be."""
        if self.wake_fd is None:
            import signal
            try:
                read_fd, write_fd = os.pipe()
                os.set_blocking(write_fd, False)
                signal.set_wakeup_fd(write_fd, warn_on_full_buffer=False)
                self.wake_fd = read_fd
            except (OSError, ValueError):
                self.wake_fd = -1
        return self.wake_fd if self.wake_fd >= 0 else None


class ConnectionHandler:
    """The per-connection state: one or more requests on one socket."""

    def __init__(self, sock, addr, app, config, initial, accepted_at):
        self.conn = Connection(sock, config, initial)
        self.addr = addr
        self.app = app
        self.config = config
        self.log = config.log
        self.started = accepted_at or time.monotonic()
        self.status = EXIT_OK
        self.unread_body = False
        self.errors = config.errors

    def run(self):
        deadline = self.started + self.config.header_timeout
        idle = None
        for count in range(max(self.config.max_requests, 1)):
            head = b""
            try:
                head = self.conn.read_head(deadline)
                if self.config.trace:
                    self.log.trace("< ", head.decode("latin-1").rstrip("\r\n").replace("\r\n", "\n"))
                request = parse_head(head, self.config.limits)
            except ClientGone as exc:
                self.log.debug("client %s: %s" % (format_addr(self.addr), exc))
                return self.status
            except HTTPError as exc:
                if count and isinstance(exc, RequestTimeout) and not self.conn.buf:
                    # RFC 9112 9.5: an idle persistent connection is just
                    # closed; a 408 there could cross a client's new request.
                    return self.status
                self.reject(exc, head or bytes(self.conn.buf[:5]))
                return self.status
            if self.config.set_title is not None:
                self.set_title(request)
            last = count + 1 >= self.config.max_requests
            if not self.handle(request, last) or last:
                break
            idle = idle or IdleConnection(self.conn, self.config)
            if not idle.wait():
                break
            # --header-timeout applies to each head, from its first byte.
            deadline = time.monotonic() + self.config.header_timeout
        if idle is not None and idle.handed_back:
            return self.status   # the parent's connection now: not to be touched here
        if self.conn.buf or self.unread_body:
            self.conn.close_gracefully()
        elif not self.config.close_delimited:
            # Not in lab 3 (--lab-parent-keeps-client), whose point is the
            # tutorial's child that only closes: its client waits for the
            # parent's copy of the socket.
            self.conn.shut_down()
        return self.status

    def set_title(self, request):
        """The child's process title: client and request line, without the
        query string unless --title-with-query (tokens travel there, and any
        user of the machine can read a title with ps)."""
        line = request.raw_request_line
        if not self.config.title_query and "?" in line:
            method, _, rest = line.partition(" ")
            target, _, version = rest.rpartition(" ")
            line = "%s %s?... %s" % (method, target.partition("?")[0], version)
        self.config.set_title("%s: child %s %s" % (self.config.proc_name,
                                                   format_addr(self.addr), line[:200]))

    def reject(self, exc, head=b""):
        """Answer a bad request and close: nothing after it is parsed.  A
        HEAD gets the head alone (RFC 9110 9.3.2)."""
        self.log.info("client %s: %d %s: %s" % (
            format_addr(self.addr), exc.status, exc.reason, exc.detail))
        data = error_response(exc.status)
        if head.startswith(b"HEAD "):
            data = data[:data.index(b"\r\n\r\n") + 4]
        try:
            self.conn.send(data)
        except ClientGone:
            return
        self.conn.close_gracefully()

    def handle(self, request, last=False):
        """Run the app for one request; True if the connection may go on."""
        started = time.time()
        reader = self.body_reader(request) if request.body_kind != "none" else NO_BODY
        response = Response(self.conn, request, self.config)
        response.last = last
        if reader is NO_BODY:
            stream = EMPTY_INPUT   # reading it changes nothing: one for all requests
        else:
            stream = InputStream(reader, self.continue_callback(request, response)
                                 if request.expect_continue else None)
        response.stream = stream
        errors = self.errors
        environ = build_environ(request, self.addr, self.config, stream)
        if reader is not NO_BODY and isinstance(reader, ChunkedReader):
            environ["forkserver.trailers"] = reader.trailers
        # Each step behind a test, not a call that returns at once: every
        # function a child runs costs it copy-on-write pages (serve_forever).
        if self.config.request_timeout:
            self.arm_request_timer()
        if reader is not NO_BODY:
            self.conn.start_body()
        try:
            ok = self.run_app(environ, response, request)
        finally:
            self.conn.end_body()
            if self.config.request_timeout:
                self.arm_request_timer(0)
        if errors.partial:
            errors.flush()
        if self.log.access_fd is not None:
            self.access_log(environ, response, started)
        if self.config.post_request is not None:
            self.config.post_request(request, environ, response)
        self.unread_body = reader is not NO_BODY and not reader.done
        if not ok or stream.error is not None or not response.keep_alive:
            return False  # never parse on after a framing error
        self.unread_body = not drain_unread(reader)   # False: drained, nothing left unread
        return not self.unread_body

    def arm_request_timer(self, seconds=None):
        """With keep-alive, --timeout applies per request: the child re-arms
        the deadline the parent gave it (SIGALRM raises TimedOut: the handler
        the parent set once, which every child inherits)."""
        timeout = self.config.request_timeout
        if timeout:
            import signal
            signal.setitimer(signal.ITIMER_REAL, timeout if seconds is None else seconds)

    def body_reader(self, request):
        timeout = self.config.read_timeout
        if request.body_kind == "length":
            return LengthReader(self.conn, request.content_length, timeout)
        if request.body_kind == "chunked":
            return ChunkedReader(self.conn, self.config.limits, timeout)
        return NO_BODY

    def continue_callback(self, request, response):
        if not request.expect_continue:
            return None

        def send_continue():
            if not response.headers_sent or response.head:   # nothing final out yet
                self.conn.send(b"HTTP/1.1 100 Continue\r\n\r\n")
        return send_continue

    def run_app(self, environ, response, request):
        """Call the app and send its response; False if the connection is spoilt.
        The pre_request hook runs as part of it: --timeout in the hook is the
        request's (a 500), as in the app (what the hook raises, run_hook logs)."""
        result = None
        try:
            if self.config.pre_request is not None:
                self.config.pre_request(request)
            result = self.app(environ, response.start_response)
            self.send_result(result, response)
            return True
        except ClientGone as exc:
            self.log.debug("client %s went away: %s" % (format_addr(self.addr), exc))
            response.failed = 499   # nginx's "client closed request"
            return False
        except HTTPError as exc:
            return self.fail(response, exc.status, "client %s: %d %s: %s" % (
                format_addr(self.addr), exc.status, exc.reason, exc.detail), log_traceback=False)
        except BaseException as exc:
            # Any exception, SystemExit and KeyboardInterrupt too: before the
            # head a logged 500, after it a cut connection; never an empty
            # reply, never a partial body passed off as whole.
            return self.app_failed(response, environ, exc)
        finally:
            response.done = True   # a write() kept by the app now raises
            if type(result) is not list and hasattr(result, "close"):
                self.close_result(result)

    def app_failed(self, response, environ, exc):
        """The app (or its response) failed: the exit status and log say how."""
        request = "%s %s" % (environ["REQUEST_METHOD"], environ.get("REQUEST_URI", ""))
        self.status = EXIT_ERROR
        if isinstance(exc, MemoryError):
            self.status = EXIT_MEMORY_LIMIT
            message = "memory limit hit while serving %s" % environ["PATH_INFO"]
        elif isinstance(exc, CPULimitExceeded):
            self.status = EXIT_CPU_LIMIT
            message = "CPU limit hit while serving %s" % environ["PATH_INFO"]
        elif isinstance(exc, TimedOut):   # the traceback says where the app was
            self.status = EXIT_TIMEOUT
            if raised_in_our_send(exc):   # the app was done: no traceback of ours
                self.log.warning("--timeout reached sending the response to %s: the client "
                                 "reads it too slowly, or not at all (%d bytes of its body "
                                 "sent, some perhaps still in the kernel's buffers)"
                                 % (request, response.sent_body))
                return self.fail(response, 500, None)
            message = "--timeout reached serving %s" % request
        elif isinstance(exc, ResponseError):
            message = "app broke PEP 3333 serving %s: %s" % (request, exc)
        elif isinstance(exc, Exception):
            message = "error serving %s" % request
        else:
            message = "app raised %s serving %s" % (type(exc).__name__, request)
        return self.fail(response, 500, message)

    def close_result(self, result):
        try:
            result.close()
        except BaseException:   # SystemExit too: logged, never out of the child's loop
            self.log.exception("error closing the app's iterable")

    def send_result(self, result, response):
        if type(result) is not list and isinstance(result, FileWrapper) and response.status is not None:
            if response.send_file(result):
                response.finish()
                return
        known = None
        if isinstance(result, (list, tuple)):
            known = 0   # the length, if every item is bytes
            for chunk in result:
                if not isinstance(chunk, bytes):
                    known = None
                    break
                known += len(chunk)
        for chunk in result:
            if response.status is None:
                raise ResponseError("app returned a body before calling start_response()")
            if not isinstance(chunk, (bytes, bytearray)):
                raise ResponseError("app yielded %s, not bytes" % type(chunk).__name__)
            if chunk or known is not None:
                if not response.headers_sent:
                    response.send_head(known)
                response.send_body(bytes(chunk))
        if response.status is None:
            raise ResponseError("app returned without calling start_response()")
        response.finish()

    def fail(self, response, status, message, log_traceback=True):
        """Log (unless ``message`` is None: logged already); send an error
        response if nothing was sent yet, else cut the connection."""
        if message is None:
            pass
        elif log_traceback:
            self.log.exception(message)
        else:
            self.log.info(message)
        response.failed = status
        if response.headers_sent and response.head:
            response.unsend_head()   # built, but nothing went out: the error replaces it
        if not response.headers_sent:
            # The access log's bytes are those of the response really sent.
            data = error_response(status)
            if response.request.method == "HEAD":   # RFC 9110 9.3.2: the head alone
                data = data[:data.index(b"\r\n\r\n") + 4]
            response.sent_body = len(data) - data.index(b"\r\n\r\n") - 4
            try:
                self.conn.send(data)
                self.conn.close_gracefully()
            except ClientGone:
                pass
            return False
        # Headers are out: cut the connection with a reset, so the client can
        # never take a partial body for a whole one.
        abort(self.conn.sock)
        return False

    def access_log(self, environ, response, started):
        log = self.log
        if log.access_fd is None:
            return
        if response.failed and response.headers_sent and not response.head:
            # Cut short after its head went out: the status the client got, and
            # the body bytes that went out (as nginx logs it: send_body and
            # send_file count them); the error log says why.
            status = response.status_code()
        else:
            status = response.failed or (response.status_code() if response.status else 500)
        log.access(access_atoms(environ, response, status, started))


# Imported last, on purpose: the part's objects are then made after this
# module's in the parent's heap, not between its imports and its classes.
# Imported at the top, it put them among the objects every child writes, and
# each Flask child wrote 7 to 8 pages more (paired under load, 10 rounds:
# +7.0 [+2.6, +11.5] and +8.3 [+2.5, +14.0] faults against the same code in
# one module; imported here +1.8 [-3.3, +6.9], docs/performance.md).
from forkparts.pep3333 import (  # noqa: E402
    RESPONSE_HEAD_RE, ResponseError, app_closes, check_headers, check_status)
