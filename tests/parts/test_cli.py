"""The command line: version, app loading errors and their exit statuses, bind
errors, where apps are imported from, IPv6, the thread warning, stop signals and
whole log lines."""
import os
import re
import signal
import socket
import subprocess
import sys
import textwrap
import threading
import time

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
    # An ASGI app started and answered every request with a 500 (its warm-up
    # raised TypeError, __call__ missing 'send'), and --check-config said OK.
    ("tests.apps_core:asgi_function", ["is an ASGI app", "serves WSGI apps"]),
    ("tests.apps_core:asgi_instance", ["is an ASGI app", "PROJECT.wsgi"]),
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
    ("nonsense", ["HOST:PORT"]),
    ("127.0.0.1:99999", ["port must be a number from 0 to 65535"]),
    ("127.0.0.1:http", ["port"]),
    ("[::1]:notaport", ["port"]),
    ("unix:", ["empty unix socket path"]),
    ("[::1", ["[IPv6]:PORT"]),
    ("fd://abc", ["file descriptor number"]),
])
def test_unparsable_bind_is_a_usage_error_at_start_and_in_check_config(bind, words):
    # The syntax is checked as the options are read, so --check-config (which
    # said "config OK" for each) refuses it as a start does, in one line.
    for extra in ((), ("--check-config",)):
        result = run_cli("tests.apps:hello", "--bind", bind, *extra)
        assert result.returncode == EXIT_USAGE
        assert_one_clear_line(result, "--bind", repr(bind), *words)


@pytest.mark.parametrize("binds, words", [
    (["127.0.0.1:25001", "127.0.0.1:25001"], ["'127.0.0.1:25001' is given twice"]),
    ([":25001", "0.0.0.0:25001"], ["':25001'", "'0.0.0.0:25001'", "the same socket"]),
    (["unix:/tmp/fs-twice.sock", "unix:/tmp/./fs-twice.sock"], ["the same socket"]),
])
def test_the_same_address_twice_is_a_usage_error_before_anything_is_bound(tmp_path, binds,
                                                                          words):
    # Before: "cannot listen on 127.0.0.1:25001: Address already in use (another
    # server listens there, perhaps another user's ...)", exit 4.
    args = [a for b in binds for a in ("--bind", b)]
    for extra in ((), ("--check-config",)):
        result = run_cli("tests.apps:hello", *args, *extra)
        assert result.returncode == EXIT_USAGE, result.stderr
        assert_one_clear_line(result, "give each address once", *words)
        assert "another server" not in result.stderr
    assert not os.path.exists("/tmp/fs-twice.sock")
    config = tmp_path / "twice.conf.py"
    config.write_text("bind = %r\n" % binds)
    result = subprocess.run([sys.executable, FORKSERVER, "tests.apps:hello", "-c", str(config)],
                            cwd=ROOT, capture_output=True, text=True, timeout=CLI_TIMEOUT_SECONDS)
    assert result.returncode == EXIT_USAGE, result.stderr
    assert_one_clear_line(result, "give each address once")


def test_port_0_twice_is_two_free_ports(start_server):
    server = start_server("tests.apps:hello", "--bind", "127.0.0.1:0", "--bind", "127.0.0.1:0")
    assert len(set(server.addresses)) == 2


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


# ------------------------------------------------- gunicorn's flags (issue 16)

def test_gunicorn_pool_flags_are_accepted_with_a_warning_each(start_server):
    server = start_server("tests.apps:hello", "-w", "2", "--threads", "4", "-k", "gevent",
                          "--worker-connections", "10", "--max-requests", "5", "--preload")
    assert http_get(server, "/")[0] == 200
    log = server.log_text()
    for name in ("workers", "threads", "worker_class", "worker_connections", "max_requests",
                 "preload_app"):
        assert log.count("[WARNING] %s ignored: " % name) == 1
    assert "workers ignored: forkserver forks one child per connection" in log
    assert "--max-children" in log
    # A trial: a child lives for 100 requests with --keep-alive; the warning
    # said none lives long enough to need recycling, and named no option.
    assert "--max-requests-per-connection ends a connection, and its child, after N " \
        "requests" in log


