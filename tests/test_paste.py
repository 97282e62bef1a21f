"""--paste INI[#NAME]: a Pyramid project's PasteDeploy file, served as gunicorn's
--paste serves it.

The project is made here as a Pyramid starter project is laid out: a package
whose ``main(global_config, **settings)`` makes the app, a production.ini
whose ``[app:main]`` says ``use = egg:myproject`` and holds the settings,
and ``[loggers]``/``[handlers]``/``[formatters]`` sections.  ``egg:`` finds
the project through its installed metadata; a ``.dist-info`` directory
beside the package is what ``pip install -e .`` leaves importlib.metadata to
find, without installing anything into the test's environment.
"""
import os
import re
import signal
import subprocess
import sys
import textwrap
import time

import pytest

from tests.conftest import FORKSERVER, ROOT, http_get
from tests.test_frameworks import (NEEDS_GUNICORN, NEEDS_PYRAMID, Client, assert_same_answers,
                                   serving, statuses)

START_TIMEOUT_SECONDS = 30
RELOAD_WAIT_SECONDS = 10.0

PROJECT_INIT = '''
import logging

from pyramid.config import Configurator
from pyramid.response import Response

log = logging.getLogger(__name__)


def home(request):
    settings = request.registry.settings
    log.info("home view, region %s", settings["app_region"])
    return Response("greeting=%(greeting)s\\ndb=%(db)s\\nregion=%(app_region)s\\n" % settings,
                    content_type="text/plain")


def echo(request):
    return Response("".join("%s=%s\\n" % item for item in sorted(request.POST.items())),
                    content_type="text/plain")


def main(global_config, **settings):
    settings["app_region"] = global_config.get("region", "nowhere")
    with Configurator(settings=settings) as config:
        config.add_route("home", "/")
        config.add_view(home, route_name="home")
        config.add_route("echo", "/echo")
        config.add_view(echo, route_name="echo", request_method="POST")
    return config.make_wsgi_app()
'''

PRODUCTION_INI = '''
[app:main]
use = egg:myproject
greeting = hello from production.ini
db = sqlite:///%(here)s/myproject.sqlite

[app:admin]
use = egg:myproject
greeting = the admin side
db = none

[server:main]
use = egg:waitress#main
listen = *:6543

[loggers]
keys = root, myproject

[handlers]
keys = console

[formatters]
keys = generic

[logger_root]
level = WARN
handlers = console

[logger_myproject]
level = INFO
handlers =
qualname = myproject

[handler_console]
class = StreamHandler
args = (sys.stderr,)
level = NOTSET
formatter = generic

[formatter_generic]
format = INI-FORMAT %(levelname)s [%(name)s] %(message)s
'''

# The line the home view logs, formatted by the ini's [formatter_generic].
APP_LOG_LINE = re.compile(r"INI-FORMAT INFO \[myproject\] home view, region (\w+)")


def make_project(root):
    """A Pyramid project in ``root``: (the project directory, the environment
    that finds its package and its metadata, as an installed project's)."""
    project = root / "myproject-project"
    src = project / "src"
    (src / "myproject").mkdir(parents=True)
    (src / "myproject" / "__init__.py").write_text(PROJECT_INIT)
    meta = src / "myproject-0.0.dist-info"
    meta.mkdir()
    (meta / "METADATA").write_text("Metadata-Version: 2.1\nName: myproject\nVersion: 0.0\n")
    (meta / "entry_points.txt").write_text("[paste.app_factory]\nmain = myproject:main\n")
    (project / "production.ini").write_text(textwrap.dedent(PRODUCTION_INI).lstrip())
    env = dict(os.environ, PYTHONPATH=str(src))
    return project, env


@pytest.fixture
def project(tmp_path):
    return make_project(tmp_path)


def run_cli(args, cwd, env, timeout=60, python_flags=()):
    return subprocess.run([sys.executable] + list(python_flags) + [FORKSERVER] + list(args),
                          cwd=str(cwd), env=env, capture_output=True, text=True,
                          timeout=timeout)


