#!/usr/bin/env python3
"""stress.py: N concurrent clients x M connections each, against loopback only.

The tutorial's client claimed to open many connections but exited after the
first; this one opens every connection it counts, sends one request on each,
reads the whole response, and reports what really happened:

    sent        connections opened and request written
    completed   responses read to the end with the expected status
    errors      by kind: refused, reset, timeout, status NNN, short response...
    req/s, p50/p99/max latency (connect to last byte)

It exits 1 if any connection failed, 2 on bad usage.  Every loop is bounded:
CLIENTS x CONNECTIONS connections at most, each within --timeout, the whole
run within --max-seconds.

    python scripts/stress.py --port 8888 --concurrency 64 --connections 80
    python scripts/stress.py --port 8888 --concurrency 64 --total 5000 --json
    python scripts/stress.py --port 8888 --concurrency 64 --total 100000 --duration 10
"""
import argparse
import asyncio
import ipaddress
import json
import socket
import sys
import time

DEFAULT_CONCURRENCY = 64
DEFAULT_CONNECTIONS = 10          # per client
DEFAULT_TIMEOUT_SECONDS = 10.0    # per connection: connect, send, read to EOF
DEFAULT_MAX_SECONDS = 300.0       # the whole run
MAX_CONCURRENCY = 1024            # one fd each: stay well under a default ulimit
MAX_TOTAL_CONNECTIONS = 1000000
MAX_RESPONSE_BYTES = 16 * 1024 * 1024
READ_BYTES = 64 * 1024
EXIT_OK, EXIT_FAILED, EXIT_USAGE = 0, 1, 2


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
            "p50_ms": percentile_ms(lat, 50), "p99_ms": percentile_ms(lat, 99),
            "max_ms": round(lat[-1] * 1000, 2) if lat else None,
        }


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
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
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
    return p


def print_summary(s):
    print("sent %d of %d planned connections; completed %d; failed %d" % (
        s["sent"], s["planned"], s["completed"], s["failed"]))
    for kind, count in s["errors"].items():
        print("  error %-30s %d" % (kind, count))
    print("statuses: %s" % (", ".join("%s x%d" % kv for kv in s["statuses"].items()) or "none"))
    print("%.1f requests/s over %.2fs; latency p50 %s ms, p99 %s ms, max %s ms" % (
        s["requests_per_second"], s["elapsed_seconds"], s["p50_ms"], s["p99_ms"], s["max_ms"]))


def main(argv=None):
    opts = build_parser().parse_args(argv)
    if opts.total is None and opts.concurrency * opts.connections > MAX_TOTAL_CONNECTIONS:
        return usage_error("at most %d connections in one run" % MAX_TOTAL_CONNECTIONS)
    check_loopback(opts.host)
    summary = asyncio.run(run(opts))
    if opts.json:
        print(json.dumps(summary, indent=2))
    else:
        print_summary(summary)
    return EXIT_OK if summary["failed"] == 0 and not summary["errors"] else EXIT_FAILED


if __name__ == "__main__":
    sys.exit(main())
