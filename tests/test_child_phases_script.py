"""scripts/child_phases.py: its patch still applies to the code, and a short
run reports every phase of every child (docs/performance.md, "The child's
request path, phase by phase")."""
import os
import statistics
import subprocess
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(ROOT, "scripts"))

import child_phases  # noqa: E402

PHASES = ["signal handlers", "die with parent (prctl)", "rest of set-up", "connection handler",
          "read head", "parse", "reader, Response", "environ", "app, start response, send",
          "after the app", "close"]


def test_the_patch_applies_to_the_code_as_it_is():
    check = subprocess.run(["git", "-C", ROOT, "apply", "--check", child_phases.PATCH],
                           capture_output=True, text=True)
    assert check.returncode == 0, check.stderr


def test_a_short_run_reports_each_phase_of_each_child(tmp_path):
    where = str(tmp_path / "tree")
    subprocess.run(["git", "-C", ROOT, "worktree", "add", "--detach", "-q", where, "HEAD"],
                   check=True)
    try:
        # The working tree's patch onto the committed code: what the script does.
        subprocess.run(["git", "-C", where, "apply", child_phases.PATCH], check=True)
        phases = child_phases.measure(where, "examples.bench_apps:hello", 12,
                                      str(tmp_path / "phases.log"), warm_up=3)
    finally:
        subprocess.run(["git", "-C", ROOT, "worktree", "remove", "--force", where],
                       capture_output=True)
    # The title phase is there only with setproctitle installed.
    assert [p for p in phases if p != "child title"] == PHASES
    assert all(len(values) == 12 for values in phases.values())
    assert all(ns > 0 and faults >= 0 for values in phases.values() for ns, faults in values)
    # A child of a forked server writes pages it shares with its parent.
    assert statistics.median(faults for _, faults in phases["parse"]) > 0
