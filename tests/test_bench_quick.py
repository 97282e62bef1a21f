"""scripts/bench.py: argument handling and the arithmetic of its report (no load run)."""
import importlib.util
import os
import subprocess
import sys

import pytest

from tests.conftest import ROOT, default_python_only, read_until_close, wait_for

pytestmark = default_python_only("scripts/bench.py, a measurement tool")

BENCH = os.path.join(ROOT, "scripts", "bench.py")


def load_bench():
    spec = importlib.util.spec_from_file_location("bench_under_test", BENCH)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def run(*args):
    return subprocess.run([sys.executable, BENCH] + list(args), capture_output=True,
                          text=True, timeout=60)


@pytest.mark.parametrize("args, message", [
    (["--clients", "0"], "clients must be 1..1024"),
    (["--clients", "8,x"], "not a list of integers"),
    (["--apps", "hello,nope"], "unknown app nope"),
    (["--seconds", "-1"], "must be above 0"),
])
def test_bad_arguments_exit_2_naming_the_problem(args, message):
    out = run(*args)
    assert out.returncode == 2
    assert message in out.stderr and "Traceback" not in out.stderr


def test_help_names_quick_and_memory():
    out = run("--help")
    assert out.returncode == 0 and "--quick" in out.stdout and "--memory" in out.stdout


def run_record(server, rps, cpu, floor_run=None):
    return {"app": "hello", "server": server, "clients": 8, "round": 0, "rps": rps,
            "p50_ms": 1.0, "p99_ms": 2.0, "cpu_ms_per_req": cpu, "errors": 0,
            "zombies_now": 0, "zombies_1s": 0, "floor_run": floor_run}


def test_ratios_are_to_the_mean_of_the_two_floor_runs():
    bench = load_bench()
    runs = [run_record("floor", 900.0, 1.0, "first"), run_record("forkserver", 750.0, 1.5),
            run_record("floor", 1100.0, 1.2, "last")]
    bench.add_ratios(runs, "floor")
    assert runs[1]["rps_ratio"] == pytest.approx(0.75)
    assert runs[1]["cpu_ms_per_req_ratio"] == pytest.approx(1.5 / 1.1)


def test_targets_say_met_and_missed():
    bench = load_bench()
    runs = [run_record("floor", 1000.0, 1.0, "first"), run_record("forkserver", 690.0, 1.4),
            run_record("floor", 1000.0, 1.0, "last")]
    bench.add_ratios(runs, "floor")
    results = {"summary": bench.summarize(runs), "clients": [8], "errors_check": [],
               "keepalive": [], "memory": [{"app": "flask", "gc_freeze": True,
                                            "gc_collect_in_view": False, "child_uss_mb": 2.5}],
               "connections": 5000}
    met = {t["target"]: t["met"] for t in bench.targets(results)}
    assert met == {"hello at 8 clients vs the floor, forkserver": False,
                   "forkserver zombies 1 s after every run": True,
                   "Flask child USS mid-request": True}


def test_each_ratio_goal_applies_to_the_configuration_its_issue_named():
    """Issue 17's 0.7x the floor is for the default; issue 6's 0.75x was set
    for the tuned flags, the benchmark's only row then.  The same 0.72x is
    met by the one and missed by the other."""
    bench = load_bench()
    runs = [run_record("floor", 1000.0, 1.0, "first"), run_record("forkserver", 720.0, 1.4),
            run_record("forkserver-tuned", 720.0, 1.4), run_record("floor", 1000.0, 1.0, "last")]
    bench.add_ratios(runs, "floor")
    results = {"summary": bench.summarize(runs), "clients": [8], "errors_check": [],
               "keepalive": [], "memory": [], "connections": 5000}
    found = {t["target"]: (t["goal"], t["met"]) for t in bench.targets(results)}
    assert found["hello at 8 clients vs the floor, forkserver"] == (">= 0.7x", True)
    assert found["hello at 8 clients vs the floor, forkserver-tuned"] == (">= 0.75x", False)
    assert not any(name.startswith("Flask at 8 clients vs floor+flask, forkserver")
                   and not name.endswith("-tuned") for name in found)   # tuned flags only


