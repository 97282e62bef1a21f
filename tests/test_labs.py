"""The OS process lab (docs/labs.md): each exercise's observation, checked.

Racy observations are made deterministic: the parent is frozen with SIGSTOP
while children exit, a child is held in a request until the test releases it,
the terminal is paused with XOFF (Ctrl-S) while the parent prints.  Every wait
is a poll with a deadline.
"""
import ctypes
import json
import os
import re
import resource
import signal
import socket
import subprocess
import sys
import time

import psutil
import pytest

from forkparts.acceptfilter import PARENT_BODY_BYTES
from forkparts.exits import EXIT_TIMEOUT
from tests.conftest import ROOT, children_of, http_get, wait_children, wait_no_zombies, zombies_of

SCRIPTS = os.path.join(ROOT, "scripts")
POLL_SECONDS = 0.02
DEADLINE_SECONDS = 10.0          # generous: CI machines are shared and slow
HANG_PROBE_SECONDS = 1.0         # "hangs": no byte and no EOF for this long
PR_SET_CHILD_SUBREAPER = 36      # prctl(2), <linux/prctl.h>


def wait_for(predicate, timeout=DEADLINE_SECONDS, what="condition"):
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError("timed out after %.0fs waiting for %s" % (timeout, what))
        time.sleep(POLL_SECONDS)


def statuses(ps):
    found = []
    for child in children_of(ps.pid):
        try:
            found.append(child.status())
        except psutil.NoSuchProcess:
            pass
    return found


def request_bytes(path, extra=b""):
    return b"GET " + path.encode() + b" HTTP/1.1\r\nHost: lab\r\n" + extra + b"\r\n"


def send_request(server, path, timeout=DEADLINE_SECONDS):
    sock = server.connect(timeout=timeout)
    sock.sendall(request_bytes(path))
    return sock


def read_to_eof(sock):
    chunks = []
    while True:
        data = sock.recv(65536)
        if not data:
            return b"".join(chunks)
        chunks.append(data)


def read_until(sock, marker):
    data = b""
    while marker not in data:
        chunk = sock.recv(65536)
        assert chunk, "EOF before %r in %r" % (marker, data)
        data += chunk
    return data


def status_of(response):
    return int(response.split(b" ", 2)[1]) if response.startswith(b"HTTP/1.1 ") else None


def hangs(sock, seconds=HANG_PROBE_SECONDS):
    """True if the peer neither sends a byte nor closes within ``seconds``."""
    sock.settimeout(seconds)
    try:
        return sock.recv(1) is None
    except socket.timeout:
        return True


def listen_queue(port):
    """The listener's accept queue length (Recv-Q of `ss -ltn`)."""
    out = subprocess.run(["ss", "-ltnH", "sport = :%d" % port], capture_output=True,
                         text=True, check=True).stdout.split()
    return int(out[1])


def run_script(name, *args, timeout=60):
    return subprocess.run([sys.executable, os.path.join(SCRIPTS, name)] + list(args),
                          capture_output=True, text=True, timeout=timeout, cwd=ROOT)


# ------------------------------------------------------------ 1. one process per connection

def test_lab1_children_appear_per_connection_and_vanish(start_server):
    server = start_server("tests.apps:slow")
    clients = 6
    stress = subprocess.Popen(
        [sys.executable, os.path.join(SCRIPTS, "stress.py"), "--port", str(server.port),
         "--path", "/?s=1", "--concurrency", str(clients), "--connections", "1", "--json"],
        stdout=subprocess.PIPE, text=True, cwd=ROOT)
    try:
        seen = wait_for(lambda: len(server.children()) == clients,
                        what="one child per connection")
        assert seen
        out, _ = stress.communicate(timeout=60)
    finally:
        if stress.poll() is None:
            stress.kill()
            stress.wait()
    summary = json.loads(out)
    assert summary["completed"] == clients and not summary["errors"]
    assert wait_children(server, 0) == 0
    wait_no_zombies(server)


# ------------------------------------------------------------ 2. the listen backlog

