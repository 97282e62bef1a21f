"""scripts/stress.py: latencies labelled as of completed connections with the
failures beside them, --watch counting the server's zombies from /proc, and
--trace-log turning --trace=process timestamps into zombie lifetimes.

A small server in the test answers, resets or ignores each connection by the
order it accepts them, so the failures are known exactly; the trace logs are
written in the --trace contract's format (`<T> [<PID>] <text>`).
"""
import json
import os
import re
import socket
import struct
import subprocess
import sys
import threading

import pytest

from tests import conftest
from tests.conftest import IN_CI, ROOT

STRESS = os.path.join(ROOT, "scripts", "stress.py")
FORKSERVER = os.path.join(ROOT, "forkserver.py")
RUN_TIMEOUT_SECONDS = 60
ACCEPT_POLL_SECONDS = 0.1
RESPONSE = b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nConnection: close\r\n\r\nok"


class ScriptedServer:
    """Connection i (in accept order) gets behaviours[i % len(behaviours)]:
    'ok' a 200, 'reset' an RST after reading the request, 'hang' nothing."""

    def __init__(self, behaviours, connections):
        self.behaviours, self.connections = behaviours, connections
        self.listener = socket.create_server(("127.0.0.1", 0), backlog=64)
        self.port = self.listener.getsockname()[1]
        self.held = []
        self.stopping = threading.Event()
        self.listener.settimeout(ACCEPT_POLL_SECONDS)
        self.thread = threading.Thread(target=self.serve, daemon=True)
        self.thread.start()

    def serve(self):
        i = 0
        while i < self.connections and not self.stopping.is_set():
            try:
                conn, _ = self.listener.accept()
            except socket.timeout:
                continue
            self.answer(i, conn)
            i += 1

    def answer(self, i, conn):
        conn.settimeout(10)
        conn.recv(65536)
        what = self.behaviours[i % len(self.behaviours)]
        if what == "ok":
            conn.sendall(RESPONSE)
            conn.close()
        elif what == "reset":
            conn.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            conn.close()
        else:
            self.held.append(conn)

    def close(self):
        self.stopping.set()
        self.thread.join(RUN_TIMEOUT_SECONDS)
        for conn in self.held:
            conn.close()
        self.listener.close()


@pytest.fixture
def scripted():
    servers = []

    def start(behaviours, connections):
        servers.append(ScriptedServer(behaviours, connections))
        return servers[-1]
    yield start
    for server in servers:
        server.close()


def stress(*args):
    return subprocess.run([sys.executable, STRESS] + [str(a) for a in args],
                          capture_output=True, text=True, timeout=RUN_TIMEOUT_SECONDS, cwd=ROOT)


def line_starting(text, prefix):
    (line,) = [l for l in text.splitlines() if l.startswith(prefix)]
    return line


# ------------------------------------------------- percentiles of completed, failures beside

def test_percentiles_are_labelled_completed_only_with_timeouts_and_resets_beside(scripted):
    server = scripted(["ok", "reset", "hang"], 9)
    out = stress("--port", server.port, "-c", 9, "--total", 9, "--timeout", 1)
    assert out.returncode == 1, out.stdout + out.stderr
    latency = line_starting(out.stdout, "latency of ")
    assert re.fullmatch(r"latency of 3 completed \(of 9\): p50 [\d.]+ ms, p99 [\d.]+ ms, "
                        r"max [\d.]+ ms \| failed 6: timeout 3, reset 3, refused 0, other 0",
                        latency), latency
    assert "completed requests/s" in out.stdout


def test_the_json_says_what_the_latencies_are_of_and_counts_failures(scripted):
    server = scripted(["ok", "hang"], 4)
    out = stress("--port", server.port, "-c", 4, "--total", 4, "--timeout", 1, "--json")
    summary = json.loads(out.stdout)
    assert summary["latency_of"] == "completed connections only"
    assert summary["completed"] == 2 and summary["p50_ms"] is not None
    assert summary["failures"] == {"timeout": 2, "reset": 0, "refused": 0, "other": 0}


def test_refused_connections_have_no_latency_and_are_counted():
    with socket.create_server(("127.0.0.1", 0)) as s:
        port = s.getsockname()[1]            # closed again: nobody listens there
    out = stress("--port", port, "-c", 2, "--total", 4)
    assert out.returncode == 1
    assert ("latency of 0 completed (of 4): none | failed 4: timeout 0, reset 0, refused 4, "
            "other 0") in out.stdout.splitlines()


# ------------------------------------------------- --watch PID: zombies from /proc

def test_watch_counts_the_zombies_a_reaperless_server_leaves(start_server):
    server = start_server("tests.apps:hello", "--reaper", "none")   # lab: nobody reaps
    out = stress("--port", server.port, "-c", 6, "--total", 6, "--watch", server.pid)
    assert out.returncode == 0, out.stdout + out.stderr
    watch = line_starting(out.stdout, "zombies of %d " % server.pid)
    match = re.fullmatch(r"zombies of \d+ \(sampled every 10 ms from /proc, (\d+) samples\): "
                         r"max (\d+) at once, (\d+) samples with zombies", watch)
    assert match, watch
    samples, most, with_zombies = map(int, match.groups())
    assert most == 6 == len(conftest.zombies_of(server.ps))
    assert 1 <= with_zombies <= samples
    assert server.stop() == 0                 # before the fixture's zombie check


