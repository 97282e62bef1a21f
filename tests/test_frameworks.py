"""On the same app, forkserver's answer is gunicorn's answer.

A Django project made here with ``django-admin startproject``, and the Flask and
Pyramid apps of tests/apps_frameworks.py, are each served by forkserver and by
gunicorn (one sync worker), from the same directory with the same environment.
One client sequence is played against both servers; every response is written
as a canonical text (status line, header lines sorted, body), the MASK below
is applied, and the two transcripts must be equal.  A difference fails with a
unified diff, gunicorn's side first.
"""
import contextlib
import difflib
import hashlib
import http.client
import http.cookies
import importlib.util
import os
import random
import re
import signal
import subprocess
import sys
import time
from collections import namedtuple
from urllib.parse import urlencode

import pytest

from tests.apps_frameworks import SEND_FILE_ENV
from tests.conftest import (ROOT, ServerProcess, http_get, kill_tree, needs, raw_request,
                            wait_no_zombies)

REQUEST_TIMEOUT_SECONDS = 10.0
START_TIMEOUT_SECONDS = 20.0
STOP_TIMEOUT_SECONDS = 10.0
LOG_WAIT_SECONDS = 5.0
DJANGO_SETUP_TIMEOUT_SECONDS = 60.0
DIFF_MAX_LINES = 200              # of a failure's diff; whole admin pages make long ones

# Werkzeug builds Allow from a set, whose order follows str hashes: a fixed
# seed, the same for both servers, gives the same order in both.
HASH_SEED = "0"

# Both servers are sent this Host, so an app that builds absolute URLs from it
# (Pyramid's route_url) names the same place whichever port it was reached on.
HOST_HEADER = "localhost"

# What differs on every response whoever serves it, so is masked before the
# comparison: (regex, replacement), applied to each "name: value" header line
# (names lowercased) and to the body.  Header order is masked by sorting the
# lines.  Nothing else is.  Max-Age is relative, the same number from both
# servers, so it is compared.  No framing header is masked either: http.client
# decodes a chunked body, so bodies compare whatever the framing, yet both
# servers answer this HTTP/1.1 client alike (Content-Length where the app gave
# one or sent a file, chunked for the stream, neither for the stream's HEAD
# or a 304, "Connection: close" on every response), so Content-Length,
# Transfer-Encoding and Connection are compared as sent.
MASK = [
    # The clock, read at a different second by each server.
    (r"^date: .*", "date: <masked>"),
    # Each server's own name and version.
    (r"^server: .*", "server: <masked>"),
    # Django's never_cache sets Expires to now; a cookie's expires= is now + Max-Age.
    (r"^expires: .*", "expires: <masked>"),
    (r"(?i)(\bexpires=)[^;]*", r"\1<masked>"),
    # Django's CSRF secret (cookie) and the token of each form (new per response).
    (r"(\bcsrftoken=)[^;\s]*", r"\1<masked>"),
    (r'(name="csrfmiddlewaretoken" value=")[^"]*', r"\1<masked>"),
    # Session ids: Django's random session key; Flask's signed session
    # cookie, whose signature includes the second it was made.
    (r"(\bsessionid=)[^;\s]*", r"\1<masked>"),
    (r"(^set-cookie: session=)[^;]*", r"\1<masked>"),
]
MASK_RES = [(re.compile(pattern, re.M), replacement) for pattern, replacement in MASK]

LISTENING_RE = re.compile(r"Listening at: http://([\d.]+):(\d+)")

Answer = namedtuple("Answer", "status reason headers body")


def installed(module):
    return importlib.util.find_spec(module) is not None


NEEDS_GUNICORN = needs(installed("gunicorn"), "gunicorn is not installed: "
                       "pip install -e '.[test,examples]'")
NEEDS_DJANGO = needs(installed("django"), "django is not installed: "
                     "pip install -e '.[test,examples]'")
NEEDS_FLASK = needs(installed("flask"), "flask is not installed: "
                    "pip install -e '.[test,examples]'")
