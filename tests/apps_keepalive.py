"""Apps for tests/test_keepalive.py, named by behaviour."""
import os
import time


def _reply(start_response, body, status="200 OK"):
    start_response(status, [("Content-Type", "text/plain"), ("Content-Length", str(len(body)))])
    return [body]


def path_and_pid(environ, start_response):
    """Answers "<path> <pid> run_once=<bool>", so order and process are visible."""
    body = "%s %d run_once=%s\n" % (environ["PATH_INFO"], os.getpid(), environ["wsgi.run_once"])
    return _reply(start_response, body.encode())


def unknown_length(environ, start_response):
    """A body of unknown length: chunked for HTTP/1.1, close-delimited for 1.0."""
    start_response("200 OK", [("Content-Type", "text/plain")])
    return iter([b"part one, ", b"part two\n"])


def ignore_body(environ, start_response):
    """Answers without reading the request body."""
    return _reply(start_response, b"ignored\n")


def sleep_path(environ, start_response):
    """Sleeps the seconds named by the path (/0.5), then answers."""
    time.sleep(float(environ["PATH_INFO"].strip("/") or 0))
    return _reply(start_response, b"slept\n")


def path_after_body(environ, start_response):
    """Reads the whole body, then answers with the path."""
    environ["wsgi.input"].read()
    return _reply(start_response, environ["PATH_INFO"].encode() + b"\n")
