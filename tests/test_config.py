"""--config PATH: settings named like the options (the CLI wins), server hooks
run where and when documented, a raising hook survived, access-log atoms."""
import http.client
import os
import re
import stat
import subprocess
import sys
import threading
import time

import pytest

from tests.conftest import FORKSERVER, ROOT, http_get, unix_get

EXIT_USAGE = 2
EXIT_HOOK_FAILED = 5           # forkparts.exits.EXIT_HOOK_FAILED: post_fork raised
POLL_SECONDS = 0.02
LOG_WAIT_SECONDS = 10.0

RECORDER = '''
import os
NOTES = {notes!r}
RAISE = {raising!r}
MARKER = {marker!r}

def _note(name, *extra):
    with open(NOTES, "a") as f:
        f.write(" ".join([name, str(os.getpid())] + [str(e) for e in extra]) + "\\n")
    if name in RAISE:
        raise RuntimeError("hook %s raised on purpose" % name)

def on_starting(server): _note("on_starting")
def when_ready(server): _note("when_ready")
def pre_fork(server): _note("pre_fork")
def child_exit(server, pid, status): _note("child_exit", pid, status)
def on_exit(server): _note("on_exit")

def post_fork(server, child_pid):
    _note("post_fork", child_pid)
    if os.path.exists(MARKER):      # raise once: the first child after the marker
        os.unlink(MARKER)
        raise RuntimeError("post_fork raised on purpose")
'''


def write_config(tmp_path, text, name="forkserver.conf.py"):
    path = tmp_path / name
    path.write_text(text)
    return str(path)


def recorder_config(tmp_path, raising=()):
    notes, marker = str(tmp_path / "notes.txt"), str(tmp_path / "post_fork.raise")
    path = write_config(tmp_path, RECORDER.format(notes=notes, raising=list(raising),
                                                  marker=marker))
    return path, notes, marker


def read_notes(path):
    with open(path) as f:
        return [line.split() for line in f.read().splitlines()]


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
    assert "unknown setting 'workers' ignored (did you mean max_children?)" in log
    assert "unknown setting 'graceful_timout' ignored (did you mean graceful_timeout?)" in log
    assert "'PORT'" not in log and "'helper'" not in log   # constants and helpers are fine
    assert http_get(server, "/")[0] == 200


# ------------------------------------------------------------------- hooks

def test_hooks_run_in_documented_process_and_order(start_server, tmp_path):
    config, notes, _ = recorder_config(tmp_path)
    server = start_server("tests.apps:pid", "--config", config)
    served_by = []
    for _ in range(2):
        status, _, body = http_get(server, "/")
        assert status == 200
        served_by.append(int(body))
        # child_exit is noted once the parent reaped the child
        wait_for_text(lambda: open(notes).read(),
                      "child_exit %d %d " % (server.pid, served_by[-1]))
    assert server.stop() == 0
    parent = str(server.pid)
    per_request = [["pre_fork", parent], ["post_fork", "C", "C"], ["child_exit", parent, "C", "0"]]
    expected = [["on_starting", parent], ["when_ready", parent]]
    for child in served_by:
        expected += [[str(child) if f == "C" else f for f in step] for step in per_request]
    expected.append(["on_exit", parent])
    assert read_notes(notes) == expected


def test_raising_hooks_are_logged_by_name_and_survived(start_server, tmp_path):
    raising = ("on_starting", "when_ready", "pre_fork", "child_exit", "on_exit")
    config, notes, _ = recorder_config(tmp_path, raising=raising)
    server = start_server("tests.apps:hello", "--config", config)
    for _ in range(3):
        assert http_get(server, "/")[:3:2] == (200, b"Hello, World!\n")
    wait_for_text(server.log_text, "hook child_exit failed")
    assert server.stop() == 0
    log = server.log_text()
    for name in raising:
        assert "hook %s failed" % name in log
        assert "RuntimeError: hook %s raised on purpose" % name in log


def test_raising_post_fork_answers_500_and_the_next_child_serves(start_server, tmp_path):
    config, notes, marker = recorder_config(tmp_path)
    server = start_server("tests.apps:hello", "--config", config)
    open(marker, "w").close()
    status, _, body = http_get(server, "/")
    assert status == 500
    assert http_get(server, "/")[:3:2] == (200, b"Hello, World!\n")
    log = wait_for_text(server.log_text, "exited with status %d" % EXIT_HOOK_FAILED)
    assert "hook post_fork failed" in log and "post_fork raised on purpose" in log
    assert "exited with status %d" % EXIT_HOOK_FAILED in log
    assert server.ps.is_running()


# ------------------------------------------------------------- access log

