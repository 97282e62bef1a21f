#!/usr/bin/env python3
"""kernel_split.py: where a connection's CPU goes, by process and kernel path.

Starts the bare fork floor and forkserver (default options) on the same app,
one after the other, and under each runs wrk (``Connection: close``) while
``perf record -g -p SERVER`` samples the server and every child it forks
(perf follows the children).  Each sample is put in the process it came from
(the parent, or a child) and in the path it was on, read from its call
chain: fork() (clone), exit (exit_group), a page fault, another system call
(named), or user space (libpython, another library).  The result is CPU
microseconds per request for each, side by side:

    python scripts/kernel_split.py                                # hello, 1 client, 5 s
    python scripts/kernel_split.py --app examples.bench_apps:flask_app --clients 8
    python scripts/kernel_split.py --servers forkserver-tuned,before-tuned --checkout before=../old

Needs perf (linux-tools) and wrk, run as root or with perf_event_paranoid <= 1.
perf's sampling costs time of its own, so requests per second here are lower
than scripts/bench.py's; the split between paths is what this is for
(docs/performance.md, "Where a connection's CPU goes").
"""
import argparse
import collections
import os
import re
import subprocess
import sys
import tempfile

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
for path in (HERE, ROOT):
    if path not in sys.path:
        sys.path.insert(0, path)

import bench                       # noqa: E402 - the servers, started as bench.py does

FREQUENCY = 2999                   # samples per second per CPU
FORK_RE = re.compile(r"PERF_RECORD_FORK\((\d+):\d+\):\((\d+):\d+\)")
SYSCALL_RE = re.compile(r"__(?:x64|do|se)_sys_(\w+)")
PATH_NAMES = {"clone": "fork()", "clone3": "fork()", "exit_group": "exit", "wait4": "waitpid()"}


def parse_args(argv):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--app", default="examples.bench_apps:hello")
    p.add_argument("--clients", type=int, default=1)
    p.add_argument("--seconds", type=float, default=5.0)
    p.add_argument("--servers", default="floor,forkserver",
                   help="comma-separated bench.py server names (floor: floor+flask for "
                        "a Flask app; forkserver-tuned, stdlib, LABEL of a --checkout)")
    p.add_argument("--checkout", action="append", default=[], metavar="LABEL=PATH",
                   type=bench.checkout_arg,
                   help="another checkout of forkserver, as bench.py's --checkout")
    args = p.parse_args(argv)
    bench.CHECKOUTS.update(args.checkout)
    return args


def record(name, spec, args, workdir):
    """Run wrk against one server under a system-wide perf record (a child's
    exit is not sampled when perf follows the server's pid); (perf.data path,
    server pid, requests)."""
    server = bench.Running(name, spec, workdir)
    try:
        url = server.url
        bench.run_wrk(url, args.clients, 1)   # warm: the page cache, the first children
        data = os.path.join(workdir, name + ".data")
        perf = subprocess.Popen(["perf", "record", "-q", "-a", "-g", "-F", str(FREQUENCY),
                                 "-o", data],
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        result = bench.run_wrk(url, args.clients, args.seconds)
        perf.send_signal(subprocess.signal.SIGINT)
        perf.wait()
        return data, server.proc.pid, result["requests"]
    finally:
        server.stop()


def path_of(frames):
    """The kernel path or user-space library of one sample (innermost first)."""
    for frame in frames:
        if "asm_exc_page_fault" in frame:
            return "page fault"
        match = SYSCALL_RE.search(frame)
        if match:
            name = match.group(1)
            return PATH_NAMES.get(name, name + "()")
        if "ret_from_fork" in frame:
            return "fork() (the child's return)"
    top = frames[0] if frames else ""
    library = top.rsplit("(", 1)[-1].rstrip(")").rsplit("/", 1)[-1]
    if library == "[kernel.kallsyms]":
        return "kernel, other (interrupts, scheduling)"
    return "user: " + ("libpython" if library.startswith("libpython") else library or "?")


def split(data, parent_pid):
    """{(role, path): samples} from one perf.data (split_text)."""
    return split_text(subprocess.run(
        ["perf", "script", "-i", data, "--show-task-events", "-F", "pid,ip,sym,dso"],
        capture_output=True, text=True).stdout, parent_pid)


def split_text(text, parent_pid):
    """{(role, path): samples} from perf script's text: the server's parent,
    the children it forked (perf's fork records name them), nothing else."""
    children = {int(child) for child, parent in FORK_RE.findall(text)
                if int(parent) == parent_pid}
    counts = collections.Counter()
    for sample in text.split("\n\n"):
        lines = [line.split() for line in sample.strip().splitlines()
                 if line.strip() and "PERF_RECORD" not in line]
        if not lines:
            continue
        pid = int(lines[0][0])
        if pid != parent_pid and pid not in children:
            continue
        frames = [" ".join(line[1:]) for line in lines[1:]]   # innermost first
        counts["parent" if pid == parent_pid else "child", path_of(frames)] += 1
    return counts


def report(results):
    """One table: microseconds of CPU per request, per role and path."""
    per_request = {name: {key: n * 1e6 / FREQUENCY / requests for key, n in counts.items()}
                   for name, (counts, requests) in results.items()}
    keys = sorted({key for table in per_request.values() for key in table},
                  key=lambda k: (k[0] != "parent", -max(t.get(k, 0) for t in per_request.values())))
    names = list(results)
    print("CPU us per request (perf samples at %d Hz)" % FREQUENCY)
    print("| process | path | " + " | ".join(names) + " |")
    print("|---|---|" + "---:|" * len(names))
    for role in ("parent", "child"):
        for key in [k for k in keys if k[0] == role]:
            if max(per_request[n].get(key, 0) for n in names) >= 2.0:
                print("| %s | %s | " % key + " | ".join("%.0f" % per_request[n].get(key, 0)
                                                        for n in names) + " |")
        print("| **%s, all** | | " % role + " | ".join(
            "**%.0f**" % sum(v for k, v in per_request[n].items() if k[0] == role)
            for n in names) + " |")
    print("requests: " + ", ".join("%s %d" % (n, results[n][1]) for n in names))


def main(argv=None):
    args = parse_args(argv)
    flask = "flask" in args.app
    results = {}
    with tempfile.TemporaryDirectory() as workdir:
        for name in args.servers.split(","):
            if name == "floor" and flask:
                name = "floor+flask"
            data, pid, requests = record(name, args.app, args, workdir)
            results[name] = (split(data, pid), requests)
    report(results)


if __name__ == "__main__":
    main()
