#!/usr/bin/env python3
"""stress.py: N concurrent clients x M connections each, against loopback only.

The tutorial's client claimed to open many connections but exited after the
first; this one opens every connection it counts, sends one request on each,
reads the whole response, and reports what really happened:

    sent        connections opened and request written
    completed   responses read to the end with the expected status
    errors      by kind: refused, reset, timeout, status NNN, short response...
    req/s and p50/p99/max latency (connect to last byte) of the COMPLETED
                connections only, with the failures counted beside them: a
                timed-out connection has no latency, so it is not in them

    latency of 356 completed (of 500): p50 52.0 ms, p99 180.1 ms, max 200.3 ms | failed 144: timeout 144, reset 0, refused 0, other 0

--watch PID samples the server's zombies itself while the load runs (and
WATCH_TAIL_SECONDS after): the children of PID in state Z, read from
/proc/PID/task/PID/children and /proc/CHILD/stat every --watch-interval:

    zombies of 1234 (sampled every 10 ms from /proc, 212 samples): max 3 at once, 17 samples with zombies

--trace-log FILE reads the server's stderr when it runs with --trace=process
(after the load, once TRACE_SETTLE_SECONDS have let the last reaps be
written) and reports each child's zombie lifetime, T(reaped C) - T(exit: C)
from the two processes' CLOCK_MONOTONIC timestamps: the number that tells a
correct reaper (well under a millisecond) from a lazy one:

    zombie lifetime (reap T - exit T, from trace.log): 300 children, 300 reaped, max 0.412 ms, p99 0.300 ms; never reaped 0; no exit line 0; resolution 1 us (+ exit line to _exit)

It exits 1 if any connection failed, 2 on bad usage (a --watch PID that is
not there, a --trace-log without --trace=process lines).  Every loop is
bounded: CLIENTS x CONNECTIONS connections at most, each within --timeout,
the whole run within --max-seconds, the watcher by the run.

    python scripts/stress.py --port 8888 --concurrency 64 --connections 80
    python scripts/stress.py --port 8888 --concurrency 64 --total 5000 --json
    python scripts/stress.py --port 8888 --concurrency 64 --total 100000 --duration 10
    python forkserver.py --trace=process --reaper once tests.apps:hello 2> trace.log &
    python scripts/stress.py --port 8888 -c 32 --total 300 --watch $! --trace-log trace.log
"""
import argparse
import asyncio
import ipaddress
import json
import os
import socket
import sys
import threading
import time

HERE = os.path.dirname(os.path.abspath(__file__))
if HERE not in sys.path:
    sys.path.insert(0, HERE)

import tracelog          # noqa: E402 - the --trace contract, shared with timeline.py

DEFAULT_CONCURRENCY = 64
DEFAULT_CONNECTIONS = 10          # per client
DEFAULT_TIMEOUT_SECONDS = 10.0    # per connection: connect, send, read to EOF
DEFAULT_MAX_SECONDS = 300.0       # the whole run
MAX_CONCURRENCY = 1024            # one fd each: stay well under a default ulimit
MAX_TOTAL_CONNECTIONS = 1000000
MAX_RESPONSE_BYTES = 16 * 1024 * 1024
READ_BYTES = 64 * 1024
EXIT_OK, EXIT_FAILED, EXIT_USAGE = 0, 1, 2
FAILURE_KINDS = ("timeout", "reset", "refused")   # named beside the latencies; rest: other
DEFAULT_WATCH_INTERVAL_SECONDS = 0.01
MIN_WATCH_INTERVAL_SECONDS = 0.001   # each sample reads a few /proc files
WATCH_TAIL_SECONDS = 0.2             # a child exits just after its last byte: look on
TRACE_SETTLE_SECONDS = 0.2           # the loop reaper's last lines reach the log


class Results:
    """What the clients saw; filled in by every connection."""

    def __init__(self):
        self.started = 0.0
        self.planned = 0        # connections the clients set out to make
        self.sent = 0
        self.completed = 0
        self.errors = {}
        self.statuses = {}
        self.latencies = []

    def error(self, kind):
        self.errors[kind] = self.errors.get(kind, 0) + 1

    def summary(self, planned, elapsed):
        lat = sorted(self.latencies)
        return {
            "planned": planned, "sent": self.sent, "completed": self.completed,
            "failed": planned - self.completed, "errors": dict(sorted(self.errors.items())),
            "statuses": {str(k): v for k, v in sorted(self.statuses.items())},
            "elapsed_seconds": round(elapsed, 3),
            "requests_per_second": round(self.completed / elapsed, 1) if elapsed > 0 else 0.0,
            "latency_of": "completed connections only",
            "p50_ms": percentile_ms(lat, 50), "p99_ms": percentile_ms(lat, 99),
            "max_ms": round(lat[-1] * 1000, 2) if lat else None,
            "failures": failures_by_kind(self.errors, planned - self.completed),
        }


