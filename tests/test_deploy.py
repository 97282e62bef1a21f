"""Deployment, end to end: a real nginx running deploy/nginx.conf in front of
forkserver over TCP and a unix socket, two instances behind one upstream with a
rolling stop, proxy-header trust, systemd socket activation and sd_notify,
privilege drop, unix socket files, and log reopening on SIGUSR1."""
import hashlib
import http.client
import json
import os
import re
import shlex
import shutil
import signal
import socket
import ssl
import stat
import subprocess
import sys
import threading
import time

import psutil
import pytest

from tests.apps_deploy import expected_download
from tests.conftest import (FORKSERVER, READY_RE, ROOT, http_get, kill_tree, needs,
                            read_until_close, unix_get)

NGINX = shutil.which("nginx") or "/usr/sbin/nginx"
OPENSSL = shutil.which("openssl")
SITE_CONF = os.path.join(ROOT, "deploy", "nginx.conf")
CLIENT_IP = "127.0.0.2"          # the test client's source: loopback, but not nginx's
SPOOFED_IP = "203.0.113.66"      # RFC 5737 documentation address
BIG_BYTES = 10 * 1024 * 1024
START_SECONDS = 20.0
STOP_SECONDS = 20.0
POLL_SECONDS = 0.02
HTTP_TIMEOUT_SECONDS = 30.0
NOBODY = "nobody"

pytestmark = needs(os.path.exists(NGINX), "nginx is not installed (.ci/run installs it)")


# ================================================================ nginx

MAIN_CONF = """\
daemon off;
master_process on;
worker_processes 1;
{user}
pid {prefix}/nginx.pid;
error_log {prefix}/error.log warn;
events {{ worker_connections 512; }}
http {{
    access_log {prefix}/access.log;
    client_body_temp_path {prefix}/client_body;
    proxy_temp_path {prefix}/proxy;
    fastcgi_temp_path {prefix}/fastcgi;
    uwsgi_temp_path {prefix}/uwsgi;
    scgi_temp_path {prefix}/scgi;
    include {prefix}/site.conf;
}}
"""


def replace_once(pattern, replacement, text, flags=re.M):
    """Substitute, failing loudly if deploy/nginx.conf no longer has the line."""
    new, count = re.subn(pattern, replacement, text, flags=flags)
    assert count >= 1, "deploy/nginx.conf has no line matching %r" % pattern
    return new


def site_conf(upstreams, http_port, https_port, cert):
    """deploy/nginx.conf with the test's addresses; everything else as committed."""
    with open(SITE_CONF) as f:
        text = f.read()
    servers = "".join("    server %s;\n" % u for u in upstreams)
    text = replace_once(r"^(upstream forkserver \{\n)((?:.*\n)*?)(\})",
                        lambda m: m.group(1) + re.sub(r"(?m)^\s*server \S+;\n", "", m.group(2))
                        + servers + m.group(3), text)
    text = replace_once(r"^(\s*)listen 80;", r"\1listen 127.0.0.1:%d;" % http_port, text)
    text = replace_once(r"^(\s*)listen 443 ssl;", r"\1listen 127.0.0.1:%d ssl;" % https_port, text)
    text = replace_once(r"^(\s*ssl_certificate)\s+\S+;", r"\1 %s;" % cert[0], text)
    return replace_once(r"^(\s*ssl_certificate_key)\s+\S+;", r"\1 %s;" % cert[1], text)


def free_ports(count):
    """``count`` different free ports: all held at once while they are picked
    (one at a time, a port just released can be handed out again, and nginx
    then refuses its duplicate listen)."""
    sockets = [socket.socket() for _ in range(count)]
    try:
        for s in sockets:
            s.bind(("127.0.0.1", 0))
        return [s.getsockname()[1] for s in sockets]
    finally:
        for s in sockets:
            s.close()


