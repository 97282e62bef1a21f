"""scripts/tricks.py: a short real run (table with figures, nothing left
running), its errors, and the arithmetic of its intervals."""
import difflib
import glob
import importlib.util
import json
import os
import re
import socket
import subprocess
import sys
import tempfile
import threading
import time

import psutil
import pytest

from tests.conftest import ROOT, default_python_only

pytestmark = default_python_only("scripts/tricks.py, a measurement tool")

TRICKS = os.path.join(ROOT, "scripts", "tricks.py")
RUN_TIMEOUT_SECONDS = 120      # the quick run takes a few seconds; a hang fails
NUMBER = r"[+-]\d+\.?\d*"
CELL = r"%s \[%s, %s\]" % (NUMBER, NUMBER, NUMBER)


def load_tricks():
    spec = importlib.util.spec_from_file_location("tricks_under_test", TRICKS)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def run(*args):
    return subprocess.run([sys.executable, TRICKS] + list(args), capture_output=True,
                          text=True, timeout=RUN_TIMEOUT_SECONDS)


def servers_started(out_dir):
    """The pid of every server the run started, from its JSON."""
    (path,) = [p for p in os.listdir(out_dir) if p.endswith(".json")]
    with open(os.path.join(out_dir, path)) as f:
        results = json.load(f)
    return results, {pid for trick in results["tricks"] for r in trick["rounds"]
                     for pid in r["pids"].values()}


def left_in_sessions(sids):
    """Live processes in a session the script started (each server leads one)."""
    left = []
    for proc in psutil.process_iter():
        try:
            if os.getsid(proc.pid) in sids and proc.status() != psutil.STATUS_ZOMBIE:
                left.append(proc.pid)
        except (ProcessLookupError, psutil.NoSuchProcess, PermissionError):
            pass
    return left


def test_a_quick_run_prints_the_table_with_figures_and_leaves_no_server(tmp_path):
    out = run("--trick", "gc-freeze", "--rounds", "10", "--requests", "20", "--warmup", "20",
              "--app", "examples.bench_apps:hello", "--out", str(tmp_path))
    assert out.returncode == 0, out.stdout + out.stderr
    row = [line for line in out.stdout.splitlines() if line.startswith("| gc-freeze | hello |")]
    assert len(row) == 1, out.stdout
    assert len(re.findall(CELL, row[0])) == 4, row[0]
    assert re.search(r"\| \d+ / \d+ \|$", row[0]), row[0]         # req/s on / off
    results, pids = servers_started(tmp_path)
    rounds = results["tricks"][0]["rounds"]
    assert len(rounds) == 10 and len(pids) == 20                 # a new pair each round
    assert [r["order"][0] for r in rounds[:2]] == ["on", "off"]  # the order alternates
    assert all(r[side]["child_faults"] > 50 for r in rounds for side in ("on", "off"))
    assert left_in_sessions(pids) == []


def test_a_server_that_does_not_start_is_named_with_its_output_and_stopped(tmp_path):
    out = run("--on", "", "--off", "--no-such-switch", "--rounds", "10", "--out", str(tmp_path))
    assert out.returncode == 1 and "Traceback" not in out.stdout + out.stderr
    assert "exited" in out.stdout and "unrecognized arguments: --no-such-switch" in out.stdout
    ours = [p for p in psutil.process_iter(["cmdline"])
            if "--no-such-switch" in (p.info["cmdline"] or [])
            and p.status() != psutil.STATUS_ZOMBIE]
    assert ours == []


def test_path_is_what_every_request_asks_for(tmp_path):
    """The README's Flask example answers / and /hello: with --path /hello every
    request is a 200, with --path /nope the run stops at the first 404."""
    common = ["--on", "", "--off", "", "--rounds", "10", "--requests", "10", "--warmup", "5",
              "--app", "examples.flaskapp:app"]
    out = run(*common, "--path", "/hello", "--out", str(tmp_path / "hello"))
    assert out.returncode == 0, out.stdout + out.stderr
    results, pids = servers_started(tmp_path / "hello")
    assert results["path"] == "/hello" and left_in_sessions(pids) == []
    out = run(*common, "--path", "/nope", "--out", str(tmp_path / "nope"))
    assert out.returncode == 1 and "answered 0 of 5 warm-up requests with 200" in out.stdout


