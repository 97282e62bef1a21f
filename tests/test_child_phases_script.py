"""scripts/child_phases.py: its patches still apply to the code, and a short
run reports every phase of every child (docs/performance.md, "The child's
request path, phase by phase")."""
import glob
import os
import statistics
import subprocess
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(ROOT, "scripts"))

import child_phases  # noqa: E402

PHASES = ["signal handlers", "die with parent (prctl)", "rest of set-up", "connection handler",
          "read head", "parse", "child title", "reader, Response", "environ",
          "app, start_response, send", "after the app", "close"]
VARIANTS = sorted(glob.glob(os.path.join(ROOT, "scripts", "child_phases_variants", "*.patch")))


def test_the_patch_applies_to_the_code_as_it_is():
    check = subprocess.run(["git", "-C", ROOT, "apply", "--check", child_phases.PATCH],
                           capture_output=True, text=True)
    assert check.returncode == 0, check.stderr


@pytest.mark.parametrize("variant", VARIANTS, ids=os.path.basename)
def test_each_variant_the_docs_name_applies(variant):
    check = subprocess.run(["git", "-C", ROOT, "apply", "--check", variant],
                           capture_output=True, text=True)
    assert check.returncode == 0, check.stderr


def test_a_short_run_reports_each_phase_of_each_child():
    # The committed code (HEAD) with the marks of the working tree's patch.
    phases = child_phases.run("HEAD", "examples.bench_apps:hello", 12)
    assert list(phases) == PHASES
    assert all(len(values) == 12 for values in phases.values())
    assert all(ns > 0 and faults >= 0 for values in phases.values() for ns, faults in values)
    # A child of a forked server writes pages it shares with its parent.
    assert statistics.median(faults for _, faults in phases["parse"]) > 0


def test_a_bad_app_spec_is_named_and_leaves_no_worktree():
    before = subprocess.run(["git", "-C", ROOT, "worktree", "list"],
                            capture_output=True, text=True).stdout
    with pytest.raises(SystemExit) as failed:
        child_phases.run("HEAD", "nosuchmodule:app", 5)
    assert "nosuchmodule" in str(failed.value)
    after = subprocess.run(["git", "-C", ROOT, "worktree", "list"],
                           capture_output=True, text=True).stdout
    assert after == before
