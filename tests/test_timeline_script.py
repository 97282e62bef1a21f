"""scripts/timeline.py: the SVG's rows and intervals against the trace it was fed.

The traces here are written in the --trace contract's format
(docs/operations.md, "--trace"; issue 18): `<T> [<PID>] <text>`, T = monotonic
seconds with 6 decimals.  The checker parses the trace with its own few lines
(not the script's parser) and reads the picture with xml.etree, so a wrong
coordinate, a lost row or a lost SIGCHLD mark fails.  The live test runs the
server of this checkout through `timeline.py --run` for each reaper.
"""
import os
import re
import subprocess
import sys
import xml.etree.ElementTree as ET

import psutil
import pytest

from tests.conftest import IN_CI, ROOT, default_python_only

pytestmark = default_python_only("scripts/timeline.py, a measurement tool")

TIMELINE = os.path.join(ROOT, "scripts", "timeline.py")
SVG = "{http://www.w3.org/2000/svg}"
RUN_TIMEOUT_SECONDS = 120
PX_TOLERANCE = 0.003          # the SVG prints 3 decimals (x, width: 0.001), the scale 9
LINE_RE = re.compile(r"^(\d+\.\d{6}) \[(\d+)\] (.*)$")

COALESCED = """\
forkserver ready: pid 100 listening on http://127.0.0.1:8888
1000.000000 [100] fork: child 201 for 127.0.0.1:51000
1000.000500 [100] fork: child 202 for 127.0.0.1:51001
1000.000900 [100] fork: child 203 for 127.0.0.1:51002
1000.003000 [201] exit: status 0
1000.003100 [202] exit: status 0
1000.003200 [203] exit: status 0
1000.004000 [100] SIGCHLD received
1000.004100 [100] reaped 201: exited with status 0
1000.004150 [100] reaped 202: exited with status 0
1000.004200 [100] reaped 203: exited with status 0
1000.010000 [100] fork: child 204 for 127.0.0.1:51003
1000.012000 [204] exit: status 0
1000.012500 [100] SIGCHLD received
1000.012600 [100] reaped 204: exited with status 0
"""

# --reaper none: nobody reaps; the zombies last to the end of the trace.
REAPER_NONE = """\
2000.000000 [300] fork: child 301 for 127.0.0.1:52000
2000.002000 [301] exit: status 0
2000.005000 [300] fork: child 302 for 127.0.0.1:52001
2000.006000 [300] SIGCHLD received
2000.007000 [302] exit: status 0
2000.008000 [300] SIGCHLD received
2000.050000 [300] fork: child 303 for 127.0.0.1:52002
"""

# As a terminal shows them: a child's lines before its parent's fork line,
# http lines and log lines between them, a child killed by a signal.
OUT_OF_ORDER = """\
[2026-12-05 13:00:00 +0000] [400] [INFO] forkserver 1.0 starting
3000.001200 [401] < GET / HTTP/1.1
3000.001900 [401] exit: status 0
3000.001000 [400] fork: child 401 for 127.0.0.1:53000
3000.004000 [402] exit: status 0
3000.002500 [400] SIGCHLD received
3000.002600 [400] reaped 401: exited with status 0
3000.003000 [400] fork: child 402 for 127.0.0.1:53001
3000.004300 [400] reaped 402: exited with status 0
3000.004200 [400] SIGCHLD received
3000.005000 [400] fork: child 403 for 127.0.0.1:53002
3000.009000 [400] SIGCHLD received
3000.009100 [400] reaped 403: killed by SIGKILL
3000.009500 [404] exit: status 0
3000.010000 [400] fork: child 404 for 127.0.0.1:53003
3000.010500 [400] SIGCHLD received
3000.010600 [400] reaped 404: exited with status 0
3000.011000 [405] exit: status 0
3000.011500 [400] SIGCHLD received
3000.011600 [400] reaped 405: exited with status 0
3000.011700 [400] fork: child 405 for 127.0.0.1:53004
"""


