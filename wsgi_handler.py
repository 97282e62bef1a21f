"""The child's side of forkserver: one connection in, one or more responses out.

    read head -> parse_head (pure, no socket) -> body reader (wsgi.input)
              -> environ -> app -> response writer -> close

The parent (``forkserver``) forks once per connection and calls
``serve_connection()`` exactly once in the child, which returns an exit status.
This module never forks, never installs signal handlers and never imports
``forkserver``.  It stays light: every module imported here is paid for again
by every child, so only ``re``, ``socket``, ``time``, ``os`` and the small
``http.HTTPStatus`` enum are used at import time.

The parser is strict on purpose (RFC 9112 / RFC 9110).  Each rule below names
its reason; docs/security.md is the table of them all.
"""

import operator
import os
import re
import socket
import time
from _socket import socket as _c_socket
from http import HTTPStatus

from forkparts import __version__

SERVER_SOFTWARE = "forkserver/" + __version__

# --------------------------------------------------------------------------
# Limits.  Each is a default: forkserver's CLI can change them through Limits.
# --------------------------------------------------------------------------

# RFC 9112 3: "It is RECOMMENDED that all HTTP senders and recipients support,
# at a minimum, request-line lengths of 8000 octets."  414 past it.
MAX_REQUEST_LINE_BYTES = 8 * 1024
# gunicorn's limit_request_fields is 100; beyond it 431 (RFC 6585 5).
MAX_HEADER_FIELDS = 100
# One field line; gunicorn's limit_request_field_size is 8190.  431.
MAX_FIELD_BYTES = 8 * 1024
# The whole head (request line + fields), as waitress's max_request_header_size
# default of 256 KiB but tighter: 64 KiB is far above any real browser.  431.
MAX_HEAD_BYTES = 64 * 1024
# Request body, configurable with --max-body.  413 past it.
MAX_BODY_BYTES = 1024 * 1024 * 1024
# A chunk-size line: 16 hex digits plus extensions.  h11 bounds the whole
# chunk header; extensions are never used by real clients, so 4 KiB is ample.
MAX_CHUNK_LINE_BYTES = 4 * 1024
# All trailer fields of a chunked body together (they count like a head).
MAX_TRAILER_BYTES = 16 * 1024
# 16 hex digits is 2**64 - 1: anything longer is an overflow attempt.
MAX_CHUNK_SIZE_DIGITS = 16
# 19 decimal digits fit in a signed 64-bit integer.
MAX_CONTENT_LENGTH_DIGITS = 19

# Timeouts, in seconds.
HEADER_TIMEOUT_SECONDS = 10.0      # whole head must arrive within it (408)
READ_TIMEOUT_SECONDS = 15.0        # a stalled body read (408); below --timeout
# After a grace of HEADER_TIMEOUT_SECONDS, a request body must come at least
# this fast (bytes/s), or 408: Apache mod_reqtimeout's default MinRate.
MIN_BODY_RATE = 500.0
SEND_TIMEOUT_SECONDS = 30.0        # a client that does not read our response
# After an error response: shut down our side, then read and discard what the
# client still sends so that close() does not turn into a reset that destroys
# the response in flight (RFC 9112 9.6, "tear-down").
DRAIN_TIMEOUT_SECONDS = 1.0
MAX_DRAIN_BYTES = 1024 * 1024
# With keep-alive, a body the app left unread is drained up to this much before
# the next request; more than that and the connection is closed instead.
MAX_UNREAD_BODY_BYTES = 64 * 1024

RECV_BYTES = 64 * 1024
# A body chunk up to this size is copied behind the head into one send().
COALESCE_MAX_BYTES = 64 * 1024
SENDFILE_BLOCK_BYTES = 1024 * 1024

# Child exit statuses (the parent decodes them in its log).
EXIT_OK = 0
EXIT_ERROR = 1            # the app raised, or our own code failed
EXIT_MEMORY_LIMIT = 3     # --limit-memory was hit (MemoryError)
EXIT_CPU_LIMIT = 4        # --limit-cpu was hit (SIGXCPU)
EXIT_HOOK_FAILED = 5      # the post_fork hook raised
EXIT_NAMES = {
    EXIT_ERROR: "error (see the traceback above)",
    EXIT_MEMORY_LIMIT: "memory limit hit (--limit-memory)",
    EXIT_CPU_LIMIT: "CPU limit hit (--limit-cpu)",
    EXIT_HOOK_FAILED: "post_fork hook failed",
}

# --------------------------------------------------------------------------
# Protocol vocabulary, from the RFC ABNF.
# --------------------------------------------------------------------------

# RFC 9110 5.6.2:  token = 1*tchar
#   tchar = "!" / "#" / "$" / "%" / "&" / "'" / "*" / "+" / "-" / "." /
#           "^" / "_" / "`" / "|" / "~" / DIGIT / ALPHA
_TCHAR = rb"[!#$%&'*+\-.^_`|~0-9A-Za-z]"
TOKEN_RE = re.compile(_TCHAR + rb"+")
# RFC 9110 5.5:  field-value = *field-content
#   field-content = field-vchar [ 1*( SP / HTAB / field-vchar ) field-vchar ]
#   field-vchar = VCHAR / obs-text      (no CTLs: NUL, CR, LF are rejected)
_VCHAR = rb"[\x21-\x7e\x80-\xff]"
_FIELD_CONTENT = _VCHAR + rb"(?:[\t\x20-\x7e\x80-\xff]*" + _VCHAR + rb")?"
FIELD_VALUE_RE = re.compile(rb"(?:" + _FIELD_CONTENT + rb")?")
# RFC 9112 3:  request-line = method SP request-target SP HTTP-version
#   HTTP-version = HTTP-name "/" DIGIT "." DIGIT   (exactly one SP between)
REQUEST_LINE_RE = re.compile(rb"(" + _TCHAR + rb"+) ([\x21-\x7e]+) HTTP/([0-9])\.([0-9])")
# RFC 9112 3.2.2:  absolute-form = absolute-URI  (scheme "://" authority ...)
ABSOLUTE_FORM_RE = re.compile(r"([A-Za-z][A-Za-z0-9+.\-]*)://([^/?#]*)(.*)", re.S)
# RFC 3986 3.2.2/3.2.3: host = IP-literal / IPv4address / reg-name; port = *DIGIT
HOST_RE = re.compile(r"(?:\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9\-._~%!$&'()*+,;=]+)(?::[0-9]*)?")
# RFC 9112 3.2.3:  authority-form = uri-host ":" port   (the port is required)
AUTHORITY_FORM_RE = re.compile(r"(?:\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9\-._~%!$&'()*+,;=]+):[0-9]+")
# RFC 9112 7.1:  chunk-size = 1*HEXDIG;  chunk-ext = *( BWS ";" BWS ext-name
#   [ BWS "=" BWS ext-val ] );  ext-val = token / quoted-string
_QUOTED = rb'"(?:[\t\x20\x21\x23-\x5b\x5d-\x7e\x80-\xff]|\\[\t\x20-\x7e\x80-\xff])*"'
CHUNK_LINE_RE = re.compile(
    rb"([0-9A-Fa-f]{1,%d})((?:[ \t]*;[ \t]*" % MAX_CHUNK_SIZE_DIGITS + _TCHAR
    + rb"+(?:[ \t]*=[ \t]*(?:" + _TCHAR + rb"+|" + _QUOTED + rb"))?)*)")
