"""--trace[=MODES] end to end: the line format of docs/operations.md ("Tracing")
and docs/labs.md (`--trace`): "<T> [<pid>] text" lines, T = time.monotonic().
"""
import re
import threading
import time

import pytest

from tests.conftest import http_get
from tests.parts.test_cli import EXIT_USAGE, run_cli
from tests.test_labs import wait_for

STAMP = r"(\d+\.\d{6}) \[(\d+)\] "
LINE_RE = re.compile(r"^" + STAMP + r"(.*)$", re.M)


def trace_lines(text):
    """(T, pid, text) of every trace line in the error log."""
    return [(float(t), int(pid), rest) for t, pid, rest in LINE_RE.findall(text)]


def reaped_all(server, count):
    def check():
        text = server.log_text()
        return len(re.findall(r"\] reaped \d+: ", text)) >= count and text
    return wait_for(check, what="%d reap lines" % count)


def one_life(lines, parent):
    """fork, exit, SIGCHLD, reap lines of the first child: {event: (T, pid)}."""
    life = {}
    for t, pid, text in lines:
        match = re.match(r"fork: child (\d+) for 127\.0\.0\.1:\d+$", text)
        if match and pid == parent and "fork" not in life:
            life["fork"], life["child"] = (t, pid), int(match.group(1))
        elif text == "exit: status 0" and pid == life.get("child"):
            life["exit"] = (t, pid)
        elif text == "SIGCHLD received" and pid == parent and "exit" in life:
            life.setdefault("sigchld", (t, pid))
        elif text == "reaped %s: exited with status 0" % life.get("child") and pid == parent:
            life["reap"] = (t, pid)
    return life


def test_bare_trace_does_not_take_the_app_spec_and_traces_everything(start_server):
    server = start_server("--trace", "tests.apps:hello")    # the app spec after --trace
    assert http_get(server, "/bare")[0] == 200
    lines = trace_lines(reaped_all(server, 1))
    texts = [text for _, _, text in lines]
    assert "< GET /bare HTTP/1.1" in texts and "> HTTP/1.1 200 OK" in texts
    life = one_life(lines, server.pid)
    assert set(life) == {"fork", "child", "exit", "sigchld", "reap"}, lines
    # One clock for every process: the child's exit comes before the SIGCHLD
    # it caused, and that before the reap.
    assert life["exit"][0] <= life["sigchld"][0] <= life["reap"][0]
    assert abs(life["reap"][0] - time.monotonic()) < 60


def test_trace_process_has_no_heads_and_http_has_no_process_lines(start_server):
    server = start_server("tests.apps:hello", "--trace=process")
    assert http_get(server, "/p")[0] == 200
    lines = trace_lines(reaped_all(server, 1))
    assert set(one_life(lines, server.pid)) == {"fork", "child", "exit", "sigchld", "reap"}
    assert not [text for _, _, text in lines if text.startswith(("< ", "> "))]
    assert server.access_text().startswith("127.0.0.1 - - [")   # no stamp without http
    assert server.stop() == 0

    http = start_server("tests.apps:hello", "--trace=http")
    assert http_get(http, "/h")[0] == 200
    text = wait_for(lambda: "> HTTP/1.1 200 OK" in http.log_text() and http.log_text(),
                    what="the response head")
    lines = trace_lines(text)
    children = {pid for _, pid, text in lines if text == "< GET /h HTTP/1.1"}
    assert len(children) == 1 and http.pid not in children
    assert not [t for t in lines if re.match(r"(fork|exit|reaped|SIGCHLD)", t[2])]
    # The access line: written by that same child, with the trace's stamp.
    access = wait_for(http.access_text, what="the access line")
    assert re.match(STAMP + r'127\.0\.0\.1 - - \[[^\]]+\] "GET /h HTTP/1\.1" 200 14$',
                    access.strip())
    assert int(re.match(STAMP, access).group(2)) in children


@pytest.mark.parametrize("value", ["bogus", "process,bogus", ""])
def test_a_bad_trace_mode_is_exit_2_naming_it(value):
    result = run_cli("tests.apps:hello", "--trace=" + value)
    assert result.returncode == EXIT_USAGE
    last = result.stderr.strip().splitlines()[-1]
    assert "--trace" in last and "unknown mode %r" % (value.split(",")[-1],) in last
    assert "process" in last and "http" in last and "Traceback" not in result.stderr


