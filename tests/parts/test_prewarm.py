"""The warm-up: the app's first request runs in the parent, and our own code
objects that request runs are copied side by side (relocate_code), so each
child copies fewer pages of them (docs/performance.md); the app's code is
never touched.  Before that, a trial child (probe) runs it and reports
what the app left open."""
import os
import sys
import time

import pytest

from forkparts.accel import relocate, relocate_code
from forkparts.prewarm import ENVIRON_KEY, code_run_by, probe
from tests.conftest import http_get

LOG_WAIT_SECONDS = 10.0

SOURCE = '''
SCALE = 3

def total(values):
    # A generator expression: nested code on every version (a list
    # comprehension is inlined into its function since 3.12, PEP 709).
    return sum(v * SCALE for v in values)

def make_adder(n):
    def add(x):                                 # a closure, made at run time
        return x + n
    return add

def handle(values):
    return total(values), make_adder(10)(len(values))

def never_called():
    return "cold"
'''


THIS_TEST = "<relocate-test>"
OURS = {THIS_TEST}.__contains__   # the code these tests relocate counts as ours


def module(source=SOURCE, filename=THIS_TEST):
    namespace = {}
    exec(compile(source, filename, "exec"), namespace)
    return namespace


def test_code_run_by_lists_what_ran_in_first_run_order():
    ns = module()
    codes = code_run_by(ns["handle"], [1, 2])
    names = [code.co_name for code in codes]
    assert names == ["handle", "total", "<genexpr>", "make_adder", "add"]


def test_code_run_by_puts_back_a_profiler_that_was_set():
    seen = []

    def profiler(frame, event, arg):
        seen.append(event)
    sys.setprofile(profiler)
    try:
        code_run_by(module()["handle"], [1])
        assert sys.getprofile() is profiler
    finally:
        sys.setprofile(None)


def test_relocated_functions_get_equal_fresh_code_and_answer_the_same():
    ns = module()
    before = {name: ns[name].__code__ for name in ("handle", "total", "make_adder", "never_called")}
    expected = ns["handle"]([1, 2, 3])
    hot = code_run_by(ns["handle"], [1, 2])
    assert relocate_code(hot, is_ours=OURS) >= 3       # handle, total, make_adder (+ any add)
    for name in ("handle", "total", "make_adder"):
        code = ns[name].__code__
        assert code is not before[name], name
        assert (code.co_code, code.co_names, code.co_varnames) == (
            before[name].co_code, before[name].co_names, before[name].co_varnames)
    assert ns["never_called"].__code__ is before["never_called"]   # not run: left alone
    assert ns["handle"]([1, 2, 3]) == expected == (18, 13)


def test_nested_code_is_copied_into_its_parents_constants():
    ns = module()
    hot = code_run_by(ns["handle"], [1])
    old_genexpr = next(c for c in hot if c.co_name == "<genexpr>")
    old_add = next(c for c in hot if c.co_name == "add")
    relocate_code(hot, is_ours=OURS)
    nested = [c for c in ns["total"].__code__.co_consts if getattr(c, "co_name", "") == "<genexpr>"]
    assert len(nested) == 1 and nested[0] is not old_genexpr     # compared by identity:
    assert nested[0] == old_genexpr                               # code compares by content
    new_add = ns["make_adder"](1).__code__      # a closure made after relocation
    assert new_add is not old_add and new_add == old_add


def test_equal_code_in_another_file_is_not_taken_for_the_hot_one():
    hot_ns, cold_ns = module(), module(SOURCE, "<another-file>")
    assert cold_ns["total"].__code__ == hot_ns["total"].__code__   # equal content
    cold = cold_ns["total"].__code__
    relocate_code(code_run_by(hot_ns["handle"], [1]),
                  is_ours={THIS_TEST, "<another-file>"}.__contains__)   # both ours
    assert cold_ns["total"].__code__ is cold
    assert hot_ns["total"].__code__.co_filename == "<relocate-test>"


def test_a_prewarmed_server_answers_and_logs_its_prewarm(start_server):
    server = start_server("tests.apps:echo_environ", "--prewarm", "/warm?x=1",
                          "--log-level", "debug")
    deadline = time.monotonic() + LOG_WAIT_SECONDS
    while "moved together" not in server.log_text() and time.monotonic() < deadline:
        time.sleep(0.05)
    log = server.log_text()
    assert "code objects moved together" in log, log
    assert "prewarm GET /warm?x=1: HTTP/1.1 200 OK" in log
    status, _, body = http_get(server, "/after?y=2")
    assert status == 200
    assert "PATH_INFO='/after'" in body.decode() and "QUERY_STRING='y=2'" in body.decode()