def test_lab2_connections_wait_in_the_backlog_at_the_cap(start_server):
    server = start_server("tests.apps:slow", "--backlog", "1", "--max-children", "1")
    socks = [send_request(server, "/?s=1")]
    wait_for(lambda: len(server.children()) == 1, what="the first child")
    socks += [send_request(server, "/?s=1") for _ in range(2)]
    try:
        # backlog 1 holds 2 completed connections (Linux: full when > backlog).
        wait_for(lambda: listen_queue(server.port) == 2, what="Recv-Q 2 in ss -ltn")
        assert len(server.children()) == 1
        finished = []
        for sock in socks:
            response = read_to_eof(sock)
            finished.append(time.monotonic())
            assert status_of(response) == 200
            assert len(server.children()) <= 1
        assert finished == sorted(finished)
    finally:
        for sock in socks:
            sock.close()


# ------------------------------------------------------------ 3. the parent keeps the client

def test_lab3_parent_keeping_client_sockets_hangs_clients_and_leaks_fds(start_server):
    server = start_server("tests.apps:hello", "--lab-parent-keeps-client")
    fds_before = server.ps.num_fds()
    socks = []
    try:
        for _ in range(3):
            sock = send_request(server, "/")
            socks.append(sock)
            response = read_until(sock, b"Hello, World!\n")
            assert response.startswith(b"HTTP/1.1 200 OK")
            assert b"content-length" not in response.lower()     # close-delimited
            assert hangs(sock)                                # no EOF: the parent holds it
        wait_for(lambda: not server.children(), what="children to exit")
        assert server.ps.num_fds() == fds_before + 3
    finally:
        for sock in socks:
            sock.close()


def test_lab3_parent_keeping_clients_runs_out_of_descriptors(start_server):
    server = start_server("tests.apps:hello", "--lab-parent-keeps-client")
    room = 2
    limit = server.ps.num_fds() + room
    server.ps.rlimit(resource.RLIMIT_NOFILE, (limit, limit))
    socks = []
    try:
        for _ in range(room + 1):
            socks.append(send_request(server, "/"))
        wait_for(lambda: "accept() failed: Too many open files" in server.log_text(),
                 what="EMFILE in the error log")
        assert hangs(socks[-1])          # left in the backlog: nobody accepts it
    finally:
        for sock in socks:
            sock.close()


def test_lab3_default_parent_closes_client_and_fds_stay_flat(start_server):
    server = start_server("tests.apps:hello")
    fds_before = server.ps.num_fds()
    for _ in range(3):
        with send_request(server, "/") as sock:
            response = read_to_eof(sock)      # EOF: the child's close ends it
        assert b"Content-Length: 14" in response
    wait_for(lambda: not server.children(), what="children to exit")
    assert server.ps.num_fds() == fds_before


# ------------------------------------------------------------ 4. zombies

def test_lab4_without_reaper_zombies_pile_up_until_the_cap(start_server):
    server = start_server("tests.apps:hello", "--reaper", "none", "--max-children", "3")
    for _ in range(3):
        assert http_get(server, "/")[0] == 200
    wait_for(lambda: statuses(server.ps) == [psutil.STATUS_ZOMBIE] * 3, what="3 zombies")
    wait_for(lambda: "children=3 " in " ".join(server.ps.cmdline()), 5, "children=3 in the title")
    with send_request(server, "/") as sock:
        assert hangs(sock)                        # the cap: nobody accepts
        assert statuses(server.ps) == [psutil.STATUS_ZOMBIE] * 3
    assert server.stop() == 0                     # the stop path reaps them


# ------------------------------------------------------------ 5 and 6. lost signals, the loop

def exit_while_parent_stopped(server, count):
    """Hold ``count`` children in their request (each waits for its body, one
    byte more than the accept filter reads itself), freeze the parent, let
    them all exit, and thaw it."""
    body = b"x" * (PARENT_BODY_BYTES + 1)
    head = request_bytes("/", b"Content-Length: %d\r\n" % len(body)).replace(b"GET", b"POST")
    socks = []
    for _ in range(count):
        sock = server.connect()
        sock.sendall(head)
        socks.append(sock)
    wait_for(lambda: len(server.children()) == count, what="%d children" % count)
    server.signal(signal.SIGSTOP)
    try:
        wait_for(lambda: server.ps.status() == psutil.STATUS_STOPPED, what="parent stopped")
        for sock in socks:
            sock.sendall(body)
            assert status_of(read_to_eof(sock)) == 200
            sock.close()
        wait_for(lambda: statuses(server.ps) == [psutil.STATUS_ZOMBIE] * count,
                 what="every child a zombie")
    finally:
        server.signal(signal.SIGCONT)


