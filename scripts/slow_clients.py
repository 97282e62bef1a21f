#!/usr/bin/env python3
"""Slow-client demonstration (issue 5): start forkserver on loopback, open
TRICKLERS connections that send one header byte per second and SILENT
connections that send nothing, and meanwhile measure ordinary clients'
latency and errors.  Bounded in time; prints what it actually did.

    python scripts/slow_clients.py [--duration 30] [--tricklers 200] [--silent 200]
"""
import argparse
import os
import re
import socket
import subprocess
import sys
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


def start_server(header_timeout, extra):
    argv = [sys.executable, os.path.join(ROOT, "forkserver.py"), "examples.hello:app",
            "--bind", "127.0.0.1:0", "--no-access-log", "--error-log", os.devnull,
            "--header-timeout", str(header_timeout)] + extra
    proc = subprocess.Popen(argv, cwd=ROOT, stdout=subprocess.PIPE)
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


def silent(addr, stop, socks, stats):
    try:
        socks.append(socket.create_connection(addr, timeout=5))
        stats["opened"] += 1
    except OSError:
        stats["connect_errors"] += 1


def normal_clients(addr, stop, latencies, errors):
    request = b"GET / HTTP/1.1\r\nHost: example.com\r\n\r\n"
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
                latencies.append(time.monotonic() - started)
            else:
                errors.append(data[:40])
        except OSError as exc:
            errors.append(repr(exc))
        stop.wait(NORMAL_INTERVAL_SECONDS)


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
    proc, addr = start_server(args.header_timeout, [] if args.accept_filter else ["--no-accept-filter"])
    stop = threading.Event()
    trickle_stats = {"opened": 0, "ended_by_server": 0, "connect_errors": 0}
    silent_stats = {"opened": 0, "connect_errors": 0}
    silent_socks, latencies, errors, peak = [], [], [], [0]
    threads = [threading.Thread(target=trickler, args=(addr, stop, trickle_stats), daemon=True)
               for _ in range(args.tricklers)]
    for _ in range(args.silent):
        silent(addr, stop, silent_socks, silent_stats)
    threads += [threading.Thread(target=normal_clients, args=(addr, stop, latencies, errors), daemon=True)
                for _ in range(args.normal)]
    threads.append(threading.Thread(target=watch_children, args=(proc.pid, stop, peak), daemon=True))
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
        proc.terminate()
        proc.wait(30)
    report(args, trickle_stats, silent_stats, latencies, errors, peak[0])
    return 0 if latencies and not errors else 1


def report(args, trickle_stats, silent_stats, latencies, errors, peak):
    print("duration %ss, --header-timeout %ss, accept filter %s" % (
        args.duration, args.header_timeout, "on" if args.accept_filter else "off"))
    print("tricklers: %d threads, %d connections opened, %d ended by the server (408), "
          "%d connect errors" % (args.tricklers, trickle_stats["opened"],
                                 trickle_stats["ended_by_server"], trickle_stats["connect_errors"]))
    print("silent: %d connections opened, %d connect errors" % (
        silent_stats["opened"], silent_stats["connect_errors"]))
    print("normal clients: %d threads, %d requests ok, %d errors" % (
        args.normal, len(latencies), len(errors)))
    if latencies:
        print("latency ms: p50 %.1f  p99 %.1f  max %.1f" % (
            percentile(latencies, 50) * 1e3, percentile(latencies, 99) * 1e3, max(latencies) * 1e3))
    print("peak live children: %d" % peak)
    for error in errors[:5]:
        print("  error: %s" % (error,))


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--duration", type=float, default=30.0, help="seconds (default %(default)s)")
    p.add_argument("--tricklers", type=int, default=200)
    p.add_argument("--silent", type=int, default=200)
    p.add_argument("--normal", type=int, default=4, help="ordinary client threads")
    p.add_argument("--header-timeout", type=float, default=HEADER_TIMEOUT_SECONDS)
    p.add_argument("--no-accept-filter", dest="accept_filter", action="store_false",
                   help="run the server without its accept filter, for comparison")
    return run(p.parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())
