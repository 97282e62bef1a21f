"""A module with both of the names app specs look for: a bare module means
its ``application`` (gunicorn's util.import_app), never its ``app``."""


def application(environ, start_response):
    start_response("200 OK", [("Content-Length", "12")])
    return [b"application\n"]


def app(environ, start_response):
    start_response("200 OK", [("Content-Length", "4")])
    return [b"app\n"]
