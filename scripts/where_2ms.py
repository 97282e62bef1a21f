#!/usr/bin/env python3
"""where_2ms.py: where a forkserver Flask child's extra cost goes (issue 17).

Issue 17 measured, out of the box, a forkserver child serving the Flask
example at about 2 ms more than the standard library's ForkingMixIn +
wsgiref child.  This script compares, by the kernel's accounting of reaped
children (the parent's /proc/PID/stat cminflt, cutime, cstime, read with
scripts/tricks.py's functions), six servers of the same app:

    default      python forkserver.py APP --bind 127.0.0.1:0 --no-access-log
    no-prewarm   the same, --no-prewarm
    no-huge      the same, --no-huge-pages
    stdlib       socketserver.ForkingMixIn + wsgiref (scripts/bench.py's)
    floor        a bare fork-per-connection loop, Flask imported (bench.py's)
    bare-app     bench.py's floor that runs the app (warmed, frozen, the
                 smallest environ): default - other is all that ours costs

Each round runs one pair at a time (the machine has two cores): forkserver
with default options and one other server, both new, both warmed, then
--requests sequential ``Connection: close`` requests to each, the order
alternating by round; then that pair is stopped and the next pair started.
Per connection: child faults, child CPU, parent faults, parent CPU.  The
summary gives, per metric, the median of the per-round paired differences
(other - default) with a distribution-free 95% interval for that median
(order statistics of the binomial, as the sign test), and the mean with
its Student t interval (tricks.interval).

    python scripts/where_2ms.py                    # 10 rounds of 200 requests
    python scripts/where_2ms.py --rounds 12 --requests 300
    python scripts/where_2ms.py --profile          # cProfile of one child's request

--profile, in this process instead: loads the app, then forks children that
each serve one request over a socketpair, from (a) a parent warmed the way
forkserver warms (forkparts.prewarm.prewarm: GET /, 16 passes) through
wsgi_handler.serve_connection, (b) an unwarmed parent through
serve_connection, (c) an unwarmed parent through wsgiref's handler, as
ForkingMixIn's child runs it.  For each: the wait4 rusage of 200 such
children, the modules the child imported during its request, and the top
functions of one child's request under cProfile.
"""
import argparse
import math
import os
import socket
import statistics
import sys
import tempfile

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
for path in (HERE, ROOT):
    if path not in sys.path:
        sys.path.insert(0, path)

import tricks                      # noqa: E402 - the measurement, reused
import bench                       # noqa: E402 - the stdlib server and the floor

APP = "examples.bench_apps:flask_app"
OTHERS = {"no-prewarm": "--no-prewarm", "no-huge": "--no-huge-pages",
          "stdlib": None, "floor": None, "bare-app": None}
BENCH_NAMES = {"stdlib": "stdlib", "floor": "floor+flask", "bare-app": "bare-app"}


# ======================================================= servers

def start(name, args):
    """A forkserver (name "default" or a flag set) or one of bench.py's servers."""
    if name in BENCH_NAMES:
        server = bench.Running(BENCH_NAMES[name], args.app, args.out)
        server.pid = server.proc.pid     # its own python: the parent that reaps
        return server
    flags = "" if name == "default" else OTHERS[name]
    server = tricks.Server(name, tricks.FORKSERVER, args.app, flags, args.out)
    server.wait_ready()
    return server


def one_pair(other, number, args, say):
    """default and other, new servers, warmed, measured in the round's order."""
    started = []
    try:
        sides = {}
        for name in ("default", other):
            sides[name] = start(name, args)
            started.append(sides[name])
        for name, server in sides.items():
            ok, _ = tricks.send_requests(server.port, args.warmup)
            if ok < args.warmup:
                raise tricks.SetupError("%s answered %d of %d warm-up requests" % (
                    name, ok, args.warmup))
        order = ("default", other) if number % 2 == 0 else (other, "default")
        record = {name: tricks.measure_side(sides[name], args.requests) for name in order}
    finally:
        for server in started:
            server.stop()
    say("  round %2d %-10s child faults %6.1f vs default %6.1f, child CPU %5.0f vs %5.0f us,"
        " parent CPU %4.0f vs %4.0f us" % (
            number + 1, other, record[other]["child_faults"], record["default"]["child_faults"],
            record[other]["child_cpu_us"], record["default"]["child_cpu_us"],
            record[other]["parent_cpu_us"], record["default"]["parent_cpu_us"]))
    return record


# ======================================================= statistics

