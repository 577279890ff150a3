"""Zibrato summaries -> OTLP ``ExportMetricsServiceRequest`` protobufs: pure code, no sockets.

The mapping (README, "zibrato-otlp"; issue 13):

* counter -> ``Sum`` (monotonic unless a value in it is negative), DELTA by
  default; with ``temporality="cumulative"`` each series keeps its running
  total from the first interval it appeared in (its ``start_time_unix_nano``)
  until it stops being reported (the worker expired it), after which it
  starts again from zero with a new start time, as the spec wants a reset;
* gauge -> ``Gauge`` of the last value;
* timer and histogram -> ``ExponentialHistogram`` carrying the summary's
  ``"sketch"`` (same bucket scheme: base ``2 ** 2 ** -scale``, bucket ``i``
  holds ``(base**i, base**(i+1)]``). Fractional counts (weighted samples)
  are rounded so that each side's running sums stay within 0.5 of the true
  ones, and ``count`` is the sum of the rounded buckets, so
  the spec's invariant ``count == zero_count + sum(buckets)`` holds. Timers
  have unit ``s``, histograms their ``unit``. A timer summary without a
  sketch (an aggregator that predates sketches) becomes a ``Summary`` of its
  percentiles instead;
* set -> ``Gauge`` of the number of unique members (an integer).

Attributes: ``source`` and ``level`` (when the summary has them), then the
tags, ``k:v`` -> ``k="v"`` (a bare tag ``canary`` -> ``canary="true"``; a tag
named ``source`` or ``level`` becomes ``tag.source``; repeated keys join their
values with ``,``: attribute keys must be unique). Every point stamps
``start_time_unix_nano`` = interval start and ``time_unix_nano`` = interval
end (cumulative sums: the series' first start).
"""

from __future__ import annotations

import logging
import math
import os
import socket
from collections.abc import Iterable
from typing import Any
from urllib.parse import unquote

from opentelemetry.proto.collector.metrics.v1.metrics_service_pb2 import ExportMetricsServiceRequest
from opentelemetry.proto.common.v1.common_pb2 import AnyValue, InstrumentationScope, KeyValue
from opentelemetry.proto.metrics.v1 import metrics_pb2 as pb
from opentelemetry.proto.resource.v1.resource_pb2 import Resource

from .. import __version__
from ..series_guard import SeriesGuard
from ..summary import Summary, percentile_values
from ..summary import series_of as series_key
from .labels import tag_pairs
from .otlp_histogram import (  # noqa: F401 - Buckets, add_buckets, downscale, rounded_buckets: re-exported
    Buckets,
    ExpHistogram,
    add_buckets,
    downscale,
    rounded_buckets,
)

DELTA = pb.AGGREGATION_TEMPORALITY_DELTA
CUMULATIVE = pb.AGGREGATION_TEMPORALITY_CUMULATIVE
TEMPORALITIES = {"delta": DELTA, "cumulative": CUMULATIVE}
SCOPE_NAME = "zibrato"
DEFAULT_SERVICE_NAME = "zibrato"


# --- configuration from the OpenTelemetry environment variables ------------------


def parse_key_values(text: str | None) -> dict[str, str]:
    """``k=v,k2=v2`` (OTEL_EXPORTER_OTLP_HEADERS, OTEL_RESOURCE_ATTRIBUTES) -> dict.

    Keys and values are percent-decoded and stripped, as the spec says;
    an entry without ``=`` is a ValueError that names the entry's position
    only (it may be a credential).
    """
    pairs: dict[str, str] = {}
    for position, entry in enumerate((text or "").split(","), 1):
        if not entry.strip():
            continue
        key, sep, value = entry.partition("=")
        if not sep or not key.strip():
            raise ValueError(f"entry {position} is not key=value")
        pairs[unquote(key.strip())] = unquote(value.strip())
    return pairs


def resource_attributes(
    service_name: str | None = None, environ: dict | None = None, host_name: str | None = None
) -> dict[str, str]:
    """The resource: OTEL_RESOURCE_ATTRIBUTES, then host.name, then service.name.

    ``service.name``: ``service_name`` (--service-name), else OTEL_SERVICE_NAME,
    else the one in OTEL_RESOURCE_ATTRIBUTES, else "zibrato".
    """
    env = os.environ if environ is None else environ
    attributes = parse_key_values(env.get("OTEL_RESOURCE_ATTRIBUTES"))
    attributes.setdefault("host.name", host_name or socket.gethostname())
    name = service_name or env.get("OTEL_SERVICE_NAME") or attributes.get("service.name")
    attributes["service.name"] = name or DEFAULT_SERVICE_NAME
    return attributes


