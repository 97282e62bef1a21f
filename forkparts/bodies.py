"""Request body readers: wsgi.input yields exactly the body, never more.

DESIGN note: one reader per framing (Content-Length, chunked, none) behind one
read_some(n), and InputStream on top for PEP 3333's read/readline/iteration;
a framing error is sticky, so an app that swallows it can never read on into
bytes that might be a smuggled request.  Separate from the parser because
bodies are read lazily, by the app, from the connection (forkparts.wire).
"""

import re

from forkparts.http11 import (
    MAX_CHUNK_SIZE_DIGITS, MAX_TRAILER_BYTES, QUOTED_STRING, TCHAR, BadRequest,
    ClientGone, HeaderFieldsTooLarge, HTTPError, IncompleteBody, InputClientGone, PayloadTooLarge,
    input_error)
from forkparts.parser import parse_fields
from forkparts.wire import RECV_BYTES

# With keep-alive, a body the app left unread is drained up to this much before
# the next request; more than that and the connection is closed instead.
MAX_UNREAD_BODY_BYTES = 64 * 1024
# RFC 9112 7.1:  chunk-size = 1*HEXDIG;  chunk-ext = *( BWS ";" BWS ext-name
#   [ BWS "=" BWS ext-val ] );  ext-val = token / quoted-string
CHUNK_LINE_RE = re.compile(
    rb"([0-9A-Fa-f]{1,%d})((?:[ \t]*;[ \t]*" % MAX_CHUNK_SIZE_DIGITS + TCHAR
    + rb"+(?:[ \t]*=[ \t]*(?:" + TCHAR + rb"+|" + QUOTED_STRING + rb"))?)*)")
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
            raise input_error(self.error)
        if self.on_first_read is not None:
            callback, self.on_first_read = self.on_first_read, None
            callback()
        try:
            return self.reader.read_some(n)
        except HTTPError as exc:
            self.error = exc
            raise input_error(exc) from None
        except ClientGone as exc:
            raise InputClientGone(*exc.args) from None

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


def drain_unread(reader):
    """For keep-alive: read and drop a small unread body (up to
    MAX_UNREAD_BODY_BYTES); False if it is bigger or broken, and then the
    connection ends."""
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
