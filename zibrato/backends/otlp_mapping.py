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

import math
import os
import socket
from typing import Iterable, Iterator
from urllib.parse import unquote

from opentelemetry.proto.collector.metrics.v1.metrics_service_pb2 import ExportMetricsServiceRequest
from opentelemetry.proto.common.v1.common_pb2 import AnyValue, InstrumentationScope, KeyValue
from opentelemetry.proto.metrics.v1 import metrics_pb2 as pb
from opentelemetry.proto.resource.v1.resource_pb2 import Resource

from .. import __version__
from .labels import tag_pairs

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


def resource_attributes(service_name: str | None = None, environ: dict | None = None,
                        host_name: str | None = None) -> dict[str, str]:
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

def attribute_pairs(summary: dict) -> list[tuple[str, str]]:
    """A summary's (key, value) attributes: source, level, then its tags (see the module doc)."""
    return tag_pairs(summary)


def _attributes(pairs: Iterable[tuple[str, str]]) -> list[KeyValue]:
    return [KeyValue(key=k, value=AnyValue(string_value=v)) for k, v in pairs]


def nanos(seconds: float) -> int:
    """Unix seconds -> nanoseconds, to the microsecond (a float has no more to give)."""
    return int(round(seconds * 1e6)) * 1000


# --- exponential histogram buckets ---------------------------------------------------

def rounded_buckets(side: dict | None) -> tuple[int, list[int]]:
    """A sketch side ``{"offset", "counts"}`` -> (offset, integer counts), trimmed of empty ends."""
    if not side:
        return 0, []
    counts = _rounded_cumulatively(side.get("counts") or ())
    offset = int(side.get("offset", 0))
    first = next((i for i, c in enumerate(counts) if c), len(counts))
    last = len(counts) - next((i for i, c in enumerate(reversed(counts)) if c), len(counts))
    return offset + first, counts[first:last]


def _rounded_cumulatively(counts) -> list[int]:
    """Integer counts whose running sums are the rounded running sums of ``counts``.

    Each bucket moves by less than 1 and the side's total by at most 0.5,
    where rounding each bucket alone would bias the total (1.5 x n -> 2 x n).
    """
    counts = list(counts)
    whole = list(map(int, counts))
    if whole == counts:  # the usual case (no fractional weights): nothing to round, C speed
        return whole
    out, running, before = [], 0.0, 0
    for count in counts:
        running += count
        now = int(round(running))
        out.append(now - before)
        before = now
    return out


def downscale(offset: int, counts: list[int], by: int) -> tuple[int, list[int]]:
    """Buckets at scale s -> scale s - by: index i becomes i >> by (two buckets merge per step)."""
    if by <= 0 or not counts:
        return offset, list(counts)
    new_offset = offset >> by
    merged = [0] * (((offset + len(counts) - 1) >> by) - new_offset + 1)
    for i, count in enumerate(counts):
        merged[((offset + i) >> by) - new_offset] += count
    return new_offset, merged


def add_buckets(a: tuple[int, list[int]], b: tuple[int, list[int]]) -> tuple[int, list[int]]:
    """The sum of two bucket runs of the same scale."""
    (oa, ca), (ob, cb) = a, b
    if not ca:
        return ob, list(cb)
    if not cb:
        return oa, list(ca)
    low = min(oa, ob)
    total = [0] * (max(oa + len(ca), ob + len(cb)) - low)
    for offset, counts in ((oa, ca), (ob, cb)):
        for i, count in enumerate(counts):
            total[offset - low + i] += count
    return low, total


