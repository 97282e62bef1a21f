#!/usr/bin/env python3
"""tricks.py: does a performance trick of the server earn its keep?

Issue 15 keeps a trick only if it measurably earns its keep: child CPU time
and minor page faults per connection, from wait4's rusage, in paired,
interleaved runs of at least 10 rounds, with a 95% confidence interval that
excludes zero.  This script is that measurement.

Method.  Two servers of the same app run at once: A with the trick on, B
with it off (two option sets of forkserver.py, e.g. "" and "--no-huge-pages").
Both are warmed first (--warmup sequential requests each, uncounted).  A
round then sends --requests sequential requests, one connection each
(``Connection: close``, a plain socket client, every request bounded by a
timeout), to A then B, or to B then A: the order alternates each round, so
neither side always runs first.  With --clients N the requests of a side's
run come from N client threads at once, so the figures are a connection's
cost under load (the parent forks while children run on the other core),
still from the kernel's accounting, not from the client's clock; with
--together both servers are loaded at once, each client going round the
two, so both see the same moments of a busy machine and the CPU interval
narrows (12 rounds at 8 clients, hello: +-25 us per connection, against
+-120 us one after the other).  --on-peer/--off-peer NAME puts one of
scripts/bench.py's own servers on that side (floor, bare-app,
bare-app-tricks, stdlib), started there with the app, ready once it answers.
Each round starts a new pair of servers: within one server the faults per
child repeat to a fraction of a fault, but between two starts of the same
command they differ by ten or more (where the heap and the mappings land),
so rounds on one pair would give a narrow
interval that holds for that pair's layout only, and two runs could give
opposite verdicts.  --same-servers measures every round on one pair (faster,
for a quick look).

Before and after each side's run the script waits until the server has
reaped every child (its /proc/PID/task/PID/children is empty: zombies are
listed until reaped), then reads the parent's /proc/PID/stat:

    cminflt, cutime, cstime   the rusage sums of the children the parent has
                              reaped with wait4/waitpid: exactly what wait4
                              returns for them (proc(5) fields 11, 16, 17)
    minflt, utime, stime      the parent's own (fields 10, 14, 15)

so every figure is the kernel's accounting, taken outside the server.  CPU
times are in clock ticks (os.sysconf("SC_CLK_TCK"), 10 ms at 100 Hz): a run
of 500 connections resolves 20 us per connection; fault counts are exact.

Reading the output.  Per trick, one Markdown row: the mean per-connection
difference A - B (trick on minus trick off) of child minor faults, child CPU
microseconds, parent faults and parent CPU microseconds, each with the 95%
confidence interval of the per-round paired differences (Student t, df =
rounds - 1).  Negative means the trick saves.  The verdict of each metric:

    earns its keep         the whole interval is below zero
    costs                  the whole interval is above zero
    no measurable effect   the interval holds zero

Requests per second of each side (client-side wall time; with --together
the two sides share one clock, so they are equal) are given as information
only: they measure the client and the loopback too.
Every round's raw counters are written as JSON (and the table as Markdown)
under --out.

    python scripts/tricks.py --trick huge-pages
    python scripts/tricks.py --trick huge-pages,gc-freeze --app examples.bench_apps:flask_app
    python scripts/tricks.py --app examples.bench_apps:flask_app --on "" --off "--no-huge-pages"
    python scripts/tricks.py --trick fast-accept --forkserver ../other/forkserver.py
    python scripts/tricks.py --trick huge-pages --clients 8 --requests 1000
    python scripts/tricks.py --on '' --off-peer stdlib --together --clients 8 \\
        --app examples.bench_apps:flask_app
    python scripts/tricks.py --on '' --off '' --name layout --off-forkserver ../old/forkserver.py
    python scripts/tricks.py --on '' --off '' --name setups --module --together --clients 8 \\
        --off-patch scripts/ablations/no_child_setups.patch --app examples.bench_apps:flask_app

--off-patch measures what a part of our code costs by taking it out: the off
side is HEAD with the patch applied (scripts/ablations/ has the ones of
docs/performance.md), the on side this checkout as it is, so commit first.

Every server started is stopped by its pid (SIGTERM, then SIGKILL after a
bound) in a ``finally``, on errors and on Ctrl-C too.  Needs only the standard
library and Linux's /proc.
"""
import argparse
import contextlib
import hashlib
import json
import math
import os
import re
import shlex
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
FORKSERVER = os.path.join(ROOT, "forkserver.py")
HOST = "127.0.0.1"
READY_RE = re.compile(r"forkserver ready: pid (\d+) listening on http://127\.0\.0\.1:(\d+)")