def home_and_echo(client):
    return [("GET /", client.request("GET", "/")),
            ("POST /echo", client.request("POST", "/echo", fields=[("word", "héllo")])),
            ("GET a missing page", client.request("GET", "/missing"))]


def wait_for(predicate, seconds):
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.05)
    return predicate()


@NEEDS_PYRAMID
@NEEDS_GUNICORN
@pytest.mark.parametrize("uri, greeting", [("production.ini", "hello from production.ini"),
                                           ("production.ini#admin", "the admin side")])
def test_paste_serves_the_ini_app_as_gunicorn_does(tmp_path, uri, greeting):
    project, env = make_project(tmp_path)
    args = ("--paste", uri, "--paste-global", "region=eu")
    (tmp_path / "servers").mkdir()
    with serving(args, tmp_path / "servers", cwd=project, env=env) as pair:
        theirs, _ = assert_same_answers(pair, home_and_echo)
        assert statuses(theirs) == [200, 200, 404]
        db = "sqlite:///%s/myproject.sqlite" % project if "#" not in uri else "none"
        assert theirs[0][1].body.decode() == "greeting=%s\ndb=%s\nregion=eu\n" % (greeting, db)
        assert theirs[1][1].body.decode() == "word=héllo\n"
        # The ini's [loggers] set up logging in both: the view's line, in
        # the ini's format, on the servers' stderr.
        assert wait_for(lambda: APP_LOG_LINE.search(pair.gunicorn.log_text()), 5)
        with open(pair.forkserver.output_file.name, errors="replace") as f:
            assert APP_LOG_LINE.findall(f.read())[-1:] == ["eu"]


@NEEDS_PYRAMID
def test_paste_and_its_globals_as_config_file_settings(start_server, project):
    directory, env = project
    (directory / "forkserver.conf.py").write_text(
        "paste = 'production.ini#admin'\nraw_paste_global_conf = ['region=north']\n")
    server = start_server("-c", "forkserver.conf.py", cwd=str(directory), env=env,
                          timeout=START_TIMEOUT_SECONDS)
    status, _, body = http_get(server, "/")
    assert (status, body) == (200, b"greeting=the admin side\ndb=none\nregion=north\n")


@NEEDS_PYRAMID
def test_hup_and_reload_read_the_ini_again(start_server, project):
    directory, env = project
    ini = directory / "production.ini"
    server = start_server("--paste", "production.ini", "--reload", cwd=str(directory), env=env,
                          timeout=START_TIMEOUT_SECONDS)
    assert b"greeting=hello from production.ini\n" in http_get(server, "/")[2]
    ini.write_text(ini.read_text().replace("hello from production.ini", "edited, then HUP"))
    server.signal(signal.SIGHUP)
    assert wait_for(lambda: b"edited, then HUP" in http_get(server, "/")[2], RELOAD_WAIT_SECONDS)
    # --reload watches the ini beside the project's modules.
    time.sleep(0.05)   # a later mtime than the one the HUP's load saw, on coarse clocks
    ini.write_text(ini.read_text().replace("edited, then HUP", "edited, then watched"))
    os.utime(ini, (time.time() + 5, time.time() + 5))
    assert wait_for(lambda: b"edited, then watched" in http_get(server, "/")[2],
                    RELOAD_WAIT_SECONDS)
    assert "production.ini changed" in server.log_text()


BAD_LOGGING = "[loggers]\nkeys = root\n\n[logger_root]\nhandlers = nosuch\n"
FILE_HANDLER = """
[handler_file]
class = FileHandler
args = ('%(logdir)s/app.log', 'a')
level = NOTSET
formatter = generic
"""


