"""The server never replaces, patches or repoints what it does not own
(DESIGN.md; issue 15): with the Flask example loaded, the standard library's
and Flask's functions, and their code objects, are the same objects once the
server is ready as before it started, with and without --prewarm."""
import json
import subprocess
import sys
import textwrap

import pytest

from tests.conftest import ROOT

RUN_SECONDS = 60

# (module, class or None, attribute): functions of the stdlib and of Flask that
# a server (and a --prewarm request through the Flask example) runs.
WATCHED = [
    ("re", None, "sub"),
    ("socket", "socket", "__init__"),
    ("socket", "socket", "accept"),
    ("socket", "socket", "close"),
    ("abc", "ABCMeta", "__instancecheck__"),
    ("typing", None, "cast"),
    ("flask.ctx", "AppContext", "push"),
    ("flask.app", "Flask", "wsgi_app"),
    ("flask.app", "Flask", "full_dispatch_request"),
]

# Run in a fresh interpreter: the Flask example is imported, every watched
# function and its __code__ recorded, then forkserver.main() serves it; the
# when_ready hook (HOOK below) compares, writes the result and stops the server.
SCRIPT = """
import importlib, sys
sys.path.insert(0, {root!r})
import examples.flaskapp

def watched():
    found = {{}}
    for module, owner, name in {watched!r}:
        holder = importlib.import_module(module)
        if owner:
            holder = getattr(holder, owner)
        func = vars(holder)[name]   # the function itself, not a bound method
        found["%s.%s" % (owner or module, name)] = (id(func), func.__code__)
    return found

# The functions by id only: a reference held here would itself keep a
# function from being replaced.  Each was made before any copy of it could
# be, so a replacement has another id.
BEFORE = watched()

import forkserver
sys.exit(forkserver.main({argv!r}))
"""

HOOK = """
import json, os, signal, sys

def when_ready(server):
    try:
        main = sys.modules["__main__"]
        now = main.watched()
        changed = {{name: {{"function": now[name][0] == func_id, "code": now[name][1] is code}}
                   for name, (func_id, code) in main.BEFORE.items()}}
        with open({result!r}, "w") as f:
            json.dump(changed, f)
    finally:
        os.kill(os.getpid(), signal.SIGTERM)
"""


@pytest.mark.parametrize("extra", [[], ["--prewarm", "/"]], ids=["plain", "prewarm"])
def test_stdlib_and_flask_functions_are_the_same_objects_once_serving(tmp_path, extra):
    pytest.importorskip("flask")
    result = tmp_path / "result.json"
    config = tmp_path / "hooks.conf.py"
    config.write_text(HOOK.format(result=str(result)))
    argv = ["examples.flaskapp:app", "--bind", "127.0.0.1:0", "--config", str(config)] + extra
    script = textwrap.dedent(SCRIPT).format(root=ROOT, watched=WATCHED, argv=argv)
    done = subprocess.run([sys.executable, "-c", script], cwd=ROOT, capture_output=True,
                          text=True, timeout=RUN_SECONDS)
    assert done.returncode == 0, done.stderr
    same = json.loads(result.read_text())
    assert sorted(same) == sorted("%s.%s" % (owner or module, name)
                                  for module, owner, name in WATCHED)
    replaced = sorted(name for name, kept in same.items() if not kept["function"])
    recoded = sorted(name for name, kept in same.items() if not kept["code"])
    assert replaced == [], "replaced: %s" % replaced
    assert recoded == [], "__code__ rebound: %s" % recoded