NEEDS_PYRAMID = needs(installed("pyramid"), "pyramid is not installed: "
                      "pip install -e '.[test,examples]'")


# ------------------------------------------------------------ the client

class Client:
    """One browser: a cookie jar over http.client, one connection per request,
    redirects not followed (the 302s are compared too)."""

    def __init__(self, port):
        self.port = port
        self.cookies = {}

    def request(self, method, target, fields=None, body=None, headers=None):
        headers = dict(headers or {}, Host=HOST_HEADER)
        if self.cookies:
            headers["Cookie"] = "; ".join("%s=%s" % item for item in sorted(self.cookies.items()))
        if fields is not None:
            body = urlencode(fields).encode()
            headers["Content-Type"] = "application/x-www-form-urlencoded"
        conn = http.client.HTTPConnection("127.0.0.1", self.port,
                                          timeout=REQUEST_TIMEOUT_SECONDS)
        try:
            conn.request(method, target, body=body, headers=headers)
            resp = conn.getresponse()
            answer = Answer(resp.status, resp.reason, resp.getheaders(), resp.read())
        finally:
            conn.close()
        self.remember_cookies(answer)
        return answer

    def remember_cookies(self, answer):
        for name, value in answer.headers:
            if name.lower() != "set-cookie":
                continue
            jar = http.cookies.SimpleCookie()
            jar.load(value)
            for key, morsel in jar.items():
                if morsel.value == "" or morsel["max-age"] == "0":
                    self.cookies.pop(key, None)      # the server deletes it
                else:
                    self.cookies[key] = morsel.value


def header(answer, name):
    for key, value in answer.headers:
        if key.lower() == name:
            return value
    return None


def canonical(answer):
    """The response as text: status line, masked header lines sorted, body."""
    lines = []
    for name, value in answer.headers:
        line = "%s: %s" % (name.lower(), value)
        for regex, replacement in MASK_RES:
            line = regex.sub(replacement, line)
        lines.append(line)
    body = answer.body.decode("utf-8", "backslashreplace")
    for regex, replacement in MASK_RES:
        body = regex.sub(replacement, body)
    return "%d %s\n%s\n\n%s" % (answer.status, answer.reason, "\n".join(sorted(lines)), body)


def transcript(steps):
    return "\n".join("=== %s\n%s" % (label, canonical(answer)) for label, answer in steps)


def assert_same_answers(pair, scenario):
    """Play scenario(client) -> [(label, Answer)] on both servers, each with a
    new client, and compare; return the answers (gunicorn's, forkserver's)."""
    theirs = scenario(Client(pair.gunicorn.port))
    ours = scenario(Client(pair.forkserver.port))
    expected, got = transcript(theirs), transcript(ours)
    if got != expected:
        diff = list(difflib.unified_diff(expected.splitlines(), got.splitlines(),
                                         "gunicorn", "forkserver", lineterm=""))
        if len(diff) > DIFF_MAX_LINES:
            diff[DIFF_MAX_LINES:] = ["... %d more lines" % (len(diff) - DIFF_MAX_LINES)]
        pytest.fail("forkserver's answers are not gunicorn's (after MASK):\n" + "\n".join(diff),
                    pytrace=False)
    return theirs, ours


def statuses(steps):
    return [answer.status for _, answer in steps]


# ------------------------------------------------------------ the servers

