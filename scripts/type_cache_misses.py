"""Which attribute lookups miss CPython's type cache in every child.

    python scripts/type_cache_misses.py                                 # hello, 100 requests
    python scripts/type_cache_misses.py --app examples.bench_apps:flask_app

CPython keeps a cache of 4096 attribute lookups on types (the type's version
tag and the name -> what was found, or nothing).  Code that CPython has
specialized does not look there; code it has not (code that runs only in a
child, or that the warm-up did not run) does, and each miss writes the
cache's entry, a reference to the new name and the release of the name it
evicts: pages the child shares with its parent, copied on the write
(docs/performance.md, "The child's attribute lookups").

A checkout of ``--rev`` (default HEAD) is made in a throwaway git worktree
and scripts/type_cache_misses.patch is applied: the parent copies the cache
just before each fork, and each child compares its own with that copy as it
exits and writes what changed (the type, the name, what was found, the
cache's page, the entry it evicted) to a log.  Everything a child looked up
between its fork() and its exit is there: the interpreter's after-fork
handlers (those of threading, random and logging, where those are
imported), forkserver's set-up, the request, the app.  The script starts
the server with ``--bind`` and ``--no-access-log`` only, sends 50
unmeasured, then ``--requests`` measured sequential requests, and prints
each lookup that missed with the share of children it missed in, then the
median count per child.  The cache is a private struct of CPython 3.11 and
3.12; on other versions the patch finds no cache and the script says so.
The patch is tied to the code it was written for (3436fcc and later): if it
no longer applies, the script says so and stops
(tests/test_type_cache_misses_script.py checks it applies).
"""

import argparse
import collections
import os
import statistics

from child_phases import patched_worktree, serve

HERE = os.path.dirname(os.path.abspath(__file__))
PATCH = os.path.join(HERE, "type_cache_misses.patch")
WARM_UP_REQUESTS = 50
OURS = ("forkserver.", "__main__.", "wsgi_handler.", "forkparts.")


def measure(where, app, count, log, warm_up=WARM_UP_REQUESTS):
    """Each measured child's misses: a list of (type, name, found, page, evicted)."""
    serve(where, app, warm_up + count, log, dict(FORKSERVER_TYPE_CACHE_LOG=log))
    try:
        # One line per child, ended by "\n" alone: a type's name read from
        # the cache's memory may hold any byte, and splitlines() (or reading
        # with newline translation) also ends a line at \r, \x0c, \x1c-\x1e
        # or \x85, which counted one child as two (a CI run on 3.12).
        with open(log, newline="") as f:
            lines = f.read().split("\n")[:-1]
    except FileNotFoundError:
        lines = []
    if not lines:
        raise SystemExit("no child wrote its misses: this Python's type cache was not found "
                         "(the patch knows CPython 3.11 and 3.12)")
    if len(lines) != warm_up + count:
        raise SystemExit("%d children wrote their misses, not %d: a child failed, or "
                         "something else answered on the port" % (len(lines), warm_up + count))
    return [[tuple(field.split("|")) for field in line.split("\t") if field]
            for line in lines[warm_up:]]


def run(rev, app, requests):
    with patched_worktree(rev, [PATCH], "type-cache-") as (where, tmp):
        return measure(where, app, requests, os.path.join(tmp, "misses.log"))


def report(children):
    missed = collections.Counter((t, name, found) for child in children
                                 for t, name, found, _, _ in set(child))
    print("%6s  %-4s %-48s %s" % ("share", "", "type.attribute", "found"))
    for (t, name, found), n in sorted(missed.items(), key=lambda item: (-item[1], item[0])):
        print("%5.0f%%  %-4s %-48s %s" % (100.0 * n / len(children),
                                          "ours" if t.startswith(OURS) else "",
                                          "%s.%s" % (t, name), found))
    print("misses per child: median %g (ours %g), cache pages written: median %g (%d children)" % (
        statistics.median(len(child) for child in children),
        statistics.median(sum(1 for m in child if m[0].startswith(OURS)) for child in children),
        statistics.median(len({m[3] for m in child}) for child in children), len(children)))


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--app", default="examples.bench_apps:hello")
    p.add_argument("--requests", type=int, default=100, help="measured requests (default 100)")
    p.add_argument("--rev", default="HEAD", help="the commit to measure (default HEAD)")
    args = p.parse_args()
    if args.requests < 1:
        p.error("--requests must be at least 1")
    report(run(args.rev, args.app, args.requests))


if __name__ == "__main__":
    main()
