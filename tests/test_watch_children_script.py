"""scripts/watch_children.py: the /proc figures first, and the parent's own
count labelled with where it comes from: the --status-file with its age, or
the process title, said to lag in a burst (issue 18)."""
import importlib.util
import json
import os
import re
import subprocess
import sys
import threading
import time

import pytest

from tests.conftest import IN_CI, ROOT, default_python_only

pytestmark = default_python_only("scripts/watch_children.py, a measurement tool")

WATCH = os.path.join(ROOT, "scripts", "watch_children.py")
APP = "tests.apps:slow"
RUN_TIMEOUT_SECONDS = 30
STATUS_FILE_PERIOD_SECONDS = 1.1     # forkparts/status.py rewrites it at most once a second
PROC = r"\d\d:\d\d:\d\d pid \d+: running (\d+) sleeping (\d+) zombie 0 other 0 \| fds \d+ " \
       r"rss [\d.]+ MiB \| "
HAS_TITLE = importlib.util.find_spec("setproctitle") is not None


def watch(*args):
    return subprocess.run([sys.executable, WATCH] + [str(a) for a in args], capture_output=True,
                          text=True, timeout=RUN_TIMEOUT_SECONDS, cwd=ROOT)


def three_slow_children(server):
    """Three children busy for 2 s; returns the threads to join."""
    import socket

    def get():
        with socket.create_connection((server.host, server.port), timeout=10) as s:
            s.sendall(b"GET /?s=2 HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
            while s.recv(65536):
                pass
    threads = [threading.Thread(target=get) for _ in range(3)]
    for t in threads:
        t.start()
    deadline = time.monotonic() + 10
    while len(server.children()) < 3 and time.monotonic() < deadline:
        time.sleep(0.05)
    assert len(server.children()) == 3
    return threads


def test_the_status_files_figure_comes_with_its_age(start_server, tmp_path):
    status = tmp_path / "fs.json"
    server = start_server(APP, "--status-file", str(status))
    threads = three_slow_children(server)
    time.sleep(STATUS_FILE_PERIOD_SECONDS)
    out = watch(server.pid, "--count", 1, "--interval", 0, "--status-file", status)
    assert out.returncode == 0, out.stderr
    line = out.stdout.strip()
    match = re.fullmatch(PROC + r"parent says children=3 high-water=3 \(status file, written "
                         r"(\d+\.\d) s ago\)", line)
    assert match, line
    assert int(match.group(1)) + int(match.group(2)) == 3           # from /proc
    assert float(match.group(3)) <= 2 * STATUS_FILE_PERIOD_SECONDS
    snap = json.loads(watch(server.pid, "--json", "--status-file", status).stdout)
    own = snap["parent_reports"]
    assert (own["source"], own["children"], own["may_lag"]) == ("status file", 3, True)
    assert 0 <= own["age_seconds"] <= 2 * STATUS_FILE_PERIOD_SECONDS
    for t in threads:
        t.join(10)


@pytest.mark.skipif(not HAS_TITLE and not IN_CI, reason="setproctitle is not installed")
def test_without_a_status_file_the_titles_figure_is_labelled_as_lagging(start_server):
    server = start_server(APP)
    threads = three_slow_children(server)
    time.sleep(0.2)           # a loop turn has retitled
    out = watch(server.pid, "--count", 1, "--interval", 0)
    assert out.returncode == 0, out.stderr
    line = out.stdout.strip()
    assert re.fullmatch(PROC + r"parent's title says children=3 high-water=3 \(process title: "
                        r"may lag in a burst\)", line), line
    own = json.loads(watch(server.pid, "--json").stdout)["parent_reports"]
    assert (own["source"], own["may_lag"], own["age_seconds"]) == ("process title", True, None)
    for t in threads:
        t.join(10)


@pytest.mark.skipif(not HAS_TITLE and not IN_CI, reason="setproctitle is not installed")
def test_a_status_file_that_cannot_be_read_is_said_so_beside_the_title(start_server, tmp_path):
    server = start_server(APP)
    wrong = tmp_path / "not-status.json"
    wrong.write_text("[1, 2]\n")
    out = watch(server.pid, "--count", 1, "--interval", 0, "--status-file", wrong)
    assert out.returncode == 0, out.stderr
    assert re.fullmatch(PROC + r"--status-file unreadable \(not a forkserver --status-file\); "
                        r"parent's title says children=0 high-water=0 \(process title: may "
                        r"lag in a burst\)", out.stdout.strip()), out.stdout


def test_a_status_file_that_is_not_there_is_a_usage_error(start_server, tmp_path):
    server = start_server(APP)
    out = watch(server.pid, "--status-file", tmp_path / "nothing.json")
    assert out.returncode == 2
    assert "--status-file %s: no such file" % (tmp_path / "nothing.json") in out.stderr
    assert "Traceback" not in out.stderr and out.stdout == ""