class Nginx:
    """nginx in the foreground (daemon off) with everything under a temp prefix."""

    def __init__(self, prefix, upstreams, cert, edit=None, user=None):
        """edit: a function of the site file's text, for a test that switches
        on what deploy/nginx.conf leaves commented out.  user: the workers'
        user (www-data, as Debian runs nginx); by default root when we are root,
        so that they reach sockets in the tests' private temporary directories."""
        self.prefix = str(prefix)
        os.makedirs(self.prefix, exist_ok=True)
        self.http_port, self.https_port = free_ports(2)
        text = site_conf(upstreams, self.http_port, self.https_port, cert)
        with open(os.path.join(self.prefix, "site.conf"), "w") as f:
            f.write(edit(text) if edit else text)
        with open(os.path.join(self.prefix, "nginx.conf"), "w") as f:
            user = user or ("root" if os.geteuid() == 0 else None)
            f.write(MAIN_CONF.format(prefix=self.prefix,
                                     user="user %s;" % user if user else ""))
        self.proc = subprocess.Popen(
            [NGINX, "-p", self.prefix + "/", "-c", self.prefix + "/nginx.conf",
             "-e", self.prefix + "/error.log"],
            stdout=subprocess.DEVNULL, stderr=open(self.prefix + "/stderr.log", "wb"))
        self.wait_listening()

    def wait_listening(self):
        deadline = time.monotonic() + START_SECONDS
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise AssertionError("nginx exited: %s" % self.error_text())
            try:
                socket.create_connection(("127.0.0.1", self.http_port), timeout=1).close()
                return
            except OSError:
                time.sleep(POLL_SECONDS)
        raise AssertionError("nginx did not listen: %s" % self.error_text())

    def error_text(self):
        text = ""
        for name in ("stderr.log", "error.log"):
            try:
                with open(os.path.join(self.prefix, name), errors="replace") as f:
                    text += f.read()
            except OSError:
                pass
        return text

    def connection(self, tls=False, source=CLIENT_IP):
        if tls:
            context = ssl.create_default_context()
            context.check_hostname = False
            context.verify_mode = ssl.CERT_NONE   # our throwaway self-signed cert
            return http.client.HTTPSConnection("127.0.0.1", self.https_port, context=context,
                                               timeout=HTTP_TIMEOUT_SECONDS,
                                               source_address=(source, 0))
        return http.client.HTTPConnection("127.0.0.1", self.http_port,
                                          timeout=HTTP_TIMEOUT_SECONDS,
                                          source_address=(source, 0))

    def request(self, method, path, body=None, headers=None, tls=False, chunked=False):
        conn = self.connection(tls)
        try:
            conn.request(method, path, body=body, headers=headers or {},
                         encode_chunked=chunked)
            resp = conn.getresponse()
            return resp.status, resp.read()
        finally:
            conn.close()

    def stop(self):
        """SIGQUIT: nginx's graceful stop; whatever is left after that is killed."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGQUIT)
            try:
                self.proc.wait(STOP_SECONDS)
            except subprocess.TimeoutExpired:
                kill_tree(self.proc.pid)


@pytest.fixture(scope="module")
def certificate(tmp_path_factory):
    if OPENSSL is None:
        pytest.fail("openssl is needed for the TLS test (.ci/run installs it)")
    where = tmp_path_factory.mktemp("tls")
    cert, key = str(where / "cert.pem"), str(where / "key.pem")
    subprocess.run([OPENSSL, "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1",
                    "-subj", "/CN=localhost", "-keyout", key, "-out", cert],
                   check=True, capture_output=True, timeout=60)
    return cert, key


@pytest.fixture
def start_nginx(tmp_path, certificate):
    started = []

    def start(upstreams):
        nginx = Nginx(tmp_path / ("nginx%d" % len(started)), upstreams, certificate)
        started.append(nginx)
        return nginx
    yield start
    for nginx in started:
        nginx.stop()
        kill_tree(nginx.proc.pid)


def upstream_of(server):
    return server.address[len("http://"):] if server.address.startswith("http") else server.address


def whoami(status_body):
    status, body = status_body
    assert status == 200, body[:300]
    return json.loads(body)


# ================================================================ through nginx

@pytest.mark.parametrize("transport", ["tcp", "unix"])
def test_nginx_proxies_get_post_and_big_bodies(start_server, start_nginx, tmp_path, transport):
    bind = ("127.0.0.1:0" if transport == "tcp" else "unix:%s" % (tmp_path / "fs.sock"))
    server = start_server("tests.apps_deploy:whoami", "--bind", bind)
    nginx = start_nginx([upstream_of(server)])

    seen = whoami(nginx.request("GET", "/hello"))
    assert (seen["method"], seen["path"], seen["server"]) == ("GET", "/hello", server.pid)
    assert (seen["remote_addr"], seen["scheme"]) == (CLIENT_IP, "http")

    pieces = [b"chunk %d;" % i for i in range(100)]
    seen = whoami(nginx.request("POST", "/chunked", body=iter(pieces), chunked=True))
    expected = b"".join(pieces)
    assert (seen["body_length"], seen["body_sha256"]) == (
        len(expected), hashlib.sha256(expected).hexdigest())

    upload = os.urandom(BIG_BYTES)
    seen = whoami(nginx.request("POST", "/upload", body=upload,
                                headers={"Content-Type": "application/octet-stream"}))
    assert (seen["body_length"], seen["body_sha256"]) == (
        BIG_BYTES, hashlib.sha256(upload).hexdigest())


def test_an_http_1_0_client_without_host_is_served_through_the_shipped_nginx(start_server,
                                                                            start_nginx):
    """nginx sends upstream HTTP/1.1; with `Host $http_host` a client that
    sent no Host (HTTP/1.0: old clients, health probes) left the upstream
    request without one, which forkserver must answer 400 (RFC 9112 3.2)."""
    server = start_server("tests.apps_deploy:whoami")
    nginx = start_nginx([upstream_of(server)])
    with socket.create_connection(("127.0.0.1", nginx.http_port),
                                  timeout=HTTP_TIMEOUT_SECONDS) as sock:
        sock.sendall(b"GET /old HTTP/1.0\r\n\r\n")
        reply = read_until_close(sock)
    assert reply.startswith(b"HTTP/1.1 200 "), reply[:200]
    seen = json.loads(reply.partition(b"\r\n\r\n")[2])
    assert (seen["path"], seen["host"]) == ("/old", "example.com")   # server_name
    # A client's Host still goes through as it sent it, port and all.
    seen = whoami(nginx.request("GET", "/", headers={"Host": "example.com:8443"}))
    assert seen["host"] == "example.com:8443"


def test_nginx_download_of_10_mb_arrives_whole(start_server, start_nginx):
    server = start_server("tests.apps_deploy:download")
    nginx = start_nginx([upstream_of(server)])
    status, body = nginx.request("GET", "/big?n=%d" % BIG_BYTES)
    assert status == 200
    assert len(body) == BIG_BYTES and body == expected_download(BIG_BYTES)


def test_app_sees_client_address_and_https_scheme_through_nginx(start_server, start_nginx,
                                                                 tmp_path):
    server = start_server("tests.apps_deploy:whoami", "--bind",
                          "unix:%s" % (tmp_path / "fs.sock"))
    nginx = start_nginx([upstream_of(server)])
    seen = whoami(nginx.request("GET", "/", tls=True))
    assert (seen["remote_addr"], seen["scheme"]) == (CLIENT_IP, "https")
    # A client forging X-Forwarded-For: nginx appends the address it saw, and
    # forkserver takes the rightmost one it does not trust.
    seen = whoami(nginx.request("GET", "/", headers={"X-Forwarded-For": SPOOFED_IP,
                                                      "X-Forwarded-Proto": "https"}))
    assert seen["x_forwarded_for"] == "%s, %s" % (SPOOFED_IP, CLIENT_IP)
    assert (seen["remote_addr"], seen["scheme"]) == (CLIENT_IP, "http")


SPOOFS = {   # what a client of nginx may send to pass itself off as another
    "Forwarded": "for=%s;proto=https" % SPOOFED_IP,
    "X-Forwarded-For": SPOOFED_IP,
    "X-Forwarded-Proto": "https",
    "X-Real-IP": SPOOFED_IP,
    "X-Forwarded-Host": "evil.example",
    "X-Forwarded-Port": "443",
    "X-Forwarded-Prefix": "/evil",
}


@pytest.mark.parametrize("transport", ["tcp", "unix"])
@pytest.mark.parametrize("spoof", sorted(SPOOFS) + ["all"])
def test_a_client_of_the_shipped_nginx_cannot_choose_its_address_or_scheme(
        start_server, start_nginx, tmp_path, transport, spoof):
    args = ("--bind", "unix:%s" % (tmp_path / "fs.sock")) if transport == "unix" else ()
    server = start_server("tests.apps_deploy:whoami", *args)
    nginx = start_nginx([upstream_of(server)])
    headers = SPOOFS if spoof == "all" else {spoof: SPOOFS[spoof]}
    seen = whoami(nginx.request("GET", "/", headers=headers))
    assert (seen["remote_addr"], seen["scheme"]) == (CLIENT_IP, "http"), seen
    assert seen["passed_on"] == {}, seen        # cleared by deploy/nginx.conf
    deadline = time.monotonic() + 10
    while not server.access_text() and time.monotonic() < deadline:
        time.sleep(POLL_SECONDS)
    assert server.access_text().startswith(CLIENT_IP + " "), server.access_text()


# ================================================================ trust

FORGED = {"X-Forwarded-For": SPOOFED_IP, "X-Forwarded-Proto": "https",
          "Forwarded": "for=%s;proto=https" % SPOOFED_IP}


def direct_whoami(server, source, headers):
    conn = http.client.HTTPConnection(server.host, server.port, timeout=HTTP_TIMEOUT_SECONDS,
                                      source_address=(source, 0))
    try:
        conn.request("GET", "/", headers=headers)
        resp = conn.getresponse()
        return whoami((resp.status, resp.read()))
    finally:
        conn.close()


def test_forged_proxy_headers_from_an_untrusted_peer_are_ignored(start_server):
    server = start_server("tests.apps_deploy:whoami")   # default: trust 127.0.0.1, ::1
    seen = direct_whoami(server, CLIENT_IP, FORGED)
    assert (seen["remote_addr"], seen["scheme"]) == (CLIENT_IP, "http")
    # The same headers from a trusted peer: X-Forwarded-* is believed, the
    # family --forwarded-headers names (default); Forwarded is not.
    seen = direct_whoami(server, "127.0.0.1", dict(FORGED, Forwarded="for=192.0.2.9"))
    assert (seen["remote_addr"], seen["scheme"]) == (SPOOFED_IP, "https")


def test_forwarded_allow_ips_cidr_decides_trust(start_server):
    server = start_server("tests.apps_deploy:whoami", "--forwarded-allow-ips", "127.0.0.2/32")
    assert direct_whoami(server, "127.0.0.1", FORGED)["remote_addr"] == "127.0.0.1"
    assert direct_whoami(server, CLIENT_IP, FORGED)["remote_addr"] == SPOOFED_IP


# ================================================================ two instances

LOAD_REQUESTS = 300
LOAD_CLIENTS = 6
LOAD_SECONDS = 4.0
APP_MS = 30                        # each request keeps a child busy this long
STOP_AFTER_REQUESTS = LOAD_REQUESTS // 3
IN_FLIGHT_MS = 1000


def run_load(nginx, on_progress):
    """LOAD_REQUESTS GETs from LOAD_CLIENTS threads, paced over ~LOAD_SECONDS.
    Returns (results, failures): results are (completed_at, server pid)."""
    results, failures, lock = [], [], threading.Lock()
    per_client = LOAD_REQUESTS // LOAD_CLIENTS
    interval = LOAD_SECONDS / per_client

    def client():
        for i in range(per_client):
            started = time.monotonic()
            try:
                seen = whoami(nginx.request("GET", "/load?ms=%d" % APP_MS))
                with lock:
                    results.append((time.monotonic(), seen["server"]))
                    on_progress(len(results))
            except (OSError, AssertionError, ValueError) as exc:
                with lock:
                    failures.append(repr(exc))
            time.sleep(max(0.0, interval - (time.monotonic() - started)))
    threads = [threading.Thread(target=client) for _ in range(LOAD_CLIENTS)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(LOAD_SECONDS * 10)
    return results, failures


def slow_request(server, in_flight):
    """A GET that keeps a child of ``server`` busy IN_FLIGHT_MS; its local port
    goes in in_flight["port"] as soon as it is connected, so that the child
    serving it can be told from the load's short-lived ones."""
    conn = http.client.HTTPConnection(server.host, server.port, timeout=HTTP_TIMEOUT_SECONDS)
    try:
        conn.connect()
        in_flight["port"] = conn.sock.getsockname()[1]
        conn.request("GET", "/?ms=%d" % IN_FLIGHT_MS)
        resp = conn.getresponse()
        in_flight["seen"] = whoami((resp.status, resp.read()))
    except (OSError, AssertionError, ValueError, http.client.HTTPException) as exc:
        in_flight["error"] = repr(exc)
    finally:
        conn.close()