def test_fault_profile_counts_the_parent_and_its_reaped_children(tmp_path):
    # cminflt only grows when a child is reaped: a child figure of zero would
    # mean the counters were read before the children were waited for.
    bench = load_bench()
    server = bench.Running("forkserver", bench.APPS["hello"], str(tmp_path))
    try:
        row = bench.fault_profile(server, 20)
    finally:
        server.stop()
    assert row["child_faults"] > 50          # every forked Python child copies pages
    assert row["parent_faults"] > 0
    text = bench.markdown_extras({"errors_check": [], "keepalive": [], "memory": [],
                                  "faults": [dict(row, app="hello", server="forkserver",
                                                  connections=20)]})
    assert "| hello | forkserver | %.0f |" % row["parent_faults"] in "\n".join(text)


def test_a_missed_ratio_is_never_shown_rounded_up_to_its_goal():
    bench = load_bench()
    assert bench.times(0.748, 0.75) == "0.748x"
    assert bench.times(0.712, 0.75) == "0.71x"
    assert bench.times(0.751, 0.75) == "0.75x"


def test_an_untimed_warm_up_on_the_floor_comes_before_the_first_round(monkeypatch):
    bench = load_bench()
    events = []

    class FakeRunning:
        def __init__(self, name, spec, logdir, keepalive=False):
            self.name, self.url = name, "http://127.0.0.1:1/"
            events.append(("start", name))

        def stop(self):
            events.append(("stop", self.name))

    monkeypatch.setattr(bench, "Running", FakeRunning)
    monkeypatch.setattr(bench, "available", lambda names, say: names)
    monkeypatch.setattr(bench, "run_wrk", lambda url, clients, seconds, keepalive=False:
                        events.append(("load", clients, seconds)))
    monkeypatch.setattr(bench, "run_round", lambda app, peers, args, round_no, say, logdir:
                        events.append(("round", app, round_no)) or [[{"measured": True}]])
    args = type("Args", (), dict(tool="wrk", rounds=2, apps=["hello"], zombie_checks=[],
                                   servers=list(bench.PEERS)))()
    results = {"runs": []}
    bench.section_rounds(args, results, "/nonexistent")
    assert events == [("start", "floor"), ("load", bench.WARM_UP_CLIENTS, bench.WARM_UP_SECONDS),
                      ("stop", "floor"), ("round", "hello", 0), ("round", "hello", 1)]
    assert results["runs"] == [{"measured": True}] * 2     # the warm-up is not a result


def test_forkserver_is_measured_as_users_start_it_beside_the_tuned_flags():
    bench = load_bench()
    default = bench.command("forkserver", "examples.bench_apps:hello", 8000)
    assert default[default.index("examples.bench_apps:hello") + 1:] == [
        "--bind", "127.0.0.1:8000", "--no-access-log"]
    tuned = bench.command("forkserver-tuned", "examples.bench_apps:hello", 8000)
    assert tuned[-2:] == ["--prewarm", "/"] and tuned[:len(default)] == default


def test_the_report_leads_with_the_default_and_compares_it_with_the_tuned_flags():
    bench = load_bench()
    runs = [run_record("floor", 1000.0, 1.0, "first"), run_record("stdlib", 500.0, 2.0),
            run_record("forkserver-tuned", 800.0, 1.3), run_record("forkserver", 780.0, 1.3),
            run_record("floor", 1000.0, 1.0, "last")]
    bench.add_ratios(runs, "floor")
    results = {"summary": bench.summarize(runs), "clients": [8], "errors_check": [],
               "keepalive": [], "memory": [], "faults": [], "connections": 5000,
               "machine": {}, "apps": ["hello"], "rounds": 1}
    results["targets"] = bench.targets(results)
    rows = [line for line in bench.markdown(results).splitlines() if line.startswith("| 8 |")]
    assert [row.split(" | ")[1] for row in rows][:2] == ["forkserver", "forkserver-tuned"]
    met = {t["target"]: t["met"] for t in results["targets"]}
    assert met["hello at 8 clients, default vs tuned flags"] is True   # 0.975x >= 0.95x


