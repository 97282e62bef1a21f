#!/usr/bin/env python3
"""bench.py: forkserver beside its peers and a bare fork, measured side by side.

Every server runs on loopback with the same app (examples/bench_apps.py):

    floor      a bare fork-per-connection loop written here: accept, fork, one
               recv, a fixed response, os._exit; a SIGCHLD reaper.  The best a
               Python fork-per-connection server can do.  For the Flask runs its
               parent imports Flask first ("floor+flask"), as a real server must.
    bare-app   the floor that runs the app: the same bare loop, but the child
               calls the app with the smallest environ PEP 3333 allows (from the
               request line alone) and sends what it returns; the parent warms
               the app (GET /, 16 passes) and freezes its heap (gc.freeze), as
               forkserver's default does.  No parsing, limits, timeouts or
               safety, nor our two heap tricks: what a fork-per-connection
               server of this app reaches with nothing of ours, and
               forkserver / bare-app is what all of ours costs.
    forkserver this project as a user starts it: no flags but --bind and
               --no-access-log (its default warm-up of GET / included)
    forkserver-tuned  the flags the benchmark used to pass: --prewarm /
               (an explicit warm-up) and --log-level warning
    stdlib     socketserver.ForkingMixIn + wsgiref, backlog 1024
    werkzeug   werkzeug.serving.run_simple(processes=N)
    gunicorn   sync worker, -w 2 (prefork: no fork per connection)
    waitress   threads (no fork at all)

The load generator is wrk (or ab), at 1, 8 and 64 concurrent clients with
``Connection: close``, each run bounded in time.  A round starts every server
for one app, and for each client count runs the floor first, then the others,
then the floor again; every figure is also given as a ratio to the mean of the
two floor runs around it.  Server CPU per request is the server's CPU time
(parent, reaped children, live children) over requests answered.  Zombies are
counted right after each run and 1 s later.

Beside the rounds: 5,000 connections at 64 clients with ab (errors, zombies),
a keep-alive comparison on Flask (forkserver --keep-alive vs waitress vs
gunicorn gthread), and ``--memory``: USS/PSS/RSS of a live child mid-request.

    python scripts/bench.py --quick            # under two minutes
    python scripts/bench.py                    # the full run of docs/performance.md
    python scripts/bench.py --memory           # per-child memory only
    python scripts/bench.py --skip errors,keepalive,memory,faults \
        --servers forkserver,forkserver-tuned,stdlib --checkout before=../old
                                               # another checkout side by side
    python scripts/bench.py --combine a.json b.json c.json   # medians of runs

``--checkout LABEL=PATH`` adds that checkout's forkserver, as a user starts it
(row LABEL) and with the tuned flags (row LABEL-tuned), to every round, so two
versions are measured in the same run, interleaved with the floor (issue 15's
guard rail).  ``--combine`` takes the JSON of several full runs and reports,
per app and client count, the median over the runs of each run's figures: the
ratio to the floor, default vs tuned, Flask vs stdlib, and ours vs each
checkout.

Needs: psutil; wrk or ab (Debian: apt-get install wrk apache2-utils); peers
from the bench extra (pip install -e '.[bench]').  Peers not installed are
skipped with a line saying so.  Results: printed, and written as JSON and
Markdown under --out.
"""
import importlib
import io
import os
import signal
import socket
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
HOST = "127.0.0.1"
APPS = {"hello": "examples.bench_apps:hello", "flask": "examples.bench_apps:flask_app"}
SLEEPY_APPS = {"hello": "examples.bench_apps:sleepy", "flask": "examples.bench_apps:flask_sleepy"}
CLIENTS = (1, 8, 64)
# forkserver-tuned's flags beyond the default's (--bind, --no-access-log).
TUNED_FLAGS = ["--log-level", "warning", "--prewarm", "/"]
DEFAULT_VS_TUNED_GOAL = 0.95                     # issue 17: the default is the fast one
# The ratio goals, each for the configuration its issue set it for: issue 6's
# for the tuned flags (then the benchmark's only forkserver row), issue 17's
# for the default, as a user starts it.
RATIO_GOALS = (("forkserver", {"hello": 0.7, "stdlib": 1.5}),
               ("forkserver-tuned", {"hello": 0.75, "stdlib": 1.5, "floor+flask": 0.6}))
# The report's rows: forkserver as users run it first, then its tuned flags.
REPORT_ORDER = {"forkserver": 0, "forkserver-tuned": 1}
PEERS = ("forkserver", "forkserver-tuned", "bare-app", "stdlib", "werkzeug", "gunicorn",
         "waitress")
CHECKOUTS = {}                                   # --checkout LABEL=PATH: LABEL -> path
CHECKOUT_ROWS = ["", "-tuned"]                   # LABEL, LABEL-tuned (--checkout-tuned-only)
GUARD_RAIL = 0.95                                # issue 15: within 5 % of the checkout
FULL_ROUNDS, QUICK_ROUNDS = 3, 1
FULL_SECONDS, QUICK_SECONDS = 5.0, 1.0           # one load run
FULL_CONNECTIONS, QUICK_CONNECTIONS = 5000, 1000  # the ab errors check at 64 clients
WARM_UP_CLIENTS, WARM_UP_SECONDS = 8, 3.0         # untimed, before the first round
ERRORS_CLIENTS = 64
KEEPALIVE_CLIENTS = (8, 64)
KEEPALIVE_SECONDS = 5                            # idle keep-alive of every server
KEEPALIVE_MAX_REQUESTS = 1000                    # forkserver --max-requests-per-connection
WERKZEUG_PROCESSES = 128                         # above the highest client count
STDLIB_BACKLOG = 1024
READY_TIMEOUT_SECONDS = 30.0
STOP_TIMEOUT_SECONDS = 10.0
LOAD_TIMEOUT_SLACK_SECONDS = 60.0                # a load run may overrun by this much
ZOMBIE_RECHECK_SECONDS = 1.0
MEMORY_SLEEP_SECONDS = 3.0                       # the sleeping view holds the child this long
MEMORY_SETTLE_SECONDS = 0.5                      # measure once the app is surely asleep
HELLO_RESPONSE = (b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: 14\r\n"
                  b"Connection: close\r\n\r\nHello, World!\n")
INSTALL_HINT = ("install a load generator: wrk (Debian/Ubuntu: apt-get install wrk) "
                "or ab (apt-get install apache2-utils; macOS: brew install wrk)")
WRK_LUA = r"""
done = function(summary, latency, requests)
  local e = summary.errors
  io.write(string.format(
    'BENCHJSON {"requests": %d, "duration_us": %d, "connect": %d, "read": %d, ' ..
    '"write": %d, "status": %d, "timeout": %d, "p50_us": %d, "p99_us": %d}\n',
    summary.requests, summary.duration, e.connect, e.read, e.write, e.status,
    e.timeout, latency:percentile(50), latency:percentile(99)))
end
"""


# ======================================================= servers run by the script

