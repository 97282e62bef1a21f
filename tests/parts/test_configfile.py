"""--config PATH: settings named like the options (the CLI wins), checked like
them, unknown names warned about, and the deploy/ example loads cleanly.
Hooks: tests/test_hooks.py."""
import http.client
import os
import stat
import subprocess
import sys
import time

import pytest

from tests.conftest import FORKSERVER, ROOT, http_get, unix_get

EXIT_USAGE = 2
POLL_SECONDS = 0.02
LOG_WAIT_SECONDS = 10.0


def write_config(tmp_path, text, name="forkserver.conf.py"):
    path = tmp_path / name
    path.write_text(text)
    return str(path)


def wait_for_text(read, needle, timeout=LOG_WAIT_SECONDS):
    deadline = time.monotonic() + timeout
    while needle not in read() and time.monotonic() < deadline:
        time.sleep(POLL_SECONDS)
    return read()


def run_to_exit(args, timeout=30):
    """Run forkserver expecting it to exit before the ready line (bad config)."""
    return subprocess.run([sys.executable, FORKSERVER] + args, cwd=ROOT, timeout=timeout,
                          capture_output=True, text=True)


# ---------------------------------------------------------------- settings

def test_config_file_settings_apply(start_server, tmp_path):
    sock_path = str(tmp_path / "cfg.sock")
    config = write_config(tmp_path, 'bind = ["unix:%s", "127.0.0.1:0"]\n'
                                    'umask = 0o077\n'
                                    'access_log_format = "CFG %%(s)s %%(m)s"\n' % sock_path)
    server = start_server("tests.apps:hello", "--config", config, default_bind=False)
    assert server.addresses[0] == "unix:" + sock_path
    assert server.addresses[1].startswith("http://127.0.0.1:")
    assert stat.S_IMODE(os.stat(sock_path).st_mode) == 0o600   # 0666 less the umask
    assert unix_get(sock_path) == (200, b"Hello, World!\n")
    text = wait_for_text(server.access_text, "CFG 200 GET")
    assert text.splitlines() == ["CFG 200 GET"]


def test_command_line_wins_over_config_file(start_server, tmp_path):
    sock_path = str(tmp_path / "cfg.sock")
    config = write_config(tmp_path, 'bind = "unix:%s"\n'
                                    'access_log_format = "CFG %%(s)s"\n' % sock_path)
    server = start_server("tests.apps:hello", "--config", config, "--bind", "127.0.0.1:0",
                          "--access-log-format", "CLI %(s)s")
    assert len(server.addresses) == 1 and server.addresses[0].startswith("http://127.0.0.1:")
    assert not os.path.exists(sock_path)
    assert http_get(server, "/")[0] == 200
    assert wait_for_text(server.access_text, "CLI 200").splitlines() == ["CLI 200"]


@pytest.mark.parametrize("line, message", [
    ("max_children = -3", "setting max_children: '-3' is not a whole number from 0 to 2147483647"),
    ("timeout = None", "setting timeout: None is not a number of seconds from 0 to 31536000"),
    ("reload = 1", "setting reload: 1 is not True or False"),
    ("log_level = 'loud'", "setting log_level: 'loud' is not one of debug"),
    ("umask = 0o1777", "setting umask: '1777' is not a umask in octal, from 000 to 777"),
    ("bind = 8000", "bind must be a string or a list of strings"),
    ("post_fork = 3", "hook post_fork must be a function taking (server, worker), not 3"),
    ("accesslog = 5", "setting accesslog: 5 is not a string"),
    ("proc_name = 1.5", "setting proc_name: 1.5 is not a string"),
    ("forwarded_allow_ips = 10", "setting forwarded_allow_ips: 10 is not a string"),
    ("no_access_log = 1", "setting no_access_log: 1 is not True or False"),
])
def test_config_value_is_checked_like_its_option(tmp_path, line, message):
    config = write_config(tmp_path, line + "\n")
    result = run_to_exit(["tests.apps:hello", "--config", config, "--bind", "127.0.0.1:0"])
    assert result.returncode == EXIT_USAGE
    assert message in result.stderr
    assert "Traceback" not in result.stderr


def test_config_accepts_python_values_for_options(start_server, tmp_path):
    config = write_config(tmp_path, 'forwarded_allow_ips = ["127.0.0.2", "10.0.0.0/8"]\n'
                                    "timeout = 5\n"
                                    "accept_filter = False\n")
    server = start_server("tests.apps_deploy:whoami", "--config", config)
    conn = http.client.HTTPConnection(server.host, server.port, timeout=10,
                                      source_address=("127.0.0.2", 0))
    conn.request("GET", "/", headers={"X-Forwarded-For": "192.0.2.7"})
    assert b'"remote_addr": "192.0.2.7"' in conn.getresponse().read()
    conn.close()


