"""HTTP/1.1 vocabulary: limits, the ABNF building blocks, the errors.

DESIGN note: the words every other part speaks (the parser, the body readers,
proxy trust, the child's response) are named once here, so that a limit or a
token rule has one definition with its RFC section beside it, and so that an
error raised anywhere is one class per status, rendered in one place
(error_response).  Nothing here reads a socket or keeps state.
"""

import math
import re
import time
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

# --------------------------------------------------------------------------
# The ABNF building blocks (RFC 9110), shared by the parser, the chunked body
# reader, proxy trust and the response checks.
# --------------------------------------------------------------------------

# RFC 9110 5.6.2:  token = 1*tchar
#   tchar = "!" / "#" / "$" / "%" / "&" / "'" / "*" / "+" / "-" / "." /
#           "^" / "_" / "`" / "|" / "~" / DIGIT / ALPHA
TCHAR = rb"[!#$%&'*+\-.^_`|~0-9A-Za-z]"
TOKEN_RE = re.compile(TCHAR + rb"+")
# RFC 9110 5.5:  field-value = *field-content
#   field-content = field-vchar [ 1*( SP / HTAB / field-vchar ) field-vchar ]
#   field-vchar = VCHAR / obs-text      (no CTLs: NUL, CR, LF are rejected)
VCHAR = rb"[\x21-\x7e\x80-\xff]"
FIELD_CONTENT = VCHAR + rb"(?:[\t\x20-\x7e\x80-\xff]*" + VCHAR + rb")?"
FIELD_VALUE_RE = re.compile(rb"(?:" + FIELD_CONTENT + rb")?")
# RFC 9110 5.6.4:  quoted-string = DQUOTE *( qdtext / quoted-pair ) DQUOTE
#   qdtext = HTAB / SP / %x21 / %x23-5B / %x5D-7E / obs-text
#   quoted-pair = "\" ( HTAB / SP / VCHAR / obs-text )
QUOTED_STRING = rb'"(?:[\t\x20\x21\x23-\x5b\x5d-\x7e\x80-\xff]|\\[\t\x20-\x7e\x80-\xff])*"'
DIGITS_RE = re.compile(rb"[0-9]+")
# The same blocks on latin-1 text, for patterns matched on str.
TCHAR_TEXT = TCHAR.decode("ascii")
FIELD_CONTENT_TEXT = FIELD_CONTENT.decode("latin-1")
# RFC 9110 5.6.3:  OWS = *( SP / HTAB ).  The only whitespace ever trimmed from
# a field value: str.strip with no argument would also drop \x0b, \x0c,
# \x1c-\x1f, \x85 and \xa0.
OWS = " \t"

# RFC 9110 7.6.1: hop-by-hop fields; PEP 3333 forbids the app to set them.
# An app that sets one gets a logged 500 (the server frames the message and
# owns the connection: RFC 9112 6), except for wsgi_handler.APP_DROPPED_HEADERS.
HOP_BY_HOP = frozenset((
    "connection", "keep-alive", "proxy-authenticate", "proxy-authorization",
    "te", "trailer", "trailers", "transfer-encoding", "upgrade"))

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


class MethodNotImplemented(HTTPError):
    status = 501


class VersionNotSupported(HTTPError):
    status = 505


class ServiceUnavailable(HTTPError):
    status = 503


class IncompleteBody(BadRequest):
    """The client closed before the whole body arrived: never a complete request."""


class ClientGone(Exception):
    """The peer closed or reset the connection: expected, logged at debug."""


def input_error(error):
    """An HTTPError of the body as the app sees it from ``wsgi.input``: of its
    class and an OSError too, as a failed read of a socket or a file is
    (gunicorn's body errors are IOErrors).  Frameworks take an OSError from
    the input for the client's broken request (Django's UnreadablePostError,
    which its CSRF check catches; werkzeug's ClientDisconnected, a 400)
    instead of logging an error of the app; the server sends its status."""
    cls = INPUT_ERRORS.get(type(error))
    if cls is None:
        cls = INPUT_ERRORS[type(error)] = type(type(error).__name__, (type(error), OSError),
                                               {"__module__": __name__})
    return cls(error.detail)


INPUT_ERRORS = {}   # HTTPError class -> its subclass that is an OSError too (input_error)


class InputClientGone(ClientGone, OSError):
    """ClientGone as the app sees it from ``wsgi.input``: an OSError (input_error)."""




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
    """RFC 9110 5.6.7 IMF-fixdate of ``now`` (seconds since the epoch;
    default the current time), without importing ``email``.

    Integer arithmetic on the seconds, not time.gmtime(): every child dates
    its response, and gmtime() in a fresh child takes the C library's time
    zone lock and decodes the zone's name through the locale into a new
    struct_time, writing pages the child shares with its parent (9 faults
    and 29 us per hello connection, 18 and 72 us per Flask one, under load:
    docs/performance.md).  The civil date from a day count is H. Hinnant's
    algorithm ("chrono-Compatible Low-Level Date Algorithms",
    civil_from_days), in proleptic Gregorian eras of 146,097 days that
    begin on 1 March, so a leap day ends its year.  Seconds are floored, as
    gmtime() floors them.
    """
    days, second = divmod(int(time.time()) if now is None else math.floor(now), 86400)
    era, day_of_era = divmod(days + 719468, 146097)   # 719,468: 0000-03-01 to 1970-01-01
    year_of_era = (day_of_era - day_of_era // 1460 + day_of_era // 36524
                   - day_of_era // 146096) // 365
    day_of_year = day_of_era - (365 * year_of_era + year_of_era // 4 - year_of_era // 100)
    month_from_march = (5 * day_of_year + 2) // 153
    day = day_of_year - (153 * month_from_march + 2) // 5 + 1
    month = month_from_march + 3 if month_from_march < 10 else month_from_march - 9
    year = year_of_era + era * 400 + (month <= 2)
    hour, second = divmod(second, 3600)
    minute, second = divmod(second, 60)
    return IMF_FIXDATE % (_WEEKDAYS[(days + 3) % 7], day, _MONTHS[month - 1], year, hour,
                          minute, second)   # 1970-01-01 was a Thursday (_WEEKDAYS[3])


# --------------------------------------------------------------------------
# Parser limits, handed down by the parent (one per server).
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