def load_app(spec):
    module, _, name = spec.partition(":")
    if ROOT not in sys.path:
        sys.path.insert(0, ROOT)   # the examples package, wherever we are run from
    return getattr(importlib.import_module(module), name)


def bound_listener(port, backlog=STDLIB_BACKLOG):
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((HOST, port))
    sock.listen(backlog)
    return sock


def reap(signum, frame):
    while True:
        try:
            pid, _ = os.waitpid(-1, os.WNOHANG)
        except ChildProcessError:
            return
        if pid == 0:
            return


def stop_servers(servers, args):
    """Wait for the pending 1-second zombie checks, then stop every server by pid."""
    for check in args.zombie_checks:
        check.join()
    args.zombie_checks.clear()
    for server in servers.values():
        server.stop()


def serve_floor(port, spec):
    """The bare fork: what fork-per-connection costs with nothing of ours in it."""
    if spec:
        load_app(spec)   # the parent's size is what fork pays for
    listener = bound_listener(port)
    signal.signal(signal.SIGCHLD, reap)
    while True:
        conn, _ = listener.accept()   # PEP 475: retried after SIGCHLD
        if os.fork() == 0:
            try:
                listener.close()
                conn.recv(65536)
                conn.sendall(HELLO_RESPONSE)
                conn.close()
            finally:
                os._exit(0)
        conn.close()


BARE_APP_WARM_UP_PASSES = 16                     # as forkserver's default warm-up


def bare_environ(request_line, port, errors):
    """The smallest environ PEP 3333 allows, from ``GET /path?query HTTP/1.1``."""
    method, target, protocol = request_line.split(" ", 2)
    path, _, query = target.partition("?")
    return {"REQUEST_METHOD": method, "SCRIPT_NAME": "", "PATH_INFO": path,
            "QUERY_STRING": query, "SERVER_NAME": HOST, "SERVER_PORT": str(port),
            "SERVER_PROTOCOL": protocol, "HTTP_HOST": "%s:%d" % (HOST, port),
            "wsgi.version": (1, 0), "wsgi.url_scheme": "http", "wsgi.input": io.BytesIO(),
            "wsgi.errors": errors, "wsgi.multithread": False, "wsgi.multiprocess": True,
            "wsgi.run_once": False}


def bare_response(app, environ):
    """The bytes of the app's whole response, with ``Connection: close``."""
    started = []

    def start_response(status, headers, exc_info=None):
        started[:] = [status, headers]
    result = app(environ, start_response)
    try:
        body = b"".join(result)
    finally:
        if hasattr(result, "close"):
            result.close()
    status, headers = started
    head = "HTTP/1.1 %s\r\n%sConnection: close\r\n\r\n" % (
        status, "".join("%s: %s\r\n" % header for header in headers))
    return head.encode("latin-1") + body


def serve_bare_app(port, spec, heap_tricks=False):
    """The floor that runs the app: fork per connection with nothing of ours in it."""
    import gc
    # The filler (bare-app-tricks) is kept for the server's life: freed, its
    # blocks would be the allocator's holes again.
    app, listener, filler = prepare_bare_app(port, spec, heap_tricks)
    signal.signal(signal.SIGCHLD, reap)
    while True:
        conn, _ = listener.accept()
        if os.fork() == 0:
            try:
                gc.disable()
                listener.close()
                head = conn.recv(65536)
                line = head[:head.index(b"\r\n")].decode("latin-1")
                conn.sendall(bare_response(app, bare_environ(line, port, sys.stderr)))
                conn.close()
            finally:
                os._exit(0)
        conn.close()


def prepare_bare_app(port, spec, heap_tricks=False):
    """bare-app's parent before its first fork: (app, listener, heap filler).
    The app is warmed as our default warms it and the heap frozen; with
    heap_tricks (bare-app-tricks), also our two tricks on the heap
    (forkparts/accel.py: the allocator's holes filled, huge pages), and still
    none of our code per connection."""
    import gc
    app = load_app(spec)
    for _ in range(BARE_APP_WARM_UP_PASSES):
        bare_response(app, bare_environ("GET / HTTP/1.1", port, sys.stderr))
    listener = bound_listener(port)
    gc.collect()
    filler = None
    if heap_tricks:
        from forkparts import accel
        filler = accel.fill_allocator_holes()
    gc.freeze()
    if heap_tricks:
        accel.collapse_heap()
    return app, listener, filler


def serve_bare_app_tricks(port, spec):
    return serve_bare_app(port, spec, heap_tricks=True)


def serve_stdlib(port, spec):
    from socketserver import ForkingMixIn
    from wsgiref.simple_server import WSGIRequestHandler, WSGIServer

    class Server(ForkingMixIn, WSGIServer):
        request_queue_size = STDLIB_BACKLOG

    class QuietHandler(WSGIRequestHandler):
        def log_message(self, *args):   # no per-request stderr line, as the others
            pass

    server = Server((HOST, port), QuietHandler)
    server.set_app(load_app(spec))
    server.serve_forever()


def serve_werkzeug(port, spec):
    import logging
    from werkzeug.serving import run_simple
    logging.getLogger("werkzeug").setLevel(logging.WARNING)   # no per-request line
    run_simple(HOST, port, load_app(spec), processes=WERKZEUG_PROCESSES, threaded=False)


INTERNAL_SERVERS = {"_floor": serve_floor, "_bare_app": serve_bare_app,
                    "_bare_app_tricks": serve_bare_app_tricks, "_stdlib": serve_stdlib,
                    "_werkzeug": serve_werkzeug}


if __name__ == "__main__" and sys.argv[1:2] and sys.argv[1] in INTERNAL_SERVERS:
    # A server of the comparison: dispatched before the imports below, so its
    # parent is no bigger than it must be (fork's cost grows with the parent).
    sys.exit(INTERNAL_SERVERS[sys.argv[1]](int(sys.argv[2]), sys.argv[3]))

import argparse            # noqa: E402 - the benchmark proper starts here
import importlib.util      # noqa: E402
import json                # noqa: E402
import platform            # noqa: E402
import re                  # noqa: E402
import shutil              # noqa: E402
import statistics          # noqa: E402
import subprocess          # noqa: E402
import tempfile            # noqa: E402
import threading           # noqa: E402
import time                # noqa: E402


# ======================================================= peers: command lines

def has_module(name):
    return importlib.util.find_spec(name) is not None


