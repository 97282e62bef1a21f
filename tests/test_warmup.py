"""The default warm-up, end to end (issue 17, "Warming up safely").

``python forkserver.py APP`` with no warm-up option sends GET / through the
app first in a throwaway child; the parent warms itself only if that child
got a status below 500 and the app kept nothing open, otherwise one warning
names what was left and the server starts unwarmed, within the budget.

The apps are written here, into the test's directory, and started from
there as a user would: a Django project made with ``django-admin
startproject`` whose persistent connections (CONN_MAX_AGE > 0) stay open
after the request, a Flask app with a SQLAlchemy pool, and apps whose /
is slow, hangs, raises or answers 500.  Their views report the descriptors
of the database file they had before their own query (/proc/self/fd), so a
child that inherited the parent's connection is seen.
"""
import json
import os
import subprocess
import sys
import time

import psutil
import pytest

from forkparts.prewarm import ENVIRON_KEY, WARMUP_BUDGET_SECONDS
from tests.conftest import http_get, needs, wait_no_zombies
from tests.test_frameworks import installed

CLIENT_REQUESTS = 4                # each one a child of its own
LOG_WAIT_SECONDS = 5.0
SLOW_SECONDS = 5                   # the slow app's GET /
DJANGO_SETUP_TIMEOUT_SECONDS = 60.0

NEEDS_FLASK = needs(installed("flask"), "flask is not installed: pip install -e '.[test,examples]'")
NEEDS_SQLALCHEMY = needs(installed("sqlalchemy"),
                         "sqlalchemy is not installed: pip install -e '.[test]'")
NEEDS_DJANGO = needs(installed("django"),
                     "django is not installed: pip install -e '.[test,examples]'")

# Shared by the apps: the descriptors of a file this process has open.
FDS_OF = '''
import os

def fds_of(path):
    """This process's descriptors open on ``path`` (/proc/self/fd)."""
    found = []
    for fd in os.listdir("/proc/self/fd"):
        try:
            if os.readlink("/proc/self/fd/" + fd) == path:
                found.append(int(fd))
        except OSError:
            pass
    return found
'''

FLASK_SQLALCHEMY_APP = FDS_OF + '''
from flask import Flask
from sqlalchemy import create_engine, text

DB = os.path.join(os.path.dirname(os.path.abspath(__file__)), "app.sqlite3")
engine = create_engine("sqlite:///" + DB)   # a file database: a QueuePool keeps connections
app = Flask(__name__)


@app.route("/")
def index():
    inherited = fds_of(DB)   # before this request's own query
    with engine.connect() as conn:
        tables = conn.execute(text("select count(*) from sqlite_master")).scalar()
    return {"inherited": inherited, "tables": tables, "pid": os.getpid()}
'''

# A post_fork hook that closes the pool's connections the child inherited.
# Not engine.dispose(close=False), SQLAlchemy's advice for a child that must
# leave the parent's connections alone: it leaves their descriptors open in
# every child (unused), which is what the trial child reports.
DISPOSE_HOOK = '''
def post_fork(server, worker):
    import dbapp
    dbapp.engine.dispose()
'''


def db_answers(server, path="/"):
    """The app's answers to CLIENT_REQUESTS clients, each served by a child."""
    answers = []
    for _ in range(CLIENT_REQUESTS):
        status, _, body = http_get(server, path)
        assert status == 200, body
        answers.append(json.loads(body))
    return answers


def wait_for_log(server, text):
    deadline = time.monotonic() + LOG_WAIT_SECONDS
    while text not in server.log_text() and time.monotonic() < deadline:
        time.sleep(0.05)
    return server.log_text()


def parent_has_open(server, path):
    return any(f.path == path for f in psutil.Process(server.pid).open_files())


def warnings_in(log):
    return [line for line in log.splitlines() if "[WARNING]" in line]


@NEEDS_FLASK
@NEEDS_SQLALCHEMY
def test_a_pooled_sqlalchemy_connection_is_never_inherited_and_the_warning_names_it(
        start_server, tmp_path):
    (tmp_path / "dbapp.py").write_text(FLASK_SQLALCHEMY_APP)
    db = str(tmp_path / "app.sqlite3")
    server = start_server("dbapp:app", cwd=str(tmp_path))
    for answer in db_answers(server):
        assert answer["inherited"] == [], "a child inherited the parent's connection: %s" % answer
    assert not parent_has_open(server, db)
    warnings = warnings_in(server.log_text())
    assert len(warnings) == 1, warnings
    assert db in warnings[0] and "engine.dispose()" in warnings[0]
    assert "post_fork" in warnings[0] and "--no-prewarm" in warnings[0]
    assert "prewarm GET /" not in server.log_text()     # the parent was not warmed