# trick name -> (flags with the trick on, flags with it off)
TRICKS = {
    "huge-pages": ("", "--no-huge-pages"),
    "allocator-fill": ("", "--no-allocator-fill"),
    "fast-accept": ("--fast-accept", "--no-fast-accept"),
    "raw-signals": ("", "--no-raw-signals"),
    "gc-freeze": ("", "--no-gc-freeze"),
}
DEFAULT_APP = "examples.bench_apps:hello"
DEFAULT_ROUNDS, MIN_ROUNDS = 12, 10      # issue 15: at least 10 paired rounds
DEFAULT_REQUESTS, MIN_REQUESTS = 500, 10
DEFAULT_WARMUP = 300                     # uncounted requests to each server first
READY_TIMEOUT_SECONDS = 20.0             # for the ready line
# scripts/bench.py's own servers (--on-peer, --off-peer)
PEERS = ("floor", "bare-app", "bare-app-tricks", "stdlib")
REQUEST_TIMEOUT_SECONDS = 10.0           # one request, connect to close
REAP_TIMEOUT_SECONDS = 10.0              # for the server to reap every child
STOP_TIMEOUT_SECONDS = 10.0              # SIGTERM, then SIGKILL
POLL_SECONDS = 0.01
LAST_LINES = 15                          # of a server's output, when it fails to start
REQUEST_FORMAT = "GET %s HTTP/1.1\r\nHost: tricks\r\nConnection: close\r\n\r\n"
REQUEST = (REQUEST_FORMAT % "/").encode("ascii")   # --path sets another
CONFIDENCE = 0.95
# Two-sided 95% Student t quantiles t(0.975, df), df 9..40 (any statistics
# table); above 40 the Cornish-Fisher expansion below is within 0.001.
T_975 = {9: 2.262, 10: 2.228, 11: 2.201, 12: 2.179, 13: 2.160, 14: 2.145, 15: 2.131,
         16: 2.120, 17: 2.110, 18: 2.101, 19: 2.093, 20: 2.086, 21: 2.080, 22: 2.074,
         23: 2.069, 24: 2.064, 25: 2.060, 26: 2.056, 27: 2.052, 28: 2.048, 29: 2.045,
         30: 2.042, 31: 2.040, 32: 2.037, 33: 2.035, 34: 2.032, 35: 2.030, 36: 2.028,
         37: 2.026, 38: 2.024, 39: 2.023, 40: 2.021}
# Per-connection metrics (see per_connection): (key, label)
METRICS = (("child_faults", "child faults"), ("child_cpu_us", "child CPU us"),
           ("parent_faults", "parent faults"), ("parent_cpu_us", "parent CPU us"))


class SetupError(Exception):
    """A server or a run that cannot be measured; the message says why."""


# ======================================================= the kernel's accounting

def proc_counters(pid):
    """The parent's own and its reaped children's faults and CPU ticks.

    proc(5), /proc/PID/stat: (10) minflt (11) cminflt (14) utime (15) stime
    (16) cutime (17) cstime.  The comm (2) may hold spaces and parentheses,
    so the fields are split after the last ")": index = field number - 3.
    """
    with open("/proc/%d/stat" % pid) as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return {"minflt": int(fields[7]), "cminflt": int(fields[8]),
            "utime": int(fields[11]), "stime": int(fields[12]),
            "cutime": int(fields[13]), "cstime": int(fields[14])}


def children_of(pid):
    """Pids of the process's children, zombies included (not yet reaped)."""
    with open("/proc/%d/task/%d/children" % (pid, pid)) as f:
        return f.read().split()


def wait_reaped(server):
    """Until the server has reaped every child: only then are they counted."""
    deadline = time.monotonic() + REAP_TIMEOUT_SECONDS
    while children_of(server.pid):
        if time.monotonic() > deadline:
            raise SetupError("%s still has children %s after %.0f s" % (
                server.name, children_of(server.pid), REAP_TIMEOUT_SECONDS))
        time.sleep(POLL_SECONDS)