def command(name, spec, port, keepalive=False):
    """argv of one server.  Ours run with -m, as the peers' entry points do, so
    their code comes from cached bytecode: a script given by path is compiled
    at every start, which leaves the parent larger (1.5 MB anonymous on the
    Flask example, no measurable cost per connection: docs/performance.md)."""
    py = sys.executable
    bind = "%s:%d" % (HOST, port)
    if name in ("floor", "floor+flask"):
        return [py, "-m", "scripts.bench", "_floor", str(port),
                spec if name == "floor+flask" else ""]
    if name in ("forkserver", "forkserver-tuned") or checkout_of(name):
        cmd = [py, "-m", "forkserver", spec, "--bind", bind, "--no-access-log"]
        if name.endswith("-tuned"):
            cmd += TUNED_FLAGS
        if keepalive:
            cmd += ["--keep-alive", str(KEEPALIVE_SECONDS),
                    "--max-requests-per-connection", str(KEEPALIVE_MAX_REQUESTS)]
        return cmd
    if name in ("stdlib", "werkzeug", "bare-app"):
        return [py, "-m", "scripts.bench", "_" + name.replace("-", "_"), str(port), spec]
    if name == "gunicorn":
        return [py, "-m", "gunicorn", "-w", "2", "-b", bind, "--log-level", "warning", spec]
    if name == "gthread":
        return [py, "-m", "gunicorn", "-k", "gthread", "-w", "2", "--threads", "4",
                "--keep-alive", str(KEEPALIVE_SECONDS), "-b", bind, "--log-level", "warning", spec]
    if name == "waitress":
        return [py, "-m", "waitress", "--listen=" + bind, spec]
    raise ValueError(name)


def checkout_of(name):
    """The directory of a --checkout server (LABEL or LABEL-tuned), else None."""
    label = name[:-len("-tuned")] if name.endswith("-tuned") else name
    return CHECKOUTS.get(label)


def checkout_pairs(label, rows):
    """(ours, theirs) row names compared for a --checkout: the default with the
    default, the tuned flags with the tuned flags."""
    return [("forkserver" + suffix, label + suffix) for suffix in rows]


def server_root(name):
    """Where a server starts (its -m forkserver is imported from there)."""
    return checkout_of(name) or ROOT


PEER_MODULES = {"werkzeug": "werkzeug", "gunicorn": "gunicorn", "gthread": "gunicorn",
                "waitress": "waitress"}


def available(names, say):
    """The servers whose package is importable; a line for each one skipped."""
    out = []
    for name in names:
        module = PEER_MODULES.get(name)
        if module and not has_module(module):
            say("skipped %s: %s is not installed (pip install -e '.[bench]')" % (name, module))
            continue
        out.append(name)
    return out


def free_port():
    with socket.socket() as s:
        s.bind((HOST, 0))
        return s.getsockname()[1]


class Running:
    """One server process started by the script, stopped by its pid."""

    def __init__(self, name, spec, logdir, keepalive=False):
        self.name = name
        self.port = free_port()
        self.log = open(os.path.join(logdir, "%s-%d.log" % (name, self.port)), "wb")
        self.proc = subprocess.Popen(command(name, spec, self.port, keepalive),
                                     cwd=server_root(name),
                                     stdout=self.log, stderr=subprocess.STDOUT,
                                     start_new_session=True, env=server_env())
        import psutil
        self.ps = psutil.Process(self.proc.pid)
        self.ready_or_stopped()

    def ready_or_stopped(self):
        """Wait until it answers; stopped again if it never does, or if the
        script is interrupted meanwhile (no caller holds it yet to stop it)."""
        try:
            self.wait_ready()
        except BaseException:
            self.stop()
            raise

    @property
    def url(self):
        return "http://%s:%d/" % (HOST, self.port)

    def wait_ready(self):
        deadline = time.monotonic() + READY_TIMEOUT_SECONDS
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError("%s exited with %s (log: %s)" % (
                    self.name, self.proc.returncode, self.log.name))
            if http_ok(self.port):
                return
            time.sleep(0.05)
        raise RuntimeError("%s not ready in %.0fs (log: %s)" % (
            self.name, READY_TIMEOUT_SECONDS, self.log.name))

    def cpu_seconds(self):
        """Parent + reaped children + live children: all the server's CPU."""
        t = self.ps.cpu_times()
        total = t.user + t.system + t.children_user + t.children_system
        for child in self.ps.children(recursive=True):
            try:
                c = child.cpu_times()
                total += c.user + c.system
            except Exception:   # gone between listing and reading
                pass
        return total

    def zombies(self):
        import psutil
        count = 0
        for child in self.ps.children():
            try:
                count += child.status() == psutil.STATUS_ZOMBIE
            except psutil.NoSuchProcess:
                pass
        return count

    def stop(self):
        """SIGTERM to the server's own process group (its session, started here)."""
        try:
            os.killpg(self.proc.pid, signal.SIGTERM)
            self.proc.wait(STOP_TIMEOUT_SECONDS)
        except subprocess.TimeoutExpired:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait()
        except ProcessLookupError:
            pass
        self.log.close()


def server_env():
    """Our environment, but bytecode may be cached (PYTHONDONTWRITEBYTECODE
    would make every start of ours compile from source, unlike installed peers)."""
    env = dict(os.environ)
    env.pop("PYTHONDONTWRITEBYTECODE", None)
    return env


def http_ok(port):
    try:
        with socket.create_connection((HOST, port), timeout=2) as s:
            s.sendall(b"GET / HTTP/1.1\r\nHost: bench\r\nConnection: close\r\n\r\n")
            return s.recv(64).startswith(b"HTTP/1.")
    except OSError:
        return False


# ======================================================= load generators

def run_wrk(url, clients, seconds, keepalive=False):
    with tempfile.NamedTemporaryFile("w", suffix=".lua", delete=False) as f:
        f.write(WRK_LUA)
    # wrk takes whole seconds only
    cmd = ["wrk", "-t", "1", "-c", str(clients), "-d", "%ds" % max(1, round(seconds)),
           "--timeout", "10s",
           "-s", f.name, url]
    if not keepalive:
        cmd[1:1] = ["-H", "Connection: close"]
    try:
        out = subprocess.run(cmd, capture_output=True, text=True,
                             timeout=seconds + LOAD_TIMEOUT_SLACK_SECONDS).stdout
    finally:
        os.unlink(f.name)
    m = re.search(r"BENCHJSON (\{.*\})", out)
    if not m:
        raise RuntimeError("wrk gave no result:\n" + out)
    r = json.loads(m.group(1))
    errors = r["connect"] + r["read"] + r["write"] + r["status"] + r["timeout"]
    return {"requests": r["requests"], "seconds": r["duration_us"] / 1e6, "errors": errors,
            "p50_ms": r["p50_us"] / 1e3, "p99_ms": r["p99_us"] / 1e3}


def run_ab(url, clients, seconds=None, count=None, keepalive=False):
    """ab by count (-n) or by time (-t); errors are failed plus non-2xx."""
    cmd = ["ab", "-q", "-r", "-s", "10", "-c", str(clients)]
    cmd += ["-n", str(count)] if count else ["-t", "%g" % seconds, "-n", "10000000"]
    if keepalive:
        cmd.append("-k")
    out = subprocess.run(cmd + [url], capture_output=True, text=True,
                         timeout=(seconds or 0) + LOAD_TIMEOUT_SLACK_SECONDS * 2).stdout

    def num(pattern, default=0.0):
        m = re.search(pattern, out, re.M)
        return float(m.group(1)) if m else default
    if not re.search(r"^Complete requests", out, re.M):
        raise RuntimeError("ab gave no result:\n" + out)
    return {"requests": int(num(r"^Complete requests:\s+(\d+)")),
            "seconds": num(r"^Time taken for tests:\s+([\d.]+)"),
            "errors": int(num(r"^Failed requests:\s+(\d+)") + num(r"^Non-2xx responses:\s+(\d+)")),
            "p50_ms": num(r"^\s+50%\s+(\d+)"), "p99_ms": num(r"^\s+99%\s+(\d+)")}


