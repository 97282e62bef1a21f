#!/usr/bin/env python3
"""responsiveness.py: how late does the parent act while it is under load?

Starts forkserver on a small app, puts steady load on it from
scripts/stress.py (64 clients by default, loopback only), and while the load
runs measures, one after another, how long the parent takes to

    hup       act on SIGHUP: from kill() to the "SIGHUP: reloading" log line
    timeout   kill a hung child: from its --timeout deadline to the connection's end
    header    answer a parked, incomplete head: from --header-timeout to the 408
    pieces    serve a head sent in two pieces: from the second piece to the response
    term      act on SIGTERM: from kill() to the "stopping" log line

and prints each latency in milliseconds, then what the load saw.  A parent
that accepts until its backlog is empty does none of these until the load
stops (seconds); one that bounds each loop turn does them within a turn.

    python scripts/responsiveness.py
    python scripts/responsiveness.py --clients 64 --rounds 5 --json

Every loop is bounded: the load runs --load-seconds at most, each wait has a
timeout, and the server is stopped by its pid.
"""
import argparse
import json
import os
import re
import signal
import socket
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
STRESS = os.path.join(HERE, "stress.py")
FORKSERVER = os.path.join(ROOT, "forkserver.py")
# The parent's deadline comes this long after the child's own
# (forkparts/children.py's TIMEOUT_GRACE_SECONDS, 0 before it existed).
TIMEOUT_GRACE_SECONDS = 1.0
READY_RE = re.compile(r"forkserver ready: pid (\d+) listening on http://127\.0\.0\.1:(\d+)")
TIMEOUT_SECONDS = 1.0          # --timeout of the server measured
HEADER_TIMEOUT_SECONDS = 1.0   # --header-timeout of the server measured
LOAD_WARMUP_SECONDS = 1.0      # load runs this long before the first measure
WAIT_SECONDS = 15.0            # the longest any one measure waits
PIECE_GAP_SECONDS = 0.2        # between the two pieces of a head
POLL_SECONDS = 0.005
ACTIONS = ("hup", "timeout", "header", "pieces", "term")

APP = '''
import signal
import time

def app(environ, start_response):
    if environ["PATH_INFO"] == "/hang":
        # Deaf to the child's own SIGALRM deadline: only the parent ends it.
        signal.signal(signal.SIGALRM, signal.SIG_IGN)
        time.sleep(3600)
    body = b"ok\\n"
    start_response("200 OK", [("Content-Type", "text/plain"),
                              ("Content-Length", str(len(body)))])
    return [body]
'''


class Server:
    """forkserver on the measuring app, its error log in a file."""

    def __init__(self, workdir, extra, forkserver=FORKSERVER):
        with open(os.path.join(workdir, "respapp.py"), "w") as f:
            f.write(APP)
        self.log_path = os.path.join(workdir, "error.log")
        argv = [sys.executable, forkserver, "respapp:app", "--bind", "127.0.0.1:0",
                "--no-access-log", "--error-log", self.log_path,
                "--timeout", str(TIMEOUT_SECONDS),
                "--header-timeout", str(HEADER_TIMEOUT_SECONDS)] + list(extra)
        self.proc = subprocess.Popen(argv, cwd=workdir, stdout=subprocess.PIPE,
                                     stderr=subprocess.STDOUT, text=True)
        line = self.proc.stdout.readline()
        match = READY_RE.search(line)
        if not match:
            self.proc.kill()
            self.proc.wait()
            raise RuntimeError("forkserver did not start: %r" % line)
        self.pid, self.port = int(match.group(1)), int(match.group(2))

    def count(self, text):
        with open(self.log_path, errors="replace") as f:
            return f.read().count(text)

    def wait_log(self, text, before, started):
        """Seconds from `started` until the log holds more than `before` of text."""
        deadline = time.monotonic() + WAIT_SECONDS
        while time.monotonic() < deadline:
            if self.count(text) > before:
                return time.monotonic() - started
            time.sleep(POLL_SECONDS)
        return None

    def stop(self):
        if self.proc.poll() is None:
            os.kill(self.pid, signal.SIGINT)
        try:
            return self.proc.wait(WAIT_SECONDS)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            return self.proc.wait()


def signal_latency(server, sig, text):
    """Seconds from sending sig until the log says text."""
    before = server.count(text)
    started = time.monotonic()
    os.kill(server.pid, sig)
    return server.wait_log(text, before, started)


def connection_end(sock):
    """Read until the peer closes; what it sent (bounded by WAIT_SECONDS)."""
    sock.settimeout(WAIT_SECONDS)
    data = b""
    try:
        while True:
            chunk = sock.recv(65536)
            if not chunk:
                return data
            data += chunk
    except (socket.timeout, ConnectionResetError):
        return data