@pytest.mark.parametrize("reaper, survivors", [("once", 3), ("loop", 0)])
def test_lab5_lab6_coalesced_sigchld(start_server, reaper, survivors):
    """4 exits while the parent is stopped make one pending SIGCHLD (signals
    coalesce): `once` reaps one child, `loop` reaps all four."""
    server = start_server("tests.apps:echo_body", "--reaper", reaper, "--trace")
    exit_while_parent_stopped(server, 4)
    wait_for(lambda: len(zombies_of(server.ps)) == survivors, what="the reaper to run")
    time.sleep(HANG_PROBE_SECONDS)                # and nothing more happens
    assert len(zombies_of(server.ps)) == survivors
    assert server.log_text().count("reaped ") == 4 - survivors
    assert server.stop() == 0


def test_lab6_loop_reaper_leaves_no_zombie_after_a_burst(start_server):
    server = start_server("tests.apps:hello")
    out = run_script("stress.py", "--port", str(server.port), "--concurrency", "32",
                     "--total", "300", "--json")
    assert json.loads(out.stdout)["completed"] == 300
    watch = run_script("watch_children.py", str(server.pid), "--json",
                       "--zombie-threshold", "0.5")
    assert watch.returncode == 0, watch.stdout
    assert json.loads(watch.stdout)["children"]["zombie"] == 0


# ------------------------------------------------------------ 7. EINTR and PEP 475

def test_lab7_accept_survives_signals_without_retry_loop():
    out = run_script("eintr_demo.py", "--signals", "25", "--json")
    assert out.returncode == 0, out.stdout + out.stderr
    result = json.loads(out.stdout)
    assert result["signals_handled"] == 25
    assert all(line.startswith("accept:") for line in result["interrupted_at"])
    assert result["accepted_from"].startswith("127.0.0.1:")


def test_lab7_handler_that_raises_aborts_accept():
    result = json.loads(run_script("eintr_demo.py", "--signals", "2", "--raise",
                                   "--json").stdout)
    assert result["accepted_from"] is None
    assert result["exception"].startswith("Interrupted")


# ------------------------------------------------------------ 8. copy-on-write

def child_memory(server):
    with send_request(server, "/?s=1.5") as sock:
        wait_for(lambda: server.children(), what="the child")
        time.sleep(0.5)                                   # past its gc.collect()
        watched = run_script("cow_demo.py", str(server.pid), "--json")
        report = json.loads(read_to_eof(sock).split(b"\r\n\r\n", 1)[1])
    assert watched.returncode == 0, watched.stderr
    return report, json.loads(watched.stdout)["children"][0]


def test_lab8_gc_freeze_keeps_the_heap_shared(start_server):
    frozen, frozen_seen = child_memory(start_server("tests.apps_lab:cow_report"))
    thawed, thawed_seen = child_memory(start_server("tests.apps_lab:cow_report",
                                                    "--no-gc-freeze"))
    heap_kib = frozen["heap_items"] * 64 // 1024          # >= 64 bytes per list
    # Without freeze, the child's collection writes to every list's GC header:
    # the pages holding the heap are copied into the child.
    assert thawed["uss_kib"] - frozen["uss_kib"] > heap_kib // 2
    assert thawed_seen["uss_kib"] - frozen_seen["uss_kib"] > heap_kib // 2
    # RSS counts shared pages too: about the same either way.
    assert abs(thawed["rss_kib"] - frozen["rss_kib"]) < heap_kib // 2
    assert frozen_seen["shared_kib"] > frozen_seen["uss_kib"]


# ------------------------------------------------------------ 9. what ps shows

