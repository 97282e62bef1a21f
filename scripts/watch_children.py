#!/usr/bin/env python3
"""watch_children.py PID: watch a forkserver parent and its children.

Every --interval seconds (or once, with --json) it prints the parent's
children by state (running, sleeping, zombie, other), the parent's open file
descriptors and resident memory: these are read from /proc by this script at
the moment of the line, and are the figures to trust.  Beside them, what the
parent says of itself (its count of live children and their high-water
mark), which lags behind:

  - from its --status-file (JSON) when you pass the same path here: the
    server rewrites it at most once a second, so the line says how old it is;
  - else from its process title ("forkserver: parent ADDR children=N
    high-water=M", with setproctitle), rewritten once per loop turn: during a
    burst it can be behind, and the line says so.

    12:00:01 pid 1234: running 2 sleeping 5 zombie 0 other 0 | fds 7 rss 21.3 MiB | parent says children=7 high-water=9 (status file, written 0.4 s ago)
    12:00:01 pid 1234: running 2 sleeping 5 zombie 0 other 0 | fds 7 rss 21.3 MiB | parent's title says children=6 high-water=9 (process title: may lag in a burst)

A zombie is a child that exited and was not reaped yet; a correct parent reaps
within milliseconds.  The exit status is 1 when a zombie persists longer than
--zombie-threshold seconds, 2 when PID is not there or --status-file is not
a file, 0 otherwise.

    python scripts/watch_children.py 12345 --interval 0.5
    python scripts/watch_children.py 12345 --status-file /tmp/fs-$USER.json
    python scripts/watch_children.py 12345 --json --status-file /tmp/fs-$USER.json
"""
import argparse
import json
import os
import re
import sys
import time

import psutil

DEFAULT_INTERVAL_SECONDS = 1.0
DEFAULT_ZOMBIE_THRESHOLD_SECONDS = 1.0
ONCE_POLL_SECONDS = 0.05     # --json: how often a zombie is looked at again
EXIT_OK, EXIT_ZOMBIES, EXIT_USAGE = 0, 1, 2
TITLE_RE = re.compile(r"children=(\d+) high-water=(\d+)")
STATES = {psutil.STATUS_RUNNING: "running", psutil.STATUS_SLEEPING: "sleeping",
          psutil.STATUS_DISK_SLEEP: "sleeping", psutil.STATUS_IDLE: "sleeping",
          psutil.STATUS_ZOMBIE: "zombie"}


def children_of(parent):
    """The parent's children, from the kernel's own lists
    (/proc/PID/task/TID/children), not psutil's children(): that one drops a
    child whose start time looks older than its parent's, and start times
    jitter on some VMs (tests/conftest.py's children_of saw [] for seconds)."""
    pids = []
    try:
        for tid in os.listdir("/proc/%d/task" % parent.pid):
            with open("/proc/%d/task/%s/children" % (parent.pid, tid)) as f:
                pids += [int(pid) for pid in f.read().split()]
    except OSError:
        return parent.children()            # no such list here: psutil's guess
    found = []
    for pid in pids:
        try:
            found.append(psutil.Process(pid))
        except psutil.NoSuchProcess:
            pass                            # reaped between the list and the look
    return found


def snapshot(parent, status_file):
    """One look at the parent and its direct children."""
    counts = {"running": 0, "sleeping": 0, "zombie": 0, "other": 0}
    zombies = []
    for child in children_of(parent):
        try:
            state = STATES.get(child.status(), "other")
        except psutil.NoSuchProcess:
            continue   # exited and reaped between the listing and the look
        counts[state] += 1
        if state == "zombie":
            zombies.append(child.pid)
    with parent.oneshot():
        snap = {"pid": parent.pid, "time": round(time.time(), 3), "children": counts,
                "zombie_pids": zombies, "open_fds": parent.num_fds(),
                "rss_bytes": parent.memory_info().rss,
                "title": " ".join(parent.cmdline()).strip()}
    snap["parent_reports"] = parent_reports(snap["title"], status_file)
    return snap


def parent_reports(title, status_file):
    """The parent's own live-children count and high-water mark, or None:
    from the status file (with its age) if one is given and readable, else
    from the title, which may lag.  "unreadable" says why the file was not."""
    own, unreadable = read_status_file(status_file) if status_file else (None, None)
    if own is None:
        own = read_title(title)
    if own is None and unreadable is not None:
        own = {"source": None}
    if own is not None:
        own["unreadable"] = unreadable
    return own


def read_status_file(path):
    """({counts..., "age_seconds"}, None), or (None, why it cannot be read)."""
    try:
        with open(path) as f:
            data = json.load(f)
        return {"children": data["children"], "high_water": data["high_water"],
                "served": data.get("served"), "source": "status file",
                "age_seconds": round(max(0.0, time.time() - data["time"]), 3),
                "may_lag": True}, None
    except OSError as exc:
        return None, exc.strerror
    except (ValueError, KeyError, TypeError):
        return None, "not a forkserver --status-file"


