"""Accelerations: the performance tricks, on the server's own objects only.

DESIGN note: this is the one module of tricks that trade clarity for copy-on-
write page faults or fork time (docs/performance.md gives each one's figure).
Each is a function acting on the server's own objects (its heap, its
listeners, its signal calls), never on the app's, a framework's or the standard library's
(DESIGN.md, issue 15); each says which private API it uses and why a public
one cannot do it.  The rest of the server reads correctly without any of
them: take this module away and only the figures change.
"""

import os
import re
import sys
from socket import socket as PySocket
from types import MethodType

from _socket import socket as _c_socket


# Each trick's version gate: the first and last CPython (major, minor) it runs
# on.  Its figures were measured on 3.11 (docs/performance.md); the private
# APIs were checked from 3.9 to 3.13.  A measurement narrows these later.
HUGE_PAGES_PYTHONS = ((3, 9), (3, 13))
ALLOCATOR_FILL_PYTHONS = ((3, 9), (3, 13))
FAST_ACCEPT_PYTHONS = ((3, 9), (3, 13))
RAW_SIGNALS_PYTHONS = ((3, 9), (3, 13))
# option dest -> (version gate, what the log line calls it)
TRICKS = {"huge_pages": (HUGE_PAGES_PYTHONS, "huge pages"),
          "allocator_fill": (ALLOCATOR_FILL_PYTHONS, "allocator fill"),
          "fast_accept": (FAST_ACCEPT_PYTHONS, "fast accept"),
          "raw_signals": (RAW_SIGNALS_PYTHONS, "raw signals")}
# Which tricks are on: all until configure() reads the switches (today's default).
enabled = dict.fromkeys(TRICKS, True)
# --fast-accept/--no-fast-accept: what neither of them means (a measurement decides).
FAST_ACCEPT_BY_DEFAULT = True


def configure(opts, log, listeners, version=sys.version_info[:2]):
    """Read the switches (--no-huge-pages, --no-allocator-fill,
    --no-fast-accept, --no-raw-signals) and the version gates into
    ``enabled``, one info line for each trick a gate turns off; install the
    fast accept on our listeners if it is on."""
    for name, (gate, what) in TRICKS.items():
        on = getattr(opts, name)
        if on is None:   # a pair of switches, neither given (--fast-accept)
            on = FAST_ACCEPT_BY_DEFAULT
        if on and not gate[0] <= version <= gate[1]:
            log.info("%s: off on Python %d.%d (measured on %d.%d to %d.%d)"
                     % ((what,) + version + gate[0] + gate[1]))
            on = False
        enabled[name] = on
    opts.huge_pages = enabled["huge_pages"]   # the Server reads the switch
    if enabled["fast_accept"]:
        install_fast_accept(listeners)


# ------------------------------------------------------------ fast accept

# Bound once: PySocket.__new__ and the C socket's __init__ (see fast_accept).
new_socket, init_socket = PySocket.__new__, _c_socket.__init__


def fast_accept(listener):
    """(socket, address) of the next connection, as Listener.accept() returns
    it, minus the Python layers of socket.py.

    socket.socket.accept() converts family and type to enums for the new
    object and runs socket.py's Python __init__: about 20 pages the parent
    writes per connection, each a copy-on-write fault after a fork.  This
    calls the private ``listener.sock._accept()`` (the C accept, returning
    the fd), then builds the socket.socket with ``PySocket.__new__`` and the
    C ``_socket.socket.__init__``, and sets the two slots socket.py's
    __init__ sets (``_io_refs``, ``_closed``).  No public API makes a
    socket.socket from an accepted fd without those Python frames."""
    fd, addr = listener.sock._accept()
    sock = new_socket(PySocket)
    init_socket(sock, listener.family, listener.type, 0, fd)
    sock._io_refs, sock._closed = 0, False
    return sock, addr


def install_fast_accept(listeners):
    """Make each of our Listeners' accept() the fast one (an attribute of that
    instance: the Listener class and socket.socket stay as they are)."""
    for listener in listeners:
        listener.accept = MethodType(fast_accept, listener)