@pytest.mark.parametrize("lab", [["--reaper", "once"], ["--lab-print-in-handler"]])
def test_a_lab_reaper_in_the_handler_traces_each_reap_when_waitpid_returned(start_server, lab):
    server = start_server("tests.apps:hello", "--trace=process", *lab)
    for n in range(3):
        assert http_get(server, "/%d" % n)[0] == 200
        lines = trace_lines(reaped_all(server, n + 1))
    exits = {pid: t for t, pid, text in lines if text == "exit: status 0"}
    reaps = {int(m.group(1)): t for t, pid, text in lines
             for m in [re.match(r"reaped (\d+): exited with status 0$", text)]
             if m and pid == server.pid}
    assert len(reaps) == 3 and set(reaps) <= set(exits)
    sigchlds = [t for t, pid, text in lines if text == "SIGCHLD received"]
    for pid, reaped_at in reaps.items():
        assert exits[pid] <= reaped_at
        # reaped in a handler run: stamped after that handler began
        assert any(exits[pid] <= t <= reaped_at for t in sigchlds)


def test_each_process_writes_its_lines_in_time_order_under_a_burst(start_server):
    import threading
    server = start_server("tests.apps:hello", "--trace=process")
    clients = [threading.Thread(target=http_get, args=(server, "/%d" % n)) for n in range(20)]
    for client in clients:
        client.start()
    for client in clients:
        client.join()
    lines = trace_lines(reaped_all(server, 20))
    parent = [t for t, pid, _ in lines if pid == server.pid]
    assert len(parent) >= 41 and parent == sorted(parent)   # 20 forks, 20 reaps, SIGCHLDs
    exits = {pid: t for t, pid, text in lines if text == "exit: status 0"}
    reaps = {int(text.split()[1][:-1]): t for t, pid, text in lines
             if text.startswith("reaped ")}
    assert len(exits) == 20 and set(reaps) == set(exits)
    assert all(0 <= reaps[pid] - exits[pid] < 5 for pid in exits)   # zombie lifetimes


def test_the_warm_ups_sigchld_is_named_and_comes_before_the_ready_line(start_server):
    # The default warm-up forks a trial child and, for each of its requests,
    # a client process before the first client; their SIGCHLDs must not pass
    # for children the lab's timeline cannot place.
    server = start_server("tests.apps:hello", "--trace=process")
    assert http_get(server, "/")[0] == 200
    lines = trace_lines(reaped_all(server, 1))
    sigchlds = [text for _, pid, text in lines if pid == server.pid and "SIGCHLD" in text]
    warm_up = "SIGCHLD received (the warm-up's trial child or client)"
    assert sigchlds[0] == warm_up and sigchlds[-1] == "SIGCHLD received", lines
    assert set(sigchlds[:-1]) == {warm_up}, lines


def test_an_adopted_orphans_reap_is_traced_apart_from_the_childrens(start_server):
    """As a subreaper (or PID 1) the parent reaps the app's orphans too: each
    gets its own line, which is no child's (timeline.py draws children)."""
    server = start_server("tests.apps_container:orphans", "--subreaper", "--trace=process",
                          "--no-prewarm")
    assert http_get(server, "/")[0] == 200
    # sh exits at once; its sleep, 0.3 s later, is the parent's to reap.
    log = wait_for(lambda: re.search(r"\] reaped other (\d+): exited with status 0$",
                                     server.log_text(), re.M) and server.log_text(),
                   10, "the orphan's reap")
    adopted = re.search(r"\] reaped other (\d+):", log).group(1)
    assert not re.search(r"\] (fork: child|reaped) %s\b" % adopted, log)


@pytest.mark.parametrize("stop", ["SIGINT", "SIGTERM"])
def test_the_stops_last_reaping_writes_no_reap_line(start_server, stop):
    """--reaper none: nobody reaps, so the trace must show every child
    exited and never reaped, even after the stop has SIGKILLed and waited
    for the zombies (docs/labs.md, exercise 4: a saved trace drew them all
    reaped).  The correct reaper's reaps during a stop are still traced."""
    import signal
    none = start_server("tests.apps:hello", "--reaper", "none", "--trace=process",
                        "--graceful-timeout", "1")
    for _ in range(3):
        assert http_get(none, "/")[0] == 200
    wait_for(lambda: none.log_text().count("exit: status 0") >= 3, what="3 exit lines")
    none.signal(getattr(signal, stop))
    assert none.wait_exit() == 0
    text = none.log_text()
    assert len(re.findall(r"\] fork: child \d+ for ", text)) == 3, text
    assert not re.findall(r"\] reaped \d+: ", text), text
    loop = start_server("tests.apps:slow", "--trace=process")
    in_flight = threading.Thread(target=http_get, args=(loop, "/?s=1"))
    in_flight.start()
    wait_for(lambda: loop.children(), what="the slow child")
    loop.signal(signal.SIGTERM)
    assert loop.wait_exit() == 0
    in_flight.join(10)
    assert len(re.findall(r"\] reaped \d+: exited with status 0", loop.log_text())) == 1