FULL_FORMAT = ('%(h)s %(l)s %(u)s %(t)s "%(r)s" %(s)s %(b)s "%(f)s" "%(a)s" '
               '%(T)s %(D)s %(L)s %(M)s %(p)s %({x-req}i)s %({x-resp}o)s %(m)s %(U)s %(q)s %(H)s')
LINE_RE = re.compile(
    r'(?P<h>\S+) - (?P<u>\S+) \[(?P<t>\d\d/\w{3}/\d{4}:\d\d:\d\d:\d\d [+-]\d{4})\] '
    r'"(?P<r>[^"]*)" (?P<s>\d{3}) (?P<b>\d+|-) "(?P<f>[^"]*)" "(?P<a>[^"]*)" '
    r'(?P<T>\d+) (?P<D>\d+) (?P<L>\d+\.\d{6}) (?P<M>\d+) <(?P<p>\d+)> (?P<i>\S+) (?P<o>\S+) '
    r'(?P<m>\S+) (?P<U>\S+) (?P<q>\S*) (?P<H>\S+)$')
SLOW_MS = 300


def test_access_log_format_atoms(start_server):
    server = start_server("tests.apps_deploy:with_response_header",
                          "--access-log-format", FULL_FORMAT)
    headers = {"Referer": "http://example.test/from", "User-Agent": "atom-test/1.0",
               "X-Req": "in-value", "Authorization": "Basic YWxpY2U6c2VjcmV0"}  # alice:secret
    status, _, body = http_get(server, "/some/path?ms=%d" % SLOW_MS, headers=headers)
    assert (status, body) == (200, b"logged\n")
    line = wait_for_text(server.access_text, "\n").strip()
    match = LINE_RE.match(line)
    assert match, line
    atoms = match.groupdict()
    assert (atoms["h"], atoms["u"]) == ("127.0.0.1", "alice")
    assert atoms["r"] == "GET /some/path?ms=%d HTTP/1.1" % SLOW_MS
    assert (atoms["s"], atoms["b"]) == ("200", str(len(b"logged\n")))
    assert (atoms["f"], atoms["a"]) == (headers["Referer"], headers["User-Agent"])
    assert (atoms["i"], atoms["o"]) == ("in-value", "out-value")
    assert (atoms["m"], atoms["U"], atoms["q"], atoms["H"]) == (
        "GET", "/some/path", "ms=%d" % SLOW_MS, "HTTP/1.1")
    assert int(atoms["D"]) >= SLOW_MS * 1000 and int(atoms["M"]) >= SLOW_MS
    assert float(atoms["L"]) >= SLOW_MS / 1000.0 and atoms["T"] == "0"
    assert int(atoms["p"]) not in (server.pid, 0)      # written by the child


CONCURRENT_CLIENTS = 16
CONCURRENT_REQUESTS = 240
PAD_BYTES = 1500          # long lines: more room for two writes to interleave


def test_access_log_lines_stay_whole_under_many_children(start_server):
    server = start_server("tests.apps_deploy:with_response_header",
                          "--access-log-format", FULL_FORMAT)
    pad = "p" * PAD_BYTES
    failures, lock = [], threading.Lock()

    def client(count):
        for _ in range(count):
            try:
                status = http_get(server, "/", headers={"X-Req": pad})[0]
            except OSError as exc:
                status = repr(exc)
            if status != 200:
                with lock:
                    failures.append(status)
    threads = [threading.Thread(target=client, args=(CONCURRENT_REQUESTS // CONCURRENT_CLIENTS,))
               for _ in range(CONCURRENT_CLIENTS)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert not failures
    deadline = time.monotonic() + LOG_WAIT_SECONDS
    while server.access_text().count("\n") < CONCURRENT_REQUESTS and time.monotonic() < deadline:
        time.sleep(POLL_SECONDS)
    lines = server.access_text().splitlines()
    assert len(lines) == CONCURRENT_REQUESTS
    assert all(LINE_RE.match(line) and pad in line for line in lines)


# ------------------------------------------------------- deploy/ example

EXAMPLE_CONFIG = os.path.join(ROOT, "deploy", "forkserver.conf.py")


def test_example_config_loads_cleanly_and_its_hooks_run(start_server):
    # The paths in the example are production ones: the command line replaces them.
    server = start_server("tests.apps:hello", "--config", EXAMPLE_CONFIG,
                          "--bind", "127.0.0.1:0")
    assert http_get(server, "/")[0] == 200
    assert server.stop() == 0
    log = server.log_text()
    assert "WARNING" not in log and "hook" not in log
    assert "starting with max_children=64" in log
    assert log.index("starting with") < log.index("] ready") < log.index("] bye")