@pytest.mark.parametrize("args, message", [
    (["--servers", "forkserver,nope"], "unknown server nope"),
    (["--checkout", "before"], "expected LABEL=PATH"),
    (["--checkout", "stdlib=" + ROOT], "is taken by a server"),
    (["--checkout", "before=/nonexistent"], "no forkserver.py in"),
])
def test_bad_server_and_checkout_arguments_exit_2(args, message):
    out = run(*args)
    assert out.returncode == 2
    assert message in out.stderr and "Traceback" not in out.stderr


def test_a_checkout_runs_from_its_own_directory_with_default_and_tuned_flags(tmp_path):
    bench = load_bench()
    bench.CHECKOUTS["before"] = str(tmp_path)
    assert bench.server_root("before") == bench.server_root("before-tuned") == str(tmp_path)
    assert bench.server_root("forkserver") == bench.ROOT
    default = bench.command("before", "m:app", 8000)
    tuned = bench.command("before-tuned", "m:app", 8000)
    assert default[1:3] == ["-m", "forkserver"] and tuned == default + bench.TUNED_FLAGS


def summary_row(app, clients, server, rps, ratio):
    return {"app": app, "clients": clients, "server": server, "rps": rps, "rps_ratio": ratio,
            "errors": 0, "zombies_1s": 0}


def test_combine_reports_the_median_of_the_runs_figures(tmp_path):
    import json
    paths = []
    for i, (ours, theirs) in enumerate([(900, 1000), (950, 1000), (1200, 1000)]):
        run_json = {"apps": ["hello"], "clients": [8], "checkouts": {"before": "/x"},
                    "errors_check": [], "summary": [
                        summary_row("hello", 8, "floor", 1500, 1.0),
                        summary_row("hello", 8, "forkserver", ours, ours / 1500),
                        summary_row("hello", 8, "before", theirs, theirs / 1500)]}
        paths.append(str(tmp_path / ("run%d.json" % i)))
        with open(paths[-1], "w") as f:
            json.dump(run_json, f)
    out = run("--combine", *paths)
    assert out.returncode == 0, out.stderr
    row = [line for line in out.stdout.splitlines() if "| forkserver / before |" in line]
    assert row == ["| hello | 8 | forkserver / before | 0.950 | 0.900 | 1.200 | 3 |"]


def test_targets_hold_ours_against_a_checkout_to_the_guard_rail():
    bench = load_bench()
    rows = [summary_row("hello", 8, "forkserver", 940, 0.6),
            summary_row("hello", 8, "before", 1000, 0.65)]
    results = {"summary": rows, "clients": [8], "errors_check": [], "keepalive": [],
               "memory": [], "checkouts": {"before": "/x"}, "connections": 1}
    met = {t["target"]: t["met"] for t in bench.targets(results)}
    assert met["hello at 8 clients, forkserver vs before"] is False


def test_a_checkout_compares_like_with_like_rows():
    bench = load_bench()
    assert bench.checkout_pairs("before", ["", "-tuned"]) == [
        ("forkserver", "before"), ("forkserver-tuned", "before-tuned")]
    assert bench.checkout_pairs("before", ["-tuned"]) == [("forkserver-tuned", "before-tuned")]


def test_the_report_says_whether_children_set_their_titles():
    """setproctitle comes with the test extra, not the README's install: a
    report must say which of the two it measured (each child's title costs
    it about 9 copied pages, docs/performance.md)."""
    from importlib.metadata import PackageNotFoundError, version
    try:
        expected = version("setproctitle")
    except PackageNotFoundError:
        expected = "not installed"
    assert load_bench().machine_info("wrk")["setproctitle"] == expected


