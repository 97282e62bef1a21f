"""The command line: version, app loading errors and their exit statuses, bind
errors, where apps are imported from, IPv6, the thread warning, stop signals and
whole log lines."""
import re
import signal
import socket
import subprocess
import sys
import textwrap
import threading

import pytest

import forkparts
from tests.conftest import FORKSERVER, ROOT, http_get, wait_children

EXIT_OK, EXIT_USAGE, EXIT_APP_LOAD, EXIT_LISTEN = 0, 2, 3, 4   # as README.md documents
CLI_TIMEOUT_SECONDS = 30
CONCURRENT_CLIENTS = 8
REQUESTS_PER_CLIENT = 25
LONG_PATH_BYTES = 2000           # access log lines well past one small write
CLF_RE = re.compile(r'^127\.0\.0\.1 - - \[[^\]]+\] "GET /(\w+)/(\d+)/x+ HTTP/1\.1" 200 14$')


def run_cli(*args, cwd=ROOT):
    """Run forkserver to completion (for the cases where it must not start)."""
    argv = [sys.executable, FORKSERVER] + list(args)
    if not any(a.startswith("--bind") or a == "--version" for a in args):
        argv += ["--bind", "127.0.0.1:0"]
    return subprocess.run(argv, cwd=cwd, capture_output=True, text=True,
                          timeout=CLI_TIMEOUT_SECONDS)


def write_module(directory, name, source):
    directory.mkdir(parents=True, exist_ok=True)
    (directory / (name + ".py")).write_text(textwrap.dedent(source))


def assert_one_clear_line(result, *words):
    err = result.stderr.strip()
    assert result.stdout == ""
    assert len(err.splitlines()) == 1, err
    assert err.startswith("forkserver: error: ")
    for word in words:
        assert word in err
    assert "Traceback" not in err


def test_version_prints_the_version_and_exits_0():
    result = run_cli("--version")
    assert result.returncode == EXIT_OK
    assert result.stdout.strip() == "forkserver " + forkparts.__version__


# ------------------------------------------------------------ loading the app

@pytest.mark.parametrize("spec,words", [
    ("not a spec!", ["invalid app spec", "MODULE:CALLABLE"]),
    ("tests.apps_core:", ["invalid app spec"]),
    ("no_such_module_here:app", ["no module named 'no_such_module_here'"]),
    ("tests.no_such_submodule:app", ["no module named 'tests.no_such_submodule'"]),
    ("tests.apps_core:no_such_app", ["has no attribute 'no_such_app'"]),
    ("tests.apps_core:not_callable", ["not callable", "dict"]),
])
def test_unloadable_app_is_one_clear_line_and_exit_3(spec, words):
    result = run_cli(spec)
    assert result.returncode == EXIT_APP_LOAD
    assert_one_clear_line(result, repr(spec), *words)


@pytest.mark.parametrize("source,error", [
    ("""
     def helper():
         raise ValueError("user code failed at import")
     helper()
     """, "ValueError: user code failed at import"),
    ("""
     import a_dependency_that_is_not_installed
     """, "No module named 'a_dependency_that_is_not_installed'"),
    ("""
     def broken(:
     """, "SyntaxError"),
], ids=["raises", "missing-dependency", "syntax-error"])
def test_app_failing_at_import_shows_the_users_traceback_only(tmp_path, source, error):
    write_module(tmp_path, "userapp", source)
    result = run_cli("userapp:app", cwd=tmp_path)
    assert result.returncode == EXIT_APP_LOAD
    err = result.stderr
    assert err.startswith("forkserver: error: cannot load app 'userapp:app'")
    assert error in err
    assert str(tmp_path / "userapp.py") in err          # the user's file and line
    assert "forkserver.py" not in err and "importlib" not in err


def test_factory_raising_shows_the_users_traceback(tmp_path):
    write_module(tmp_path, "factoryapp", """
        def make():
            raise KeyError("missing setting")
        """)
    result = run_cli("factoryapp:make()", cwd=tmp_path)
    assert result.returncode == EXIT_APP_LOAD
    assert "calling make() failed" in result.stderr
    assert "KeyError: 'missing setting'" in result.stderr
    assert "forkserver.py" not in result.stderr


# ------------------------------------------------------------ binding

@pytest.mark.parametrize("bind,words", [
    ("nonsense", ["--bind 'nonsense'", "HOST:PORT"]),
    ("127.0.0.1:99999", ["port", "65535"]),
    ("127.0.0.1:http", ["port"]),
    ("[::1]:notaport", ["port"]),
])
def test_unparsable_bind_is_a_usage_error(bind, words):
    result = run_cli("tests.apps:hello", "--bind", bind)
    assert result.returncode == EXIT_USAGE
    assert_one_clear_line(result, *words)


def test_bind_to_a_port_in_use_is_exit_4():
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        result = run_cli("tests.apps:hello", "--bind", "127.0.0.1:%d" % port)
    assert result.returncode == EXIT_LISTEN
    assert_one_clear_line(result, str(port))


def test_unresolvable_host_is_exit_4():
    result = run_cli("tests.apps:hello", "--bind", "no-such-host.invalid:80")
    assert result.returncode == EXIT_LISTEN
    assert_one_clear_line(result, "no-such-host.invalid")


def test_ipv6_loopback_bind(start_server):
    server = start_server("tests.apps:hello", "--bind", "[::1]:0")
    assert re.fullmatch(r"http://\[::1\]:\d+", server.address)
    assert server.host == "::1"
    status, _, body = http_get(server, "/")
    assert (status, body) == (200, b"Hello, World!\n")