@NEEDS_FLASK
@NEEDS_SQLALCHEMY
def test_a_post_fork_hook_that_drops_the_pool_lets_the_parent_warm_safely(start_server, tmp_path):
    (tmp_path / "dbapp.py").write_text(FLASK_SQLALCHEMY_APP)
    (tmp_path / "hooks.py").write_text(DISPOSE_HOOK)
    server = start_server("dbapp:app", "--config", "hooks.py", cwd=str(tmp_path))
    log = wait_for_log(server, "prewarm GET /: HTTP/1.1 200 OK")
    assert "prewarm GET /: HTTP/1.1 200 OK" in log and not warnings_in(log), log
    for answer in db_answers(server):
        assert answer["inherited"] == [], "the hook left an inherited connection: %s" % answer


DJANGO_SETTINGS_TAIL = """

# Added by tests/test_warmup.py: persistent connections, as a production
# settings file has them, and a view at / that queries the database.
DEBUG = False
ALLOWED_HOSTS = ['localhost', '127.0.0.1']
DATABASES['default']['CONN_MAX_AGE'] = 600
"""

DJANGO_URLS_TAIL = FDS_OF + """
from django.db import connection
from django.http import JsonResponse
from django.conf import settings


def index(request):
    db = str(settings.DATABASES['default']['NAME'])
    inherited = fds_of(db)   # before this request's own query
    with connection.cursor() as cursor:
        cursor.execute('select count(*) from sqlite_master')
        tables = cursor.fetchone()[0]
    return JsonResponse({'inherited': inherited, 'tables': tables, 'pid': os.getpid()})


urlpatterns.append(path('', index))
"""


def startproject(base, tails=None):
    """``django-admin startproject mysite`` in base, with each text of
    ``tails`` appended to its file of mysite/: (project directory, environment)."""
    env = dict(os.environ)
    env.pop("DJANGO_SETTINGS_MODULE", None)
    done = subprocess.run([sys.executable, "-m", "django", "startproject", "mysite"],
                          cwd=str(base), env=env, capture_output=True, text=True,
                          timeout=DJANGO_SETUP_TIMEOUT_SECONDS)
    assert done.returncode == 0, done.stderr
    for name, tail in (tails or {}).items():
        path = base / "mysite" / "mysite" / name
        path.write_text(path.read_text() + tail)
    return base / "mysite", env


@pytest.fixture(scope="module")
def django_project(tmp_path_factory):
    return startproject(tmp_path_factory.mktemp("django-warmup"),
                        {"settings.py": DJANGO_SETTINGS_TAIL, "urls.py": DJANGO_URLS_TAIL})


@NEEDS_DJANGO
def test_a_persistent_django_connection_is_never_inherited_and_the_warning_names_it(
        start_server, django_project):
    project, env = django_project
    db = str(project / "db.sqlite3")
    server = start_server("mysite.wsgi", cwd=str(project), env=env)
    for answer in db_answers(server):
        assert answer["inherited"] == [], "a child inherited the parent's connection: %s" % answer
        assert answer["tables"] == 0
    assert not parent_has_open(server, db)
    warnings = warnings_in(server.log_text())
    assert len(warnings) == 1, warnings
    assert db in warnings[0] and "CONN_MAX_AGE = 0" in warnings[0]


# Apps whose GET / misbehaves; the clients ask for /ok.  Every process that
# ran GET / writes its pid to pids.txt, so the test can see it is gone.
MISBEHAVING_APP = '''
import os, sys, time

MODE = %r
PIDS = os.path.join(os.path.dirname(os.path.abspath(__file__)), "pids.txt")


def app(environ, start_response):
    if environ["PATH_INFO"] == "/":
        with open(PIDS, "a") as f:
            f.write("%%d\\n" %% os.getpid())
        if MODE == "slow":
            time.sleep(%d)
        elif MODE == "hang":
            while True:
                time.sleep(1)
        elif MODE == "raise":
            raise RuntimeError("the warm-up view is broken")
        elif MODE == "500":
            start_response("500 Internal Server Error", [("Content-Type", "text/plain")])
            return [b"broken"]
    start_response("200 OK", [("Content-Type", "text/plain")])
    return [b"served"]
'''