class Gunicorn:
    """gunicorn, one sync worker, on a free loopback port; its stdout and
    stderr (its error log, and whatever the app writes there) in one file."""

    def __init__(self, app, tmp_path, cwd=ROOT, env=None):
        self.log_path = tmp_path / "gunicorn.log"
        argv = [sys.executable, "-m", "gunicorn", "--bind", "127.0.0.1:0", "--workers", "1",
                "--worker-class", "sync"]
        if "--no-control-socket" in gunicorn_flags():
            argv.append("--no-control-socket")   # else it makes ~/.gunicorn/gunicorn.ctl
        run_env = dict(env if env is not None else os.environ, PYTHONUNBUFFERED="1")
        with open(self.log_path, "wb") as log:
            self.proc = subprocess.Popen(argv + app_arguments(app), cwd=cwd, env=run_env,
                                         stdout=log, stderr=subprocess.STDOUT)
        self.port = None

    def log_text(self):
        return self.log_path.read_text(errors="replace")

    def wait_ready(self, timeout=START_TIMEOUT_SECONDS):
        deadline = time.monotonic() + timeout
        while self.port is None:
            match = LISTENING_RE.search(self.log_text())
            if match:
                self.port = int(match.group(2))
            elif self.proc.poll() is not None or time.monotonic() > deadline:
                raise AssertionError("gunicorn did not start:\n" + self.log_text())
            else:
                time.sleep(0.05)

    def stop(self):
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(STOP_TIMEOUT_SECONDS)
            except subprocess.TimeoutExpired:
                kill_tree(self.proc.pid)
                self.proc.wait(STOP_TIMEOUT_SECONDS)


def app_arguments(app):
    """The app as both servers take it: a spec, or a tuple of arguments
    ("--paste", "production.ini")."""
    return list(app) if isinstance(app, tuple) else [app]


def gunicorn_flags():
    from gunicorn.config import KNOWN_SETTINGS
    return {flag for setting in KNOWN_SETTINGS for flag in (setting.cli or ())}


Pair = namedtuple("Pair", "forkserver gunicorn")


@contextlib.contextmanager
def serving(app, tmp_path, cwd=ROOT, env=None, forkserver_args=()):
    """forkserver and gunicorn on the same app, cwd and environment; both
    stopped by pid afterwards, forkserver checked for zombies first."""
    env = dict(env if env is not None else os.environ, PYTHONHASHSEED=HASH_SEED)
    gunicorn = forkserver = None
    try:
        (tmp_path / "gunicorn").mkdir()
        (tmp_path / "forkserver").mkdir()
        gunicorn = Gunicorn(app, tmp_path / "gunicorn", cwd=cwd, env=env)
        forkserver = ServerProcess(tuple(app_arguments(app)) + tuple(forkserver_args),
                                   tmp_path / "forkserver", cwd=cwd, env=env,
                                   timeout=START_TIMEOUT_SECONDS)
        gunicorn.wait_ready()
        yield Pair(forkserver, gunicorn)
        wait_no_zombies(forkserver)
    finally:
        if gunicorn is not None:
            gunicorn.stop()
        if forkserver is not None:
            try:
                forkserver.stop(STOP_TIMEOUT_SECONDS)
            finally:
                forkserver.kill_everything()


# ------------------------------------------------------------ Django

DJANGO_SETTINGS_TAIL = """

# Added by tests/test_frameworks.py: production-like, so a view that raises
# gets Django's real 500 page, and django.request logs it to stderr, which is
# forkserver's error log by default (and gunicorn's).
DEBUG = False
ALLOWED_HOSTS = ['127.0.0.1', 'localhost']
LOGGING = {
    'version': 1,
    'disable_existing_loggers': False,
    'handlers': {'stderr': {'class': 'logging.StreamHandler'}},
    'loggers': {'django.request': {'handlers': ['stderr'], 'level': 'ERROR'}},
}
"""

DJANGO_URLS_TAIL = """

def boom(request):
    raise RuntimeError('the Django test view raised')


urlpatterns.append(path('boom/', boom))
"""

DJANGO_PASSWORD = "forkserver-tests-password"
CSRF_FIELD_RE = re.compile(rb'name="csrfmiddlewaretoken" value="([^"]*)"')


def run_django(args, cwd, env):
    done = subprocess.run([sys.executable] + args, cwd=str(cwd), env=env, capture_output=True,
                          timeout=DJANGO_SETUP_TIMEOUT_SECONDS)
    assert done.returncode == 0, "%s failed:\n%s%s" % (
        " ".join(args), done.stdout.decode(errors="replace"), done.stderr.decode(errors="replace"))


