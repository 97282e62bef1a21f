#!/usr/bin/env python3
"""huge_pages_after_fork.py: what is left of the parent's huge pages once it serves.

forkserver collapses the nearly full 2 MiB ranges of its heap into huge pages
at start (forkparts/accel.py, collapse_heap; --no-huge-pages turns it off).  A
huge page is one page-table entry that fork() copies instead of 512, but the
parent writes into its heap after every fork, and a write into a huge page
that a child shares splits it back into 512 entries.  This shows, on a live
server, how much of the heap is mapped huge at start and after a few
connections, and how many of those ranges' pages still sit in 2 MiB blocks of
memory (large folios: /proc/kpageflags, root only); then, on a synthetic
region, what fork() and a child's exit cost with 4 KiB pages, with huge pages,
and with huge pages split the way the parent splits them:

    python scripts/huge_pages_after_fork.py                  # hello, then 32 MiB
    python scripts/huge_pages_after_fork.py --app examples.bench_apps:flask_app
    python scripts/huge_pages_after_fork.py --synthetic-only --mib 8 --forks 50

Linux only; the synthetic part needs MADV_COLLAPSE (Linux 6.1+, transparent
huge pages not "never").  docs/performance.md, "Huge pages after the first
connection", has the figures.
"""
import argparse
import ctypes
import mmap
import os
import re
import resource
import socket
import statistics
import struct
import subprocess
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
if ROOT not in sys.path:
    sys.path.insert(0, ROOT)

from forkparts import accel   # noqa: E402 - the ranges collapse_heap picks

HUGE = 2 << 20
PAGE = 4096
MADV_HUGEPAGE = 14
KPF_THP = 22                       # /proc/kpageflags bit: in a transparent huge page (large folio)
PFN_MASK = (1 << 55) - 1
READY_TIMEOUT_SECONDS = 30.0


def parse_args(argv):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--app", default="examples.bench_apps:hello")
    p.add_argument("--requests", type=int, default=20,
                   help="connections served before the second look (default 20)")
    p.add_argument("--mib", type=int, default=32, help="size of the synthetic region")
    p.add_argument("--forks", type=int, default=300, help="forks per synthetic measurement")
    p.add_argument("--synthetic-only", action="store_true")
    args = p.parse_args(argv)
    if args.requests < 1 or args.mib < 2 or args.mib % 2 or args.forks < 10:
        p.error("--requests >= 1, --mib an even number >= 2 (whole 2 MiB ranges) "
                "and --forks >= 10")
    return args


def anon_huge_kib(pid="self"):
    with open("/proc/%s/smaps_rollup" % pid) as f:
        for line in f:
            if line.startswith("AnonHugePages:"):
                return int(line.split()[1])
    return 0


