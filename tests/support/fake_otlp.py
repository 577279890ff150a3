"""A local OTLP/HTTP metrics receiver that enforces the specification, for tests.

It decodes each ``POST /v1/metrics`` with the official protobuf definitions
(``opentelemetry-proto``) and checks what the OTLP specification and the
metrics data model require, so that an exporter that breaks a rule fails its
tests (as tests/support/fake_librato.py does for Librato):

* transport: ``Content-Type: application/x-protobuf``, ``Content-Encoding``
  absent or ``gzip`` (415 otherwise), a body that decodes (400);
* resource: a ``service.name`` string attribute; scope: a name;
* every metric: a name and exactly one kind of data, at least one point;
* attributes: non-empty, unique keys; a value of a scalar type
  (string, bool, int, double), doubles finite;
* timestamps: ``time_unix_nano`` set; for sums and histograms also
  ``start_time_unix_nano``, not after ``time_unix_nano``; a DELTA stream's
  intervals never overlap the ones received before; a CUMULATIVE stream keeps
  its start time, and a monotonic one never decreases (a new start time is a
  reset); one stream appears at most once per request;
* Sum and ExponentialHistogram: temporality set (not UNSPECIFIED); monotonic
  DELTA sums are not negative;
* ExponentialHistogram buckets: scale in [-10, 20], ``count == zero_count +
  sum(positive) + sum(negative)``, and ``min``/``max`` inside the lowest and
  highest populated buckets (which checks the index convention: bucket ``i``
  holds ``(base**i, base**(i+1)]``);
* Summary: quantiles in [0, 1], ascending, values not decreasing.

A violation answers 400 with a ``google.rpc.Status`` whose message names it,
stores nothing, and is kept in :attr:`FakeOtlp.violations` (tests assert it
stays empty). Failures can be scripted (:meth:`FakeOtlp.script`): a status
with a ``Retry-After``, a rejection with a message, or a partial success.
"""

from __future__ import annotations

import gzip
import math
import ssl
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from google.protobuf.message import DecodeError
from opentelemetry.proto.collector.metrics.v1.metrics_service_pb2 import (
    ExportMetricsServiceRequest,
    ExportMetricsServiceResponse,
)
from opentelemetry.proto.metrics.v1 import metrics_pb2 as pb

from zibrato.backends.otlp import _Status

__all__ = ["FakeOtlp", "Fail", "Partial", "status_message"]

PATH = "/v1/metrics"
PROTOBUF = "application/x-protobuf"
DELTA, CUMULATIVE = pb.AGGREGATION_TEMPORALITY_DELTA, pb.AGGREGATION_TEMPORALITY_CUMULATIVE
_TOLERANCE = 1e-9


Status = _Status  # google.rpc.Status as zibrato.backends.otlp defines it (not in opentelemetry-proto)


def status_message(body: bytes) -> str:
    """The message of a google.rpc.Status body (what the exporter should log)."""
    status = Status()
    status.ParseFromString(body)
    return status.message


@dataclass
class Fail:
    """Answer the next request with ``status`` (and ``Retry-After`` seconds), storing nothing."""

    status: int
    message: str = "scripted failure"
    retry_after: float | None = None


@dataclass
class Partial:
    """Accept the next request but report ``rejected`` data points as refused."""

    rejected: int
    message: str = "scripted partial success"


class Violation(Exception):
    """The request breaks a rule of the specification."""


@dataclass
class Point:
    """One received data point, flattened for assertions."""

    metric: str
    kind: str
    unit: str
    attributes: dict
    start: int
    time: int
    temporality: int = 0
    monotonic: bool = False
    value: float | int | None = None
    proto: object = None
    resource: dict = field(default_factory=dict)
    scope: tuple = ("", "")