@pytest.fixture(scope="module")
def django_env():
    env = dict(os.environ)
    env.pop("DJANGO_SETTINGS_MODULE", None)   # mysite/wsgi.py names its own
    return env


@pytest.fixture(scope="module")
def django_project(tmp_path_factory, django_env):
    """startproject mysite, settings for production, a view that raises,
    migrate on SQLite, a superuser: as a user would."""
    base = tmp_path_factory.mktemp("django")
    run_django(["-m", "django", "startproject", "mysite"], base, django_env)
    project = base / "mysite"
    for path, tail in ((project / "mysite" / "settings.py", DJANGO_SETTINGS_TAIL),
                       (project / "mysite" / "urls.py", DJANGO_URLS_TAIL)):
        path.write_text(path.read_text() + tail)
    run_django(["manage.py", "migrate", "--noinput", "-v", "0"], project, django_env)
    run_django(["manage.py", "createsuperuser", "--noinput", "--username", "admin",
                "--email", "admin@example.com"], project,
               dict(django_env, DJANGO_SUPERUSER_PASSWORD=DJANGO_PASSWORD))
    return project


@pytest.fixture(scope="module")
def django_servers(django_project, django_env, tmp_path_factory):
    # The bare module, as `gunicorn mysite.wsgi` takes it: its `application`.
    # The error log is stderr, forkserver's default, where Django logs.
    with serving("mysite.wsgi", tmp_path_factory.mktemp("django-servers"), cwd=str(django_project),
                 env=django_env, forkserver_args=("--error-log", "-")) as pair:
        yield pair


def csrf_token(answer):
    match = CSRF_FIELD_RE.search(answer.body)
    return match.group(1).decode() if match else ""


def django_admin_session(client):
    steps = [("GET /admin/ before login", client.request("GET", "/admin/"))]
    login = client.request("GET", "/admin/login/?next=/admin/")
    steps.append(("GET the login page", login))
    steps.append(("POST the login form with its CSRF token", client.request(
        "POST", "/admin/login/?next=/admin/",
        fields={"csrfmiddlewaretoken": csrf_token(login), "username": "admin",
                "password": DJANGO_PASSWORD, "next": "/admin/"})))
    index = client.request("GET", "/admin/")
    steps.append(("GET /admin/ with the session cookie", index))
    steps.append(("POST the logout form", client.request(
        "POST", "/admin/logout/", fields={"csrfmiddlewaretoken": csrf_token(index)})))
    steps.append(("GET /admin/ after logout", client.request("GET", "/admin/")))
    return steps


@NEEDS_DJANGO
@NEEDS_GUNICORN
def test_django_admin_login_and_logout_match_gunicorn(django_servers):
    theirs, _ = assert_same_answers(django_servers, django_admin_session)
    # The sequence did what it says (else equal answers would prove little):
    # redirected to login, logged in, saw the index, logged out, redirected again.
    assert statuses(theirs) == [302, 200, 302, 200, 200, 302]
    assert b"Site administration" in theirs[3][1].body


def django_errors(client):
    return [("GET a view that raises", client.request("GET", "/boom/")),
            ("GET a page that does not exist", client.request("GET", "/no-such-page/"))]


@NEEDS_DJANGO
@NEEDS_GUNICORN
def test_django_view_that_raises_is_djangos_500_logged_in_the_error_log(django_servers):
    theirs, _ = assert_same_answers(django_servers, django_errors)
    assert statuses(theirs) == [500, 404]
    assert b"Server Error (500)" in theirs[0][1].body
    # django.request's record and the traceback, in forkserver's error log
    # (stderr, read through the pty) and in gunicorn's.
    logged = re.compile(rb"Internal Server Error: /boom/\r?\n(.*\r?\n)*?"
                        rb"RuntimeError: the Django test view raised")
    django_servers.forkserver.proc.expect(logged, timeout=LOG_WAIT_SECONDS)
    assert logged.search(django_servers.gunicorn.log_text().encode())