EXPECTED_WARNING = {
    "slow": "did not answer within %g s" % WARMUP_BUDGET_SECONDS,
    "hang": "did not answer within %g s" % WARMUP_BUDGET_SECONDS,
    "raise": "answered HTTP/1.1 500 Internal Server Error (RuntimeError: the warm-up view is broken)",
    "500": "answered HTTP/1.1 500 Internal Server Error",
}


@pytest.mark.parametrize("mode", sorted(EXPECTED_WARNING))
def test_an_app_whose_warm_up_fails_starts_within_the_budget_and_serves(
        start_server, tmp_path, mode):
    (tmp_path / "badroot.py").write_text(MISBEHAVING_APP % (mode, SLOW_SECONDS))
    started = time.monotonic()
    server = start_server("badroot:app", cwd=str(tmp_path))
    # Waiting for the slow request, let alone 16 of them, would take longer.
    assert time.monotonic() - started < SLOW_SECONDS
    assert server.children() == []       # the trial child is reaped, not a zombie
    pids = [int(pid) for pid in (tmp_path / "pids.txt").read_text().split()]
    assert len(pids) == 1                # the trial child only: the parent never ran it
    assert pids[0] != server.pid and not psutil.pid_exists(pids[0]), "the trial child is left"
    warnings = warnings_in(server.log_text())
    assert len(warnings) == 1 and EXPECTED_WARNING[mode] in warnings[0], warnings
    assert "Traceback" not in server.log_text()
    assert http_get(server, "/ok")[2] == b"served"
    wait_no_zombies(server)


# A Flask app whose first request imports a module lazily (as Flask and its
# users do: the idna codec, a view's heavy import), and tells whether the
# warm-up request was marked and whether the module was already there.
LAZY_FLASK_APP = '''
import os, sys
from flask import Flask, request

app = Flask(__name__)
SEEN = os.path.join(os.path.dirname(os.path.abspath(__file__)), "seen.txt")


@app.route("/")
def index():
    import lazymod
    with open(SEEN, "a") as f:
        f.write("%%s %%d\\n" %% (request.environ.get(%r, False), os.getpid()))
    return {"lazymod": lazymod.LOADED, "pid": os.getpid()}


@app.route("/probe")
def probe():
    return {"lazymod": "lazymod" in sys.modules, "marked": %r in request.environ}
''' % (ENVIRON_KEY, ENVIRON_KEY)


def write_lazy_app(tmp_path):
    (tmp_path / "lazyapp.py").write_text(LAZY_FLASK_APP)
    (tmp_path / "lazymod.py").write_text("LOADED = True\n")


@NEEDS_FLASK
def test_an_app_with_nothing_left_open_is_warmed_and_its_children_inherit_it(
        start_server, tmp_path):
    write_lazy_app(tmp_path)
    server = start_server("lazyapp:app", cwd=str(tmp_path))
    log = wait_for_log(server, "prewarm GET /: HTTP/1.1 200 OK")
    assert "prewarm GET /: HTTP/1.1 200 OK" in log and not warnings_in(log), log
    status, _, body = http_get(server, "/probe")
    assert status == 200
    assert json.loads(body) == {"lazymod": True, "marked": False}


@NEEDS_FLASK
def test_the_warm_up_request_is_marked_and_never_in_the_access_log(start_server, tmp_path):
    write_lazy_app(tmp_path)
    server = start_server("lazyapp:app", cwd=str(tmp_path))
    wait_for_log(server, "prewarm GET /")
    seen = (tmp_path / "seen.txt").read_text().split("\n")[:-1]
    # The trial child's request, then the parent's passes: all marked.
    assert len(seen) >= 2 and all(line.startswith("True ") for line in seen), seen
    assert seen[0].split()[1] != str(server.pid) and seen[-1].split()[1] == str(server.pid)
    assert server.access_text() == ""
    assert http_get(server, "/")[0] == 200
    assert (tmp_path / "seen.txt").read_text().split("\n")[-2].startswith("False ")
    deadline = time.monotonic() + LOG_WAIT_SECONDS
    while not server.access_text() and time.monotonic() < deadline:
        time.sleep(0.05)
    assert len(server.access_text().splitlines()) == 1, server.access_text()


