"""The Forwarded header (RFC 7239) from a trusted proxy: parsed by its
grammar, so a quoted ',' or ';' stays inside its value, and a header that does
not parse names no client at all (wsgi_handler.forwarded_elements)."""
import pytest
from hypothesis import given, settings, strategies as st

from forkparts.proxy import ProxyTrust, forwarded_elements

PEER = "127.0.0.1"             # trusted by the default --forwarded-allow-ips
CLIENT = "198.51.100.17"       # RFC 5737 documentation addresses
FORGED = "192.0.2.1"


def rewrite(forwarded, peer=PEER):
    environ = {"REMOTE_ADDR": peer, "REMOTE_PORT": "4242", "wsgi.url_scheme": "http",
               "HTTP_FORWARDED": forwarded}
    ProxyTrust("127.0.0.1,::1", "forwarded")(environ)   # --forwarded-headers
    return environ["REMOTE_ADDR"], environ["wsgi.url_scheme"]


@pytest.mark.parametrize("header", [
    'for=%s;by="_proxy,a"' % CLIENT,                    # a quoted ','
    'for=%s;ext="a\\",b"' % CLIENT,                     # an escaped quote, then ','
    'for="%s";ext="\\\\"' % CLIENT,                     # an escaped backslash
    'For=%s;BY=_p' % CLIENT,                            # names are case-insensitive
    'for=%s, for=%s' % (FORGED, CLIENT),                # the rightmost untrusted
    'for=%s , for=127.0.0.1' % CLIENT,                  # past a trusted proxy
])
def test_the_client_is_found_whatever_the_quoted_values_hold(header):
    assert rewrite(header) == (CLIENT, "http")


def test_a_quoted_semicolon_does_not_make_a_parameter():
    # A naive split on ';' would read proto=https out of the quoted value.
    assert rewrite('for=%s;ext="x;proto=https"' % CLIENT) == (CLIENT, "http")
    assert rewrite('for=%s;proto="HTTPS"' % CLIENT) == (CLIENT, "https")


@pytest.mark.parametrize("header", [
    # A client's unterminated quote, then the element the proxy appended: a
    # parser that let the quote run to the end would believe the client.
    'for=%s;ext=", for=%s' % (FORGED, CLIENT),
    'for=%s;for=%s' % (FORGED, CLIENT),                 # a parameter twice
    'for=%s;proto=https junk' % FORGED,                 # not a parameter
    'for=%s;=x' % FORGED,                               # no name
    'for=%s proto=https' % FORGED,                      # no ';' between two parameters
    'for=%s;ext="\x00"' % FORGED,                       # a control in a quoted-string
])
def test_a_header_that_does_not_parse_names_no_client(header):
    assert forwarded_elements(header) is None
    assert rewrite(header) == (PEER, "http")


def test_an_untrusted_peer_is_not_believed_however_well_formed():
    assert rewrite("for=%s;proto=https" % FORGED, peer=CLIENT) == (CLIENT, "http")


QDTEXT = st.text(st.characters(min_codepoint=0x20, max_codepoint=0xff,
                               blacklist_characters="\x7f"), max_size=12)
NAMES = st.sampled_from(["for", "by", "host", "proto", "ext", "x-y"])


def quote(value):
    return '"%s"' % value.replace("\\", "\\\\").replace('"', '\\"')


@settings(deadline=None, max_examples=300)
@given(st.lists(st.dictionaries(NAMES, QDTEXT, min_size=1, max_size=4), min_size=1, max_size=4))
def test_any_quoted_values_come_back_as_they_were_sent(elements):
    header = ", ".join(";".join("%s=%s" % (name, quote(value)) for name, value in e.items())
                       for e in elements)
    assert forwarded_elements(header) == elements


@settings(deadline=None, max_examples=300)
@given(st.text(alphabet=st.sampled_from('fo=r;,"\\ \t1.2:[]_x\x85'), max_size=30))
def test_any_text_parses_or_is_refused_never_raises(header):
    elements = forwarded_elements(header)
    assert elements is None or all(isinstance(e, dict) for e in elements)
    rewrite(header)


def test_forwarded_is_ignored_unless_it_is_the_family_the_proxy_sets():
    # nginx sets X-Forwarded-* and passes a client's Forwarded through: by
    # default only X-Forwarded-* is believed, even from a trusted peer.
    environ = {"REMOTE_ADDR": PEER, "REMOTE_PORT": "4242", "wsgi.url_scheme": "http",
               "HTTP_FORWARDED": "for=%s;proto=https" % FORGED,
               "HTTP_X_FORWARDED_FOR": CLIENT}
    ProxyTrust("127.0.0.1,::1")(environ)
    assert (environ["REMOTE_ADDR"], environ["wsgi.url_scheme"]) == (CLIENT, "http")
    environ = {"REMOTE_ADDR": PEER, "REMOTE_PORT": "4242", "wsgi.url_scheme": "http",
               "HTTP_FORWARDED": "for=%s" % CLIENT, "HTTP_X_FORWARDED_FOR": FORGED,
               "HTTP_X_FORWARDED_PROTO": "https"}
    ProxyTrust("127.0.0.1,::1", "forwarded")(environ)
    assert (environ["REMOTE_ADDR"], environ["wsgi.url_scheme"]) == (CLIENT, "http")
