"""The tutorial's Flask app.

    python forkserver.py examples.flaskapp:app
"""
from flask import Flask

flask_app = Flask("flaskapp")


@flask_app.route("/hello")
def hello_world():
    return "Hello world from Flask!\n"


app = flask_app.wsgi_app