def serving_child(server, in_flight):
    """The child of ``server`` that holds the slow request's connection, or None."""
    port = in_flight.get("port")
    for child in server.children() if port else ():
        try:
            if any(c.raddr and c.raddr[1] == port for c in child.net_connections("tcp")):
                return child
        except (psutil.NoSuchProcess, psutil.AccessDenied):
            pass   # exited between the listing and the look
    return None


def describe_stall(server, in_flight, slow, started):
    """What a server that forked no child was doing: for the failure message.
    Its process and its children by ps, every socket on its port (a parked
    connection shows there with its unread bytes), and the slow client."""
    ps = subprocess.run(["ps", "-o", "pid,ppid,stat,wchan:24,args", "-p", str(server.pid),
                         "--ppid", str(server.pid)], capture_output=True, text=True).stdout
    sockets = subprocess.run(["ss", "-tanp", "( sport = :%d or dport = :%d )"
                              % (server.port, server.port)],
                             capture_output=True, text=True).stdout
    return ("no child of the first instance serves the slow request: %r, its thread %s after %.1f s\n"
            "%s%s%s" % (in_flight, "alive" if slow.is_alive() else "ended",
                        time.monotonic() - started, ps, sockets, server.log_text()[-2000:]))


def test_two_instances_share_load_and_one_stops_without_failed_requests(start_server,
                                                                         start_nginx):
    first = start_server("tests.apps_deploy:whoami")
    second = start_server("tests.apps_deploy:whoami")
    nginx = start_nginx([upstream_of(first), upstream_of(second)])
    progress, outcome, in_flight = threading.Event(), {}, {}

    def on_progress(done):
        if done >= STOP_AFTER_REQUESTS:
            progress.set()
    load = threading.Thread(target=lambda: outcome.update(
        zip(("results", "failures"), run_load(nginx, on_progress))))
    load.start()
    try:
        assert progress.wait(LOAD_SECONDS * 5)
        # A request surely in flight on the first instance when it is stopped.
        slow = threading.Thread(target=slow_request, args=(first, in_flight))
        slow_started = time.monotonic()
        slow.start()
        # Its own child, not one of the load's: those live 30 ms, so "any
        # child" could be gone before SIGTERM, the slow request not yet accepted.
        assert wait_for(lambda: serving_child(first, in_flight)), describe_stall(
            first, in_flight, slow, slow_started)
        stopped_at = time.monotonic()
        first.signal(signal.SIGTERM)          # a rolling restart's first step
        slow.join(HTTP_TIMEOUT_SECONDS)
        assert first.wait_exit() == 0
        exited_at = time.monotonic()
    finally:
        load.join(LOAD_SECONDS * 10)
    assert in_flight["seen"]["server"] == first.pid      # finished where it started
    results, failures = outcome["results"], outcome["failures"]
    assert failures == [] and len(results) == LOAD_REQUESTS
    assert {pid for at, pid in results if at < stopped_at} == {first.pid, second.pid}
    assert {pid for at, pid in results if at > exited_at} == {second.pid}
    assert "stopping (graceful)" in first.log_text()