class FakeOtlp:
    """``with FakeOtlp() as otlp: ... otlp.url ...``: an OTLP/HTTP receiver on 127.0.0.1."""

    def __init__(
        self,
        max_points: int | None = None,
        tls: tuple[str, str] | None = None,
        required_headers: dict[str, str] | None = None,
    ) -> None:
        self.max_points = max_points
        self.required_headers = dict(required_headers or {})
        self.requests: list[ExportMetricsServiceRequest] = []
        self.headers: list[dict] = []  # of every request that reached the handler
        self.attempts: list[float] = []  # monotonic arrival time of every POST
        self.violations: list[str] = []
        self._script: list[Fail | Partial | None] = []
        self._outage: Fail | None = None
        self._streams: dict[tuple, tuple[int, int, float]] = {}  # stream -> (start, time, value)
        self._cond = threading.Condition()
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), self._handler_class())
        self._server.daemon_threads = True
        self.scheme = "http"
        if tls:
            context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
            context.load_cert_chain(*tls)
            self._server.socket = context.wrap_socket(self._server.socket, server_side=True)
            self.scheme = "https"
        # shutdown() waits up to one poll interval: the default 0.5 s was each test's tear-down
        self._thread = threading.Thread(target=self._server.serve_forever, kwargs={"poll_interval": 0.01}, daemon=True)

    # --- life -----------------------------------------------------------------

    def __enter__(self) -> FakeOtlp:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._server.shutdown()
        self._server.server_close()

    @property
    def endpoint(self) -> str:
        """The base endpoint, as OTEL_EXPORTER_OTLP_ENDPOINT takes it."""
        return f"{self.scheme}://127.0.0.1:{self._server.server_address[1]}"

    @property
    def url(self) -> str:
        return self.endpoint + PATH

    def fail_until_cleared(self, failure: Fail) -> None:
        """Answer every request with ``failure`` (an outage) until :meth:`clear_failure`."""
        with self._cond:
            self._outage = failure

    def clear_failure(self) -> None:
        with self._cond:
            self._outage = None

    def script(self, *responses: Fail | Partial | None) -> None:
        """Answer the next requests with these, in order (None: accept as usual); then accept again."""
        with self._cond:
            self._script.extend(responses)

    # --- reading what arrived ----------------------------------------------------

    def points(self, metric: str | None = None) -> list[Point]:
        with self._cond:
            requests = list(self.requests)
        return [p for request in requests for p in flatten(request) if metric in (None, p.metric)]

    def wait_for(self, predicate: Callable[[], object], timeout: float = 10.0) -> object:
        """Wait until ``predicate()`` is truthy (re-checked at each request); fail after ``timeout``."""
        deadline = time.monotonic() + timeout
        with self._cond:
            while True:
                value = predicate()
                if value:
                    return value
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    raise AssertionError(
                        f"timed out after {timeout} s; violations: {self.violations}; "
                        f"{len(self.requests)} requests accepted"
                    )
                self._cond.wait(min(remaining, 0.1))

    # --- the server -----------------------------------------------------------------

    def _handler_class(self):
        fake = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args: object) -> None:  # quiet
                pass

            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
                status, headers, payload = fake._answer(self.path, dict(self.headers), body)
                self.send_response(status)
                self.send_header("Content-Type", PROTOBUF)
                self.send_header("Content-Length", str(len(payload)))
                for name, value in headers:
                    self.send_header(name, value)
                self.end_headers()
                self.wfile.write(payload)

            def do_GET(self) -> None:
                self.send_response(405)
                self.send_header("Content-Length", "0")
                self.end_headers()

        return Handler

    def _answer(self, path: str, headers: dict, body: bytes) -> tuple[int, list, bytes]:
        with self._cond:
            self.attempts.append(time.monotonic())
            self.headers.append(headers)
            try:
                return self._handle(path, headers, body)
            finally:
                self._cond.notify_all()

    def _handle(self, path: str, headers: dict, body: bytes) -> tuple[int, list, bytes]:
        if path != PATH:
            return _error(404, f"no such path {path}")
        for name, value in self.required_headers.items():
            if headers.get(name) != value:
                return _error(401, f"missing or wrong header {name}")
        if headers.get("Content-Type") != PROTOBUF:
            return _error(415, f"Content-Type must be {PROTOBUF}")
        encoding = headers.get("Content-Encoding")
        if encoding not in (None, "gzip"):
            return _error(415, f"unsupported Content-Encoding {encoding}")
        if self._outage is not None:
            return _error(self._outage.status, self._outage.message)
        if self._script:
            scripted = self._script.pop(0)
            if isinstance(scripted, Fail):
                extra = [("Retry-After", f"{scripted.retry_after:g}")] if scripted.retry_after is not None else []
                return _error(scripted.status, scripted.message, extra)
        else:
            scripted = None
        try:
            request = ExportMetricsServiceRequest()
            request.ParseFromString(gzip.decompress(body) if encoding == "gzip" else body)
            streams = self._check(request)
        except (DecodeError, OSError, EOFError) as error:
            return self._violation(f"undecodable body: {error}")
        except Violation as violation:
            return self._violation(str(violation))
        self._streams.update(streams)
        self.requests.append(request)
        response = ExportMetricsServiceResponse()
        if isinstance(scripted, Partial):
            response.partial_success.rejected_data_points = scripted.rejected
            response.partial_success.error_message = scripted.message
        return 200, [], response.SerializeToString()

    def _violation(self, message: str) -> tuple[int, list, bytes]:
        self.violations.append(message)
        return _error(400, message)

    # --- the rules --------------------------------------------------------------------

    def _check(self, request: ExportMetricsServiceRequest) -> dict:
        if not request.resource_metrics:
            raise Violation("empty request: no resource_metrics")
        total = 0
        streams: dict[tuple, tuple[int, int, float]] = {}
        for rm in request.resource_metrics:
            resource = _check_attributes(rm.resource.attributes, "resource")
            if not isinstance(resource.get("service.name"), str) or not resource["service.name"]:
                raise Violation("resource without a service.name string attribute")
            for sm in rm.scope_metrics:
                if not sm.scope.name:
                    raise Violation("scope without a name")
                for metric in sm.metrics:
                    total += self._check_metric(metric, streams)
        if self.max_points is not None and total > self.max_points:
            raise Violation(f"{total} data points in one request, more than {self.max_points}")
        return streams

    def _check_metric(self, metric: pb.Metric, streams: dict) -> int:
        if not metric.name:
            raise Violation("metric without a name")
        kind = metric.WhichOneof("data")
        if kind is None:
            raise Violation(f"metric {metric.name}: no data")
        data = getattr(metric, kind)
        if not data.data_points:
            raise Violation(f"metric {metric.name}: no data points")
        temporality = getattr(data, "aggregation_temporality", None)
        if kind in ("sum", "histogram", "exponential_histogram") and temporality not in (DELTA, CUMULATIVE):
            raise Violation(f"metric {metric.name}: aggregation temporality unspecified")
        monotonic = kind == "sum" and data.is_monotonic
        for point in data.data_points:
            where = f"metric {metric.name}"
            attributes = _check_attributes(point.attributes, where)
            if not point.time_unix_nano:
                raise Violation(f"{where}: time_unix_nano not set")
            if kind != "gauge":
                if not point.start_time_unix_nano:
                    raise Violation(f"{where}: start_time_unix_nano not set")
            if point.start_time_unix_nano > point.time_unix_nano:
                raise Violation(f"{where}: start_time_unix_nano after time_unix_nano")
            value = _check_value(point, kind, where, monotonic and temporality == DELTA)
            stream = (metric.name, kind, tuple(sorted(attributes.items())))
            if stream in streams:
                raise Violation(f"{where}: stream {dict(stream[2])} twice in one request")
            if kind != "gauge":
                self._check_stream(stream, point, temporality, value, monotonic, where)
            streams[stream] = (point.start_time_unix_nano, point.time_unix_nano, value)
        return len(data.data_points)

    def _check_stream(self, stream: tuple, point, temporality: int, value: float, monotonic: bool, where: str) -> None:
        previous = self._streams.get(stream)
        if previous is None:
            return
        start, end, before = previous
        if temporality == DELTA or temporality is None:
            if point.start_time_unix_nano < end:
                raise Violation(
                    f"{where}: delta interval starting {point.start_time_unix_nano} overlaps "
                    f"the previous one ending {end}"
                )
        elif point.start_time_unix_nano == start:
            if point.time_unix_nano <= end:
                raise Violation(f"{where}: cumulative point not after the previous one")
            if monotonic and value < before:
                raise Violation(f"{where}: monotonic cumulative sum decreased from {before} to {value}")
        elif point.start_time_unix_nano < end:
            raise Violation(
                f"{where}: cumulative stream restarted at {point.start_time_unix_nano}, "
                f"before its previous point at {end}"
            )