def pick_tool(wanted):
    for tool in ([wanted] if wanted else ["wrk", "ab"]):
        if shutil.which(tool):
            return tool
    return None


def measure(server, tool, clients, seconds, zombie_checks, keepalive=False):
    """One load run: rates, latency, errors, CPU per request, zombies."""
    cpu0 = server.cpu_seconds()
    run = run_wrk if tool == "wrk" else run_ab
    r = run(server.url, clients, seconds, keepalive=keepalive)
    cpu = server.cpu_seconds() - cpu0
    r["rps"] = r["requests"] / r["seconds"] if r["seconds"] else 0.0
    r["cpu_ms_per_req"] = 1e3 * cpu / r["requests"] if r["requests"] else None
    r["zombies_now"] = server.zombies()
    r["zombies_1s"] = None
    zombie_checks.append(threading.Timer(ZOMBIE_RECHECK_SECONDS, recheck_zombies,
                                         (server, r)))
    zombie_checks[-1].start()
    return r


def recheck_zombies(server, result):
    try:
        result["zombies_1s"] = server.zombies()
    except Exception as exc:   # the server is gone: say so rather than guess
        result["zombies_1s"] = "error: %s" % exc


# ======================================================= page faults per connection

FAULT_CONNECTIONS = 600     # sequential connections measured
FAULT_WARMUP = 50           # first: the parent's own first-time work is not counted
FAULT_SETTLE_SECONDS = 0.5  # for the last children to be reaped (cminflt counts reaped ones)


def proc_counters(pid):
    """(minflt, cminflt, CPU s, children's CPU s) from /proc/PID/stat."""
    with open("/proc/%d/stat" % pid) as f:
        fields = f.read().rsplit(")", 1)[1].split()
    tick = os.sysconf("SC_CLK_TCK")
    # After the ")": state ppid ... minflt(7) cminflt(8) majflt cmajflt
    # utime(11) stime(12) cutime(13) cstime(14)
    return (int(fields[7]), int(fields[8]), (int(fields[11]) + int(fields[12])) / tick,
            (int(fields[13]) + int(fields[14])) / tick)


def one_connection(port):
    request = b"GET / HTTP/1.1\r\nHost: bench\r\nConnection: close\r\n\r\n"
    with socket.create_connection((HOST, port), timeout=10) as sock:
        sock.sendall(request)
        while sock.recv(65536):
            pass


def fault_profile(server, count):
    """Minor page faults and CPU per connection, the parent and its (reaped)
    children apart, over ``count`` sequential connections."""
    for _ in range(FAULT_WARMUP):
        one_connection(server.port)
    time.sleep(FAULT_SETTLE_SECONDS)
    before = proc_counters(server.proc.pid)
    for _ in range(count):
        one_connection(server.port)
    time.sleep(FAULT_SETTLE_SECONDS)
    after = proc_counters(server.proc.pid)
    per = [(b - a) / count for a, b in zip(before, after)]
    return {"parent_faults": per[0], "child_faults": per[1],
            "parent_cpu_ms": per[2] * 1e3, "child_cpu_ms": per[3] * 1e3}


def faults_check(apps, say, logdir):
    """Where the difference to the floor is: page faults (copy-on-write) per
    connection in the parent and in the child.  /proc counts in clock ticks:
    the CPU figures are coarse, the fault counts exact."""
    rows = []
    for app in apps:
        floor = "floor+flask" if app == "flask" else "floor"
        for name in (floor, "forkserver"):
            server = Running(name, APPS[app], logdir)
            try:
                row = dict(app=app, server=name, connections=FAULT_CONNECTIONS,
                           **fault_profile(server, FAULT_CONNECTIONS))
            finally:
                server.stop()
            say("  %-6s %-12s parent %5.0f faults %.2f ms | child %5.0f faults %.2f ms" % (
                app, name, row["parent_faults"], row["parent_cpu_ms"], row["child_faults"],
                row["child_cpu_ms"]))
            rows.append(row)
    return rows


# ======================================================= the rounds

def round_order(peers, round_no):
    """Peers rotated by round, so no server always runs right after the floor."""
    k = round_no % len(peers) if peers else 0
    return peers[k:] + peers[:k]


def run_round(app, peers, args, round_no, say, logdir):
    floor = "floor+flask" if app == "flask" else "floor"
    spec = APPS[app]
    servers = {}
    try:
        servers[floor] = Running(floor, spec, logdir)
        for name in peers:
            try:
                servers[name] = Running(name, spec, logdir)
            except RuntimeError as exc:   # one broken peer must not void the round
                say("skipped %s this round: %s" % (name, exc))
        started = [name for name in peers if name in servers]
        return [run_clients(app, floor, round_order(started, round_no), servers, args,
                            round_no, c, say) for c in args.clients]
    finally:
        stop_servers(servers, args)


def run_clients(app, floor, peers, servers, args, round_no, clients, say):
    runs = []
    for position, name in enumerate([floor] + peers + [floor]):
        r = measure(servers[name], args.tool, clients, args.seconds, args.zombie_checks)
        r.update(app=app, server=name, clients=clients, round=round_no,
                 floor_run="first" if position == 0 else
                 "last" if position == len(peers) + 1 else None)
        runs.append(r)
        say("  round %d %-6s c=%-3d %-12s %8.0f req/s  p50 %6.2f ms  p99 %7.2f ms  "
            "errors %d  cpu %.3f ms/req" % (round_no + 1, app, clients, name, r["rps"],
                                             r["p50_ms"], r["p99_ms"], r["errors"],
                                             r["cpu_ms_per_req"] or 0))
    add_ratios(runs, floor)
    return runs


RATIO_KEYS = ("rps", "p50_ms", "p99_ms", "cpu_ms_per_req")


def add_ratios(runs, floor):
    floors = [r for r in runs if r["server"] == floor]
    base = {k: statistics.mean(r[k] for r in floors if r[k] is not None) for k in RATIO_KEYS}
    for r in runs:
        for k in RATIO_KEYS:
            ok = r[k] is not None and base[k]
            r[k + "_ratio"] = r[k] / base[k] if ok else None