def run(*args, stdin=None):
    return subprocess.run([sys.executable, TIMELINE] + list(args), input=stdin,
                          capture_output=True, text=True, timeout=RUN_TIMEOUT_SECONDS, cwd=ROOT)


def picture(tmp_path, trace_text, *args):
    trace = tmp_path / "trace.log"
    trace.write_text(trace_text)
    out = tmp_path / "timeline.svg"
    result = run(str(trace), "-o", str(out), *args)
    assert result.returncode == 0, result.stderr
    return out.read_text(), result.stdout


# ------------------------------------------------- the test's own reading of both

def expected_lives(trace_text):
    """{pid: {"fork", "exit", "reap", "parent"}} and [(T, parent)] of SIGCHLD."""
    lives, sigchld = {}, []
    for line in trace_text.splitlines():
        match = LINE_RE.match(line)
        if not match:
            continue
        t, pid, words = float(match.group(1)), int(match.group(2)), match.group(3).split()
        if words[:2] == ["fork:", "child"]:
            lives.setdefault(int(words[2]), {})["fork"] = t
        elif words[0] == "exit:":
            lives.setdefault(pid, {})["exit"] = t
        elif words[0] == "reaped":
            lives.setdefault(int(words[1].rstrip(":")), {})["reap"] = t
        elif match.group(3) == "SIGCHLD received":   # not the warm-up's trial child's
            sigchld.append((t, pid))
    return lives, sigchld


def read_svg(svg_text):
    root = ET.fromstring(svg_text.encode())
    start, end = float(root.get("data-start")), float(root.get("data-end"))
    left, per_ms = float(root.get("data-left-px")), float(root.get("data-px-per-ms"))
    rows = [g for g in root.iter(SVG + "g") if "row" in g.get("class", "").split()]
    return root, (start, end, left, per_ms), rows


def classes(element):
    return element.get("class", "").split()


def bar(row, cls):
    found = [r for r in row.findall(SVG + "rect") if cls in classes(r)]
    assert len(found) <= 1, (cls, found)
    if not found:
        return None
    x, width = float(found[0].get("x")), float(found[0].get("width"))
    return x, x + width


def check_picture(svg_text, trace_text, cut=False):
    """Every row and interval of the SVG where the trace says; returns the rows.
    cut: the picture ends before the trace (--run stops drawing at its SIGTERM)."""
    root, (start, end, left, per_ms), rows = read_svg(svg_text)
    if cut:
        trace_text = "\n".join(l for l in trace_text.splitlines()
                               if not LINE_RE.match(l) or float(l.split()[0]) <= end)
    lives, sigchld = expected_lives(trace_text)
    times = [t for life in lives.values() for t in life.values()] + [t for t, _ in sigchld]
    assert abs(start - min(times)) < 1e-6
    assert end >= max(times) - 1e-6 if cut else abs(end - max(times)) < 1e-6

    def x(t):
        return left + (t - start) * 1000 * per_ms

    children = [r for r in rows if "child" in classes(r)]
    assert sorted(int(r.get("data-pid")) for r in children) == sorted(lives)
    firsts = [min(lives[int(r.get("data-pid"))].values()) for r in children]
    assert firsts == sorted(firsts)                       # rows in order of start
    for row in children:
        life = lives[int(row.get("data-pid"))]
        alive = bar(row, "alive")
        alive_end = life.get("exit", life.get("reap", end))
        # from the fork line, or the child's exit line if that came first (the
        # child can run before the parent returns from fork())
        alive_start = min(life["fork"], alive_end)
        assert alive == pytest.approx((x(alive_start), x(alive_end)), abs=PX_TOLERANCE)
        zombie = bar(row, "zombie")
        if "exit" not in life:
            assert zombie is None
            continue
        zombie_end = life.get("reap", end)
        assert zombie == pytest.approx((x(life["exit"]), x(zombie_end)), abs=PX_TOLERANCE)
        assert (bar(row, "unreaped") is not None) == ("reap" not in life)
    parents = [r for r in rows if "parent" in classes(r)]
    check_parent_marks(parents, lives, sigchld, x)
    return children, parents