def _error(status: int, message: str, headers: list | None = None) -> tuple[int, list, bytes]:
    return status, headers or [], Status(code=status, message=message).SerializeToString()


def _any_value(value, where: str):
    kind = value.WhichOneof("value")
    if kind not in ("string_value", "bool_value", "int_value", "double_value"):
        raise Violation(f"{where}: attribute value of type {kind} (expected a scalar)")
    result = getattr(value, kind)
    if kind == "double_value" and not math.isfinite(result):
        raise Violation(f"{where}: non-finite attribute value")
    return result


def _check_attributes(attributes, where: str) -> dict:
    result = {}
    for kv in attributes:
        if not kv.key:
            raise Violation(f"{where}: attribute with an empty key")
        if kv.key in result:
            raise Violation(f"{where}: attribute key {kv.key!r} repeated")
        result[kv.key] = _any_value(kv.value, f"{where} attribute {kv.key}")
    return result


def _check_value(point, kind: str, where: str, non_negative: bool) -> float:
    if kind in ("sum", "gauge"):
        which = point.WhichOneof("value")
        if which is None:
            raise Violation(f"{where}: number point without a value")
        value = getattr(point, which)
        if not math.isfinite(value):
            raise Violation(f"{where}: non-finite value {value}")
        if non_negative and value < 0:
            raise Violation(f"{where}: monotonic delta sum with a negative value {value}")
        return value
    if kind == "exponential_histogram":
        _check_exponential(point, where)
        return point.count
    if kind == "summary":
        previous_q, previous_v = -1.0, -math.inf
        for qv in point.quantile_values:
            if not 0 <= qv.quantile <= 1 or qv.quantile <= previous_q:
                raise Violation(f"{where}: quantiles must be ascending within [0, 1]")
            if qv.value < previous_v:
                raise Violation(f"{where}: quantile values decrease")
            previous_q, previous_v = qv.quantile, qv.value
        return point.count
    raise Violation(f"{where}: {kind} points are not expected from Zibrato")