@NEEDS_FLASK
def test_no_prewarm_runs_no_app_code_before_the_first_client(start_server, tmp_path):
    write_lazy_app(tmp_path)
    server = start_server("lazyapp:app", "--no-prewarm", cwd=str(tmp_path))
    assert not (tmp_path / "seen.txt").exists()
    assert json.loads(http_get(server, "/probe")[2]) == {"lazymod": False, "marked": False}
    assert "prewarm" not in server.log_text() and not warnings_in(server.log_text())


POLLS_URLS = """
from django.http import HttpResponse

urlpatterns.append(path('polls/', lambda request: HttpResponse('polls v1')))
"""


@NEEDS_DJANGO
def test_a_new_django_project_prints_its_warm_up_404_once_not_for_every_pass(
        start_server, tmp_path):
    """A new project with its first view at /polls/ and none at /: Django
    logs "Not Found: /" on stderr for the warm-up's GET /.  The trial child
    shows it; the parent's passes (16 of them) used to print it again each
    time."""
    project, env = startproject(tmp_path, {"urls.py": POLLS_URLS})
    server = start_server("mysite.wsgi", cwd=str(project), env=env)
    log = wait_for_log(server, "prewarm GET /")
    assert "prewarm GET /: HTTP/1.1 404 Not Found (16 passes)" in log, log
    server.output_file.flush()
    with open(server.output_file.name, errors="replace") as f:   # the terminal's
        output = f.read()
    assert output.count("Not Found: /") == 1, output
    assert http_get(server, "/polls/")[2] == b"polls v1"


ONLY_HELLO_APP = '''
def app(environ, start_response):
    found = environ["PATH_INFO"] == "/hello"
    start_response("200 OK" if found else "404 Not Found", [("Content-Type", "text/plain")])
    return [b"hello\\n" if found else b"not found\\n"]
'''


def test_a_warm_up_answered_404_says_it_warmed_no_view_and_how_to(start_server, tmp_path):
    (tmp_path / "onlyhello.py").write_text(ONLY_HELLO_APP)
    server = start_server("onlyhello:app", cwd=str(tmp_path))
    log = wait_for_log(server, "prewarm GET /")
    (line,) = [l for l in log.splitlines() if "prewarm GET /:" in l]
    assert "404 Not Found (16 passes); that is the app's not-found path, not a view" in line
    assert "--prewarm PATH" in line and "[INFO]" in line and not warnings_in(log)
    server = start_server("onlyhello:app", "--prewarm", "/hello", cwd=str(tmp_path))
    log = wait_for_log(server, "prewarm GET /hello")
    assert "prewarm GET /hello: 200 OK" in log.replace("HTTP/1.1 ", "")
    assert "not-found path" not in log


COLD_FIRST_REQUEST_APP = '''
import time
FIRST = [True]

def app(environ, start_response):
    if FIRST[0]:   # a first request that imports and builds for %r s, then fast
        FIRST[0] = False
        time.sleep(%r)
    start_response("200 OK", [("Content-Type", "text/plain")])
    return [b"warm\\n"]
'''


def test_an_explicit_warm_up_slower_than_a_second_is_waited_for(start_server, tmp_path):
    """--prewarm PATH is waited for up to 30 s, and a HUP's trial likewise;
    but the warm-up's client gave up after 1 s of silence, so a first request
    of 1.5 s was "answered no response": the start exited 3, a HUP's trial of
    good code failed."""
    (tmp_path / "cold.py").write_text(COLD_FIRST_REQUEST_APP % (1.5, 1.5))
    server = start_server("cold:app", "--prewarm", "/", cwd=str(tmp_path))
    log = wait_for_log(server, "prewarm GET /:")
    assert "prewarm GET /: HTTP/1.1 200 OK" in log, log
    assert http_get(server, "/")[0] == 200


@NEEDS_FLASK
def test_the_readme_flask_example_warms_its_view_by_default(start_server):
    """README: python forkserver.py examples.flaskapp:app, no flags: GET /
    (the default warm-up) reaches the view that /hello serves."""
    server = start_server("examples.flaskapp:app")
    log = wait_for_log(server, "prewarm GET /")
    assert "prewarm GET /: HTTP/1.1 200 OK (16 passes)" in log, log
    assert http_get(server, "/hello")[2] == b"Hello world from Flask!\n"


REFUSING_APP = """
import os

def app(environ, start_response):
    # What Django does for a Host not in ALLOWED_HOSTS: 400, and an ERROR
    # (mailed to ADMINS) each time.
    with open(os.path.join(os.path.dirname(__file__), "calls.txt"), "a") as f:
        f.write("%s\\n" % bool(environ.get("forkserver.warmup")))
    if environ.get("HTTP_HOST") != "example.com":
        start_response("400 Bad Request", [("Content-Type", "text/plain")])
        return [b"Invalid HTTP_HOST header\\n"]
    start_response("200 OK", [("Content-Type", "text/plain")])
    return [b"ok\\n"]
"""


