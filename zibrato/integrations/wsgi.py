"""WSGI middleware: one ``http.server.request.duration`` per request, timed to the last chunk.

::

    from zibrato.integrations.wsgi import ZibratoMiddleware
    application = ZibratoMiddleware(application, z, route=lambda environ: environ.get("myapp.route"))

The response iterable is wrapped, and the request is recorded when the
server calls its ``close()`` (PEP 3333 says every server does, after the
last chunk, after an error, and when the client went away): a streaming
response is timed to its end, not to its first byte. An exception from the
application, raised by the call or while iterating, is recorded with
``error.type`` and propagates unchanged.

The route: ``environ["zibrato.route"]`` when a framework integration has put
it there (Flask's does), else what the ``route=`` hook returns when given the
environ, asked after the application ran. Without either, no ``http.route``:
the raw path is never a tag.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from typing import Any

from ._http import Middleware, RequestTiming, method_of

__all__ = ["ZibratoMiddleware", "ROUTE_KEY", "ERROR_KEY"]

#: where a framework integration leaves the matched route template in the environ
ROUTE_KEY = "zibrato.route"
#: where it leaves the class name of an exception the framework handled itself (Flask's 500 page)
ERROR_KEY = "zibrato.error_type"

Environ = dict[str, Any]
StartResponse = Callable[..., Any]
WsgiApp = Callable[[Environ, StartResponse], Iterable[bytes]]
RouteHook = Callable[[Environ], object]

_statuses: dict[str, int] = {}  # "200 OK" -> 200: parsed once per distinct status line


def status_code(status: str) -> int | None:
    try:
        return _statuses[status]
    except KeyError:
        pass
    try:
        code = int(status.split(None, 1)[0])
    except (ValueError, IndexError, AttributeError):
        return None
    if len(_statuses) < 1000:
        _statuses[status] = code
    return code


class ZibratoMiddleware(Middleware[WsgiApp, RouteHook]):
    """Time every request of a WSGI application (``level``: the Zibrato level recorded at).

    ``route``: a callable given the environ after the application ran, returning the
    route template (or None). ``active_requests=True`` also keeps ``http.server.active_requests``.
    """

    def __call__(self, environ: Environ, start_response: StartResponse) -> Iterable[bytes]:
        timed = TimedResponse(self, environ, start_response)
        try:
            timed.body = self.app(environ, timed.start_response)
        except BaseException as error:
            timed.finish(error)
            raise
        return timed


class TimedResponse(RequestTiming):
    """One request: the start_response that notes the status, and the response iterable that
    records the request when the server closes it (one object per request, nothing more)."""

    __slots__ = ("middleware", "environ", "body", "_start_response")

    def __init__(self, middleware: ZibratoMiddleware, environ: Environ, start_response: StartResponse) -> None:
        self.middleware, self.environ, self._start_response = middleware, environ, start_response
        self.body: Iterable[bytes] = ()
        super().__init__(middleware.metrics, method_of(environ.get("REQUEST_METHOD")))

    def start_response(self, status: str, headers: list[tuple[str, str]], *exc_info: Any) -> Any:
        self.status = status_code(status)
        return self._start_response(status, headers, *exc_info)

    def __iter__(self) -> Iterator[bytes]:
        # a for loop, not ``yield from``: when the server stops early and drops this generator,
        # the application's iterator must be closed once, by close(), not again by the generator
        try:
            for chunk in self.body:  # noqa: UP028 - see above: yield from would close it twice
                yield chunk
        except BaseException as error:
            if not isinstance(error, GeneratorExit):  # GeneratorExit: the server stopped early (close())
                self.finish(error)
            raise

    def close(self) -> None:
        try:
            close = getattr(self.body, "close", None)
            if close is not None:
                close()
        except BaseException as error:
            self.finish(error)
            raise
        finally:
            self.finish()

    def resolve_route(self) -> str | None:
        environ = self.environ
        if self.error is None:
            handled = environ.get(ERROR_KEY)
            if handled is not None:
                self.error = handled  # the class name a framework integration noted (Flask's 500 page)
        route = environ.get(ROUTE_KEY)
        if route is not None:
            return str(route)
        hook = self.middleware.route
        return None if hook is None else self.metrics.call_route_hook(hook, environ)