def test_workers_before_the_app_is_no_usage_error():
    # The report: "-w 2 examples.hello:app" was "unrecognized arguments".
    result = run_cli("-w", "2", "tests.apps:hello", "--check-config")
    assert result.returncode == EXIT_OK, result.stderr
    assert "workers ignored" in result.stderr


@pytest.mark.parametrize("level", ["WARNING", "Warning", "warning"])
def test_log_level_is_taken_in_any_case(start_server, level):
    server = start_server("tests.apps:hello", "--log-level", level)
    assert http_get(server, "/")[0] == 200
    assert server.stop() == 0
    assert "[INFO]" not in server.log_text()   # without it: "stopped: forked ..." at info


def test_a_bad_log_level_names_the_levels():
    result = run_cli("tests.apps:hello", "--log-level", "loud")
    assert result.returncode == EXIT_USAGE
    assert "'loud' is not one of debug, info, warning, error, critical" in result.stderr


def test_gunicorns_spellings_of_the_logging_and_pid_flags(start_server, tmp_path):
    access, error, pid = (str(tmp_path / n) for n in ("a.log", "e.log", "server.pid"))
    server = start_server("tests.apps:hello", "-b", "127.0.0.1:0", "--pid", pid,
                          "--access-logfile", access, "--error-logfile", error,
                          "--access-logformat", "%(m)s %(U)s %(s)s", "--log-level", "DEBUG",
                          log_files=False, default_bind=False)
    assert open(pid).read().strip() == str(server.pid)
    assert http_get(server, "/flags")[0] == 200
    assert server.stop() == 0
    assert open(access).read() == "GET /flags 200\n"
    assert "stopped: forked 1 child," in open(error).read()
    assert not os.path.exists(pid)


def test_env_sets_variables_for_the_app(start_server):
    server = start_server("tests.apps:greeting", "--env", "GREETING=a=b c", "-e", "OTHER=1")
    assert http_get(server, "/")[2] == b"a=b c"


@pytest.mark.parametrize("pair", ["NOEQUALS", "=value"])
def test_env_without_a_key_is_a_usage_error(pair):
    result = run_cli("tests.apps:hello", "--env", pair)
    assert result.returncode == EXIT_USAGE
    assert "is not KEY=VALUE" in result.stderr


def test_check_config_loads_the_app_and_serves_nothing(tmp_path):
    config = tmp_path / "gunicorn.conf.py"
    config.write_text("wsgi_app = 'tests.apps:hello'\nbind = '127.0.0.1:0'\n")
    result = run_cli("-c", str(config), "--check-config")
    assert result.returncode == EXIT_OK, result.stderr
    assert "config OK: app tests.apps:hello loads" in result.stdout
    assert "ready" not in result.stdout


def test_check_config_says_what_is_wrong_and_exits_2(tmp_path):
    result = run_cli("tests.apps:no_such_app", "--check-config",
                     "--error-log", str(tmp_path / "missing" / "e.log"))
    assert result.returncode == EXIT_USAGE   # a start's first problem: the log file
    errors = result.stderr.strip().splitlines()
    assert len(errors) == 2 and all(e.startswith("forkserver: error: ") for e in errors)
    assert "cannot open log file" in errors[0] and "No such file or directory" in errors[0]
    assert "no_such_app" in errors[1]
    assert not (tmp_path / "missing").exists()


