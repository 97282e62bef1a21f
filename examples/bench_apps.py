"""Apps for scripts/bench.py: the same answers for every server compared.

    hello        dependency-free, Content-Length set (no server has to chunk)
    sleepy       hello, but /sleep?s=N sleeps first: a live child to measure
                 (/sleep?s=N&gc=1 runs a full collection first, as an app
                 that turns the collector back on would)
    flask_app    a Flask hello on every path; /sleep sleeps the same way
    flask_sleepy the same Flask app, under the name --memory uses

Flask is imported only when a Flask app is asked for (PEP 562 module
``__getattr__``), so a server of the hello app carries no Flask in its parent:
fork's cost grows with the parent's size, and the hello runs measure that.
"""
import gc
import time

HELLO_BODY = b"Hello, World!\n"
SLEEP_DEFAULT_SECONDS = 2.0
SLEEP_MAX_SECONDS = 30.0       # bounded: a stray request cannot pin a child


def sleep_seconds(query):
    """?s=N from a query string, bounded; the default when absent or bad."""
    text = query.partition("s=")[2].partition("&")[0]
    try:
        return min(max(float(text), 0.0), SLEEP_MAX_SECONDS)
    except ValueError:
        return SLEEP_DEFAULT_SECONDS


def hello(environ, start_response):
    start_response("200 OK", [("Content-Type", "text/plain"),
                              ("Content-Length", str(len(HELLO_BODY)))])
    return [HELLO_BODY]


def sleep_view(query):
    if "gc=1" in query.split("&"):
        gc.collect()
    time.sleep(sleep_seconds(query))


def sleepy(environ, start_response):
    if environ["PATH_INFO"] == "/sleep":
        sleep_view(environ.get("QUERY_STRING", ""))
    return hello(environ, start_response)


def make_flask_app():
    from flask import Flask, request

    app = Flask("bench_apps")

    @app.route("/sleep")
    def flask_sleep():
        sleep_view(request.query_string.decode("latin-1"))
        return "Hello, World!\n"

    @app.route("/", defaults={"path": ""})
    @app.route("/<path:path>")
    def flask_hello(path):
        return "Hello, World!\n"
    return app.wsgi_app


def __getattr__(name):
    if name in ("flask_app", "flask_sleepy"):
        app = globals().get("_flask_wsgi_app") or make_flask_app()
        globals()["_flask_wsgi_app"] = app
        return app
    raise AttributeError("module %r has no attribute %r" % (__name__, name))
