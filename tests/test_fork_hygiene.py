"""Fork hygiene (DESIGN.md invariants; issue 3, "The parent"): what a child
inherits, stdio flushed before fork, a lean parent, SO_REUSEADDR."""
import json
import subprocess
import sys
import time

import psutil

from tests.conftest import ROOT, http_get, raw_request

PARENT_HANDLERS = ("note_signal", "note_sigchld", "reap_in_handler")
AS_PYTHON_STARTS = ("SIG_DFL", "SIG_IGN", "default_int_handler")
# Modules the parent must not carry into every fork (issue 3: each MB of parent
# memory costs ~29 us per connection; wsgiref.simple_server alone is 8 MB).
HEAVY_MODULES = ("http.server", "http.client", "email", "wsgiref", "logging", "threading",
                 "socketserver", "urllib.request", "asyncio", "ssl", "traceback")
MARKER = "unflushed-output-of-the-import"
REQUESTS = 3
TIME_WAIT_SECONDS = 5.0


def test_child_resets_the_parents_handlers_wakeup_fd_and_signal_mask(start_server):
    server = start_server("tests.apps_hygiene:inherited_signals")
    status, _, body = http_get(server, "/")
    assert status == 200
    report = json.loads(body)
    handlers = report["handlers"]
    for name, handler in handlers.items():
        assert handler in AS_PYTHON_STARTS, (name, handler)   # never the parent's
    assert handlers["SIGCHLD"] == "SIG_DFL"      # or subprocess loses exit statuses
    assert handlers["SIGPIPE"] == "SIG_IGN"      # a hang-up is EPIPE, not a death
    assert report["wakeup_fd"] == -1             # not the parent's wake-up pipe
    assert report["blocked"] == []               # blocked around fork, open again


APP_WITH_BUFFERED_OUTPUT = '''
import sys
sys.stdout.write("%s")          # no newline: it stays in stdout's buffer
def app(environ, start_response):
    sys.stdout.write("served\\n")  # line buffered on the pty: flushes the buffer
    start_response("200 OK", [("Content-Length", "0")])
    return [b""]
''' % MARKER


def test_stdio_is_flushed_before_fork_so_nothing_is_printed_twice(start_server, tmp_path):
    (tmp_path / "bufferedapp.py").write_text(APP_WITH_BUFFERED_OUTPUT)
    # Python's buffered stdout, as on a terminal (conftest sets PYTHONUNBUFFERED).
    server = start_server("bufferedapp:app", cwd=str(tmp_path),
                          extra_env={"PYTHONUNBUFFERED": ""})
    for _ in range(REQUESTS):
        assert http_get(server, "/")[0] == 200
    assert server.stop() == 0        # reads the pty to its end into pty.log
    with open(server.output_file.name, errors="replace") as f:
        text = f.read()
    # Before the ready line the warm-up ran GET / (a trial child, then the
    # parent's passes); after it, one line per request.
    assert text.partition("forkserver ready")[2].count("served") == REQUESTS
    # Unflushed, every child (and the warm-up's trial child) would write the
    # parent's buffered text again.
    assert text.count(MARKER) == 1, text


def test_parent_imports_nothing_heavy_to_accept_and_fork():
    # -S: only what forkserver itself imports, not what site hooks bring in.
    script = (
        "import sys; before = set(sys.modules)\n"
        "import forkserver\n"
        "opts, _ = forkserver.parse_options(['examples.hello:app'])\n"
        "forkserver.app_loader(opts).load()\n"
        "forkserver.build_handler_config(opts, forkserver.Log(error_fd=2), None, {})\n"
        "print(' '.join(sorted(set(sys.modules) - before)))\n")
    out = subprocess.run([sys.executable, "-S", "-c", script], cwd=ROOT, check=True,
                         capture_output=True, text=True, timeout=60).stdout.split()
    assert "wsgi_handler" in out and "examples.hello" in out
    heavy = [m for m in out if m in HEAVY_MODULES or m.startswith(
        tuple(h + "." for h in HEAVY_MODULES))]
    assert heavy == []


def time_wait_on_port(port):
    return [c for c in psutil.net_connections(kind="tcp")
            if c.laddr and c.laddr.port == port and c.status == psutil.CONN_TIME_WAIT]


def test_restart_on_the_same_port_despite_time_wait_so_reuseaddr(start_server):
    first = start_server("tests.apps:hello")
    port = first.port
    # Read to EOF: the server closes first, so TIME_WAIT is on the server's port.
    assert raw_request(first, b"GET / HTTP/1.1\r\nHost: t\r\n\r\n").startswith(b"HTTP/1.1 200")
    assert first.stop() == 0
    deadline = time.monotonic() + TIME_WAIT_SECONDS
    while not time_wait_on_port(port) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert time_wait_on_port(port), "no TIME_WAIT left: the test would prove nothing"
    # Without SO_REUSEADDR this bind fails with EADDRINUSE (exit status 4).
    second = start_server("tests.apps:hello", "--bind", "127.0.0.1:%d" % port)
    assert http_get(second, "/")[0] == 200


def test_the_started_parent_holds_no_module_it_needs_only_once(start_server, tmp_path):
    # Every module the parent holds is memory whose page tables each fork()
    # copies (docs/performance.md, "Parent size").  With a plain app spec and
    # the default warm-up, neither the spec's parser (ast) nor the warm-up's
    # report (json) is needed once the server is ready.  A child starts with
    # its parent's modules, so the app lists them (no hook: a config file
    # would bring inspect, and with it ast, for the hook's signature).
    (tmp_path / "modules_app.py").write_text(
        "import sys\n"
        "def app(environ, start_response):\n"
        "    start_response('200 OK', [('Content-Type', 'text/plain')])\n"
        "    return [' '.join(sorted(sys.modules)).encode()]\n")
    server = start_server("modules_app:app", "--pythonpath", str(tmp_path))
    status, _, body = http_get(server, "/")
    modules = body.decode().split()
    assert status == 200 and "wsgi_handler" in modules
    assert [m for m in modules if m in ("ast", "_ast", "json") or m.startswith("json.")] == []


def test_the_childs_branch_of_fork_child_reads_no_attribute():
    """What runs only in a child is never specialized by CPython (the parent
    never runs it), so an attribute read there looks its name up in the
    type's cache, misses, and writes pages every child then copies (the
    names, the cache, the type's MRO: docs/performance.md, "The child's
    attribute lookups").  fork_child reads what the child needs before
    fork(); its child branch only calls."""
    import ast
    import inspect
    import textwrap
    import forkserver
    tree = ast.parse(textwrap.dedent(inspect.getsource(forkserver.Server.fork_child)))
    branches = [node for node in ast.walk(tree) if isinstance(node, ast.If)
                and isinstance(node.test, ast.Compare)
                and isinstance(node.test.left, ast.Name) and node.test.left.id == "pid"
                and isinstance(node.test.ops[0], ast.Eq)]
    assert len(branches) == 1, "fork_child must have one `if pid == 0:` branch"
    reads = [ast.unparse(node) for statement in branches[0].body
             for node in ast.walk(statement) if isinstance(node, ast.Attribute)]
    assert reads == [], reads
