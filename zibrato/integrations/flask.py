"""Flask: ``init_app(app, z)`` times every request by its URL rule.

::

    from zibrato.integrations.flask import init_app
    init_app(app, z)

It wraps ``app.wsgi_app`` in :class:`zibrato.integrations.wsgi.ZibratoMiddleware`
(so a streaming response is timed to its last chunk) and listens to two of
Flask's signals: ``request_started`` leaves ``request.url_rule.rule``
(``/users/<int:user_id>``, the template, never the path) in the environ for
the middleware, and ``got_request_exception`` leaves the class name of an
exception Flask turned into its 500 page, so that the answer is tagged
``error.type:ValueError`` rather than ``500``. An exception Flask lets
through (``PROPAGATE_EXCEPTIONS``, testing) propagates unchanged, timed.
A URL that matches no rule (404, 405) has no ``http.route``.
"""

from __future__ import annotations

from typing import Any

from flask import Flask, got_request_exception, request, request_started

from ..client import Zibrato
from ._http import error_type
from .wsgi import ERROR_KEY, ROUTE_KEY, ZibratoMiddleware

__all__ = ["init_app"]


def init_app(app: Flask, z: Zibrato, *, level: str = "info", active_requests: bool = False) -> Flask:
    """Time every request of ``app`` through ``z`` (at ``level``); returns the app."""
    app.wsgi_app = ZibratoMiddleware(  # type: ignore[method-assign]
        app.wsgi_app, z, level=level, active_requests=active_requests
    )
    request_started.connect(_note_route, app)
    got_request_exception.connect(_note_error, app)
    return app


def _note_route(sender: Flask, **extra: Any) -> None:
    rule = request.url_rule
    if rule is not None:
        request.environ[ROUTE_KEY] = rule.rule


def _note_error(sender: Flask, exception: BaseException | None = None, **extra: Any) -> None:
    if exception is not None:
        request.environ[ERROR_KEY] = error_type(exception)
