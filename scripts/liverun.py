"""liverun.py: timeline.py --run: one short traced run of the server.

Starts forkserver with --trace=process (stdout and stderr to temporary
files, so a full pipe can never block it), waits for its ready line, sends a
burst of plain HTTP/1.1 requests over loopback, waits --settle seconds, notes
the time (the end of the picture's axis), stops the server by its pid with
SIGTERM and returns what it wrote on stderr.  Every wait is bounded.
"""
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
READY_RE = re.compile(r"forkserver ready: pid (\d+) listening on (\S+)")
READY_TIMEOUT_SECONDS = 30.0
STOP_TIMEOUT_SECONDS = 30.0        # its --graceful-timeout is shorter by default
CONNECTION_TIMEOUT_SECONDS = 10.0
MAX_REQUESTS = 10000
MAX_CONCURRENCY = 256
MAX_SETTLE_SECONDS = 60.0
POLL_SECONDS = 0.05
READ_BYTES = 64 * 1024
EXIT_RUN_FAILED, EXIT_USAGE = 1, 2


class RunError(Exception):
    def __init__(self, code, message):
        super().__init__(message)
        self.code = code


def server_command(args):
    """argv for the server: a leading `forkserver` word or *forkserver.py path names it."""
    if args and args[0] == "forkserver":
        found = shutil.which("forkserver")
        if found is None:
            raise RunError(EXIT_USAGE, "`forkserver` is not on PATH (name forkserver.py instead)")
        command, args = [found], args[1:]
    elif args and args[0].endswith("forkserver.py"):
        command, args = [sys.executable, args[0]], args[1:]
    else:
        command = [sys.executable, os.path.join(ROOT, "forkserver.py")]
    if not any(a == "--trace" or a.startswith("--trace=") for a in args):
        args = ["--trace=process"] + args
    if not any(a in ("-b", "--bind") or a.startswith("--bind=") for a in args):
        args = ["--bind", "127.0.0.1:0"] + args
    return command + args


def check_options(opts):
    if not 1 <= opts.requests <= MAX_REQUESTS:
        raise RunError(EXIT_USAGE, "--requests must be between 1 and %d" % MAX_REQUESTS)
    if not 1 <= opts.concurrency <= MAX_CONCURRENCY:
        raise RunError(EXIT_USAGE, "--concurrency must be between 1 and %d" % MAX_CONCURRENCY)
    if not 0 <= opts.settle <= MAX_SETTLE_SECONDS:
        raise RunError(EXIT_USAGE, "--settle must be between 0 and %g s" % MAX_SETTLE_SECONDS)


def wait_ready(proc, out_path, err_path):
    """(pid, host, port) from the ready line, or RunError with the server's words."""
    deadline = time.monotonic() + READY_TIMEOUT_SECONDS
    while time.monotonic() < deadline:
        with open(out_path, errors="replace") as f:
            match = READY_RE.search(f.read())
        if match:
            address = match.group(2)
            if not address.startswith("http://"):
                raise RunError(EXIT_USAGE, "--run needs a TCP address, not %s" % address)
            host, _, port = address[len("http://"):].rpartition(":")
            return int(match.group(1)), host.strip("[]"), int(port)
        if proc.poll() is not None:
            raise RunError(EXIT_RUN_FAILED, "the server exited with status %d before it was "
                           "ready; it said: %s" % (proc.returncode, tail(err_path)))
        time.sleep(POLL_SECONDS)
    raise RunError(EXIT_RUN_FAILED, "the server was not ready within %gs" % READY_TIMEOUT_SECONDS)


def tail(path, lines=5):
    with open(path, errors="replace") as f:
        text = f.read().strip().splitlines()
    return " | ".join(text[-lines:]) or "(nothing)"


def one_request(host, port, path):
    """True if a whole response came back."""
    request = ("GET %s HTTP/1.1\r\nHost: %s:%d\r\nConnection: close\r\n\r\n"
               % (path, host, port)).encode("latin-1")
    try:
        with socket.create_connection((host, port), timeout=CONNECTION_TIMEOUT_SECONDS) as s:
            s.sendall(request)
            data = b""
            while True:
                more = s.recv(READ_BYTES)
                if not more:
                    break
                data += more
        return data.startswith(b"HTTP/1.")
    except OSError:
        return False


def burst(host, port, opts):
    """--requests connections, --concurrency at a time: (completed, failed)."""
    todo = list(range(opts.requests))
    done = []
    lock = threading.Lock()

    def worker():
        while True:
            with lock:
                if not todo:
                    return
                todo.pop()
            ok = one_request(host, port, opts.path)
            with lock:
                done.append(ok)

    threads = [threading.Thread(target=worker) for _ in range(min(opts.concurrency,
                                                                  opts.requests))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()     # each connection is bounded by its timeout
    return sum(done), len(done) - sum(done)


def stop(proc, pid):
    """SIGTERM by pid; SIGKILL if it has not exited in time.  Its exit status."""
    try:
        os.kill(pid, signal.SIGTERM)
    except ProcessLookupError:
        pass
    try:
        return proc.wait(STOP_TIMEOUT_SECONDS)
    except subprocess.TimeoutExpired:
        os.kill(pid, signal.SIGKILL)
        proc.wait(STOP_TIMEOUT_SECONDS)
        raise RunError(EXIT_RUN_FAILED, "the server did not stop within %gs of SIGTERM "
                       "(killed)" % STOP_TIMEOUT_SECONDS) from None


def run(opts, server_args):
    """(the server's stderr text, the axis' end T)."""
    check_options(opts)
    command = server_command(server_args)
    with tempfile.TemporaryDirectory(prefix="timeline-") as folder:
        out_path, err_path = os.path.join(folder, "stdout"), os.path.join(folder, "stderr")
        with open(out_path, "wb") as out, open(err_path, "wb") as err:
            proc = subprocess.Popen(command, stdin=subprocess.DEVNULL, stdout=out, stderr=err,
                                    cwd=os.getcwd(), start_new_session=True)
        try:
            pid, host, port = wait_ready(proc, out_path, err_path)
            completed, failed = burst(host, port, opts)
            time.sleep(opts.settle)
            end = time.monotonic()
            status = stop(proc, pid)
        finally:
            if proc.poll() is None:
                os.kill(proc.pid, signal.SIGKILL)
                proc.wait(STOP_TIMEOUT_SECONDS)
        with open(err_path, encoding="utf-8", errors="replace") as f:
            text = f.read()
    if opts.save_trace:
        try:
            with open(opts.save_trace, "w", encoding="utf-8") as f:
                f.write(text)
        except OSError as exc:
            raise RunError(EXIT_USAGE, "cannot write %s: %s" % (opts.save_trace, exc.strerror))
    sys.stderr.write("timeline.py: burst of %d connections: %d completed, %d failed; "
                     "server %d stopped with status %d\n"
                     % (opts.requests, completed, failed, pid, status))
    if completed == 0:
        raise RunError(EXIT_RUN_FAILED, "no connection of the burst completed")
    return text, end
