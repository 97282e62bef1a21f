#!/usr/bin/env python3
"""Slow-client demonstration: start forkserver on loopback, open TRICKLERS
connections that send one header byte per second, SILENT connections that
send nothing, and SLOW_BODIES connections that send a whole head and then
their body one byte every 5 s (each reconnects at once when the server cuts
it), and meanwhile measure ordinary clients' latency and errors, overall and
from twice the body grace period (--header-timeout) on.  The app reads its
body.  Bounded in time; prints what it actually did.

    python scripts/slow_clients.py [--duration 30] [--tricklers 200] [--silent 200]
    python scripts/slow_clients.py --tricklers 0 --silent 0 --slow-bodies 300 --normal 8
"""
import argparse
import os
import re
import socket
import subprocess
import sys
import tempfile
import threading
import time

import psutil

ROOT = os.path.dirname(os.path.abspath(os.path.dirname(__file__)))
READY_RE = re.compile(rb"listening on http://([0-9.]+):(\d+)")
START_TIMEOUT_SECONDS = 20.0
TRICKLE_INTERVAL_SECONDS = 1.0
NORMAL_INTERVAL_SECONDS = 0.05     # pause between two ordinary requests
NORMAL_TIMEOUT_SECONDS = 10.0
HEADER_TIMEOUT_SECONDS = 10        # the server's documented default
TRICKLE_HEAD = b"GET / HTTP/1.1\r\nHost: example.com\r\nX-Slow: " + b"s" * 4096 + b"\r\n\r\n"
BODY_TRICKLE_SECONDS = 5.0         # one body byte every this
DEFAULT_BODY_BYTES = 1000
APP = '''
def app(environ, start_response):
    body = environ["wsgi.input"].read()     # the app reads its body
    reply = b"read %d\\n" % len(body)
    start_response("200 OK", [("Content-Type", "text/plain"),
                              ("Content-Length", str(len(reply)))])
    return [reply]
'''


def start_server(header_timeout, extra, workdir):
    with open(os.path.join(workdir, "slowapp.py"), "w") as f:
        f.write(APP)
    argv = [sys.executable, os.path.join(ROOT, "forkserver.py"), "slowapp:app",
            "--bind", "127.0.0.1:0", "--no-access-log", "--error-log", os.devnull,
            "--header-timeout", str(header_timeout)] + extra
    proc = subprocess.Popen(argv, cwd=workdir, stdout=subprocess.PIPE)
    line = proc.stdout.readline()
    match = READY_RE.search(line)
    if not match:
        proc.kill()
        raise SystemExit("forkserver did not start: %r" % line)
    return proc, (match.group(1).decode(), int(match.group(2)))


def trickler(addr, stop, stats):
    """One header byte per second; reconnects when the server answers 408."""
    while not stop.is_set():
        try:
            sock = socket.create_connection(addr, timeout=5)
        except OSError:
            stats["connect_errors"] += 1
            stop.wait(TRICKLE_INTERVAL_SECONDS)
            continue
        stats["opened"] += 1
        with sock:
            for i in range(len(TRICKLE_HEAD)):
                try:
                    sock.send(TRICKLE_HEAD[i:i + 1])
                except OSError:
                    stats["ended_by_server"] += 1
                    break
                if stop.wait(TRICKLE_INTERVAL_SECONDS):
                    return


def slow_body(addr, stop, stats, body_bytes):
    """A whole POST head, then its body one byte every BODY_TRICKLE_SECONDS;
    reconnects at once when the server cuts it (as an attacker would)."""
    head = (b"POST / HTTP/1.1\r\nHost: example.com\r\nContent-Type: text/plain\r\n"
            b"Content-Length: %d\r\n\r\n" % body_bytes)
    while not stop.is_set():
        try:
            sock = socket.create_connection(addr, timeout=5)
            sock.sendall(head)
        except OSError:
            stats["connect_errors"] += 1
            stop.wait(0.1)
            continue
        stats["opened"] += 1
        with sock:
            for _ in range(body_bytes):
                try:
                    sock.send(b"b")
                except OSError:
                    stats["ended_by_server"] += 1
                    break
                if stop.wait(BODY_TRICKLE_SECONDS):
                    return


def silent(addr, stop, socks, stats):
    try:
        socks.append(socket.create_connection(addr, timeout=5))
        stats["opened"] += 1
    except OSError:
        stats["connect_errors"] += 1


def normal_clients(addr, stop, latencies, errors, pause):
    """Closed loop: a POST of a small body, its response, the next (after pause)."""
    request = (b"POST / HTTP/1.1\r\nHost: example.com\r\nContent-Type: text/plain\r\n"
               b"Content-Length: 5\r\n\r\nhello")
    while not stop.is_set():
        started = time.monotonic()
        try:
            with socket.create_connection(addr, timeout=NORMAL_TIMEOUT_SECONDS) as sock:
                sock.sendall(request)
                data = b""
                while True:
                    chunk = sock.recv(65536)
                    if not chunk:
                        break
                    data += chunk
            if data.startswith(b"HTTP/1.1 200 "):
                latencies.append((started, time.monotonic() - started))
            else:
                errors.append(data[:40])
        except OSError as exc:
            errors.append(repr(exc))
        if pause:
            stop.wait(pause)


def percentile(values, p):
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(round(p / 100.0 * (len(ordered) - 1))))]