def pages_in_large_folios(pid):
    """(pages resident, pages in a transparent huge page) over every 2 MiB
    range of the heap that collapse_heap considers; None without
    /proc/kpageflags (not root)."""
    try:
        with open("/proc/%d/maps" % pid) as maps:
            starts = list(accel.heap_huge_ranges(maps))
        with open("/proc/%d/pagemap" % pid, "rb") as pagemap, \
                open("/proc/kpageflags", "rb") as kpageflags:
            resident = in_thp = 0
            for start in starts:
                pagemap.seek(start // PAGE * 8)
                for entry in struct.unpack("512Q", pagemap.read(512 * 8)):
                    if not entry >> 63:
                        continue
                    resident += 1
                    kpageflags.seek((entry & PFN_MASK) * 8)
                    in_thp += struct.unpack("Q", kpageflags.read(8))[0] >> KPF_THP & 1
            return resident, in_thp
    except OSError:
        return None


def get(port):
    with socket.create_connection(("127.0.0.1", port), timeout=10) as conn:
        conn.sendall(b"GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        while conn.recv(65536):
            pass


def wait_ready(server):
    """The server's output up to its ready line (which comes after the
    collapse); exits with its output if it ends or is not ready in time."""
    deadline, log = time.monotonic() + READY_TIMEOUT_SECONDS, []
    os.set_blocking(server.stdout.fileno(), False)
    while time.monotonic() < deadline:
        line = server.stdout.readline()
        if line:
            log.append(line)
            if line.startswith("forkserver ready"):
                return "".join(log)
        elif server.poll() is not None:
            break
        else:
            time.sleep(0.05)
    sys.exit("huge_pages_after_fork.py: the server did not start:\n" + "".join(log))


def live_server(args):
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    server = subprocess.Popen(
        [sys.executable, "-m", "forkserver", args.app, "--bind", "127.0.0.1:%d" % port,
         "--no-access-log"], cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
        text=True)
    try:
        found = re.search(r"huge pages: (\d+) MiB", wait_ready(server))
        print("%s: collapse_heap at start: %s MiB" % (args.app, found.group(1) if found else "-"))
        rows = [("at start", anon_huge_kib(server.pid), pages_in_large_folios(server.pid))]
        for _ in range(args.requests):
            get(port)
        time.sleep(0.2)
        rows.append(("after %d connections" % args.requests, anon_huge_kib(server.pid),
                     pages_in_large_folios(server.pid)))
        print("| parent | mapped huge (AnonHugePages) | pages of those ranges in 2 MiB folios |")
        print("|---|---:|---:|")
        for what, kib, folios in rows:
            print("| %s | %d KiB | %s |" % (what, kib, "%d of %d" % folios[::-1] if folios
                                                  else "- (needs root)"))
    finally:
        server.terminate()
        server.wait(10)
        server.stdout.close()


def libc_madvise():
    libc = ctypes.CDLL(None, use_errno=True)
    libc.madvise.argtypes = (ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int)
    return libc.madvise


def synthetic_region(kind, mib, madvise):
    """A private region of ``mib`` MiB, written: "4k" pages, "huge" (collapsed),
    or "split" (collapsed, then split by one write per range after a fork)."""
    region = mmap.mmap(-1, (mib + 2) * (1 << 20), flags=mmap.MAP_PRIVATE | mmap.MAP_ANONYMOUS)
    base = ctypes.addressof(ctypes.c_char.from_buffer(region))
    start, size = -(-base // HUGE) * HUGE, mib << 20
    if kind != "4k":
        madvise(start, size, MADV_HUGEPAGE)
    ctypes.memset(start, 1, size)
    if kind != "4k" and madvise(start, size, accel.MADV_COLLAPSE) != 0:
        sys.exit("huge_pages_after_fork.py: madvise(MADV_COLLAPSE) failed: %s (needs "
                 "Linux 6.1+, transparent huge pages not \"never\")"
                 % os.strerror(ctypes.get_errno()))
    if kind == "split":
        pid = os.fork()
        if pid == 0:
            time.sleep(0.2)   # alive while the parent writes, as a served child is
            os._exit(0)
        for offset in range(0, size, HUGE):
            ctypes.memset(start + offset, 2, 1)
        os.waitpid(pid, 0)
    return region


def fork_and_exit_us(forks):
    """Median over 5 batches of (parent CPU per fork, child CPU per fork),
    the child exiting at once."""
    rows = []
    for _ in range(5):
        s0, c0 = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
        for _ in range(forks):
            pid = os.fork()
            if pid == 0:
                os._exit(0)
            os.waitpid(pid, 0)
        s1, c1 = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
        rows.append(tuple((b.ru_utime - a.ru_utime + b.ru_stime - a.ru_stime) / forks * 1e6
                          for a, b in ((s0, s1), (c0, c1))))
    return tuple(statistics.median(r[i] for r in rows) for i in (0, 1))


def synthetic(args):
    madvise = libc_madvise()
    print("\n%d MiB written, then %d forks x 5, the child exiting at once (medians, CPU us):"
          % (args.mib, args.forks))
    print("| the region | mapped huge | fork() (parent) | exit (child) |")
    print("|---|---:|---:|---:|")
    for kind, what in (("4k", "4 KiB pages"), ("huge", "huge pages"),
                       ("split", "huge pages, split by the parent's writes after a fork")):
        before = anon_huge_kib()
        region = synthetic_region(kind, args.mib, madvise)
        mapped = anon_huge_kib() - before
        fork_and_exit_us(10)
        parent, child = fork_and_exit_us(args.forks)
        print("| %s | %d KiB | %.0f | %.0f |" % (what, mapped, parent, child))
        region.close()


def main(argv=None):
    args = parse_args(argv)
    if not sys.platform.startswith("linux"):
        sys.exit("huge_pages_after_fork.py: Linux only")
    if not args.synthetic_only:
        live_server(args)
    synthetic(args)


if __name__ == "__main__":
    main()
