"""The exponential histogram's mapping (value -> bucket index at a scale) and its store (:class:`Buckets`).

Why apart from :mod:`zibrato.sketch`: the mapping is the one definition of
where a value lands (OpenTelemetry's base-2 exponential histogram: at scale
``s`` the base is ``b = 2 ** (2 ** -s)`` and positive bucket ``i`` holds
``(b**i, b**(i+1)]``); :mod:`zibrato.summary_check`, the OTLP and
Prometheus exports and the sketch all read it. The store is a dense array
of counts per sign, what the sketch's memory grows with.
"""

from __future__ import annotations

import math
from array import array
from fractions import Fraction

from .summary import BucketsDict

__all__ = [
    "Buckets",
    "DEFAULT_MAX_BUCKETS",
    "DEFAULT_RELATIVE_ERROR",
    "MAX_SCALE",
    "MIN_SCALE",
    "dense",
    "bucket_edge",
    "bucket_ends",
    "rank_of",
    "relative_error_of",
    "representative",
    "scale_for",
    "span",
]

DEFAULT_RELATIVE_ERROR = 0.01
DEFAULT_MAX_BUCKETS = 2048
MAX_SCALE = 20
MIN_SCALE = -10


def relative_error_of(scale: int) -> float:
    """The relative error bound of a quantile at ``scale``: (b - 1) / (b + 1), b = 2 ** (2 ** -scale)."""
    return math.tanh(math.ldexp(math.log(2), -scale) / 2)


def scale_for(relative_error: float) -> int:
    """The coarsest scale (fewest buckets) whose bound is within ``relative_error``: 0.01 -> 6.

    Each scale step halves the bound, so this is also the bound closest to
    the one asked for without exceeding it. At most scale 20 (OpenTelemetry's
    limit, ~6.6e-7).
    """
    if not relative_error_of(MAX_SCALE) <= relative_error < 1:
        raise ValueError(f"relative error must be in [{relative_error_of(MAX_SCALE):.2g}, 1), got {relative_error!r}")
    for scale in range(MIN_SCALE, MAX_SCALE + 1):
        if relative_error_of(scale) <= relative_error:
            return scale
    return MAX_SCALE  # pragma: no cover - checked above


def rank_of(q: float, count: float) -> int:
    """Nearest rank ``ceil(q * count)``, with q taken as the decimal written (0.999 * 1000 is 999)."""
    return math.ceil(Fraction(repr(float(q))) * Fraction(count))


def bucket_edge(index: int, scale: int) -> float:
    """b ** index = 2 ** (index / 2 ** scale), the lower edge of bucket ``index``: inf past the float range."""
    try:
        return float(2.0 ** math.ldexp(index, -scale))
    except OverflowError:
        return math.inf


def representative(index: int, scale: int) -> float:
    """The value relatively closest to every point of bucket ``index``: 2 L U / (L + U).

    Computed as L * 2b / (b + 1) (U = L * b), which neither overflows nor underflows early.
    """
    base = 2.0 ** math.ldexp(1.0, -scale) if scale > -10 else math.inf
    factor = 2.0 if math.isinf(base) else 2 * base / (base + 1)
    return bucket_edge(index, scale) * factor


class Buckets:
    """The counts of one sign: a dense array from bucket ``offset`` on (8 bytes a bucket)."""

    __slots__ = ("offset", "counts")

    def __init__(self) -> None:
        self.offset = 0
        self.counts = array("d")

    def __len__(self) -> int:
        """Buckets held (zeros between used ones included): what the memory grows with."""
        return len(self.counts)

    @property
    def last(self) -> int:
        return self.offset + len(self.counts) - 1

    def items(self) -> list[tuple[int, float]]:
        """(index, count) of every non-empty bucket, lowest index first."""
        offset = self.offset
        return [(offset + j, c) for j, c in enumerate(self.counts) if c]

    def cover(self, low: int, high: int) -> None:
        """Grow (with zeros) so that indices ``low..high`` have a slot."""
        counts = self.counts
        if not counts:
            self.offset, self.counts = low, array("d", bytes(8 * (high - low + 1)))
            return
        if low < self.offset:
            counts[0:0] = array("d", bytes(8 * (self.offset - low)))
            self.offset = low
        if high > self.last:
            counts.extend(array("d", bytes(8 * (high - self.last))))

    def shifted(self, shift: int) -> None:
        """Bucket i becomes i >> shift (pairs merge): the scale drops by ``shift``."""
        if not self.counts or not shift:
            return
        offset = self.offset
        low, high = offset >> shift, self.last >> shift
        merged = array("d", bytes(8 * (high - low + 1)))
        for j, c in enumerate(self.counts):
            if c:
                merged[((offset + j) >> shift) - low] += c
        self.offset, self.counts = low, merged

    def copy(self) -> Buckets:
        twin = Buckets()
        twin.offset, twin.counts = self.offset, array("d", self.counts)
        return twin


def _count(value: float) -> float:
    """An integral count as an int (JSON shows 3, not 3.0), a fractional one as it is."""
    return int(value) if value.is_integer() else value


def dense(buckets: Buckets) -> BucketsDict:
    """The dict form of one sign's counts: from ``offset`` on, integral counts as ints."""
    if not buckets.counts:
        return {"offset": 0, "counts": []}
    return {"offset": buckets.offset, "counts": [_count(c) for c in buckets.counts]}


def bucket_ends(buckets: Buckets) -> list[int]:
    return [buckets.offset, buckets.last] if buckets.counts else []


def span(buckets: Buckets, low: int, high: int) -> tuple[int, int]:
    """The index range that covers ``buckets`` and ``low..high``."""
    if not buckets.counts:
        return low, high
    return min(buckets.offset, low), max(buckets.last, high)
