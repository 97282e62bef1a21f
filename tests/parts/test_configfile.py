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
    assert stat.S_IMODE(os.stat(sock_path).st_mode) == 0o700
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
    ("post_fork = 3", "hook post_fork must be a function"),
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