def check_parent_marks(parents, lives, sigchld, x):
    """A SIGCHLD mark at each handler's T, a dot at each reap's."""
    marks = sorted(float(m.get("x1")) for p in parents for m in p.iter(SVG + "line")
                   if "sigchld" in classes(m))
    assert marks == pytest.approx(sorted(x(t) for t, _ in sigchld), abs=PX_TOLERANCE)
    dots = sorted(float(c.get("cx")) for p in parents for c in p.iter(SVG + "circle"))
    reaps = sorted(x(life["reap"]) for life in lives.values() if "reap" in life)
    assert dots == pytest.approx(reaps, abs=PX_TOLERANCE)


def note(row):
    return " ".join(t.text for t in row.iter(SVG + "text") if "note" in classes(t))


# ------------------------------------------------- fixture traces in the contract's format

def test_one_sigchld_standing_for_three_reaps_is_one_mark_and_three_dots(tmp_path):
    svg, out = picture(tmp_path, COALESCED)
    children, parents = check_picture(svg, COALESCED)
    assert [int(r.get("data-pid")) for r in children] == [201, 202, 203, 204]
    (parent,) = parents
    assert parent.get("data-pid") == "100"
    assert len([m for m in parent.iter(SVG + "line") if "sigchld" in classes(m)]) == 2
    assert len(list(parent.iter(SVG + "circle"))) == 4
    assert out == "%s: 4 children, 4 reaped, 0 never reaped, 2 SIGCHLD, 12.600 ms\n" % (
        tmp_path / "timeline.svg")


def test_reaper_none_zombies_are_drawn_to_the_end_and_labelled(tmp_path):
    svg, out = picture(tmp_path, REAPER_NONE)
    children, parents = check_picture(svg, REAPER_NONE)
    _, (start, end, left, per_ms), _ = read_svg(svg)
    assert end == pytest.approx(2000.05)
    by_pid = {int(r.get("data-pid")): r for r in children}
    for pid in (301, 302):
        assert bar(by_pid[pid], "unreaped")[1] == pytest.approx(left + 50 * per_ms, abs=0.002)
        assert note(by_pid[pid]) == "never reaped"
    assert note(by_pid[303]) == "running at end of trace"
    assert not list(parents[0].iter(SVG + "circle"))          # no reap, no dot
    assert "2 never reaped, 2 SIGCHLD" in out


def test_until_leaves_out_the_reaps_of_the_shutdown(tmp_path):
    stopped = REAPER_NONE + ("2000.400000 [300] reaped 301: exited with status 0\n"
                             "2000.400100 [300] reaped 302: exited with status 0\n")
    svg, out = picture(tmp_path, stopped)
    check_picture(svg, stopped)
    assert "2 reaped, 0 never reaped" in out
    svg, out = picture(tmp_path, stopped, "--until", "60")
    children, _ = check_picture(svg, stopped, cut=True)
    _, (start, end, _, _), _ = read_svg(svg)
    assert end == pytest.approx(2000.06)
    assert [note(r) for r in children] == ["never reaped"] * 2 + ["running at end of trace"]
    assert out.endswith("0 reaped, 2 never reaped, 2 SIGCHLD, 60.000 ms\n")


