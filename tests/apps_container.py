"""An app for tests/test_container.py: each request leaves an orphan, a
process whose parent (the child serving the request) exits before it, so it
is reparented to the namespace's PID 1 (the server) or the subreaper."""
import subprocess


def orphans(environ, start_response):
    # sh starts sleep in the background and exits: sleep's parent is gone.
    subprocess.run(["sh", "-c", "sleep 0.3 &"], check=True)
    start_response("200 OK", [("Content-Type", "text/plain")])
    return [b"left an orphan\n"]