def test_lab9_ps_shows_parent_and_child_titles(start_server):
    server = start_server("tests.apps:slow")
    with send_request(server, "/?s=1"):
        child = wait_for(server.children, what="the child")[0]
        title = " ".join(wait_for(lambda: child.cmdline(), what="child title")).strip()
        # The parent's title follows its counts within TITLE_INTERVAL_SECONDS.
        wait_for(lambda: "children=1 " in " ".join(server.ps.cmdline()), 5, "the parent's title")
        ps = subprocess.run(["ps", "-ww", "-o", "pid=,ppid=,stat=,args=", "-p",
                             "%d,%d" % (server.pid, child.pid)],
                            capture_output=True, text=True, check=True).stdout
    # The query string is hidden (--title-with-query shows it).
    assert re.fullmatch(r"forkserver: child 127\.0\.0\.1:\d+ GET /\?\.\.\. HTTP/1\.1", title), title
    assert re.search(r"^\s*%d\s+\d+\s+\S+\s+forkserver: parent http://127.0.0.1:%d "
                     r"children=1 high-water=1\s*$" % (server.pid, server.port), ps, re.M), ps
    assert re.search(r"^\s*%d\s+%d\s+\S+\s+forkserver: child " % (child.pid, server.pid),
                     ps, re.M), ps


# ------------------------------------------------------------ 10. the child keeps the listener

def refused_soon(server, seconds=5.0):
    """The stopped server refuses a new connection, and never accepts one.  A
    SYN it drops while it stops (Listener.refuse_new) is sent again by the
    client's kernel a second later, so a connect may time out first."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        try:
            server.connect(timeout=HANG_PROBE_SECONDS).close()
        except ConnectionRefusedError:
            return True
        except socket.timeout:   # dropped: try again
            continue
        return False             # accepted
    return False


@pytest.mark.parametrize("keeps, refused", [(True, False), (False, True)])
def test_lab10_listener_kept_by_child_accepts_after_parent_stops(start_server, keeps, refused):
    args = ["--graceful-timeout", "10"] + (["--lab-child-keeps-listener"] if keeps else [])
    server = start_server("tests.apps:slow", *args)
    with send_request(server, "/?s=2") as busy:
        wait_for(server.children, what="the busy child")
        server.signal(signal.SIGTERM)
        wait_for(lambda: "stopping (graceful)" in server.log_text(), what="the stop")
        if refused:
            assert refused_soon(server)
        else:
            with server.connect(timeout=HANG_PROBE_SECONDS) as late:
                late.sendall(request_bytes("/"))
                assert hangs(late)               # accepted by the kernel, never served
        assert status_of(read_to_eof(busy)) == 200
    assert server.wait_exit() == 0


# ------------------------------------------------------------ 11. print in a signal handler

def test_lab11_print_in_handler_reentrant_call_is_logged(start_server):
    # stdout must be Python's buffered writer, as on a terminal: no -u.
    server = start_server("tests.apps:slow", "--lab-print-in-handler",
                          extra_env={"PYTHONUNBUFFERED": ""})
    server.proc.sendcontrol("s")     # XOFF: the terminal stops, writes block
    time.sleep(0.2)
    try:
        with send_request(server, "/?s=0.5") as sock:
            # The parent blocks in print("Forked child ...") holding stdout's
            # lock; the child exits; SIGCHLD runs the handler inside that write.
            assert status_of(read_to_eof(sock)) == 200
        wait_for(lambda: not server.children(), what="the handler to reap the child")
        assert "reentrant call" not in server.log_text()    # the main loop is still blocked
    finally:
        server.proc.sendcontrol("q")     # XON: the write completes
    wait_for(lambda: "reentrant call inside <_io.BufferedWriter name='<stdout>'>"
             in server.log_text(), what="the logged RuntimeError")
    assert http_get(server, "/?s=0")[0] == 200     # the server survived
    assert server.proc.isalive()


# ------------------------------------------------------------ 12. orphans

def set_subreaper(on):
    libc = ctypes.CDLL(None, use_errno=True)
    assert libc.prctl(PR_SET_CHILD_SUBREAPER, int(on), 0, 0, 0) == 0


def start_plain(tmp_path, *args):
    """A server on pipes, not a pty: under pexpect the server leads the
    terminal's session, and its death would hang up (SIGHUP) its children."""
    log = open(str(tmp_path / "error.log"), "wb")
    proc = subprocess.Popen(
        [sys.executable, os.path.join(ROOT, "forkserver.py")] + list(args) +
        ["--bind", "127.0.0.1:0", "--no-access-log"],
        stdout=subprocess.PIPE, stderr=log, cwd=ROOT, start_new_session=True)
    log.close()
    line = proc.stdout.readline().decode()
    match = re.match(r"forkserver ready: pid (\d+) listening on http://127\.0\.0\.1:(\d+)", line)
    assert match, line
    return proc, int(match.group(2))


