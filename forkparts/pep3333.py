"""What PEP 3333 asks of an app's response: a status line and headers the
server can send as they are, checked once (check_status, check_headers), and
the error that names what the app got wrong (ResponseError).

DESIGN note: the child's front door (wsgi_handler) checks a common response
in one regular-expression match (RESPONSE_HEAD_RE) and calls these only for
the rest, which they either take or refuse by name; the rules, with their RFC
sections, are here in one place.  Nothing here reads a socket or keeps state.
"""

import re
from http import HTTPStatus

from forkparts.http11 import (
    FIELD_CONTENT_TEXT, FIELD_VALUE_RE, HOP_BY_HOP, OWS, TCHAR_TEXT, TOKEN_RE)


class ResponseError(Exception):
    """The app broke PEP 3333 (bad status, header, write, length)."""


# PEP 3333: status is "999 Reason phrase"; RFC 9112 4: status-line =
#   HTTP-version SP status-code SP [ reason-phrase ], reason-phrase =
#   1*( HTAB / SP / VCHAR / obs-text ).  The app gives the final response:
#   1xx is interim (RFC 9110 15.2), so it is not taken here; and "values
#   outside the range 100..599 are invalid" (RFC 9110 15).
STATUS_RE = re.compile(r"[2-5][0-9]{2} [\t\x20-\x7e\x80-\xff]*")
# Any status check_status can take: a 1xx (then refused by name) or a bare
# code ("200"), which gets its standard reason phrase.
ANY_STATUS_RE = re.compile(r"[1-5][0-9]{2}(?: [\t\x20-\x7e\x80-\xff]*)?")
# STATUS_RE, then each header as name CR value (TOKEN_RE, FIELD_VALUE_RE),
# one per line: start_response checks a whole common response in one match.
RESPONSE_HEAD_RE = re.compile(
    STATUS_RE.pattern + r"(?:\n" + TCHAR_TEXT + r"+\r(?:"
    + FIELD_CONTENT_TEXT + r")?)*")
# Of HOP_BY_HOP, the two that cannot corrupt the framing: dropped (as gunicorn's
# Response.process_headers drops every hop-by-hop field), because persistence
# is the server's to decide; but an app's ``Connection: close`` is honoured
# (RFC 9112 9.6), so the connection ends after that response even under
# --keep-alive.
APP_DROPPED_HEADERS = frozenset(("connection", "keep-alive"))

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
