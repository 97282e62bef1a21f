#!/usr/bin/env python3
"""Replay tests/malformed.py against forkserver and the peer servers installed
(gunicorn, waitress, werkzeug, wsgiref), each on loopback with the same echo
app, and print a markdown table of what each answered.

    python scripts/compare_servers.py [--timeout SECONDS] [--only NAME,...]

Cells: the status code; ``close`` (closed without a response); ``reset``
(connection reset); ``timeout`` (no answer within --timeout: the server was
still waiting); ``200*`` (200, but the echo shows a check of the case failed,
e.g. a forbidden trailer or the evil Host got through); ``+next`` (the request
appended after the case was answered too: normal pipelining after a request
the server accepted, a desync after one it rejected or framed differently).
"""
import argparse
import importlib.util
import os
import socket
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

from tests import malformed  # noqa: E402

APP = "tests.apps_strict:echo_request"
START_TIMEOUT_SECONDS = 20.0
DEFAULT_CASE_TIMEOUT_SECONDS = 3.0
PARALLEL_CASES = 8
SMUGGLE_WAIT_SECONDS = 0.5     # after a whole response, for a second one
# Status of the first response; forkserver's own header timeout is set below
# the case timeout so its 408s are measured, not guessed.
FORKSERVER_HEADER_TIMEOUT = "1"

WERKZEUG = ("from werkzeug.serving import run_simple; from tests.apps_strict import echo_request; "
            "run_simple('127.0.0.1', {port}, echo_request, threaded=True)")
WSGIREF = ("import socketserver, wsgiref.simple_server as w; from tests.apps_strict import echo_request\n"
           "class S(socketserver.ThreadingMixIn, w.WSGIServer): daemon_threads = True\n"
           "w.make_server('127.0.0.1', {port}, echo_request, server_class=S).serve_forever()")


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def commands(port):
    """name -> argv for each server whose package is installed."""
    py = sys.executable
    found = {"forkserver": [py, os.path.join(ROOT, "forkserver.py"), APP, "--bind",
                            "127.0.0.1:%d" % port, "--keep-alive", "2", "--no-access-log",
                            "--header-timeout", FORKSERVER_HEADER_TIMEOUT, "--read-timeout", "1"]}
    if importlib.util.find_spec("gunicorn"):
        found["gunicorn"] = [py, "-m", "gunicorn", "-b", "127.0.0.1:%d" % port, "-k", "gthread",
                             "--threads", str(PARALLEL_CASES * 2), APP]
    if importlib.util.find_spec("waitress"):
        found["waitress"] = [py, "-m", "waitress", "--listen=127.0.0.1:%d" % port,
                             "--threads=%d" % (PARALLEL_CASES * 2), APP]
    if importlib.util.find_spec("werkzeug"):
        found["werkzeug"] = [py, "-c", WERKZEUG.format(port=port)]
    found["wsgiref"] = [py, "-c", WSGIREF.format(port=port)]
    return found


def wait_listening(port, proc):
    deadline = time.monotonic() + START_TIMEOUT_SECONDS
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError("server exited with %s" % proc.returncode)
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
            return
        except OSError:
            time.sleep(0.1)
    raise RuntimeError("server did not listen within %ss" % START_TIMEOUT_SECONDS)


def has_final_response(data):
    """True once data holds a whole non-1xx response (head and Content-Length body)."""
    pos = 0
    while True:
        end = data.find(b"\r\n\r\n", pos)
        if end == -1 or not data.startswith(b"HTTP/1.", pos):
            return False
        head = data[pos:end].lower()
        if not head[9:10] == b"1":
            length = head.partition(b"\r\ncontent-length:")[2].split(b"\r\n")[0].strip()
            return len(data) >= end + 4 + int(length or b"0")
        pos = end + 4


def probe(case):
    if case.eof or case.expect in (200, 408, malformed.CLOSE):
        return case.raw
    return case.raw + malformed.SMUGGLED


def exchange(port, raw, eof, timeout):
    """Bytes received until close or timeout, and how it ended."""
    sock = socket.create_connection(("127.0.0.1", port), timeout=timeout)
    ended = "close"
    data = b""
    deadline = time.monotonic() + timeout
    try:
        try:
            sock.sendall(raw)
            if eof:
                sock.shutdown(socket.SHUT_WR)
        except OSError:
            pass
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                ended = "timeout"
                break
            sock.settimeout(left)
            try:
                chunk = sock.recv(65536)
            except socket.timeout:
                ended = "timeout"
                break
            except ConnectionResetError:
                ended = "reset"
                break
            if not chunk:
                break
            data += chunk
            if b"/smuggled" in data or data.count(b"HTTP/1.") >= 2:
                break
            if has_final_response(data):
                # A keep-alive server: wait a little for a smuggled second answer.
                deadline = min(deadline, time.monotonic() + SMUGGLE_WAIT_SECONDS)
    finally:
        sock.close()
    return data, ended


def classify(case, data, ended):
    statuses = [int(line[9:12]) for line in data.split(b"\r\n")
                if line.startswith(b"HTTP/1.") and line[9:12].isdigit()]
    statuses = [s for s in statuses if s >= 200]
    if not statuses:
        return ended
    cell = str(statuses[0])
    if statuses[0] == 200 and (any(t not in data for t in case.present)
                               or any(t in data for t in case.absent)):
        cell += "*"
    if len(statuses) > 1 or b"path=/smuggled" in data:
        cell += " +next"
    return cell


def run_server(name, argv, port, cases, timeout):
    proc = subprocess.Popen(argv, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            start_new_session=True)
    try:
        wait_listening(port, proc)
        with ThreadPoolExecutor(PARALLEL_CASES) as pool:
            cells = list(pool.map(lambda c: classify(c, *exchange(port, probe(c), c.eof, timeout)),
                                  cases))
        return dict(zip((c.name for c in cases), cells))
    finally:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def expected(case):
    return str(case.expect)


def table(cases, results, names):
    out = ["| case | rule | RFC | expected | " + " | ".join(names) + " |",
           "|---|---|---|---|" + "---|" * len(names)]
    for case in cases:
        cells = [results[n][case.name] for n in names]
        out.append("| %s | %s | %s | %s | %s |" % (case.name, case.rule, case.rfc, expected(case),
                                                   " | ".join(cells)))
    return "\n".join(out)


def summary(cases, results, names):
    lines = ["", "| server | answered as expected | timeouts | resets | next request served |", "|---|---|---|---|---|"]
    for n in names:
        cells = [results[n][c.name] for c in cases]
        same = sum(cell == expected(c) for c, cell in zip(cases, cells))
        lines.append("| %s | %d / %d | %d | %d | %d |" % (
            n, same, len(cases), cells.count("timeout"), cells.count("reset"),
            sum("+next" in c for c in cells)))
    return "\n".join(lines)


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--timeout", type=float, default=DEFAULT_CASE_TIMEOUT_SECONDS,
                   help="seconds to wait for each answer (default %(default)s)")
    p.add_argument("--only", help="comma-separated server names")
    args = p.parse_args(argv)
    cases = malformed.CASES
    results, names = {}, []
    for name in commands(0):
        if args.only and name not in args.only.split(","):
            continue
        port = free_port()
        started = time.monotonic()
        results[name] = run_server(name, commands(port)[name], port, cases, args.timeout)
        names.append(name)
        print("%s: %d cases in %.1fs" % (name, len(cases), time.monotonic() - started), file=sys.stderr)
    print(table(cases, results, names))
    print(summary(cases, results, names))
    return 0


if __name__ == "__main__":
    sys.exit(main())
