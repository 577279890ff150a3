"""Zibrato's running Prometheus state -> remote write 1.0 ``WriteRequest`` bodies: pure code, no sockets.

What zibrato-remote-write sends at the end of each interval is what a scrape
of zibrato-prometheus would show at that moment (the same
:class:`~.prometheus_mapping.PrometheusState`: names, labels, cumulative
totals), stamped with the interval's end:

* counter -> ``<name>_total``, the running sum since the worker started;
* gauge -> the last value; set -> a gauge of the last interval's unique count;
* timer (``<name>_seconds``) and histogram -> a **native histogram** sample
  (schema, zero bucket, spans and deltas from :mod:`.native_histogram`), and
  with ``classic`` the ``<name>_bucket{le=...}``, ``<name>_count`` and
  ``<name>_sum`` series too; with ``native`` off (a receiver that refused
  native histograms) only those.

Each series carries one sample per request, its labels sorted by name,
``__name__`` included, as the specification asks. :func:`snapshot` copies the
state at the interval's end (what is sent, and resent after a failure, is
that copy), :func:`encode` turns the first points of a snapshot into one
serialised ``WriteRequest`` of at most ``max_samples`` samples.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from prometheus_client.utils import floatToGoString

from .native_histogram import ZERO_THRESHOLD, write_buckets
from .prometheus_proto import remote_pb2 as pb


@dataclass(frozen=True)
class NativeCopy:
    """A native histogram as it was at the interval's end."""

    schema: int
    zero_count: float
    positive: dict[int, float]
    negative: dict[int, float]
    count: float
    sum: float
    integral: bool


@dataclass(frozen=True)
class Point:
    """One series at the interval's end: a counter's or gauge's value, or a histogram's totals and buckets."""

    kind: str  # "counter", "gauge" or "histogram" (the family's Prometheus type)
    name: str  # the family's name (a counter's sample name adds _total)
    labels: tuple[tuple[str, str], ...]
    value: float = 0.0
    count: float = 0.0
    sum: float = 0.0
    bounds: tuple[float, ...] = ()
    buckets: tuple[float, ...] = ()  # per bound, then +Inf; not cumulative
    native: NativeCopy | None = None

    def samples(self, native: bool, classic: bool) -> int:
        """How many samples this point is in a request."""
        if self.kind != "histogram":
            return 1
        n = 1 if native and self.native is not None else 0
        if classic or not native:
            n += len(self.bounds) + 3  # le buckets, +Inf, _count, _sum
        return max(n, 1)


def snapshot(state: Any) -> list[Point]:
    """Every series of ``state`` (a PrometheusState) as it is now, copied."""
    return [point for family_points in state.render(_family_points) for point in family_points]


def _family_points(name: str, family: Any) -> list[Point]:
    kind = family.kind
    out = []
    for series in family.series.values():
        labels = tuple(series.labels.items())
        if kind != "histogram":
            out.append(Point(kind, name, labels, value=series.value))
            continue
        native = series.native
        copy = None
        if native is not None and native.schema is not None:
            copy = NativeCopy(
                native.schema,
                native.zero_count,
                dict(native.positive),
                dict(native.negative),
                native.count,
                native.sum,
                native.integral,
            )
        out.append(
            Point(
                kind,
                name,
                labels,
                count=series.count,
                sum=series.sum,
                bounds=series.bounds,
                buckets=tuple(series.buckets),
                native=copy,
            )
        )
    return out


def encode(
    points: list[Point], timestamp_ms: int, *, native: bool, classic: bool, max_samples: int
) -> tuple[bytes, int, int, bool]:
    """The first points that fit in ``max_samples`` as one serialised WriteRequest.

    Returns ``(body, points used, samples, holds native histograms)``; at least
    one point is used even if it alone is over ``max_samples`` (a histogram's
    classic series are never split from each other).
    """
    request = pb.WriteRequest()
    used = samples = 0
    has_native = False
    for point in points:
        n = point.samples(native, classic)
        if used and samples + n > max_samples:
            break
        has_native |= _add(request, point, timestamp_ms, native, classic)
        used += 1
        samples += n
    return request.SerializeToString(), used, samples, has_native


def _add(request: pb.WriteRequest, point: Point, ts: int, native: bool, classic: bool) -> bool:
    """Add the point's series to the request; True when a native histogram went in."""
    if point.kind == "counter":
        _series(request, point.name + "_total", point.labels).samples.add(value=point.value, timestamp=ts)
        return False
    if point.kind == "gauge":
        _series(request, point.name, point.labels).samples.add(value=point.value, timestamp=ts)
        return False
    sent_native = native and point.native is not None
    if sent_native:
        assert point.native is not None
        _native(_series(request, point.name, point.labels).histograms.add(), point.native, ts)
    if classic or not native:
        running = 0.0
        bucket = point.name + "_bucket"
        for bound, n in zip(point.bounds, point.buckets):
            running += n
            series = _series(request, bucket, point.labels, ("le", floatToGoString(bound)))
            series.samples.add(value=running, timestamp=ts)
        _series(request, bucket, point.labels, ("le", "+Inf")).samples.add(value=point.count, timestamp=ts)
        _series(request, point.name + "_count", point.labels).samples.add(value=point.count, timestamp=ts)
        _series(request, point.name + "_sum", point.labels).samples.add(value=point.sum, timestamp=ts)
    return sent_native


def _series(
    request: pb.WriteRequest, name: str, labels: tuple[tuple[str, str], ...], extra: tuple[str, str] | None = None
) -> pb.TimeSeries:
    """A new series of the request, its labels sorted by name (``__name__`` included)."""
    pairs = [("__name__", name), *labels]
    if extra is not None:
        pairs.append(extra)
    pairs.sort()
    series = request.timeseries.add()
    for key, value in pairs:
        series.labels.add(name=key, value=value)
    return series


def _native(h: pb.Histogram, native: NativeCopy, ts: int) -> None:
    h.timestamp = ts
    h.schema = native.schema
    h.zero_threshold = ZERO_THRESHOLD
    h.sum = native.sum
    if native.integral:
        h.count_int = int(native.count)
        h.zero_count_int = int(native.zero_count)
    else:
        h.count_float = native.count
        h.zero_count_float = native.zero_count
    for spans_field, deltas_field, counts_field, buckets in (
        (h.positive_spans, h.positive_deltas, h.positive_counts, native.positive),
        (h.negative_spans, h.negative_deltas, h.negative_counts, native.negative),
    ):
        write_buckets(spans_field, deltas_field, counts_field, buckets, native.integral)
