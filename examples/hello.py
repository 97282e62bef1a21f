"""A WSGI app with no dependency: /hello answers "Hello, World!".

    python forkserver.py examples.hello:app
"""


def app(environ, start_response):
    if environ["PATH_INFO"] not in ("/", "/hello"):
        body = b"Not Found\n"
        start_response("404 Not Found", [("Content-Type", "text/plain"),
                                         ("Content-Length", str(len(body)))])
        return [body]
    body = b"Hello, World!\n"
    start_response("200 OK", [("Content-Type", "text/plain"),
                              ("Content-Length", str(len(body)))])
    return [body]