class CountingServer:
    """A loopback server that answers every connection with a 200 after
    HOLD_SECONDS, each in a thread, and records when and how many at once."""
    HOLD_SECONDS = 0.02

    def __init__(self):
        self.listener = socket.create_server(("127.0.0.1", 0), backlog=64)
        self.port = self.listener.getsockname()[1]
        self.lock = threading.Lock()
        self.active = self.peak = self.accepted = 0
        self.times = []
        threading.Thread(target=self.serve, daemon=True).start()

    def serve(self):
        while True:
            try:
                conn, _ = self.listener.accept()
            except OSError:   # closed: the test is over
                return
            threading.Thread(target=self.answer, args=(conn,), daemon=True).start()

    def answer(self, conn):
        with self.lock:
            self.accepted += 1
            self.active += 1
            self.peak = max(self.peak, self.active)
            self.times.append(time.monotonic())
        with conn:
            conn.recv(65536)
            time.sleep(self.HOLD_SECONDS)
            with self.lock:
                self.active -= 1
            conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\nConnection: close\r\n\r\n")


def test_clients_load_each_server_with_its_count_at_once_and_together():
    """--clients N sends from N connections at a time; --together sends both
    servers their requests over the same moments, each exactly count."""
    tricks = load_tricks()
    servers = [CountingServer(), CountingServer()]
    try:
        answered, _ = tricks.send_requests([s.port for s in servers], 40, clients=4)
    finally:
        for server in servers:
            server.listener.close()
    assert answered == {s.port: 40 for s in servers}
    assert [s.accepted for s in servers] == [40, 40]
    assert min(s.peak for s in servers) >= 2          # more than one at a time, each
    a, b = (sorted(s.times) for s in servers)
    assert a[0] < b[-1] and b[0] < a[-1]               # their loads overlap
    assert a[20] < b[-1] and b[20] < a[-1]             # not one after the other
    servers = [CountingServer(), CountingServer()]     # first=1: the second starts
    try:
        tricks.send_requests([s.port for s in servers], 2, clients=1, first=1)
    finally:
        for server in servers:
            server.listener.close()
    assert servers[1].times[0] < servers[0].times[0]


def test_a_run_under_load_together_records_how_it_ran(tmp_path):
    out = run("--on", "", "--off", "", "--rounds", "10", "--requests", "12", "--warmup", "5",
              "--clients", "3", "--together", "--app", "examples.bench_apps:hello",
              "--out", str(tmp_path))
    assert out.returncode == 0, out.stdout + out.stderr
    assert "12 requests from 3 clients at a time, both servers loaded at once" in out.stdout
    results, pids = servers_started(tmp_path)
    assert results["clients"] == 3 and results["together"] is True
    rounds = results["tricks"][0]["rounds"]
    assert all(r["order"] == ["together"] and r["on"]["ok"] == r["off"]["ok"] == 12
               for r in rounds)
    assert all(r[side]["child_faults"] > 50 for r in rounds for side in ("on", "off"))
    assert left_in_sessions(pids) == []


def test_a_peer_of_the_benchmark_is_measured_as_the_other_side(tmp_path):
    """--off-peer floor: the off side is scripts/bench.py's bare fork loop, whose
    child does no more than recv, send and close: far fewer faults than ours."""
    out = run("--on", "", "--off-peer", "floor", "--rounds", "10", "--requests", "10",
              "--warmup", "5", "--same-servers", "--app", "examples.bench_apps:hello",
              "--out", str(tmp_path))
    assert out.returncode == 0, out.stdout + out.stderr
    results, pids = servers_started(tmp_path)
    assert results["off_peer"] == "floor" and results["on_peer"] is None
    rounds = results["tricks"][0]["rounds"]
    assert all(r["off"]["child_faults"] + 50 < r["on"]["child_faults"] for r in rounds)
    assert left_in_sessions(pids) == []


def copy_checkout(where):
    import shutil
    where.mkdir()
    for name in ("forkserver.py", "wsgi_handler.py"):
        shutil.copy(os.path.join(ROOT, name), where / name)
    for name in ("forkparts", "examples"):
        shutil.copytree(os.path.join(ROOT, name), where / name,
                        ignore=shutil.ignore_patterns("__pycache__"))
    return where


def test_module_runs_each_checkout_as_python_m_forkserver(tmp_path):
    out = run("--on", "", "--off", "", "--module", "--rounds", "10", "--requests", "10",
              "--warmup", "5", "--same-servers", "--out", str(tmp_path))
    assert out.returncode == 0, out.stdout + out.stderr
    results, pids = servers_started(tmp_path)
    assert results["module"] is True and left_in_sessions(pids) == []
    argv = results["tricks"][0]["rounds"][0]["argv"]
    assert all(a[1:3] == ["-m", "forkserver"] for a in argv.values())


