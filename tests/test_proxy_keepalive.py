"""The keep-alive pool of a reverse proxy (issue 14, part 5).

nginx with `keepalive 16` upstream keeps connections to forkserver open, each
held by a child running the code it was forked with.  On SIGHUP every
kept-alive child closes after its current response (at once when idle), so
the next request on each pooled connection meets the new code; on SIGTERM idle
kept-alive connections close at once, so a stop takes the slowest request's
time, not --keep-alive's.  nginx does not retry a POST on a pooled connection
that closes under it, so POSTs run through nginx across the reload and the
stop, and none may fail."""
import json
import os
import signal
import threading
import time

from tests.conftest import needs
from tests.test_deploy import NGINX, Nginx, certificate, replace_once, upstream_of  # noqa: F401

KEEP_ALIVE_SECONDS = 15
POOL = 16
CLIENTS = 4
WARM_SECONDS = 1.5            # load before the reload
RELOADED_SETTLE_SECONDS = 0.5  # from the "reloaded" line: every pooled child was told
AFTER_RELOAD_SECONDS = 1.5     # load between the reload and the stop
AFTER_STOP_SECONDS = 1.5       # load after the stop (the other instance serves it)
STOP_WITHIN_SECONDS = 5.0      # far under --keep-alive
POST_BODY = b"name=value&" * 50

APP = '''
import json, os

with open(os.path.join(os.path.dirname(os.path.abspath(__file__)), "version.txt")) as f:
    VERSION = f.read().strip()


def app(environ, start_response):
    length = int(environ.get("CONTENT_LENGTH") or 0)
    body = environ["wsgi.input"].read(length)
    reply = json.dumps({"version": VERSION, "server": os.getppid(), "child": os.getpid(),
                        "read": len(body)}).encode()
    start_response("200 OK", [("Content-Type", "application/json"),
                              ("Content-Length", str(len(reply)))])
    return [reply]
'''


def pooled(text):
    """deploy/nginx.conf with its keepalive pool switched on, as its comment says."""
    return replace_once(r"^(\s*)# keepalive 16;", r"\1keepalive %d;" % POOL, text)


def post_load(nginx, stop, results):
    """POSTs in a loop on one kept-alive client connection to nginx until stop."""
    conn = None
    while not stop.is_set():
        try:
            conn = conn or nginx.connection()
            conn.request("POST", "/form", body=POST_BODY,
                         headers={"Content-Type": "application/x-www-form-urlencoded"})
            resp = conn.getresponse()
            body = resp.read()
            seen = json.loads(body) if resp.status == 200 else {}
            results.append((time.monotonic(), resp.status, seen.get("server"),
                            seen.get("version"), seen.get("read")))
        except Exception as exc:  # noqa: BLE001 - every failure is a result
            results.append((time.monotonic(), repr(exc), None, None, None))
            if conn is not None:
                conn.close()
            conn = None


def wait_log(server, text, timeout=10.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if text in server.log_text():
            return time.monotonic()
        time.sleep(0.01)
    raise AssertionError("no %r in the log:\n%s" % (text, server.log_text()[-2000:]))


def test_reload_and_stop_through_nginx_keepalive_pool_lose_no_post(start_server, tmp_path,
                                                                      certificate):  # noqa: F811
    needs(os.path.exists(NGINX), "nginx")
    (tmp_path / "kaapp.py").write_text(APP)
    (tmp_path / "version.txt").write_text("1\n")
    args = ("kaapp:app", "--keep-alive", str(KEEP_ALIVE_SECONDS))
    first = start_server(*args, cwd=str(tmp_path))
    second = start_server(*args, cwd=str(tmp_path))
    nginx = Nginx(tmp_path / "nginx", [upstream_of(first), upstream_of(second)], certificate,
                  edit=pooled)
    stop, results = threading.Event(), []
    threads = [threading.Thread(target=post_load, args=(nginx, stop, results))
               for _ in range(CLIENTS)]
    try:
        for thread in threads:
            thread.start()
        time.sleep(WARM_SECONDS)
        (tmp_path / "version.txt").write_text("2\n")
        first.signal(signal.SIGHUP)
        reloaded_at = wait_log(first, "reloaded kaapp:app")
        time.sleep(AFTER_RELOAD_SECONDS)
        stopped_at = time.monotonic()
        first.signal(signal.SIGTERM)
        assert first.wait_exit(STOP_WITHIN_SECONDS * 4) == 0
        stop_took = time.monotonic() - stopped_at
        time.sleep(AFTER_STOP_SECONDS)
    finally:
        stop.set()
        for thread in threads:
            thread.join(30)
        nginx.stop()
    failed = [r for r in results if r[1] != 200]
    assert failed == [], (failed[:10], nginx.error_text()[-2000:])
    assert all(r[4] == len(POST_BODY) for r in results)
    from_first = [r for r in results if r[2] == first.pid]
    assert [r for r in from_first if r[0] < reloaded_at and r[3] == "1"], "no load before"
    after = [r for r in from_first if r[0] > reloaded_at + RELOADED_SETTLE_SECONDS]
    assert after, "the first instance served nothing after its reload"
    assert {r[3] for r in after} == {"2"}, "old code served after the reload: %r" % after[:5]
    # The idle pooled connections did not hold the stop for --keep-alive.
    assert stop_took < STOP_WITHIN_SECONDS, stop_took
    assert [r for r in results if r[0] > stopped_at + stop_took and r[2] == second.pid]