def test_config_file_that_raises_is_a_usage_error_with_its_traceback(tmp_path):
    config = write_config(tmp_path, "timeout = 1 / 0\n")
    result = run_to_exit(["tests.apps:hello", "--config", config, "--bind", "127.0.0.1:0"])
    assert result.returncode == EXIT_USAGE
    assert "ZeroDivisionError" in result.stderr and "line 1" in result.stderr


def test_unknown_settings_are_warned_by_name(start_server, tmp_path):
    config = write_config(tmp_path, "workers = 4\n"
                                    "graceful_timout = 5\n"
                                    "PORT = 8000\n"
                                    "def helper():\n    pass\n")
    server = start_server("tests.apps:hello", "--config", config)
    log = server.log_text()
    assert "workers ignored: forkserver forks one child per connection" in log
    assert "--max-children" in log
    assert "unknown setting 'graceful_timout' ignored (did you mean graceful_timeout?)" in log
    assert "'PORT'" not in log and "'helper'" not in log   # constants and helpers are fine
    assert http_get(server, "/")[0] == 200


# ------------------------------------------------------- deploy/ example

EXAMPLE_CONFIG = os.path.join(ROOT, "deploy", "forkserver.conf.py")


def test_example_config_loads_cleanly_and_its_hooks_run(start_server):
    # The paths in the example are production ones: the command line replaces them.
    server = start_server("tests.apps:hello", "--config", EXAMPLE_CONFIG,
                          "--bind", "127.0.0.1:0")
    assert http_get(server, "/")[0] == 200
    assert server.stop() == 0
    log = server.log_text()
    # The example's hooks may still be in forkserver's old forms (deploy/ is
    # updated on its own): a deprecation warning is then the only warning.
    others = [line for line in log.splitlines()
              if "forkserver's old form, deprecated" not in line]
    assert not [line for line in others if "WARNING" in line or "hook" in line]
    assert "starting with max_children=64" in log
    assert log.index("starting with") < log.index("] ready") < log.index("] bye")


def test_example_config_docstring_cites_real_files_and_says_what_names_do(tmp_path):
    """What the example's docstring says of names that are not settings is
    what the server does, and every file it cites exists."""
    import ast
    import re
    with open(EXAMPLE_CONFIG) as f:
        doc = " ".join(ast.get_docstring(ast.parse(f.read())).split())
    cited = re.findall(r"\b((?:tests|docs|deploy)/[\w/.]+\.(?:py|md))", doc)
    assert "tests/test_hooks.py" in cited
    assert [path for path in cited if not os.path.exists(os.path.join(ROOT, path))] == []
    warned = re.search(r'`mychildren = 4` logs "([^"]+)"', doc).group(1)
    assert "`foo = 1`" in doc and "left alone without a word" in doc
    config = write_config(tmp_path, "foo = 1\nmychildren = 4\n")
    result = run_to_exit(["tests.apps:hello", "-c", config, "--check-config"])
    assert result.returncode == 0, result.stderr
    assert result.stderr == "forkserver: warning: config file %r: %s\n" % (config, warned)


# ------------------------------------------- gunicorn.conf.py (issue 16)

def print_config(tmp_path, text, *args):
    """The effective settings of a config file, as --print-config gives them."""
    config = write_config(tmp_path, text, name="gunicorn.conf.py")
    result = run_to_exit(["-c", config, "--print-config"] + list(args))
    assert result.returncode == 0, result.stderr
    return dict(line.split(" = ", 1) for line in result.stdout.splitlines()), result.stderr


