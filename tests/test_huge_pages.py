"""The parent's heap in huge pages (forkserver.collapse_heap): fork() copies
a 2 MiB huge page as one page-table entry instead of 512
(docs/performance.md, "Huge pages")."""
import ctypes
import re
import subprocess
import sys
import time

import forkserver
from tests.conftest import ROOT, http_get, needs

HUGE = forkserver.HUGE_PAGE_BYTES
PAGE = forkserver.PAGE_BYTES
MADV_NOHUGEPAGE = 15
PROT_RW = 0x1 | 0x2
MAP_PRIVATE_ANONYMOUS = 0x02 | 0x20
LOG_WAIT_SECONDS = 10.0

MAPS = """\
55d0a0000000-55d0a0500000 rw-p 00000000 00:00 0                          [heap]
7f0000100000-7f0000700000 rw-p 00000000 00:00 0 \n\
7f0000800000-7f0000c00000 rw-p 00000000 08:01 1234                       /usr/lib/libfoo.so
7f0000c00000-7f0001000000 r--p 00000000 00:00 0 \n\
7f0001000000-7f0001100000 rw-p 00000000 00:00 0 \n\
7ffc00000000-7ffc00400000 rw-p 00000000 00:00 0                          [stack]
"""


def libc_function(name, restype, *argtypes):
    function = getattr(ctypes.CDLL(None, use_errno=True), name)
    function.restype, function.argtypes = restype, argtypes
    return function


def private_mapping(size):
    """(address, munmap) of a fresh private anonymous mapping, as the
    allocator's arenas are (mmap.mmap(-1, n) would be a shared one)."""
    mmap_ = libc_function("mmap", ctypes.c_void_p, ctypes.c_void_p, ctypes.c_size_t,
                          ctypes.c_int, ctypes.c_int, ctypes.c_int, ctypes.c_long)
    munmap = libc_function("munmap", ctypes.c_int, ctypes.c_void_p, ctypes.c_size_t)
    address = mmap_(None, size, PROT_RW, MAP_PRIVATE_ANONYMOUS, -1, 0)
    assert address not in (None, ctypes.c_void_p(-1).value)
    return address, lambda: munmap(address, size)


def kernel_collapses():
    """Whether MADV_COLLAPSE works here (Linux 6.1+, THP not "never")."""
    madvise = libc_function("madvise", ctypes.c_int, ctypes.c_void_p, ctypes.c_size_t,
                            ctypes.c_int)
    address, unmap = private_mapping(2 * HUGE)
    try:
        start = -(-address // HUGE) * HUGE
        ctypes.memset(start, 1, HUGE)
        return madvise(start, HUGE, forkserver.MADV_COLLAPSE) == 0
    finally:
        unmap()


def test_the_ranges_are_the_aligned_2mib_ones_inside_private_anonymous_memory():
    starts = list(forkserver.heap_huge_ranges(MAPS.splitlines()))
    # Not the library's data, the read-only mapping, the 1 MiB one or the stack.
    assert starts == [0x55d0a0000000, 0x55d0a0200000, 0x7f0000200000, 0x7f0000400000]


def test_resident_pages_counts_the_pages_written():
    madvise = libc_function("madvise", ctypes.c_int, ctypes.c_void_p, ctypes.c_size_t,
                            ctypes.c_int)
    address, unmap = private_mapping(2 * HUGE)
    try:
        madvise(address, 2 * HUGE, MADV_NOHUGEPAGE)   # 4 KiB faults even with THP "always"
        start = -(-address // HUGE) * HUGE
        for i in range(100):
            ctypes.memset(start + 3 * i * PAGE, 1, 1)
        with open("/proc/self/pagemap", "rb") as pagemap:
            assert forkserver.resident_pages(pagemap, start) == 100
            ctypes.memset(start + PAGE, 1, 1)          # a page between two written ones
            assert forkserver.resident_pages(pagemap, start) == 101
    finally:
        unmap()


COLLAPSE_SCRIPT = r'''
import ctypes, re, sys
sys.path.insert(0, ROOT)
import forkserver
from tests.test_huge_pages import private_mapping, HUGE, PAGE

def huge_kb():
    return sum(int(line.split()[1]) for line in open("/proc/self/smaps")
               if line.startswith("AnonHugePages:"))

def sparse_resident():
    with open("/proc/self/pagemap", "rb") as pagemap:
        return forkserver.resident_pages(pagemap, sparse_start)

keep = [bytes(200) for _ in range(80000)]        # about 19 MiB of small objects
sparse, _ = private_mapping(2 * HUGE)
sparse_start = -(-sparse // HUGE) * HUGE
for i in range(10):
    ctypes.memset(sparse_start + 40 * i * PAGE, 1, 1)
before, sparse_before = huge_kb(), sparse_resident()
done = forkserver.collapse_heap()
print(done, before, huge_kb(), sparse_before, sparse_resident())
'''.replace("ROOT", repr(ROOT))


@needs(kernel_collapses(), "MADV_COLLAPSE: needs Linux 6.1+ with transparent huge pages "
       "not set to never")
def test_collapse_backs_the_dense_ranges_with_huge_pages_and_leaves_sparse_ones():
    out = subprocess.run([sys.executable, "-c", COLLAPSE_SCRIPT], cwd=ROOT,
                         capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    done, before, after, sparse_before, sparse_after = (int(x) for x in out.stdout.split())
    assert done >= 4 * HUGE                      # the 19 MiB heap holds several ranges
    assert after - before >= done // 1024        # kB now in huge pages
    # 10 of 512 pages resident: left alone, not made 2 MiB resident.
    assert sparse_before == sparse_after == 10


@needs(kernel_collapses(), "MADV_COLLAPSE: needs Linux 6.1+ with transparent huge pages "
       "not set to never")
def test_the_server_collapses_its_heap_and_serves(start_server):
    server = start_server("tests.apps:hello")
    deadline = time.monotonic() + LOG_WAIT_SECONDS
    while "huge pages:" not in server.log_text() and time.monotonic() < deadline:
        time.sleep(0.05)
    found = re.search(r"huge pages: (\d+) MiB of the parent's heap", server.log_text())
    assert found and int(found.group(1)) > 0, server.log_text()
    assert http_get(server, "/")[0] == 200


def test_no_huge_pages_leaves_the_heap_alone(start_server):
    server = start_server("tests.apps:hello", "--no-huge-pages")
    assert http_get(server, "/")[0] == 200
    assert "huge pages" not in server.log_text()
