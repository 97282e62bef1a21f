"""Where a child's time and page faults go, phase by phase.

    python scripts/child_phases.py                                   # hello, 800 requests
    python scripts/child_phases.py --app examples.bench_apps:flask_app
    python scripts/child_phases.py --also scripts/child_phases_variants/regex_free_parse.patch

A checkout of the code (``--rev``, default HEAD) is made in a throwaway git
worktree and scripts/child_phases.patch is applied to it (then each ``--also``
patch, a variant to compare): thirteen calls of ``_probe.mark(label)`` in
``ChildPlan.run`` and the connection handler, each taking the monotonic clock
and the process's minor-fault count (getrusage), and one line per child
written to a log when it is done.  The server is started there with
``--bind`` and ``--no-access-log`` only (as scripts/bench.py starts it), 200
unmeasured sequential ``Connection: close`` requests are sent, then
``--requests`` measured ones (the children's lines after the first 200), and
the script prints the median time and the median faults of each phase over
the children, and the median of each child's sum.

The marks span ChildPlan.run, from its first line to serve()'s return: not
the child's return from fork() and the interpreter's after-fork handlers
before it, nor its exit after.  A fault is counted in the phase that first
writes a page the child shares with its parent (or first touches a fresh
one): the attribution is "who got there first", so a phase that touches a
page later phases also need is charged for it.  Each mark costs about a fault
and 3 us of its own, charged to the phase it ends.  The patch is tied to the
code it was written for: if it no longer applies, the script says so and
stops (tests/test_child_phases_script.py checks it applies).
"""

import argparse
import contextlib
import os
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time

from compare_servers import wait_listening   # the same wait as the other scripts

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
PATCH = os.path.join(HERE, "child_phases.patch")
WARM_UP_REQUESTS = 200


def worktree(rev, where, patches):
    made = subprocess.run(["git", "-C", ROOT, "worktree", "add", "--detach", "-q", where, rev],
                          capture_output=True, text=True)
    if made.returncode:
        raise SystemExit("cannot check out %s: %s" % (rev, made.stderr.strip()))
    for patch in patches:
        applied = subprocess.run(["git", "-C", where, "apply", os.path.abspath(patch)],
                                 capture_output=True, text=True)
        if applied.returncode:
            raise SystemExit("%s does not apply to %s (the code moved; update the patch): %s"
                             % (patch, rev, applied.stderr.strip()))


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def request(port, deadline):
    with socket.create_connection(("127.0.0.1", port), timeout=5) as s:
        s.sendall(b"GET / HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n")
        while s.recv(65536):
            if time.monotonic() > deadline:
                raise RuntimeError("a response took too long")


def measure(where, app, count, log, warm_up=WARM_UP_REQUESTS):
    """{phase: [(ns, faults) per child]} of the server in ``where``."""
    path = os.pathsep.join(p for p in (where, os.environ.get("PYTHONPATH")) if p)
    serve(where, app, warm_up + count, log, dict(FORKSERVER_PHASES_LOG=log, PYTHONPATH=path))
    return read_log(log, warm_up, count)


def serve(where, app, requests, log, env):
    """Start the server of ``where`` on ``app`` (environment ``env`` added),
    send ``requests`` sequential requests, stop it gracefully (so the last
    child finishes first); SystemExit with the server's stderr if any of it
    fails, and the server is never left running."""
    port = free_port()
    with open(log + ".stderr", "w+") as errors:
        server = subprocess.Popen([sys.executable, "-m", "forkserver", app, "--bind",
                                   "127.0.0.1:%d" % port, "--no-access-log"], cwd=where,
                                  env=dict(os.environ, **env), stdout=subprocess.DEVNULL,
                                  stderr=errors)
        try:
            wait_listening(port, server)
            deadline = time.monotonic() + 300
            for _ in range(requests):
                request(port, deadline)
            if server.poll() is not None:
                raise RuntimeError("the server exited with status %d" % server.returncode)
            stop(server)   # a graceful stop: the last child writes its line first
        except (RuntimeError, OSError) as exc:
            errors.seek(0)
            raise SystemExit("%s; the server said: %s" % (exc, errors.read()[-2000:]))
        finally:
            if server.poll() is None:
                server.kill()
                server.wait()


def stop(server):
    server.terminate()
    try:
        server.wait(timeout=30)
    except subprocess.TimeoutExpired:
        raise RuntimeError("the server did not stop in 30 s") from None


def read_log(log, warm_up, count):
    """The phases of each child after the first ``warm_up`` (one line each)."""
    try:
        with open(log) as f:
            lines = f.read().splitlines()
    except FileNotFoundError:
        lines = []
    if len(lines) != warm_up + count:
        raise SystemExit("%d children wrote their phases, not %d: a child failed, or "
                         "something else answered on the port" % (len(lines), warm_up + count))
    phases = {}
    for line in lines[warm_up:]:
        for field in line.split("\t"):
            label, ns, faults = field.rsplit("|", 2)
            phases.setdefault(label, []).append((int(ns), int(faults)))
    return phases


def report(phases):
    print("%-28s %10s %8s" % ("phase", "us", "faults"))
    for label, values in phases.items():
        print("%-28s %10.1f %8.1f" % (label, statistics.median(v[0] for v in values) / 1e3,
                                       statistics.median(v[1] for v in values)))
    children = list(zip(*phases.values()))
    print("%-28s %10.1f %8.1f" % (
        "a child's sum", statistics.median(sum(v[0] for v in c) for c in children) / 1e3,
        statistics.median(sum(v[1] for v in c) for c in children)))
    print("(%d children)" % len(children))


def run(rev, app, requests, also=()):
    """{phase: [(ns, faults) per child]} of ``rev`` (with the ``also`` patches) serving ``app``."""
    with patched_worktree(rev, [PATCH] + list(also), "child-phases-") as (where, tmp):
        return measure(where, app, requests, os.path.join(tmp, "phases.log"))


@contextlib.contextmanager
def patched_worktree(rev, patches, prefix):
    """(worktree of ``rev`` with ``patches`` applied, a scratch directory),
    both removed afterwards, on errors too."""
    tmp = tempfile.mkdtemp(prefix=prefix)
    where = os.path.join(tmp, "tree")
    try:
        worktree(rev, where, patches)
        yield where, tmp
    finally:
        # Twice forced: a worktree whose "git worktree add" was interrupted
        # is locked, and one --force leaves it.
        subprocess.run(["git", "-C", ROOT, "worktree", "remove", "-f", "-f", where],
                       capture_output=True)
        subprocess.run(["git", "-C", ROOT, "worktree", "prune"], capture_output=True)
        shutil.rmtree(tmp, ignore_errors=True)


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--app", default="examples.bench_apps:hello")
    p.add_argument("--requests", type=int, default=800, help="measured requests (default 800)")
    p.add_argument("--rev", default="HEAD", help="the commit to measure (default HEAD)")
    p.add_argument("--also", action="append", default=[], metavar="PATCH",
                   help="a variant's patch, applied after the marks (repeatable)")
    args = p.parse_args()
    if args.requests < 1:
        p.error("--requests must be at least 1")
    report(run(args.rev, args.app, args.requests, args.also))


if __name__ == "__main__":
    main()
