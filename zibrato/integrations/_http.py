"""What every HTTP integration records, and how it keeps a request cheap.

One timer, ``http.server.request.duration`` (seconds), per request, tagged
as the OpenTelemetry HTTP server conventions say: ``http.request.method``
(a method outside RFC 9110's nine and PATCH becomes ``_OTHER``, so that a
scanner's random verbs cannot grow the series), ``http.response.status_code``
(the one sent; 500 when the application raised before starting a response,
as every server then answers), ``http.route`` (the framework's template,
never the raw path) and ``error.type`` (the exception's class name, or the
status code of a 5xx answer). Optionally ``http.server.active_requests``:
the conventions' up-down counter, sent as counter deltas of +1 and -1 so
that every worker process adds into one series (a per-process gauge would
be overwritten by whichever worker flushed last).

The tag tuples are built once per (method, status, route, error) and kept:
a request then costs one dict lookup for its tags and one call of the
client's public ``timing``, whose own series cache takes the tuple as is.
"""

from __future__ import annotations

import logging
import re
import time
from collections.abc import Callable
from typing import Any, Generic, TypeVar

from ..client import Zibrato
from ..protocol import MAX_TAG_LENGTH, TIMER

__all__ = ["DURATION", "ACTIVE_REQUESTS", "KNOWN_METHODS", "HttpMetrics", "Middleware", "RequestTiming", "fit_tag"]

log = logging.getLogger("zibrato.integrations")

DURATION = "http.server.request.duration"
ACTIVE_REQUESTS = "http.server.active_requests"
#: RFC 9110's methods and PATCH (RFC 5789): the conventions' known set; anything else is _OTHER
KNOWN_METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "DELETE", "CONNECT", "OPTIONS", "TRACE", "PATCH"})
OTHER_METHOD = "_OTHER"
#: distinct (method, status, route, error) tag tuples kept before the cache starts over
_MAX_CACHED = 10_000
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")

perf_counter = time.perf_counter


def method_of(method: object) -> str:
    """The method as the conventions name it: known ones as sent (case-sensitive), else ``_OTHER``."""
    return method if isinstance(method, str) and method in KNOWN_METHODS else OTHER_METHOD


def fit_tag(key: str, value: object) -> str:
    """``key:value`` within the client's tag rule: control characters become ``_``, and a value too
    long for 255 characters is cut (a route template that long is a bug, not a reason to drop the request).

    Every other character is allowed in a tag value: ``http.route:/users/{id}`` and Flask's
    ``/users/<int:id>`` go through as they are (destinations split a tag at its first ``:``).
    """
    text = _CONTROL.sub("_", str(value))
    return f"{key}:{text}"[:MAX_TAG_LENGTH]


def error_type(error: BaseException) -> str:
    """The exception's class name, as OpenTelemetry's Python instrumentations report it."""
    return type(error).__qualname__


class HttpMetrics:
    """The recording side shared by the WSGI, ASGI and framework middleware."""

    def __init__(self, z: Zibrato, level: str = "info", active_requests: bool = False) -> None:
        z.series(level, TIMER, DURATION)  # a bad level raises here, when the middleware is made
        self.z, self.level = z, level
        self.active_requests = active_requests
        self._timing = z.timing
        self._tags: dict[tuple[str, int | None, str | None, str | None], tuple[str, ...]] = {}
        self._active_tags: dict[str, tuple[str, ...]] = {}
        self._route_failures = 0

    def tags(self, method: str, status: int | None, route: str | None, error: str | None) -> tuple[str, ...]:
        """The sorted tag tuple for one outcome, built once."""
        key = (method, status, route, error)
        try:
            return self._tags[key]
        except KeyError:
            pass
        if error is None and status is not None and status >= 500:
            error = str(status)  # the conventions' error.type for a server error answered without an exception
        tags = [fit_tag("http.request.method", method)]
        if status is not None:
            tags.append(f"http.response.status_code:{status}")
        if route:
            tags.append(fit_tag("http.route", route))
        if error is not None:
            tags.append(fit_tag("error.type", error))
        if len(self._tags) >= _MAX_CACHED:
            self._tags.clear()
        self._tags[key] = built = tuple(sorted(tags))
        return built

    def record(self, seconds: float, method: str, status: int | None, route: str | None, error: str | None) -> None:
        self._timing(
            self.level, DURATION, seconds if seconds > 0 else 0.0, tags=self.tags(method, status, route, error)
        )

    def started(self, method: str) -> None:
        """One more request in flight (when ``active_requests`` is on)."""
        self.z.count(self.level, ACTIVE_REQUESTS, 1, tags=self._active(method))

    def ended(self, method: str) -> None:
        self.z.count(self.level, ACTIVE_REQUESTS, -1, tags=self._active(method))

    def _active(self, method: str) -> tuple[str, ...]:
        try:
            return self._active_tags[method]
        except KeyError:
            self._active_tags[method] = tags = (f"http.request.method:{method}",)
            return tags

    def call_route_hook(self, hook: Callable[[Any], object], request: Any) -> str | None:
        """A user's ``route=`` hook: what it returns (None: no route); if it raises, no route, logged once."""
        try:
            route = hook(request)
        except Exception:
            self._route_failures += 1
            if self._route_failures == 1:
                log.exception("zibrato: the route= hook raised; requests are timed without http.route")
            return None
        return None if route is None else str(route)


class RequestTiming:
    """One request being timed: what is known of it so far, recorded once by :meth:`finish`.

    A subclass says where the route comes from with :meth:`resolve_route`, asked at the end:
    frameworks match the route while the request runs, not before.
    """

    __slots__ = ("metrics", "method", "start", "status", "error", "route", "done")

    def __init__(self, metrics: HttpMetrics, method: str) -> None:
        self.metrics, self.method = metrics, method
        self.status: int | None = None
        self.error: str | None = None
        self.route: str | None = None
        self.done = False
        if metrics.active_requests:
            metrics.started(method)
        self.start = perf_counter()

    def finish(self, error: BaseException | None = None) -> bool:
        """Record the request (first call only); returns whether this call recorded it."""
        if self.done:
            return False
        self.done = True
        seconds = perf_counter() - self.start
        if error is not None:
            if self.error is None:
                self.error = error_type(error)
            if self.status is None:
                self.status = 500  # what the server (or the framework's outermost layer) answers then
        if self.route is None:
            self.route = self.resolve_route()
        metrics = self.metrics
        key = (self.method, self.status, self.route, self.error)
        tags = metrics._tags.get(key) or metrics.tags(*key)  # the cache lookup inlined: once per request
        metrics._timing(metrics.level, DURATION, seconds if seconds > 0 else 0.0, tags=tags)
        if metrics.active_requests:
            metrics.ended(self.method)
        return True

    def resolve_route(self) -> str | None:
        """The route template once the framework has matched it (None: not known)."""
        return None


App = TypeVar("App")
Hook = TypeVar("Hook")


class Middleware(Generic[App, Hook]):
    """What the WSGI and the ASGI middleware hold: the application they wrap, the metrics
    they record (``level``, ``active_requests``) and the ``route`` hook a request asks at its end."""

    def __init__(
        self,
        app: App,
        z: Zibrato,
        *,
        level: str = "info",
        route: Hook | None = None,
        active_requests: bool = False,
    ) -> None:
        self.app = app
        self.metrics = HttpMetrics(z, level, active_requests)
        self.route = route