# PEP 3333: status is "999 Reason phrase"; RFC 9112 4: status-line =
#   HTTP-version SP status-code SP [ reason-phrase ], reason-phrase =
#   1*( HTAB / SP / VCHAR / obs-text ).  The app gives the final response:
#   1xx is interim (RFC 9110 15.2), so it is not taken here.
STATUS_RE = re.compile(r"[2-9][0-9]{2} [\t\x20-\x7e\x80-\xff]*")
# Any status check_status can take: a 1xx (then refused by name) or a bare
# code ("200"), which gets its standard reason phrase.
ANY_STATUS_RE = re.compile(r"[1-9][0-9]{2}(?: [\t\x20-\x7e\x80-\xff]*)?")
DIGITS_RE = re.compile(rb"[0-9]+")
# STATUS_RE, then each header as name CR value (TOKEN_RE, FIELD_VALUE_RE),
# one per line: start_response checks a whole common response in one match.
RESPONSE_HEAD_RE = re.compile(
    STATUS_RE.pattern + r"(?:\n" + _TCHAR.decode("ascii") + r"+\r(?:"
    + _FIELD_CONTENT.decode("latin-1") + r")?)*")
# A CR not followed by LF, or an LF not preceded by CR (RFC 9112 2.2: bare CR
# MUST be rejected or replaced; bare LF we reject too, as gunicorn 22 does, to
# avoid disagreeing with a proxy about where a line ends).
BARE_EOL_RE = re.compile(rb"\r(?!\n)|(?<!\r)\n")
# The common head in one match, on the latin-1 text: an origin-form target
# with no fragment (RFC 9112 3.2.1), HTTP/1.x, and field lines of the grammar
# above.  parse_head takes it in one pass; any other head goes through the
# line-by-line parser, which names what is wrong.
_TCHAR_TEXT = _TCHAR.decode("ascii")
_CONTENT_TEXT = _FIELD_CONTENT.decode("latin-1")
# One optional group holds the value and the OWS after it, so no two parts of
# the pattern compete for the same spaces (no quadratic backtracking).
SIMPLE_HEAD_RE = re.compile(
    r"((" + _TCHAR_TEXT + r"+) (/[\x21\x22\x24-\x7e]*) HTTP/1\.([0-9]))\r\n"
    r"((?:" + _TCHAR_TEXT + r"+:[ \t]*(?:" + _CONTENT_TEXT + r"[ \t]*)?\r\n)*)\r\n")
# RFC 9110 5.6.3:  OWS = *( SP / HTAB ).  The only whitespace ever trimmed from
# a field value: str.strip with no argument would also drop \x0b, \x0c,
# \x1c-\x1f, \x85 and \xa0.
OWS = " \t"

# RFC 9110 7.6.1: hop-by-hop fields; PEP 3333 forbids the app to set them.
# An app that sets one gets a logged 500 (the server frames the message and
# owns the connection: RFC 9112 6), except for APP_DROPPED_HEADERS.
HOP_BY_HOP = frozenset((
    "connection", "keep-alive", "proxy-authenticate", "proxy-authorization",
    "te", "trailer", "trailers", "transfer-encoding", "upgrade"))
# Of HOP_BY_HOP, the two that cannot corrupt the framing: dropped (as gunicorn's
# Response.process_headers drops every hop-by-hop field), because persistence
# is the server's to decide; but an app's ``Connection: close`` is honoured
# (RFC 9112 9.6), so the connection ends after that response even under
# --keep-alive.
APP_DROPPED_HEADERS = frozenset(("connection", "keep-alive"))
# Fields a trailer section must not carry.  RFC 9110 6.5.1: "Many fields
# cannot be processed outside the header section because their evaluation is
# necessary prior to receiving the content, such as those that describe
# message framing, routing, authentication, request modifiers, response
# controls, or content format."  The list is RFC 7230 4.1.2's, which named
# them: framing (Transfer-Encoding, Content-Length), routing (Host), request
# modifiers (RFC 7231 5.1 controls: Cache-Control, Expect, Host, Max-Forwards,
# Pragma, Range, TE; 5.2 conditionals: If-*), authentication (RFC 7235,
# RFC 6265: Authorization, Proxy-Authorization, WWW-Authenticate,
# Proxy-Authenticate, Cookie, Set-Cookie), response control data (RFC 7231
# 7.1: Age, Cache-Control, Expires, Date, Location, Retry-After, Vary,
# Warning), and "how to process the payload" (Content-Encoding, Content-Type,
# Content-Range, Trailer); with the connection's own fields (RFC 9110 7.6.1).
# A request whose trailer holds one is 400 when the app reads the body's end:
# the sender broke a MUST NOT, and a proxy may have merged it into the header.
FORBIDDEN_TRAILERS = frozenset((
    "content-length", "transfer-encoding", "host", "content-type", "content-range",
    "content-encoding", "trailer", "te", "connection", "keep-alive", "upgrade",
    "expect", "range", "max-forwards", "cache-control", "pragma", "authorization",
    "proxy-authorization", "cookie", "set-cookie", "www-authenticate",
    "proxy-authenticate", "age", "expires", "date", "location", "retry-after",
    "vary", "warning", "if-match", "if-none-match", "if-modified-since",
    "if-unmodified-since", "if-range"))
# Fields whose repeat is 400: their grammar is a single value (RFC 9110 5.3: a
# sender "MUST NOT generate multiple field lines with the same name" unless
# the field is a list), so two copies mean whatever the reader picks, and a
# proxy may have picked the other (Authorization's credentials hold commas, so
# even joining them changes them).  RFC 9110 8.6 lets a recipient accept a
# Content-Length repeated with one value; we refuse that too (gunicorn does).
SINGLETON_HEADERS = frozenset(("host", "content-length", "content-type", "authorization"))
# The fields the server reads itself.
FRAMING_FIELDS = frozenset(("host", "content-length", "transfer-encoding", "expect",
                            "connection"))
# What parse_fields collects the values of: those, and the singletons.
COUNTED_FIELDS = FRAMING_FIELDS | SINGLETON_HEADERS
# The singletons the one-pass lane of parse_head lets through once.
PLAIN_SINGLETONS = SINGLETON_HEADERS - FRAMING_FIELDS
NO_BODY_STATUSES = frozenset((204, 304))
# Only this transfer coding is implemented; others get 501 (RFC 9112 6.1).
KNOWN_CODINGS = frozenset(("chunked",))

IMF_FIXDATE = "%s, %02d %s %04d %02d:%02d:%02d GMT"   # RFC 9110 5.6.7
_WEEKDAYS = ("Mon", "Tue", "Wed", "Thu", "Fri", "Sat", "Sun")
_MONTHS = ("Jan", "Feb", "Mar", "Apr", "May", "Jun",
           "Jul", "Aug", "Sep", "Oct", "Nov", "Dec")


# --------------------------------------------------------------------------
# Errors: one class per HTTP status, raised by the parser and the readers,
# rendered in one place (error_response).
# --------------------------------------------------------------------------

class HTTPError(Exception):
    """A request we answer with an error status; the message is for the log."""
    status = 400

    def __init__(self, detail=""):
        super().__init__(detail)
        self.detail = detail

    @property
    def reason(self):
        return HTTPStatus(self.status).phrase


