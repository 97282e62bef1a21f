"""The warm-up: the app's first request runs in the parent, 16 times, so
lazy imports and first-request set-up are done once and CPython has
specialized the bytecode before the first fork (docs/performance.md).
Before that, a trial child (probe) runs it and reports what the app left
open."""
import os
import re
import subprocess
import sys
import time

import pytest

from forkparts.prewarm import ENVIRON_KEY, probe
from tests.conftest import ROOT, http_get

LOG_WAIT_SECONDS = 10.0


def test_a_prewarmed_server_answers_and_logs_its_prewarm(start_server):
    server = start_server("tests.apps:echo_environ", "--prewarm", "/warm?x=1",
                          "--log-level", "debug")
    deadline = time.monotonic() + LOG_WAIT_SECONDS
    while "prewarm GET" not in server.log_text() and time.monotonic() < deadline:
        time.sleep(0.05)
    log = server.log_text()
    assert "prewarm GET /warm?x=1: HTTP/1.1 200 OK (16 passes)" in log, log
    status, _, body = http_get(server, "/after?y=2")
    assert status == 200
    assert "PATH_INFO='/after'" in body.decode() and "QUERY_STRING='y=2'" in body.decode()



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


def test_the_probe_names_a_process_the_app_started_and_left_running():
    """A subprocess left running would be started again by each of the
    parent's passes, as the parent's own children; one that has exited (a
    zombie, not waited for) is no hazard: the server's reaper takes it."""
    import subprocess

    def app(environ, start_response):
        subprocess.Popen(["sleep", "3"])   # noqa: S607 - the app's own, left running
        done = subprocess.Popen(["true"])  # noqa: S607
        while open("/proc/%d/stat" % done.pid).read().rpartition(")")[2][1] != "Z":
            time.sleep(0.01)   # exited, not waited for
        return answering(environ, start_response)
    report = probe_of(app)
    assert [comm for _, comm in report.procs] == ["sleep"], report.procs
    assert "1 process(es) it started, still running: " in report.kept()
    assert report.kept().endswith("(sleep)")


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


def test_the_parents_passes_write_nothing_to_stdout_or_stderr_and_keep_closed_fds_closed():
    """output_discarded: descriptors 1 and 2 on /dev/null inside, put back
    after; one the process was started without stays closed."""
    import subprocess
    import sys
    code = (
        "import os, sys\n"
        "from forkparts.prewarm import output_discarded\n"
        "print('before', flush=True)\n"
        "with output_discarded():\n"
        "    print('inside')\n"
        "    try:\n"
        "        os.write(2, b'inside-fd2\\n')\n"
        "    except OSError:\n"
        "        pass\n"
        "print('after', flush=True)\n"
        "try:\n"
        "    os.fstat(2); print('fd 2 open')\n"
        "except OSError:\n"
        "    print('fd 2 closed')\n")
    from tests.conftest import ROOT
    done = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True,
                          text=True, timeout=30)
    assert (done.stdout, done.stderr) == ("before\nafter\nfd 2 open\n", "")
    done = subprocess.run([sys.executable, "-c", code], cwd=ROOT, stdout=subprocess.PIPE,
                          stderr=subprocess.DEVNULL, text=True, timeout=30,
                          pass_fds=(), preexec_fn=lambda: os.close(2))
    assert done.stdout == "before\nafter\nfd 2 closed\n", done.stdout


def test_the_warm_up_runs_the_childs_path_with_the_servers_settings_and_sets_no_title(
        monkeypatch):
    """The warm-up request goes through the code a child runs: the server's
    port in the environ, its proxy trust, and the child's title step, with
    a stand-in that leaves the parent's title alone.  Code a child runs that
    the warm-up skipped is unspecialized in every child, and each attribute
    read there writes pages the child copies (docs/performance.md)."""
    import forkparts.prewarm
    from forkparts.logs import Log
    from forkparts.proxy import ProxyTrust
    from wsgi_handler import HandlerConfig, serve_connection
    parent_titles, warm_up_titles, seen = [], [], []
    monkeypatch.setattr(forkparts.prewarm, "no_title", warm_up_titles.append)
    config = HandlerConfig(server_name="example.test", server_port="8123",
                           set_title=parent_titles.append, proc_name="lab-server",
                           forwarded=ProxyTrust("127.0.0.1")).freeze()

    def app(environ, start_response):
        seen.append((environ["SERVER_NAME"], environ["SERVER_PORT"], environ[ENVIRON_KEY]))
        return answering(environ, start_response)
    status = forkparts.prewarm.prewarm_once(serve_connection, app, config, "/",
                                            Log(level="critical"))
    assert status == "HTTP/1.1 200 OK"
    assert seen == [("localhost", "8123", True)]   # the name from Host, the port the server's
    assert parent_titles == []
    assert len(warm_up_titles) == 1 and warm_up_titles[0].startswith("lab-server: child "), \
        warm_up_titles