def test_module_compiles_a_checkout_first_or_says_why_not(tmp_path):
    """Its bytecode cached before any server starts (a server caches only what
    it imports, after compiling at start); a checkout that does not compile,
    or a file that is not forkserver.py, is a usage error."""
    tricks = load_tricks()
    copy = copy_checkout(tmp_path / "good")
    assert tricks.compile_checkout(str(copy)) is None
    cached = {name.split(".")[0] for d in ("", "forkparts", "examples")
              for name in os.listdir(copy / d / "__pycache__")}
    assert {"forkserver", "wsgi_handler", "parser", "trace", "flaskapp"} <= cached
    broken = copy_checkout(tmp_path / "broken")
    (broken / "forkparts" / "trace.py").write_text("def (:\n")
    out = run("--on", "", "--off", "", "--module", "--forkserver", str(broken / "forkserver.py"))
    assert out.returncode == 2 and "--module: cannot compile" in out.stderr
    assert "trace.py" in out.stderr and "Traceback (most recent call last)" not in out.stderr
    out = run("--on", "", "--off", "", "--module", "--forkserver", TRICKS)
    assert out.returncode == 2 and "is not a forkserver.py" in out.stderr


def test_a_side_answered_by_another_process_is_an_error_not_a_figure():
    """A peer started on a port another server holds: the answers come from
    that server, and the side's own counters do not move.  The run stops
    and says so, instead of reporting 0 faults and 0 us."""
    tricks = load_tricks()
    foreign = CountingServer()
    idle = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(30)"])
    try:
        class Side:
            name, pid, port, log_path = "stdlib-off-1", idle.pid, foreign.port, "log"

            def exited(self):
                return idle.poll()
        with pytest.raises(tricks.SetupError, match="did another process answer on port"):
            tricks.measure_sides([Side()], 5)
    finally:
        idle.kill()
        idle.wait()
        foreign.listener.close()


def test_a_peer_alone_compares_it_with_our_defaults():
    tricks = load_tricks()
    args = tricks.parse_args(["--off-peer", "stdlib"])
    assert (args.on, args.off, args.off_peer) == ("", "", "stdlib")
    assert args.pairs == [{"trick": "custom", "on": "", "off": ""}]


@pytest.mark.parametrize("args, message", [
    (["--path", "hello"], "'hello' is not a path"),
    (["--trick", "nope"], "unknown trick nope"),
    (["--trick", "gc-freeze", "--rounds", "9"], "must be at least 10"),
    (["--on", "--fast-accept"], "--on and --off go together"),
    (["--trick", "gc-freeze", "--clients", "0"], "must be at least 1"),
    (["--trick", "gc-freeze", "--off-peer", "stdlib"], "--off-peer compares with --on/--off"),
    (["--on", "", "--off", "--no-huge-pages", "--off-peer", "stdlib"], "leave --off out"),
    (["--on", "", "--off-peer", "gunicorn"], "invalid choice: 'gunicorn'"),
    (["--off-peer", "stdlib", "--off-forkserver", TRICKS], "name two servers for one side"),
    ([], "--trick NAME or --on FLAGS --off FLAGS"),
    (["--on", "", "--off", "", "--off-patch", "nosuch.patch"], "--off-patch: no such file"),
    (["--on", "", "--off", "", "--off-patch", TRICKS, "--off-forkserver", TRICKS],
     "leave out --off-forkserver"),
    (["--on", "", "--off", "", "--off-patch", TRICKS, "--off-peer", "stdlib"],
     "leave out --off-peer"),
    (["--trick", "gc-freeze", "--off-patch", TRICKS], "not with --trick"),
    (["--on", "", "--off", "", "--off-patch", TRICKS, "--forkserver", TRICKS],
     "leave out --forkserver"),
])
def test_bad_arguments_exit_2_naming_the_problem(args, message):
    out = run(*args)
    assert out.returncode == 2
    assert message in out.stderr and "Traceback" not in out.stderr


def test_the_interval_and_its_verdict():
    tricks = load_tricks()
    ci = tricks.interval([-3.0, -1.0] * 5)
    # mean -2, sd 1.0541 (n-1), se 0.3333, t(0.975, 9) = 2.262
    assert ci["mean"] == pytest.approx(-2.0)
    assert ci["high"] == pytest.approx(-2.0 + 2.262 * 1.05409 / 10 ** 0.5, abs=1e-4)
    assert tricks.verdict(ci) == "earns its keep"
    assert tricks.verdict({"low": 0.5, "high": 2.0}) == "costs"
    assert tricks.verdict({"low": -0.5, "high": 2.0}) == "no measurable effect"