def per_connection(before, after, count):
    """Per-connection figures of one side's run, CPU in microseconds."""
    us_per_tick = 1e6 / os.sysconf("SC_CLK_TCK")
    d = {k: after[k] - before[k] for k in before}
    return {"child_faults": d["cminflt"] / count,
            "child_cpu_us": (d["cutime"] + d["cstime"]) * us_per_tick / count,
            "parent_faults": d["minflt"] / count,
            "parent_cpu_us": (d["utime"] + d["stime"]) * us_per_tick / count}


# ======================================================= the client

def one_request(port):
    """One connection, one request, read to the server's close; True if 200."""
    with socket.create_connection((HOST, port), timeout=REQUEST_TIMEOUT_SECONDS) as sock:
        sock.sendall(REQUEST)
        head = sock.recv(65536)
        while sock.recv(65536):
            pass
    return head.startswith(b"HTTP/1.1 200 ") or head.startswith(b"HTTP/1.0 200 ")


def free_port():
    with socket.socket() as sock:
        sock.bind((HOST, 0))
        return sock.getsockname()[1]


def answers(port):
    """True once a server on ``port`` answers one request at all."""
    try:
        with socket.create_connection((HOST, port), timeout=REQUEST_TIMEOUT_SECONDS) as sock:
            sock.sendall(REQUEST)
            return sock.recv(64).startswith(b"HTTP/1.")
    except OSError:
        return False