def timeout_latency(server):
    """Seconds past the parent's --timeout deadline (TIMEOUT_GRACE_SECONDS
    after the child's own, which this app ignores) until a hung child's
    connection ends."""
    with socket.create_connection(("127.0.0.1", server.port), timeout=WAIT_SECONDS) as sock:
        sock.sendall(b"GET /hang HTTP/1.1\r\nHost: x\r\n\r\n")
        sent = time.monotonic()
        connection_end(sock)
        return time.monotonic() - sent - TIMEOUT_SECONDS - TIMEOUT_GRACE_SECONDS


def header_latency(server):
    """Seconds past --header-timeout until an incomplete head gets its 408."""
    with socket.create_connection(("127.0.0.1", server.port), timeout=WAIT_SECONDS) as sock:
        sock.sendall(b"GET / HTTP/1.1\r\n")
        sent = time.monotonic()
        data = connection_end(sock)
        if not data.startswith(b"HTTP/1.1 408"):
            raise RuntimeError("an incomplete head got %r, not 408" % data[:40])
        return time.monotonic() - sent - HEADER_TIMEOUT_SECONDS


def pieces_latency(server):
    """Seconds from the second piece of a head to the end of its response."""
    with socket.create_connection(("127.0.0.1", server.port), timeout=WAIT_SECONDS) as sock:
        sock.sendall(b"GET / HTTP/1.1\r\nHost: x\r\n")
        time.sleep(PIECE_GAP_SECONDS)
        sock.sendall(b"\r\n")
        sent = time.monotonic()
        data = connection_end(sock)
        if not data.startswith(b"HTTP/1.1 200"):
            raise RuntimeError("a head in two pieces got %r, not 200" % data[:40])
        return time.monotonic() - sent


def start_load(port, clients, seconds):
    return subprocess.Popen(
        [sys.executable, STRESS, "--port", str(port), "-c", str(clients), "--total", "1000000",
         "--duration", str(seconds), "--timeout", "10", "--json"],
        stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)


def one_round(clients, load_seconds, extra=(), forkserver=FORKSERVER):
    """Every action once under load; {action: seconds}, plus the load's summary."""
    with tempfile.TemporaryDirectory(prefix="responsiveness-") as workdir:
        server = Server(workdir, extra, forkserver)
        load = start_load(server.port, clients, load_seconds)
        try:
            time.sleep(LOAD_WARMUP_SECONDS)
            result = {
                "hup": signal_latency(server, signal.SIGHUP, "SIGHUP: reloading respapp:app"),
                "timeout": timeout_latency(server),
                "header": header_latency(server),
                "pieces": pieces_latency(server),
                "load_running": load.poll() is None,
                "term": signal_latency(server, signal.SIGTERM, "stopping (graceful)"),
            }
            out, _ = load.communicate(timeout=load_seconds + 30)
            result["load"] = json.loads(out)
            result["exit"] = server.stop()
            return result
        finally:
            if load.poll() is None:
                load.kill()
                load.wait()
            server.stop()


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--clients", type=int, default=64, help="load clients (default 64)")
    p.add_argument("--rounds", type=int, default=3, help="rounds (default 3)")
    p.add_argument("--load-seconds", type=float, default=8.0,
                   help="how long each round's load runs (default 8)")
    p.add_argument("--forkserver", default=FORKSERVER,
                   help="the forkserver.py to measure (another checkout's, to compare)")
    p.add_argument("--json", action="store_true")
    opts = p.parse_args(argv)
    if not 1 <= opts.clients <= 1024 or not 1 <= opts.rounds <= 100 \
            or not 4 <= opts.load_seconds <= 120:
        p.error("--clients 1..1024, --rounds 1..100, --load-seconds 4..120")
    rounds = [one_round(opts.clients, opts.load_seconds, forkserver=opts.forkserver)
              for _ in range(opts.rounds)]
    if opts.json:
        print(json.dumps(rounds, indent=2))
        return 0
    print("%d clients of steady load; latency in ms, per round" % opts.clients)
    for action in ACTIONS:
        values = [r[action] for r in rounds]
        print("  %-8s %s" % (action, "  ".join(
            "late" if v is None else "%6.1f" % (v * 1000) for v in values)))
    for r in rounds:
        load = r["load"]
        print("  load: %d sent, %d completed, %.0f req/s, errors %s; load still running "
              "at the last measure: %s" % (load["sent"], load["completed"],
                                          load["requests_per_second"], load["errors"] or "none",
                                          r["load_running"]))
    return 0


if __name__ == "__main__":
    sys.exit(main())
