"""The sans-IO request parser: bytes of a head in, a Request value out.

DESIGN note: parsing never touches a socket (h11's rule), so every rule can be
tested on bytes alone, whole and in fragments (tests/malformed.py), and the
parent's accept filter can use find_head_end too.  It is strict on purpose
(RFC 9112 / RFC 9110): each rule names its reason, and raises one HTTPError
class per status; docs/security.md is the table of them all.  parse_head has
two lanes, one regex pass for the common head and a line-by-line lane that
names what is wrong; both apply the same field policy (field_policy) for Host,
the target and Connection.
"""

import operator
import re

from forkparts.http11 import (
    DEFAULT_LIMITS, DIGITS_RE, FIELD_CONTENT_TEXT, FIELD_VALUE_RE, MAX_CONTENT_LENGTH_DIGITS, OWS,
    TCHAR, TCHAR_TEXT, TOKEN_RE, BadRequest, ExpectationFailed, HeaderFieldsTooLarge,
    MethodNotImplemented, NotImplementedCoding, PayloadTooLarge, URITooLong, VersionNotSupported)

# RFC 9112 3:  request-line = method SP request-target SP HTTP-version
#   HTTP-version = HTTP-name "/" DIGIT "." DIGIT   (exactly one SP between)
REQUEST_LINE_RE = re.compile(rb"(" + TCHAR + rb"+) ([\x21-\x7e]+) HTTP/([0-9])\.([0-9])")
# RFC 9112 3.2.2:  absolute-form = absolute-URI  (scheme "://" authority ...)
ABSOLUTE_FORM_RE = re.compile(r"([A-Za-z][A-Za-z0-9+.\-]*)://([^/?#]*)(.*)", re.S)
# RFC 3986 3.2.2/3.2.3: host = IP-literal / IPv4address / reg-name; port = *DIGIT
HOST_RE = re.compile(r"(?:\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9\-._~%!$&'()*+,;=]+)(?::[0-9]*)?")
# RFC 9112 3.2.3:  authority-form = uri-host ":" port   (the port is required)
AUTHORITY_FORM_RE = re.compile(r"(?:\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9\-._~%!$&'()*+,;=]+):[0-9]+")
# A CR not followed by LF, or an LF not preceded by CR (RFC 9112 2.2: bare CR
# MUST be rejected or replaced; bare LF we reject too, as gunicorn 22 does, to
# avoid disagreeing with a proxy about where a line ends).
BARE_EOL_RE = re.compile(rb"\r(?!\n)|(?<!\r)\n")
# A method is a token and case-sensitive (RFC 9110 9.1), and every method
# there is is upper case: "get" is not GET, yet frameworks upper-case it and
# serve it as one, and "head" would get a body.  A method with a lower-case
# letter is 501, as no method of that spelling is implemented (gunicorn and
# waitress answer 400).
UPPER_TCHAR_TEXT = TCHAR_TEXT.replace("a-z", "")
# The common head in one match, on the latin-1 text: an origin-form target
# with no fragment (RFC 9112 3.2.1), HTTP/1.x, and field lines of the grammar
# of TOKEN_RE and FIELD_VALUE_RE.  parse_head takes it in one pass; any other head goes through the
# line-by-line parser, which names what is wrong.
# One optional group holds the value and the OWS after it, so no two parts of
# the pattern compete for the same spaces (no quadratic backtracking).
SIMPLE_HEAD_RE = re.compile(
    r"((" + UPPER_TCHAR_TEXT + r"+) (/[\x21\x22\x24-\x7e]*) HTTP/1\.([0-9]))\r\n"
    r"((?:" + TCHAR_TEXT + r"+:[ \t]*(?:" + FIELD_CONTENT_TEXT + r"[ \t]*)?\r\n)*)\r\n")
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
# Only this transfer coding is implemented; others get 501 (RFC 9112 6.1).
KNOWN_CODINGS = frozenset(("chunked",))


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