def summarize(runs, key_fields=("app", "clients", "server")):
    """Median over rounds of every figure and ratio, per app x clients x server
    (the floor's row: the median of both its runs of every round)."""
    groups = {}
    for r in runs:
        groups.setdefault(tuple(r[k] for k in key_fields), []).append(r)
    rows = []
    for key, rs in groups.items():
        row = dict(zip(key_fields, key), rounds=len(rs))
        for k in ("rps", "p50_ms", "p99_ms", "cpu_ms_per_req", "rps_ratio", "p50_ms_ratio",
                  "p99_ms_ratio", "cpu_ms_per_req_ratio"):
            vals = [r[k] for r in rs if r.get(k) is not None]
            row[k] = statistics.median(vals) if vals else None
        row["errors"] = sum(r["errors"] for r in rs)
        row["zombies_now"] = max(r["zombies_now"] for r in rs)
        row["zombies_1s"] = max((r["zombies_1s"] for r in rs), key=str)
        rows.append(row)
    return rows


# ======================================================= the other sections

def errors_check(args, say, logdir):
    """ab -n 5000 -c 64 against forkserver and the floor: errors and zombies."""
    if not shutil.which("ab"):
        say("skipped the %d-connection check: ab is missing (%s)" % (args.connections, INSTALL_HINT))
        return []
    out = []
    for app in args.apps:
        for name in ("floor+flask" if app == "flask" else "floor", "forkserver"):
            server = Running(name, APPS[app], logdir)
            try:
                r = run_ab(server.url, ERRORS_CLIENTS, count=args.connections)
                r["zombies_now"] = server.zombies()
                time.sleep(ZOMBIE_RECHECK_SECONDS)
                r["zombies_1s"] = server.zombies()
            finally:
                server.stop()
            r.update(app=app, server=name, clients=ERRORS_CLIENTS)
            say("  %s %-12s %d connections at %d clients: %d complete, %d errors, "
                "zombies %d then %d" % (app, name, args.connections, ERRORS_CLIENTS,
                                        r["requests"], r["errors"], r["zombies_now"],
                                        r["zombies_1s"]))
            out.append(r)
    return out


def keepalive_check(args, say, logdir):
    """Flask with keep-alive clients: forkserver --keep-alive vs waitress vs gthread."""
    out = []
    names = available(["forkserver", "waitress", "gthread"], say)
    for round_no in range(args.rounds):
        servers = {}
        try:
            for name in names:
                servers[name] = Running(name, APPS["flask"], logdir, keepalive=True)
            for clients in KEEPALIVE_CLIENTS:
                for name in round_order(names, round_no):
                    r = measure(servers[name], args.tool, clients, args.seconds,
                                args.zombie_checks, keepalive=True)
                    r.update(app="flask", server=name, clients=clients, round=round_no)
                    say("  keep-alive round %d c=%-3d %-10s %8.0f req/s  p99 %6.2f ms  "
                        "errors %d  cpu %.3f ms/req" % (round_no + 1, clients, name, r["rps"],
                                                       r["p99_ms"], r["errors"],
                                                       r["cpu_ms_per_req"] or 0))
                    out.append(r)
        finally:
            stop_servers(servers, args)
    return out


def memory_check(apps, say, logdir):
    """USS/PSS/RSS of a live forkserver child, asleep mid-request; the child
    keeps the collector off, so also with a gc.collect() in the view, as an
    app that turns it back on would run one."""
    out = []
    for app in apps:
        for collect in (False, True):
            for freeze in (True, False):
                m = memory_one(app, freeze, collect, logdir)
                out.append(m)
                say("  memory %-5s gc.collect in view %-3s gc.freeze %-3s child USS %5.2f MB "
                    "PSS %5.2f MB RSS %5.2f MB; parent RSS %5.2f MB" % (
                        app, "yes" if collect else "no", "on" if freeze else "off",
                        m["child_uss_mb"], m["child_pss_mb"], m["child_rss_mb"],
                        m["parent_rss_mb"]))
    return out


def memory_one(app, freeze, collect, logdir):
    mb = 1024.0 * 1024.0
    server = Running("forkserver", SLEEPY_APPS[app], logdir)
    if not freeze:   # restart with the switch: Running builds the command itself
        server.stop()
        server = MemoryServer(app, logdir)
    try:
        wait_no_children(server)   # the readiness probe's child is gone
        parent = server.ps.memory_full_info()
        with socket.create_connection((HOST, server.port), timeout=10) as s:
            s.sendall(b"GET /sleep?s=%g%s HTTP/1.1\r\nHost: bench\r\n\r\n" % (
                MEMORY_SLEEP_SECONDS, b"&gc=1" if collect else b""))
            child = wait_for_child(server)
            time.sleep(MEMORY_SETTLE_SECONDS)
            info = child.memory_full_info()
            s.settimeout(MEMORY_SLEEP_SECONDS + 10)
            answered = s.recv(64).startswith(b"HTTP/1.1 200")
    finally:
        server.stop()
    return {"app": app, "gc_freeze": freeze, "gc_collect_in_view": collect, "answered": answered,
            "child_uss_mb": info.uss / mb, "child_pss_mb": info.pss / mb,
            "child_rss_mb": info.rss / mb, "parent_rss_mb": parent.rss / mb,
            "parent_uss_mb": parent.uss / mb}


class MemoryServer(Running):
    """forkserver with --no-gc-freeze."""

    def __init__(self, app, logdir):
        self.name = "forkserver-nofreeze"
        self.port = free_port()
        self.log = open(os.path.join(logdir, "nofreeze-%d.log" % self.port), "wb")
        cmd = command("forkserver", SLEEPY_APPS[app], self.port) + ["--no-gc-freeze"]
        self.proc = subprocess.Popen(cmd, cwd=ROOT, stdout=self.log, stderr=subprocess.STDOUT,
                                     start_new_session=True, env=server_env())
        import psutil
        self.ps = psutil.Process(self.proc.pid)
        self.ready_or_stopped()


def wait_no_children(server):
    deadline = time.monotonic() + READY_TIMEOUT_SECONDS
    while server.ps.children() and time.monotonic() < deadline:
        time.sleep(0.01)


def wait_for_child(server):
    deadline = time.monotonic() + READY_TIMEOUT_SECONDS
    while time.monotonic() < deadline:
        for kid in server.ps.children():
            try:
                if kid.status() != "zombie":   # not the reaped readiness probe
                    return kid
            except Exception:
                pass
        time.sleep(0.01)
    raise RuntimeError("no child appeared for the sleeping request")


# ======================================================= targets and reports

def row_for(rows, app, clients, server):
    for r in rows:
        if (r["app"], r["clients"], r["server"]) == (app, clients, server):
            return r
    return None


def times(ratio, goal):
    """A ratio to two decimals, or as many more as it takes (up to six) for a
    miss not to be rounded up to the goal: 0.69995 is 0.6999x, not 0.700x."""
    for digits in range(2, 7):
        text = "%.*fx" % (digits, ratio)
        if not ratio < goal <= float(text[:-1]):
            break
    return text