# ------------------------------------------------------------ raw signals

def signal_calls():
    """(signal, pthread_sigmask) for the fork path and the child: the C
    functions of the private ``_signal`` module when the raw-signals trick
    is on, else signal.py's.

    signal.py wraps both to turn results into enums: signal.signal() makes
    the old handler a Handlers member, and for a handler that is a bound
    method (the parent's) Handlers(value) raises and formats a ValueError;
    pthread_sigmask() builds a set of Signals members.  A child restores six
    handlers and unblocks six signals, and that Python work writes pages it
    shares with the parent.  The public functions cannot be told to skip
    it, and the C functions take and do exactly the same otherwise."""
    if enabled["raw_signals"]:
        import _signal
        return _signal.signal, _signal.pthread_sigmask
    import signal
    return signal.signal, signal.pthread_sigmask


# -------------------------------------------------------------- the heap


# One row of sys._debugmallocstats()'s table: class, size, pools, blocks in use, free blocks.
PYMALLOC_ROW_RE = re.compile(r"^\s*\d+\s+(\d+)\s+\d+\s+\d+\s+(\d+)\s*$", re.M)
FILL_MAX_OBJECTS = 200000


def pymalloc_free_blocks():
    """{block size: free blocks in partly used pools} of CPython's small-object
    allocator, from the table sys._debugmallocstats() writes to fd 2; {} where
    this Python has no such table.

    Private API: sys._debugmallocstats(), whose text is parsed from a
    memfd put in place of fd 2 for the call.  No public API reports
    pymalloc's free blocks per size class (sys.getallocatedblocks() counts
    only the blocks in use, tracemalloc sees objects, not pools)."""
    debug = getattr(sys, "_debugmallocstats", None)
    if debug is None or not hasattr(os, "memfd_create"):
        return {}
    try:
        sys.stderr.flush()   # what Python holds for fd 2 goes there, not into the table
    except (AttributeError, ValueError, OSError):
        pass
    try:
        fd = os.memfd_create("forkserver-mallocstats")
        try:
            saved = os.dup(2)
            try:
                os.dup2(fd, 2)
                debug()
            finally:
                os.dup2(saved, 2)
                os.close(saved)
            text = os.pread(fd, 1 << 20, 0).decode("ascii", "replace")
        finally:
            os.close(fd)
    except OSError:   # no descriptor to spare (RLIMIT_NOFILE): no table, no fill
        return {}
    return {int(size): int(free) for size, free in PYMALLOC_ROW_RE.findall(text)}


def fill_allocator_holes():
    """Fill the free blocks of the allocator's partly used pools; return the
    filler, which the parent keeps.

    A child's new objects then go into fresh, contiguous blocks instead of
    into holes left by the parent's freed objects, scattered over pages the
    child shares with the parent: each page written there is a page copied
    (about 20 per hello child, docs/performance.md).  The blocks were already
    resident, so the parent hardly grows.  Every object made here is of a
    size class the table names: object() is 16 bytes, a float 24 (class 32),
    bytes(n) 33 + n.  Off with --no-allocator-fill (returns []).  Private
    API: the free-block table of sys._debugmallocstats (pymalloc_free_blocks)."""
    filler = []
    if not enabled["allocator_fill"]:
        return filler
    empty = sys.getsizeof(b"")
    for size, free in sorted(pymalloc_free_blocks().items(), reverse=True):
        count = min(free, FILL_MAX_OBJECTS - len(filler))
        # Iterating over bytes(count) yields the cached int 0: no temporary
        # object that would free a block again.
        if size == 16:
            filler.extend([object() for _ in bytes(count)])
        elif size == 32:
            filler.extend(map(float, bytes(count)))
        elif size >= empty + 1:
            filler.extend([bytes(size - empty) for _ in bytes(count)])
    return filler