def median_interval(values):
    """The median and a distribution-free 95% interval for it: the order
    statistics k and n+1-k (1-based), k the largest with
    P(Binomial(n, 1/2) <= k-1) <= 2.5%: 3rd and 10th of 12, 2nd and 9th of
    10 (coverage >= 95%; needs n >= 6)."""
    n = len(values)
    ordered = sorted(values)
    k, tail = 0, 0.0
    while True:
        tail_next = tail + math.comb(n, k) / 2 ** n
        if tail_next > 0.025:
            break
        tail, k = tail_next, k + 1
    low_i = max(k - 1, 0)
    return {"median": statistics.median(values), "low": ordered[low_i],
            "high": ordered[n - 1 - low_i]}


def summarize(rounds, others):
    """Per other server and metric: its mean, default's mean, and the
    differences other - default (median with its interval, mean with t)."""
    out = {}
    for other in others:
        recs = [r[other] for r in rounds if other in r]
        row = {}
        for key, _ in tricks.METRICS:
            diffs = [rec[other][key] - rec["default"][key] for rec in recs]
            row[key] = {"other": statistics.median(rec[other][key] for rec in recs),
                        "default": statistics.median(rec["default"][key] for rec in recs),
                        "diff": median_interval(diffs), "mean": tricks.interval(diffs)}
        row["req_per_s"] = statistics.median(rec[other]["req_per_s"] for rec in recs)
        out[other] = row
    return out


def markdown(summary, args):
    head = ("| server | child faults/conn | diff vs default, median [95%] "
            "| child CPU us/conn | diff | parent faults/conn | diff "
            "| parent CPU us/conn | diff |")
    lines = [head, "|" + "---|" * (head.count("|") - 1)]
    default = {key: statistics.median(v[key]["default"] for v in summary.values())
               for key, _ in tricks.METRICS}
    lines.append("| forkserver, default | %.1f | - | %.0f | - | %.2f | - | %.0f | - |" % (
        default["child_faults"], default["child_cpu_us"], default["parent_faults"],
        default["parent_cpu_us"]))
    for other, row in summary.items():
        cells = []
        for key, digits in (("child_faults", 1), ("child_cpu_us", 0),
                            ("parent_faults", 2), ("parent_cpu_us", 0)):
            d = row[key]["diff"]
            spec = "%.{0}f | %+.{0}f [%+.{0}f, %+.{0}f]".format(digits)
            cells.append(spec % (row[key]["other"], d["median"], d["low"], d["high"]))
        lines.append("| %s | %s |" % (other, " | ".join(cells)))
    lines.append("")
    lines.append("medians of %d rounds of %d sequential Connection: close requests per side; "
                 "diff = other - default of the same round (negative: cheaper than the "
                 "default)" % (args.rounds, args.requests))
    for other, row in summary.items():
        lines.append("  mean diff %-10s %s" % (other, ", ".join(
            "%s %+.1f [%+.1f, %+.1f]" % (label, row[key]["mean"]["mean"],
                                         row[key]["mean"]["low"], row[key]["mean"]["high"])
            for key, label in tricks.METRICS)))
    return lines


# ======================================================= --profile

PROFILE_CHILDREN = 200
REQUEST = b"GET / HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n"


def forkserver_serve(app):
    import wsgi_handler
    from forkparts.logs import Log
    config = wsgi_handler.HandlerConfig(log=Log(error_fd=2, level="warning"))

    def serve(sock):
        wsgi_handler.serve_connection(sock, ("127.0.0.1", 0), app, config)
    return serve, config


def wsgiref_serve(app):
    from wsgiref.simple_server import WSGIRequestHandler, WSGIServer

    class Quiet(WSGIRequestHandler):
        def log_message(self, *a):
            pass

    server = WSGIServer(("127.0.0.1", 0), Quiet, bind_and_activate=False)
    server.server_name, server.server_port = "localhost", 80
    server.setup_environ()
    server.set_app(app)

    def serve(sock):    # what ForkingMixIn.process_request's child runs
        server.finish_request(sock, ("127.0.0.1", 0))
        server.shutdown_request(sock)
    return serve


def child_request(serve, profile_to=None, modules_to=None):
    """Fork; the child serves REQUEST on a socketpair; (status line, rusage)."""
    ours, theirs = socket.socketpair()
    theirs.sendall(REQUEST)
    theirs.shutdown(socket.SHUT_WR)
    pid = os.fork()
    if pid == 0:
        code = 0
        try:
            theirs.close()
            before = set(sys.modules)
            if profile_to:
                import cProfile
                prof = cProfile.Profile()
                prof.runcall(serve, ours)
                prof.dump_stats(profile_to)
            else:
                serve(ours)
            if modules_to:
                with open(modules_to, "w") as f:
                    f.write("\n".join(sorted(set(sys.modules) - before)))
        except BaseException:
            code = 1
        finally:
            os._exit(code)
    ours.close()
    data = theirs.recv(64)
    while theirs.recv(65536):
        pass
    theirs.close()
    _, status, usage = os.wait4(pid, 0)
    return data.split(b"\r\n", 1)[0].decode("latin-1"), status, usage