def test_gunicorns_names_are_honoured_under_forkservers(tmp_path):
    settings, _ = print_config(tmp_path, (
        "wsgi_app = 'tests.apps:hello'\n"
        "accesslog = '/tmp/a.log'\nerrorlog = '/tmp/e.log'\nloglevel = 'ERROR'\n"
        "access_log_format = '%(h)s %(s)s'\ntimeout = 12\ngraceful_timeout = 3\n"
        "pidfile = '/tmp/x.pid'\numask = 0o007\nlimit_request_line = 0\n"
        "limit_request_fields = 50\nlimit_request_field_size = 4096\n"
        "forwarded_allow_ips = ['10.0.0.1', '::1']\nraw_env = ['A=1', 'B=2']\n"
        "chdir = '/tmp'\npythonpath = '/opt/a,/opt/b'\nproc_name = 'shop'\n"
        "capture_output = True\nreload = True\nbind = ['127.0.0.1:0', 'unix:/tmp/s']\n"
        "backlog = 64\nuser = 'nobody'\ngroup = 'nogroup'\n"
        "secure_scheme_headers = {'X-FORWARDED-PROTO': 'https'}\n"))
    expected = {
        "app": "'tests.apps:hello'", "access_log": "'/tmp/a.log'", "error_log": "'/tmp/e.log'",
        "log_level": "'error'", "access_log_format": "'%(h)s %(s)s'", "timeout": "12.0",
        "graceful_timeout": "3.0", "pidfile": "'/tmp/x.pid'", "umask": "7",
        "limit_request_line": "2147483647", "limit_request_fields": "50",
        "limit_request_field_size": "4096", "forwarded_allow_ips": "'10.0.0.1,::1'",
        "raw_env": "['A=1', 'B=2']", "chdir": "'/tmp'", "pythonpath": "'/opt/a,/opt/b'",
        "proc_name": "'shop'", "capture_output": "True", "reload": "True",
        "bind": "['127.0.0.1:0', 'unix:/tmp/s']", "backlog": "64", "user": "'nobody'",
        "group": "'nogroup'"}
    assert {name: settings[name] for name in expected} == expected


def test_the_command_line_wins_over_gunicorns_names(tmp_path):
    settings, _ = print_config(tmp_path, "wsgi_app = 'tests.apps:hello'\nloglevel = 'error'\n"
                                         "raw_env = ['A=1']\n",
                               "tests.apps:pid", "--log-level", "DEBUG", "-e", "B=2")
    assert settings["app"] == "'tests.apps:pid'" and settings["log_level"] == "'debug'"
    assert settings["raw_env"] == "['A=1', 'B=2']"      # both apply, as gunicorn's -e


def test_names_gunicorn_does_not_know_are_ignored_silently(tmp_path):
    _, stderr = print_config(tmp_path, (
        "import multiprocessing\nimport os\n"
        "wsgi_app = 'tests.apps:hello'\n"
        "host = os.environ.get('HOST', '0.0.0.0')\nport = 8000\n"
        "workers_per_core = 2\nuse_loglevel = 'info'\n_private = 1\nPORT = 1\n"
        "def helper():\n    return 1\n"))
    assert stderr == ""
    # use_loglevel (a popular Docker image's gunicorn_conf.py) holds loglevel
    # whole: a name of the file's own, not a typo (a start warned "did you
    # mean loglevel?" every time).
    result = run_to_exit(["-c", str(tmp_path / "gunicorn.conf.py"), "--check-config"])
    assert result.returncode == 0, result.stderr
    assert "warning" not in result.stderr


def test_a_name_close_to_a_setting_gets_a_typo_warning(start_server, tmp_path):
    config = write_config(tmp_path, "graceful_timout = 5\ntimout = 3\n")
    server = start_server("tests.apps:hello", "-c", config)
    log = server.log_text()
    assert "unknown setting 'graceful_timout' ignored (did you mean graceful_timeout?)" in log
    assert "unknown setting 'timout' ignored (did you mean timeout?)" in log


@pytest.mark.parametrize("line, name, words", [
    ("certfile = '/c.pem'", "certfile", "TLS"),
    ("keyfile = '/k.pem'", "keyfile", "TLS"),
    ("ssl_version = 5", "ssl_version", "TLS"),
    ("ca_certs = '/ca.pem'", "ca_certs", "TLS"),
    ("def ssl_context(config, default):\n    return default()", "ssl_context", "TLS"),
    ("daemon = True", "daemon", "systemd"),
    ("syslog = True", "syslog", "own log files"),
    ("statsd_host = 'localhost:8125'", "statsd_host", "no statsd client"),   # was "own log files"
    ("proxy_protocol = True", "proxy_protocol", "PROXY protocol"),
    ("permit_obsolete_folding = True", "permit_obsolete_folding", "strict"),
    ("secure_scheme_headers = {}", "secure_scheme_headers", "X-Forwarded-Proto"),
    ("secure_scheme_headers = {'X-SCHEME': 'https'}", "secure_scheme_headers",
     "X-Forwarded-Proto"),
])
def test_gunicorn_settings_that_cannot_be_honoured_stop_the_start(tmp_path, line, name, words):
    config = write_config(tmp_path, line + "\n", name="gunicorn.conf.py")
    result = run_to_exit(["tests.apps:hello", "-c", config, "-b", "127.0.0.1:0"])
    assert result.returncode == EXIT_USAGE
    assert result.stderr.count("\n") == 1 and "Traceback" not in result.stderr
    assert result.stderr.startswith("forkserver: error: config file")
    assert "gunicorn's %s refused" % name in result.stderr and words in result.stderr


