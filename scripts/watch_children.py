#!/usr/bin/env python3
"""watch_children.py PID: watch a forkserver parent and its children with psutil.

Every --interval seconds (or once, with --json) it prints the parent's
children by state (running, sleeping, zombie, other), the parent's open file
descriptors and resident memory, and the parent's own count of live children
and their high-water mark.  Those last two come from the parent itself, not
from sampling: from its --status-file (JSON, rewritten at most once a second)
when you pass the same path here, else from its process title
("forkserver: parent ADDR children=N high-water=M", with setproctitle).

A zombie is a child that exited and was not reaped yet; a correct parent reaps
within milliseconds.  The exit status is 1 when a zombie persists longer than
--zombie-threshold seconds, 2 when PID is not there, 0 otherwise.

    python scripts/watch_children.py 12345 --interval 0.5
    python scripts/watch_children.py 12345 --json --status-file /run/fs.json
"""
import argparse
import json
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


def snapshot(parent, status_file):
    """One look at the parent and its direct children."""
    counts = {"running": 0, "sleeping": 0, "zombie": 0, "other": 0}
    zombies = []
    for child in parent.children():
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
    """The parent's own live-children count and high-water mark, or None."""
    if status_file:
        try:
            with open(status_file) as f:
                data = json.load(f)
            return {"children": data["children"], "high_water": data["high_water"],
                    "served": data.get("served"), "source": "status file"}
        except (OSError, ValueError, KeyError):
            pass
    match = TITLE_RE.search(title)
    if match:
        return {"children": int(match.group(1)), "high_water": int(match.group(2)),
                "served": None, "source": "process title"}
    return None


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
    own = snap["parent_reports"]
    mine = ("parent says children=%d high-water=%d" % (own["children"], own["high_water"])
            if own else "parent counts unknown (no --status-file, no title)")
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
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
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