def test_the_report_says_which_fork_handlers_the_interpreter_starts_with():
    """A site .pth that imports threading makes every child, the floor's
    too, run its fork handler (about 0.5 ms on this VM): ratios to the floor
    are not comparable between machines unless the report says so."""
    probe = "import sys; print('threading' in sys.modules, 'random' in sys.modules)"
    threading_, random_ = subprocess.run([sys.executable, "-c", probe], capture_output=True,
                                         text=True, check=True).stdout.split()
    said = load_bench().machine_info("wrk")["imported at start-up"]
    assert ("threading" in said) == (threading_ == "True")
    assert ("random" in said) == (random_ == "True")
    handlers, _, count = said.partition("; ")
    assert handlers == "none" or handlers.endswith("(every child runs their fork handlers)")
    assert count.endswith(" modules in all") and int(count.split()[0]) > 10


def test_a_miss_is_never_printed_as_the_goal():
    times = load_bench().times
    assert times(0.69995, 0.7) == "0.6999x"
    assert times(0.6949, 0.7) == "0.69x"
    assert times(0.7, 0.7) == "0.70x"
    assert times(1.4049, 1.5) == "1.40x"


def test_the_bare_app_floor_calls_the_app_as_pep_3333_says():
    """bare-app, the floor that runs the app, passes wsgiref's validator both ways:
    its environ is a valid one (from the request line alone) and it uses the
    app's result as a server must (iterated, then closed)."""
    from wsgiref.validate import validator
    from examples.bench_apps import hello
    bench = load_bench()
    seen, closed = {}, []

    class Result(list):
        def close(self):
            closed.append(True)

    def app(environ, start_response):
        seen.update(environ)
        return Result(hello(environ, start_response))
    environ = bench.bare_environ("GET /x?y=1 HTTP/1.1", 8000, sys.stderr)
    response = bench.bare_response(validator(app), environ)
    assert closed == [True]
    head, _, body = response.partition(b"\r\n\r\n")
    assert head.split(b"\r\n")[0] == b"HTTP/1.1 200 OK"
    assert b"Connection: close" in head.split(b"\r\n") and body == b"Hello, World!\n"
    assert (seen["PATH_INFO"], seen["QUERY_STRING"], seen["SERVER_PORT"]) == ("/x", "y=1", "8000")