def watch_children(pid, stop, peak):
    parent = psutil.Process(pid)
    while not stop.is_set():
        try:
            peak[0] = max(peak[0], len(parent.children()))
        except psutil.NoSuchProcess:
            return
        stop.wait(0.1)


def run(args):
    extra = ([] if args.accept_filter else ["--no-accept-filter"]) + list(args.server_args)
    with tempfile.TemporaryDirectory(prefix="slow-clients-") as workdir:
        proc, addr = start_server(args.header_timeout, extra, workdir)
        try:
            results = run_clients(args, proc, addr)
        finally:
            proc.terminate()
            proc.wait(30)
    report(args, *results)
    return 0 if results[3] and not results[4] else 1


def run_clients(args, proc, addr):
    """Every client thread for args.duration; what they saw."""
    stop = threading.Event()
    trickle_stats = {"opened": 0, "ended_by_server": 0, "connect_errors": 0}
    body_stats = {"opened": 0, "ended_by_server": 0, "connect_errors": 0}
    silent_stats = {"opened": 0, "connect_errors": 0}
    silent_socks, latencies, errors, peak = [], [], [], [0]
    threads = [threading.Thread(target=trickler, args=(addr, stop, trickle_stats), daemon=True)
               for _ in range(args.tricklers)]
    threads += [threading.Thread(target=slow_body, args=(addr, stop, body_stats, args.body_bytes),
                                 daemon=True) for _ in range(args.slow_bodies)]
    for _ in range(args.silent):
        silent(addr, stop, silent_socks, silent_stats)
    pause = NORMAL_INTERVAL_SECONDS if args.slow_bodies == 0 else 0.0
    threads += [threading.Thread(target=normal_clients, args=(addr, stop, latencies, errors, pause),
                                 daemon=True) for _ in range(args.normal)]
    threads.append(threading.Thread(target=watch_children, args=(proc.pid, stop, peak), daemon=True))
    started = time.monotonic()
    try:
        for thread in threads:
            thread.start()
        time.sleep(args.duration)
    finally:
        stop.set()
        for thread in threads:
            thread.join(NORMAL_TIMEOUT_SECONDS)
        for sock in silent_socks:
            sock.close()
    return trickle_stats, body_stats, silent_stats, latencies, errors, peak[0], started


def report(args, trickle_stats, body_stats, silent_stats, latencies, errors, peak, started):
    print("duration %ss, --header-timeout %ss, accept filter %s, server args %s" % (
        args.duration, args.header_timeout, "on" if args.accept_filter else "off",
        " ".join(args.server_args) or "(defaults)"))
    print("tricklers: %d threads, %d connections opened, %d ended by the server (408), "
          "%d connect errors" % (args.tricklers, trickle_stats["opened"],
                                 trickle_stats["ended_by_server"], trickle_stats["connect_errors"]))
    print("slow bodies (%d bytes, 1 byte per %.0f s): %d threads, %d connections opened, "
          "%d ended by the server, %d connect errors" % (
              args.body_bytes, BODY_TRICKLE_SECONDS, args.slow_bodies, body_stats["opened"],
              body_stats["ended_by_server"], body_stats["connect_errors"]))
    print("silent: %d connections opened, %d connect errors" % (
        silent_stats["opened"], silent_stats["connect_errors"]))
    print("normal clients: %d threads, %d requests ok, %d errors" % (
        args.normal, len(latencies), len(errors)))
    settled = started + 2 * args.header_timeout
    for label, values in (("all", [lat for _, lat in latencies]),
                          ("from 2 x grace on", [lat for at, lat in latencies if at >= settled])):
        if values:
            print("latency ms (%s, %d requests): p50 %.1f  p99 %.1f  max %.1f" % (
                label, len(values), percentile(values, 50) * 1e3,
                percentile(values, 99) * 1e3, max(values) * 1e3))
    print("peak live children: %d" % peak)
    for error in errors[:5]:
        print("  error: %s" % (error,))


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--duration", type=float, default=30.0, help="seconds (default %(default)s)")
    p.add_argument("--tricklers", type=int, default=200)
    p.add_argument("--silent", type=int, default=200)
    p.add_argument("--slow-bodies", type=int, default=0,
                   help="clients that trickle a POST body, one byte every 5 s (default 0)")
    p.add_argument("--body-bytes", type=int, default=DEFAULT_BODY_BYTES,
                   help="their Content-Length (default %(default)s; over 65536 the "
                        "child reads it, not the accept filter)")
    p.add_argument("--normal", type=int, default=4, help="ordinary client threads")
    p.add_argument("--header-timeout", type=float, default=HEADER_TIMEOUT_SECONDS)
    p.add_argument("--no-accept-filter", dest="accept_filter", action="store_false",
                   help="run the server without its accept filter, for comparison")
    p.add_argument("server_args", nargs="*", metavar="-- SERVER_ARG",
                   help="more forkserver options, after --")
    args = p.parse_args(argv)
    if not (0 < args.duration <= 600 and 0 <= args.tricklers + args.slow_bodies + args.silent
            <= 2000 and 1 <= args.normal <= 64 and 1 <= args.body_bytes <= 1 << 30):
        p.error("--duration 0..600, at most 2000 slow clients, 1..64 normal clients")
    return run(args)


if __name__ == "__main__":
    sys.exit(main())
