#!/usr/bin/env python3
"""cow_demo.py PID: how much of each forkserver child's memory is its own.

After fork() a child shares every page with its parent (copy-on-write) until
one of them writes to it.  For each child of PID this prints:

    rss     resident memory, shared pages included (what `ps` calls RSS)
    uss     unique set size: pages only this child holds, i.e. the pages it
            (or the parent) wrote to since the fork; what killing it frees
    pss     proportional set size: private pages plus each shared page
            divided by the number of processes sharing it
    shared  rss - uss

Run it while children are alive (docs/labs.md, lab 8):

    python scripts/cow_demo.py 12345
    python scripts/cow_demo.py 12345 --json
"""
import argparse
import json
import sys

import psutil

KIB = 1024
EXIT_OK, EXIT_NO_CHILDREN, EXIT_USAGE = 0, 1, 2


def child_memory(parent):
    """[{pid, rss_kib, uss_kib, pss_kib, shared_kib}] for the live children."""
    rows = []
    for child in parent.children():
        try:
            info = child.memory_full_info()    # reads /proc/PID/smaps
        except (psutil.NoSuchProcess, psutil.ZombieProcess):
            continue
        rows.append({"pid": child.pid, "rss_kib": info.rss // KIB, "uss_kib": info.uss // KIB,
                     "pss_kib": info.pss // KIB, "shared_kib": (info.rss - info.uss) // KIB})
    return rows


def print_table(parent, rows):
    parent_rss = parent.memory_info().rss // KIB
    print("parent %d: rss %d KiB" % (parent.pid, parent_rss))
    print("%8s %10s %10s %10s %10s" % ("child", "rss KiB", "uss KiB", "pss KiB", "shared KiB"))
    for r in rows:
        print("%8d %10d %10d %10d %10d" % (r["pid"], r["rss_kib"], r["uss_kib"],
                                          r["pss_kib"], r["shared_kib"]))


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("pid", type=int, help="the forkserver parent's pid")
    p.add_argument("--json", action="store_true", help="print the rows as JSON")
    opts = p.parse_args(argv)
    try:
        parent = psutil.Process(opts.pid)
        rows = child_memory(parent)
        if opts.json:
            print(json.dumps({"parent_pid": parent.pid, "children": rows}, indent=2))
        else:
            print_table(parent, rows)
    except psutil.NoSuchProcess:
        sys.stderr.write("cow_demo.py: no process %d\n" % opts.pid)
        return EXIT_USAGE
    except psutil.AccessDenied:
        sys.stderr.write("cow_demo.py: not allowed to read the memory maps of %d's "
                         "children (run as their user or root)\n" % opts.pid)
        return EXIT_USAGE
    if not rows:
        sys.stderr.write("cow_demo.py: process %d has no live children right now\n" % opts.pid)
        return EXIT_NO_CHILDREN
    return EXIT_OK


if __name__ == "__main__":
    sys.exit(main())