def test_watch_of_a_pid_that_is_not_there_is_a_usage_error(scripted):
    server = scripted(["ok"], 1)
    out = stress("--port", server.port, "--total", 1, "-c", 1, "--watch", 4194000)
    assert out.returncode == 2 and "--watch 4194000: no such process" in out.stderr
    assert "Traceback" not in out.stderr


# ------------------------------------------------- --trace-log: zombie lifetimes

def lifetimes_trace():
    """100 children with zombie lifetimes of 10, 20 ... 1000 us; two never
    reaped; one killed (no exit line).  Lines of different pids interleaved."""
    lines = ["forkserver ready: pid 10 listening on http://127.0.0.1:1"]
    t = 5000.0
    for i in range(1, 101):
        child = 1000 + i
        lines += ["%.6f [10] fork: child %d for 127.0.0.1:%d" % (t, child, 40000 + i),
                  "%.6f [10] SIGCHLD received" % (t + 0.002 + i * 1e-5),
                  "%.6f [%d] exit: status 0" % (t + 0.002, child),
                  "%.6f [10] reaped %d: exited with status 0" % (t + 0.002 + i * 1e-5, child)]
        t += 0.003
    lines += ["%.6f [10] fork: child 2001 for 127.0.0.1:1" % t,
              "%.6f [2001] exit: status 0" % (t + 0.001),
              "%.6f [10] fork: child 2002 for 127.0.0.1:2" % (t + 0.002),
              "%.6f [2002] exit: status 0" % (t + 0.003),
              "%.6f [10] fork: child 2003 for 127.0.0.1:3" % (t + 0.004),
              "%.6f [10] reaped 2003: killed by SIGKILL" % (t + 0.005)]
    return "\n".join(lines) + "\n"


def test_trace_log_reports_zombie_lifetime_max_p99_and_the_never_reaped(scripted, tmp_path):
    server = scripted(["ok"], 1)
    trace = tmp_path / "trace.log"
    trace.write_text(lifetimes_trace())
    out = stress("--port", server.port, "-c", 1, "--total", 1, "--trace-log", trace)
    assert out.returncode == 0, out.stdout + out.stderr
    assert ("zombie lifetime (reap T - exit T, from trace.log): 103 children, 100 reaped, "
            "max 1.000 ms, p99 0.990 ms; never reaped 2; no exit line 1; resolution 1 us "
            "(+ exit line to _exit)") in out.stdout.splitlines(), out.stdout


def test_trace_log_json_fields(scripted, tmp_path):
    server = scripted(["ok"], 1)
    trace = tmp_path / "trace.log"
    trace.write_text(lifetimes_trace())
    out = stress("--port", server.port, "-c", 1, "--total", 1, "--trace-log", trace, "--json")
    z = json.loads(out.stdout)["zombie_lifetime"]
    assert (z["count"], z["max_ms"], z["p99_ms"]) == (100, 1.0, 0.99)
    assert z["never_reaped_pids"] == [2001, 2002] and z["resolution_us"] == 1


@pytest.mark.parametrize("text, message", [
    ("[5] fork: child 6 for 127.0.0.1:1\n", "--trace-log: line 1: a trace line without a "
                                            "timestamp"),
    ("just a log line\n", "--trace-log: no --trace=process lines in"),
    (None, "--trace-log %s: no such file"),
])
def test_a_bad_trace_log_is_a_usage_error_naming_what_is_wrong(tmp_path, text, message):
    trace = tmp_path / "trace.log"
    if text is not None:
        trace.write_text(text)
    with socket.create_server(("127.0.0.1", 0)) as s:
        port = s.getsockname()[1]
    out = stress("--port", port, "-c", 1, "--total", 1, "--trace-log", trace)
    assert out.returncode == 2 and (message.replace("%s", str(trace))) in out.stderr, out.stderr
    assert "Traceback" not in out.stderr


# ------------------------------------------------- live: this checkout's server

def server_has_trace_modes():
    """The server takes --trace=process (the contract of issue 18)."""
    out = subprocess.run([sys.executable, FORKSERVER, "--trace=process", "--help"],
                         capture_output=True, text=True, timeout=RUN_TIMEOUT_SECONDS, cwd=ROOT)
    return out.returncode == 0


@pytest.mark.parametrize("reaper", ["loop", "none"])
def test_live_zombie_lifetimes_tell_the_reapers_apart(start_server, reaper):
    if not server_has_trace_modes() and not IN_CI:
        pytest.skip("this checkout's server has no --trace=process yet")
    server = start_server("tests.apps:hello", "--trace=process", "--reaper", reaper)
    out = stress("--port", server.port, "-c", 8, "--total", 40, "--trace-log",
                 server.error_log, "--json")
    assert out.returncode == 0, out.stdout + out.stderr
    z = json.loads(out.stdout)["zombie_lifetime"]
    assert z["children"] >= 40                   # the warm-up may add its own
    if reaper == "loop":
        assert z["never_reaped"] == 0 and z["count"] >= 40
    else:
        assert z["never_reaped"] >= 40
    assert server.stop() == 0