# ================================================================ systemd

SHIM = ("import os, sys\n"
        "fd = int(sys.argv[1])\n"
        "os.dup2(fd, 3)\n"
        "if fd != 3: os.close(fd)\n"
        "os.environ['LISTEN_PID'] = str(os.getpid())\n"     # exec keeps the pid
        "os.environ['LISTEN_FDS'] = '1'\n"
        "os.execv(sys.executable, [sys.executable] + sys.argv[2:])\n")


class Activated:
    """forkserver started as systemd would: listening socket on fd 3, LISTEN_*
    naming our pid (set by a shim that then execs), NOTIFY_SOCKET to read."""

    def __init__(self, tmp_path, listener, args=()):
        self.notify = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.notify.bind(str(tmp_path / "notify"))
        self.notify.settimeout(START_SECONDS)
        self.out_path = str(tmp_path / "stdout.log")
        env = dict(os.environ, NOTIFY_SOCKET=str(tmp_path / "notify"), PYTHONUNBUFFERED="1")
        fd = listener.fileno()
        self.proc = subprocess.Popen(
            [sys.executable, "-c", SHIM, str(fd), FORKSERVER, "tests.apps_deploy:whoami",
             "--error-log", str(tmp_path / "error.log"), "--no-access-log"] + list(args),
            cwd=ROOT, env=env, pass_fds=(fd,), stdout=open(self.out_path, "wb"),
            stderr=subprocess.STDOUT)

    def ready_line(self):
        deadline = time.monotonic() + START_SECONDS
        while time.monotonic() < deadline and self.proc.poll() is None:
            with open(self.out_path, "rb") as f:
                match = READY_RE.search(f.read())
            if match:
                return int(match.group(1)), match.group(2).decode().split()
            time.sleep(POLL_SECONDS)
        raise AssertionError("no ready line: %r" % open(self.out_path, "rb").read())

    def close(self):
        if self.proc.poll() is None:
            kill_tree(self.proc.pid)
        self.notify.close()


def test_socket_activation_serves_inherited_socket_and_notifies(tmp_path):
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(16)
    port = listener.getsockname()[1]
    server = Activated(tmp_path, listener)
    try:
        listener.close()                      # only the server holds it now
        pid, addresses = server.ready_line()
        assert pid == server.proc.pid
        assert addresses == ["http://127.0.0.1:%d" % port]
        assert server.notify.recv(4096).split(b"\n")[0] == b"READY=1"
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=HTTP_TIMEOUT_SECONDS)
        conn.request("GET", "/activated")
        assert json.loads(conn.getresponse().read())["server"] == pid
        conn.close()
        server.proc.send_signal(signal.SIGTERM)
        assert server.notify.recv(4096) == b"STOPPING=1"
        assert server.proc.wait(STOP_SECONDS) == 0
    finally:
        server.close()


def test_bind_fd_serves_an_inherited_socket(tmp_path):
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    port, fd = listener.getsockname()[1], listener.fileno()
    out = str(tmp_path / "stdout.log")
    proc = subprocess.Popen([sys.executable, FORKSERVER, "tests.apps_deploy:whoami",
                             "--bind", "fd://%d" % fd, "--no-access-log",
                             "--error-log", str(tmp_path / "error.log")],
                            cwd=ROOT, pass_fds=(fd,), stdout=open(out, "wb"))
    try:
        listener.close()
        assert wait_for(lambda: READY_RE.search(open(out, "rb").read()))
        pid, addresses = READY_RE.search(open(out, "rb").read()).groups()
        assert addresses.decode() == "http://127.0.0.1:%d" % port
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=HTTP_TIMEOUT_SECONDS)
        conn.request("GET", "/")
        assert json.loads(conn.getresponse().read())["server"] == int(pid)
        conn.close()
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(STOP_SECONDS) == 0
    finally:
        kill_tree(proc.pid)


def ipv6_loopback():
    try:
        with socket.socket(socket.AF_INET6) as s:
            s.bind(("::1", 0))
        return True
    except OSError:
        return False


@needs(ipv6_loopback(), "no IPv6 loopback in this environment")
def test_ipv6_bind_and_trust(start_server):
    server = start_server("tests.apps_deploy:whoami", "--bind", "[::1]:0",
                          "--forwarded-allow-ips", "127.0.0.1")
    assert server.address.startswith("http://[::1]:")
    assert direct_whoami(server, "::1", FORGED)["remote_addr"] == "::1"   # ::1 not trusted
    trusting = start_server("tests.apps_deploy:whoami", "--bind", "[::1]:0",
                            "--forwarded-headers", "forwarded")
    seen = direct_whoami(trusting, "::1", {"Forwarded": 'for="[2001:db8::1]:4711";proto=https'})
    assert (seen["remote_addr"], seen["scheme"]) == ("2001:db8::1", "https")