def profile_case(name, serve, out, say):
    import pstats
    faults = cpu = 0.0
    for _ in range(PROFILE_CHILDREN):
        line, status, usage = child_request(serve)
        faults += usage.ru_minflt
        cpu += usage.ru_utime + usage.ru_stime
    mods = os.path.join(out, "modules-%s.txt" % name)
    prof = os.path.join(out, "profile-%s.pstats" % name)
    child_request(serve, modules_to=mods)
    child_request(serve, profile_to=prof)
    with open(mods) as f:
        imported = f.read().split()
    say("== %s: %s, exit %d; per child (wait4, %d children): %.0f minor faults, %.0f us CPU;"
        " %d modules imported during the request: %s" % (
            name, line, status, PROFILE_CHILDREN, faults / PROFILE_CHILDREN,
            cpu * 1e6 / PROFILE_CHILDREN, len(imported), " ".join(imported[:12]) +
            (" ..." if len(imported) > 12 else "")))
    stats = pstats.Stats(prof, stream=sys.stdout)
    stats.sort_stats("cumulative").print_stats(14)
    stats.sort_stats("tottime").print_stats(10)


def profile(args, say):
    """The three cases, each in a fresh interpreter (the warm-up is not undone)."""
    import subprocess
    for case in ("fork-warm", "fork-cold", "wsgiref-cold"):
        subprocess.run([sys.executable, os.path.abspath(__file__), "--profile-case", case,
                        "--app", args.app, "--out", args.out], cwd=ROOT, check=True)


def profile_one(args, say):
    app = bench.load_app(args.app)
    case = args.profile_case
    if case == "wsgiref-cold":
        serve = wsgiref_serve(app)
    else:
        serve, config = forkserver_serve(app)
        if case == "fork-warm":
            import wsgi_handler
            from forkparts.logs import Log
            from forkparts.prewarm import prewarm
            prewarm(wsgi_handler.serve_connection, app, config, "/",
                    Log(error_fd=2, level="warning"))
    profile_case(case, serve, args.out, say)


# ======================================================= command line

def parse_args(argv):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--app", default=APP, help="app spec (default %(default)s)")
    p.add_argument("--rounds", type=tricks.at_least(tricks.MIN_ROUNDS), default=10)
    p.add_argument("--requests", type=tricks.at_least(tricks.MIN_REQUESTS), default=200)
    p.add_argument("--warmup", type=tricks.at_least(0), default=30)
    p.add_argument("--only", help="comma-separated subset of: " + ", ".join(OTHERS))
    p.add_argument("--profile", action="store_true", help="the cProfile look instead")
    p.add_argument("--profile-case", help=argparse.SUPPRESS)
    p.add_argument("--out", help="directory for logs and raw figures (default: a new one)")
    args = p.parse_args(argv)
    args.out = args.out or tempfile.mkdtemp(prefix="where2ms-")
    os.makedirs(args.out, exist_ok=True)
    args.others = list(OTHERS)
    if args.only:
        args.others = [o.strip() for o in args.only.split(",")]
        unknown = [o for o in args.others if o not in OTHERS]
        if unknown:
            p.error("--only: unknown %s (known: %s)" % (", ".join(unknown), ", ".join(OTHERS)))
    return args


def main(argv=None):
    args = parse_args(argv)
    say = tricks.say
    if args.profile_case:
        return profile_one(args, say)
    if args.profile:
        return profile(args, say)
    import json
    rounds = []
    try:
        for number in range(args.rounds):
            shift = number % len(args.others)     # no pair always first in a round
            record = {}
            for other in args.others[shift:] + args.others[:shift]:
                record[other] = one_pair(other, number, args, say)
            rounds.append(record)
    except tricks.SetupError as e:
        say("where_2ms.py: %s" % e)
        return 1
    except KeyboardInterrupt:
        say("where_2ms.py: interrupted; every server stopped")
        return 130
    summary = summarize(rounds, args.others)
    lines = markdown(summary, args)
    with open(os.path.join(args.out, "where2ms.json"), "w") as f:
        json.dump({"rounds": rounds, "summary": summary, "machine": tricks.machine_info()},
                  f, indent=1)
    say("\n" + "\n".join(lines) + "\n\nraw: %s" % os.path.join(args.out, "where2ms.json"))
    return 0


if __name__ == "__main__":
    sys.exit(main())
