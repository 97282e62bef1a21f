"""WSGI apps for the deployment and config tests, named by behaviour."""
import hashlib
import json
import os
import time

from tests.apps import query_param

READ_BYTES = 64 * 1024
PATTERN = bytes(range(256)) * 256     # 64 KiB of a pattern a truncation cannot hide in


def _reply(start_response, body, ctype="application/json", extra=()):
    start_response("200 OK", [("Content-Type", ctype),
                              ("Content-Length", str(len(body)))] + list(extra))
    return [body]



def whoami(environ, start_response):
    """JSON: which server (parent pid), which child, the client and scheme it saw,
    and the length and SHA-256 of the body it read.  ?ms= sleeps first."""
    time.sleep(int(query_param(environ, "ms", "0")) / 1000.0)
    digest, length = hashlib.sha256(), 0
    while True:
        data = environ["wsgi.input"].read(READ_BYTES)
        if not data:
            break
        digest.update(data)
        length += len(data)
    body = json.dumps({
        "server": os.getppid(), "child": os.getpid(), "uid": os.getuid(),
        "remote_addr": environ.get("REMOTE_ADDR"), "scheme": environ["wsgi.url_scheme"],
        "method": environ["REQUEST_METHOD"], "path": environ["PATH_INFO"],
        "x_forwarded_for": environ.get("HTTP_X_FORWARDED_FOR"), "host": environ.get("HTTP_HOST"),
        "passed_on": {name: environ[name] for name in (
            "HTTP_FORWARDED", "HTTP_X_REAL_IP", "HTTP_X_FORWARDED_HOST",
            "HTTP_X_FORWARDED_PORT", "HTTP_X_FORWARDED_PREFIX") if name in environ},
        "content_length": environ.get("CONTENT_LENGTH"),
        "body_length": length, "body_sha256": digest.hexdigest(),
    }).encode()
    return _reply(start_response, body)


def download(environ, start_response):
    """?n= bytes of PATTERN with a Content-Length, streamed in 64 KiB pieces."""
    n = int(query_param(environ, "n", str(10 * 1024 * 1024)))
    start_response("200 OK", [("Content-Type", "application/octet-stream"),
                              ("Content-Length", str(n))])

    def pieces():
        left = n
        while left > 0:
            piece = PATTERN[:min(left, len(PATTERN))]
            left -= len(piece)
            yield piece
    return pieces()


def expected_download(n):
    """What download() sends for ?n=n."""
    whole, rest = divmod(n, len(PATTERN))
    return PATTERN * whole + PATTERN[:rest]


def with_response_header(environ, start_response):
    """Sets X-Resp: out-value; ?ms= sleeps first (for the access log's timings)."""
    time.sleep(int(query_param(environ, "ms", "0")) / 1000.0)
    return _reply(start_response, b"logged\n", ctype="text/plain",
                  extra=[("X-Resp", "out-value")])