def test_listen_fds_for_another_pid_are_ignored(start_server):
    # LISTEN_PID names some other process (systemd's variables leaked to us).
    server = start_server("tests.apps_deploy:whoami",
                          extra_env={"LISTEN_PID": "1", "LISTEN_FDS": "1"})
    assert len(server.addresses) == 1
    assert whoami(http_get(server, "/")[:3:2])["server"] == server.pid


# ================================================================ privileges

@needs(os.geteuid() == 0, "dropping privileges needs root (CI is root)")
def test_privilege_drop_after_binding(start_server, tmp_path):
    import pwd
    nobody = pwd.getpwnam(NOBODY)
    sock_path = str(tmp_path / "priv.sock")
    server = start_server("tests.apps_deploy:whoami", "--user", NOBODY,
                          "--bind", "127.0.0.1:0", "--bind", "unix:" + sock_path)
    assert server.ps.uids().real == server.ps.uids().effective == nobody.pw_uid
    assert server.ps.gids().effective == nobody.pw_gid
    assert os.stat(sock_path).st_uid == nobody.pw_uid      # chowned for the new owner
    result = {}
    thread = threading.Thread(target=lambda: result.update(
        seen=whoami(http_get(server, "/?ms=1500")[:3:2])))
    thread.start()
    try:
        children = wait_for(server.children)
        assert children and all(c.uids().real == nobody.pw_uid for c in children)
        assert all(c.uids().saved == nobody.pw_uid for c in children)   # no way back to root
    finally:
        thread.join(HTTP_TIMEOUT_SECONDS)
    assert result["seen"]["uid"] == nobody.pw_uid


# ================================================================ unix sockets

def test_unix_socket_mode_stale_file_replaced_and_removed_on_exit(start_server, tmp_path):
    sock_path = str(tmp_path / "app.sock")
    stale = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    stale.bind(sock_path)
    stale.close()                           # a crashed server's leftover file
    os.chmod(sock_path, 0o604)              # (inode numbers get reused: mark it by mode)
    server = start_server("tests.apps_deploy:whoami", "--bind", "unix:" + sock_path,
                          "--umask", "117")
    assert server.addresses == ["unix:" + sock_path]
    info = os.stat(sock_path)
    assert stat.S_ISSOCK(info.st_mode) and stat.S_IMODE(info.st_mode) == 0o660
    assert unix_whoami(sock_path)["server"] == server.pid
    assert server.stop() == 0
    assert not os.path.exists(sock_path)


def test_unix_socket_removed_after_fast_stop_and_live_one_refused(start_server, tmp_path):
    sock_path = str(tmp_path / "app.sock")
    server = start_server("tests.apps_deploy:whoami", "--bind", "unix:" + sock_path)
    result = subprocess.run([sys.executable, FORKSERVER, "tests.apps_deploy:whoami",
                             "--bind", "unix:" + sock_path], cwd=ROOT, capture_output=True,
                            text=True, timeout=START_SECONDS)
    assert result.returncode == 4 and "in use by another server" in result.stderr
    assert unix_whoami(sock_path)["server"] == server.pid      # the live one is untouched
    server.signal(signal.SIGINT)
    assert server.wait_exit() == 0
    assert not os.path.exists(sock_path)


def test_unix_socket_file_removed_when_privilege_drop_fails(tmp_path):
    sock_path = str(tmp_path / "app.sock")
    result = subprocess.run([sys.executable, FORKSERVER, "tests.apps_deploy:whoami",
                             "--bind", "unix:" + sock_path, "--user", "no-such-user-here"],
                            cwd=ROOT, capture_output=True, text=True, timeout=START_SECONDS)
    assert result.returncode == 4 and "no such user: 'no-such-user-here'" in result.stderr
    assert not os.path.exists(sock_path)


def unix_whoami(path, url="/"):
    return whoami(unix_get(path, url, timeout=HTTP_TIMEOUT_SECONDS))


# ================================================================ logs

def wait_for(predicate, timeout=START_SECONDS):
    """The first true value of predicate(), or its last value at the deadline.
    (Not a second call after the loop: a state seen true, a short-lived child,
    can be gone by then.)"""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value or time.monotonic() >= deadline:
            return value
        time.sleep(POLL_SECONDS)


def read_text(path):
    try:
        with open(path, errors="replace") as f:
            return f.read()
    except FileNotFoundError:
        return ""


def test_sigusr1_reopens_logs_after_rotation(start_server):
    server = start_server("tests.apps_deploy:whoami")
    assert http_get(server, "/before")[0] == 200
    assert wait_for(lambda: "/before" in read_text(server.access_log))
    os.rename(server.access_log, server.access_log + ".1")     # what logrotate does
    os.rename(server.error_log, server.error_log + ".1")
    server.signal(signal.SIGUSR1)
    assert wait_for(lambda: "log files reopened" in read_text(server.error_log))
    assert http_get(server, "/after")[0] == 200
    assert wait_for(lambda: "/after" in read_text(server.access_log))
    new, old = read_text(server.access_log), read_text(server.access_log + ".1")
    assert len(new.splitlines()) == 1 and "GET /after " in new
    assert len(old.splitlines()) == 1 and "GET /before " in old


def close_on_exec_of(pid, path):
    """{fd: close-on-exec?} of pid's descriptors open on path (/proc/PID/fdinfo)."""
    found = {}
    for fd in os.listdir("/proc/%d/fd" % pid):
        try:
            if os.readlink("/proc/%d/fd/%s" % (pid, fd)) == path:
                with open("/proc/%d/fdinfo/%s" % (pid, fd)) as f:
                    flags = int(f.read().split("flags:")[1].split()[0], 8)
                found[int(fd)] = bool(flags & 0o2000000)   # O_CLOEXEC
        except (OSError, IndexError):
            pass   # closed meanwhile
    return found


