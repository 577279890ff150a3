"""Django: a middleware that times every request by its URL pattern.

::

    MIDDLEWARE = ["zibrato.integrations.django.ZibratoMiddleware", ...]   # first: it times the others
    ZIBRATO_CLIENT = "myproject.metrics.z"    # a Zibrato client, or the dotted path to one
    ZIBRATO_LEVEL = "info"                    # optional
    ZIBRATO_ACTIVE_REQUESTS = False           # optional

Without ``ZIBRATO_CLIENT`` the middleware makes a client of its own
(``$ZIBRATO_HOST`` / ``$ZIBRATO_PORT``). The route is
``request.resolver_match.route`` (``users/<int:pk>/``, shown with a leading
``/``; a ``re_path`` pattern as written), known once Django has resolved the
URL; a URL that resolves to nothing has no ``http.route``.

A view's exception is noted by ``process_exception`` and tagged
``error.type`` on the 500 answer Django makes of it; an exception that
reaches this middleware (one raised by a middleware outside Django's
conversion, or re-raised by the test client) is timed and propagates
unchanged. A streaming response is timed to its last chunk: its content is
wrapped, and recorded when exhausted or when Django closes the response.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable, Iterator
from typing import Any

from django.conf import settings
from django.http import HttpRequest, HttpResponseBase
from django.utils.module_loading import import_string

from ..client import Zibrato
from ._http import HttpMetrics, RequestTiming, error_type, method_of

__all__ = ["ZibratoMiddleware"]


def client_from_settings() -> Zibrato:
    client = getattr(settings, "ZIBRATO_CLIENT", None)
    if client is None:
        return Zibrato()
    if isinstance(client, str):
        client = import_string(client)
    if not isinstance(client, Zibrato):
        raise TypeError(f"ZIBRATO_CLIENT must be a Zibrato client or the dotted path to one, got {client!r}")
    return client


class ZibratoMiddleware:
    """Django middleware (synchronous; Django adapts it under ASGI)."""

    sync_capable = True
    async_capable = False

    def __init__(self, get_response: Callable[[HttpRequest], HttpResponseBase]) -> None:
        self.get_response = get_response
        self.metrics = HttpMetrics(
            client_from_settings(),
            getattr(settings, "ZIBRATO_LEVEL", "info"),
            bool(getattr(settings, "ZIBRATO_ACTIVE_REQUESTS", False)),
        )

    def __call__(self, request: HttpRequest) -> HttpResponseBase:
        timing = _DjangoRequest(self.metrics, request)
        request.zibrato_timing = timing  # for process_exception
        try:
            response = self.get_response(request)
        except BaseException as error:
            timing.finish(error)
            raise
        timing.status = response.status_code
        if not response.streaming:
            timing.finish()
        elif getattr(response, "is_async", False):
            response.streaming_content = _timed_async(response.streaming_content, timing)
        else:
            response.streaming_content = _timed(response.streaming_content, timing)
        return response

    def process_exception(self, request: HttpRequest, exception: Exception) -> None:
        timing = getattr(request, "zibrato_timing", None)
        if timing is not None:
            timing.error = error_type(exception)
        return None  # Django's own handling goes on


class _DjangoRequest(RequestTiming):
    __slots__ = ("request",)

    def __init__(self, metrics: HttpMetrics, request: HttpRequest) -> None:
        self.request = request
        super().__init__(metrics, method_of(request.method))

    def resolve_route(self) -> str | None:
        match = getattr(self.request, "resolver_match", None)
        route = getattr(match, "route", None)
        if not route:
            return None
        route = str(route)
        return route if route.startswith(("/", "^")) else "/" + route


def _timed(chunks: Iterator[Any], timing: RequestTiming) -> Iterator[Any]:
    error: BaseException | None = None
    try:
        for chunk in chunks:  # noqa: UP028 - yield from would close the content again after Django did
            yield chunk
    except GeneratorExit:
        raise
    except BaseException as raised:
        error = raised
        raise
    finally:
        timing.finish(error)


async def _timed_async(chunks: AsyncIterator[Any], timing: RequestTiming) -> AsyncIterator[Any]:
    error: BaseException | None = None
    try:
        async for chunk in chunks:
            yield chunk
    except GeneratorExit:
        raise
    except BaseException as raised:
        error = raised
        raise
    finally:
        timing.finish(error)
