"""ASGI middleware: one ``http.server.request.duration`` per HTTP request or WebSocket connection.

::

    from zibrato.integrations.asgi import ZibratoMiddleware
    app = ZibratoMiddleware(app, z)                     # any ASGI 3 application
    app.add_middleware(ZibratoMiddleware, z=z)           # Starlette / FastAPI

HTTP: recorded right after the final ``http.response.body`` (``more_body``
false) has been handed to the server, so a streaming response is timed to
its last chunk; else when the application returns (the client went away
before the end), or raises (recorded with ``error.type``; the exception
propagates unchanged, cancellation included).

WebSocket: one timing per connection, recorded when the application returns,
with method ``GET`` (the handshake's) and status 101 once accepted (403 when
closed before accepting, as servers answer then). Lifespan and any other
scope type pass through untouched.

The route: the ``route=`` hook, given the scope after the application has
matched it; by default ``scope["route"]``'s template (FastAPI's routes put
themselves there) or ``scope["zibrato.route"]``. Starlette without FastAPI:
:mod:`zibrato.integrations.starlette` finds the matched route's template.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

from ._http import Middleware, RequestTiming, method_of

__all__ = ["ZibratoMiddleware", "route_from_scope"]

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
AsgiApp = Callable[[Scope, Receive, Send], Awaitable[None]]
RouteHook = Callable[[Scope], object]

_FINAL_SENDS = frozenset({"http.response.pathsend", "http.response.zerocopysend"})  # extensions: one call


def route_from_scope(scope: Scope) -> str | None:
    """``scope["zibrato.route"]``, else the template of ``scope["route"]`` (its ``path``: Starlette's
    ``/users/{user_id:int}``, FastAPI's ``/users/{user_id}``, a mount's ``/static``)."""
    route = scope.get("zibrato.route")
    if route is not None:
        return str(route)
    matched = scope.get("route")
    if matched is None:
        return None
    template = getattr(matched, "path", None)
    return None if template is None else str(template)


class ZibratoMiddleware(Middleware[AsgiApp, RouteHook]):
    """Time every HTTP request and WebSocket connection of an ASGI application.

    ``route``: a callable given the scope once the application has routed it, returning the
    route template (or None); default :func:`route_from_scope`. ``active_requests=True`` also
    keeps ``http.server.active_requests``.
    """

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        kind = scope["type"]
        if kind == "http":
            await self._http(scope, receive, send)
        elif kind == "websocket":
            await self._websocket(scope, receive, send)
        else:  # lifespan, and scope types yet to come
            await self.app(scope, receive, send)

    async def _http(self, scope: Scope, receive: Receive, send: Send) -> None:
        timing = _AsgiRequest(self, scope, method_of(scope.get("method")))

        async def send_and_note(message: Message) -> None:
            kind = message["type"]
            if kind == "http.response.start":
                timing.status = message["status"]
                await send(message)
            elif (kind == "http.response.body" and not message.get("more_body", False)) or kind in _FINAL_SENDS:
                await send(message)
                timing.finish()  # the last chunk is with the server: the response is done
            else:
                await send(message)

        await self._timed(timing, scope, receive, send_and_note)
        timing.finish()  # no final body: the client went away, or the application sent nothing

    async def _websocket(self, scope: Scope, receive: Receive, send: Send) -> None:
        timing = _AsgiRequest(self, scope, "GET")

        async def send_and_note(message: Message) -> None:
            kind = message["type"]
            if kind == "websocket.accept":
                timing.status = 101
            elif kind == "websocket.close" and timing.status is None:
                timing.status = 403
            elif kind == "websocket.http.response.start":  # the denial-response extension
                timing.status = message["status"]
            await send(message)

        await self._timed(timing, scope, receive, send_and_note)
        timing.finish()

    async def _timed(self, timing: _AsgiRequest, scope: Scope, receive: Receive, send: Send) -> None:
        """Run the application; one that raises is recorded with its error, then re-raised."""
        try:
            await self.app(scope, receive, send)
        except BaseException as error:
            timing.finish(error)
            raise


class _AsgiRequest(RequestTiming):
    __slots__ = ("middleware", "scope")

    def __init__(self, middleware: ZibratoMiddleware, scope: Scope, method: str) -> None:
        self.middleware, self.scope = middleware, scope
        super().__init__(middleware.metrics, method)

    def resolve_route(self) -> str | None:
        hook = self.middleware.route
        if hook is None:
            return route_from_scope(self.scope)
        return self.metrics.call_route_hook(hook, self.scope)
