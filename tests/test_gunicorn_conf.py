"""A gunicorn.conf.py, written as gunicorn's docs show it, served through
`python forkserver.py -c gunicorn.conf.py`: its settings honoured, its log
files written, every hook called with gunicorn's arguments in the process
docs/operations.md names; what cannot be honoured stops the start."""
import json
import os
import re
import signal
import subprocess
import sys
import time

from tests.conftest import FORKSERVER, ROOT, http_get

EXIT_USAGE = 2
CLI_TIMEOUT_SECONDS = 30
WAIT_SECONDS = 10.0
POLL_SECONDS = 0.02

# As docs.gunicorn.org's example config: imports, helper variables, settings
# by gunicorn's names, and every server hook, each noting its call.
GUNICORN_CONF = '''
import json
import multiprocessing
import os

NOTES = {notes!r}
log_dir = {log_dir!r}                       # a helper variable, not a setting

wsgi_app = "tests.apps:greeting"
bind = "127.0.0.1:0"
workers = multiprocessing.cpu_count() * 2 + 1
worker_class = "sync"
accesslog = os.path.join(log_dir, "gaccess.log")
errorlog = os.path.join(log_dir, "gerror.log")
loglevel = "DEBUG"
access_log_format = '%(h)s "%(r)s" %(s)s pid=%(p)s'
timeout = 20
graceful_timeout = 10
raw_env = ["GREETING=hello from raw_env"]
proc_name = "gconf-test"
limit_request_line = 0


def note(hook, **attrs):
    attrs.update(hook=hook, in_pid=os.getpid())
    with open(NOTES, "a") as f:
        f.write(json.dumps(attrs) + "\\n")


def server_attrs(server):
    return dict(server_pid=server.pid, cfg_proc_name=server.cfg.proc_name,
                has_log=callable(server.log.info))


def worker_attrs(worker):
    return dict(pid=worker.pid, ppid=worker.ppid, age=worker.age,
                has_worker_log=callable(worker.log.info))


def on_starting(server):
    server.log.debug("debug line from on_starting")
    note("on_starting", **server_attrs(server))

def on_reload(server): note("on_reload", **server_attrs(server))
def when_ready(server): note("when_ready", **server_attrs(server))
def pre_exec(server): note("pre_exec", **server_attrs(server))
def pre_fork(server, worker): note("pre_fork", **server_attrs(server), **worker_attrs(worker))
def post_fork(server, worker):
    server.log.info("Worker spawned (pid: %s)", worker.pid)   # gunicorn's example_config.py
    note("post_fork", **server_attrs(server), **worker_attrs(worker))
def post_worker_init(worker): note("post_worker_init", **worker_attrs(worker))
def worker_int(worker): note("worker_int", **worker_attrs(worker))
def worker_abort(worker): note("worker_abort", **worker_attrs(worker))

def pre_request(worker, req):
    note("pre_request", method=req.method, path=req.path, version=list(req.version),
         **worker_attrs(worker))

def post_request(worker, req, environ, resp):
    note("post_request", path=req.path, path_info=environ["PATH_INFO"],
         status_code=resp.status_code, **worker_attrs(worker))

def child_exit(server, worker): note("child_exit", **server_attrs(server), **worker_attrs(worker))
def worker_exit(server, worker): note("worker_exit", **server_attrs(server), **worker_attrs(worker))

def nworkers_changed(server, new_value, old_value):
    note("nworkers_changed", new=new_value, old=old_value)

def on_exit(server): note("on_exit", **server_attrs(server))
'''


def read_notes(path):
    if not os.path.exists(path):
        return []
    with open(path) as f:
        return [json.loads(line) for line in f.read().splitlines()]


def wait_for_note(path, predicate, timeout=WAIT_SECONDS):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if any(predicate(n) for n in read_notes(path)):
            return True
        time.sleep(POLL_SECONDS)
    return False


def gunicorn_conf(tmp_path, text=GUNICORN_CONF, **extra):
    notes, path = str(tmp_path / "notes.jsonl"), tmp_path / "gunicorn.conf.py"
    path.write_text(text.format(notes=notes, log_dir=str(tmp_path), **extra))
    return str(path), notes


def run_cli(*args, cwd=ROOT):
    return subprocess.run([sys.executable, FORKSERVER] + list(args), cwd=cwd,
                          capture_output=True, text=True, timeout=CLI_TIMEOUT_SECONDS)


