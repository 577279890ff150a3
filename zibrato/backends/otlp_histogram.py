"""OTLP exponential histograms with integer counts, from a Zibrato sketch's dict form.

Why apart from the mapping: the bucket arithmetic (rounding fractional
weights so running sums stay within 0.5, downscaling, adding runs of the
same scale, merging two histograms as the spec merges them) is one concept,
tested on its own; :mod:`zibrato.backends.otlp_mapping` only asks for a
histogram per summary and writes it into a data point.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from opentelemetry.proto.metrics.v1 import metrics_pb2 as pb

Buckets = tuple[int, list[int]]  # (offset, counts) of one side of an exponential histogram


def rounded_buckets(side: dict | None, whole: bool = False) -> tuple[int, list[int]]:
    """A sketch side ``{"offset", "counts"}`` -> (offset, integer counts), trimmed of empty ends.

    ``whole``: the counts are known to be integers already (an unweighted sketch).
    """
    if not side:
        return 0, []
    counts = side.get("counts") or []
    if not whole:
        counts = _rounded_cumulatively(counts)
    offset = int(side.get("offset", 0))
    if not counts or (counts[0] and counts[-1]):  # the sketch's own form: no empty ends
        return offset, counts
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

    def __init__(
        self,
        scale: int = 0,
        zero_count: int = 0,
        positive: Buckets = (0, []),
        negative: Buckets = (0, []),
        sum: float = 0.0,
        min: float | None = None,
        max: float | None = None,
    ) -> None:
        self.scale, self.zero_count = scale, zero_count
        self.positive, self.negative = positive, negative
        self.sum, self.min, self.max = sum, min, max

    @classmethod
    def from_sketch(cls, sketch: Mapping[str, Any]) -> ExpHistogram:
        """The dict form of zibrato.sketch (COMMON.md's contract), counts rounded.

        An integer ``count`` means no fractional weight went in: the bucket
        counts are integers and are taken as they are.
        """
        whole = type(sketch.get("count")) is int
        return cls(
            scale=int(sketch.get("scale", 0)),
            zero_count=int(round(sketch.get("zero_count", 0))),
            positive=rounded_buckets(sketch.get("positive"), whole),
            negative=rounded_buckets(sketch.get("negative"), whole),
            sum=float(sketch.get("sum", 0.0)),
            min=sketch.get("min"),
            max=sketch.get("max"),
        )

    @property
    def count(self) -> int:
        return self.zero_count + sum(self.positive[1]) + sum(self.negative[1])

    def merged(self, other: ExpHistogram) -> ExpHistogram:
        """Both brought to the smaller scale, counts added (how the spec merges them)."""
        scale = min(self.scale, other.scale)
        pos = add_buckets(
            downscale(self.positive[0], self.positive[1], self.scale - scale),
            downscale(other.positive[0], other.positive[1], other.scale - scale),
        )
        neg = add_buckets(
            downscale(self.negative[0], self.negative[1], self.scale - scale),
            downscale(other.negative[0], other.negative[1], other.scale - scale),
        )
        lows = [v for v in (self.min, other.min) if v is not None]
        highs = [v for v in (self.max, other.max) if v is not None]
        return ExpHistogram(
            scale,
            self.zero_count + other.zero_count,
            pos,
            neg,
            self.sum + other.sum,
            min(lows) if lows else None,
            max(highs) if highs else None,
        )

    def fill(self, point: pb.ExponentialHistogramDataPoint, start: int, end: int) -> None:
        """Write this histogram into ``point`` (which holds its attributes already)."""
        count = self.count
        point.start_time_unix_nano, point.time_unix_nano = start, end
        point.count, point.scale, point.zero_count = count, self.scale, self.zero_count
        for buckets, (offset, counts) in ((point.positive, self.positive), (point.negative, self.negative)):
            buckets.offset = offset
            buckets.bucket_counts.extend(counts)
        if count:
            point.sum = self.sum
            if self.min is not None and self.max is not None:
                point.min, point.max = float(self.min), float(self.max)


__all__ = ["Buckets", "ExpHistogram", "add_buckets", "downscale", "rounded_buckets"]
