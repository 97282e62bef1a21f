"""scripts/type_cache_misses.py: its patch still applies to the code, and a
short run lists each child's type-cache misses, among which none of the
lookups the child's own branch of fork_child used to make (docs/performance.md,
"The child's attribute lookups")."""
import os
import re
import subprocess
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(ROOT, "scripts"))

import type_cache_misses  # noqa: E402

KNOWN_CACHE = sys.implementation.name == "cpython" and (3, 11) <= sys.version_info[:2] <= (3, 12)


def test_the_patch_applies_to_the_code_as_it_is():
    check = subprocess.run(["git", "-C", ROOT, "apply", "--check", type_cache_misses.PATCH],
                           capture_output=True, text=True)
    assert check.returncode == 0, check.stderr


@pytest.mark.skipif(not KNOWN_CACHE, reason="the type cache's layout is CPython 3.11's and 3.12's")
def test_a_short_run_names_each_childs_misses_and_none_of_the_child_branch(capsys):
    # Flask imports threading, whose after-fork handler looks up what the
    # parent never did: every child misses those, on any machine.
    children = type_cache_misses.run("HEAD", "examples.bench_apps:flask_app", 8)
    assert len(children) == 8
    for child in children:
        assert any(t.startswith("threading.") for t, _, _, _, _ in child), child
        assert all(re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", name) for _, name, _, _, _ in child), child
        assert all(0 <= int(page) < 24 for _, _, _, page, _ in child), child
    missed = {(t, name) for child in children for t, name, _, _, _ in child}
    # What fork_child's child branch looked up before 3436fcc, in every child
    # (the server runs as -m forkserver: its module is __main__):
    assert not missed & {("__main__.Server", "child_plan"), ("forkserver.Server", "child_plan"),
                         ("forkparts.children.ChildPlan", "run")}, missed
    type_cache_misses.report(children)
    assert "misses per child: median" in capsys.readouterr().out