@NEEDS_PYRAMID
@pytest.mark.parametrize("args, edit, status, message", [
    (["--paste", "nosuch.ini"], None, 2,
     r"--paste nosuch.ini: no such file \(.*/myproject-project/nosuch.ini\)"),
    (["examples.hello:app", "--paste", "production.ini"], None, 2,
     r"give the app as MODULE:CALLABLE \(or wsgi_app\) or as --paste INI, not both"),
    (["--paste", "production.ini#"], None, 2, r"no app section named after '#'"),
    (["examples.hello:app", "--paste-global", "a=b"], None, 2,
     r"--paste-global is for a --paste file, and there is none"),
    (["--paste", "production.ini#nosuch"], None, 3, r"No section 'nosuch'"),
    (["--paste", "production.ini"], "uninstalled", 3,
     r"the app 'main' of .*production.ini: No package metadata was found for myproject: "
     r"is it installed"),
    (["--paste", "production.ini"], "no-pastedeploy", 3,
     r"--paste needs PasteDeploy, which is not installed"),
    (["--paste", "production.ini"], "bad-logging", 3,
     r"the logging sections of .*production.ini: a section or key they need is missing: "
     r"'formatters'"),
    (["--paste", "production.ini"], "undefined-name", 3,
     r"production.ini: Bad value substitution: option 'db' in section 'app:main' contains "
     r"an interpolation key 'dbname'"),
    (["production.ini"], None, 3,
     r"no module named 'production' \(sys.path: .*\) \(a PasteDeploy file\? --paste "
     r"production.ini\)"),
], ids=["no-file", "both", "empty-name", "globals-alone", "no-section", "uninstalled",
        "no-pastedeploy", "bad-logging", "undefined-name", "ini-as-app"])
def test_a_bad_paste_is_one_clear_error(project, args, edit, status, message):
    directory, env = project
    flags = ()
    if edit == "uninstalled":
        env = dict(os.environ)
    elif edit == "no-pastedeploy":
        flags = ("-S",)   # no site-packages: PasteDeploy (and Pyramid) not installed
    elif edit == "bad-logging":
        ini = directory / "production.ini"
        ini.write_text(ini.read_text().split("[loggers]")[0] + BAD_LOGGING)
    elif edit == "undefined-name":
        ini = directory / "production.ini"
        ini.write_text(ini.read_text().replace("db = sqlite", "db = %(dbname)s sqlite", 1))
    done = run_cli(args + ["--check-config"], directory, env, python_flags=flags)
    assert done.returncode == status, done.stderr
    assert re.search(message, done.stderr), done.stderr
    assert "Traceback" not in done.stderr and done.stderr.count("\n") == 1, done.stderr
    assert done.stderr.startswith("forkserver: error: ")


@NEEDS_PYRAMID
def test_check_config_loads_the_paste_app(project):
    directory, env = project
    done = run_cli(["--paste", "production.ini#admin", "--check-config"], directory, env)
    assert done.returncode == 0, done.stderr
    assert done.stdout == ("forkserver: config OK: app --paste %s/production.ini#admin loads "
                           "(not tried: binding the addresses, the warm-up request)\n"
                           % directory)


@NEEDS_PYRAMID
def test_usr1_reopens_the_files_of_the_ini_logging_and_globals_reach_it(start_server, project,
                                                                         tmp_path):
    """logrotate moves the app's log file and sends USR1, as to gunicorn,
    which reopens its logging's files: the next lines go to a new file of the
    same name.  --paste-global's values reach the logging sections too, as
    pserve's setup_logging has them (%(logdir)s)."""
    directory, env = project
    logdir = tmp_path / "logs"
    with_file_logging(directory, logdir)
    server = start_server("--paste", "production.ini", "--paste-global", "logdir=" + str(logdir),
                          cwd=str(directory), env=env, timeout=START_TIMEOUT_SECONDS)
    assert http_get(server, "/")[0] == 200
    log_file = logdir / "app.log"
    assert wait_for(lambda: log_file.exists() and "home view" in log_file.read_text(), 5)
    log_file.rename(logdir / "app.log.1")
    server.signal(signal.SIGUSR1)
    assert wait_for(lambda: "log files reopened" in server.log_text(), 5)
    assert http_get(server, "/")[0] == 200
    assert wait_for(lambda: log_file.exists() and "home view" in log_file.read_text(), 5)
    assert log_file.read_text().count("home view") == 1