def failures_by_kind(errors, failed):
    """timeout, reset, refused and the rest as other: what the latencies leave out."""
    named = {kind: errors.get(kind, 0) for kind in FAILURE_KINDS}
    named["other"] = failed - sum(named.values())
    return named


def percentile_ms(ordered, pct):
    """Nearest-rank percentile of sorted seconds, in milliseconds."""
    if not ordered:
        return None
    rank = max(0, min(len(ordered) - 1, -(-pct * len(ordered) // 100) - 1))
    return round(ordered[rank] * 1000, 2)


def parse_status(data):
    """Status code from 'HTTP/1.x NNN ...', or None if it is not a response."""
    line = data.split(b"\r\n", 1)[0]
    parts = line.split(b" ", 2)
    if len(parts) < 2 or not parts[0].startswith(b"HTTP/1.") or not parts[1].isdigit():
        return None
    return int(parts[1])


async def one_connection(opts, request, results):
    started = time.monotonic()
    try:
        reader, writer = await asyncio.open_connection(opts.host, opts.port)
    except ConnectionRefusedError:
        return results.error("refused")
    except OSError as exc:
        return results.error("connect: %s" % (exc.strerror or type(exc).__name__))
    try:
        writer.write(request)
        await writer.drain()
        results.sent += 1
        data = await reader.read(MAX_RESPONSE_BYTES)
        while data and len(data) < MAX_RESPONSE_BYTES:
            more = await reader.read(READ_BYTES)
            if not more:
                break
            data += more
    except ConnectionResetError:
        return results.error("reset")
    except OSError as exc:
        return results.error("io: %s" % (exc.strerror or type(exc).__name__))
    finally:
        writer.close()
    record_response(data, opts, results, time.monotonic() - started)


def record_response(data, opts, results, latency):
    status = parse_status(data)
    if status is None:
        return results.error("empty response" if not data else "not an HTTP response")
    results.statuses[status] = results.statuses.get(status, 0) + 1
    if status != opts.expect_status:
        return results.error("status %d" % status)
    if b"\r\n\r\n" not in data:
        return results.error("short response")
    results.completed += 1
    results.latencies.append(latency)


async def client(opts, count, request, results, stop_at):
    """One client: its connections one after another, never past stop_at.
    With --duration it starts none after that and counts only those it
    started: steady load for a time, every connection given its --timeout."""
    for _ in range(count):
        if opts.duration and time.monotonic() >= results.started + opts.duration:
            return
        results.planned += 1
        left = stop_at - time.monotonic()
        if left <= 0:
            results.error("not started: --max-seconds reached")
            continue
        try:
            await asyncio.wait_for(one_connection(opts, request, results),
                                   min(opts.timeout, left))
        except asyncio.TimeoutError:
            results.error("timeout")


async def run(opts):
    request = ("%s %s HTTP/1.1\r\nHost: %s:%d\r\nConnection: close\r\n"
               "User-Agent: forkserver-stress\r\n\r\n" % (
                   opts.method, opts.path, opts.host, opts.port)).encode("latin-1")
    results = Results()
    started = results.started = time.monotonic()
    stop_at = started + opts.max_seconds
    counts = connections_per_client(opts)
    await asyncio.gather(*(client(opts, n, request, results, stop_at) for n in counts))
    return results.summary(results.planned, time.monotonic() - started)


def connections_per_client(opts):
    """--total N shares N among the clients; else each makes --connections."""
    if opts.total is None:
        return [opts.connections] * opts.concurrency
    share, extra = divmod(opts.total, opts.concurrency)
    return [share + (i < extra) for i in range(opts.concurrency)]


def check_loopback(host):
    """Load goes to this machine only (house rule): resolve and insist on loopback."""
    try:
        infos = socket.getaddrinfo(host, None, type=socket.SOCK_STREAM)
    except socket.gaierror as exc:
        raise SystemExit(usage_error("cannot resolve %r: %s" % (host, exc.strerror)))
    for info in infos:
        if not ipaddress.ip_address(info[4][0].split("%")[0]).is_loopback:
            raise SystemExit(usage_error("--host %r is not a loopback address: "
                                         "stress.py only loads this machine" % host))


def usage_error(message):
    sys.stderr.write("stress.py: error: %s\n" % message)
    return EXIT_USAGE


def bounded_int(low, high):
    def convert(text):
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError("%r is not a whole number" % text) from None
        if not low <= value <= high:
            raise argparse.ArgumentTypeError("%d is not between %d and %d" % (value, low, high))
        return value
    return convert


def positive_float(text):
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError("%r is not a number" % text) from None
    if not value > 0:
        raise argparse.ArgumentTypeError("%r must be more than 0" % text)
    return value


def build_parser():
    p = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0], epilog=__doc__.split("\n\n", 1)[1],
        formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--host", default="127.0.0.1", help="loopback address (default %(default)s)")
    p.add_argument("--port", type=bounded_int(1, 65535), default=8888)
    p.add_argument("--path", default="/", help="request target (default %(default)s)")
    p.add_argument("--method", default="GET", choices=("GET", "HEAD"))
    p.add_argument("-c", "--concurrency", type=bounded_int(1, MAX_CONCURRENCY),
                   default=DEFAULT_CONCURRENCY, help="clients at once (default %(default)s)")
    p.add_argument("-n", "--connections", type=bounded_int(1, MAX_TOTAL_CONNECTIONS),
                   default=DEFAULT_CONNECTIONS, help="connections per client, one after "
                   "another (default %(default)s)")
    p.add_argument("--total", type=bounded_int(1, MAX_TOTAL_CONNECTIONS), default=None,
                   help="connections in all, shared among the clients (instead of -n)")
    p.add_argument("--timeout", type=positive_float, default=DEFAULT_TIMEOUT_SECONDS,
                   help="seconds per connection (default %(default)s)")
    p.add_argument("--max-seconds", type=positive_float, default=DEFAULT_MAX_SECONDS,
                   help="stop starting connections after this (default %(default)s)")
    p.add_argument("--duration", type=positive_float, default=None,
                   help="steady load: start connections for this many seconds (bounded "
                        "by -n/--total), then let those in flight finish")
    p.add_argument("--expect-status", type=bounded_int(100, 599), default=200,
                   help="the status that counts as success (default %(default)s)")
    p.add_argument("--json", action="store_true", help="print the summary as JSON")
    p.add_argument("--watch", type=bounded_int(1, 2**22), metavar="PID", default=None,
                   help="sample the zombies among PID's children from /proc during the run")
    p.add_argument("--watch-interval", type=positive_float, metavar="SECONDS",
                   default=DEFAULT_WATCH_INTERVAL_SECONDS,
                   help="seconds between --watch samples (default %(default)s)")
    p.add_argument("--trace-log", metavar="FILE", default=None,
                   help="the server's stderr with --trace=process: report zombie lifetimes")
    return p


def print_summary(s):
    print("sent %d of %d planned connections; completed %d; failed %d" % (
        s["sent"], s["planned"], s["completed"], s["failed"]))
    for kind, count in s["errors"].items():
        print("  error %-30s %d" % (kind, count))
    print("statuses: %s" % (", ".join("%s x%d" % kv for kv in s["statuses"].items()) or "none"))
    print("%.1f completed requests/s over %.2fs" % (s["requests_per_second"],
                                                     s["elapsed_seconds"]))
    print(latency_line(s))
    if "watch" in s:
        print(watch_line(s["watch"]))
    if "zombie_lifetime" in s:
        print(lifetime_line(s["zombie_lifetime"]))


def latency_line(s):
    """The percentiles, named as of the completed connections, the failures beside."""
    if s["completed"]:
        figures = "p50 %s ms, p99 %s ms, max %s ms" % (s["p50_ms"], s["p99_ms"], s["max_ms"])
    else:
        figures = "none"
    f = s["failures"]
    return ("latency of %d completed (of %d): %s | failed %d: timeout %d, reset %d, "
            "refused %d, other %d" % (s["completed"], s["planned"], figures, s["failed"],
                                     f["timeout"], f["reset"], f["refused"], f["other"]))


def watch_line(w):
    gone = "; the server exited during the run" if w["gone"] else ""
    return ("zombies of %d (sampled every %g ms from /proc, %d samples): max %d at once, "
            "%d samples with zombies%s" % (w["pid"], w["interval_ms"], w["samples"],
                                           w["max_zombies"], w["samples_with_zombies"], gone))


def lifetime_line(z):
    if z["count"]:
        figures = "max %.3f ms, p99 %.3f ms" % (z["max_ms"], z["p99_ms"])
    else:
        figures = "no child both exited and reaped in the trace"
    return ("zombie lifetime (reap T - exit T, from %s): %d children, %d reaped, %s; "
            "never reaped %d; no exit line %d; resolution %d us (+ exit line to _exit)"
            % (z["source"], z["children"], z["count"], figures, z["never_reaped"],
               z["no_exit_line"], z["resolution_us"]))


class ZombieWatch:
    """--watch PID: a thread that samples the children of PID in state Z from /proc."""

    def __init__(self, pid, interval):
        self.pid, self.interval = pid, interval
        self.samples = self.with_zombies = self.max_zombies = 0
        self.gone = False
        self.stopping = threading.Event()
        self.thread = threading.Thread(target=self.run, daemon=True)

    def run(self):
        # Bounded: it stops when told (after the bounded load) or when PID is gone.
        while not self.stopping.wait(self.interval):
            zombies = zombies_of(self.pid)
            if zombies is None:
                self.gone = True
                return
            self.samples += 1
            self.with_zombies += zombies > 0
            self.max_zombies = max(self.max_zombies, zombies)

    def stop(self):
        time.sleep(WATCH_TAIL_SECONDS)
        self.stopping.set()
        self.thread.join()
        return {"pid": self.pid, "interval_ms": round(self.interval * 1000, 3),
                "samples": self.samples, "max_zombies": self.max_zombies,
                "samples_with_zombies": self.with_zombies, "gone": self.gone}


def zombies_of(pid):
    """How many children of pid are zombies now (None if pid is gone).  The
    kernel lists a thread's children in /proc/PID/task/TID/children; the
    forkserver parent is single-threaded, so its main thread's list is all."""
    try:
        with open("/proc/%d/task/%d/children" % (pid, pid)) as f:
            children = f.read().split()
    except OSError:
        return None
    zombies = 0
    for child in children:
        try:
            with open("/proc/%s/stat" % child, "rb") as f:
                stat = f.read()
        except OSError:
            continue           # reaped between the list and the look
        zombies += stat[stat.rindex(b")") + 2:stat.rindex(b")") + 3] == b"Z"
    return zombies


def start_watch(opts):
    if opts.watch is None:
        return None
    if zombies_of(opts.watch) is None:
        raise SystemExit(usage_error("--watch %d: no such process, or no "
                                     "/proc/%d/task/%d/children to read"
                                     % (opts.watch, opts.watch, opts.watch)))
    watch = ZombieWatch(opts.watch, opts.watch_interval)
    watch.thread.start()
    return watch


def read_lifetimes(path):
    """zombie_lifetimes of the --trace-log, or a usage error naming what is wrong."""
    time.sleep(TRACE_SETTLE_SECONDS)
    try:
        lifetimes = tracelog.zombie_lifetimes(tracelog.read_file(path))
    except tracelog.TraceError as exc:
        raise SystemExit(usage_error("--trace-log: %s" % exc))
    lifetimes["source"] = os.path.basename(path)
    return lifetimes


def main(argv=None):
    opts = build_parser().parse_args(argv)
    if opts.total is None and opts.concurrency * opts.connections > MAX_TOTAL_CONNECTIONS:
        return usage_error("at most %d connections in one run" % MAX_TOTAL_CONNECTIONS)
    if opts.watch_interval < MIN_WATCH_INTERVAL_SECONDS:
        return usage_error("--watch-interval must be at least %g s" % MIN_WATCH_INTERVAL_SECONDS)
    if opts.trace_log and not os.path.isfile(opts.trace_log):
        return usage_error("--trace-log %s: no such file" % opts.trace_log)
    check_loopback(opts.host)
    watch = start_watch(opts)
    summary = asyncio.run(run(opts))
    if watch is not None:
        summary["watch"] = watch.stop()
    if opts.trace_log:
        summary["zombie_lifetime"] = read_lifetimes(opts.trace_log)
    if opts.json:
        print(json.dumps(summary, indent=2))
    else:
        print_summary(summary)
    return EXIT_OK if summary["failed"] == 0 and not summary["errors"] else EXIT_FAILED


if __name__ == "__main__":
    sys.exit(main())