def test_sigusr1_keeps_the_logs_close_on_exec(start_server):
    """The reopened files used to lose close-on-exec (dup2 makes its copy
    inheritable): each USR1 then USR2 left the new parent, and every child
    after it, holding the rotated files, deleted or not (their disk space
    never freed), and the app's subprocesses got them too."""
    server = start_server("tests.apps_deploy:whoami")
    logs = [os.path.realpath(server.access_log), os.path.realpath(server.error_log)]
    assert [list(close_on_exec_of(server.pid, p).values()) for p in logs] == [[True], [True]]
    for path in logs:
        os.rename(path, path + ".1")
    server.signal(signal.SIGUSR1)
    assert wait_for(lambda: "log files reopened" in read_text(server.error_log))
    for path in logs:
        flags = close_on_exec_of(server.pid, path)
        assert flags and all(flags.values()), (path, flags)
        assert not close_on_exec_of(server.pid, path + ".1")


def test_sigusr1_reopens_the_error_log_when_the_access_log_cannot_be_reopened(
        start_server, tmp_path):
    """Each log is reopened on its own.  The access log's new place missing
    (its directory moved away, or logrotate's new file not writable after
    --user) used to leave the error log unreopened too: every later line,
    this error's too, went on into the rotated file."""
    logs = tmp_path / "acc"
    logs.mkdir()
    access = str(logs / "access.log")
    server = start_server("tests.apps_deploy:whoami", "--access-log", access)
    assert http_get(server, "/before")[0] == 200
    assert wait_for(lambda: "/before" in read_text(access))
    os.rename(server.error_log, server.error_log + ".1")
    os.rename(str(logs), str(logs) + ".gone")
    server.signal(signal.SIGUSR1)
    assert wait_for(lambda: "cannot reopen log file" in read_text(server.error_log))
    assert repr(access) in read_text(server.error_log)
    assert "log files reopened" not in read_text(server.error_log)
    # The access log goes on into the old file until a later SIGUSR1 can reopen it.
    assert http_get(server, "/between")[0] == 200
    assert wait_for(lambda: "/between" in read_text(str(logs) + ".gone/access.log"))
    logs.mkdir()
    server.signal(signal.SIGUSR1)
    assert wait_for(lambda: "log files reopened" in read_text(server.error_log))
    assert http_get(server, "/after")[0] == 200
    assert wait_for(lambda: "/after" in read_text(access))
    assert "cannot reopen" not in read_text(server.error_log + ".1")


@needs(os.geteuid() == 0, "dropping privileges needs root (CI is root)")
def test_privilege_drop_keeps_the_group_of_a_set_group_id_socket_directory(start_server,
                                                                          tmp_path):
    import grp
    import pwd
    nobody, nginx_group = pwd.getpwnam(NOBODY), grp.getgrnam(NGINX_USER)
    shared, private = tmp_path / "shared", tmp_path / "private"
    shared.mkdir()
    private.mkdir()
    os.chown(str(shared), 0, nginx_group.gr_gid)
    os.chmod(str(shared), 0o2750)      # every file made here is group www-data
    server = start_server("tests.apps_deploy:whoami", "--user", NOBODY, "--umask", "007",
                          "--bind", "unix:%s" % (shared / "app.sock"),
                          "--bind", "unix:%s" % (private / "app.sock"))
    assert server.ps.uids().effective == nobody.pw_uid
    kept, given = os.stat(str(shared / "app.sock")), os.stat(str(private / "app.sock"))
    assert (kept.st_uid, kept.st_gid) == (nobody.pw_uid, nginx_group.gr_gid)
    assert (given.st_uid, given.st_gid) == (nobody.pw_uid, nobody.pw_gid)
    assert stat.S_IMODE(kept.st_mode) == stat.S_IMODE(given.st_mode) == 0o660


# ================================================================ the guide, step by step
# docs/deploy.md's steps 1 and 2 as far as a machine without systemd as PID 1
# allows: its own command lines, the shipped files, nginx running as www-data.

GUIDE = os.path.join(ROOT, "docs", "deploy.md")
DEPLOY = os.path.join(ROOT, "deploy")
TMPFILES_CONF = os.path.join(DEPLOY, "forkserver-tmpfiles.conf")
SOCKET_UNIT = os.path.join(DEPLOY, "forkserver.socket")
SERVICE_UNIT = os.path.join(DEPLOY, "forkserver.service")
EXAMPLE_CONFIG = os.path.join(DEPLOY, "forkserver.conf.py")
STEP_1 = "1. One machine behind nginx"
STEP_2 = "2. systemd: socket activation, notify, reload, stop"
GUIDE_RUN_DIR = "/run/forkserver"
GUIDE_APP_DIR = "/srv/myapp"
GUIDE_LOG_DIR = "/var/log/forkserver"
GUIDE_TMPFILES = "/etc/tmpfiles.d/forkserver.conf"
GUIDE_CONFIG = "/etc/forkserver/forkserver.conf.py"
NGINX_USER = "www-data"
SERVICE_USER = "forkserver"
USERADD_EXISTS = 9           # useradd(8): "username already in use"
SYSTEMD_TMPFILES = shutil.which("systemd-tmpfiles")
SYSTEMD_SOCKET_ACTIVATE = shutil.which("systemd-socket-activate")
SETPRIV = shutil.which("setpriv")
SYSTEM_PYTHON = "/usr/bin/python3"
SERVER_FILES = ("forkserver.py", "wsgi_handler.py", "forkparts")
NEEDS_SYSTEMD = "the systemd package's tools (.ci/run installs it)"
MYAPP = '''\
import json, os

def app(environ, start_response):
    """The guide's myapp:app: who serves, and a write to the app's data directory
    (not for the warm-up request, which environ marks: README, "the warm-up")."""
    if not environ.get("forkserver.warmup"):
        with open(os.path.join("data", "visits"), "a") as f:
            f.write("%s\\n" % environ["PATH_INFO"])
    body = json.dumps({"server": os.getppid(), "uid": os.getuid(), "gid": os.getgid(),
                       "remote_addr": environ["REMOTE_ADDR"],
                       "scheme": environ["wsgi.url_scheme"]}).encode()
    start_response("200 OK", [("Content-Type", "application/json"),
                              ("Content-Length", str(len(body)))])
    return [body]
'''


def guide_commands(heading):
    """The command lines of the sh blocks of docs/deploy.md's section heading."""
    with open(GUIDE) as f:
        text = f.read()
    assert "\n## %s\n" % heading in text, "docs/deploy.md has no section %r" % heading
    section = text.split("\n## %s\n" % heading, 1)[1].split("\n## ", 1)[0]
    return [line for block in re.findall(r"```sh\n(.*?)```", section, re.S)
            for line in block.splitlines() if line.strip()]