def start_problems(tmp):
    """(args, exit status) a real start refuses, each found by --check-config too."""
    return [
        (["--access-log", "/"], EXIT_USAGE),
        (["--error-log", str(tmp / "missing" / "e.log")], EXIT_USAGE),
        (["--status-file", "/nonexistent/s.json"], EXIT_USAGE),
        (["--pidfile", str(tmp / "missing" / "fs.pid")], EXIT_USAGE),
        (["--pidfile", str(tmp)], EXIT_USAGE),
        (["--user", "nosuchuser"], EXIT_LISTEN),
        (["--group", "nosuchgroup"], EXIT_LISTEN),
        (["--bind", "no-such-host.invalid:80"], EXIT_LISTEN),
        (["--bind", "unix:%s" % (tmp / "missing" / "fs.sock")], EXIT_LISTEN),
        # Too long for sun_path: "...: None" at start, "config OK" from the check.
        (["--bind", "unix:%s" % (tmp / ("s" * 120))], EXIT_LISTEN),
        (["--bind", "fd://987"], EXIT_LISTEN),
        (["tests.apps:no_such_app"], EXIT_APP_LOAD),
        (["tests.apps_core:asgi_instance"], EXIT_APP_LOAD),
    ]


def test_check_config_refuses_what_a_start_refuses_in_its_words_and_status(tmp_path):
    # Before, every one of these but the app and the missing log directory
    # was "config OK", exit 0, while the start failed.
    for args, status in start_problems(tmp_path):
        app = [] if args[0].startswith("tests.") else ["tests.apps:hello"]
        start = run_cli(*app, *args, "--no-prewarm")
        check = run_cli(*app, *args, "--no-prewarm", "--check-config")
        assert (start.returncode, check.returncode) == (status, status), (args, check.stderr)
        assert_one_clear_line(check)
        assert check.stderr == start.stderr.splitlines(True)[-1], args
        assert ": None" not in check.stderr, args
    assert sorted(os.listdir(str(tmp_path))) == []


@pytest.mark.skipif(os.geteuid() != 0, reason="switching to --user needs root (CI is root)")
def test_check_config_looks_at_the_status_directory_as_the_user_the_server_becomes():
    """A start checks the --status-file directory after becoming --user; the
    check ran as the invoking root and said "config OK"."""
    import shutil
    import tempfile
    folder = tempfile.mkdtemp(prefix="forkserver-status-")   # root's
    try:
        os.chmod(folder, 0o755)      # nobody may look, not write
        args = ("tests.apps:hello", "--no-prewarm", "--user", "nobody",
                "--status-file", os.path.join(folder, "s.json"))
        start, check = run_cli(*args), run_cli(*args, "--check-config")
        assert (start.returncode, check.returncode) == (EXIT_USAGE, EXIT_USAGE), check.stdout
        assert_one_clear_line(check, "not writable by uid")
        assert check.stderr == start.stderr.splitlines(True)[-1]
        assert os.listdir(folder) == []
    finally:
        shutil.rmtree(folder)


def test_check_config_names_a_relative_log_path_as_a_start_does(tmp_path):
    """A relative log path is the launch directory's, before --chdir: the
    check named it as given, the start by its absolute path."""
    args = ("tests.apps:hello", "--no-prewarm", "--chdir", str(tmp_path),
            "--access-log", os.path.join("no-such-dir", "a.log"))
    start, check = run_cli(*args), run_cli(*args, "--check-config")
    assert (start.returncode, check.returncode) == (EXIT_USAGE, EXIT_USAGE)
    assert_one_clear_line(check, repr(os.path.join(ROOT, "no-such-dir", "a.log")))
    assert check.stderr == start.stderr.splitlines(True)[-1]


def test_check_config_says_what_it_did_not_try(tmp_path):
    result = run_cli("tests.apps:hello", "--check-config")
    assert result.returncode == EXIT_OK
    assert "(not tried: binding the addresses, the warm-up request)" in result.stdout


def test_check_config_creates_nothing_where_a_start_would_write(tmp_path):
    result = run_cli("tests.apps:hello", "--check-config",
                     "--bind", "unix:%s" % (tmp_path / "fs.sock"),
                     "--access-log", str(tmp_path / "a.log"),
                     "--error-log", str(tmp_path / "e.log"),
                     "--pidfile", str(tmp_path / "fs.pid"),
                     "--status-file", str(tmp_path / "s.json"))
    assert result.returncode == EXIT_OK, result.stderr
    assert "config OK" in result.stdout
    assert os.listdir(str(tmp_path)) == []