def test_lines_out_of_order_and_of_other_kinds_give_the_sorted_picture(tmp_path):
    svg, _ = picture(tmp_path, OUT_OF_ORDER, "--title", "t")
    children, _ = check_picture(svg, OUT_OF_ORDER)
    assert [int(r.get("data-pid")) for r in children] == [401, 402, 403, 404, 405]
    assert note(children[2]) == "killed by SIGKILL"            # no exit line: no zombie bar
    # its exit T is before the parent's fork line's: the bar starts at the exit
    assert note(children[3]) == "exited before its parent's fork: line"
    assert bar(children[3], "alive")[1] - bar(children[3], "alive")[0] == 0
    # a lab handler (--reaper once) reaped it before the parent stamped its
    # fork line (seen live): still one life, its zombie bar from exit to reap
    assert note(children[4]) == "exited before its parent's fork: line"
    ordered = "\n".join(sorted((l for l in OUT_OF_ORDER.splitlines() if LINE_RE.match(l)),
                               key=lambda l: float(l.split()[0]))) + "\n"
    again, _ = picture(tmp_path, ordered, "--title", "t")
    assert again == svg                                        # the order of lines is no input


def test_the_same_trace_gives_the_same_bytes_and_stdin_works(tmp_path):
    first, _ = picture(tmp_path, COALESCED, "--title", "same")
    second = run("-", "--title", "same", stdin=COALESCED)
    assert second.returncode == 0 and second.stdout == first


def test_a_reused_pid_after_its_reap_is_a_new_row(tmp_path):
    reused = COALESCED + ("1000.020000 [100] fork: child 201 for 127.0.0.1:51009\n"
                          "1000.021000 [201] exit: status 0\n")
    svg, _ = picture(tmp_path, reused)
    _, _, rows = read_svg(svg)
    pids = [int(r.get("data-pid")) for r in rows if "child" in classes(r)]
    assert pids == [201, 202, 203, 204, 201]
    assert note(rows[-1]) == "never reaped"


@pytest.mark.parametrize("text, message", [
    ("", "no --trace=process lines in"),
    ("forkserver ready: pid 1 listening on http://127.0.0.1:1\n"
     "1.000000 [5] < GET / HTTP/1.1\n", "no --trace=process lines in"),
    ("1.000000 [5] fork: child 6 for x\n1.5 [5] fork: child seven\n",
     "line 2: malformed fork: line"),
    ("1.000000 [5] fork: child 6 for x\n\n1.0x [5] reaped 6: exited\n",
     "line 3: malformed trace line"),
    ("[5] fork: child 6 for 127.0.0.1:1\n", "line 1: a trace line without a timestamp"),
])
def test_bad_trace_input_is_a_clear_error_naming_the_line(tmp_path, text, message):
    path = tmp_path / "bad.log"
    path.write_text(text)
    result = run(str(path), "-o", str(tmp_path / "x.svg"))
    assert result.returncode == 2, result.stderr
    assert message in result.stderr and "Traceback" not in result.stderr
    assert not (tmp_path / "x.svg").exists()


@pytest.mark.parametrize("args, message", [
    ([], "give a trace file"),
    (["/no/such/trace.log"], "cannot read /no/such/trace.log"),
    (["x.log", "--", "tests.apps:hello"], "need --run"),
    (["--run", "--requests", "0", "--", "tests.apps:hello"], "--requests must be"),
    (["--width", "5", "x.log"], "--width must be"),
])
def test_bad_usage_is_exit_2_without_traceback(args, message):
    result = run(*args, stdin="")
    assert result.returncode == 2 and message in result.stderr, result.stderr
    assert "Traceback" not in result.stderr


# ------------------------------------------------- live: this checkout's server

def server_lacks_trace_modes(stderr):
    return "exited with status 2 before it was ready" in stderr and "--trace" in stderr