def serve_conf(start_server, tmp_path):
    config, notes = gunicorn_conf(tmp_path)
    # No app and no bind on the command line: wsgi_app and bind come from the file.
    server = start_server("-c", config, default_bind=False, log_files=False)
    return server, notes


def test_gunicorn_conf_hooks_get_gunicorns_arguments_in_their_processes(start_server, tmp_path):
    server, notes = serve_conf(start_server, tmp_path)
    parent = server.pid
    children = []
    for path in ("/one", "/two"):
        status, _, body = http_get(server, path)
        assert (status, body) == (200, b"hello from raw_env")   # raw_env reached the app
        assert wait_for_note(notes, lambda n, p=path: n["hook"] == "child_exit"
                             and n["age"] == len(children) + 1)
        children.append([n for n in read_notes(notes) if n["hook"] == "post_fork"][-1]["pid"])
    assert server.stop() == 0
    calls = read_notes(notes)
    assert [n["hook"] for n in calls] == (
        ["on_starting", "when_ready"]
        + ["pre_fork", "post_fork", "post_worker_init", "pre_request", "post_request",
           "worker_exit", "child_exit"] * 2 + ["on_exit"])
    for n in calls:
        if "server_pid" in n:
            assert n["server_pid"] == parent and n["cfg_proc_name"] == "gconf-test"
            assert n["has_log"]
        if "has_worker_log" in n:
            assert n["has_worker_log"] and n["ppid"] == parent
    per_child = [calls[2 + 7 * i: 9 + 7 * i] for i in range(2)]
    for age, (child, steps) in enumerate(zip(children, per_child), start=1):
        pre_fork, post_fork, init, pre_request, post_request, worker_exit, child_exit = steps
        assert pre_fork["in_pid"] == parent and pre_fork["pid"] is None and pre_fork["age"] == age
        for step in (post_fork, init, pre_request, post_request, worker_exit):
            assert step["in_pid"] == child and step["pid"] == child and step["age"] == age
        assert pre_request["method"] == "GET" and pre_request["version"] == [1, 1]
        assert post_request["status_code"] == 200
        assert post_request["path"] == post_request["path_info"] == pre_request["path"]
        assert child_exit["in_pid"] == parent and child_exit["pid"] == child
        assert child_exit["age"] == age
    assert [c["path"] for c in per_child[0][3:4] + per_child[1][3:4]] == ["/one", "/two"]


def test_gunicorn_conf_log_files_and_level_are_honoured(start_server, tmp_path):
    server, _ = serve_conf(start_server, tmp_path)
    assert http_get(server, "/logged")[0] == 200
    assert server.stop() == 0
    access = (tmp_path / "gaccess.log").read_text()
    error = (tmp_path / "gerror.log").read_text()
    assert '127.0.0.1 "GET /logged HTTP/1.1" 200 pid=' in access   # access_log_format
    assert "[DEBUG] debug line from on_starting" in error           # loglevel "DEBUG"
    assert re.search(r"\[INFO\] Worker spawned \(pid: \d+\)", error), error
    assert "workers ignored: forkserver forks one child per connection" in error
    assert "worker_class ignored" in error and "--max-children" in error
    assert "log_dir" not in error                                     # helpers are the file's
    pty = open(str(tmp_path / "server0" / "pty.log"), errors="replace").read()
    assert "GET /logged" not in pty and "[INFO]" not in pty          # nothing on the terminal


def test_worker_int_and_worker_abort_run_in_the_child_on_its_signals(start_server, tmp_path):
    config, notes = gunicorn_conf(tmp_path)
    server = start_server("tests.apps:slow", "-c", config, default_bind=False,
                          log_files=False)
    import socket
    for sig, hook in ((signal.SIGQUIT, "worker_int"), (signal.SIGABRT, "worker_abort")):
        client = socket.create_connection((server.host, server.port), timeout=10)
        client.sendall(b"GET /?s=30 HTTP/1.1\r\nHost: x\r\n\r\n")
        assert wait_for_note(notes, lambda n: n["hook"] == "post_worker_init"
                             and n["pid"] not in noted_pids(notes, sig))
        child = [n for n in read_notes(notes) if n["hook"] == "post_worker_init"][-1]["pid"]
        os.kill(child, sig)
        assert wait_for_note(notes, lambda n: n["hook"] == hook and n["pid"] == child)
        assert wait_for_note(notes, lambda n: n["hook"] == "child_exit" and n["pid"] == child)
        client.close()
        note = [n for n in read_notes(notes) if n["hook"] == hook][-1]
        assert note["in_pid"] == child and note["ppid"] == server.pid
    assert server.stop() == 0


