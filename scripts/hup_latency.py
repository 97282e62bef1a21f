"""What a SIGHUP costs the clients of a Django project, as an operator sees it.

Makes a `django-admin startproject` project with a view at /hello/ in a
temporary directory, starts forkserver on it (default options, or the
options given after --), sends it a steady stream of requests (one at a
time, --rate a second), edits the view and sends SIGHUP after --hup-after
seconds, and reports: how long until the edited view was served, the
median and slowest request, and the failures (docs/operations.md,
Reloading).

    python scripts/hup_latency.py                 # the default: a warmed parent's exec
    python scripts/hup_latency.py -- --no-prewarm # the in-place reload
"""

import argparse
import http.client
import json
import os
import re
import signal
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
READY_RE = re.compile(r"forkserver ready: pid (\d+) listening on http://127\.0\.0\.1:(\d+)")
URLS_TAIL = ("\nfrom django.http import HttpResponse as _Response  # noqa: E402\n\n\n"
             "def _hello(request):\n"
             "    return _Response(%r, content_type='text/plain')\n\n\n"
             "urlpatterns += [path('hello/', _hello)]\n")
START_SECONDS = 60


def make_project(directory):
    subprocess.run([sys.executable, "-m", "django", "startproject", "mysite"], cwd=directory,
                   check=True, timeout=START_SECONDS)
    urls = os.path.join(directory, "mysite", "mysite", "urls.py")
    with open(urls) as f:
        base = f.read()
    return urls, base


def write_view(urls, base, text):
    with open(urls, "w") as f:
        f.write(base + URLS_TAIL % text)


def start(project, extra, log_path):
    proc = subprocess.Popen(
        [sys.executable, os.path.join(ROOT, "forkserver.py"), "mysite.wsgi", "--bind",
         "127.0.0.1:0", "--no-access-log", "--error-log", log_path] + extra,
        cwd=project, stdout=subprocess.PIPE, text=True,
        env=dict(os.environ, PYTHONUNBUFFERED="1"))
    match = READY_RE.search(proc.stdout.readline())
    if not match:
        proc.kill()
        raise SystemExit("forkserver did not start; its log: %s" % log_path)
    return proc, int(match.group(1)), int(match.group(2))


def get(port):
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    try:
        conn.request("GET", "/hello/")
        response = conn.getresponse()
        return response.status, response.read()
    finally:
        conn.close()


def run(args):
    with tempfile.TemporaryDirectory(prefix="hup-latency-") as directory:
        urls, base = make_project(directory)
        write_view(urls, base, "the first view\n")
        proc, pid, port = start(os.path.join(directory, "mysite"), args.extra,
                                os.path.join(directory, "error.log"))
        try:
            return load(args, pid, port, urls, base)
        finally:
            proc.send_signal(signal.SIGTERM)
            proc.wait(START_SECONDS)


def load(args, pid, port, urls, base):
    times, failed, new_after, hup_at = [], 0, None, None
    began = time.monotonic()
    for _ in range(int(args.rate * args.seconds)):
        sent = time.monotonic()
        if hup_at is None and sent - began >= args.hup_after:
            write_view(urls, base, "the view, edited\n")
            os.kill(pid, signal.SIGHUP)
            hup_at = time.monotonic()
        try:
            status, body = get(port)
        except OSError:
            status, body = None, b""
        failed += status != 200
        if new_after is None and hup_at and body == b"the view, edited\n":
            new_after = time.monotonic() - hup_at
        times.append(time.monotonic() - sent)
        time.sleep(max(0.0, 1.0 / args.rate - (time.monotonic() - sent)))
    times.sort()
    return {"options": args.extra, "requests": len(times), "failed": failed,
            "edited_view_after_s": new_after, "median_ms": 1000 * times[len(times) // 2],
            "slowest_ms": 1000 * times[-1]}


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--rate", type=float, default=20.0, help="requests a second (default 20)")
    p.add_argument("--seconds", type=float, default=12.0, help="how long (default 12)")
    p.add_argument("--hup-after", type=float, default=2.0, help="SIGHUP after (default 2 s)")
    p.add_argument("extra", nargs="*", help="forkserver options, after --")
    print(json.dumps(run(p.parse_args()), indent=1))


if __name__ == "__main__":
    main()