def test_gunicorn_settings_left_at_their_defaults_ask_for_nothing(tmp_path):
    _, stderr = print_config(tmp_path, (
        "wsgi_app = 'tests.apps:hello'\ncertfile = None\nkeyfile = None\ndaemon = False\n"
        "syslog = False\nproxy_protocol = False\nreuse_port = False\nsendfile = None\n"
        "worker_tmp_dir = None\nlogconfig_dict = {}\nsuppress_ragged_eofs = True\n"
        "proc_name = None\npidfile = None\npythonpath = None\n"))
    assert stderr == ""


def test_meaningless_gunicorn_settings_are_ignored_with_a_reason(tmp_path):
    _, stderr = print_config(tmp_path, (
        "wsgi_app = 'tests.apps:hello'\nworker_tmp_dir = '/dev/shm'\nkeepalive = 5\n"
        "secure_scheme_headers = {'X-FORWARDED-PROTOCOL': 'ssl', 'X-FORWARDED-PROTO': "
        "'https', 'X-FORWARDED-SSL': 'on'}\n"))
    # --print-config says the start's warnings too (it said none), as --check-config.
    assert "gunicorn's worker_tmp_dir ignored: no heartbeat files" in stderr
    config = str(tmp_path / "gunicorn.conf.py")
    result = run_to_exit(["-c", config, "--check-config"])
    assert result.returncode == 0, result.stderr
    assert "gunicorn's worker_tmp_dir ignored: no heartbeat files" in result.stderr
    assert "keepalive ignored" in result.stderr and "--keep-alive SECONDS" in result.stderr
    assert "secure_scheme_headers partly ignored" in result.stderr


def test_a_config_without_an_app_anywhere_is_a_usage_error(tmp_path):
    config = write_config(tmp_path, "timeout = 5\n", name="gunicorn.conf.py")
    result = run_to_exit(["-c", config])
    assert result.returncode == EXIT_USAGE
    assert "the app is missing" in result.stderr and "wsgi_app" in result.stderr


# ------------------------------------------------- string settings' types

def string_settings():
    """Every setting whose option takes a string as it is (no converter, no
    choices, one value): a path, a name, a format."""
    from forkparts.cli import build_parser
    from forkparts.configfile import NOT_SETTINGS
    return sorted({a.dest for a in build_parser()._actions
                   if a.type is None and a.choices is None and a.nargs is None
                   and a.option_strings and a.dest not in NOT_SETTINGS
                   and not getattr(a, "refused", False) and a.dest != "bind"})


@pytest.mark.parametrize("value", ["5", "1.5", "True", "b'/tmp/x'", "{'a': 1}"])
@pytest.mark.parametrize("name", string_settings())
def test_a_string_setting_given_another_type_is_refused_naming_it(tmp_path, name, value):
    from forkparts.cli import UsageError, build_parser
    from forkparts.configfile import read_config_file
    if name in ("user", "group") and value == "5":
        return                        # a numeric uid/gid, as gunicorn's validate_user
    config = write_config(tmp_path, "%s = %s\n" % (name, value))
    with pytest.raises(UsageError) as caught:
        read_config_file(config, build_parser())
    assert str(caught.value) == "config file %r: setting %s: %s is not a string" % (
        config, name, value)


def test_accesslog_of_a_number_fails_check_config_and_makes_no_file(tmp_path):
    config = write_config(tmp_path, "accesslog = 5\n", name="c.py")
    result = subprocess.run([sys.executable, FORKSERVER, "-c", "c.py", "tests.apps:hello",
                             "--check-config"], cwd=str(tmp_path), timeout=30,
                            capture_output=True, text=True, env=dict(os.environ, PYTHONPATH=ROOT))
    assert result.returncode == EXIT_USAGE
    assert result.stderr == ("forkserver: error: config file 'c.py': setting accesslog: "
                             "5 is not a string\n")
    assert os.listdir(str(tmp_path)) == ["c.py"]


def test_user_and_group_take_numeric_ids_as_gunicorn_does(tmp_path):
    settings, _ = print_config(tmp_path, "wsgi_app = 'tests.apps:hello'\n"
                                         "user = 65534\ngroup = 65534\n")
    assert (settings["user"], settings["group"]) == ("'65534'", "'65534'")
