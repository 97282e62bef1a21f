"""The parent's heap in huge pages (forkparts.accel.collapse_heap): fork() copies
a 2 MiB huge page as one page-table entry instead of 512
(docs/performance.md, "Huge pages")."""
import ctypes
import json
import re
import subprocess
import sys
import time

from forkparts import accel
from tests.conftest import ROOT, http_get, needs

HUGE = accel.HUGE_PAGE_BYTES
PAGE = accel.PAGE_BYTES
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
        return madvise(start, HUGE, accel.MADV_COLLAPSE) == 0
    finally:
        unmap()


def test_the_ranges_are_the_aligned_2mib_ones_inside_private_anonymous_memory():
    starts = list(accel.heap_huge_ranges(MAPS.splitlines()))
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
            assert accel.resident_pages(pagemap, start) == 100
            ctypes.memset(start + PAGE, 1, 1)          # a page between two written ones
            assert accel.resident_pages(pagemap, start) == 101
    finally:
        unmap()


COLLAPSE_SCRIPT = r"""
import ctypes, json, sys
sys.path.insert(0, ROOT)
from forkparts import accel
from tests.parts.test_accel_huge_pages import private_mapping, HUGE, PAGE, MADV_NOHUGEPAGE, libc_function

def huge_kb(low=0, high=1 << 64):
    # AnonHugePages of the mappings that overlap [low, high) (/proc/self/smaps).
    total, inside = 0, False
    for line in open("/proc/self/smaps"):
        first = line.split()[0]
        if "-" in first and not first.endswith(":"):
            start, end = (int(x, 16) for x in first.split("-"))
            inside = start < high and low < end
        elif inside and first == "AnonHugePages:":
            total += int(line.split()[1])
    return total

def resident(start):
    with open("/proc/self/pagemap", "rb") as pagemap:
        return accel.resident_pages(pagemap, start)

madvise = libc_function("madvise", ctypes.c_int, ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int)
# Eight aligned 2 MiB ranges, all written; the lower four marked NOHUGEPAGE, so
# the kernel refuses them (EINVAL) and the upper four must still be collapsed.
dense, _ = private_mapping(9 * HUGE)
dense_start = -(-dense // HUGE) * HUGE
middle, dense_end = dense_start + 4 * HUGE, dense_start + 8 * HUGE
assert madvise(dense_start, 4 * HUGE, MADV_NOHUGEPAGE) == 0
ctypes.memset(dense_start, 1, 8 * HUGE)
sparse, _ = private_mapping(2 * HUGE)
sparse_start = -(-sparse // HUGE) * HUGE
for i in range(10):
    ctypes.memset(sparse_start + 40 * i * PAGE, 1, 1)
sparse_before = resident(sparse_start)
done = accel.collapse_heap()
print(json.dumps(dict(done=done, total_kb=huge_kb(), refused_kb=huge_kb(dense_start, middle),
                      collapsed_kb=huge_kb(middle, dense_end), sparse_before=sparse_before,
                      sparse_after=resident(sparse_start))))
""".replace("ROOT", repr(ROOT))


@needs(kernel_collapses(), "MADV_COLLAPSE: needs Linux 6.1+ with transparent huge pages "
       "not set to never")
def test_collapse_backs_the_dense_ranges_with_huge_pages_and_leaves_sparse_ones():
    out = subprocess.run([sys.executable, "-c", COLLAPSE_SCRIPT], cwd=ROOT,
                         capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    found = json.loads(out.stdout)
    # The four ranges the kernel accepts are huge pages, although the four
    # before them were refused: one refusal does not stop the rest.
    assert found["collapsed_kb"] == 4 * HUGE // 1024, found
    assert found["refused_kb"] == 0, found
    # Every byte it reports is in a huge page now.
    assert 4 * HUGE <= found["done"] <= found["total_kb"] * 1024, found
    # 10 of 512 pages resident: left alone, not made 2 MiB resident.
    assert found["sparse_before"] == found["sparse_after"] == 10, found


@needs(kernel_collapses(), "MADV_COLLAPSE: needs Linux 6.1+ with transparent huge pages "
       "not set to never")
def test_the_server_collapses_its_heap_and_serves(start_server):
    server = start_server("tests.apps_huge:app")
    deadline = time.monotonic() + LOG_WAIT_SECONDS
    while "huge pages:" not in server.log_text() and time.monotonic() < deadline:
        time.sleep(0.05)
    found = re.search(r"huge pages: (\d+) MiB of the parent's heap", server.log_text())
    # The app's 16 MiB mapping alone holds seven aligned, fully written ranges.
    assert found and int(found.group(1)) >= 14, server.log_text()
    assert http_get(server, "/")[0] == 200


def test_no_huge_pages_leaves_the_heap_alone(start_server):
    server = start_server("tests.apps:hello", "--no-huge-pages")
    assert http_get(server, "/")[0] == 200
    assert "huge pages" not in server.log_text()
