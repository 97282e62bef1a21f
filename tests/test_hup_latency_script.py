"""scripts/hup_latency.py: a SIGHUP under a steady stream of requests to a
`django-admin startproject` project, default options (the warmed parent
executes itself) and in place (--no-prewarm): the edited view is served and
no request fails (docs/operations.md, Reloading)."""
import importlib.util
import json
import os
import subprocess
import sys

import pytest

from tests.conftest import ROOT, default_python_only, needs

# The HUP itself is tested on every Python by test_supervision and test_reexec.
pytestmark = default_python_only("scripts/hup_latency.py, a measurement tool")

SCRIPT = os.path.join(ROOT, "scripts", "hup_latency.py")


@needs(importlib.util.find_spec("django") is not None, "Django is not installed")
@pytest.mark.parametrize("extra", [[], ["--", "--no-prewarm"]], ids=["warmed", "in-place"])
def test_a_hup_under_steady_requests_serves_the_edit_and_fails_none(extra):
    done = subprocess.run([sys.executable, SCRIPT, "--rate", "20", "--seconds", "5",
                           "--hup-after", "1"] + extra,
                          cwd=ROOT, capture_output=True, text=True, timeout=180)
    assert done.returncode == 0, done.stderr
    result = json.loads(done.stdout)
    assert result["failed"] == 0 and result["requests"] == 100, result
    assert result["edited_view_after_s"] is not None, result
    assert result["options"] == extra[1:]