def check_partial_head(buf, limits, since=0):
    """Size checks on a head that has not ended yet: a line already over
    its limit, or a field too many, is answered now (414, 431), not when the
    head ends or its timeout comes (a 408 ten seconds later, where a complete
    head got 414).  ``since``: the head's length at the last look, so that a
    head sent a byte at a time is not looked at whole each time."""
    first = 2 if buf.startswith(b"\r\n") else 0
    line_end = buf.find(b"\r\n", first)
    if (line_end if line_end != -1 else len(buf)) - first > limits.request_line:
        raise URITooLong("request line longer than %d bytes" % limits.request_line)
    if line_end != -1:
        grown = max(buf.rfind(b"\r\n", line_end, max(since - 1, line_end)), line_end) + 2
        if longest_line(buf, grown) > limits.field:
            raise HeaderFieldsTooLarge("a header field longer than %d bytes" % limits.field)
        if (buf.find(b"\r\n", max(since - 1, line_end + 2)) != -1   # a line ended since
                and buf.count(b"\r\n", line_end + 2) > limits.fields):
            raise HeaderFieldsTooLarge("more than %d header fields" % limits.fields)
    if len(buf) > limits.head:
        raise HeaderFieldsTooLarge("request head longer than %d bytes" % limits.head)


def longest_line(buf, start):
    """The length of the longest line of ``buf`` from ``start``, the last
    one (not ended yet) included, CRLFs not counted."""
    longest = 0
    while True:
        end = buf.find(b"\r\n", start)
        if end == -1:
            return max(longest, len(buf) - start - buf.endswith(b"\r"))
        longest = max(longest, end - start)
        start = end + 2


def parse_head(data, limits=DEFAULT_LIMITS):
    """Parse a complete head (ending in CRLFCRLF) into a Request; pure, and
    raises one HTTPError subclass per status.  The common head is taken here in
    one pass (each function a child runs costs it pages: docs/performance.md),
    with Host, the target and Connection through field_policy as in the other
    lane; any other head goes to parse_head_by_line, which gives the same
    Request or names the error."""
    match = SIMPLE_HEAD_RE.fullmatch(data.decode("latin-1")) if len(data) <= limits.simple_head else None
    if match is None:
        return parse_head_by_line(data, limits)
    raw_line, method, target, minor, block = match.groups()
    fields, singletons, host, connection = [], [], None, None
    # The count and repeat rules of parse_fields and build_request, in one
    # loop; a head they would refuse goes to the other lane, which names it.
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
    if len(fields) > limits.fields:
        return parse_head_by_line(data, limits)
    version = (1, int(minor))
    path, query, host, keep_alive = field_policy(method, target, version, host, connection)
    return Request((method, target, version, tuple(fields), path, query, host,
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
    if method != method.upper():
        raise MethodNotImplemented("method %r is not upper case: methods are "
                                   "case-sensitive (RFC 9110 9.1)" % method.decode("ascii"))
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
    hosts, connection = get("host"), get("connection")
    path, query, host, keep_alive = field_policy(
        method, target, version, hosts[0] if hosts else None,
        ",".join(connection) if connection else None)
    te, cl = get("transfer-encoding"), get("content-length")
    body_kind, length = body_framing(version, te, cl, limits) if te or cl else ("none", 0)
    expect = get("expect")
    return Request((
        method, target, version, tuple(headers), path, query, host, body_kind, length,
        check_expect(version, expect) if expect else False, keep_alive,
        raw_line.decode("latin-1")))


def field_policy(method, target, version, host, connection):
    """Host, the request target and Connection: the one policy of both lanes
    of parse_head.  ``host`` is the Host value (a repeat is refused before) or
    None; ``connection`` the Connection values joined with ",", or None.
    Returns (path, query, host, keep_alive).  The common case is inline: each
    function a child runs costs it pages (docs/performance.md)."""
    if host is None:
        if version >= (1, 1):
            # RFC 9112 3.2: a server MUST respond 400 to an HTTP/1.1 request
            # that lacks a Host header field.
            raise BadRequest("missing Host header")
    elif host and not HOST_RE.fullmatch(host):
        raise BadRequest("invalid Host header %r" % host[:100])
    if target[0] == "/" and "#" not in target and method != "CONNECT":
        path, _, query = target.partition("?")   # origin-form (RFC 9112 3.2.1)
    else:
        path, query, host = split_target(method, target, host)
    keep_alive = version >= (1, 1)   # HTTP/1.1 and later persist by default (RFC 9112 9.3)
    for token in connection.lower().split(",") if connection is not None else ():
        token = token.strip(OWS)   # RFC 9110 5.6.1: OWS "," OWS
        if token == "close":
            return path, query, host, False
        if token == "keep-alive":
            keep_alive = True   # HTTP/1.0's opt-in (RFC 9112 9.3)
    return path, query, host, keep_alive


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