def noted_pids(notes, _sig):
    """Children already used by an earlier round of the signal test."""
    return {n["pid"] for n in read_notes(notes) if n["hook"] == "child_exit"}


def test_gunicorn_conf_with_tls_is_refused_at_start_naming_each_setting(tmp_path):
    config = tmp_path / "gunicorn.conf.py"
    config.write_text('certfile = "/etc/ssl/cert.pem"\nkeyfile = "/etc/ssl/key.pem"\n'
                      'daemon = True\nworkers = 2\n')
    result = run_cli("tests.apps:hello", "-c", str(config), "-b", "127.0.0.1:0")
    assert result.returncode == EXIT_USAGE
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 3, result.stderr                    # one line per setting refused
    for line, name in zip(lines, ("certfile", "keyfile", "daemon")):
        assert line.startswith("forkserver: error: config file") and "gunicorn's %s" % name in line
    assert "TLS" in lines[0] and "Traceback" not in result.stderr
    assert "ready" not in result.stdout


def test_secure_scheme_headers_forkserver_cannot_honour_are_refused(tmp_path):
    config = tmp_path / "gunicorn.conf.py"
    config.write_text("secure_scheme_headers = {'X-FORWARDED-SSL': 'on'}\n")
    result = run_cli("tests.apps:hello", "-c", str(config), "-b", "127.0.0.1:0")
    assert result.returncode == EXIT_USAGE
    assert "gunicorn's secure_scheme_headers refused" in result.stderr
    assert "X-Forwarded-Proto" in result.stderr


def test_secure_scheme_headers_of_x_forwarded_proto_serve(start_server, tmp_path):
    config = tmp_path / "gunicorn.conf.py"
    config.write_text("secure_scheme_headers = {'X-Forwarded-Proto': 'https'}\n"
                      "ssl_version_helper = 2\nsome_helper = [1, 2]\n")
    server = start_server("tests.apps:echo_environ", "-c", str(config))
    _, _, body = http_get(server, "/", headers={"X-Forwarded-Proto": "https"})
    assert b"wsgi.url_scheme='https'" in body
    assert "WARNING" not in server.log_text()    # unknown names are the file's own


def test_old_form_hooks_get_the_old_call_and_one_deprecation_warning(start_server, tmp_path):
    notes = str(tmp_path / "old.txt")
    config = tmp_path / "old.conf.py"
    config.write_text(
        "import os\n"
        "def post_fork(server, child_pid):\n"
        "    open(%r, 'a').write('post_fork %%d %%d\\n' %% (child_pid, os.getpid()))\n"
        "def child_exit(server, pid, status):\n"
        "    open(%r, 'a').write('child_exit %%d %%d\\n' %% (pid, status))\n" % (notes, notes))
    server = start_server("tests.apps:pid", "-c", str(config))
    child = int(http_get(server, "/")[2])
    deadline = time.monotonic() + WAIT_SECONDS
    while "child_exit" not in (open(notes).read() if os.path.exists(notes) else ""):
        assert time.monotonic() < deadline
        time.sleep(POLL_SECONDS)
    assert server.stop() == 0
    assert open(notes).read().split("\n")[:2] == ["post_fork %d %d" % (child, child),
                                                  "child_exit %d 0" % child]
    log = server.log_text()
    for old in ("post_fork(server, child_pid)", "child_exit(server, pid, status)"):
        assert log.count("hook %s is forkserver's old form, deprecated" % old) == 1


def test_a_raising_gunicorn_hook_is_logged_by_name_and_requests_go_on(start_server, tmp_path):
    config = tmp_path / "gunicorn.conf.py"
    config.write_text("def pre_request(worker, req):\n    raise ValueError('pre_request boom')\n"
                      "def post_request(worker, req, environ, resp):\n    1 / 0\n"
                      "def worker_exit(server, worker):\n    raise KeyError('gone')\n")
    server = start_server("tests.apps:hello", "-c", str(config))
    assert http_get(server, "/")[:3:2] == (200, b"Hello, World!\n")
    assert server.stop() == 0
    log = server.log_text()
    for name in ("pre_request", "post_request", "worker_exit"):
        assert "hook %s failed" % name in log
    assert "exited with status" not in log      # the child still ended cleanly