def with_file_logging(directory, logdir):
    """The project's ini, its myproject logger writing %(logdir)s/app.log."""
    ini = directory / "production.ini"
    text = ini.read_text().replace("keys = console", "keys = console, file")
    text = text.replace("[logger_myproject]\nlevel = INFO\nhandlers =",
                        "[logger_myproject]\nlevel = INFO\nhandlers = file")
    ini.write_text(text + FILE_HANDLER)
    logdir.mkdir()
    return ini


@NEEDS_PYRAMID
def test_a_hup_keeps_unchanged_logging_and_a_bad_new_one_leaves_the_old_in_place(
        start_server, project, tmp_path):
    """fileConfig closes every handler first: a HUP that re-ran it opened the
    app's log files again (a --user parent may not: every request then a
    500), and new sections that failed left the app without its handlers.
    The in-place reload of a parent without the warm-up; a warmed one tries
    the file in a fresh interpreter, where the moved log file fails the
    reload (test_a_warmed_hup_whose_log_file_cannot_be_opened_keeps_serving)."""
    directory, env = project
    logdir = tmp_path / "logs"
    ini = with_file_logging(directory, logdir)
    server = start_server("--paste", "production.ini", "--paste-global", "logdir=" + str(logdir),
                          "--no-prewarm", cwd=str(directory), env=env,
                          timeout=START_TIMEOUT_SECONDS)
    assert http_get(server, "/")[0] == 200   # unwarmed: the first "home view"
    moved = tmp_path / "moved"
    logdir.rename(moved)   # the file cannot be opened again by its name
    server.signal(signal.SIGHUP)
    assert wait_for(lambda: "reloaded " in server.log_text(), RELOAD_WAIT_SECONDS)
    assert http_get(server, "/")[0] == 200
    assert wait_for(lambda: (moved / "app.log").read_text().count("home view") >= 2, 5)
    # New logging sections that fail: the reload fails, the old handlers stay.
    ini.write_text(ini.read_text().replace("class = FileHandler", "class = NoSuchHandler"))
    server.signal(signal.SIGHUP)
    assert wait_for(lambda: "reload failed" in server.log_text(), RELOAD_WAIT_SECONDS)
    assert "the logging sections of" in server.log_text()
    before = (moved / "app.log").read_text().count("home view")
    assert http_get(server, "/")[0] == 200
    assert wait_for(lambda: (moved / "app.log").read_text().count("home view") > before, 5)


@NEEDS_PYRAMID
def test_a_warmed_hup_whose_log_file_cannot_be_opened_keeps_serving(start_server, project,
                                                                     tmp_path):
    """A warmed parent reloads in a fresh interpreter (forkparts/reexec.py),
    which sets up the ini's logging anew: a log file it cannot open fails
    the trial, in one line naming the file, and the old code serves on,
    logging where it did."""
    directory, env = project
    logdir = tmp_path / "logs"
    with_file_logging(directory, logdir)
    server = start_server("--paste", "production.ini", "--paste-global", "logdir=" + str(logdir),
                          cwd=str(directory), env=env, timeout=START_TIMEOUT_SECONDS)
    moved = tmp_path / "moved"
    logdir.rename(moved)
    server.signal(signal.SIGHUP)
    assert wait_for(lambda: "reload failed" in server.log_text(), RELOAD_WAIT_SECONDS)
    log = server.log_text()
    assert "still serving the previous code" in log and "app.log" in log, log
    assert http_get(server, "/")[0] == 200
    assert wait_for(lambda: "home view" in (moved / "app.log").read_text(), 5)
    assert server.ps.is_running()


@NEEDS_PYRAMID
def test_the_command_lines_paste_wins_over_the_config_files_app(start_server, project):
    """As gunicorn: the command line over the config file, whichever names the app."""
    directory, env = project
    (directory / "gunicorn.conf.py").write_text("wsgi_app = 'tests.apps:hello'\n")
    server = start_server("-c", "gunicorn.conf.py", "--paste", "production.ini#admin",
                          cwd=str(directory), env=dict(env, PYTHONPATH=env["PYTHONPATH"] +
                                                       os.pathsep + ROOT),
                          timeout=START_TIMEOUT_SECONDS)
    assert http_get(server, "/")[2].startswith(b"greeting=the admin side\n")