def test_a_warm_up_the_app_refuses_runs_once_not_in_every_pass(start_server, tmp_path):
    """A 400, 401 or 403 warms nothing of the app's request path, and may be
    the app's error every time (Django's DisallowedHost for a production
    ALLOWED_HOSTS: an ERROR line and a mail to ADMINS): it used to run 16
    more times in the parent at every start; now the trial child's request
    is the only one, and one warning says so."""
    (tmp_path / "refusing.py").write_text(REFUSING_APP)
    server = start_server("refusing:app", cwd=str(tmp_path))
    log = wait_for_log(server, "warm-up GET /")
    assert "the app refused it (HTTP/1.1 400 Bad Request)" in log and "--prewarm PATH" in log
    assert (tmp_path / "calls.txt").read_text() == "True\n"   # the trial child's only
    status, _, body = http_get(server, "/", headers={"Host": "example.com"})
    assert (status, body) == (200, b"ok\n")


# A home page larger than a socketpair holds unread (some 60 KB), sent whole
# or in pieces, with the status the environment names.
LARGE_PAGE_APP = '''
import os

STATUS = os.environ.get("LARGE_PAGE_STATUS", "200 OK")
PIECES = int(os.environ.get("LARGE_PAGE_PIECES", "1"))
PAGE = b"x" * (1 << 20)


def app(environ, start_response):
    start_response(STATUS, [("Content-Type", "text/plain"), ("Content-Length", str(len(PAGE)))])
    step = len(PAGE) // PIECES
    return [PAGE[i:i + step] for i in range(0, len(PAGE), step)]
'''


@pytest.mark.parametrize("pieces", [1, 64])
def test_a_home_page_larger_than_a_socketpair_holds_is_warmed(start_server, tmp_path, pieces):
    """The warm-up's client used to read the response only after the handler
    had sent it all: a page over some 60 KB stalled the send until its
    timeout, so the default warm-up gave up ("did not answer within 1 s")
    and an explicit --prewarm / waited 30 s, then stopped the start.  A
    project's DEBUG error page (Django's, 55 KB for a DisallowedHost) was
    enough.  Now a reader process reads it as it is sent."""
    (tmp_path / "largepage.py").write_text(LARGE_PAGE_APP)
    env = dict(os.environ, LARGE_PAGE_PIECES=str(pieces))
    server = start_server("largepage:app", cwd=str(tmp_path), env=env)
    log = wait_for_log(server, "prewarm GET /")
    assert "prewarm GET /: HTTP/1.1 200 OK (16 passes)" in log and not warnings_in(log), log
    status, _, body = http_get(server, "/")
    assert (status, len(body)) == (200, 1 << 20)
    started = time.monotonic()
    server = start_server("largepage:app", "--prewarm", "/", cwd=str(tmp_path), env=env)
    assert "prewarm GET /: HTTP/1.1 200 OK (16 passes)" in wait_for_log(server, "prewarm GET /")
    assert time.monotonic() - started < LOG_WAIT_SECONDS
    wait_no_zombies(server)


def test_a_large_refusal_is_read_whole_and_named(start_server, tmp_path):
    """Django's DEBUG page for a DisallowedHost is a 400 of 55 KB: the warm-up
    names the refusal instead of a timeout."""
    (tmp_path / "largepage.py").write_text(LARGE_PAGE_APP)
    env = dict(os.environ, LARGE_PAGE_STATUS="400 Bad Request")
    server = start_server("largepage:app", cwd=str(tmp_path), env=env)
    log = wait_for_log(server, "warm-up GET /")
    (warning,) = warnings_in(log)
    assert "the app refused it (HTTP/1.1 400 Bad Request)" in warning, log
    assert server.children() == []


