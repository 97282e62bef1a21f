"""Test apps for the strict-HTTP tests (issue 5), named by behaviour."""


def read_body(environ):
    """PEP 3333: read no more than CONTENT_LENGTH, unless the server says the
    stream ends by itself (wsgi.input_terminated, as forkserver and werkzeug's
    chunked decoding do); other servers hand over the raw socket file."""
    stream = environ["wsgi.input"]
    if environ.get("wsgi.input_terminated"):
        return stream.read()
    length = environ.get("CONTENT_LENGTH") or "0"
    return stream.read(int(length)) if length.isdigit() else b""


def echo_request(environ, start_response):
    """Reads the whole body, then echoes what the server parsed, one
    ``key=value`` per line: method, path, query, host, body length, the
    HTTP_* variables and forkserver's trailers."""
    body = read_body(environ)
    lines = [
        "method=" + environ["REQUEST_METHOD"],
        "path=" + environ["PATH_INFO"],
        "query=" + environ.get("QUERY_STRING", ""),
        "host=" + environ.get("SERVER_NAME", ""),
        "body=%d" % len(body),
    ]
    lines += sorted("%s=%s" % (k, v) for k, v in environ.items() if k.startswith("HTTP_"))
    lines += ["trailer:%s=%s" % (n, v) for n, v in environ.get("forkserver.trailers", ())]
    text = ("\n".join(lines) + "\n").encode("latin-1", "backslashreplace")
    start_response("200 OK", [("Content-Type", "text/plain"),
                              ("Content-Length", str(len(text)))])
    return [text]


def swallow_body_errors(environ, start_response):
    """Reads the body and swallows any exception, as frameworks that turn every
    error into their own 500 do; the server must still not go on parsing."""
    try:
        environ["wsgi.input"].read()
    except Exception:
        pass
    start_response("200 OK", [("Content-Type", "text/plain"), ("Content-Length", "3")])
    return [b"ok\n"]


def both_framings(environ, start_response):
    """Sets Content-Length and Transfer-Encoding (the server must refuse)."""
    start_response("200 OK", [("Content-Length", "2"), ("Transfer-Encoding", "chunked")])
    return [b"ok"]


def unicode_digit_length(environ, start_response):
    """A Content-Length that str.isdigit() accepts but is not 1*DIGIT."""
    start_response("200 OK", [("Content-Length", "\u00b2")])
    return [b"ok"]