def _check_exponential(point, where: str) -> None:
    if not -10 <= point.scale <= 20:
        raise Violation(f"{where}: scale {point.scale} outside [-10, 20]")
    buckets = point.zero_count + sum(point.positive.bucket_counts) + sum(point.negative.bucket_counts)
    if point.count != buckets:
        raise Violation(f"{where}: count {point.count} != zero_count + buckets = {buckets}")
    if point.zero_threshold < 0:
        raise Violation(f"{where}: negative zero_threshold")
    if not point.count:
        return
    has_min, has_max = point.HasField("min"), point.HasField("max")
    if has_min and has_max and point.min > point.max:
        raise Violation(f"{where}: min {point.min} > max {point.max}")
    base = 2.0 ** (2.0**-point.scale)
    low, high = _value_range(point, base)
    if has_min and not _within(point.min, *low):
        raise Violation(f"{where}: min {point.min} is not in the lowest populated bucket {low}")
    if has_max and not _within(point.max, *high):
        raise Violation(f"{where}: max {point.max} is not in the highest populated bucket {high}")


def _within(value: float, low: float, high: float) -> bool:
    """low <= value <= high, allowing for the rounding of base ** i."""
    return low - abs(low) * _TOLERANCE <= value <= high + abs(high) * _TOLERANCE


def _populated(buckets) -> tuple[int, int] | None:
    indexes = [buckets.offset + i for i, c in enumerate(buckets.bucket_counts) if c]
    return (indexes[0], indexes[-1]) if indexes else None


def _value_range(point, base: float) -> tuple[tuple[float, float], tuple[float, float]]:
    """(low, high) bounds of the lowest and of the highest populated bucket, as value intervals."""
    negative, positive = _populated(point.negative), _populated(point.positive)
    zero = (0.0, 0.0) if point.zero_count else None

    def neg(i: int) -> tuple[float, float]:  # values in [-base**(i+1), -base**i)
        return (-(base ** (i + 1)), -(base**i))

    def pos(i: int) -> tuple[float, float]:  # values in (base**i, base**(i+1)]
        return (base**i, base ** (i + 1))

    lowest = neg(negative[1]) if negative else zero if zero else pos(positive[0])
    highest = pos(positive[1]) if positive else zero if zero else neg(negative[0])
    # a bucket pair (lower, upper) as (min allowed, max allowed) for a min or max value
    return (min(lowest), max(lowest)), (min(highest), max(highest))


def flatten(request: ExportMetricsServiceRequest) -> list[Point]:
    points = []
    for rm in request.resource_metrics:
        resource = {kv.key: _any_value(kv.value, "resource") for kv in rm.resource.attributes}
        for sm in rm.scope_metrics:
            for metric in sm.metrics:
                kind = metric.WhichOneof("data")
                data = getattr(metric, kind)
                for point in data.data_points:
                    value = None
                    if kind in ("sum", "gauge"):
                        value = getattr(point, point.WhichOneof("value"))
                    points.append(
                        Point(
                            metric=metric.name,
                            kind=kind,
                            unit=metric.unit,
                            attributes={kv.key: _any_value(kv.value, "point") for kv in point.attributes},
                            start=point.start_time_unix_nano,
                            time=point.time_unix_nano,
                            temporality=getattr(data, "aggregation_temporality", 0),
                            monotonic=kind == "sum" and data.is_monotonic,
                            value=value,
                            proto=point,
                            resource=resource,
                            scope=(sm.scope.name, sm.scope.version),
                        )
                    )
    return points