@pytest.mark.skipif(os.geteuid() != 0, reason="needs root: the limit binds once it is nobody")
def test_a_warm_up_that_cannot_fork_warns_and_the_server_starts(start_server):
    """Under RLIMIT_NPROC with no process left for the trial child or its
    client (lab 13's limit, tighter), fork() fails with EAGAIN: the default
    warm-up says so in one warning and the server starts; it used to end the
    start with a traceback of our fork()."""
    import resource
    soft, hard = resource.getrlimit(resource.RLIMIT_NPROC)
    nobody_now = len([p for p in psutil.process_iter(["username"])
                      if p.info["username"] == "nobody"])
    # Inherited by the server; binding once it has become `nobody` (root is exempt).
    resource.setrlimit(resource.RLIMIT_NPROC, (nobody_now + 1, hard))
    try:
        server = start_server("tests.apps:hello", "--user", "nobody")
    finally:
        resource.setrlimit(resource.RLIMIT_NPROC, (soft, hard))
    log = wait_for_log(server, "warm-up GET /")
    (warning,) = [w for w in warnings_in(log) if "warm-up" in w]
    assert "the trial child could not be run: fork() failed: Resource temporarily " \
        "unavailable (a limit on processes, RLIMIT_NPROC?)" in warning, log
    assert "Traceback" not in log and server.proc.isalive()


SUBPROCESS_APP = '''
import subprocess


def app(environ, start_response):
    subprocess.Popen(["sleep", "5"])   # the app's helper, started and left running
    start_response("200 OK", [("Content-Type", "text/plain")])
    return [b"started a helper\\n"]
'''


def test_a_subprocess_left_running_keeps_the_parent_unwarmed_and_is_named(start_server,
                                                                          tmp_path):
    """The parent's 16 passes would have started 16 of them, each the
    server's own child (and every child would inherit their Popen objects)."""
    (tmp_path / "helperapp.py").write_text(SUBPROCESS_APP)
    server = start_server("helperapp:app", cwd=str(tmp_path))
    warnings = warnings_in(server.log_text())
    assert len(warnings) == 1 and "1 process(es) it started, still running: " in warnings[0] \
        and "(sleep)" in warnings[0], warnings
    assert "prewarm GET /" not in server.log_text()
    assert [p.name() for p in server.children()] == []   # none started in the parent


# Mail to files: Django 6.1's template sets MAILERS, which refuses EMAIL_BACKEND.
DJANGO_PRODUCTION_TAIL = """
DEBUG = False
ALLOWED_HOSTS = ["www.example.com", ".example.org"]
ADMINS = [("Ops", "ops@example.com")]
if "MAILERS" in globals():
    MAILERS = {"default": {"BACKEND": "django.core.mail.backends.filebased.EmailBackend",
                           "OPTIONS": {"file_path": str(BASE_DIR / "sent-mail")}}}
else:
    EMAIL_BACKEND = "django.core.mail.backends.filebased.EmailBackend"
    EMAIL_FILE_PATH = BASE_DIR / "sent-mail"
"""


@NEEDS_DJANGO
def test_a_production_django_project_is_warmed_and_mails_its_admins_nothing(
        start_server, tmp_path):
    """A project's production settings (DEBUG off, its own ALLOWED_HOSTS,
    ADMINS): the warm-up's Host: localhost was a DisallowedHost, an ERROR
    mailed to ADMINS at every start, and the project was never warmed.  The
    warm-up now asks for a host the project lets in (read from its settings)."""
    project, env = startproject(tmp_path, {"settings.py": DJANGO_PRODUCTION_TAIL})
    server = start_server("mysite.wsgi", cwd=str(project), env=env)
    log = wait_for_log(server, "GET /")
    assert "prewarm GET /: HTTP/1.1 404 Not Found (16 passes)" in log, log
    assert "DisallowedHost" not in log and not warnings_in(log), log
    assert not (project / "sent-mail").exists()
    status, _, _ = http_get(server, "/", headers={"Host": "www.example.com"})
    assert status == 404   # a new project has no view at /: Django's own 404


@NEEDS_DJANGO
def test_a_django_project_that_lets_in_no_host_is_not_warmed_and_mails_nothing(
        start_server, tmp_path):
    """DEBUG off and ALLOWED_HOSTS empty: Django refuses every Host, so the
    warm-up's one request in the trial child was a DisallowedHost mailed to
    ADMINS at every start.  It is not sent; one warning says why."""
    tail = DJANGO_PRODUCTION_TAIL.replace('["www.example.com", ".example.org"]', "[]")
    project, env = startproject(tmp_path, {"settings.py": tail})
    server = start_server("mysite.wsgi", cwd=str(project), env=env)
    (warning,) = warnings_in(wait_for_log(server, "warm-up not run"))
    assert "ALLOWED_HOSTS lets in no host" in warning
    assert not (project / "sent-mail").exists()