# Huge pages for the parent's heap (collapse_heap).  MADV_COLLAPSE is Linux 6.1's
# synchronous khugepaged: it works whatever the THP sysfs mode but "never".
MADV_COLLAPSE = 25
HUGE_PAGE_BYTES = 2 << 20
PAGE_BYTES = 4096
# Collapse a 2 MiB range only when this many of its 512 pages are resident: the
# collapse makes the rest resident too, so the parent grows by at most 1/8.
HUGE_PAGE_MIN_RESIDENT = 448


def huge_pages_note():
    """collapse_heap's line for the log: how much, or why none could be."""
    collapsed = collapse_heap()
    if collapsed is None:
        return ("huge pages: not available here (they need Linux's madvise(MADV_COLLAPSE) "
                "and /proc/self/pagemap); --no-huge-pages turns this line off")
    return "huge pages: %d MiB of the parent's heap" % (collapsed // (1 << 20))


def collapse_heap():
    """Back the nearly full 2 MiB ranges of the parent's heap with huge pages;
    return the bytes collapsed (0 where the kernel cannot; None without Linux's
    madvise or /proc).

    fork() copies one page-table entry per 4 KiB page of the parent's private
    memory and the child's exit tears them down again: that is most of what a
    fork costs.  A huge page is one entry, but only until the parent's first
    write after a fork: the parent writes into every range of its heap at
    every connection, so from the first one on each is mapped by 4 KiB
    entries again.  What lasts is the 2 MiB block of memory behind them (a
    "large folio"): recent kernels (6.9 on) copy and tear down the entries of
    one such block in a batch, one reference count update for the run
    instead of one per page.  A child that writes into one copies only the page
    it wrote (docs/performance.md, "Fourth pass" and "Huge pages after the
    first connection").
    Run at start only: after a SIGHUP the heap also holds what the allocator
    freed of the old app, and collapsing that would copy it into huge pages
    (a reload test saw the parent 20 MB larger for a while).

    Off with --no-huge-pages.  No private CPython API: madvise(2) through
    ctypes, and /proc/self/maps and pagemap.  The public mmap.madvise()
    acts only on a mapping Python made, not on the allocator's heap."""
    if not sys.platform.startswith("linux"):
        return None
    try:
        import ctypes
        madvise = ctypes.CDLL(None, use_errno=True).madvise
        with open("/proc/self/maps") as maps, open("/proc/self/pagemap", "rb") as pagemap:
            ranges = [start for start in heap_huge_ranges(maps)
                      if resident_pages(pagemap, start) >= HUGE_PAGE_MIN_RESIDENT]
    except (ImportError, OSError, AttributeError, TypeError, ValueError):
        return None   # no ctypes, no /proc (a container may hide pagemap)
    madvise.argtypes = (ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int)
    # Each range is tried on its own: EINVAL means an old kernel or THP "never",
    # but also one mapping marked MADV_NOHUGEPAGE, and ENOMEM/EAGAIN one range
    # the kernel had no huge page for.  A failed call costs about a microsecond.
    return sum(HUGE_PAGE_BYTES for start in ranges
               if madvise(start, HUGE_PAGE_BYTES, MADV_COLLAPSE) == 0)


def heap_huge_ranges(maps):
    """Start addresses of the 2 MiB-aligned ranges inside the private anonymous
    mappings listed in /proc/self/maps (the heap and the allocator's arenas)."""
    for line in maps:
        fields = line.split()
        if fields[1] != "rw-p" or fields[5:] not in ([], ["[heap]"]):
            continue
        low, high = (int(x, 16) for x in fields[0].split("-"))
        start = -(-low // HUGE_PAGE_BYTES) * HUGE_PAGE_BYTES
        yield from range(start, high - HUGE_PAGE_BYTES + 1, HUGE_PAGE_BYTES)


def resident_pages(pagemap, start):
    """How many 4 KiB pages of the 2 MiB range at ``start`` are resident
    (bit 63 of each /proc/self/pagemap entry)."""
    pagemap.seek(start // PAGE_BYTES * 8)
    entries = memoryview(pagemap.read(HUGE_PAGE_BYTES // PAGE_BYTES * 8)).cast("Q")
    return sum(entry >> 63 for entry in entries)