@pytest.mark.parametrize("args, words", [
    (["--max-children", "-1"], ["--max-children", "'-1'"]),
    (["--no-such-option"], ["unrecognized arguments: --no-such-option"]),
    (["--timeout"], ["--timeout", "expected one argument"]),
    (["--reaper", "twice"], ["--reaper", "invalid choice: 'twice'"]),
    (["--certfile", "c.pem"], ["--certfile", "TLS"]),
])
def test_a_usage_error_is_one_line_not_the_usage_block(args, words):
    # Before: argparse's 28-line usage block, then the error (29 lines).
    result = run_cli("tests.apps:hello", *args)
    assert result.returncode == EXIT_USAGE
    assert_one_clear_line(result, "(see --help)", *words)
    assert "usage:" not in result.stderr


def test_print_config_prints_the_effective_settings(tmp_path):
    config = tmp_path / "gunicorn.conf.py"
    config.write_text("timeout = 7\nloglevel = 'WARNING'\n"
                      "def on_starting(server):\n    pass\n")
    result = run_cli("tests.apps:hello", "-c", str(config), "--max-children", "9",
                     "--print-config")
    assert result.returncode == EXIT_OK, result.stderr
    lines = result.stdout.splitlines()
    for line in ("timeout = 7.0", "log_level = 'warning'", "max_children = 9",
                 "app = 'tests.apps:hello'", "hooks = ['on_starting']"):
        assert line in lines


def test_capture_output_sends_the_apps_stdout_and_stderr_to_the_error_log(start_server,
                                                                          tmp_path):
    server = start_server("tests.apps:greeting", "--capture-output")   # ready line seen
    assert http_get(server, "/")[0] == 200
    assert server.stop() == 0
    log = server.log_text()
    assert "stdout of the app" in log and "stderr of the app" in log
    pty = open(str(tmp_path / "server0" / "pty.log"), errors="replace").read()
    assert "of the app" not in pty


def test_capture_output_keeps_an_access_log_on_stdout_out_of_the_error_log(start_server,
                                                                           tmp_path):
    """The access log's default is stdout, and --capture-output points
    stdout at the error log: every request's line went into the error log
    among the app's prints (gunicorn's access log is off by default)."""
    server = start_server("tests.apps:greeting", "--capture-output", "--access-log", "-")
    assert http_get(server, "/by-the-test")[0] == 200
    assert server.stop() == 0
    log = server.log_text()
    assert "stdout of the app" in log
    assert "/by-the-test" not in log
    pty = open(str(tmp_path / "server0" / "pty.log"), errors="replace").read()
    assert '"GET /by-the-test HTTP/1.1" 200' in pty


def test_without_capture_output_the_apps_output_stays_on_the_terminal(start_server,
                                                                      tmp_path):
    server = start_server("tests.apps:greeting")
    assert http_get(server, "/")[0] == 200
    assert server.stop() == 0
    assert "of the app" not in server.log_text()


def test_proc_name_prefixes_the_titles(start_server):
    import psutil
    server = start_server("tests.apps:slow", "--proc-name", "shop")
    client = server.connect()
    client.sendall(b"GET /?s=3 HTTP/1.1\r\nHost: x\r\n\r\n")
    assert wait_children(server, 1) == 1
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline:
        titles = [" ".join(p.cmdline()) for p in [server.ps] + [
            psutil.Process(c.pid) for c in server.children()]]
        if all(t.startswith("shop: ") for t in titles) and len(titles) == 2:
            break
        time.sleep(0.05)
    client.close()
    assert titles[0].startswith("shop: parent http://")
    assert titles[1].startswith("shop: child 127.0.0.1:")


