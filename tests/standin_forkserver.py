"""A stand-in forkserver that writes the --trace=process contract and nothing else.

tests/test_timeline_script.py drives `timeline.py --run` with it (a path
ending in forkserver.py names the server to run), so the live-run machinery
(ready line, burst, stop by pid, stderr read) is tested whatever the real
server's trace does today.  It takes the arguments `timeline.py --run` adds
(--bind HOST:PORT, --trace=process) and `--reaper loop|none`; anything else is
ignored.  One connection per child, a fixed 200 answer, SIGTERM: reap, exit 0.
"""
import os
import select
import signal
import socket
import sys
import time

RESPONSE = b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nConnection: close\r\n\r\nok"


def trace(text):
    os.write(2, ("%.6f [%d] %s\n" % (time.monotonic(), os.getpid(), text)).encode())


def option(argv, name, default):
    for i, arg in enumerate(argv):
        if arg == name and i + 1 < len(argv):
            return argv[i + 1]
        if arg.startswith(name + "="):
            return arg.split("=", 1)[1]
    return default


def reap_all():
    while True:
        try:
            pid, status = os.waitpid(-1, os.WNOHANG)
        except ChildProcessError:
            return
        if pid == 0:
            return
        trace("reaped %d: exited with status %d" % (pid, os.waitstatus_to_exitcode(status)))


def serve_child(conn):
    conn.recv(65536)
    conn.sendall(RESPONSE)
    conn.close()
    trace("exit: status 0")
    os._exit(0)


def main(argv):
    host, _, port = option(argv, "--bind", "127.0.0.1:0").rpartition(":")
    reaper = option(argv, "--reaper", "loop")
    listener = socket.create_server((host, int(port)))
    wake_r, wake_w = os.pipe()
    os.set_blocking(wake_w, False)
    signal.set_wakeup_fd(wake_w)
    signal.signal(signal.SIGCHLD, lambda *_: trace("SIGCHLD received"))
    signal.signal(signal.SIGTERM, lambda *_: None)
    print("forkserver ready: pid %d listening on http://%s:%d"
          % (os.getpid(), host, listener.getsockname()[1]), flush=True)
    while True:
        ready, _, _ = select.select([listener, wake_r], [], [])
        if wake_r in ready:
            signals = os.read(wake_r, 512)
            if signal.SIGTERM in signals:
                break
        if listener in ready:
            conn, addr = listener.accept()
            pid = os.fork()
            if pid == 0:
                listener.close()
                serve_child(conn)
            trace("fork: child %d for %s:%d" % (pid, addr[0], addr[1]))
            conn.close()
        if reaper == "loop":
            reap_all()
    for _ in range(1000):            # bounded: children answer at once
        try:
            os.waitpid(-1, 0)
        except ChildProcessError:
            break
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
