"""A Flask application timed by ``zibrato.integrations.flask.init_app``."""

from __future__ import annotations

import os

from flask import Flask

from zibrato import Zibrato
from zibrato.integrations.flask import init_app

CHUNKS = 3


def make_app(z: Zibrato, **options) -> Flask:
    app = Flask(__name__)

    @app.get("/users/<int:user_id>")
    def user(user_id: int):
        # the worker's pid: the server tests see workers recycled
        return f"user {user_id}", {"X-Worker-Pid": str(os.getpid())}

    @app.get("/stream")
    def stream():
        def chunks():
            for i in range(CHUNKS):
                yield f"chunk {i}\n"

        return app.response_class(chunks(), mimetype="text/plain")

    @app.get("/boom")
    def boom() -> str:
        raise ValueError("the raising route")

    return init_app(app, z, **options)


def create() -> Flask:
    """gunicorn's ``support.webapps.flask_app:create()``: a client from ``$ZIBRATO_PORT``."""
    return make_app(Zibrato())