def test_ipv6_client_address_reaches_the_environ(start_server):
    import json
    server = start_server("tests.apps_core:environ_json", "--bind", "[::1]:0")
    env = json.loads(http_get(server, "/")[2])
    assert env["REMOTE_ADDR"] == "::1"
    assert env["REMOTE_PORT"].isdigit()


# ------------------------------------------------------------ where apps come from

OWN_FLASKAPP = """
    from flask import Flask
    flask_app = Flask("flaskapp")

    @flask_app.route("/hello")
    def hello():
        return "Hello from my own flaskapp.py\\n"

    app = flask_app.wsgi_app
    """


def test_app_in_the_current_directory_is_importable(start_server, tmp_path):
    project = tmp_path / "project"
    write_module(project, "flaskapp", OWN_FLASKAPP)
    server = start_server("flaskapp:app", cwd=str(project))
    status, _, body = http_get(server, "/hello")
    assert (status, body) == (200, b"Hello from my own flaskapp.py\n")


def write_hello(directory, name, text):
    write_module(directory, name, """
        def app(environ, start_response):
            start_response("200 OK", [("Content-Type", "text/plain")])
            return [%r]
        """ % text)


def test_chdir_imports_from_that_directory(start_server, tmp_path):
    write_hello(tmp_path / "site", "chdirapp", b"from --chdir\n")
    server = start_server("chdirapp:app", "--chdir", str(tmp_path / "site"))
    assert http_get(server, "/")[2] == b"from --chdir\n"


def test_pythonpath_adds_every_listed_directory(start_server, tmp_path):
    write_hello(tmp_path / "one", "first_app", b"one\n")
    write_module(tmp_path / "two", "second_helper", "TEXT = b'two'\n")
    write_module(tmp_path / "one", "combined", """
        import second_helper
        def app(environ, start_response):
            start_response("200 OK", [("Content-Type", "text/plain")])
            return [second_helper.TEXT]
        """)
    paths = "%s,%s" % (tmp_path / "one", tmp_path / "two")
    server = start_server("combined:app", "--pythonpath", paths)
    assert http_get(server, "/")[2] == b"two"


def test_bad_chdir_is_a_usage_error(tmp_path):
    result = run_cli("tests.apps:hello", "--chdir", str(tmp_path / "missing"))
    assert result.returncode == EXIT_USAGE
    assert_one_clear_line(result, "--chdir", "missing")


def test_factory_spec_calls_the_factory(start_server):
    server = start_server("tests.apps_core:create_app()")
    assert http_get(server, "/")[2] == b"made by the factory\n"


def test_threads_started_at_import_are_named_in_a_warning(start_server, tmp_path):
    write_module(tmp_path, "threadedapp", """
        import threading, time
        threading.Thread(target=time.sleep, args=(3600,), name="metrics-pusher",
                         daemon=True).start()
        def app(environ, start_response):
            start_response("200 OK", [("Content-Type", "text/plain")])
            return [b"ok"]
        """)
    server = start_server("threadedapp:app", "--chdir", str(tmp_path))
    assert http_get(server, "/")[2] == b"ok"
    log = server.log_text()
    assert re.search(r"\[WARNING\] .*threads.*metrics-pusher", log), log


def test_no_thread_warning_for_a_plain_app(start_server):
    server = start_server("tests.apps:hello")
    assert http_get(server, "/")[0] == 200
    assert "[WARNING]" not in server.log_text()


# ------------------------------------------------------------ stopping

def request_in_background(server, path):
    result = {}

    def run():
        try:
            result["reply"] = http_get(server, path, timeout=CLI_TIMEOUT_SECONDS)
        except OSError as exc:
            result["error"] = exc
    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    return thread, result


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT], ids=["TERM", "INT"])
def test_stop_signal_exits_0_and_leaves_no_child(start_server, signum):
    server = start_server("tests.apps:slow")
    thread, result = request_in_background(server, "/?s=0.5")
    assert wait_children(server, 1) == 1
    child = server.children()[0]
    server.signal(signum)
    assert server.wait_exit() == EXIT_OK
    thread.join(CLI_TIMEOUT_SECONDS)
    # The server reaped its child before exiting: nothing is left, not even a
    # zombie or an orphan adopted by init.
    assert not child.is_running()
    if signum == signal.SIGTERM:    # graceful: the request in flight completes
        assert result["reply"][:1] == (200,) and result["reply"][2] == b"slow done\n"


# ------------------------------------------------------------ whole log lines

def test_access_log_lines_stay_whole_under_concurrent_requests(start_server):
    server = start_server("tests.apps:hello")
    errors = []

    def client(n):
        for i in range(REQUESTS_PER_CLIENT):
            path = "/c%d/%d/%s" % (n, i, "x" * LONG_PATH_BYTES)
            try:
                assert http_get(server, path)[0] == 200
            except (OSError, AssertionError) as exc:
                errors.append(exc)
    threads = [threading.Thread(target=client, args=(n,)) for n in range(CONCURRENT_CLIENTS)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(CLI_TIMEOUT_SECONDS * 2)
    assert not errors, errors[:3]
    assert server.stop() == EXIT_OK      # every child reaped, so every line written
    lines = server.access_text().splitlines()
    assert len(lines) == CONCURRENT_CLIENTS * REQUESTS_PER_CLIENT
    seen = set()
    for line in lines:
        match = CLF_RE.match(line)
        assert match, line[:200]
        seen.add(match.groups())
    assert len(seen) == CONCURRENT_CLIENTS * REQUESTS_PER_CLIENT