# ------------------------------------------------------------ Flask

SEND_FILE_BYTES = b"".join(b"line %05d of the file send_file serves\n" % n for n in range(400))
SEND_FILE_MTIME = 1700000000     # fixed, so Last-Modified and ETag are too
UPLOAD_BYTES = random.Random(7).randbytes(300 * 1024)
BOUNDARY = b"forkserver-test-boundary-7d1c"


@pytest.fixture(scope="module")
def frameworks_env(tmp_path_factory):
    path = tmp_path_factory.mktemp("send-file") / "served.txt"
    path.write_bytes(SEND_FILE_BYTES)
    os.utime(path, (SEND_FILE_MTIME, SEND_FILE_MTIME))
    return dict(os.environ, **{SEND_FILE_ENV: str(path)})


@pytest.fixture(scope="module")
def flask_servers(frameworks_env, tmp_path_factory):
    with serving("tests.apps_frameworks:flask_app", tmp_path_factory.mktemp("flask-servers"),
                 env=frameworks_env) as pair:
        yield pair


def multipart(fields, files):
    """A multipart/form-data body: (body, content type)."""
    parts = []
    for name, value in fields:
        parts.append(b'--%s\r\nContent-Disposition: form-data; name="%s"\r\n\r\n%s\r\n'
                     % (BOUNDARY, name.encode(), value.encode()))
    for name, filename, data in files:
        parts.append(b'--%s\r\nContent-Disposition: form-data; name="%s"; filename="%s"\r\n'
                     b"Content-Type: application/octet-stream\r\n\r\n%s\r\n"
                     % (BOUNDARY, name.encode(), filename.encode(), data))
    parts.append(b"--%s--\r\n" % BOUNDARY)
    return b"".join(parts), "multipart/form-data; boundary=" + BOUNDARY.decode()


def flask_session(client):
    return [("GET /session, visit %d" % n, client.request("GET", "/session"))
            for n in (1, 2, 3)]


@NEEDS_FLASK
@NEEDS_GUNICORN
def test_flask_session_cookie_matches_gunicorn(flask_servers):
    theirs, _ = assert_same_answers(flask_servers, flask_session)
    assert [answer.body for _, answer in theirs] == [b"visit 1\n", b"visit 2\n", b"visit 3\n"]


def flask_form(client):
    fields = [("name", "Zoë & co"), ("tags", "a"), ("tags", "b=c"), ("empty", "")]
    return [("POST a urlencoded form", client.request("POST", "/form", fields=fields))]


@NEEDS_FLASK
@NEEDS_GUNICORN
def test_flask_form_post_matches_gunicorn(flask_servers):
    theirs, _ = assert_same_answers(flask_servers, flask_form)
    assert theirs[0][1].body == "empty=\nname=Zoë & co\ntags=a\ntags=b=c\n".encode()


def flask_upload(client):
    body, ctype = multipart([("note", "two files")],
                            [("data", "blob.bin", UPLOAD_BYTES),
                             ("text", "résumé.txt", "ünïcode\n".encode())])
    return [("POST a multipart upload", client.request(
        "POST", "/upload", body=body, headers={"Content-Type": ctype}))]


@NEEDS_FLASK
@NEEDS_GUNICORN
def test_flask_multipart_upload_matches_gunicorn(flask_servers):
    theirs, _ = assert_same_answers(flask_servers, flask_upload)
    first = theirs[0][1].body.decode().splitlines()[0]
    assert first == "data blob.bin %d %s" % (len(UPLOAD_BYTES),
                                             hashlib.sha256(UPLOAD_BYTES).hexdigest())


