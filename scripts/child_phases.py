"""Where a child's time and page faults go, phase by phase.

    python scripts/child_phases.py                                   # hello, 800 requests
    python scripts/child_phases.py --app examples.bench_apps:flask_app

A checkout of the code (``--rev``, default HEAD) is made in a throwaway git
worktree and scripts/child_phases.patch is applied to it: about twelve calls
of ``_probe.mark(label)`` in ``ChildPlan.run`` and the connection handler,
each taking the monotonic clock and the process's minor-fault count
(getrusage), and one line per child written to a log when it is done.  The
server is started there with default options (``--bind``, ``--no-access-log``),
200 unmeasured sequential ``Connection: close`` requests are sent, then
``--requests`` measured ones (the children's lines after the first 200),
and the script prints the median time and the median faults of each phase
over the children.

A fault is counted in the phase that first writes a page the child shares
with its parent (or first touches a fresh one): the attribution is "who got
there first", so a phase that touches a page later phases also need is
charged for it.  Each mark costs about a fault and 3 us of its own, charged
to the phase it ends; the sum is therefore a little above an unmarked child's.
The patch is tied to the code it was written for: if it no longer applies,
the script says so and stops.
"""

import argparse
import os
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
PATCH = os.path.join(HERE, "child_phases.patch")
WARM_UP_REQUESTS = 200


def worktree(rev, where):
    subprocess.run(["git", "-C", ROOT, "worktree", "add", "--detach", "-q", where, rev], check=True)
    applied = subprocess.run(["git", "-C", where, "apply", PATCH], capture_output=True, text=True)
    if applied.returncode:
        raise SystemExit("child_phases.patch does not apply to %s (the code moved; "
                         "update the patch): %s" % (rev, applied.stderr.strip()))


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def request(port, deadline):
    with socket.create_connection(("127.0.0.1", port), timeout=5) as s:
        s.sendall(b"GET / HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n")
        while s.recv(65536):
            if time.monotonic() > deadline:
                raise SystemExit("a response took too long")


def wait_ready(port, server, deadline, errors):
    while time.monotonic() < deadline:
        if server.poll() is not None:
            errors.seek(0)
            raise SystemExit("the server exited with status %d: %s"
                             % (server.returncode, errors.read()[-2000:]))
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return
        except OSError:
            time.sleep(0.05)
    raise SystemExit("the server did not start")


def measure(where, app, count, log, warm_up=WARM_UP_REQUESTS):
    port = free_port()
    env = dict(os.environ, FORKSERVER_PHASES_LOG=log, PYTHONPATH=where)
    errors = open(log + ".stderr", "w+")
    server = subprocess.Popen([sys.executable, "-m", "forkserver", app, "--bind",
                               "127.0.0.1:%d" % port, "--no-access-log"],
                              cwd=where, env=env, stdout=subprocess.DEVNULL, stderr=errors)
    try:
        wait_ready(port, server, time.monotonic() + 30, errors)
        deadline = time.monotonic() + 300
        for _ in range(warm_up + count):
            request(port, deadline)
    finally:
        server.terminate()   # a graceful stop: the last child writes its line first
        server.wait(timeout=30)
        errors.close()
    return read_log(log, skip=warm_up)


def read_log(log, skip=0):
    """The phases of each child after the first ``skip`` (one line each)."""
    phases = {}
    with open(log) as f:
        lines = f.readlines()[skip:]
        for line in lines:
            for field in line.split():
                label, ns, faults = field.rsplit(":", 2)
                phases.setdefault(label.replace("_", " "), []).append((int(ns), int(faults)))
    return phases


def report(phases):
    print("%-28s %10s %8s" % ("phase", "us", "faults"))
    total_us = total_faults = 0
    for label, values in phases.items():
        us = statistics.median(v[0] for v in values) / 1e3
        faults = statistics.median(v[1] for v in values)
        total_us, total_faults = total_us + us, total_faults + faults
        print("%-28s %10.1f %8.1f" % (label, us, faults))
    print("%-28s %10.1f %8.1f" % ("sum of the medians", total_us, total_faults))
    print("(%d children)" % min(len(v) for v in phases.values()))


def run(rev, app, requests):
    """{phase: [(ns, faults) per child]} of ``rev`` serving ``app``."""
    tmp = tempfile.mkdtemp(prefix="child-phases-")
    where = os.path.join(tmp, "tree")
    try:
        worktree(rev, where)
        return measure(where, app, requests, os.path.join(tmp, "phases.log"))
    finally:
        subprocess.run(["git", "-C", ROOT, "worktree", "remove", "--force", where],
                       capture_output=True)
        shutil.rmtree(tmp, ignore_errors=True)


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--app", default="examples.bench_apps:hello")
    p.add_argument("--requests", type=int, default=800)
    p.add_argument("--rev", default="HEAD", help="the commit to measure (default HEAD)")
    args = p.parse_args()
    report(run(args.rev, args.app, args.requests))


if __name__ == "__main__":
    main()
