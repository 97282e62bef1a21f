"""WSGI apps for the tests, named by behaviour."""
import os
import sys
import time


def _reply(start_response, body, status="200 OK", ctype="text/plain"):
    start_response(status, [("Content-Type", ctype), ("Content-Length", str(len(body)))])
    return [body]


def query_param(environ, name, default):
    """One value of the query string, undecoded (the tests' apps need no more)."""
    for pair in environ.get("QUERY_STRING", "").split("&"):
        key, _, value = pair.partition("=")
        if key == name:
            return value
    return default


def hello(environ, start_response):
    return _reply(start_response, b"Hello, World!\n")


def echo_body(environ, start_response):
    """Answers with the request body read by wsgi.input.read()."""
    body = environ["wsgi.input"].read()
    return _reply(start_response, body)


def echo_environ(environ, start_response):
    """Answers with the CGI-ish environ keys as `KEY=repr(value)` lines."""
    lines = ["%s=%r" % (k, v) for k, v in sorted(environ.items())
             if isinstance(v, (str, bool, tuple))]
    return _reply(start_response, ("\n".join(lines) + "\n").encode("utf-8", "backslashreplace"))


def stream(environ, start_response):
    """Streams N bytes (query ?n=) in 64 KiB chunks, length unknown to the server."""
    n = int(environ["QUERY_STRING"].partition("n=")[2] or 10 * 1024 * 1024)
    start_response("200 OK", [("Content-Type", "application/octet-stream")])

    def gen():
        left = n
        while left > 0:
            chunk = min(left, 65536)
            left -= chunk
            yield b"x" * chunk
    return gen()


def paced_chunks(environ, start_response):
    """Three chunks of 100 bytes, 0.5 s apart, length unknown: chunked."""
    import time
    start_response("200 OK", [("Content-Type", "text/plain")])

    def gen():
        for i in range(3):
            if i:
                time.sleep(0.5)
            yield b"%d" % i * 100
    return gen()


def big(environ, start_response):
    """N bytes (query ?n=, default 32 MiB) in one piece, with their Content-Length."""
    return _reply(start_response, b"x" * int(query_param(environ, "n", 32 << 20)))


def sink(environ, start_response):
    """Reads the body in pieces and reports its length."""
    total, stream = 0, environ["wsgi.input"]
    while True:
        data = stream.read(65536)
        if not data:
            break
        total += len(data)
    return _reply(start_response, str(total).encode())


def ignore_body(environ, start_response):
    """Answers without reading the body (no 100 Continue may be sent)."""
    return _reply(start_response, b"not read\n", status="403 Forbidden")


def slow(environ, start_response):
    """Sleeps ?s= seconds (default 2) before answering."""
    seconds = float(environ["QUERY_STRING"].partition("s=")[2] or 2)
    time.sleep(seconds)
    return _reply(start_response, b"slow done\n")


def hang(environ, start_response):
    """Never answers."""
    while True:
        time.sleep(60)


def boom(environ, start_response):
    """Raises before starting the response."""
    raise RuntimeError("boom from the app")


def boom_after_headers(environ, start_response):
    """Raises after the first body chunk went out."""
    start_response("200 OK", [("Content-Type", "text/plain")])

    def gen():
        yield b"partial"
        raise RuntimeError("boom after headers")
    return gen()


def bad_header(environ, start_response):
    """Sets a header with CR LF in it (response splitting attempt)."""
    start_response("200 OK", [("X-Evil", "a\r\nSet-Cookie: pwned=1")])
    return [b"no"]


def file_wrapper(environ, start_response):
    """Sends this file through wsgi.file_wrapper."""
    f = open(os.path.abspath(__file__), "rb")
    start_response("200 OK", [("Content-Type", "text/plain")])
    return environ["wsgi.file_wrapper"](f, 8192)


def subprocess_true(environ, start_response):
    import subprocess
    code = subprocess.run(["true"]).returncode
    return _reply(start_response, ("returncode=%d\n" % code).encode())


def allocate_forever(environ, start_response):
    hoard = []
    while True:
        hoard.append(b"x" * (1024 * 1024))


def burn_cpu(environ, start_response):
    while True:
        pass


def pid(environ, start_response):
    return _reply(start_response, ("%d\n" % os.getpid()).encode())


def write_callable(environ, start_response):
    """Uses the write() callable returned by start_response."""
    write = start_response("200 OK", [("Content-Type", "text/plain")])
    write(b"written ")
    return [b"and returned\n"]


def greeting(environ, start_response):
    """Answers with $GREETING; prints to stdout and stderr (--capture-output)."""
    print("stdout of the app", flush=True)
    sys.stderr.write("stderr of the app\n")
    sys.stderr.flush()
    return _reply(start_response, os.environ.get("GREETING", "-").encode())


def make_greeter(greeting, punctuation="!"):
    """A factory with arguments: module:make_greeter('hi', punctuation='?')."""
    def app(environ, start_response):
        return _reply(start_response, (greeting + punctuation).encode())
    return app


def use_up_descriptors(limit=64):
    """Under a soft limit of ``limit`` (whatever the machine's), open
    /dev/null until EMFILE; the descriptors, kept open."""
    import resource
    _, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (limit, hard))
    held = []
    try:
        while True:
            held.append(os.open(os.devnull, os.O_RDONLY))
    except OSError:
        return held


def uses_up_descriptors(environ, start_response):
    """Uses up the descriptors, then raises: the server's own error path has
    no descriptor left either."""
    held = use_up_descriptors()
    raise RuntimeError("the app used up %d descriptors" % len(held))