class ExpHistogram:
    """An exponential histogram with integer counts: one interval's sketch, or a running total."""

    __slots__ = ("scale", "zero_count", "positive", "negative", "sum", "min", "max")

    def __init__(self, scale: int = 0, zero_count: int = 0, positive=(0, []), negative=(0, []),
                 sum: float = 0.0, min: float | None = None, max: float | None = None) -> None:
        self.scale, self.zero_count = scale, zero_count
        self.positive, self.negative = positive, negative
        self.sum, self.min, self.max = sum, min, max

    @classmethod
    def from_sketch(cls, sketch: dict) -> "ExpHistogram":
        """The dict form of zibrato.sketch (COMMON.md's contract), counts rounded."""
        return cls(scale=int(sketch.get("scale", 0)),
                   zero_count=int(round(sketch.get("zero_count", 0))),
                   positive=rounded_buckets(sketch.get("positive")),
                   negative=rounded_buckets(sketch.get("negative")),
                   sum=float(sketch.get("sum", 0.0)),
                   min=sketch.get("min"), max=sketch.get("max"))

    @property
    def count(self) -> int:
        return self.zero_count + sum(self.positive[1]) + sum(self.negative[1])

    def merged(self, other: "ExpHistogram") -> "ExpHistogram":
        """Both brought to the smaller scale, counts added (how the spec merges them)."""
        scale = min(self.scale, other.scale)
        pos = add_buckets(downscale(*self.positive, self.scale - scale),
                          downscale(*other.positive, other.scale - scale))
        neg = add_buckets(downscale(*self.negative, self.scale - scale),
                          downscale(*other.negative, other.scale - scale))
        lows = [v for v in (self.min, other.min) if v is not None]
        highs = [v for v in (self.max, other.max) if v is not None]
        return ExpHistogram(scale, self.zero_count + other.zero_count, pos, neg,
                            self.sum + other.sum, min(lows) if lows else None,
                            max(highs) if highs else None)

    def point(self, attributes: list[KeyValue], start: int, end: int) -> pb.ExponentialHistogramDataPoint:
        point = pb.ExponentialHistogramDataPoint(
            attributes=attributes, start_time_unix_nano=start, time_unix_nano=end,
            count=self.count, scale=self.scale, zero_count=self.zero_count,
            positive=pb.ExponentialHistogramDataPoint.Buckets(offset=self.positive[0],
                                                              bucket_counts=self.positive[1]),
            negative=pb.ExponentialHistogramDataPoint.Buckets(offset=self.negative[0],
                                                              bucket_counts=self.negative[1]))
        if self.count:
            point.sum = self.sum
            if self.min is not None and self.max is not None:
                point.min, point.max = float(self.min), float(self.max)
        return point


# --- the mapper ----------------------------------------------------------------------

class _Running:
    """A series' cumulative state: its first start and its total so far."""

    __slots__ = ("start", "total")

    def __init__(self, start: int, total: object) -> None:
        self.start, self.total = start, total