@pytest.mark.parametrize("reaper", ["loop", "once", "none"])
def test_a_live_run_draws_what_the_server_traced(tmp_path, reaper):
    """After the server's --trace=process lands this runs for real; before,
    the server rejects the mode and the test is skipped (failed in CI)."""
    trace, svg = tmp_path / "run.log", tmp_path / "run.svg"
    result = run("--run", "--requests", "12", "--concurrency", "4", "--settle", "0.3",
                 "--save-trace", str(trace), "-o", str(svg), "--",
                 "tests.apps:hello", "--reaper", reaper)
    if result.returncode != 0 and server_lacks_trace_modes(result.stderr) and not IN_CI:
        pytest.skip("this checkout's server has no --trace=process yet: " + result.stderr)
    assert result.returncode == 0, result.stderr
    server = int(re.search(r"server (\d+) stopped with status 0", result.stderr).group(1))
    assert not psutil.pid_exists(server) or psutil.Process(server).status() == "zombie"
    children, _ = check_picture(svg.read_text(), trace.read_text(), cut=True)
    assert len(children) == 12
    never = [r for r in children if "never reaped" in note(r)]
    if reaper != "once":     # once: lost SIGCHLDs may or may not leave zombies
        assert len(never) == (12 if reaper == "none" else 0)


@pytest.mark.parametrize("reaper", ["loop", "none"])
def test_a_live_run_of_a_server_writing_the_contract_is_drawn(tmp_path, reaper):
    """--run's machinery (ready line, burst, stop by pid, stderr) on a stand-in
    server that writes the contract's lines (tests/standin_forkserver.py)."""
    trace, svg = tmp_path / "run.log", tmp_path / "run.svg"
    result = run("--run", "--requests", "10", "--concurrency", "5", "--settle", "0.2",
                 "--save-trace", str(trace), "-o", str(svg), "--",
                 os.path.join(ROOT, "tests", "standin_forkserver.py"), "--reaper", reaper)
    assert result.returncode == 0, result.stderr
    assert re.search(r"burst of 10 connections: 10 completed, 0 failed; server (\d+) "
                     r"stopped with status 0", result.stderr), result.stderr
    children, parents = check_picture(svg.read_text(), trace.read_text(), cut=True)
    assert len(children) == 10 and len(parents) == 1
    never = [r for r in children if "never reaped" in note(r)]
    assert len(never) == (10 if reaper == "none" else 0)
    summary = "%s: 10 children, %d reaped, %d never reaped, " % (
        svg, 0 if reaper == "none" else 10, len(never))
    assert result.stdout.startswith(summary), result.stdout


def test_lab_timelines_draws_exercise_4_as_the_guide_runs_it(tmp_path):
    # scripts/lab_timelines.py makes docs/img's pictures from real runs.
    done = subprocess.run([sys.executable, os.path.join(ROOT, "scripts", "lab_timelines.py"),
                           "--only", "lab4", "--out", str(tmp_path)],
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert "5 children, 0 reaped, 5 never reaped, 0 SIGCHLD" in done.stdout
    assert (tmp_path / "lab4-timeline.svg").read_text().startswith("<?xml")


@pytest.mark.parametrize("exercise", [4, 5, 6])
def test_the_lab_guides_pictures_carry_the_scripts_legend(exercise):
    """docs/img's pictures were drawn by an older timeline.py; their legend
    must still say what the script's marks mean now ("SIGCHLD handler ran":
    one mark can stand for several signals, docs/labs.md)."""
    def legend(tree):
        group = [g for g in tree.iter(SVG + "g") if g.get("class") == "legend"]
        assert len(group) == 1
        return [t.text for t in group[0].iter(SVG + "text")]
    picture = ET.parse(os.path.join(ROOT, "docs", "img", "lab%d-timeline.svg" % exercise))
    trace = "forkserver ready: pid 100 listening on http://127.0.0.1:8888\n" + \
        "1000.000000 [100] fork: child 201 for 127.0.0.1:51000\n"
    drawn = subprocess.run([sys.executable, TIMELINE, "-"], input=trace, capture_output=True,
                           text=True, timeout=RUN_TIMEOUT_SECONDS, check=True).stdout
    assert legend(picture) == legend(ET.ElementTree(ET.fromstring(drawn)))