# ------------------------------------------ gunicorn's default file and variable

DEFAULT_CONF = '''
bind = "127.0.0.1:0"
loglevel = "debug"
timeout = 11
wsgi_app = "tests.apps:hello"
pythonpath = {root!r}
'''


def print_config(cwd, *args, cmd_args=None):
    """--print-config's settings as {name: value text}, and the process."""
    env = dict(os.environ)
    env.pop("GUNICORN_CMD_ARGS", None)
    if cmd_args is not None:
        env["GUNICORN_CMD_ARGS"] = cmd_args
    done = subprocess.run([sys.executable, FORKSERVER, "--print-config"] + list(args), cwd=cwd,
                          env=env, capture_output=True, text=True, timeout=CLI_TIMEOUT_SECONDS)
    settings = dict(line.split(" = ", 1) for line in done.stdout.splitlines() if " = " in line)
    return settings, done


def test_gunicorn_conf_py_in_the_current_directory_is_read_without_c(start_server, tmp_path):
    """gunicorn reads ./gunicorn.conf.py when no --config is given; its
    settings, hooks and bind used to be dropped without a word."""
    (tmp_path / "gunicorn.conf.py").write_text(DEFAULT_CONF.format(root=ROOT))
    settings, done = print_config(str(tmp_path))
    assert done.returncode == 0, done.stderr
    assert (settings["config"], settings["timeout"], settings["log_level"]) == (
        "'./gunicorn.conf.py'", "11.0", "'debug'")
    server = start_server("--no-access-log", cwd=str(tmp_path), default_bind=False)
    assert http_get(server, "/")[0] == 200          # wsgi_app and bind from the file
    assert "config file ./gunicorn.conf.py read, as gunicorn reads it" in server.log_text()
    # -c names another file, and then ./gunicorn.conf.py is not read.
    other = tmp_path / "other.py"
    other.write_text("timeout = 12\n")
    settings, done = print_config(str(tmp_path), "-c", str(other), "tests.apps:hello")
    assert (settings["config"], settings["timeout"]) == (repr(str(other)), "12.0")


def test_gunicorn_cmd_args_go_over_the_config_file_and_under_the_command_line(tmp_path):
    """As gunicorn: the command line over $GUNICORN_CMD_ARGS over the config
    file.  The variable used to be ignored without a word."""
    (tmp_path / "gunicorn.conf.py").write_text(DEFAULT_CONF.format(root=ROOT))
    cmd_args = "--bind 127.0.0.1:9 --log-level warning -t 7"
    settings, done = print_config(str(tmp_path), cmd_args=cmd_args)
    assert done.returncode == 0, done.stderr
    assert (settings["bind"], settings["log_level"], settings["timeout"]) == (
        "['127.0.0.1:9']", "'warning'", "7.0")
    settings, _ = print_config(str(tmp_path), "-t", "9", "-b", "127.0.0.1:8",
                               cmd_args=cmd_args)
    assert (settings["bind"], settings["log_level"], settings["timeout"]) == (
        "['127.0.0.1:8']", "'warning'", "9.0")
    # Its --config names the file when the command line does not.
    other = tmp_path / "other.py"
    other.write_text("timeout = 12\nwsgi_app = 'tests.apps:hello'\n")
    settings, _ = print_config(str(tmp_path), cmd_args="-c %s" % other)
    assert (settings["config"], settings["timeout"]) == (repr(str(other)), "12.0")


def test_a_bad_gunicorn_cmd_args_is_one_line_naming_the_variable(tmp_path):
    for cmd_args, what in (("--timeout abc", "argument -t/--timeout: 'abc'"),
                           ("--bind 'x", "No closing quotation")):
        _, done = print_config(str(tmp_path), "tests.apps:hello", cmd_args=cmd_args)
        assert done.returncode == EXIT_USAGE
        assert "GUNICORN_CMD_ARGS" in done.stderr and what in done.stderr, done.stderr
        assert len(done.stderr.splitlines()) == 1 and "Traceback" not in done.stderr
