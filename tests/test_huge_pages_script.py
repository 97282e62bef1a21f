"""scripts/huge_pages_after_fork.py: the parent's huge pages are split by its
first write after a fork, and what is left of them (docs/performance.md,
"Huge pages after the first connection")."""
import os
import re
import subprocess
import sys

import pytest

from tests.conftest import ROOT, needs
from tests.parts.test_accel_huge_pages import kernel_collapses

SCRIPT = os.path.join(ROOT, "scripts", "huge_pages_after_fork.py")
COLLAPSE_REASON = "MADV_COLLAPSE: needs Linux 6.1+ with transparent huge pages not set to never"
THP_ENABLED = "/sys/kernel/mm/transparent_hugepage/enabled"


def thp_mode():
    """The bracketed transparent-huge-page mode: always, madvise or never."""
    try:
        with open(THP_ENABLED) as f:
            return re.search(r"\[(\w+)\]", f.read()).group(1)
    except (OSError, AttributeError):
        return None


def run(*args):
    return subprocess.run([sys.executable, SCRIPT] + list(args), cwd=ROOT,
                          capture_output=True, text=True, timeout=120)


def table_rows(text):
    return {cells[0]: cells[1:] for cells in
            ([c.strip() for c in line.strip("|").split("|")] for line in text.splitlines()
             if line.startswith("| ") and not line.startswith("| the region"))}


@needs(kernel_collapses(), COLLAPSE_REASON)
def test_a_write_after_a_fork_unmaps_the_huge_page_but_the_cost_stays_lower():
    out = run("--synthetic-only", "--mib", "8", "--forks", "20")
    assert out.returncode == 0, out.stderr
    rows = table_rows(out.stdout)
    four_k, huge = rows["4 KiB pages"], rows["huge pages"]
    split = rows["huge pages, split by the parent's writes after a fork"]
    assert (four_k[0], huge[0], split[0]) == ("0 KiB", "8192 KiB", "0 KiB")
    # the CPU columns are figures for the docs, never a test's assertion
    assert all(re.fullmatch(r"\d+", cell) for row in (four_k, huge, split) for cell in row[1:])


@needs(kernel_collapses(), COLLAPSE_REASON)
@pytest.mark.skipif(thp_mode() != "madvise", reason="with THP 'always' the kernel maps "
                    "huge pages of its own, which no write after a fork need split")
def test_the_live_parent_has_no_huge_page_mapped_after_serving():
    out = run("--requests", "3", "--mib", "4", "--forks", "10")
    assert out.returncode == 0, out.stderr
    rows = table_rows(out.stdout)
    collapsed = int(re.search(r"collapse_heap at start: (\d+) MiB", out.stdout).group(1))
    assert int(rows["at start"][0].split()[0]) >= collapsed * 1024
    assert rows["after 3 connections"][0] == "0 KiB"


def test_bad_arguments_exit_2():
    out = run("--forks", "1")
    assert out.returncode == 2 and "--forks >= 10" in out.stderr