def targets(results):
    """Each target of issues 6 and 17 with the figure measured and whether it
    is met; "forkserver" is the default configuration."""
    rows, out = results["summary"], []

    def add(what, value, goal, met):
        out.append({"target": what, "measured": value, "goal": goal, "met": bool(met)})

    def ratio_target(what, ratio, goal):
        add(what, times(ratio, goal), ">= %gx" % goal, ratio >= goal)
    for c in results["clients"]:
        for app in ("hello", "flask"):   # issue 17: the default is the fast configuration
            d, t = row_for(rows, app, c, "forkserver"), row_for(rows, app, c, "forkserver-tuned")
            if d and t and t["rps"]:
                ratio_target("%s at %d clients, default vs tuned flags" % (app, c),
                             d["rps"] / t["rps"], DEFAULT_VS_TUNED_GOAL)
        for server, goals in RATIO_GOALS:
            r = row_for(rows, "hello", c, server)
            if r and r["rps_ratio"] is not None and "hello" in goals:
                ratio_target("hello at %d clients vs the floor, %s" % (c, server),
                             r["rps_ratio"], goals["hello"])
            f, s = row_for(rows, "flask", c, server), row_for(rows, "flask", c, "stdlib")
            if f and s and s["rps"] and "stdlib" in goals:
                ratio_target("Flask at %d clients vs stdlib forking, %s" % (c, server),
                             f["rps"] / s["rps"], goals["stdlib"])
            if f and f["rps_ratio"] is not None and "floor+flask" in goals:
                ratio_target("Flask at %d clients vs floor+flask, %s" % (c, server),
                             f["rps_ratio"], goals["floor+flask"])
    for c in results["clients"]:
        for app in ("hello", "flask"):
            for label in results.get("checkouts", {}):
                for ours, theirs in checkout_pairs(label, results.get("checkout_rows", ["", "-tuned"])):
                    o, t = row_for(rows, app, c, ours), row_for(rows, app, c, theirs)
                    if o and t and t["rps"]:
                        ratio_target("%s at %d clients, %s vs %s" % (app, c, ours, theirs),
                                     o["rps"] / t["rps"], GUARD_RAIL)
    for r in results["errors_check"]:
        if r["server"] == "forkserver":
            add("%s: %d connections at 64 clients" % (r["app"], r["requests"] + 0),
                "%d errors, %d zombies 1 s after" % (r["errors"], r["zombies_1s"]),
                "0 errors, 0 zombies", r["errors"] == 0 and r["zombies_1s"] == 0
                and r["requests"] >= results["connections"])
    fork_rows = [r for r in rows if r["server"].startswith("forkserver")]
    if fork_rows:
        worst = max(r["zombies_1s"] for r in fork_rows if isinstance(r["zombies_1s"], int))
        add("forkserver zombies 1 s after every run", str(worst), "0", worst == 0)
    ka = keepalive_summary(results["keepalive"])
    for c in KEEPALIVE_CLIENTS:
        f, w = ka.get(("forkserver", c)), ka.get(("waitress", c))
        if f and w:
            add("keep-alive Flask at %d clients vs waitress" % c,
                "%.0f vs %.0f req/s" % (f, w), ">= waitress", f >= w)
    for m in results["memory"]:
        if m["app"] == "flask" and m["gc_freeze"] and not m["gc_collect_in_view"]:
            add("Flask child USS mid-request", "%.2f MB" % m["child_uss_mb"], "<= 4 MB",
                m["child_uss_mb"] <= 4.0)
    return out


def keepalive_summary(runs):
    groups = {}
    for r in runs:
        groups.setdefault((r["server"], r["clients"]), []).append(r["rps"])
    return {k: statistics.median(v) for k, v in groups.items()}


def fmt(value, spec="%.2f"):
    return "-" if value is None else spec % value


def markdown(results):
    lines = ["# bench.py results", "", "- " + "\n- ".join(
        "%s: %s" % kv for kv in results["machine"].items()), ""]
    for app in [a for a in results["apps"] if any(r["app"] == a for r in results["summary"])]:
        lines += ["## %s, Connection: close (median of %d rounds; ratio to the floor "
                  "of the same round)" % (app, results["rounds"]), "",
                  "| clients | server | req/s | x floor | p50 ms | p99 ms | x floor p99 | "
                  "errors | CPU ms/req | x floor CPU | zombies now / 1 s |",
                  "|---|---|---|---|---|---|---|---|---|---|---|"]
        for r in report_rows(results["summary"], app):
            lines.append("| %d | %s | %.0f | %s | %s | %s | %s | %d | %s | %s | %s / %s |" % (
                r["clients"], r["server"], r["rps"], fmt(r["rps_ratio"]), fmt(r["p50_ms"]),
                fmt(r["p99_ms"]), fmt(r["p99_ms_ratio"]), r["errors"],
                fmt(r["cpu_ms_per_req"], "%.3f"), fmt(r["cpu_ms_per_req_ratio"]),
                r["zombies_now"], r["zombies_1s"]))
        lines.append("")
    lines += markdown_extras(results)
    lines += ["## Targets", "", "| target | measured | goal | met |", "|---|---|---|---|"]
    lines += ["| %(target)s | %(measured)s | %(goal)s | %(met)s |" % dict(t, met="yes" if t["met"]
                                                                       else "**NO**")
              for t in results["targets"]]
    return "\n".join(lines) + "\n"


def report_rows(summary, app):
    """One app's rows by clients, forkserver as users run it first (REPORT_ORDER)."""
    rows = [r for r in summary if r["app"] == app]
    return sorted(rows, key=lambda r: (r["clients"], REPORT_ORDER.get(r["server"], 2)))


def markdown_extras(results):
    lines = []
    if results.get("faults"):
        lines += ["## Page faults and CPU per connection (%d sequential connections; "
                  "CPU in clock ticks, so coarse)" % results["faults"][0]["connections"], "",
                  "| app | server | parent faults | parent CPU ms | child faults | child CPU ms |",
                  "|---|---|---|---|---|---|"]
        lines += ["| %s | %s | %.0f | %.2f | %.0f | %.2f |" % (
            r["app"], r["server"], r["parent_faults"], r["parent_cpu_ms"], r["child_faults"],
            r["child_cpu_ms"]) for r in results["faults"]]
        lines.append("")
    if results["errors_check"]:
        lines += ["## %d connections at %d clients (ab)" % (results["connections"], ERRORS_CLIENTS),
                  "", "| app | server | complete | errors | req/s | zombies now / 1 s |",
                  "|---|---|---|---|---|---|"]
        lines += ["| %s | %s | %d | %d | %.0f | %d / %d |" % (
            r["app"], r["server"], r["requests"], r["errors"],
            r["requests"] / r["seconds"] if r["seconds"] else 0, r["zombies_now"],
            r["zombies_1s"]) for r in results["errors_check"]]
        lines.append("")
    if results["keepalive"]:
        lines += ["## Flask with keep-alive clients (every run listed)", "",
                  "| round | clients | server | req/s | p50 ms | p99 ms | errors | CPU ms/req |",
                  "|---|---|---|---|---|---|---|---|"]
        lines += ["| %d | %d | %s | %.0f | %s | %s | %d | %s |" % (
            r["round"] + 1, r["clients"], r["server"], r["rps"], fmt(r["p50_ms"]),
            fmt(r["p99_ms"]), r["errors"], fmt(r["cpu_ms_per_req"], "%.3f"))
            for r in results["keepalive"]]
        lines.append("")
    if results["memory"]:
        lines += ["## Memory of a live child, asleep mid-request", "",
                  "| app | gc.collect() in the view | gc.freeze | child USS MB | child PSS MB "
                  "| child RSS MB | parent RSS MB |", "|---|---|---|---|---|---|---|"]
        lines += ["| %s | %s | %s | %.2f | %.2f | %.2f | %.2f |" % (
            m["app"], "yes" if m["gc_collect_in_view"] else "no",
            "on" if m["gc_freeze"] else "off (--no-gc-freeze)", m["child_uss_mb"],
            m["child_pss_mb"], m["child_rss_mb"], m["parent_rss_mb"]) for m in results["memory"]]
        lines.append("")
    return lines


