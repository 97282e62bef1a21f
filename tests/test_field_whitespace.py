"""Only SP and HTAB are trimmed from field values (RFC 9110 5.6.3 OWS), in the
proxy-header and credential code too: Python's str.strip() would also drop
\\x85 and \\xa0, which a latin-1 decoded header value may hold (obs-text)."""
import base64
import os
import re
import socket

import pytest

import wsgi_handler
from forkparts.exits import EXIT_OK
from forkparts.logs import Log, remote_user
from forkparts.proxy import ProxyTrust
from tests.apps import hello

PEER = "127.0.0.1"             # trusted by the default --forwarded-allow-ips
CLIENT = "203.0.113.9"         # RFC 5737 documentation address
NON_OWS_SPACES = ("\x85", "\xa0", "\x0b", "\x0c", "\x1f")
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def environ_from(**headers):
    environ = {"REMOTE_ADDR": PEER, "REMOTE_PORT": "4242", "wsgi.url_scheme": "http"}
    environ.update(("HTTP_" + k.upper(), v) for k, v in headers.items())
    return environ


def rewrite(environ, family="x-forwarded"):
    ProxyTrust("127.0.0.1,::1", family)(environ)
    return environ


def test_forwarded_for_with_sp_and_htab_around_the_address_is_used():
    environ = rewrite(environ_from(x_forwarded_for=" \t%s\t " % CLIENT,
                                   x_forwarded_proto=" https\t"))
    assert (environ["REMOTE_ADDR"], environ["wsgi.url_scheme"]) == (CLIENT, "https")


@pytest.mark.parametrize("space", NON_OWS_SPACES, ids=[hex(ord(c)) for c in NON_OWS_SPACES])
def test_x_forwarded_for_padded_with_other_whitespace_is_not_an_address(space):
    environ = rewrite(environ_from(x_forwarded_for=space + CLIENT,
                                   x_forwarded_proto=space + "https"))
    assert (environ["REMOTE_ADDR"], environ["wsgi.url_scheme"]) == (PEER, "http")


@pytest.mark.parametrize("space", NON_OWS_SPACES, ids=[hex(ord(c)) for c in NON_OWS_SPACES])
def test_forwarded_element_padded_with_other_whitespace_is_not_an_address(space):
    environ = rewrite(environ_from(forwarded="for=%s%s;proto=https" % (space, CLIENT)),
                      "forwarded")
    assert environ["REMOTE_ADDR"] == PEER


@pytest.mark.parametrize("space", NON_OWS_SPACES, ids=[hex(ord(c)) for c in NON_OWS_SPACES])
def test_basic_credentials_with_other_whitespace_never_raise(space):
    token = base64.b64encode(b"alice:secret").decode()
    assert remote_user({"HTTP_AUTHORIZATION": "Basic " + token}) == "alice"
    # a2b_base64 skips non-alphabet ASCII (as gunicorn's b64decode does) and
    # raises a plain ValueError for non-ASCII: either way no exception escapes.
    user = remote_user({"HTTP_AUTHORIZATION": "Basic " + token[:4] + space + token[4:]})
    assert user == ("-" if ord(space) > 0x7f else "alice")


def test_non_ascii_basic_credentials_are_logged_not_a_crash(tmp_path):
    """The access log's %(u)s decodes Authorization after the response: an
    obs-text byte there once raised out of serve_connection (a traceback and
    exit status 1 in the child)."""
    client, server = socket.socketpair()
    access = tmp_path / "access.log"
    fd = os.open(str(access), os.O_WRONLY | os.O_CREAT, 0o644)
    config = wsgi_handler.HandlerConfig(log=Log(
        error_fd=fd, access_fd=fd, access_format="%(u)s %(s)s")).freeze()
    client.sendall(b"GET / HTTP/1.1\r\nHost: a\r\nAuthorization: Basic YW\xa0xp\r\n\r\n")
    try:
        status = wsgi_handler.serve_connection(server, (PEER, 1), hello, config)
    finally:
        os.close(fd)
    assert status == EXIT_OK
    assert client.recv(4096).startswith(b"HTTP/1.1 200 ")
    client.close()
    assert access.read_text() == "- 200\n"


@pytest.mark.parametrize("name", ["wsgi_handler.py"] + [
    os.path.join("forkparts", f) for f in sorted(os.listdir(os.path.join(ROOT, "forkparts")))
    if f.endswith(".py")])
def test_no_argumentless_strip_in_the_child(name):
    """House rule: never str.strip() with no argument in wsgi_handler.py or its parts."""
    with open(os.path.join(ROOT, name)) as f:
        offenders = [(n, line.strip(" \n")) for n, line in enumerate(f, 1)
                     if re.search(r"\.[lr]?strip\(\)", line)]
    assert offenders == []