def test_lab12_orphan_is_reparented_and_ended_by_its_own_deadline(tmp_path):
    timeout = 2.0
    # The test becomes the nearest subreaper, so the orphan is ours to reap.
    set_subreaper(True)
    orphan = None
    proc, port = start_plain(tmp_path, "tests.apps:slow", "--timeout", str(timeout),
                             "--lab-orphans")
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=DEADLINE_SECONDS) as sock:
            sock.sendall(request_bytes("/?s=60"))
            orphan = wait_for(psutil.Process(proc.pid).children, what="the child")[0]
            proc.kill()
            proc.wait()
            wait_for(lambda: orphan.ppid() == os.getpid(), what="reparenting")
            _, status = os.waitpid(orphan.pid, 0)     # its own itimer ends it
            orphan = None
            assert os.WIFEXITED(status) and os.WEXITSTATUS(status) == EXIT_TIMEOUT
            assert read_to_eof(sock).startswith(b"HTTP/1.1 500 ")   # TimedOut: a 500
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        proc.stdout.close()
        if orphan is not None:
            orphan.kill()
            os.waitpid(orphan.pid, 0)
        set_subreaper(False)


# ------------------------------------------------------------ 13. out of processes

def test_lab13_fork_fails_under_rlimit_nproc_with_503_and_recovers(start_server):
    soft, hard = resource.getrlimit(resource.RLIMIT_NPROC)
    nobody_now = len([p for p in psutil.process_iter(["username"])
                      if p.info["username"] == "nobody"])
    allowed_children = 2
    # Inherited by the server; enforced once it has become `nobody` (root is exempt).
    resource.setrlimit(resource.RLIMIT_NPROC, (nobody_now + 1 + allowed_children, hard))
    try:
        server = start_server("tests.apps:slow", "--user", "nobody", "--max-children", "0")
    finally:
        resource.setrlimit(resource.RLIMIT_NPROC, (soft, hard))
    socks = [send_request(server, "/?s=1.5") for _ in range(6)]
    try:
        codes = sorted(status_of(read_to_eof(s)) for s in socks)
    finally:
        for sock in socks:
            sock.close()
    assert set(codes) == {200, 503} and codes.count(200) >= allowed_children, codes
    assert "fork() failed: Resource temporarily unavailable" in server.log_text()
    wait_for(lambda: not server.children(), what="the children to be reaped")
    assert http_get(server, "/?s=0")[0] == 200          # recovered


# ------------------------------------------------------------ --trace

def test_trace_tags_heads_and_process_events_with_pids(start_server):
    server = start_server("tests.apps:hello", "--trace")
    assert http_get(server, "/traced")[0] == 200
    text = wait_for(lambda: re.search(r"reaped \d+", server.log_text()) and server.log_text(),
                    what="the reap trace")
    parent, t = server.pid, r"\d+\.\d{6}"   # time.monotonic(), 6 decimals
    child = int(re.search(r"^%s \[%d\] fork: child (\d+) for 127\.0\.0\.1:\d+$" % (t, parent),
                          text, re.M).group(1))
    assert re.search(r"^%s \[%d\] < GET /traced HTTP/1.1$" % (t, child), text, re.M)
    assert re.search(r"^%s \[%d\] > HTTP/1.1 200 OK$" % (t, child), text, re.M)
    assert re.search(r"^%s \[%d\] exit: status 0$" % (t, child), text, re.M)
    assert re.search(r"^%s \[%d\] SIGCHLD received$" % (t, parent), text, re.M)
    assert re.search(r"^%s \[%d\] reaped %d: exited with status 0$" % (t, parent, child),
                     text, re.M)