# --- attributes ---------------------------------------------------------------------


def attribute_pairs(summary: Summary) -> list[tuple[str, str]]:
    """A summary's (key, value) attributes: source, level, then its tags (see the module doc)."""
    return tag_pairs(summary)


def _attributes(pairs: Iterable[tuple[str, str]]) -> list[KeyValue]:
    return [KeyValue(key=k, value=AnyValue(string_value=v)) for k, v in pairs]


def nanos(seconds: float) -> int:
    """Unix seconds -> nanoseconds, to the microsecond (a float has no more to give)."""
    return int(round(seconds * 1e6)) * 1000


# --- the mapper ----------------------------------------------------------------------


class _Running:
    """A series' cumulative state: its first start and its total so far."""

    __slots__ = ("start", "total")

    def __init__(self, start: int, total: Any) -> None:
        self.start, self.total = start, total


class OtlpMapper:
    """Builds the requests for each interval; holds the running totals of cumulative temporality."""

    def __init__(
        self, temporality: str = "delta", resource: dict[str, str] | None = None, scope_version: str = __version__
    ) -> None:
        if temporality not in TEMPORALITIES:
            raise ValueError(f"unknown temporality {temporality!r} (delta or cumulative)")
        self.temporality = TEMPORALITIES[temporality]
        resource = resource or {"service.name": DEFAULT_SERVICE_NAME}
        self.resource = Resource(attributes=_attributes(sorted(resource.items())))
        self.scope = InstrumentationScope(name=SCOPE_NAME, version=scope_version)
        self._running: dict[tuple, _Running] = {}
        self._prototypes: dict[tuple, object] = {}
        #: series dropped because mapping them raised (each alone: see :mod:`zibrato.series_guard`)
        self.guard = SeriesGuard(logging.getLogger("zibrato.otlp"))

    @property
    def cumulative(self) -> bool:
        return self.temporality == CUMULATIVE

    def requests(
        self, start: float, end: float, summaries: list[Summary], max_points: int = 1000
    ) -> list[ExportMetricsServiceRequest]:
        """The requests for one interval, each with at most ``max_points`` data points.

        One Metric per (name, kind, unit) in each request, its series as data
        points in the summaries' order. Call once per interval (cumulative
        totals advance at each call). Every point starts as a copy of its
        series' cached prototype (its attributes), then gets its values: a
        copy in C costs a seventh of building the attributes again.
        """
        if max_points < 1:
            raise ValueError("max_points must be at least 1")
        start_ns, end_ns = nanos(start), nanos(end)
        requests: list[ExportMetricsServiceRequest] = []
        metrics: dict[tuple, pb.Metric] = {}
        room = 0
        seen: set[tuple] = set()
        for summary in summaries:
            if room == 0:
                scope_metrics = self._new_request(requests)
                metrics, room = {}, max_points
            key = series_key(summary)
            seen.add(key)
            kind, unit = _kind_and_unit(summary)
            metric = metrics.get((summary["name"], kind, unit))
            if metric is None:
                metric = metrics[(summary["name"], kind, unit)] = self._metric(
                    scope_metrics, summary["name"], kind, unit
                )
            points = getattr(metric, kind).data_points
            point = points.add()
            running = self._running.get(key)
            saved = None if running is None else (running.start, running.total)
            try:
                point.CopyFrom(self._prototype(key, kind, summary))
                self._fill(kind, point, summary, key, start_ns, end_ns)
            except Exception as error:  # this series alone: its point, and its running total as it was
                self._undo(scope_metrics, metrics, (summary["name"], kind, unit), points, key, saved)
                self.guard.dropped(summary, error)
                continue
            if kind == "sum" and summary.get("value", 0) < 0:  # an increment, whatever the temporality
                metric.sum.is_monotonic = False
            room -= 1
        self._forget_all_but(seen)
        return requests

    def _undo(self, container: Any, metrics: dict, metric_key: tuple, points: Any, key: tuple, saved: Any) -> None:
        """Take back a point that failed: the point, its metric if now empty, its running total."""
        del points[-1]
        if not len(points):
            del container[-1]  # the metric was made for this point (the last one made)
            del metrics[metric_key]
        if saved is None:
            self._running.pop(key, None)
        else:
            self._running[key].start, self._running[key].total = saved

    def _new_request(self, requests: list) -> object:
        request = ExportMetricsServiceRequest()
        resource_metrics = request.resource_metrics.add()
        resource_metrics.resource.CopyFrom(self.resource)
        scope_metrics = resource_metrics.scope_metrics.add()
        scope_metrics.scope.CopyFrom(self.scope)
        requests.append(request)
        return scope_metrics.metrics

    def _metric(self, container, name: str, kind: str, unit: str) -> pb.Metric:
        metric = container.add(name=name, unit=unit)
        if kind == "sum":
            metric.sum.aggregation_temporality = self.temporality
            metric.sum.is_monotonic = True
        elif kind == "exponential_histogram":
            metric.exponential_histogram.aggregation_temporality = self.temporality
        else:
            getattr(metric, kind).SetInParent()
        return metric

    def _prototype(self, key: tuple, kind: str, summary: Summary):
        """A point of this kind holding only the series' attributes (made once per series)."""
        proto = self._prototypes.get((key, kind))
        if proto is None:
            proto = self._prototypes[(key, kind)] = _POINT_CLASS[kind](attributes=_attributes(attribute_pairs(summary)))
        return proto

    def _forget_all_but(self, seen: set[tuple]) -> None:
        """Series the worker no longer reports (expired) lose their prototype and running total;
        a cumulative one restarts from zero with a new start time when it comes back."""
        if len(self._prototypes) > len(seen):
            self._prototypes = {k: v for k, v in self._prototypes.items() if k[0] in seen}
        if len(self._running) > len(seen):
            self._running = {k: v for k, v in self._running.items() if k in seen}

    def _fill(self, kind: str, point, s: Summary, key: tuple, start: int, end: int) -> None:
        if kind == "exponential_histogram":
            histogram = ExpHistogram.from_sketch(s["sketch"]) if s.get("sketch") else ExpHistogram()
            if self.cumulative:
                running = self._advance(key, start, histogram, ExpHistogram.merged)
                start, histogram = running.start, running.total
            histogram.fill(point, start, end)
        elif kind == "sum":
            value = float(s.get("value", 0.0))
            if self.cumulative:
                running = self._advance(key, start, value, float.__add__)
                start, value = running.start, running.total
            point.start_time_unix_nano, point.time_unix_nano, point.as_double = start, end, value
        elif kind == "gauge":
            point.start_time_unix_nano, point.time_unix_nano = start, end
            if s["type"] == "set":
                point.as_int = int(s.get("value", 0))
            else:
                point.as_double = float(s["value"])
        else:
            self._summary_point(point, s, key, start, end)

    def _summary_point(self, point: pb.SummaryDataPoint, s: Summary, key: tuple, start: int, end: int) -> None:
        """Fallback for a timer without a sketch: its count, sum and percentiles."""
        count, total = int(s["count"]), float(s["sum"])
        if self.cumulative:
            running = self._advance(key, start, (count, total), lambda a, b: (a[0] + b[0], a[1] + b[1]))
            start, (count, total) = running.start, running.total
        quantiles = (
            [(0.0, s["min"])]
            + sorted((p / 100, v) for k, v in percentile_values(s) if (p := _percentile_of(k)) is not None)
            + [(1.0, s["max"])]
        )
        point.start_time_unix_nano, point.time_unix_nano = start, end
        point.count, point.sum = count, total
        for q, v in quantiles:
            point.quantile_values.add(quantile=q, value=float(v))

    def _advance(self, key: tuple, start: int, value, add) -> _Running:
        running = self._running.get(key)
        if running is None:
            running = self._running[key] = _Running(start, value)
        else:
            running.total = add(running.total, value)
        return running