class OtlpMapper:
    """Builds the requests for each interval; holds the running totals of cumulative temporality."""

    def __init__(self, temporality: str = "delta", resource: dict[str, str] | None = None,
                 scope_version: str = __version__) -> None:
        if temporality not in TEMPORALITIES:
            raise ValueError(f"unknown temporality {temporality!r} (delta or cumulative)")
        self.temporality = TEMPORALITIES[temporality]
        resource = resource or {"service.name": DEFAULT_SERVICE_NAME}
        self.resource = Resource(attributes=_attributes(sorted(resource.items())))
        self.scope = InstrumentationScope(name=SCOPE_NAME, version=scope_version)
        self._running: dict[tuple, _Running] = {}

    @property
    def cumulative(self) -> bool:
        return self.temporality == CUMULATIVE

    def requests(self, start: float, end: float, summaries: list[dict],
                 max_points: int = 1000) -> list[ExportMetricsServiceRequest]:
        """The requests for one interval, each with at most ``max_points`` data points.

        Call once per interval (cumulative totals advance at each call).
        """
        if max_points < 1:
            raise ValueError("max_points must be at least 1")
        metrics = self.metrics(start, end, summaries)
        return [self._request(chunk) for chunk in _chunks(metrics, max_points)]

    def metrics(self, start: float, end: float, summaries: list[dict]) -> list[pb.Metric]:
        """One Metric per (name, kind, unit), its data points in the summaries' order."""
        start_ns, end_ns = nanos(start), nanos(end)
        metrics: dict[tuple, pb.Metric] = {}
        seen: set[tuple] = set()
        for summary in summaries:
            key = series_key(summary)
            seen.add(key)
            kind, point, unit = self._point(summary, key, start_ns, end_ns)
            metric = metrics.get((summary["name"], kind, unit))
            if metric is None:
                metric = metrics[(summary["name"], kind, unit)] = self._metric(summary["name"], kind, unit)
            _data(metric, kind).data_points.append(point)
            if kind == "sum" and summary.get("value", 0) < 0:  # an increment, whatever the temporality
                metric.sum.is_monotonic = False
        if self.cumulative:  # a series no longer reported was expired: it restarts from zero
            for key in [k for k in self._running if k not in seen]:
                del self._running[key]
        return list(metrics.values())

    def _metric(self, name: str, kind: str, unit: str) -> pb.Metric:
        metric = pb.Metric(name=name, unit=unit)
        if kind == "sum":
            metric.sum.aggregation_temporality = self.temporality
            metric.sum.is_monotonic = True
        elif kind == "exponential_histogram":
            metric.exponential_histogram.aggregation_temporality = self.temporality
        elif kind == "gauge":
            metric.gauge.SetInParent()
        else:
            metric.summary.SetInParent()
        return metric

    def _point(self, s: dict, key: tuple, start: int, end: int) -> tuple[str, object, str]:
        attributes = _attributes(attribute_pairs(s))
        kind = s["type"]
        if kind == "counter":
            value = float(s.get("value", 0.0))
            if self.cumulative:
                running = self._advance(key, start, value, lambda total, v: total + v)
                start, value = running.start, running.total
            return "sum", pb.NumberDataPoint(attributes=attributes, start_time_unix_nano=start,
                                             time_unix_nano=end, as_double=value), ""
        if kind == "gauge":
            return "gauge", pb.NumberDataPoint(attributes=attributes, start_time_unix_nano=start,
                                               time_unix_nano=end, as_double=float(s["value"])), ""
        if kind == "set":
            return "gauge", pb.NumberDataPoint(attributes=attributes, start_time_unix_nano=start,
                                               time_unix_nano=end, as_int=int(s.get("value", 0))), ""
        if kind in ("timer", "histogram"):
            unit = "s" if kind == "timer" else (s.get("unit") or "")
            if "sketch" not in s and s.get("count"):
                return "summary", self._summary_point(s, key, attributes, start, end), unit
            histogram = ExpHistogram.from_sketch(s["sketch"]) if s.get("sketch") else ExpHistogram()
            if self.cumulative:
                running = self._advance(key, start, histogram, ExpHistogram.merged)
                start, histogram = running.start, running.total
            return "exponential_histogram", histogram.point(attributes, start, end), unit
        raise ValueError(f"unknown summary type {kind!r}")

    def _summary_point(self, s: dict, key: tuple, attributes: list, start: int,
                       end: int) -> pb.SummaryDataPoint:
        """Fallback for a timer without a sketch: its count, sum and percentiles."""
        count, total = int(s["count"]), float(s["sum"])
        if self.cumulative:
            running = self._advance(key, start, (count, total), lambda a, b: (a[0] + b[0], a[1] + b[1]))
            start, (count, total) = running.start, running.total
        quantiles = [(0.0, s["min"])] + sorted(
            (_percentile_of(k) / 100, v) for k, v in s.items() if _percentile_of(k) is not None
        ) + [(1.0, s["max"])]
        return pb.SummaryDataPoint(
            attributes=attributes, start_time_unix_nano=start, time_unix_nano=end, count=count,
            sum=total, quantile_values=[pb.SummaryDataPoint.ValueAtQuantile(quantile=q, value=float(v))
                                        for q, v in quantiles])

    def _advance(self, key: tuple, start: int, value, add) -> _Running:
        running = self._running.get(key)
        if running is None:
            running = self._running[key] = _Running(start, value)
        else:
            running.total = add(running.total, value)
        return running

    def _request(self, metrics: list[pb.Metric]) -> ExportMetricsServiceRequest:
        return ExportMetricsServiceRequest(resource_metrics=[pb.ResourceMetrics(
            resource=self.resource,
            scope_metrics=[pb.ScopeMetrics(scope=self.scope, metrics=metrics)])])


def series_key(summary: dict) -> tuple:
    """What identifies a series across intervals."""
    return (summary["type"], summary["name"], summary.get("source"), tuple(summary.get("tags") or ()),
            summary.get("level"), summary.get("unit"))


def _percentile_of(key: str) -> float | None:
    """"p99_9" -> 99.9; None for any other key."""
    if not (key.startswith("p") and key[1:2].isdigit()):
        return None
    try:
        value = float(key[1:].replace("_", "."))
    except ValueError:
        return None
    return value if 0 < value <= 100 and math.isfinite(value) else None


def _data(metric: pb.Metric, kind: str):
    return getattr(metric, kind)


def count_points(metric: pb.Metric) -> int:
    return len(_data(metric, metric.WhichOneof("data")).data_points)


def _chunks(metrics: list[pb.Metric], max_points: int) -> Iterator[list[pb.Metric]]:
    """Split metrics so that no chunk holds more than ``max_points`` points (a metric may span chunks)."""
    chunk: list[pb.Metric] = []
    room = max_points
    for metric in metrics:
        kind = metric.WhichOneof("data")
        points = _data(metric, kind).data_points
        if len(points) <= room:  # the common case: the whole metric fits
            chunk.append(metric)
            room -= len(points)
            continue
        points = list(points)
        while points:
            if room == 0:
                yield chunk
                chunk, room = [], max_points
            part, points = points[:room], points[room:]
            piece = pb.Metric()
            piece.CopyFrom(metric)
            del _data(piece, kind).data_points[:]
            _data(piece, kind).data_points.extend(part)
            chunk.append(piece)
            room -= len(part)
    if chunk:
        yield chunk