@pytest.mark.parametrize("internal", ["_bare_app", "_bare_app_tricks"])
def test_the_bare_app_floor_serves_the_app_and_leaves_no_zombie(internal):
    import socket
    import psutil
    bench = load_bench()
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    argv = bench.command("bare-app", "examples.bench_apps:hello", port)
    assert argv[1:4] == ["-m", "scripts.bench", "_bare_app"]
    argv[3] = internal   # bare-app-tricks: scripts/tricks.py --off-peer runs it so
    server = subprocess.Popen(argv, cwd=ROOT, stdout=subprocess.DEVNULL,
                              stderr=subprocess.DEVNULL)
    try:
        parent = psutil.Process(server.pid)
        wait_for(lambda: any(c.laddr and c.laddr.port == port and c.status == "LISTEN"
                             for c in parent.net_connections()), what="bare-app listening")
        with socket.create_connection(("127.0.0.1", port), timeout=10) as conn:
            conn.sendall(b"GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
            data = read_until_close(conn)
        assert data.startswith(b"HTTP/1.1 200 OK\r\n") and data.endswith(b"Hello, World!\n")
        wait_for(lambda: not parent.children(), what="the child reaped")   # its SIGCHLD reaper
    finally:
        server.kill()
        server.wait(10)


def test_a_run_compares_forkserver_with_the_bare_app_floor_and_that_with_the_stdlib():
    bench = load_bench()
    results = {"apps": ["flask"], "clients": [8], "summary": [
        summary_row("flask", 8, "floor+flask", 800, 1.0),
        summary_row("flask", 8, "forkserver", 450, 450 / 800),
        summary_row("flask", 8, "bare-app", 500, 500 / 800),
        summary_row("flask", 8, "stdlib", 300, 300 / 800)]}
    figures = bench.run_figures(results)
    assert figures[("flask", 8, "forkserver / bare-app")] == 0.9
    assert figures[("flask", 8, "bare-app / stdlib")] == 500 / 300


def test_bare_app_tricks_puts_our_two_heap_tricks_on_its_heap_before_the_first_fork(
        monkeypatch):
    """bare-app-tricks (scripts/tricks.py's peer) fills the allocator's holes
    before freezing the heap and collapses it after, as forkserver's parent
    does; plain bare-app does neither."""
    import gc
    from forkparts import accel
    bench = load_bench()
    calls = []
    monkeypatch.setattr(accel, "fill_allocator_holes",
                        lambda: calls.append(("fill", gc.get_freeze_count())) or ["filler"])
    monkeypatch.setattr(accel, "collapse_heap",
                        lambda: calls.append(("collapse", gc.get_freeze_count())) or 0)
    gc.unfreeze()
    try:
        app, listener, filler = bench.prepare_bare_app(0, "examples.bench_apps:hello")
        listener.close()
        assert calls == [] and filler is None and gc.get_freeze_count() > 0
        gc.unfreeze()
        app, listener, filler = bench.prepare_bare_app(0, "examples.bench_apps:hello",
                                                       heap_tricks=True)
        listener.close()
    finally:
        gc.unfreeze()
    assert [what for what, _ in calls] == ["fill", "collapse"] and filler == ["filler"]
    assert calls[0][1] < calls[1][1]   # filled before the freeze, collapsed after it


def test_sigterm_stops_the_benchmark_and_every_server_it_started(tmp_path):
    """`kill PID` of a running bench.py ends it like Ctrl-C: each section's
    servers (here --memory's, with a child asleep mid-request) are stopped,
    none left running as an orphan."""
    import signal
    import psutil
    bench = subprocess.Popen([sys.executable, BENCH, "--memory", "--apps", "hello",
                              "--out", str(tmp_path)], cwd=ROOT, stdout=subprocess.PIPE,
                             stderr=subprocess.STDOUT, text=True)
    seen = []
    try:
        me = psutil.Process(bench.pid)

        def serving_child():   # the server, and the child of the sleeping request
            for server in me.children():
                try:
                    if "forkserver" in " ".join(server.cmdline()) and server.children():
                        return [server] + server.children()
                except psutil.Error:   # a process bench.py ran, exited, not yet reaped
                    continue
        seen = wait_for(serving_child, timeout=30, what="a server with a child")
        bench.send_signal(signal.SIGTERM)
        out, _ = bench.communicate(timeout=30)
    finally:
        if bench.poll() is None:
            bench.kill()
            bench.wait()
        for proc in seen:   # whatever the assertions say, nothing is left behind
            try:
                os.killpg(proc.pid, signal.SIGKILL)
            except (ProcessLookupError, PermissionError):
                pass
    assert bench.returncode == 130 and "interrupted" in out and "Traceback" not in out
    left = [p.pid for p in seen if p.is_running() and p.status() != psutil.STATUS_ZOMBIE]
    assert left == [], out


def test_bare_app_keeps_its_heap_filler_while_it_serves():
    """The filler of bare-app-tricks lives as long as the server: dropped, its
    blocks would be the allocator's holes again and the figures would be
    bare-app's.  A filler that says when it is freed, in a forked server."""
    import signal
    import socket
    bench = load_bench()
    app = bench.load_app("examples.bench_apps:hello")
    listener = socket.create_server(("127.0.0.1", 0))
    port = listener.getsockname()[1]
    freed_r, freed_w = os.pipe()
    pid = os.fork()
    if pid == 0:   # the server; never returns into pytest
        try:
            class Filler:
                def __del__(self):
                    os.write(freed_w, b"freed")
            bench.prepare_bare_app = lambda port, spec, heap_tricks: (app, listener, Filler())
            bench.serve_bare_app(port, "examples.bench_apps:hello", heap_tricks=True)
        finally:
            os._exit(0)
    os.close(freed_w)
    listener.close()
    try:
        for _ in range(2):
            with socket.create_connection(("127.0.0.1", port), timeout=10) as conn:
                conn.sendall(b"GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
                assert read_until_close(conn).startswith(b"HTTP/1.1 200 OK\r\n")
        os.set_blocking(freed_r, False)
        try:
            said = os.read(freed_r, 64)
        except BlockingIOError:
            said = b""
        assert said == b""
    finally:
        os.kill(pid, signal.SIGKILL)
        os.waitpid(pid, 0)
        os.close(freed_r)