def flask_send_file(client):
    whole = client.request("GET", "/file")
    etag, modified = header(whole, "etag") or "", header(whole, "last-modified") or ""
    asks = [
        ("GET the file", None),
        ("Range: first ten bytes", {"Range": "bytes=0-9"}),
        ("Range: last seven bytes", {"Range": "bytes=-7"}),
        ("Range: two ranges", {"Range": "bytes=0-1,5-6"}),
        ("Range: past the end", {"Range": "bytes=999999-"}),
        ("If-Range with the ETag", {"Range": "bytes=10-19", "If-Range": etag}),
        ("If-Range with another ETag", {"Range": "bytes=10-19", "If-Range": '"other"'}),
        ("If-None-Match with the ETag", {"If-None-Match": etag}),
        ("If-None-Match with another ETag", {"If-None-Match": '"other"'}),
        ("If-Modified-Since Last-Modified", {"If-Modified-Since": modified}),
        ("If-Modified-Since long ago", {"If-Modified-Since": "Mon, 01 Jan 2001 00:00:00 GMT"}),
    ]
    steps = [(asks[0][0], whole)]
    steps += [(label, client.request("GET", "/file", headers=headers))
              for label, headers in asks[1:]]
    steps.append(("HEAD the file", client.request("HEAD", "/file")))
    return steps


@NEEDS_FLASK
@NEEDS_GUNICORN
def test_flask_send_file_with_range_and_304_matches_gunicorn(flask_servers):
    theirs, _ = assert_same_answers(flask_servers, flask_send_file)
    assert statuses(theirs) == [200, 206, 206, 416, 416, 206, 200, 304, 200, 304, 200, 200]
    assert theirs[0][1].body == SEND_FILE_BYTES
    assert theirs[1][1].body == SEND_FILE_BYTES[:10]


def flask_stream(client):
    return [("GET a streamed response", client.request("GET", "/stream?n=5")),
            ("HEAD a streamed response", client.request("HEAD", "/stream?n=5"))]


@NEEDS_FLASK
@NEEDS_GUNICORN
def test_flask_streaming_response_matches_gunicorn(flask_servers):
    theirs, _ = assert_same_answers(flask_servers, flask_stream)
    assert theirs[0][1].body == b"".join(b"line %d of /stream\n" % n for n in range(5))


def flask_redirects_and_errors(client):
    return [("GET a redirect", client.request("GET", "/old")),
            ("GET a page that does not exist", client.request("GET", "/no/such/page")),
            ("GET a view that raises", client.request("GET", "/boom")),
            ("POST to a GET-only view", client.request("POST", "/session", body=b""))]


@NEEDS_FLASK
@NEEDS_GUNICORN
def test_flask_redirect_404_and_500_handlers_match_gunicorn(flask_servers):
    theirs, _ = assert_same_answers(flask_servers, flask_redirects_and_errors)
    assert statuses(theirs) == [302, 404, 500, 405]
    assert theirs[2][1].body == b"the Flask app's own 500 page\n"


# ------------------------------------------------------------ Pyramid

@pytest.fixture(scope="module")
def pyramid_servers(frameworks_env, tmp_path_factory):
    with serving("tests.apps_frameworks:pyramid_app", tmp_path_factory.mktemp("pyramid-servers"),
                 env=frameworks_env) as pair:
        yield pair


def pyramid_cookies_and_post(client):
    return [("GET /visits, visit 1", client.request("GET", "/visits")),
            ("GET /visits, visit 2", client.request("GET", "/visits")),
            ("POST a form", client.request("POST", "/post",
                                           fields=[("word", "héllo"), ("n", "42")])),
            ("POST then redirect", client.request("POST", "/post-redirect", fields={"a": "b"})),
            ("GET a POST-only view", client.request("GET", "/post"))]


@NEEDS_PYRAMID
@NEEDS_GUNICORN
def test_pyramid_cookies_and_post_match_gunicorn(pyramid_servers):
    theirs, _ = assert_same_answers(pyramid_servers, pyramid_cookies_and_post)
    assert statuses(theirs) == [200, 200, 200, 302, 404]
    assert theirs[1][1].body == b"visit 2\n"
    assert theirs[2][1].body == "n=42\nword=héllo\ncookie visits=2\n".encode()