class BadRequest(HTTPError):
    status = 400


class RequestTimeout(HTTPError):
    status = 408


class PayloadTooLarge(HTTPError):
    status = 413


class URITooLong(HTTPError):
    status = 414


class ExpectationFailed(HTTPError):
    status = 417


class HeaderFieldsTooLarge(HTTPError):
    status = 431


class NotImplementedCoding(HTTPError):
    status = 501


class VersionNotSupported(HTTPError):
    status = 505


class ServiceUnavailable(HTTPError):
    status = 503


class IncompleteBody(BadRequest):
    """The client closed before the whole body arrived: never a complete request."""


class ClientGone(Exception):
    """The peer closed or reset the connection: expected, logged at debug."""


class ResponseError(Exception):
    """The app broke PEP 3333 (bad status, header, write, length)."""


class CPULimitExceeded(BaseException):
    """Raised from the SIGXCPU handler the parent installs under --limit-cpu."""


def error_body(status):
    return ("%d %s\n" % (status, HTTPStatus(status).phrase)).encode("latin-1")


def error_response(status, detail=""):
    """Bytes of a complete error response with ``Connection: close``."""
    phrase = HTTPStatus(status).phrase
    body = error_body(status)
    head = ("HTTP/1.1 %d %s\r\nContent-Type: text/plain; charset=utf-8\r\n"
            "Content-Length: %d\r\nConnection: close\r\nDate: %s\r\nServer: %s\r\n\r\n"
            % (status, phrase, len(body), http_date(), SERVER_SOFTWARE))
    return head.encode("latin-1") + body


def http_date(now=None):
    """RFC 9110 5.6.7 IMF-fixdate, without importing ``email``."""
    year, month, day, hour, minute, second, weekday = time.gmtime(now)[:7]
    return IMF_FIXDATE % (_WEEKDAYS[weekday], day, _MONTHS[month - 1], year, hour, minute, second)


# --------------------------------------------------------------------------
# Configuration handed down by the parent (frozen: one per server).
# --------------------------------------------------------------------------

class Limits:
    """Parser limits; the CLI overrides the module defaults."""
    __slots__ = ("request_line", "fields", "field", "head", "body", "chunk_line", "simple_head")

    def __init__(self, request_line=MAX_REQUEST_LINE_BYTES, fields=MAX_HEADER_FIELDS,
                 field=MAX_FIELD_BYTES, head=MAX_HEAD_BYTES, body=MAX_BODY_BYTES,
                 chunk_line=MAX_CHUNK_LINE_BYTES):
        self.request_line = request_line
        self.fields = fields
        self.field = field
        self.head = head
        self.body = body
        self.chunk_line = chunk_line
        # A head no longer than this has no line over any limit (parse_head).
        self.simple_head = min(request_line, field, head)