def send_requests(ports, count, clients=1, first=0):
    """count requests to each server of ``ports``, from ``clients``
    connections at a time (threads, each sending its share one request after
    the other and going round the ports, so two servers share the same
    moments of load; client n starts on port n + ``first``, which the rounds
    alternate); ({port: answered with 200}, seconds taken)."""
    answered = [dict.fromkeys(ports, 0) for _ in range(clients)]

    def client(number, share):
        got = answered[number]
        for i in range(share * len(ports)):
            port = ports[(i + number + first) % len(ports)]
            try:
                got[port] += one_request(port)
            except OSError:   # refused, reset, timed out: counted as not answered
                pass

    started = time.monotonic()
    if clients == 1:
        client(0, count)
    else:
        shares = [count // clients + (n < count % clients) for n in range(clients)]
        # Daemons: after Ctrl-C no client outlives the servers' stop.
        threads = [threading.Thread(target=client, args=(n, share), daemon=True)
                   for n, share in enumerate(shares)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()   # bounded: every request has REQUEST_TIMEOUT_SECONDS
    return ({port: sum(got[port] for got in answered) for port in ports},
            time.monotonic() - started)


# ======================================================= the servers

class Server:
    """One server started by the script (forkserver, or with ``peer`` one of
    scripts/bench.py's own), its output in a file, stopped by pid."""

    def __init__(self, name, forkserver, app, flags, outdir, peer=None, module=False):
        self.name, self.flags, self.pid, self.port = name, flags, None, None
        self.peer = peer
        self.log_path = os.path.join(outdir, "server-%s.log" % name)
        if peer:   # scripts/bench.py's server of that name, on a port chosen here
            self.port = free_port()
            argv = [sys.executable, "-m", "scripts.bench", "_" + peer.replace("-", "_"),
                    str(self.port), app]
            cwd = ROOT
        else:   # --module: as bench.py runs it, from cached bytecode
            entry = ["-m", "forkserver"] if module else [forkserver]
            argv = [sys.executable] + entry + [app, "--bind", "%s:0" % HOST,
                                               "--no-access-log"] + shlex.split(flags)
            cwd = os.path.dirname(forkserver)
        self.argv = argv
        with open(self.log_path, "wb") as log:
            # Its own session: the terminal's Ctrl-C reaches the script only,
            # which then stops the server itself, children reaped.
            self.proc = subprocess.Popen(argv, cwd=cwd,
                                         stdin=subprocess.DEVNULL, stdout=log,
                                         stderr=subprocess.STDOUT, start_new_session=True,
                                         env=server_env())

    def wait_ready(self):
        deadline = time.monotonic() + READY_TIMEOUT_SECONDS
        while time.monotonic() < deadline:
            if self.peer:   # prints no ready line: ready once it answers, alive
                if answers(self.port) and not self.exited():
                    self.pid = self.proc.pid
                    return
            else:
                match = READY_RE.search(self.output())
                if match:
                    self.pid, self.port = int(match.group(1)), int(match.group(2))
                    return
            if self.exited():
                raise SetupError(self.failure("exited (%s)" % self.exited()))
            time.sleep(POLL_SECONDS * 5)
        raise SetupError(self.failure("%s within %.0f s" % (
            "did not answer" if self.peer else "printed no ready line", READY_TIMEOUT_SECONDS)))

    def output(self):
        with open(self.log_path, errors="replace") as f:
            return f.read()

    def failure(self, what):
        lines = self.output().splitlines()[-LAST_LINES:]
        return "server %s (%s) %s; its last output lines:\n    %s" % (
            self.name, " ".join(self.argv), what, "\n    ".join(lines) or "(none)")

    def exited(self):
        """How the server ended, without reaping it (None while it runs): its
        zombie keeps the pid, and with it the process group id, ours."""
        if self.proc.returncode is not None:
            return "status %d" % self.proc.returncode
        info = os.waitid(os.P_PID, self.proc.pid, os.WEXITED | os.WNOHANG | os.WNOWAIT)
        if info is None:
            return None
        how = "status" if info.si_code == os.CLD_EXITED else "signal"
        return "%s %d" % (how, info.si_status)

    def wait_exited(self, seconds):
        deadline = time.monotonic() + seconds
        while not self.exited() and time.monotonic() < deadline:
            time.sleep(POLL_SECONDS)
        return self.exited()

    def stop(self):
        """SIGTERM by pid, SIGKILL after a bound; then SIGKILL to whatever is
        left of the session started for it (a child whose parent was killed),
        before the server is reaped, so the group id cannot be another's."""
        if self.proc.returncode is not None:
            return
        if not self.exited():
            os.kill(self.proc.pid, signal.SIGTERM)
        if not self.wait_exited(STOP_TIMEOUT_SECONDS):
            os.kill(self.proc.pid, signal.SIGKILL)
            self.wait_exited(STOP_TIMEOUT_SECONDS)
        try:
            os.killpg(self.proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        self.proc.wait()


def server_env():
    """Our environment, bytecode caching allowed (as in scripts/bench.py)."""
    env = dict(os.environ)
    env.pop("PYTHONDONTWRITEBYTECODE", None)
    return env


def start_pair(pair, args, tag, started):
    """Both servers of a trick, started at once, ready, warmed."""
    sides = {}
    for side in ("on", "off"):
        name = "%s-%s-%s" % (pair["trick"], side, tag)
        forkserver = args.off_forkserver if side == "off" else args.forkserver
        sides[side] = Server(name, forkserver, args.app, pair[side], args.out,
                             peer=getattr(args, side + "_peer"), module=args.module)
        started.append(sides[side])
    for server in sides.values():
        server.wait_ready()
    for server in sides.values():
        answered, _ = send_requests([server.port], args.warmup)
        ok = answered[server.port]
        if ok < args.warmup:
            raise SetupError("%s answered %d of %d warm-up requests with 200 (log: %s)" % (
                server.name, ok, args.warmup, server.log_path))
    return sides


# ======================================================= rounds

def measure_sides(servers, count, clients=1, first=0):
    """One run of one server, or of two at once (--together): for each, its
    raw counters, per-connection figures and req/s."""
    for server in servers:
        wait_reaped(server)
    before = [proc_counters(server.pid) for server in servers]
    answered, seconds = send_requests([server.port for server in servers], count, clients,
                                      first)
    for server in servers:
        wait_reaped(server)
    records = []
    for server, counters in zip(servers, before):
        ok = answered[server.port]
        if ok < count:
            raise SetupError("%s answered %d of %d requests with 200 (log: %s)" % (
                server.name, ok, count, server.log_path))
        after = proc_counters(server.pid)
        if server.exited() or after["cminflt"] == counters["cminflt"]:
            raise SetupError("%s: no child of its own served the run (%s; log: %s): did "
                             "another process answer on port %d?" % (
                                 server.name, server.exited() or "its counters did not move",
                                 server.log_path, server.port))
        records.append({"before": counters, "after": after, "seconds": seconds, "ok": ok,
                        "req_per_s": count / seconds, **per_connection(counters, after, count)})
    return records


def one_round(sides, number, args, say):
    """Both sides once, in the order of the round: on first in even rounds;
    with --together, both at once."""
    order = ("on", "off") if number % 2 == 0 else ("off", "on")
    record = {"round": number, "order": ["together"] if args.together else list(order),
              "pids": {side: server.pid for side, server in sides.items()},
              "argv": {side: server.argv for side, server in sides.items()}}
    if args.together:
        record["on"], record["off"] = measure_sides([sides["on"], sides["off"]],
                                                    args.requests, args.clients, number % 2)
    else:
        for side in order:
            (record[side],) = measure_sides([sides[side]], args.requests, args.clients)
    say("  round %2d (%s): child faults %.1f vs %.1f, child CPU %.0f vs %.0f us"
        % (number + 1, "together" if args.together else record["order"][0] + " first",
           record["on"]["child_faults"],
           record["off"]["child_faults"], record["on"]["child_cpu_us"],
           record["off"]["child_cpu_us"]))
    return record


def with_servers(pair, args, tag, work):
    """work(sides) with a new pair of servers, always stopped after."""
    started = []
    try:
        return work(start_pair(pair, args, tag, started))
    finally:
        stop_all(started)


def measure_trick(pair, args, say):
    """One trick: the rounds, each on a new pair of servers (or all on one
    with --same-servers), and their summary."""
    say("== %s: on %r, off %r" % (pair["trick"], pair["on"], pair["off"]))
    if args.same_servers:
        rounds = with_servers(pair, args, "all", lambda sides: [
            one_round(sides, n, args, say) for n in range(args.rounds)])
    else:
        rounds = [with_servers(pair, args, "r%d" % (n + 1),
                               lambda sides, n=n: one_round(sides, n, args, say))
                  for n in range(args.rounds)]
    return dict(pair, rounds=rounds, summary=summarize(rounds))


def stop_all(servers):
    """Stop every server, a second Ctrl-C notwithstanding."""
    previous = signal.signal(signal.SIGINT, signal.SIG_IGN)
    try:
        for server in servers:
            server.stop()
    finally:
        signal.signal(signal.SIGINT, previous)


# ======================================================= statistics

def t_quantile(df):
    """t(0.975, df): the table for df 9..40, else Cornish-Fisher from the normal."""
    if df in T_975:
        return T_975[df]
    z = statistics.NormalDist().inv_cdf(0.5 + CONFIDENCE / 2)
    return (z + (z ** 3 + z) / (4 * df)
            + (5 * z ** 5 + 16 * z ** 3 + 3 * z) / (96 * df ** 2))


def interval(diffs):
    """Mean of the paired differences and its 95% confidence interval."""
    mean = statistics.mean(diffs)
    half = t_quantile(len(diffs) - 1) * statistics.stdev(diffs) / math.sqrt(len(diffs))
    return {"mean": mean, "low": mean - half, "high": mean + half}


def verdict(ci):
    if ci["high"] < 0:
        return "earns its keep"
    if ci["low"] > 0:
        return "costs"
    return "no measurable effect"


def summarize(rounds):
    summary = {}
    for key, _ in METRICS:
        ci = interval([r["on"][key] - r["off"][key] for r in rounds])
        ci["on"] = statistics.mean(r["on"][key] for r in rounds)
        ci["off"] = statistics.mean(r["off"][key] for r in rounds)
        summary[key] = dict(ci, verdict=verdict(ci))
    for side in ("on", "off"):
        summary["req_per_s_" + side] = statistics.mean(r[side]["req_per_s"] for r in rounds)
    return summary


# ======================================================= report

def cell(figures, digits):
    spec = "%+.{0}f [%+.{0}f, %+.{0}f]".format(digits)
    return spec % (figures["mean"], figures["low"], figures["high"])


HEADER = ("| trick | app | child faults/conn on-off [95% CI] | verdict "
          "| child CPU us/conn on-off [95% CI] | verdict "
          "| parent faults/conn on-off [95% CI] (verdict) "
          "| parent CPU us/conn on-off [95% CI] (verdict) | req/s on / off |")


def markdown(results):
    lines = [HEADER, "|" + "---|" * (HEADER.count("|") - 1)]
    app = results["app"].rpartition(":")[2] or results["app"]
    for trick in results["tricks"]:
        s = trick["summary"]
        lines.append("| %s | %s | %s | %s | %s | %s | %s (%s) | %s (%s) | %.0f / %.0f |" % (
            trick["trick"], app, cell(s["child_faults"], 1), s["child_faults"]["verdict"],
            cell(s["child_cpu_us"], 0), s["child_cpu_us"]["verdict"],
            cell(s["parent_faults"], 2), s["parent_faults"]["verdict"],
            cell(s["parent_cpu_us"], 1), s["parent_cpu_us"]["verdict"],
            s["req_per_s_on"], s["req_per_s_off"]))
    return lines


def context_lines(results):
    clients = results.get("clients", 1)
    s = "per connection, means of %d rounds of %d %s" % (
        results["rounds"], results["requests"], "sequential requests" if clients == 1
        else "requests from %d clients at a time" % clients)
    if results.get("together"):
        s += ", both servers loaded at once"
    lines = ["", "%s on %s (%s); on - off, negative = the trick saves." % (
        s, results["app"], results["forkserver"])]
    for trick in results["tricks"]:
        for key, label in METRICS:
            f = trick["summary"][key]
            lines.append("  %-14s %-14s on %9.2f  off %9.2f" % (
                trick["trick"], label, f["on"], f["off"]))
    return lines


def write_reports(results, outdir):
    stamp = time.strftime("%Y%m%d-%H%M%S")
    paths = [os.path.join(outdir, "tricks-%s.%s" % (stamp, ext)) for ext in ("json", "md")]
    with open(paths[0], "w") as f:
        json.dump(results, f, indent=2)
    with open(paths[1], "w") as f:
        f.write("\n".join(markdown(results) + context_lines(results)) + "\n")
    return paths


def machine_info():
    return {"python": sys.version.split()[0], "kernel": os.uname().release,
            "cpus": os.cpu_count(), "clk_tck": os.sysconf("SC_CLK_TCK")}


# ======================================================= command line

def request_path(text):
    """An argparse type: a request target, "/" and printable ASCII after it."""
    if not text.startswith("/") or not all(33 <= ord(c) < 127 for c in text):
        raise argparse.ArgumentTypeError("%r is not a path (/ then printable ASCII)" % text)
    return text


def parse_args(argv):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--app", default=DEFAULT_APP, help="app spec (default %(default)s)")
    p.add_argument("--trick", type=trick_list, default=[],
                   help="comma-separated tricks: %s" % ", ".join(TRICKS))
    p.add_argument("--on", help="forkserver flags with the trick on (with --off)")
    p.add_argument("--off", help="forkserver flags with the trick off (with --on)")
    p.add_argument("--name", default="custom", help="the trick's name in the report, "
                   "for --on/--off (default %(default)s)")
    p.add_argument("--rounds", type=at_least(MIN_ROUNDS), default=DEFAULT_ROUNDS,
                   help="paired rounds, at least %d (default %%(default)s)" % MIN_ROUNDS)
    p.add_argument("--requests", type=at_least(MIN_REQUESTS), default=DEFAULT_REQUESTS,
                   help="requests per side per round (default %(default)s)")
    add_load_options(p)
    p.add_argument("--path", type=request_path, default="/",
                   help="the path every request asks for (default %(default)s)")
    p.add_argument("--warmup", type=at_least(0), default=DEFAULT_WARMUP,
                   help="uncounted requests to each server first (default %(default)s)")
    p.add_argument("--same-servers", action="store_true",
                   help="one pair of servers for all rounds (default: a new pair each round)")
    p.add_argument("--forkserver", default=FORKSERVER,
                   help="the forkserver.py to measure (default: this checkout's)")
    p.add_argument("--off-forkserver", metavar="PATH",
                   help="the forkserver.py of the \"off\" side (default: --forkserver): "
                        "compares two checkouts, e.g. --on '' --off '' --name layout")
    p.add_argument("--off-patch", metavar="PATCH", action="append", default=[],
                   help="the \"off\" side is a throwaway worktree of this repository's "
                        "HEAD with PATCH applied (repeatable; removed afterwards), the on "
                        "side this checkout as it is (commit first): what the patched-out "
                        "part costs, e.g. --on '' --off '' --off-patch "
                        "scripts/ablations/no_child_setups.patch")
    add_server_options(p)
    p.add_argument("--out", help="directory for the JSON and Markdown (default: a new "
                   "temporary directory)")
    args = p.parse_args(glue_flag_values(sys.argv[1:] if argv is None else argv))
    check_args(p, args)
    return args


def add_load_options(p):
    p.add_argument("--clients", type=at_least(1), default=1,
                   help="connections at a time during a side's run (default 1, "
                   "sequential): the per-connection cost under load")
    p.add_argument("--together", action="store_true",
                   help="load both servers at once, each client going round the two "
                   "(default: one after the other): both see the same moments of the "
                   "machine, which narrows the CPU interval under load")


def add_server_options(p):
    p.add_argument("--module", action="store_true",
                   help="run each side as 'python -m forkserver' from its checkout, its "
                   "bytecode compiled first, as bench.py runs it (default: 'python "
                   "forkserver.py', the README's command, which compiles forkserver.py "
                   "at every start: compare checkouts of different sizes with --module)")
    for side in ("on", "off"):
        p.add_argument("--%s-peer" % side, choices=PEERS,
                       help="the %s side is scripts/bench.py's server of that name with "
                       "the app, instead of forkserver (floor: the bare fork loop with "
                       "the app imported in its parent; bare-app: it calls the warmed "
                       "app; bare-app-tricks: with our two heap tricks)" % side)


def glue_flag_values(argv):
    """--on/--off VALUE as --on=VALUE: argparse takes a value that starts with
    "-" ("--off --no-huge-pages") for an option of its own and refuses it."""
    out, argv = [], list(argv)
    while argv:
        word = argv.pop(0)
        if word in ("--on", "--off") and argv:
            word = "%s=%s" % (word, argv.pop(0))
        out.append(word)
    return out


def check_args(p, args):
    check_peers(p, args)
    if (args.on is None) != (args.off is None):
        p.error("--on and --off go together")
    if args.on is None and not args.trick:
        p.error("say what to compare: --trick NAME or --on FLAGS --off FLAGS")
    args.forkserver = os.path.abspath(args.forkserver)
    if not os.path.isfile(args.forkserver):
        p.error("--forkserver: no such file: %s" % args.forkserver)
    check_off_patches(p, args)
    args.off_forkserver = os.path.abspath(args.off_forkserver or args.forkserver)
    if not os.path.isfile(args.off_forkserver):
        p.error("--off-forkserver: no such file: %s" % args.off_forkserver)
    for flags in (args.on, args.off):
        try:
            shlex.split(flags or "")
        except ValueError as e:
            p.error("cannot split flags %r: %s" % (flags, e))
    if args.module:
        check_module(p, args)
    args.pairs = [{"trick": t, "on": TRICKS[t][0], "off": TRICKS[t][1]} for t in args.trick]
    if args.on is not None:
        args.pairs.append({"trick": args.name, "on": args.on, "off": args.off})
    args.out = args.out or tempfile.mkdtemp(prefix="tricks-")
    os.makedirs(args.out, exist_ok=True)


def check_off_patches(p, args):
    """--off-patch names the off side's code, as --off-forkserver and
    --off-peer do: one of the three, against this checkout's HEAD."""
    if not args.off_patch:
        return
    if args.off_forkserver or args.off_peer:
        p.error("--off-patch makes the off side's checkout: leave out --%s"
                % ("off-forkserver" if args.off_forkserver else "off-peer"))
    if args.trick:
        p.error("--off-patch compares with --on/--off, not with --trick")
    if os.path.abspath(args.forkserver) != FORKSERVER:
        p.error("--off-patch patches this checkout's HEAD, so the on side is this "
                "checkout's forkserver.py: leave out --forkserver")
    args.off_patch = [os.path.abspath(patch) for patch in args.off_patch]
    for patch in args.off_patch:
        if not os.path.isfile(patch):
            p.error("--off-patch: no such file: %s" % patch)


@contextlib.contextmanager
def patched_off_side(args, say):
    """With --off-patch, the off side's forkserver.py is a worktree of HEAD
    with the patches applied (scripts/child_phases.py makes it and removes
    it afterwards, on errors too), its bytecode compiled as this checkout's
    is; yields what the off side ran (HEAD, the patches' sha256, whether
    the on side had uncommitted changes), or None without --off-patch."""
    if not args.off_patch:
        yield None
        return
    if HERE not in sys.path:
        sys.path.insert(0, HERE)
    from child_phases import patched_worktree
    ran = {"head": git("rev-parse", "HEAD"), "on_side_uncommitted": bool(git(
        "status", "--porcelain", "--untracked-files=no")), "patches": {
            patch: hashlib.sha256(open(patch, "rb").read()).hexdigest()
            for patch in args.off_patch}}
    if ran["on_side_uncommitted"]:
        say("tricks.py: the on side has uncommitted changes; the off side is HEAD "
            "(%s) with the patches" % ran["head"][:12])
    try:
        with patched_worktree("HEAD", args.off_patch, "tricks-off-") as (where, _):
            args.off_forkserver = ran["off_forkserver"] = os.path.join(where, "forkserver.py")
            problem = compile_checkout(where)
            if problem:
                raise SetupError("the patched checkout does not compile: %s" % problem)
            yield ran
    except SystemExit as exc:   # child_phases' worktree(): a patch that does not apply
        raise SetupError(str(exc)) from None


def git(*words):
    return subprocess.run(["git", "-C", ROOT] + list(words), capture_output=True,
                          text=True).stdout.strip()


def check_peers(p, args):
    """A peer side takes no forkserver flags; the other side's flags, if not
    given, are our defaults ('')."""
    peers = [side for side in ("on", "off") if getattr(args, side + "_peer")]
    if peers and args.trick:
        p.error("--%s-peer compares with --on/--off, not with --trick" % peers[0])
    for side in peers:
        if getattr(args, side):
            p.error("--%s-peer runs scripts/bench.py's server, which takes no "
                    "forkserver flags: leave --%s out" % (side, side))
        setattr(args, side, "")
    if "off" in peers and args.off_forkserver:
        p.error("--off-peer and --off-forkserver name two servers for one side: give one")
    for side in ("on", "off"):
        if peers and getattr(args, side) is None:
            setattr(args, side, "")


def check_module(p, args):
    """--module runs 'python -m forkserver': each forkserver side's file must
    be that module, and its checkout's bytecode is compiled now."""
    paths = {path for side, path in (("on", args.forkserver), ("off", args.off_forkserver))
             if not getattr(args, side + "_peer")}
    for path in sorted(paths):
        if os.path.basename(path) != "forkserver.py":
            p.error("--module runs 'python -m forkserver': %s is not a forkserver.py" % path)
        problem = compile_checkout(os.path.dirname(path))
        if problem:
            p.error("--module: cannot compile %s: %s" % (os.path.dirname(path), problem))


def compile_checkout(directory):
    """Cache the bytecode of a checkout's server (--module), as an install
    does: a module compiled at start leaves the compiler's garbage in the
    parent's heap (docs/performance.md, "Parent size").  Returns what went
    wrong, or None."""
    done = subprocess.run([sys.executable, "-m", "compileall", "-q", "forkserver.py",
                           "wsgi_handler.py"] + [d for d in ("forkparts", "examples")
                                                 if os.path.isdir(os.path.join(directory, d))],
                          cwd=directory, env=server_env(), capture_output=True, text=True)
    return (done.stdout + done.stderr).strip()[-300:] or "exit %d" % done.returncode \
        if done.returncode else None


def trick_list(text):
    names = [t.strip() for t in text.split(",") if t.strip()]
    unknown = [t for t in names if t not in TRICKS]
    if unknown or not names:
        raise argparse.ArgumentTypeError("unknown trick %s (known: %s)" % (
            ", ".join(unknown) or repr(text), ", ".join(TRICKS)))
    return names


def at_least(minimum):
    def convert(text):
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError("not an integer: %r" % text) from None
        if value < minimum:
            raise argparse.ArgumentTypeError("must be at least %d: %r" % (minimum, text))
        return value
    return convert


def say(line):
    print(line, flush=True)


def raise_interrupt(signum, frame):
    """SIGTERM to the script: stop the servers as on Ctrl-C.  A second one
    is ignored, so it cannot cut the stops short."""
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    raise KeyboardInterrupt


def main(argv=None):
    global REQUEST
    args = parse_args(argv)
    REQUEST = (REQUEST_FORMAT % args.path).encode("ascii")
    signal.signal(signal.SIGTERM, raise_interrupt)
    results = {"app": args.app, "path": args.path, "forkserver": args.forkserver,
               "rounds": args.rounds,
               "same_servers": args.same_servers,
               "on_peer": args.on_peer, "off_peer": args.off_peer, "module": args.module,
               "requests": args.requests, "clients": args.clients, "together": args.together,
               "warmup": args.warmup,
               "machine": machine_info(), "tricks": []}
    try:
        with patched_off_side(args, say) as results["off_patch"]:
            for pair in args.pairs:
                results["tricks"].append(measure_trick(pair, args, say))
    except SetupError as e:
        say("tricks.py: %s" % e)
        return 1
    except KeyboardInterrupt:
        say("tricks.py: interrupted; every server stopped")
        return 130
    for line in [""] + markdown(results) + context_lines(results):
        say(line)
    say("\nraw figures: %s\nmarkdown:    %s" % tuple(write_reports(results, args.out)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