@pytest.mark.parametrize("spec, body", [
    ("tests.apps_spec", b"application\n"),                     # gunicorn: module:application
    ("tests.apps_spec:app", b"app\n"),
    ("tests.apps:make_greeter('hi')", b"hi!"),
    ("tests.apps:make_greeter('hi', punctuation='?')", b"hi?"),
    ("tests.apps:make_greeter(*['x'])", None),
])
def test_app_specs_as_gunicorn_takes_them(start_server, spec, body):
    if body is None:
        result = run_cli(spec)
        assert result.returncode == EXIT_APP_LOAD
        assert_one_clear_line(result, "factory arguments must be literals")
        return
    server = start_server(spec)
    assert http_get(server, "/")[2] == body


@pytest.mark.parametrize("spec, words", [
    ("tests.apps:make_greeter(__import__('os').getcwd())", ["must be literals"]),
    ("tests.apps:make_greeter(open)", ["must be literals"]),
    ("tests.apps:hello[0]", ["expected a name or a call"]),
    ("tests.apps_core", ["has no attribute 'application'"]),
])
def test_app_specs_that_are_not_literal_calls_are_one_clear_line(spec, words):
    result = run_cli(spec)
    assert result.returncode == EXIT_APP_LOAD
    assert_one_clear_line(result, *words)


@pytest.mark.parametrize("args, words", [
    (["--certfile", "c.pem", "--keyfile", "k.pem"], ["--certfile", "TLS"]),
    (["--keyfile", "k.pem"], ["--keyfile", "TLS"]),
    (["-D"], ["-D", "systemd"]),
    (["--log-syslog"], ["--log-syslog", "own log files"]),
])
def test_gunicorn_flags_forkserver_cannot_honour_say_why(args, words):
    result = run_cli("tests.apps:hello", *args)
    assert result.returncode == EXIT_USAGE
    assert "unrecognized arguments" not in result.stderr
    last = result.stderr.strip().splitlines()[-1]
    assert last.startswith("forkserver: error: ") and all(w in last for w in words)


# Before, these were argparse's "unrecognized arguments" (a value after one
# was taken for the app), though a config file's setting of the same name was
# refused or ignored with its reason: one table now serves both.
@pytest.mark.parametrize("args, words", [
    (["--statsd-prefix", "app"], ["--statsd-prefix refused", "statsd"]),
    (["--do-handshake-on-connect"], ["--do-handshake-on-connect refused", "TLS"]),
    (["--suppress-ragged-eofs"], ["--suppress-ragged-eofs refused", "TLS"]),
    (["--strip-header-spaces"], ["--strip-header-spaces refused", "strict"]),
    (["--log-syslog-facility", "daemon"], ["--log-syslog-facility refused"]),
    (["--dirty-workers", "2"], ["--dirty-workers refused", "dirty arbiter"]),
    (["--asgi-loop", "uvloop"], ["--asgi-loop refused", "WSGI apps only"]),
    (["--reload-extra-file", "x.html"], ["--reload-extra-file refused"]),
    (["--log-config", "log.ini"], ["--log-config refused", "Django's LOGGING"]),
])
def test_every_gunicorn_flag_refused_says_why_as_its_config_setting_does(args, words):
    result = run_cli("tests.apps:hello", *args)
    assert result.returncode == EXIT_USAGE
    assert_one_clear_line(result, *words)
    assert "unrecognized" not in result.stderr


@pytest.mark.parametrize("args, warning", [
    (["--worker-tmp-dir", "/dev/shm"], "--worker-tmp-dir ignored: no heartbeat files"),
    (["--no-sendfile"], "--no-sendfile ignored: wsgi.file_wrapper is always sent"),
    (["--reload-engine", "poll"], "--reload-engine ignored"),
    (["-R"], "-R ignored"),
    (["--spew"], "--spew ignored: use --trace"),
    (["--proxy-allow-from", "10.0.0.1"], "--proxy-allow-from ignored"),
])
def test_gunicorn_flags_ignored_are_taken_with_their_value_and_a_warning(args, warning):
    result = run_cli(*args, "tests.apps:hello", "--check-config")
    assert result.returncode == EXIT_OK, result.stderr
    assert "config OK: app tests.apps:hello" in result.stdout
    assert "forkserver: warning: %s" % warning in result.stderr