def read_title(title):
    match = TITLE_RE.search(title)
    if not match:
        return None
    return {"children": int(match.group(1)), "high_water": int(match.group(2)),
            "served": None, "source": "process title", "age_seconds": None, "may_lag": True}


def describe_parent(own):
    """What the line says of the parent's own counts, with where they come from."""
    if own is None:
        return "parent counts unknown (no --status-file, no title)"
    broken = ("--status-file unreadable (%s); " % own["unreadable"]) if own["unreadable"] else ""
    if own["source"] == "status file":
        return ("parent says children=%d high-water=%d (status file, written %.1f s ago)"
                % (own["children"], own["high_water"], own["age_seconds"]))
    if own["source"] == "process title":
        return ("%sparent's title says children=%d high-water=%d (process title: may lag "
                "in a burst)" % (broken, own["children"], own["high_water"]))
    return broken + "parent counts unknown (no title)"


class ZombieClock:
    """How long each zombie pid has been seen, across snapshots."""

    def __init__(self):
        self.first_seen = {}

    def update(self, zombie_pids, now):
        self.first_seen = {pid: self.first_seen.get(pid, now) for pid in zombie_pids}

    def overdue(self, now, threshold):
        return sorted(pid for pid, t in self.first_seen.items() if now - t > threshold)


def format_line(snap):
    c = snap["children"]
    mine = describe_parent(snap["parent_reports"])
    return ("%s pid %d: running %d sleeping %d zombie %d other %d | fds %d rss %.1f MiB | %s"
            % (time.strftime("%H:%M:%S"), snap["pid"], c["running"], c["sleeping"],
               c["zombie"], c["other"], snap["open_fds"], snap["rss_bytes"] / 2**20, mine))


def watch(parent, opts):
    """Print a line every interval; stop on --count, the parent's exit, or overdue zombies."""
    clock = ZombieClock()
    taken = 0
    while opts.count is None or taken < opts.count:
        snap = snapshot(parent, opts.status_file)
        taken += 1
        print(format_line(snap), flush=True)
        clock.update(snap["zombie_pids"], time.monotonic())
        overdue = clock.overdue(time.monotonic(), opts.zombie_threshold)
        if overdue:
            print("zombies unreaped for over %.1fs: %s" % (opts.zombie_threshold, overdue))
            return EXIT_ZOMBIES
        time.sleep(opts.interval)
    return EXIT_OK


def once(parent, opts):
    """One JSON snapshot; a zombie in it is looked at again until the threshold."""
    clock = ZombieClock()
    while True:
        snap = snapshot(parent, opts.status_file)
        now = time.monotonic()
        clock.update(snap["zombie_pids"], now)
        overdue = clock.overdue(now, opts.zombie_threshold)
        if not snap["zombie_pids"] or overdue:
            break
        time.sleep(ONCE_POLL_SECONDS)
    snap["zombies_overdue"] = overdue
    print(json.dumps(snap, indent=2))
    return EXIT_ZOMBIES if overdue else EXIT_OK


def non_negative(text):
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError("%r is not a number" % text) from None
    if value < 0:
        raise argparse.ArgumentTypeError("%r is negative" % text)
    return value


def build_parser():
    p = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0], epilog=__doc__.split("\n\n", 1)[1],
        formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("pid", type=int, help="the forkserver parent's pid")
    p.add_argument("--interval", type=non_negative, default=DEFAULT_INTERVAL_SECONDS,
                   help="seconds between lines (default %(default)s)")
    p.add_argument("--count", type=int, default=None, help="stop after this many lines")
    p.add_argument("--json", action="store_true", help="print one JSON snapshot and exit")
    p.add_argument("--zombie-threshold", type=non_negative,
                   default=DEFAULT_ZOMBIE_THRESHOLD_SECONDS,
                   help="a zombie older than this fails the run (default %(default)s s)")
    p.add_argument("--status-file", metavar="PATH",
                   help="the parent's --status-file, for its own counts")
    return p


def main(argv=None):
    opts = build_parser().parse_args(argv)
    if opts.status_file and not os.path.isfile(opts.status_file):
        sys.stderr.write("watch_children.py: --status-file %s: no such file (give the path the "
                         "server was started with: --status-file PATH)\n" % opts.status_file)
        return EXIT_USAGE
    try:
        parent = psutil.Process(opts.pid)
        return once(parent, opts) if opts.json else watch(parent, opts)
    except psutil.NoSuchProcess:
        sys.stderr.write("watch_children.py: no process %d (or it exited)\n" % opts.pid)
        return EXIT_USAGE
    except psutil.AccessDenied:
        sys.stderr.write("watch_children.py: not allowed to inspect process %d\n" % opts.pid)
        return EXIT_USAGE
    except KeyboardInterrupt:
        return EXIT_OK


if __name__ == "__main__":
    sys.exit(main())