# ------------------------------------------------ a bad body under Django

@NEEDS_DJANGO
def test_a_request_body_cut_short_is_the_clients_error_to_django_not_a_500(
        start_server, django_project, django_env):
    """wsgi.input's errors are OSErrors to the app, as gunicorn's body errors
    are: Django turns one into UnreadablePostError and its CSRF check treats
    that as the client's broken connection.  Before, a client that sent part of
    a login form and hung up put an "Internal Server Error" and a traceback of
    forkserver's IncompleteBody in django.request's log.  The client gets the
    server's 400 either way."""
    server = start_server("mysite.wsgi", "--capture-output", cwd=str(django_project),
                          env=django_env)
    raw = raw_request(server, b"POST /admin/login/ HTTP/1.1\r\nHost: localhost\r\n"
                      b"Content-Type: application/x-www-form-urlencoded\r\n"
                      # With its cookie, Django's CSRF check reads the form for the token.
                      b"Cookie: csrftoken=" + b"c" * 32 + b"\r\n"
                      b"Content-Length: 100000\r\n\r\n" + b"username=a&" * 100,
                      shutdown=True)
    assert raw.startswith(b"HTTP/1.1 400 "), raw[:200]
    assert server.stop() == 0
    log = server.log_text()
    assert "body" in log                       # the server's own line about the 400
    assert "Internal Server Error" not in log and "Traceback" not in log, log


# ------------------------------------------------ an app mounted under a prefix

@pytest.mark.parametrize("how", [("-e", "SCRIPT_NAME=/prefix/"), ("--env", "SCRIPT_NAME=/prefix")])
def test_script_name_mounts_a_flask_app_under_a_prefix_as_gunicorn_does(start_server, how):
    """gunicorn takes the mount prefix from $SCRIPT_NAME (--env sets it): Flask
    routes /prefix/old as /old and its url_for builds /prefix/... links.  It
    used to be ignored: SCRIPT_NAME was always "", /prefix/old a 404."""
    server = start_server("tests.apps_frameworks:flask_app", *how)
    conn = http.client.HTTPConnection(server.host, server.port, timeout=REQUEST_TIMEOUT_SECONDS)
    try:
        conn.request("GET", "/prefix/old")
        resp = conn.getresponse()
        resp.read()
        assert resp.status == 302
        assert resp.getheader("Location") == "/prefix/session"
    finally:
        conn.close()
    assert "/prefix/old" in server.access_text() or wait_for_access(server, "/prefix/old")


def wait_for_access(server, text):
    deadline = time.monotonic() + LOG_WAIT_SECONDS
    while time.monotonic() < deadline:
        if text in server.access_text():
            return True
        time.sleep(0.05)
    return False


def test_a_script_name_that_is_not_a_path_is_a_usage_error(tmp_path):
    env = dict(os.environ, SCRIPT_NAME="prefix")
    done = subprocess.run([sys.executable, os.path.join(ROOT, "forkserver.py"), "tests.apps:hello",
                           "--bind", "127.0.0.1:0", "--no-prewarm"], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=START_TIMEOUT_SECONDS)
    assert done.returncode == 2
    assert "SCRIPT_NAME 'prefix': a path starting with /" in done.stderr
    assert "Traceback" not in done.stderr


@pytest.mark.parametrize("evalex", [True, False])
def test_werkzeugs_debugger_console_is_named_at_start_as_not_working_here(start_server, evalex):
    """werkzeug's DebuggedApplication keeps a traceback's frames in the
    process that raised, for its console's later requests: here each
    connection is a new child, so the console answered 404 and nothing said
    why.  One warning at start when the console is on; none without it."""
    server = start_server("tests.apps_frameworks:debugged(%s)" % evalex)
    assert http_get(server, "/")[:3:2] == (200, b"ok")
    assert server.stop() == 0
    said = "werkzeug's DebuggedApplication with evalex=True" in server.log_text()
    assert said is evalex
