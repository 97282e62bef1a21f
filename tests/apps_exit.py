"""Apps that end their child with os._exit (tests/test_app_exit.py), named by behaviour."""
import os


def exits_quietly(environ, start_response):
    """os._exit(0) before any response: the client gets an empty reply."""
    os._exit(0)


def exits_with_three(environ, start_response):
    """os._exit(3): forkserver's own code for "memory limit hit"."""
    os._exit(3)


def exits_after_answering(environ, start_response):
    """Sends a whole response with write(), then os._exit(0)."""
    write = start_response("200 OK", [("Content-Type", "text/plain"), ("Content-Length", "3")])
    write(b"ok\n")
    os._exit(0)


def hello(environ, start_response):
    start_response("200 OK", [("Content-Type", "text/plain"), ("Content-Length", "3")])
    return [b"hi\n"]
