"""Exercise 0 (docs/labs.md): --lab-iterative, the tutorial's first server.
The parent serves each connection itself, one at a time: a second client
waits until the first is done, and no child process ever appears."""
import threading
import time

from tests.conftest import children_of, http_get
from tests.parts.test_cli import EXIT_USAGE, run_cli

SLOW_SECONDS = 1.0


def timed_get(server, path, results, name):
    started = time.monotonic()
    status = http_get(server, path, timeout=30)[0]
    results[name] = (status, started, time.monotonic())


def test_iterative_server_serves_one_connection_at_a_time_without_a_child(start_server):
    server = start_server("tests.apps:slow", "--lab-iterative", "--trace=process")
    results, seen_children = {}, []
    first = threading.Thread(target=timed_get,
                             args=(server, "/?s=%s" % SLOW_SECONDS, results, "first"))
    second = threading.Thread(target=timed_get,
                              args=(server, "/?s=%s" % SLOW_SECONDS, results, "second"))
    first.start()
    time.sleep(0.2)                                  # the first is being served
    second.start()
    while first.is_alive() or second.is_alive():
        seen_children.extend(children_of(server.pid))
        time.sleep(0.02)
    assert results["first"][0] == results["second"][0] == 200
    # The second waited in the backlog for the whole of the first.
    assert results["second"][2] - results["first"][2] >= SLOW_SECONDS * 0.9
    assert results["second"][2] - results["second"][1] >= SLOW_SECONDS * 1.5
    assert seen_children == []
    assert "fork: child" not in server.log_text()
    assert server.stop() == 0
    # The stop line counts forks: none (it said "forked 2 children").
    log = server.log_text()
    assert "stopped: forked 0 children" in log, log
    assert "--lab-iterative: the parent served 2 connections itself" in log, log


def test_iterative_server_survives_app_errors_and_timeouts(start_server):
    boom = start_server("tests.apps:boom", "--lab-iterative")
    for _ in range(2):
        assert http_get(boom, "/")[0] == 500
    assert "boom from the app" in boom.log_text()
    assert boom.stop() == 0
    hang = start_server("tests.apps:hang", "--lab-iterative", "--timeout", "1")
    started = time.monotonic()
    assert http_get(hang, "/", timeout=30)[0] == 500            # raised inside the app
    assert time.monotonic() - started < 10
    assert "LabTimeout" in hang.log_text()
    assert hang.ps.is_running() and hang.stop() == 0


def test_iterative_does_not_combine_with_keep_alive_or_another_lab_switch():
    for extra in (["--keep-alive", "5"], ["--reaper", "once"], ["--lab-orphans"]):
        result = run_cli("tests.apps:hello", "--lab-iterative", *extra)
        assert result.returncode == EXIT_USAGE
        last = result.stderr.strip().splitlines()[-1]
        assert "--lab-iterative" in last and extra[0] in last
        assert "Traceback" not in result.stderr