def guide_command(heading, start):
    """The one command line of that section that starts with start, its comment cut."""
    found = [line for line in guide_commands(heading) if line.startswith(start)]
    assert len(found) == 1, "docs/deploy.md, %r: %d lines start %r" % (heading, len(found), start)
    return re.sub(r"\s+#.*", "", found[0])


def unit_settings(path):
    """{directive: [values]} of a systemd unit file, sections merged."""
    settings = {}
    with open(path) as f:
        for line in f:
            line = line.strip()
            if line and not line.startswith(("#", ";", "[")) and "=" in line:
                key, _, value = line.partition("=")
                settings.setdefault(key.strip(), []).append(value.strip())
    return settings


def run_guide_line(line):
    """A command line of the guide, as root's shell runs it."""
    result = subprocess.run(line, shell=True, capture_output=True, text=True,
                            timeout=START_SECONDS)
    return result.returncode, result.stdout + result.stderr


def guide_user(heading):
    """The service's user, made by the guide's useradd line unless it exists."""
    import pwd
    code, output = run_guide_line(guide_command(heading, "useradd")
                                  if heading == STEP_1 else
                                  guide_command(heading, "id %s ||" % SERVICE_USER))
    # Step 1's bare useradd fails (9) once a run before ours made the user.
    assert code == 0 or (code == USERADD_EXISTS and heading == STEP_1), output
    return pwd.getpwnam(SERVICE_USER)


@pytest.fixture
def run_dir():
    """Stands for /run/forkserver, which a real server on this machine may use."""
    path = "%s-test-%d-%s" % (GUIDE_RUN_DIR, os.getpid(), os.urandom(4).hex())
    yield path
    shutil.rmtree(path, ignore_errors=True)


@pytest.fixture
def world_dir():
    """A directory every user may search (pytest's tmp_path is root's alone):
    for what the guide's other users (forkserver, www-data) must reach."""
    import tempfile
    path = tempfile.mkdtemp(prefix="forkserver-guide-")
    os.chmod(path, 0o755)
    yield path
    shutil.rmtree(path, ignore_errors=True)


def nginx_as_www_data(world_dir, socket_path, certificate):
    return Nginx(os.path.join(world_dir, "nginx"), ["unix:" + socket_path], certificate,
                 user=NGINX_USER)


@needs(os.geteuid() == 0, "the guide is followed as root (CI is root)")
@needs(SYSTEMD_TMPFILES, NEEDS_SYSTEMD)
def test_guide_step_1_nginx_as_www_data_reaches_forkserver_on_its_unix_socket(
        start_server, certificate, run_dir, world_dir):
    import grp
    user, nginx_gid = guide_user(STEP_1), grp.getgrnam(NGINX_USER).gr_gid
    # cp deploy/forkserver-tmpfiles.conf /etc/tmpfiles.d/forkserver.conf
    assert guide_command(STEP_1, "cp deploy/forkserver-tmpfiles.conf") == (
        "cp deploy/forkserver-tmpfiles.conf %s" % GUIDE_TMPFILES)
    conf = os.path.join(world_dir, "forkserver.conf")
    with open(TMPFILES_CONF) as f, open(conf, "w") as out:
        out.write(f.read().replace(GUIDE_RUN_DIR, run_dir))
    code, output = run_guide_line(guide_command(STEP_1, "systemd-tmpfiles")
                                  .replace(GUIDE_TMPFILES, conf))
    assert code == 0, output
    made = os.stat(run_dir)
    assert (made.st_uid, made.st_gid, oct(stat.S_IMODE(made.st_mode))) == (
        user.pw_uid, nginx_gid, "0o2750")
    argv = shlex.split(guide_command(STEP_1, "forkserver ").replace(GUIDE_RUN_DIR, run_dir))
    assert argv[:2] == ["forkserver", "myapp:app"], argv
    server = start_server("tests.apps_deploy:whoami", *argv[2:])
    socket_path = os.path.join(run_dir, "forkserver.sock")
    info = os.stat(socket_path)
    assert (info.st_uid, info.st_gid, oct(stat.S_IMODE(info.st_mode))) == (
        user.pw_uid, nginx_gid, "0o660")
    nginx = nginx_as_www_data(world_dir, socket_path, certificate)
    try:
        status, body = nginx.request("GET", "/step-1")
        assert status == 200, (body[:300], nginx.error_text()[-1000:])
        seen = json.loads(body)
        assert (seen["server"], seen["uid"]) == (server.pid, user.pw_uid)
        assert (seen["remote_addr"], seen["scheme"]) == (CLIENT_IP, "http")
    finally:
        nginx.stop()
        kill_tree(nginx.proc.pid)
    assert server.stop() == 0
    assert not os.path.exists(socket_path)     # removed by forkserver, as its user


def python_for(user):
    """An interpreter that user may run: ours, unless it lives under root's
    home (pyenv's), else the system's; as a real deployment's venv would be."""
    for python in (sys.executable, SYSTEM_PYTHON):
        check = subprocess.run([SETPRIV, "--reuid", str(user.pw_uid), "--regid",
                                str(user.pw_gid), "--init-groups", "--", python, "-c",
                                "import sys; sys.exit(sys.version_info < (3, 10))"],
                               cwd="/", capture_output=True, timeout=START_SECONDS)
        if check.returncode == 0:
            return python
    pytest.fail("no Python >= 3.10 that user %s may run" % user.pw_name)


def install_app(app_dir):
    """/srv/myapp: forkserver's files (what the venv would hold) and myapp.py."""
    os.makedirs(app_dir)
    for name in SERVER_FILES:
        source = os.path.join(ROOT, name)
        if os.path.isdir(source):
            shutil.copytree(source, os.path.join(app_dir, name),
                            ignore=shutil.ignore_patterns("__pycache__"))
        else:
            shutil.copy(source, app_dir)
    with open(os.path.join(app_dir, "myapp.py"), "w") as f:
        f.write(MYAPP)
    for where, dirs, files in os.walk(app_dir):
        os.chmod(where, 0o755)


