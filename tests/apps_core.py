"""More WSGI apps for the core end-to-end and CLI tests, named by behaviour."""
import hashlib
import json

READ_BYTES = 64 * 1024


def _reply(start_response, body, ctype="text/plain"):
    start_response("200 OK", [("Content-Type", ctype), ("Content-Length", str(len(body)))])
    return [body]


def environ_json(environ, start_response):
    """The environ's string values as JSON; native strings sent as latin-1 code points."""
    data = {k: v for k, v in environ.items() if isinstance(v, (str, bool, int))}
    data["wsgi.version"] = list(environ["wsgi.version"])
    return _reply(start_response, json.dumps(data, sort_keys=True).encode(), "application/json")


def digest(environ, start_response):
    """Streams the body through sha256 with read(n): answers `LENGTH SHA256`."""
    stream, sha, total = environ["wsgi.input"], hashlib.sha256(), 0
    while True:
        data = stream.read(READ_BYTES)
        if not data:
            break
        sha.update(data)
        total += len(data)
    return _reply(start_response, ("%d %s" % (total, sha.hexdigest())).encode())


def echo_lines(environ, start_response):
    """Iterates wsgi.input line by line and echoes the lines back, streamed."""
    start_response("200 OK", [("Content-Type", "text/plain")])
    return (line for line in environ["wsgi.input"])


def create_app():
    """An app factory, for MODULE:factory()."""
    def app(environ, start_response):
        return _reply(start_response, b"made by the factory\n")
    return app


not_callable = {"this is": "not an app"}


async def asgi_function(scope, receive, send):
    """An ASGI app, as a function (what FastAPI's docs call a raw ASGI app)."""


class AsgiHandler:
    """An ASGI app as Django's asgi.py and Starlette make one: an instance
    whose __call__ is an ``async def``."""

    async def __call__(self, scope, receive, send):
        pass


asgi_instance = AsgiHandler()
