"""A small but real Flask application for rgun's tests: JSON in and out,
forms, multipart uploads, a session kept in a signed cookie, a streamed
response, error handlers, a file sent with send_file, and a process pool
(multiprocessing needs a real Python interpreter, not rgun's binary).

Served through its factory, as `rgun 'flaskapp:create_app()'`, from a
virtualenv (VIRTUAL_ENV) that has Flask; tests/integration/wsgi_flask.rs
drives it.
"""
import hashlib
import os
import sys

import flask
import markupsafe
from flask import Flask, jsonify, request, session, stream_with_context
from werkzeug.exceptions import HTTPException

HERE = os.path.dirname(os.path.abspath(__file__))


class Teapot(Exception):
    """An application error with its own handler."""


def _cube(x):
    return x * x * x


def create_app(name="flaskapp"):
    app = Flask(name)
    app.config["SECRET_KEY"] = "rgun-tests-only"

    @app.get("/")
    def index():
        return "Hello from Flask"

    @app.get("/about")
    def about():
        return jsonify(
            flask_file=flask.__file__,
            prefix=sys.prefix,
            executable=sys.executable,
            markupsafe=markupsafe._escape_inner.__module__,
            escaped=str(markupsafe.escape("<b>&</b>")),
        )

    @app.post("/json")
    def json_echo():
        data = request.get_json()
        return jsonify(received=data, total=sum(data.get("numbers", [])))

    @app.post("/form")
    def form():
        return jsonify(form=request.form.to_dict(flat=False))

    @app.post("/upload")
    def upload():
        files = {}
        for field, storage in request.files.items():
            content = storage.read()
            files[field] = {
                "filename": storage.filename,
                "content_type": storage.mimetype,
                "size": len(content),
                "sha256": hashlib.sha256(content).hexdigest(),
            }
        return jsonify(files=files, form=request.form.to_dict())

    @app.get("/session/set")
    def session_set():
        for key, value in request.args.items():
            session[key] = value
        return jsonify(stored=sorted(request.args))

    @app.get("/session")
    def session_get():
        return jsonify(dict(session))

    @app.get("/stream")
    def stream():
        count = int(request.args.get("n", "3"))

        @stream_with_context
        def lines():
            for i in range(count):
                yield "line %d of %s\n" % (i, request.path)

        return app.response_class(lines(), mimetype="text/plain")

    @app.get("/teapot")
    def teapot():
        raise Teapot("short and stout")

    @app.get("/boom")
    def boom():
        return str(1 // int(request.args.get("d", "0")))

    @app.get("/file")
    def file():
        return flask.send_file(os.path.join(HERE, "static.txt"), mimetype="text/plain")

    @app.get("/pool")
    def pool():
        import multiprocessing
        with multiprocessing.get_context("spawn").Pool(1) as workers:
            cube = workers.apply(_cube, (3,))
            child = workers.apply(os.getpid)
        return jsonify(cube=cube, child=child, parent=os.getpid())

    @app.errorhandler(Teapot)
    def handle_teapot(error):
        return jsonify(error="teapot", detail=str(error)), 418

    @app.errorhandler(404)
    def not_found(error):
        return jsonify(error="not found", path=request.path), 404

    @app.errorhandler(HTTPException)
    def http_error(error):
        return jsonify(error=error.name), error.code

    return app
