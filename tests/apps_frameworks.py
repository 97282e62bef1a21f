"""Flask and Pyramid apps for tests/test_frameworks.py, which serves each with
forkserver and with gunicorn and compares the answers.  Each route is named by
what it exercises; nothing here depends on which server runs it."""
import hashlib
import os

from flask import Flask, redirect, request, send_file, session, stream_with_context, url_for
from pyramid.config import Configurator
from pyramid.httpexceptions import HTTPFound
from pyramid.response import Response

# The file /file serves: the test writes it (fixed bytes, fixed mtime) and
# names it in this variable for both servers, so both send the same ETag and
# Last-Modified.
SEND_FILE_ENV = "FORKSERVER_TEST_SEND_FILE"

# ------------------------------------------------------------------ Flask

flask_app = Flask("apps_frameworks")
flask_app.config["SECRET_KEY"] = "forkserver-tests-not-secret"


@flask_app.route("/session")
def session_counter():
    """Counts this client's visits in Flask's signed session cookie."""
    session["count"] = session.get("count", 0) + 1
    return "visit %d\n" % session["count"]


@flask_app.route("/form", methods=["POST"])
def form_echo():
    """The urlencoded form's fields, sorted, one per line."""
    fields = sorted(request.form.items(multi=True))
    return "".join("%s=%s\n" % item for item in fields)


@flask_app.route("/upload", methods=["POST"])
def upload():
    """The multipart upload's file: field, name, size, sha256; then the text fields."""
    lines = []
    for field, storage in sorted(request.files.items(multi=True)):
        data = storage.read()
        lines.append("%s %s %d %s" % (field, storage.filename, len(data),
                                      hashlib.sha256(data).hexdigest()))
    lines += ["%s=%s" % item for item in sorted(request.form.items(multi=True))]
    return "\n".join(lines) + "\n"


@flask_app.route("/file")
def file_download():
    """send_file with conditional=True: Range (206/416), ETag and
    Last-Modified (304)."""
    return send_file(os.environ[SEND_FILE_ENV], mimetype="application/octet-stream",
                     conditional=True)


@flask_app.route("/stream")
def stream():
    """A generator under stream_with_context: no Content-Length from the app."""
    count = int(request.args.get("n", "3"))

    def lines():
        for number in range(count):
            yield "line %d of %s\n" % (number, request.path)

    return flask_app.response_class(stream_with_context(lines()), mimetype="text/plain")


@flask_app.route("/old")
def old_place():
    return redirect(url_for("session_counter"))


@flask_app.route("/boom")
def boom():
    raise RuntimeError("the Flask test view raised")


@flask_app.errorhandler(404)
def not_found(error):
    return "no page at %s\n" % request.path, 404


@flask_app.errorhandler(500)
def server_error(error):
    return "the Flask app's own 500 page\n", 500


# ------------------------------------------------------------------ Pyramid

def pyramid_visits(request):
    """Counts visits in a plain cookie the client sends back."""
    count = int(request.cookies.get("visits", "0")) + 1
    response = Response("visit %d\n" % count, content_type="text/plain")
    response.set_cookie("visits", str(count), max_age=3600, httponly=True, samesite="Lax")
    return response


def pyramid_post(request):
    """Echoes the POSTed fields and the cookies sent; sets a cookie."""
    fields = sorted(request.POST.items())
    cookies = sorted(request.cookies.items())
    body = "".join("%s=%s\n" % item for item in fields)
    body += "".join("cookie %s=%s\n" % item for item in cookies)
    response = Response(body, content_type="text/plain")
    response.set_cookie("posted", "yes", path="/")
    return response


def pyramid_post_redirect(request):
    """POST-redirect-GET with an absolute URL built from the request's Host."""
    return HTTPFound(location=request.route_url("visits"))


def make_pyramid_app():
    config = Configurator()
    config.add_route("visits", "/visits")
    config.add_view(pyramid_visits, route_name="visits")
    config.add_route("post", "/post")
    config.add_view(pyramid_post, route_name="post", request_method="POST")
    config.add_route("post_redirect", "/post-redirect")
    config.add_view(pyramid_post_redirect, route_name="post_redirect", request_method="POST")
    return config.make_wsgi_app()


pyramid_app = make_pyramid_app()


def debugged(evalex):
    """A Flask app as a developer wraps it for werkzeug's debugger."""
    from werkzeug.debug import DebuggedApplication
    app = Flask("apps_frameworks_debugged")
    app.add_url_rule("/", "index", lambda: "ok")
    app.wsgi_app = DebuggedApplication(app.wsgi_app, evalex=evalex)
    return app
