"""A Zibrato sketch as a Prometheus native histogram: cumulative buckets, schema lowering, spans and deltas.

Pure code (no sockets, no protobuf), shared by zibrato-prometheus's protobuf
exposition and zibrato-remote-write.

Why it is lossless: Zibrato's sketch is an OpenTelemetry base-2 exponential
histogram, and a Prometheus native histogram is the same structure. Schema
``s`` is scale ``s`` (base ``2 ** (2 ** -s)``); only the bucket index is
shifted by one: OpenTelemetry bucket ``i`` covers ``(base**i, base**(i+1)]``,
Prometheus bucket ``i`` covers ``(base**(i-1), base**i]``, so the Prometheus
index is the OpenTelemetry index + 1. :class:`NativeHistogram` keeps the
OpenTelemetry indices and adds 1 only when it encodes.

Rules it keeps (prometheus/docs ``specs/native_histograms.md``):

* **cumulative** since the worker started: each interval's sketch is added;
* the schema is the sketch's scale, lowered to at most 8 (Prometheus' highest);
  it **only ever goes down** over a series' life: a lower schema is an exact
  merge of neighbour buckets (index ``i`` -> ``i >> 1``, as the sketch's own
  downscale), so Prometheus sees no reset; a higher one would need counts it
  no longer has;
* at most ``max_buckets`` populated buckets (160 by default, what Prometheus'
  client libraries and Mimir recommend): past it the schema goes down one step
  at a time until the histogram fits (or schema -4 is reached); counts are
  never dropped.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

MAX_SCHEMA = 8
MIN_SCHEMA = -4
DEFAULT_MAX_NATIVE_BUCKETS = 160
#: client_golang's default zero bucket width: [-2^-128, 2^-128] holds the sketch's exact zeros
ZERO_THRESHOLD = 2.0**-128


class NativeHistogram:
    """One series' native histogram, cumulative, fed one sketch dict (``Sketch.to_dict()``) at a time."""

    __slots__ = ("schema", "zero_count", "positive", "negative", "count", "sum", "max_buckets", "lowered")

    def __init__(self, max_buckets: int = DEFAULT_MAX_NATIVE_BUCKETS) -> None:
        if max_buckets < 1:
            raise ValueError("max_buckets must be at least 1")
        self.max_buckets = max_buckets
        self.schema: int | None = None  # chosen by the first sketch
        self.zero_count: float = 0
        self.positive: dict[int, float] = {}  # OpenTelemetry index -> count
        self.negative: dict[int, float] = {}  # OpenTelemetry index of |value| -> count
        self.count: float = 0
        self.sum = 0.0
        self.lowered = 0  # schema steps taken for the budget or a coarser sketch (a figure)

    def add(self, sketch: Mapping[str, Any]) -> None:
        """Add one interval's sketch (its scale may differ from the schema held)."""
        scale = int(sketch.get("scale", 0))
        if scale < MIN_SCHEMA:
            raise ValueError(f"a sketch at scale {scale} is coarser than Prometheus' lowest schema {MIN_SCHEMA}")
        if self.schema is None:
            self.schema = min(scale, MAX_SCHEMA)
        elif scale < self.schema:
            self.lower(self.schema - scale)
        shift = scale - self.schema
        for side, buckets in (("positive", self.positive), ("negative", self.negative)):
            part = sketch.get(side) or {}
            offset = int(part.get("offset", 0))
            for i, n in enumerate(part.get("counts") or ()):
                if n:
                    index = (offset + i) >> shift
                    buckets[index] = buckets.get(index, 0) + n
        self.zero_count += sketch.get("zero_count") or 0
        self.count += sketch.get("count") or 0
        self.sum += float(sketch.get("sum") or 0.0)
        while len(self.positive) + len(self.negative) > self.max_buckets and self.schema > MIN_SCHEMA:
            self.lower(1)

    def lower(self, steps: int) -> None:
        """Lower the schema by ``steps``: neighbour buckets merge (exact; counts are kept)."""
        if self.schema is None or steps <= 0:
            return
        steps = min(steps, self.schema - MIN_SCHEMA)
        self.schema -= steps
        self.lowered += steps
        self.positive = _merged(self.positive, steps)
        self.negative = _merged(self.negative, steps)

    @property
    def integral(self) -> bool:
        """True when every count is a whole number (then counts are sent as integer deltas)."""
        counts = (self.count, self.zero_count, *self.positive.values(), *self.negative.values())
        return all(float(n).is_integer() for n in counts)

    @property
    def buckets_held(self) -> int:
        return len(self.positive) + len(self.negative)


def _merged(buckets: dict[int, float], steps: int) -> dict[int, float]:
    out: dict[int, float] = {}
    for index, n in buckets.items():
        merged = index >> steps
        out[merged] = out.get(merged, 0) + n
    return out


def spans_and_counts(buckets: dict[int, float]) -> tuple[list[tuple[int, int]], list[float]]:
    """Prometheus spans ``(offset, length)`` and the counts in order, from OpenTelemetry-indexed buckets.

    The first span's offset is the first Prometheus index (OpenTelemetry index
    + 1); each later offset counts the empty buckets skipped since the previous
    span. The spec's example: Prometheus buckets -2:3, -1:5, 2:1, 4:3, 5:2
    -> spans [(-2, 2), (2, 1), (1, 2)], counts [3, 5, 1, 3, 2].
    """
    spans: list[list[int]] = []
    counts: list[float] = []
    previous: int | None = None
    for index in sorted(buckets):
        n = buckets[index]
        if not n:
            continue
        position = index + 1
        if previous is None:
            spans.append([position, 1])
        elif position == previous + 1:
            spans[-1][1] += 1
        else:
            spans.append([position - previous - 1, 1])
        counts.append(n)
        previous = position
    return [(offset, length) for offset, length in spans], counts


def deltas(counts: Iterable[float]) -> list[int]:
    """Each count minus the previous one (the first absolute): the integer histogram's encoding."""
    out: list[int] = []
    previous = 0
    for n in counts:
        whole = int(n)
        out.append(whole - previous)
        previous = whole
    return out


def write_buckets(spans: Any, deltas_field: Any, counts_field: Any, buckets: dict[int, float], integral: bool) -> None:
    """One sign's buckets into the repeated fields of a Prometheus protobuf histogram (the
    exposition's and remote write's have the same three): its spans, then its counts as
    integer deltas (``integral``) or as floats."""
    found_spans, counts = spans_and_counts(buckets)
    for offset, length in found_spans:
        spans.add(offset=offset, length=length)
    if integral:
        deltas_field.extend(deltas(counts))
    else:
        counts_field.extend(counts)
