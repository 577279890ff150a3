"""Starlette and FastAPI: the ASGI middleware with the full route template, mounts included.

::

    from zibrato.integrations.starlette import ZibratoMiddleware
    app.add_middleware(ZibratoMiddleware, z=z)

Starlette's router leaves the matched route in ``scope["route"]`` (FastAPI's
``include_router`` prefixes are already part of its path), which is all the
plain :mod:`zibrato.integrations.asgi` middleware reads. A route inside a
``Mount`` only knows its path below the mount, so when the request went
through one (its ``root_path`` grew), this middleware walks the
application's routes again, as the router did, and joins the templates of
the mounts on the way: ``/api/v1`` + ``/users/{user_id}``, never the raw path.
"""

from __future__ import annotations

from typing import Any

from starlette.routing import Match

from ..client import Zibrato
from . import asgi

__all__ = ["ZibratoMiddleware", "route_template"]

_ENTRY = "zibrato.entry"  # (root_path, application) before any mount: set on the way in


def route_template(scope: asgi.Scope) -> str | None:
    """The matched route's full template, or None when no route matched."""
    matched = scope.get("route")
    if matched is None:
        return asgi.route_from_scope(scope)
    entry_root, entry_app = scope.get(_ENTRY, ("", None))
    if scope.get("root_path", "") == entry_root:
        return str(matched.path)
    return _walk(scope, entry_root, entry_app)


def _walk(scope: asgi.Scope, entry_root: str, app: Any) -> str | None:
    """Match again from the application's routes, joining mount templates (a mounted request only).

    ``app`` is the application the request entered (a mounted Starlette application
    replaces ``scope["app"]`` with itself on the way down)."""
    routes: Any = getattr(app, "routes", None)
    probe: dict[str, Any] = {
        "type": scope["type"],
        "path": scope["path"],
        "root_path": entry_root,
        "method": scope.get("method", "GET"),
        "headers": scope.get("headers", []),
        "path_params": {},
    }
    prefix = ""
    while routes:
        partial = None
        for route in routes:
            match, child = route.matches(probe)
            if match is Match.FULL:
                partial = (route, child)
                break
            if match is Match.PARTIAL and partial is None:
                partial = (route, child)
        if partial is None:
            return None
        route, child = partial
        inner = getattr(route, "routes", None)
        if not inner:
            return prefix + str(route.path)
        prefix += str(route.path)
        probe.update(child)
        routes = inner
    return None


class ZibratoMiddleware(asgi.ZibratoMiddleware):
    """``app.add_middleware(ZibratoMiddleware, z=z)``: the ASGI middleware, routes read from Starlette."""

    def __init__(self, app: asgi.AsgiApp, z: Zibrato, *, level: str = "info", active_requests: bool = False) -> None:
        super().__init__(app, z, level=level, route=route_template, active_requests=active_requests)

    async def __call__(self, scope: asgi.Scope, receive: asgi.Receive, send: asgi.Send) -> None:
        if scope["type"] in ("http", "websocket"):
            # inside Starlette (add_middleware) the scope names the application; around it, self.app is it
            scope[_ENTRY] = (scope.get("root_path", ""), scope.get("app", self.app))
        await super().__call__(scope, receive, send)