def test_the_warm_up_config_keeps_the_settings_that_shape_the_childs_path():
    """The environ's names, the proxy trust and the title settings are the
    server's; the title function, keep-alive, hooks and trace are not."""
    from forkparts.logs import Log
    from forkparts.prewarm import no_title, warm_up_config
    from forkparts.proxy import ProxyTrust
    from wsgi_handler import HandlerConfig
    trust = ProxyTrust("10.0.0.0/8")
    config = HandlerConfig(server_name="example.test", server_port="8123", url_scheme="https",
                           forwarded=trust, set_title=print, title_query=True,
                           proc_name="lab-server", keep_alive=5.0, trace=True,
                           pre_request=print, post_request=print).freeze()
    warm = warm_up_config(config, Log(level="critical"))
    assert (warm.server_name, warm.server_port, warm.url_scheme) == ("example.test", "8123", "https")
    assert warm.forwarded is trust
    assert (warm.set_title, warm.title_query, warm.proc_name) == (no_title, True, "lab-server")
    assert (warm.keep_alive, warm.trace, warm.pre_request, warm.post_request) == (0.0, False, None, None)
    assert warm_up_config(HandlerConfig().freeze(), Log(level="critical")).set_title is None


PASSES_WITHOUT_DESCRIPTORS = """
import os
from forkparts.apps import AppLoadError
from forkparts.logs import Log
from forkparts.prewarm import prewarm
from tests.apps import use_up_descriptors
from wsgi_handler import HandlerConfig, serve_connection

def app(environ, start_response):
    start_response("200 OK", [])
    return [b"ok"]

held = use_up_descriptors()
for _ in range(3):   # output_discarded's two copies and /dev/null; no socketpair
    os.close(held.pop())
config = HandlerConfig().freeze()
print(prewarm(serve_connection, app, config, "/", Log(error_fd=1, level="info"), explicit=False))
try:
    prewarm(serve_connection, app, config, "/", Log(error_fd=1, level="info"))
except AppLoadError as exc:
    print("AppLoadError:", exc)
"""


def test_parent_passes_that_cannot_make_their_client_warn_and_report_no_warm_up():
    """The trial child ran, but the parent's passes cannot make a client (no
    descriptor left): one warning and False (an explicit --prewarm: the
    start stops), not an INFO line of 16 passes of "no response" that read
    as a warm-up done."""
    import subprocess
    from tests.conftest import ROOT
    done = subprocess.run([sys.executable, "-c", PASSES_WITHOUT_DESCRIPTORS], cwd=ROOT,
                          capture_output=True, text=True, timeout=60)
    lines = done.stdout.splitlines()
    assert len(lines) == 3 and done.stderr == "", (done.stdout, done.stderr)
    reason = ("its client could not be run: socketpair() failed: Too many open files "
              "(a limit on open files, RLIMIT_NOFILE?)")
    assert lines[0].endswith("[WARNING] warm-up GET / not run in the parent, serving "
                             "unwarmed: " + reason), lines[0]
    assert lines[1] == "False"
    assert lines[2] == "AppLoadError: --prewarm GET / in the parent: " + reason


WARMUP_HOSTS = """
import sys
from django.conf import settings
from forkparts.prewarm import warmup_host
settings.configure(DEBUG=False, ALLOWED_HOSTS=[])
for allowed, debug in [(["::1", "example.com"], False), (["caf\\u00e9.localhost", ".example.org"], False),
                       (["*"], False), ([], True), ([], False), (["[::1]"], False),
                       (["www.example.com", ".localhost"], False), ([5, "example.net"], False)]:
    settings.ALLOWED_HOSTS, settings.DEBUG = allowed, debug
    print(warmup_host())
"""


def test_the_warm_up_host_is_one_djangos_own_check_lets_in():
    """The first plausible ALLOWED_HOSTS entry was taken, "::1" too (Django
    refuses that Host: DisallowedHost, mailed to ADMINS), and a non-ASCII
    ".localhost" entry crashed the start with a UnicodeEncodeError.  None:
    DEBUG off and no ALLOWED_HOSTS, which lets in no host at all."""
    pytest.importorskip("django")
    done = subprocess.run([sys.executable, "-c", WARMUP_HOSTS], cwd=ROOT, capture_output=True,
                          text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == ["example.com", "example.org", "localhost", "localhost",
                                   "None", "[::1]", "localhost", "example.net"]


def raising_at_length(environ, start_response):
    raise RuntimeError("\n".join("detail line %05d" % n for n in range(3000)))


def test_a_long_traceback_is_cut_at_a_line_and_says_so():
    """The report keeps the end of the app's output (16 KiB), where the error
    is; it was cut mid-line with nothing said (a deep recursion's first
    line read "^^^^")."""
    report = probe_of(raising_at_length)
    first, _, rest = report.log.partition("\n")
    assert re.fullmatch(r"\[\.\.\. the first \d+ characters cut\]", first), first
    assert rest.startswith("detail line ") and rest.rstrip().endswith("detail line 02999")
    assert len(report.log) <= 16 * 1024 + len(first) + 1