DEFAULT_LIMITS = Limits()


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
        self.log = kw.pop("log", None) or Log()
        # wsgi.errors: made here, in the parent, so a child allocates none.
        # It is flushed after every request, so no partial line crosses one.
        self.errors = ErrorStream(self.log)
        # The environ entries every request shares: build_environ copies them.
        self.environ_base = {
            "SCRIPT_NAME": "", "SERVER_NAME": self.server_name, "SERVER_PORT": self.server_port,
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


# --------------------------------------------------------------------------
# Logging: every line is written whole with one os.write, so lines from many
# children never interleave and nothing waits in a buffer that os._exit drops.
# --------------------------------------------------------------------------

LEVELS = {"debug": 10, "info": 20, "warning": 30, "error": 40, "critical": 50}

# gunicorn's access log atoms.  CLF is the default format.
COMMON_LOG_FORMAT = '%(h)s %(l)s %(u)s %(t)s "%(r)s" %(s)s %(b)s'
COMBINED_LOG_FORMAT = COMMON_LOG_FORMAT + ' "%(f)s" "%(a)s"'


class Log:
    """Error and access log writer over raw file descriptors."""

    def __init__(self, error_fd=2, access_fd=None, level="info",
                 access_format=COMMON_LOG_FORMAT):
        self.error_fd = error_fd
        self.access_fd = access_fd
        self.level = LEVELS[level]
        self.access_format = access_format

    def write_line(self, fd, line):
        data = line.encode("utf-8", "backslashreplace")
        if not data.endswith(b"\n"):
            data += b"\n"
        try:
            os.write(fd, data)
        except OSError:
            pass  # a closed or full log must never take a request down

    def log(self, level, message):
        if LEVELS[level] < self.level:
            return
        stamp = time.strftime("%Y-%m-%d %H:%M:%S %z")
        self.write_line(self.error_fd, "[%s] [%d] [%s] %s" % (
            stamp, os.getpid(), level.upper(), message))

    def debug(self, message):
        self.log("debug", message)

    def info(self, message):
        self.log("info", message)

    def warning(self, message):
        self.log("warning", message)

    def error(self, message):
        self.log("error", message)

    def exception(self, message):
        import traceback  # only on the error path: children do not pay for it
        self.log("error", message + "\n" + traceback.format_exc().rstrip("\n"))

    def trace(self, prefix, text):
        """--trace output: each line tagged with the writer's pid."""
        pid = os.getpid()
        lines = ["[%d] %s%s" % (pid, prefix, line) for line in text.splitlines()]
        self.write_line(self.error_fd, "\n".join(lines))

    def access(self, atoms):
        if self.access_fd is None:
            return
        try:
            line = self.access_format % _AtomDict(atoms)
        except (KeyError, ValueError, TypeError) as exc:
            line = "access log format error: %s" % exc
        self.write_line(self.access_fd, line)


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
    """Access-log atoms, with gunicorn's ``{name}i`` / ``{name}o`` / ``{name}e``."""

    def __missing__(self, key):
        if len(key) > 3 and key[0] == "{" and key[-2] == "}":
            name, kind = key[1:-2].lower(), key[-1]
            if kind == "i":
                return self["_environ"].get("HTTP_" + name.upper().replace("-", "_"), "-")
            if kind == "o":
                return self["_resp_headers"].get(name, "-")
            if kind == "e":
                return self["_environ"].get(key[1:-2], "-")
        return "-"


# --------------------------------------------------------------------------
# The request: a pure parse from bytes to a frozen value.
# --------------------------------------------------------------------------

class Request(tuple):
    """One parsed request head: a tuple, so read-only, and built in one C call
    (each Python call in a child writes pages it shares with the parent)."""

    __slots__ = ()
    _fields = ("method", "target", "version", "headers", "path", "query",
               "host", "body_kind", "content_length", "expect_continue",
               "keep_alive", "raw_request_line")

    def header(self, name):
        """The combined value of a field (", " between repeats), or None."""
        values = [v for n, v in self.headers if n == name]
        return ", ".join(values) if values else None


for _index, _name in enumerate(Request._fields):
    setattr(Request, _name, property(operator.itemgetter(_index), doc=_name))
del _index, _name


def find_head_end(buf, start=0):
    """Index just past the blank line ending the head in ``buf``, or -1.

    Raises BadRequest at once for a bare CR or bare LF, so such a request gets
    its 400 without waiting for a CRLFCRLF that will never come.
    """
    first = 2 if buf.startswith(b"\r\n") else 0   # one leading empty line
    end = buf.find(b"\r\n\r\n", max(start - 3, first))
    if end == -1 and first and buf.startswith(b"\r\n\r\n"):
        end = 0
    # Only the head is checked: body bytes that came in the same recv may
    # hold any octet, bare LF included.
    if end != -1:
        stop = end + 4
    else:
        stop = len(buf) - 1 if buf.endswith(b"\r") else len(buf)
    bad = BARE_EOL_RE.search(buf, max(start - 1, 0), stop)
    if bad:
        what = "bare CR" if buf[bad.start()] == 13 else "bare LF"
        raise BadRequest("%s in the request head (RFC 9112 2.2)" % what)
    return -1 if end == -1 else end + 4


def check_partial_head(buf, limits):
    """Size checks on a head that has not ended yet."""
    first = 2 if buf.startswith(b"\r\n") else 0
    line_end = buf.find(b"\r\n", first)
    if line_end == -1 and len(buf) - first > limits.request_line:
        raise URITooLong("request line longer than %d bytes" % limits.request_line)
    if len(buf) > limits.head:
        raise HeaderFieldsTooLarge("request head longer than %d bytes" % limits.head)


def parse_head(data, limits=DEFAULT_LIMITS):
    """Parse a complete head (ending in CRLFCRLF) into a Request; pure, and
    raises one HTTPError subclass per status.  The common head is taken here in
    one pass (each function a child runs costs it pages: docs/performance.md);
    any other goes to parse_head_by_line, which gives the same Request or names
    the error."""
    match = SIMPLE_HEAD_RE.fullmatch(data.decode("latin-1")) if len(data) <= limits.simple_head else None
    if match is None:
        return parse_head_by_line(data, limits)
    raw_line, method, target, minor, block = match.groups()
    fields, singletons, host, connection = [], [], None, None
    for line in block.split("\r\n")[:-1]:   # the block ends in CRLF
        name, _, value = line.partition(":")
        name, value = name.lower(), value.strip(OWS)
        fields.append((name, value))
        if name not in COUNTED_FIELDS:
            continue
        if name == "connection":
            connection = value if connection is None else connection + "," + value
        elif name == "host" and host is None:
            host = value
        elif name in PLAIN_SINGLETONS and name not in singletons:
            singletons.append(name)
        else:   # a body, Expect, a singleton twice: the other lane names it
            return parse_head_by_line(data, limits)
    if (len(fields) > limits.fields or method == "CONNECT" or (host is None and minor != "0")
            or (host and not HOST_RE.fullmatch(host))):
        return parse_head_by_line(data, limits)
    keep_alive = minor != "0"   # HTTP/1.1 and later persist by default (RFC 9112 9.3)
    for token in connection.lower().split(",") if connection is not None else ():
        token = token.strip(OWS)   # RFC 9110 5.6.1: OWS "," OWS
        if token == "close":
            keep_alive = False
            break
        if token == "keep-alive":
            keep_alive = True   # HTTP/1.0's opt-in (RFC 9112 9.3)
    path, _, query = target.partition("?")
    return Request((method, target, (1, int(minor)), tuple(fields), path, query, host,
                    "none", 0, False, keep_alive, raw_line))


def parse_head_by_line(data, limits):
    """parse_head for any head: each line checked on its own, each error named."""
    find_head_end(data)  # bare CR / LF check over the whole head
    if data.startswith(b"\r\n"):
        data = data[2:]  # RFC 9112 2.2: ignore at least one empty line
    if len(data) > limits.head + 4:
        raise HeaderFieldsTooLarge("request head longer than %d bytes" % limits.head)
    lines = data[:-4].split(b"\r\n") if data.endswith(b"\r\n\r\n") else data.split(b"\r\n")
    method, target, version = parse_request_line(lines[0], limits)
    headers, framing = parse_fields(lines[1:], limits)
    return build_request(method, target, version, headers, framing, lines[0], limits)


def parse_request_line(line, limits):
    if len(line) > limits.request_line:
        raise URITooLong("request line longer than %d bytes" % limits.request_line)
    match = REQUEST_LINE_RE.fullmatch(line)
    if not match:
        # Includes "HTTP/1.10" and "HTTP/11.1": not HTTP-version syntax, so 400
        # (RFC 9112 2.3); only a well-formed version with major != 1 is 505.
        raise BadRequest("malformed request line %r" % line[:100])
    method, target, major, minor = match.groups()
    if major != b"1":
        raise VersionNotSupported("HTTP/%s.%s" % (major.decode(), minor.decode()))
    return method.decode("ascii"), target.decode("ascii"), (1, int(minor))


def parse_fields(lines, limits):
    """Field lines to a list of (lowercase name, value) latin-1 strings, and
    the values of the COUNTED_FIELDS ({name: [values]}): the fields the server
    itself reads, and the singletons whose repeat build_request refuses."""
    if len(lines) > limits.fields:
        raise HeaderFieldsTooLarge("more than %d header fields" % limits.fields)
    fields = []
    framing = {}
    for line in lines:
        if len(line) > limits.field:
            raise HeaderFieldsTooLarge("a header field longer than %d bytes" % limits.field)
        if line[:1] in (b" ", b"\t"):
            # RFC 9112 5.2: obs-fold; a server MUST reject or unfold: we reject.
            raise BadRequest("obsolete line folding")
        name, colon, value = line.partition(b":")
        if not colon or not TOKEN_RE.fullmatch(name):
            # RFC 9112 5.1: no whitespace between field name and colon.
            raise BadRequest("invalid header field name %r" % name[:50])
        value = value.strip(b" \t")  # only OWS is trimmed: SP / HTAB
        if not FIELD_VALUE_RE.fullmatch(value):
            raise BadRequest("invalid character in header field %r" % name[:50])
        field = (name.decode("ascii").lower(), value.decode("latin-1"))
        fields.append(field)
        if field[0] in COUNTED_FIELDS:
            framing.setdefault(field[0], []).append(field[1])
    return fields, framing


def build_request(method, target, version, headers, framing, raw_line, limits):
    """The semantic checks, each only when its field is present."""
    get = framing.get
    for name in SINGLETON_HEADERS:
        if len(get(name, ())) > 1:
            raise BadRequest("repeated %s header" % name)
    host = check_host(version, get("host"))
    path, query, host = split_target(method, target, host)
    te, cl = get("transfer-encoding"), get("content-length")
    body_kind, length = body_framing(version, te, cl, limits) if te or cl else ("none", 0)
    expect, connection = get("expect"), get("connection")
    return Request((
        method, target, version, tuple(headers), path, query, host, body_kind, length,
        check_expect(version, expect) if expect else False,
        wants_keep_alive(version, connection) if connection else version >= (1, 1),
        raw_line.decode("latin-1")))


def check_host(version, hosts):
    """``hosts``: the Host field values, or None."""
    if not hosts:
        if version >= (1, 1):
            # RFC 9112 3.2: a server MUST respond 400 to an HTTP/1.1 request
            # that lacks a Host header field.
            raise BadRequest("missing Host header")
        return None
    if hosts[0] and not HOST_RE.fullmatch(hosts[0]):
        raise BadRequest("invalid Host header %r" % hosts[0][:100])
    return hosts[0]


def split_target(method, target, host):
    """Check the target against its form; return (path, query, host)."""
    if "#" in target:
        raise BadRequest("fragment in request target")  # RFC 9112 3.2
    if target == "*":
        if method != "OPTIONS":
            raise BadRequest("asterisk-form is only for OPTIONS (RFC 9112 3.2.4)")
        return "*", "", host
    if method == "CONNECT":
        if not AUTHORITY_FORM_RE.fullmatch(target):
            raise BadRequest("CONNECT needs authority-form (RFC 9112 3.2.3)")
        raise NotImplementedCoding("CONNECT is not supported: this is not a proxy")
    if target.startswith("/"):
        path, _, query = target.partition("?")
        return path, query, host
    match = ABSOLUTE_FORM_RE.fullmatch(target)
    if not match or match.group(1).lower() not in ("http", "https"):
        raise BadRequest("invalid request target %r" % target[:100])
    authority, rest = match.group(2), match.group(3)
    if not authority or "@" in authority or not HOST_RE.fullmatch(authority):
        raise BadRequest("invalid authority in absolute-form target")
    # RFC 9112 3.2.2: the authority of an absolute-form target replaces Host.
    path, _, query = (rest or "/").partition("?")
    path = path or "/"   # RFC 9112 3.2.1: an empty path is sent as "/"
    if not path.startswith("/"):
        raise BadRequest("invalid request target %r" % target[:100])
    return path, query, authority


def body_framing(version, te, cl, limits):
    """Return ("none" | "length" | "chunked", content_length) from the
    Transfer-Encoding and Content-Length values (lists, or None)."""
    if te:
        if cl:
            # RFC 9112 6.1: a request with both is a smuggling attempt; reject.
            raise BadRequest("both Content-Length and Transfer-Encoding")
        if version < (1, 1):
            # RFC 9112 6.1: TE in HTTP/1.0 means the framing is faulty.
            raise BadRequest("Transfer-Encoding in an HTTP/1.0 request")
        check_codings(te)
        return "chunked", None
    if not cl:
        return "none", 0
    value = cl[0].encode("latin-1")
    # RFC 9110 8.6: Content-Length = 1*DIGIT (no sign, space, "_", list).
    if not DIGITS_RE.fullmatch(value) or len(value) > MAX_CONTENT_LENGTH_DIGITS:
        raise BadRequest("invalid Content-Length %r" % cl[0][:30])
    length = int(value)
    if length > limits.body:
        raise PayloadTooLarge("Content-Length %d over the limit of %d" % (length, limits.body))
    return ("length" if length else "none"), length


def check_codings(values):
    codings = [c.strip(" \t").lower() for v in values for c in v.split(",")]
    codings = [c for c in codings if c]   # RFC 9110 5.6.1.2: empty elements
    if not codings or codings[-1] != "chunked":
        # RFC 9112 6.3: chunked not final -> length unknown -> 400.
        raise BadRequest("Transfer-Encoding does not end in chunked")
    if codings.count("chunked") > 1:
        raise BadRequest("chunked applied more than once (RFC 9112 7)")
    for coding in codings:
        if not TOKEN_RE.fullmatch(coding.encode("latin-1")):
            raise BadRequest("invalid transfer coding %r" % coding[:30])
        if coding not in KNOWN_CODINGS:
            raise NotImplementedCoding("transfer coding %r" % coding[:30])


def check_expect(version, expect):
    """``expect``: the Expect field values."""
    if [e.lower() for e in expect] != ["100-continue"]:
        raise ExpectationFailed("unsupported expectation %r" % ", ".join(expect)[:50])
    # RFC 9110 10.1.1: ignore 100-continue in an HTTP/1.0 request.
    return version >= (1, 1)


def wants_keep_alive(version, connection):
    """``connection``: the Connection field values."""
    tokens = {t.strip(" \t").lower() for v in connection for t in v.split(",")}
    if "close" in tokens:
        return False
    return version >= (1, 1) or "keep-alive" in tokens


# --------------------------------------------------------------------------
# The connection: a socket with a read buffer, deadlines and the body readers.
# --------------------------------------------------------------------------

class Connection:
    """The client socket plus the bytes received but not consumed yet."""

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
            check_partial_head(self.buf, limits)
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
        self.sock.settimeout(self.config.send_timeout)
        try:
            self.sock.sendall(data)
        except socket.timeout:
            raise ClientGone("client did not read the response in time") from None
        except (BrokenPipeError, ConnectionError) as exc:
            raise ClientGone(str(exc)) from None


class LengthReader:
    """Exactly Content-Length bytes, then b""."""

    def __init__(self, conn, length, timeout):
        self.conn = conn
        self.remaining = length
        self.timeout = timeout

    def read_some(self, n):
        if self.remaining <= 0:
            return b""
        data = self.conn.take(min(n, self.remaining), self.timeout)
        if not data:
            raise IncompleteBody("client closed with %d body bytes missing" % self.remaining)
        self.remaining -= len(data)
        return data

    @property
    def done(self):
        return self.remaining <= 0


class ChunkedReader:
    """The decoded chunked body (RFC 9112 7.1), then b""; trailers kept aside."""

    def __init__(self, conn, limits, timeout):
        self.conn = conn
        self.limits = limits
        self.timeout = timeout
        self.chunk_left = 0
        self.total = 0
        self.done = False
        self.trailers = []

    def read_some(self, n):
        if self.done:
            return b""
        if self.chunk_left == 0:
            self.start_chunk()
            if self.done:
                return b""
        data = self.conn.take(min(n, self.chunk_left), self.timeout)
        if not data:
            raise IncompleteBody("client closed inside a chunk")
        self.chunk_left -= len(data)
        if self.chunk_left == 0:
            self.end_chunk()
        return data

    def start_chunk(self):
        line = self.conn.read_line(self.limits.chunk_line, self.timeout, "chunk-size line")
        match = CHUNK_LINE_RE.fullmatch(line)
        if not match:
            raise BadRequest("invalid chunk-size line %r" % line[:40])
        size = int(match.group(1), 16)
        self.total += size
        if self.total > self.limits.body:
            raise PayloadTooLarge("chunked body over the limit of %d" % self.limits.body)
        if size == 0:
            self.read_trailers()
            self.done = True
        self.chunk_left = size

    def end_chunk(self):
        # RFC 9112 7.1: chunk = chunk-size [ chunk-ext ] CRLF chunk-data CRLF
        while len(self.conn.buf) < 2 and not self.conn.eof:
            self.conn.recv_into_buffer(self.timeout)
        if self.conn.buf[:2] != b"\r\n":
            if len(self.conn.buf) < 2:
                raise IncompleteBody("connection closed after chunk data")
            raise BadRequest("chunk data not followed by CRLF")
        del self.conn.buf[:2]

    def read_trailers(self):
        lines, size = [], 0
        while True:
            line = self.conn.read_line(self.limits.field, self.timeout, "trailer field")
            if not line:
                break
            size += len(line) + 2
            if size > MAX_TRAILER_BYTES:
                raise HeaderFieldsTooLarge("trailer section over %d bytes" % MAX_TRAILER_BYTES)
            lines.append(line)
        fields, _ = parse_fields(lines, self.limits)
        for name, _ in fields:
            if name in FORBIDDEN_TRAILERS:
                raise BadRequest("%s in the trailer section (RFC 9110 6.5.1)" % name)
        # In place: the environ holds this very list since before the body was read.
        self.trailers[:] = fields


class NoBody:
    done = True

    def read_some(self, n):
        return b""


NO_BODY = NoBody()   # stateless: one for every request without a body


class InputStream:
    """``wsgi.input``: a binary stream that yields exactly the body, then b""."""

    def __init__(self, reader, on_first_read=None):
        self.reader = reader
        self.on_first_read = on_first_read
        self.pending = b""
        self.error = None     # the framing error, if reading the body failed

    def _fill(self, n):
        if self.error is not None:
            # Sticky: an app that swallowed the error must not read on into
            # bytes that might be a smuggled request.
            raise self.error
        if self.on_first_read is not None:
            callback, self.on_first_read = self.on_first_read, None
            callback()
        try:
            return self.reader.read_some(n)
        except HTTPError as exc:
            self.error = exc
            raise

    def read(self, size=-1):
        if size is None or size < 0:
            parts = [self.pending]
            self.pending = b""
            while True:
                data = self._fill(RECV_BYTES)
                if not data:
                    return b"".join(parts)
                parts.append(data)
        # Collect and join once: `pending += data` per recv made read(N) of a
        # large body quadratic (Django reads request.body as read(CONTENT_LENGTH)).
        parts, have = [self.pending], len(self.pending)
        while have < size:
            data = self._fill(size - have)
            if not data:
                break
            parts.append(data)
            have += len(data)
        data = b"".join(parts)
        result, self.pending = data[:size], data[size:]
        return result

    def readline(self, size=-1):
        # Each piece is searched once and the line joined once: growing one
        # bytes object per recv made a long line quadratic.
        limit = size if size is not None and size >= 0 else None
        parts, have = [], 0
        chunk, self.pending = self.pending, b""
        while True:
            room = None if limit is None else limit - have
            end = chunk.find(b"\n", 0, room)
            if end != -1 or (room is not None and len(chunk) >= room):
                cut = end + 1 if end != -1 else room
                parts.append(chunk[:cut])
                self.pending = chunk[cut:]
                return b"".join(parts)
            parts.append(chunk)
            have += len(chunk)
            chunk = self._fill(RECV_BYTES)
            if not chunk:
                return b"".join(parts)

    def readlines(self, hint=-1):
        lines, total = [], 0
        for line in self:
            lines.append(line)
            total += len(line)
            if hint is not None and 0 < hint <= total:
                break
        return lines

    def __iter__(self):
        return self

    def __next__(self):
        line = self.readline()
        if not line:
            raise StopIteration
        return line

    def close(self):
        pass


EMPTY_INPUT = InputStream(NO_BODY)   # wsgi.input of every request without a body


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
        """Bytes from the current position to EOF of a regular file, or None."""
        try:
            st = os.fstat(self.filelike.fileno())
            if st.st_mode & 0o170000 != 0o100000:   # not S_IFREG
                return None
            return max(st.st_size - self.filelike.tell(), 0)
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
        self.no_body = request[0] == "HEAD"   # request.method (see build_environ)
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
                if self.headers_sent:
                    raise exc_info[1].with_traceback(exc_info[2])
            finally:
                exc_info = None   # avoid a reference cycle (PEP 3333)
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
        if declared and not self.config.close_delimited:   # the common case, inline
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
        """send_head's framing when the app gave no Content-Length, or
        --close-delimited ignores the one it gave."""
        if self.config.close_delimited:
            if declared:
                self.headers = [h for h in self.headers if h[0].lower() != "content-length"]
        elif self.no_body:
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
        if self.chunked:
            self.out(b"%x\r\n%s\r\n" % (len(data), data))
        else:
            self.out(data)

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
        try:
            # socket.sendfile() starts at offset 0 unless told: start where the
            # app left the file, as iterating it would.
            sent = self.conn.sock.sendfile(wrapper.filelike, wrapper.filelike.tell(), count)
        except socket.timeout:
            raise ClientGone("client did not read the response in time") from None
        except (BrokenPipeError, ConnectionError) as exc:
            raise ClientGone(str(exc)) from None
        self.sent_body += sent
        return True


def check_status(status):
    """The status to send: "200" gets its reason phrase; a 1xx is refused."""
    if not isinstance(status, str):
        raise ResponseError("status must be a native str, not %s" % type(status).__name__)
    if STATUS_RE.fullmatch(status):
        return status
    if not ANY_STATUS_RE.fullmatch(status):
        raise ResponseError("invalid status line %r" % status[:60])
    if status[0] == "1":
        # RFC 9110 15.2: a 1xx is interim, and the client would go on waiting
        # for the final response; PEP 3333 gives an app no way to send one.
        raise ResponseError("status %r is interim (1xx), not a final response" % status[:60])
    return status + " " + reason_phrase(int(status))


def reason_phrase(code):
    """http.HTTPStatus's phrase; "" for a code it does not know, which RFC
    9112 4 allows (the SP before it is required, the phrase is not)."""
    try:
        return HTTPStatus(code).phrase
    except ValueError:
        return ""


def check_headers(headers):
    """The app's headers, checked, with the spaces and tabs around each value
    stripped: RFC 9110 5.5, OWS around a field value is not part of it.  Django
    sends every Set-Cookie value with a leading space (it joins
    ``Morsel.output(header="")``).  start_response's one-match lane takes only
    values without them, so only the other headers pay for the strip."""
    if not isinstance(headers, list):
        raise ResponseError("headers must be a list, not %s" % type(headers).__name__)
    checked = []
    for item in headers:
        if not (isinstance(item, tuple) and len(item) == 2
                and type(item[0]) is str and type(item[1]) is str):
            raise ResponseError("header must be a (str, str) tuple: %r" % (item,))
        name, value = item[0], item[1].strip(OWS)
        try:
            name_b, value_b = name.encode("latin-1"), value.encode("latin-1")
        except UnicodeEncodeError:
            raise ResponseError("header %r is not latin-1" % name) from None
        if not TOKEN_RE.fullmatch(name_b):
            raise ResponseError("invalid header name %r" % name)
        if not FIELD_VALUE_RE.fullmatch(value_b):
            raise ResponseError("invalid character in header %r" % name)
        if name.lower() in HOP_BY_HOP:
            if name.lower() in APP_DROPPED_HEADERS:
                continue   # see app_closes
            raise ResponseError("hop-by-hop header %r is the server's to send "
                                "(PEP 3333, RFC 9110 7.6.1)" % name)
        checked.append((name, value))
    return checked


def app_closes(headers):
    """True if the app's checked headers hold ``Connection: close``: its
    Connection field is dropped (check_headers), but the close option is
    honoured (RFC 9110 7.6.1: a comma-separated list of options)."""
    for name, value in headers:
        if name.lower() == "connection":
            if "close" in [option.strip(OWS).lower() for option in value.split(",")]:
                return True
    return False


# --------------------------------------------------------------------------
# The environ (PEP 3333 "environ Variables").
# --------------------------------------------------------------------------

# RFC 3986 2.1:  pct-encoded = "%" HEXDIG HEXDIG  (anything else stays as sent,
# as urllib.parse.unquote does: "%2" or "%+1" is not an escape).
PCT_ENCODED_RE = re.compile(r"%([0-9A-Fa-f]{2})")


def unquote_path(path):
    """Percent-decode to bytes, then latin-1: PEP 3333's native-string rule.

    The target is ASCII (the request-line grammar), so byte N is chr(N)."""
    if "%" not in path:
        return path
    return PCT_ENCODED_RE.sub(lambda m: chr(int(m.group(1), 16)), path)


def build_environ(request, addr, config, stream):
    # One function, the request unpacked once: a child copies the pages of each
    # function it runs and of each property's name it reads (docs/performance.md).
    method, target, version, headers, path, query, host, body_kind = request[:8]
    environ = config.environ_base.copy()
    environ["REQUEST_METHOD"] = method
    environ["PATH_INFO"] = unquote_path(path) if "%" in path else path
    environ["QUERY_STRING"] = query
    environ["REQUEST_URI"] = environ["RAW_URI"] = target
    environ["SERVER_PROTOCOL"] = "HTTP/%d.%d" % version
    environ["REMOTE_ADDR"] = addr[0] if addr else ""
    environ["REMOTE_PORT"] = str(addr[1]) if addr and len(addr) > 1 else ""
    environ["wsgi.input"] = stream
    for name, value in headers:
        if "_" in name:
            continue  # "X_Forwarded_For" must not impersonate "X-Forwarded-For"
        if name == "content-type":
            key = "CONTENT_TYPE"
        elif name == "content-length":
            key = "CONTENT_LENGTH"
        else:
            key = "HTTP_" + name.upper().replace("-", "_")
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


# --------------------------------------------------------------------------
# One connection.
# --------------------------------------------------------------------------

# The C method under socket.socket.close(), whose two Python layers would
# only add copy-on-write pages to every child.
close_socket = _c_socket.close


class Drain:
    """The parent's notice to a kept-alive child to end its connection: SIGHUP,
    sent on reload (so the next request on a proxy's pooled connection meets
    the new code) and on a graceful stop (so an idle connection does not hold
    the stop for --keep-alive).  The parent installs ``note`` as the child's
    SIGHUP handler before the child may receive signals; the response in
    progress then says Connection: close, and an idle connection is closed
    at once (wait_for_next_request wakes up on the signal's wake-up fd)."""
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
            if isinstance(sock, _c_socket):
                close_socket(sock)
            else:
                sock.close()   # a test's stand-in
        except OSError:
            pass


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
        self.wake_fd = None       # drain_wakeup's pipe, once idle

    def run(self):
        deadline = self.started + self.config.header_timeout
        for count in range(max(self.config.max_requests, 1)):
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
                self.reject(exc)
                return self.status
            if self.config.set_title is not None:
                self.set_title(request)
            keep_going = self.handle(request, last=count + 1 >= self.config.max_requests)
            if (not keep_going or count + 1 >= self.config.max_requests
                    or not self.wait_for_next_request()):
                break
            # --header-timeout applies to each head, from its first byte.
            deadline = time.monotonic() + self.config.header_timeout
        if self.conn.buf or self.unread_body:
            self.close_gracefully()
        return self.status

    def set_title(self, request):
        """The child's process title: client and request line, without the
        query string unless --title-with-query (tokens travel there, and any
        user of the machine can read a title with ps)."""
        line = request[11]   # raw_request_line (see build_environ)
        if not self.config.title_query and "?" in line:
            method, _, rest = line.partition(" ")
            target, _, version = rest.rpartition(" ")
            line = "%s %s?... %s" % (method, target.partition("?")[0], version)
        self.config.set_title("forkserver: child %s %s" % (format_addr(self.addr), line[:200]))

    def wait_for_next_request(self):
        """Idle between two requests of a kept-alive connection: True once the
        client sends something, False after --keep-alive idle seconds, at EOF,
        or on the parent's Drain notice (RFC 9112 9.5: an idle connection may
        be closed at any time; a client retries a request it had not sent)."""
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
        except OSError as exc:
            self.log.warning("cannot hand the idle connection back to the parent: %s" % exc)

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

    def reject(self, exc):
        """Answer a bad request and close: nothing after it is parsed."""
        self.log.info("client %s: %d %s: %s" % (
            format_addr(self.addr), exc.status, exc.reason, exc.detail))
        try:
            self.conn.send(error_response(exc.status))
        except ClientGone:
            return
        self.close_gracefully(drain=True)

    def handle(self, request, last=False):
        """Run the app for one request; True if the connection may go on."""
        started = time.time()
        # request[7]: body_kind (a property read costs a page: build_environ)
        reader = self.body_reader(request) if request[7] != "none" else NO_BODY
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
            ok = self.run_app(environ, response)
        finally:
            self.conn.end_body()
            if self.config.request_timeout:
                self.arm_request_timer(0)
        if errors.partial:
            errors.flush()
        if self.log.access_fd is not None:
            self.access_log(environ, response, started)
        self.unread_body = reader is not NO_BODY and not reader.done
        if not ok or stream.error is not None:
            return False  # never parse on after a framing error
        return response.keep_alive and self.body_consumed(reader)

    def arm_request_timer(self, seconds=None):
        """With keep-alive, --timeout applies per request: the child re-arms
        the deadline the parent gave it (SIGALRM's default action ends it)."""
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
            if not response.headers_sent:
                self.conn.send(b"HTTP/1.1 100 Continue\r\n\r\n")
        return send_continue

    def run_app(self, environ, response):
        """Call the app and send its response; False if the connection is spoilt."""
        result = None
        try:
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
        """Log; send an error response if nothing was sent yet, else cut the connection."""
        if log_traceback:
            self.log.exception(message)
        else:
            self.log.info(message)
        response.failed = status
        if not response.headers_sent:
            # The access log's bytes are those of the response really sent.
            response.sent_body = len(error_body(status))
            try:
                self.conn.send(error_response(status))
                self.close_gracefully(drain=True)
            except ClientGone:
                pass
            return False
        # Headers are out: cut the connection with a reset, so the client can
        # never take a partial body for a whole one.
        abort(self.conn.sock)
        return False

    def body_consumed(self, reader):
        """For keep-alive: drain a small unread body, or give up the connection."""
        if reader.done:
            return True
        drained = 0
        try:
            while drained <= MAX_UNREAD_BODY_BYTES:
                data = reader.read_some(RECV_BYTES)
                if not data:
                    return True
                drained += len(data)
        except (HTTPError, ClientGone):
            pass
        return False

    def close_gracefully(self, drain=False):
        """Close; after an error or unread body, shut down writing and drain first."""
        sock = self.conn.sock
        if not (drain or self.conn.buf or self.unread_body):
            return  # nothing unread: serve_connection's plain close() is clean
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

    def access_log(self, environ, response, started):
        log = self.log
        if log.access_fd is None:
            return
        status = response.failed or (response.status_code() if response.status else 500)
        log.access(access_atoms(environ, response, status, started))


def access_atoms(environ, response, status, started):
    elapsed = time.time() - started
    req_line = "%s %s %s" % (environ["REQUEST_METHOD"], environ.get("RAW_URI", ""),
                             environ["SERVER_PROTOCOL"])
    sent = response.sent_body
    resp_headers = {n.lower(): v for n, v in (response.headers or [])}
    return {
        "h": environ.get("REMOTE_ADDR") or "-", "l": "-",
        "u": remote_user(environ),
        "t": time.strftime("[%d/%b/%Y:%H:%M:%S %z]", time.localtime(started)),
        "r": req_line, "m": environ["REQUEST_METHOD"], "U": environ["PATH_INFO"],
        "q": environ["QUERY_STRING"], "H": environ["SERVER_PROTOCOL"],
        "s": str(status), "B": str(sent), "b": str(sent) if sent else "-",
        "f": environ.get("HTTP_REFERER", "-"), "a": environ.get("HTTP_USER_AGENT", "-"),
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


def format_addr(addr):
    if not addr:
        return "unix"
    if isinstance(addr, str):
        return addr or "unix"
    return "%s:%s" % (addr[0], addr[1]) if len(addr) > 1 else str(addr[0])


# --------------------------------------------------------------------------
# Proxy headers, trusted only from --forwarded-allow-ips.
# --------------------------------------------------------------------------

def parse_ip(text):
    """(family, integer) of an IPv4 or IPv6 address, or None."""
    text = text.strip(OWS).strip("[]")
    for family, bits in ((socket.AF_INET, 32), (socket.AF_INET6, 128)):
        try:
            return family, int.from_bytes(socket.inet_pton(family, text), "big"), bits
        except (OSError, ValueError):
            continue
    return None


# The header families a proxy may set (--forwarded-headers): only the one the
# proxy in front is configured to set is read, because a proxy overwrites
# its own family but passes the others through from the client.  (nginx's
# stock config sets X-Forwarded-For and -Proto and passes Forwarded on: a
# server believing Forwarded too lets any client choose its address.)
FORWARDING_FAMILIES = {
    "x-forwarded": ("HTTP_X_FORWARDED_FOR", "HTTP_X_FORWARDED_PROTO"),
    "forwarded": ("HTTP_FORWARDED",),                 # RFC 7239
}
DEFAULT_FORWARDING_FAMILY = "x-forwarded"


class ProxyTrust:
    """Rewrites REMOTE_ADDR and wsgi.url_scheme from the header family the
    proxy sets (X-Forwarded-For and X-Forwarded-Proto, or Forwarded of RFC
    7239), for trusted peers only.

    Built from a comma-separated list of addresses, CIDRs or ``*``.  Peers on
    a unix socket (no address) are trusted: only local processes reach them.
    """

    def __init__(self, allow, family=DEFAULT_FORWARDING_FAMILY):
        self.headers = FORWARDING_FAMILIES[family]
        self.forwarded = family == "forwarded"
        self.any = False
        self.networks = []
        for item in (allow or "").split(","):
            item = item.strip(OWS)
            if item == "*":
                self.any = True
            elif item:
                self.networks.append(self.parse_network(item))

    @staticmethod
    def parse_network(item):
        address, _, prefix = item.partition("/")
        parsed = parse_ip(address)
        if parsed is None or (prefix and not prefix.isdigit()):
            raise ValueError("invalid address in --forwarded-allow-ips: %r" % item)
        family, value, bits = parsed
        length = int(prefix) if prefix else bits
        if length > bits:
            raise ValueError("invalid prefix length in --forwarded-allow-ips: %r" % item)
        mask = ((1 << length) - 1) << (bits - length)
        return family, value & mask, mask

    def trusts(self, address):
        if not address or self.any:
            return True
        parsed = parse_ip(address)
        if parsed is None:
            return False
        family, value, _ = parsed
        return any(f == family and value & mask == net for f, net, mask in self.networks)

    def __call__(self, environ):
        # Most requests carry none of these headers: then the peer's address
        # need not be parsed at all (a child pays for every page it touches).
        if environ.keys().isdisjoint(self.headers):
            return
        if not self.trusts(environ.get("REMOTE_ADDR")):
            return
        if self.forwarded:
            client, proto = self.from_forwarded(environ["HTTP_FORWARDED"])
        else:
            client = self.rightmost_untrusted(environ.get("HTTP_X_FORWARDED_FOR", ""))
            proto = environ.get("HTTP_X_FORWARDED_PROTO", "").split(",")[-1].strip(OWS).lower()
        if client:
            environ["REMOTE_ADDR"] = client
            environ["REMOTE_PORT"] = ""
        if proto in ("http", "https"):
            environ["wsgi.url_scheme"] = proto

    def rightmost_untrusted(self, header):
        """The client: each trusted proxy appends the address it saw, so walk
        from the right past our own proxies (a client can forge the left)."""
        hops = [h.strip(OWS) for h in header.split(",") if h.strip(OWS)]
        while hops:
            hop = hops.pop()
            if parse_ip(hop) is None:
                return None
            if not hops or not self.trusts(hop):
                return hop.strip("[]")
        return None

    def from_forwarded(self, header):
        """RFC 7239 section 4: every proxy appends one element, ``for=`` the node
        it heard from and ``proto=`` how that node reached it.  Walk from the
        right past our trusted proxies; the element naming the first untrusted
        node is the client's.  A header that does not parse names nobody."""
        client, params = None, {}
        for params in reversed(forwarded_elements(header) or ()):
            client = forwarded_node(params.get("for", ""))
            if client is None or not self.trusts(client):
                break
        return client, params.get("proto", "").lower()


# RFC 7239 section 4 on the latin-1 text, one item at a time: a parameter
# (token "=" token / quoted-string), a separator, or OWS.  A quoted-string is
# qdtext and quoted-pairs (RFC 9110 5.6.4), so '"' and '\' only ever come escaped.
FORWARDED_ITEM_RE = re.compile(
    r'(%s+)=(?:(%s+)|"((?:[\t\x20\x21\x23-\x5b\x5d-\x7e\x80-\xff]|\\[\t\x20-\x7e\x80-\xff])*)")'
    r"|([;,])|[ \t]+" % (_TCHAR_TEXT, _TCHAR_TEXT))
QUOTED_PAIR_RE = re.compile(r"\\(.)", re.DOTALL)


def forwarded_elements(header):
    """``for=1.2.3.4;proto=https, for=5.6.7.8`` -> [{"for": "1.2.3.4", "proto":
    "https"}, {"for": "5.6.7.8"}]: names lower-cased, quoted-strings unquoted.
    None when the header does not parse (RFC 7239 section 4), so that a quoted
    ',' or ';' never splits a value, and a client's unterminated quote never
    swallows the element a proxy appended after it; also None for a parameter
    given twice in one element, which the RFC forbids, or two parameters with
    no ';' or ',' between them."""
    elements, params, pos, after_pair = [], {}, 0, False
    while pos < len(header):
        match = FORWARDED_ITEM_RE.match(header, pos)
        if match is None:
            return None
        name, token, quoted, separator = match.groups()
        if name:
            name = name.lower()
            if name in params or after_pair:
                return None
            params[name] = token if token is not None else QUOTED_PAIR_RE.sub(r"\1", quoted)
            after_pair = True
        elif separator:
            after_pair = False
            if separator == ",":
                elements.append(params)
                params = {}
        pos = match.end()
    elements.append(params)
    return elements


def forwarded_node(value):
    """The IP address of an RFC 7239 section 6 node: ``1.2.3.4``, ``1.2.3.4:80``
    or ``[2001:db8::1]:4711``; None for ``unknown``, an obfuscated name (``_hidden``)
    or an IPv6 address without its brackets."""
    if value.startswith("["):
        host = value[1:].partition("]")[0]
    else:
        host = value.partition(":")[0]
    return host if parse_ip(host) else None
