"""The tutorial's Flask app.

    python forkserver.py examples.flaskapp:app

The tutorial's app answers /hello only; this one answers / too, so the
server's default warm-up (GET /) runs the view, as a client's request does,
instead of Flask's not-found path (docs/performance.md, "A warm-up that
answers 404").
"""
from flask import Flask

flask_app = Flask("flaskapp")


@flask_app.route("/")
@flask_app.route("/hello")
def hello_world():
    return "Hello world from Flask!\n"


app = flask_app.wsgi_app