def machine_info(tool):
    info = {"python": platform.python_version(), "platform": platform.platform(),
            "cpus": os.cpu_count(), "loadavg before": open("/proc/loadavg").read().split()[:3]
            if os.path.exists("/proc/loadavg") else "?", "load generator": tool}
    try:
        with open("/proc/cpuinfo") as f:
            info["cpu"] = next((l.split(":", 1)[1].strip() for l in f
                                if l.startswith("model name")), "?")
    except OSError:
        pass
    from importlib.metadata import PackageNotFoundError, version
    # setproctitle: installed, forkserver's children set their titles, a
    # cost the README's install (no setproctitle) does not pay (performance.md).
    for pkg in ("flask", "werkzeug", "gunicorn", "waitress", "psutil", "setproctitle"):
        try:
            info[pkg] = version(pkg)
        except PackageNotFoundError:
            info[pkg] = "not installed"
    info["imported at start-up"] = startup_fork_modules()
    return info


# Standard modules that register os.register_at_fork handlers when imported:
# every child of a parent that has them runs those handlers, the floor's too.
FORK_HANDLER_MODULES = ("threading", "random")


def startup_fork_modules():
    """How many modules the servers' interpreter has before any server code
    runs, and which of FORK_HANDLER_MODULES among them (site and its .pth
    files import them on some machines).  Those make every child's start
    slower, the floor's as much as anyone's, so ratios to the floor read
    higher than on a machine without them (docs/performance.md, "The floor
    depends on the interpreter's start-up")."""
    probe = "import sys; print(len(sys.modules), *(m for m in %r if m in sys.modules))" % (
        FORK_HANDLER_MODULES,)
    try:
        count, *found = subprocess.run(
            [sys.executable, "-c", probe], env=server_env(), timeout=30,
            capture_output=True, text=True, check=True).stdout.split()
    except (OSError, subprocess.SubprocessError, ValueError):
        return "unknown"
    said = ", ".join(found) + " (every child runs their fork handlers)" if found else "none"
    return "%s; %s modules in all" % (said, count)


# ======================================================= command line

def parse_args(argv):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--quick", action="store_true", help="one short round (under two minutes)")
    p.add_argument("--rounds", type=positive(int), help="interleaved rounds (full: %d)" % FULL_ROUNDS)
    p.add_argument("--seconds", type=positive(float), help="length of one load run "
                   "(full: %g, quick: %g)" % (FULL_SECONDS, QUICK_SECONDS))
    p.add_argument("--clients", type=client_list, default=list(CLIENTS),
                   help="comma-separated concurrent clients (default 1,8,64)")
    p.add_argument("--apps", type=choice_list(list(APPS), "app"), default=list(APPS),
                   help="hello,flask (default both)")
    p.add_argument("--tool", choices=("wrk", "ab"), help="load generator (default: wrk, else ab)")
    p.add_argument("--connections", type=positive(int),
                   help="connections of the ab errors check (full: %d)" % FULL_CONNECTIONS)
    p.add_argument("--memory", action="store_true", help="only the per-child memory report")
    p.add_argument("--skip", type=lambda t: t.split(","), default=[],
                   help="comma-separated sections to skip: "
                        "rounds,errors,keepalive,memory,faults")
    p.add_argument("--servers", type=choice_list(PEERS, "server"), default=list(PEERS),
                   help="comma-separated servers beside the floor (default: %s)" % ",".join(PEERS))
    p.add_argument("--checkout", action="append", default=[], type=checkout_arg,
                   metavar="LABEL=PATH", help="also run the forkserver of another checkout, "
                   "as rows LABEL and LABEL-tuned (repeatable)")
    p.add_argument("--checkout-tuned-only", action="store_true",
                   help="run each --checkout with the tuned flags only (row LABEL-tuned)")
    p.add_argument("--combine", nargs="+", metavar="JSON",
                   help="report the medians of several runs' JSON files, and exit")
    p.add_argument("--out", default=os.path.join(tempfile.gettempdir(), "forkserver-bench"),
                   help="directory for bench-<time>.json and .md (default %(default)s)")
    args = p.parse_args(argv)
    args.rounds = args.rounds or (QUICK_ROUNDS if args.quick else FULL_ROUNDS)
    args.seconds = args.seconds or (QUICK_SECONDS if args.quick else FULL_SECONDS)
    args.connections = args.connections or (QUICK_CONNECTIONS if args.quick else FULL_CONNECTIONS)
    return args


def positive(kind):
    def convert(text):
        try:
            value = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError("not a number: %r" % text) from None
        if value <= 0:
            raise argparse.ArgumentTypeError("must be above 0: %r" % text)
        return value
    return convert


def client_list(text):
    try:
        values = [int(v) for v in text.split(",")]
    except ValueError:
        raise argparse.ArgumentTypeError("not a list of integers: %r" % text) from None
    if not values or min(values) < 1 or max(values) > 1024:
        raise argparse.ArgumentTypeError("clients must be 1..1024: %r" % text)
    return values


def choice_list(choices, what):
    """An argparse type: a comma-separated list of ``choices`` (a ``what``)."""
    def convert(text):
        values = text.split(",")
        bad = [v for v in values if v not in choices]
        if bad:
            raise argparse.ArgumentTypeError("unknown %s %s (choose from %s)" % (
                what, ", ".join(bad), ", ".join(choices)))
        return values
    return convert


def checkout_arg(text):
    label, sep, path = text.partition("=")
    if not sep or not label or not path:
        raise argparse.ArgumentTypeError("expected LABEL=PATH: %r" % text)
    if label in PEERS or label.startswith(("floor", "forkserver")) or label.endswith("-tuned"):
        raise argparse.ArgumentTypeError("label %r is taken by a server of the benchmark" % label)
    if not os.path.isfile(os.path.join(path, "forkserver.py")):
        raise argparse.ArgumentTypeError("no forkserver.py in %r" % path)
    return label, os.path.abspath(path)