def test_an_ignored_gunicorn_flag_in_gunicorn_cmd_args_is_the_same_warning():
    env = dict(os.environ, GUNICORN_CMD_ARGS="--worker-tmp-dir /dev/shm")
    result = subprocess.run([sys.executable, FORKSERVER, "tests.apps:hello", "--check-config",
                             "--bind", "127.0.0.1:0"], cwd=ROOT, env=env, capture_output=True,
                            text=True, timeout=CLI_TIMEOUT_SECONDS)
    assert result.returncode == EXIT_OK, result.stderr
    assert "--worker-tmp-dir ignored: no heartbeat files" in result.stderr


def test_gunicorns_flag_table_names_every_flag_of_the_settings_it_covers():
    """Every flag the installed gunicorn has is an option here (its own, an
    alias, a pool option, or the table's), and the table spells each as
    gunicorn does."""
    gunicorn_config = pytest.importorskip("gunicorn.config")
    from forkparts.cli import build_parser
    from forkparts.gunicorn_only import FLAGS, NOT_HONOURED
    settings = {s.name: s for s in gunicorn_config.KNOWN_SETTINGS}
    for name, (flags, nargs) in FLAGS.items():
        assert name in NOT_HONOURED
        assert tuple(settings[name].cli) == flags, name
    ours = {o for a in build_parser()._actions for o in a.option_strings}
    missing = [flag for s in settings.values() for flag in (s.cli or []) if flag not in ours]
    assert missing == []


def test_v_is_version_as_in_gunicorn():
    result = run_cli("-v")
    assert result.returncode == EXIT_OK
    assert result.stdout.startswith("forkserver ")


def test_port_in_the_environment_is_named_not_silently_left():
    """gunicorn binds 0.0.0.0:$PORT when no bind is given; forkserver keeps
    loopback, and said nothing (a PaaS user's server was unreachable)."""
    argv = [sys.executable, FORKSERVER, "tests.apps:hello", "--check-config"]
    env = dict(os.environ, PORT="5000")
    result = subprocess.run(argv, cwd=ROOT, env=env, capture_output=True, text=True,
                            timeout=CLI_TIMEOUT_SECONDS)
    assert result.returncode == EXIT_OK, result.stderr
    assert "$PORT is '5000', which forkserver does not read" in result.stderr
    assert "--bind 0.0.0.0:$PORT" in result.stderr
    bound = subprocess.run(argv + ["--bind", "127.0.0.1:0"], cwd=ROOT, env=env,
                           capture_output=True, text=True, timeout=CLI_TIMEOUT_SECONDS)
    assert "$PORT" not in bound.stderr


def test_workers_warning_names_the_cap_that_applies_instead():
    result = run_cli("-w", "4", "--max-children", "32", "tests.apps:hello", "--check-config")
    assert "workers ignored" in result.stderr
    assert "--max-children (now 32)" in result.stderr


def test_print_config_shows_the_default_bind_and_the_warnings():
    result = run_cli("-w", "4", "tests.apps:hello", "--print-config")
    assert result.returncode == EXIT_OK
    assert "workers ignored" in result.stderr
    default = subprocess.run([sys.executable, FORKSERVER, "tests.apps:hello", "--print-config"],
                             cwd=ROOT, capture_output=True, text=True, timeout=CLI_TIMEOUT_SECONDS)
    assert "bind = ['127.0.0.1:8888']  # the default" in default.stdout.splitlines()


def test_an_asgi_module_is_refused_naming_its_wsgi_twin(tmp_path):
    """Django's asgi.py beside its wsgi.py: the line names the one to use."""
    write_module(tmp_path / "proj", "__init__", "")
    write_module(tmp_path / "proj", "asgi", """
        class Handler:
            async def __call__(self, scope, receive, send):
                pass
        application = Handler()
        """)
    result = run_cli("proj.asgi:application", cwd=str(tmp_path))
    assert result.returncode == EXIT_APP_LOAD
    assert_one_clear_line(result, "is an ASGI app", "(proj.wsgi)")