def test_nothing_to_move_is_not_an_error():
    assert relocate([]) == 0


APP_SOURCE = '''
def view(x):
    return x + 1
'''


def test_an_apps_function_keeps_its_code_object():
    app_ns = module(APP_SOURCE, "<an-app>")
    ours = module(SOURCE, THIS_TEST)
    before = app_ns["view"].__code__

    def handle():
        return app_ns["view"](1), ours["handle"]([1])
    hot = code_run_by(handle)
    assert relocate_code(hot) == 0              # by default only forkserver's files count
    assert relocate_code(hot, is_ours=OURS) >= 3
    assert app_ns["view"].__code__ is before
    assert ours["handle"].__code__.co_filename == THIS_TEST


# ------------------------------------------------------------ the trial child (probe)
PROBE_DEADLINE_SECONDS = 10.0
HANG_DEADLINE_SECONDS = 0.5


def probe_of(app, seconds=PROBE_DEADLINE_SECONDS, post_fork=None):
    from wsgi_handler import HandlerConfig, serve_connection
    return probe(serve_connection, app, HandlerConfig().freeze(), "/",
                 time.monotonic() + seconds, post_fork=post_fork)


def answering(environ, start_response):
    start_response("200 OK", [("Content-Type", "text/plain")])
    return [b"ok"]


def test_the_probe_reports_the_status_and_nothing_kept_for_a_clean_app():
    report = probe_of(answering)
    assert report.status == "HTTP/1.1 200 OK"
    assert report.failure(1.0) == "" and report.kept() == ""


def test_the_probe_names_a_file_the_app_opened_and_kept(tmp_path):
    kept = []
    path = str(tmp_path / "kept.db")

    def app(environ, start_response):
        kept.append(open(path, "w"))
        return answering(environ, start_response)
    report = probe_of(app)
    assert not kept                       # it ran in the child, not here
    assert [name for _, name in report.fds] == [path]
    assert path in report.kept()


def test_the_probe_names_a_thread_the_app_started():
    import threading
    stop = threading.Event()

    def app(environ, start_response):
        threading.Thread(target=stop.wait, name="poller", daemon=True).start()
        return answering(environ, start_response)
    report = probe_of(app)
    assert report.threads == ["poller"] and "poller" in report.kept()


def test_what_the_post_fork_hook_closes_is_not_counted(tmp_path):
    files = []

    def app(environ, start_response):
        files.append(open(str(tmp_path / "pooled"), "w"))
        return answering(environ, start_response)
    assert probe_of(app).kept()
    assert probe_of(app, post_fork=lambda: files.pop().close()).kept() == ""


def test_an_app_that_leaves_nothing_open_never_sees_the_post_fork_hook(tmp_path):
    called = tmp_path / "called"
    assert probe_of(answering, post_fork=called.touch).kept() == ""
    assert not called.exists()


def test_a_hanging_app_is_killed_at_the_deadline_and_reaped(tmp_path):
    pid_file = tmp_path / "pid"

    def app(environ, start_response):
        pid_file.write_text(str(os.getpid()))
        while True:
            time.sleep(1)
    started = time.monotonic()
    report = probe_of(app, HANG_DEADLINE_SECONDS)
    assert time.monotonic() - started < HANG_DEADLINE_SECONDS + 0.5
    assert "did not answer within 0.5 s" in report.failure(HANG_DEADLINE_SECONDS)
    with pytest.raises(ChildProcessError):   # reaped: neither running nor a zombie
        os.waitpid(int(pid_file.read_text()), os.WNOHANG)


def test_the_warm_up_request_is_marked_in_its_environ():
    def app(environ, start_response):
        start_response("200 OK" if environ.get(ENVIRON_KEY) is True else "418 Teapot", [])
        return [b""]
    assert probe_of(app).status == "HTTP/1.1 200 OK"


def test_an_app_that_ends_the_child_is_reported_as_such():
    def app(environ, start_response):
        os._exit(7)
    assert "exited with status 7" in probe_of(app).failure(1.0)