def say(line):
    print(line, flush=True)


def main(argv=None):
    args = parse_args(argv)
    if args.combine:
        return combine(args.combine)
    CHECKOUTS.update(args.checkout)
    if args.checkout_tuned_only:
        CHECKOUT_ROWS[:] = ["-tuned"]
    if not has_module("psutil"):
        say("bench.py needs psutil: pip install -e '.[bench]'")
        return 2
    if "flask" in args.apps and not has_module("flask"):
        say("skipped the Flask app: flask is not installed (pip install -e '.[bench]')")
        args.apps.remove("flask")
    args.tool = pick_tool(args.tool)
    if args.tool is None and not args.memory:
        say("no load generator found: " + INSTALL_HINT)
        return 2
    signal.signal(signal.SIGTERM, raise_interrupt)
    try:
        return run_all(args)
    except KeyboardInterrupt:   # every section stops its servers in a finally
        say("bench.py: interrupted; every server it started is stopped")
        return 130


def raise_interrupt(signum, frame):
    """SIGTERM to the script: stop the servers as on Ctrl-C.  A second one
    is ignored, so it cannot cut the stops short."""
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    raise KeyboardInterrupt


def run_all(args):
    started = time.monotonic()
    logdir = tempfile.mkdtemp(prefix="bench-logs-")
    args.zombie_checks = []
    results = {"machine": machine_info(args.tool), "apps": args.apps, "clients": args.clients,
               "rounds": args.rounds, "seconds": args.seconds,
               "connections": args.connections, "quick": args.quick, "runs": [],
               "checkouts": dict(CHECKOUTS), "checkout_rows": list(CHECKOUT_ROWS),
               "errors_check": [], "keepalive": [], "memory": [], "faults": []}
    sections = ["memory"] if args.memory else [
        s for s in ("rounds", "errors", "keepalive", "memory", "faults") if s not in args.skip]
    for section in sections:
        say("== %s" % section)
        SECTIONS[section](args, results, logdir)
    results["summary"] = summarize(results["runs"])
    results["targets"] = targets(results)
    results["elapsed_seconds"] = round(time.monotonic() - started, 1)
    write_reports(args, results)
    shutil.rmtree(logdir, ignore_errors=True)
    return 0


def warm_up(args, logdir):
    """An untimed load on the floor before the first round, as benchmark
    hygiene: round 1 ran slower for every server in the full runs, and what
    ran first in it paid most (docs/performance.md, "Method": this helps
    --quick but did not cure the full run, so the cause is not only that)."""
    server = Running("floor", APPS["hello"], logdir)
    try:
        run = run_wrk if args.tool == "wrk" else run_ab
        run(server.url, WARM_UP_CLIENTS, WARM_UP_SECONDS)
    finally:
        stop_servers({"floor": server}, args)


def section_rounds(args, results, logdir):
    peers = available(args.servers, say)
    for label in CHECKOUTS:
        peers += [label + suffix for suffix in CHECKOUT_ROWS]
    warm_up(args, logdir)
    for round_no in range(args.rounds):
        for app in args.apps:
            for runs in run_round(app, peers, args, round_no, say, logdir):
                results["runs"].extend(runs)


SECTIONS = {
    "rounds": section_rounds,
    "errors": lambda args, results, logdir: results["errors_check"].extend(
        errors_check(args, say, logdir)),
    "keepalive": lambda args, results, logdir: results["keepalive"].extend(
        keepalive_check(args, say, logdir) if "flask" in args.apps else []),
    "memory": lambda args, results, logdir: results["memory"].extend(
        memory_check(args.apps, say, logdir)),
    "faults": lambda args, results, logdir: results["faults"].extend(
        faults_check(args.apps, say, logdir)),
}


def run_figures(results):
    """One run's figures per (app, clients): every server's ratio to the floor,
    and the ratios the targets compare (default vs tuned, Flask vs stdlib, ours
    vs each --checkout)."""
    figures = {}
    for r in results["summary"]:
        if not r["server"].startswith("floor") and r["rps_ratio"] is not None:
            figures[(r["app"], r["clients"], "%s x floor" % r["server"])] = r["rps_ratio"]
    pairs = [("forkserver", "forkserver-tuned"), ("forkserver", "stdlib"),
             ("forkserver", "bare-app"), ("bare-app", "stdlib")]
    for label in results.get("checkouts", {}):
        pairs += checkout_pairs(label, results.get("checkout_rows", ["", "-tuned"]))
    for app in results["apps"]:
        for c in results["clients"]:
            for a, b in pairs:
                x, y = (row_for(results["summary"], app, c, n) for n in (a, b))
                if x and y and y["rps"]:
                    figures[(app, c, "%s / %s" % (a, b))] = x["rps"] / y["rps"]
    return figures


def combine(paths):
    """--combine: the median over runs of each run's figures, with their range."""
    runs = []
    for path in paths:
        try:
            with open(path) as f:
                runs.append(json.load(f))
        except (OSError, ValueError) as exc:
            say("cannot read %s: %s" % (path, exc))
            return 2
    per_run = [run_figures(r) for r in runs]
    keys = sorted(set().union(*per_run), key=lambda k: (k[0], k[1], k[2]))
    lines = ["# bench.py: the median of %d runs" % len(runs), "",
             "runs: " + ", ".join(os.path.basename(p) for p in paths), "",
             "| app | clients | figure | median | min | max | runs |", "|---|---|---|---|---|---|---|"]
    for key in keys:
        values = [f[key] for f in per_run if key in f]
        lines.append("| %s | %d | %s | %.3f | %.3f | %.3f | %d |" % (
            key[0], key[1], key[2], statistics.median(values), min(values), max(values),
            len(values)))
    worst_errors = max((r["errors"] for run in runs for r in run.get("errors_check", [])
                        if r["server"] == "forkserver"), default=None)
    zombies = [r["zombies_1s"] for run in runs for r in run["summary"]
               if r["server"].startswith("forkserver") and isinstance(r["zombies_1s"], int)]
    lines += ["", "forkserver errors at %d clients (ab), worst run: %s; zombies 1 s after a "
              "run, worst: %s" % (ERRORS_CLIENTS, "-" if worst_errors is None else worst_errors,
                                  max(zombies) if zombies else "-")]
    say("\n".join(lines))
    return 0


def write_reports(args, results):
    os.makedirs(args.out, exist_ok=True)
    stem = os.path.join(args.out, "bench-%s%s" % (time.strftime("%Y%m%d-%H%M%S"),
                                                  "-quick" if args.quick else ""))
    text = markdown(results)
    with open(stem + ".json", "w") as f:
        json.dump(results, f, indent=1, default=str)
    with open(stem + ".md", "w") as f:
        f.write(text)
    say("\n" + text)
    say("written: %s.json and %s.md (%.0f s)" % (stem, stem, results["elapsed_seconds"]))


if __name__ == "__main__":
    sys.exit(main())
