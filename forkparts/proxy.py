"""Proxy trust: REMOTE_ADDR and wsgi.url_scheme from a trusted proxy's headers.

DESIGN note: a security rule of its own (docs/security.md), read only when a
request carries the header family the proxy in front sets, and only from the
peers --forwarded-allow-ips names.  Separate from the parser because it works
on the environ, after parsing, and because its trust list is built once in the
parent from the CLI.
"""

import re
import socket

from forkparts.http11 import OWS, TCHAR_TEXT

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
    r"|([;,])|[ \t]+" % (TCHAR_TEXT, TCHAR_TEXT))
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
