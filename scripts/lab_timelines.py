#!/usr/bin/env python3
"""lab_timelines.py: the timeline pictures of docs/labs.md, exercises 4, 5 and 6.

Each picture is one exercise's scenario run for real, as the guide runs it, on
a server started here (``--trace=process``, a free port) and stopped by its
pid; its trace goes through scripts/timeline.py:

    lab4  tests.apps:hello --reaper none --max-children 5: five requests, one
          after another; every child stays a zombie (drawn up to the SIGTERM,
          whose stop path reaps them: --until)
    lab5  tests.apps:slow --reaper once: four requests of 3 s at once; once the
          four are forked the parent is stopped (SIGSTOP) until they have all
          exited, then continued: one SIGCHLD, one reap, three zombies left
    lab6  the same with the correct reaper (the default): one SIGCHLD, four reaps

    python scripts/lab_timelines.py                 # writes docs/img/lab{4,5,6}-timeline.svg
    python scripts/lab_timelines.py --out /tmp/pics --keep-traces

Exit status: 0 written; 1 a scenario did not go as the guide says (the message
says what); 2 usage.
"""
import argparse
import os
import re
import signal
import subprocess
import sys
import tempfile
import time
import urllib.request
from concurrent.futures import ThreadPoolExecutor

import tracelog   # scripts/, beside this one: timeline.py's reader of the trace

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
READY_RE = re.compile(r"forkserver ready: pid (\d+) listening on http://127\.0\.0\.1:(\d+)")
READY_TIMEOUT_SECONDS = 30.0
STOP_TIMEOUT_SECONDS = 10.0
SLOW_SECONDS = 3           # exercises 5 and 6: ?s=3
CHILDREN = 4               # forked before the SIGSTOP


class Failed(Exception):
    """A scenario that did not go as the guide says."""


class TracedServer:
    """python forkserver.py ARGS --trace=process on a free port, its output in a file."""

    def __init__(self, args, trace_path):
        self.trace_path = trace_path
        self.err = open(trace_path, "wb")
        self.proc = subprocess.Popen(
            [sys.executable, os.path.join(ROOT, "forkserver.py")] + args +
            ["--bind", "127.0.0.1:0", "--trace=process", "--no-access-log"],
            cwd=ROOT, stdin=subprocess.DEVNULL, stdout=self.err, stderr=subprocess.STDOUT,
            start_new_session=True)
        deadline = time.monotonic() + READY_TIMEOUT_SECONDS
        while True:
            match = READY_RE.search(self.text())
            if match:
                self.pid, self.port = int(match.group(1)), int(match.group(2))
                return
            if self.proc.poll() is not None or time.monotonic() > deadline:
                self.stop()
                raise Failed("the server did not start: %s" % self.text()[-500:])
            time.sleep(0.05)

    def text(self):
        with open(self.trace_path, errors="replace") as f:
            return f.read()

    def get(self, path, timeout=10):
        url = "http://127.0.0.1:%d%s" % (self.port, path)
        with urllib.request.urlopen(url, timeout=timeout) as response:
            return response.status

    def children(self):
        try:
            with open("/proc/%d/task/%d/children" % (self.pid, self.pid)) as f:
                return f.read().split()
        except OSError:
            return []

    def stop(self):
        """SIGTERM (SIGCONT first, in case it is stopped), SIGKILL after a
        bound; returns the monotonic time of the SIGTERM."""
        sent = time.monotonic()
        if self.proc.poll() is None:
            os.kill(self.proc.pid, signal.SIGCONT)
            os.kill(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(STOP_TIMEOUT_SECONDS)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait()
        self.err.close()
        return sent


def zombies(server):
    """lab4: five requests one after another, each child left a zombie."""
    statuses = [server.get("/") for _ in range(5)]
    if statuses != [200] * 5:
        raise Failed("lab4: statuses %s, not five 200s" % statuses)
    time.sleep(0.5)


def stopped_parent(server):
    """lab5/lab6: four slow requests; the parent stopped while they exit."""
    with ThreadPoolExecutor(CHILDREN) as pool:
        answers = [pool.submit(server.get, "/?s=%d" % SLOW_SECONDS) for _ in range(CHILDREN)]
        deadline = time.monotonic() + SLOW_SECONDS
        while len(server.children()) < CHILDREN:
            if time.monotonic() > deadline:
                raise Failed("only %d children forked" % len(server.children()))
            time.sleep(0.01)
        os.kill(server.pid, signal.SIGSTOP)
        time.sleep(SLOW_SECONDS + 1)   # every child has answered and exited
        os.kill(server.pid, signal.SIGCONT)
        statuses = [a.result() for a in answers]
    if statuses != [200] * CHILDREN:
        raise Failed("statuses %s" % statuses)
    time.sleep(1)


SCENARIOS = {
    "lab4": (["tests.apps:hello", "--reaper", "none", "--max-children", "5"], zombies,
             "Exercise 4: no reaper, every child a zombie"),
    "lab5": (["tests.apps:slow", "--reaper", "once"], stopped_parent,
             "Exercise 5: four exits while the parent is stopped, one SIGCHLD, one reap"),
    "lab6": (["tests.apps:slow"], stopped_parent,
             "Exercise 6: four exits while the parent is stopped, one SIGCHLD, four reaps"),
}


def first_stamp(trace_path):
    """T of the first event timeline.py draws (the origin of its axis)."""
    with open(trace_path, errors="replace") as f:
        events, _ = tracelog.read_events(f.read().splitlines())
    if not events:
        raise Failed("no --trace=process line in %s" % trace_path)
    return events[0][0]


def picture(name, out, keep_traces):
    args, scenario, title = SCENARIOS[name]
    trace_path = os.path.join(out if keep_traces else tempfile.gettempdir(),
                              "%s-%d.log" % (name, os.getpid()))
    server = TracedServer(args, trace_path)
    try:
        scenario(server)
    finally:
        stopped_at = server.stop()
    # Up to the SIGTERM: the stop path reaps what the lab's reaper left.
    until_ms = (stopped_at - first_stamp(trace_path)) * 1000
    svg = os.path.join(out, "%s-timeline.svg" % name)
    done = subprocess.run([sys.executable, os.path.join(ROOT, "scripts", "timeline.py"),
                           trace_path, "-o", svg, "--title", title, "--until", "%.3f" % until_ms],
                          capture_output=True, text=True, timeout=60)
    if not keep_traces:
        os.unlink(trace_path)
    if done.returncode != 0:
        raise Failed("timeline.py: %s" % done.stderr.strip())
    print(done.stdout.strip())


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--out", default=os.path.join(ROOT, "docs", "img"),
                   help="directory for the SVG files (default docs/img)")
    p.add_argument("--only", choices=sorted(SCENARIOS), action="append",
                   help="one scenario (repeatable; default all)")
    p.add_argument("--keep-traces", action="store_true", help="keep each trace log beside its SVG")
    args = p.parse_args(argv)
    os.makedirs(args.out, exist_ok=True)
    try:
        for name in args.only or sorted(SCENARIOS):
            picture(name, args.out, args.keep_traces)
    except Failed as exc:
        print("lab_timelines.py: %s" % exc, file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