def _kind_and_unit(summary: Summary) -> tuple[str, str]:
    """The OTLP data kind of a summary (the Metric's oneof field) and its unit."""
    kind = summary["type"]
    if kind == "counter":
        return "sum", ""
    if kind in ("gauge", "set"):
        return "gauge", ""
    if kind in ("timer", "histogram"):
        unit = "s" if kind == "timer" else (summary.get("unit") or "")
        if "sketch" not in summary and summary.get("count"):
            return "summary", unit
        return "exponential_histogram", unit
    raise ValueError(f"unknown summary type {kind!r}")


_POINT_CLASS = {
    "sum": pb.NumberDataPoint,
    "gauge": pb.NumberDataPoint,
    "exponential_histogram": pb.ExponentialHistogramDataPoint,
    "summary": pb.SummaryDataPoint,
}


def _percentile_of(key: str) -> float | None:
    """ "p99_9" -> 99.9; None for any other key."""
    if not (key.startswith("p") and key[1:2].isdigit()):
        return None
    try:
        value = float(key[1:].replace("_", "."))
    except ValueError:
        return None
    return value if 0 < value <= 100 and math.isfinite(value) else None


def count_points(metric: pb.Metric) -> int:
    kind = metric.WhichOneof("data")
    return len(getattr(metric, kind).data_points) if kind else 0