def test_t_quantiles_past_the_table_join_it_smoothly():
    tricks = load_tricks()
    assert abs(tricks.t_quantile(41) - tricks.t_quantile(40)) < 0.002
    assert 1.96 < tricks.t_quantile(1000) < tricks.t_quantile(41) < tricks.t_quantile(40)


ABLATIONS = sorted(glob.glob(os.path.join(ROOT, "scripts", "ablations", "*.patch")))


def leftover_worktrees():
    """Worktrees (and scratch directories) of --off-patch still there."""
    listed = subprocess.run(["git", "-C", ROOT, "worktree", "list"], capture_output=True,
                            text=True).stdout
    return ([line for line in listed.splitlines() if "tricks-off-" in line]
            + glob.glob(os.path.join(tempfile.gettempdir(), "tricks-off-*")))


@pytest.mark.parametrize("patch", ABLATIONS, ids=os.path.basename)
def test_each_ablation_the_docs_measure_applies_to_the_code(patch):
    check = subprocess.run(["git", "-C", ROOT, "apply", "--check", patch],
                           capture_output=True, text=True)
    assert check.returncode == 0, check.stderr


def head_patch(where, old_text, new_text):
    """A patch of HEAD's forkserver.py that replaces old_text with new_text."""
    old = subprocess.run(["git", "-C", ROOT, "show", "HEAD:forkserver.py"], capture_output=True,
                         text=True, check=True).stdout.splitlines(keepends=True)
    new = [line.replace(old_text, new_text) for line in old]
    assert new != old
    where.write_text("".join(difflib.unified_diff(old, new, "a/forkserver.py",
                                                  "b/forkserver.py")))
    return where


def test_off_patch_serves_the_off_side_from_a_patched_worktree_removed_after(tmp_path):
    assert leftover_worktrees() == []
    patch = head_patch(tmp_path / "mark.patch", "listening on {addresses}\"",
                       "listening on {addresses} (patched side)\"")
    out_dir = tmp_path / "out"
    out = run("--on", "", "--off", "", "--rounds", "10", "--requests", "10", "--warmup", "5",
              "--same-servers", "--module", "--off-patch", str(patch), "--out", str(out_dir))
    assert out.returncode == 0, out.stdout + out.stderr
    results, pids = servers_started(out_dir)
    ran = results["off_patch"]
    assert list(ran["patches"]) == [str(patch)] and len(ran["head"]) == 40
    assert ran["off_forkserver"].endswith("/tree/forkserver.py")
    assert left_in_sessions(pids) == []
    logs = {side: "".join(open(path).read() for path in glob.glob(
        os.path.join(out_dir, "server-custom-%s-*.log" % side))) for side in ("on", "off")}
    assert "(patched side)" in logs["off"] and "ready" in logs["on"]
    assert "(patched side)" not in logs["on"]
    argv = results["tricks"][0]["rounds"][0]["argv"]
    assert argv["off"][1:3] == ["-m", "forkserver"]
    assert leftover_worktrees() == []


def test_an_off_patch_that_does_not_apply_is_named_and_leaves_no_worktree(tmp_path):
    patch = tmp_path / "stale.patch"
    patch.write_text("".join(difflib.unified_diff(["no such line\n"], ["other\n"],
                                                  "a/forkserver.py", "b/forkserver.py")))
    out = run("--on", "", "--off", "", "--rounds", "10", "--requests", "10",
              "--off-patch", str(patch), "--out", str(tmp_path / "out"))
    assert out.returncode == 1
    assert "tricks.py: " in out.stdout and "stale.patch does not apply" in out.stdout
    assert "Traceback" not in out.stderr
    assert leftover_worktrees() == []


def test_an_off_side_that_cannot_start_stops_the_run_and_leaves_no_worktree(tmp_path):
    patch = head_patch(tmp_path / "broken.patch", "import errno\n", "import errno_nosuch\n")
    out = run("--on", "", "--off", "", "--rounds", "10", "--requests", "10",
              "--off-patch", str(patch), "--out", str(tmp_path / "out"))
    assert out.returncode == 1, out.stdout + out.stderr
    assert "tricks.py: " in out.stdout and "Traceback" not in out.stderr
    assert leftover_worktrees() == []