class SocketActivated:
    """The units of step 2 without systemd as PID 1: systemd-socket-activate
    binds ListenStream= and, on the first connection, execs ExecStart= as
    User=/Group= (setpriv keeps the pid, so LISTEN_PID stays right)."""

    def __init__(self, world_dir, run_dir, user):
        self.socket_unit, self.service = unit_settings(SOCKET_UNIT), unit_settings(SERVICE_UNIT)
        listen = self.socket_unit["ListenStream"][0]
        assert listen.startswith(GUIDE_RUN_DIR + "/"), listen
        self.socket_path = run_dir + listen[len(GUIDE_RUN_DIR):]
        # systemd makes the socket's directory, DirectoryMode=, owned by root.
        os.mkdir(run_dir)
        os.chmod(run_dir, int(self.socket_unit["DirectoryMode"][0], 8))
        self.app_dir = os.path.join(world_dir, "srv", "myapp")
        install_app(self.app_dir)
        code, output = run_guide_line(guide_command(STEP_2, "install -d")
                                      .replace(GUIDE_APP_DIR, self.app_dir))
        assert code == 0, output
        self.log_dir = os.path.join(world_dir, "log")       # LogsDirectory=
        os.mkdir(self.log_dir)
        os.chown(self.log_dir, user.pw_uid, user.pw_gid)
        self.config = os.path.join(world_dir, "forkserver.conf.py")
        with open(EXAMPLE_CONFIG) as f, open(self.config, "w") as out:
            out.write(f.read().replace(GUIDE_LOG_DIR, self.log_dir))
        self.notify = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        notify_path = os.path.join(world_dir, "notify")
        self.notify.bind(notify_path)
        os.chmod(notify_path, 0o666)
        self.notify.settimeout(START_SECONDS)
        self.proc = subprocess.Popen(
            [SYSTEMD_SOCKET_ACTIVATE, "-l", self.socket_path,
             "-E", "NOTIFY_SOCKET=" + notify_path, "-E", "PYTHONUNBUFFERED=1",
             SETPRIV, "--reuid", self.service["User"][0], "--regid", self.service["Group"][0],
             "--init-groups", "--", python_for(user)] + self.exec_start(),
            cwd=self.service["WorkingDirectory"][0].replace(GUIDE_APP_DIR, self.app_dir),
            stdout=open(os.path.join(world_dir, "stdout.log"), "wb"), stderr=subprocess.STDOUT)

    def exec_start(self):
        argv = shlex.split(self.service["ExecStart"][0])
        assert argv[0] == GUIDE_APP_DIR + "/venv/bin/forkserver", argv
        assert argv[argv.index("--config") + 1] == GUIDE_CONFIG, argv
        argv[argv.index("--config") + 1] = self.config
        return [os.path.join(self.app_dir, "forkserver.py")] + argv[1:]

    def socket_as_the_unit_says(self):
        """What systemd does right after it binds: SocketUser=, SocketGroup=, SocketMode=."""
        import grp
        import pwd
        assert wait_for(lambda: os.path.exists(self.socket_path)), self.output()
        os.chown(self.socket_path, pwd.getpwnam(self.socket_unit["SocketUser"][0]).pw_uid,
                 grp.getgrnam(self.socket_unit["SocketGroup"][0]).gr_gid)
        os.chmod(self.socket_path, int(self.socket_unit["SocketMode"][0], 8))

    def output(self):
        return read_text(os.path.join(os.path.dirname(self.config), "stdout.log"))

    def close(self):
        if self.proc.poll() is None:
            kill_tree(self.proc.pid)
        self.notify.close()


@needs(os.geteuid() == 0, "the guide is followed as root (CI is root)")
@needs(SYSTEMD_SOCKET_ACTIVATE and SETPRIV, NEEDS_SYSTEMD)
def test_guide_step_2_socket_activated_service_runs_as_its_user_behind_nginx_as_www_data(
        certificate, run_dir, world_dir):
    user = guide_user(STEP_2)
    service = SocketActivated(world_dir, run_dir, user)
    nginx = None
    try:
        service.socket_as_the_unit_says()
        nginx = nginx_as_www_data(world_dir, service.socket_path, certificate)
        # The first connection starts the service (socket activation); it waits
        # in the socket's backlog meanwhile.
        status, body = nginx.request("GET", "/step-2")
        assert status == 200, (body[:300], nginx.error_text()[-1000:], service.output())
        seen = json.loads(body)
        assert (seen["server"], seen["uid"], seen["gid"]) == (
            service.proc.pid, user.pw_uid, user.pw_gid)
        assert (seen["remote_addr"], seen["scheme"]) == (CLIENT_IP, "http")
        assert service.notify.recv(4096).split(b"\n")[0] == b"READY=1"
        assert read_text(os.path.join(service.app_dir, "data", "visits")) == "/step-2\n"
        assert "GET /step-2 " in read_text(os.path.join(service.log_dir, "access.log"))
        service.proc.send_signal(signal.SIGTERM)
        assert service.notify.recv(4096) == b"STOPPING=1"
        assert service.proc.wait(STOP_SECONDS) == 0, service.output()
    finally:
        if nginx:
            nginx.stop()
            kill_tree(nginx.proc.pid)
        service.close()


def test_sigusr1_reopens_relative_log_paths_where_they_were_opened_despite_chdir(
        start_server, tmp_path):
    """Relative --access-log/--error-log name files in the launch directory;
    after --chdir, SIGUSR1 used to reopen them in the --chdir directory, so a
    rotation moved the logs."""
    launch, app_dir = tmp_path / "launch", tmp_path / "app"
    launch.mkdir()
    app_dir.mkdir()
    server = start_server("tests.apps_deploy:whoami", "--chdir", str(app_dir),
                          "--pythonpath", ROOT, "--access-log", "rel.acc",
                          "--error-log", "rel.err", cwd=str(launch))
    access, error = str(launch / "rel.acc"), str(launch / "rel.err")
    assert http_get(server, "/before")[0] == 200
    assert wait_for(lambda: "/before" in read_text(access))
    os.rename(access, access + ".1")
    os.rename(error, error + ".1")
    server.signal(signal.SIGUSR1)
    assert wait_for(lambda: "log files reopened" in read_text(error))
    assert http_get(server, "/after")[0] == 200
    assert wait_for(lambda: "/after" in read_text(access))
    assert sorted(os.listdir(str(app_dir))) == []
