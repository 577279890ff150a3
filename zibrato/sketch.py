"""Mergeable sketches: distributions (exponential histograms) and unique counts (HyperLogLog).

Why: a percentile computed by one worker cannot be combined with another's
(averaging p99s is wrong), while a sketch can: merging two sketches answers as
one sketch of all the data would, across workers, hosts and intervals.

:class:`Sketch` -- a distribution
---------------------------------
Exact while small (``max_exact`` values kept as they are, nearest-rank
quantiles), then an OpenTelemetry base-2 exponential histogram: at scale
``s`` the base is ``b = 2 ** (2 ** -s)`` and positive bucket ``i`` holds the
values in ``(b**i, b**(i+1)]``; negative values mirror it; zero has a bucket
of its own. Exporting to OTLP ``ExponentialHistogram`` or Prometheus native
histograms is therefore lossless.

* **Relative error.** A quantile is answered with the value that is closest,
  relatively, to every point of its bucket (``2 L U / (L + U)``), so it is
  within ``(b - 1) / (b + 1)`` of the true nearest-rank value. The scale is
  the largest whose bound meets ``relative_error``: 1 % -> scale 6 (0.54 %),
  0.5 % -> scale 7 (0.27 %), 2 % -> scale 5 (1.08 %).
* **Bounded memory.** At most ``max_buckets`` buckets per sign (2,048 by
  default: at scale 6 a range of 2**32, e.g. 1 us to over an hour), each
  sign a dense array of 8-byte counts (:class:`Buckets`): 16 kB at most. A series
  whose range needs more is brought to a lower scale (each step merges
  pairs of buckets and doubles the error bound: scale 5 ~ 1.1 %); the scale
  is in :meth:`Sketch.to_dict` and :attr:`Sketch.relative_error_bound` says
  the bound in force.
* **Merging** brings both sketches to the smaller scale (lower still if the
  union needs it) and adds counts. The mapping uses ``log2``, exact on powers
  of two, and a scale change is an exact multiplication by a power of two,
  so a value lands in the same bucket whether it was added at a scale and
  downscaled, or added at the lower scale: merging is associative and
  commutative, and the result equals the one sketch of all the data (counts,
  min, max, buckets; ``sum`` up to float rounding).
* ``count``, ``sum``, ``min`` and ``max`` are kept exactly (``sum`` as a
  running float sum). Weights (``1 / sample rate``) count each value as that
  many observations; a weighted value ends exact mode.

Where the parts live: the mapping and the bucket store in
:mod:`zibrato.sketch_buckets`, the quantiles in :mod:`zibrato.sketch_quantiles`,
:class:`SetSketch` (unique members, HyperLogLog) in :mod:`zibrato.set_sketch`;
this module re-exports their public names.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from operator import neg as _neg
from typing import Any

from .set_sketch import DEFAULT_PRECISION, DEFAULT_SET_MAX_EXACT, SetSketch
from .sketch_buckets import (
    DEFAULT_MAX_BUCKETS,
    DEFAULT_RELATIVE_ERROR,
    MAX_SCALE,
    MIN_SCALE,
    Buckets,
    bucket_ends,
    dense,
    relative_error_of,
    scale_for,
    span,
)
from .sketch_quantiles import SketchQuantiles
from .summary import SketchDict

__all__ = [
    "Sketch",
    "SetSketch",
    "Buckets",
    "scale_for",
    "relative_error_of",
    "DEFAULT_RELATIVE_ERROR",
    "DEFAULT_MAX_BUCKETS",
    "DEFAULT_MAX_EXACT",
    "DEFAULT_PRECISION",
    "DEFAULT_SET_MAX_EXACT",
    "MAX_SCALE",
    "MIN_SCALE",
]

DEFAULT_MAX_EXACT = 1024
_BULK = 64  # a batch of at least this many values of one sign, into an empty sketch, is counted in C
_BULK_LARGE = 4096  # ... and into any sketch


class Sketch(SketchQuantiles):
    """A mergeable distribution: exact while small, then an exponential histogram (module docstring).

    >>> s = Sketch()
    >>> for v in (0.002, 0.003, 0.5): s.add(v)
    >>> s.quantile(0.5)
    0.003
    """

    __slots__ = (
        "max_buckets",
        "max_exact",
        "initial_scale",
        "scale",
        "_factor",
        "positive",
        "negative",
        "zero_count",
        "count",
        "sum",
        "min",
        "max",
        "_values",
    )

    def __init__(
        self,
        relative_error: float = DEFAULT_RELATIVE_ERROR,
        max_buckets: int = DEFAULT_MAX_BUCKETS,
        max_exact: int = DEFAULT_MAX_EXACT,
    ) -> None:
        if isinstance(max_buckets, bool) or not isinstance(max_buckets, int) or max_buckets < 2:
            raise ValueError(f"max_buckets must be an integer >= 2, got {max_buckets!r}")
        if isinstance(max_exact, bool) or not isinstance(max_exact, int) or max_exact < 0:
            raise ValueError(f"max_exact must be an integer >= 0, got {max_exact!r}")
        self.max_buckets, self.max_exact = max_buckets, max_exact
        self.initial_scale = self.scale = scale_for(relative_error)
        self._factor = math.ldexp(1.0, self.scale)
        #: the counts per sign; a negative value -x is counted at the index of x
        self.positive = Buckets()
        self.negative = Buckets()
        self.zero_count: float = 0
        self.count: float = 0
        self.sum: float = 0.0
        self.min = math.inf
        self.max = -math.inf
        #: the values themselves while exact (None once bucketed)
        self._values: list[float] | None = [] if max_exact else None

    # --- adding -----------------------------------------------------------------

    def add(self, value: float, weight: float = 1) -> None:
        """Add one observation; ``weight`` observations of it (1 / sample rate), positive and finite."""
        if (value.__class__ is not float and value.__class__ is not int) or not math.isfinite(value) or weight != 1:
            self.add_many((value,), weight)  # the checks, with their messages
            return
        if value < self.min:
            self.min = value
        if value > self.max:
            self.max = value
        self.count += 1
        self.sum += value
        kept = self._values
        if kept is not None:
            if len(kept) < self.max_exact:
                kept.append(value)
                return
            self._start_buckets()
        if value > 0:  # inline, the common case of _bucket
            buckets = self.positive
            index = math.ceil(math.log2(value) * self._factor) - 1
            j = index - buckets.offset
            if 0 <= j < len(buckets.counts):
                buckets.counts[j] += 1
            else:
                self._new_bucket(buckets, index, 1)
        else:
            self._bucket((value,), 1)

    def add_many(self, values: Sequence[float], weight: float = 1) -> None:
        """Add finite values, each counting ``weight`` times; a ValueError leaves the sketch unchanged."""
        if not values:
            return
        if not all(isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v) for v in values):
            raise ValueError("sketch values must be finite numbers")
        if isinstance(weight, bool) or not isinstance(weight, (int, float)) or not (0 < weight < math.inf):
            raise ValueError(f"weight must be a positive finite number, got {weight!r}")
        self._add_unchecked(values, weight)

    def _add_unchecked(self, values: Sequence[float], weight: float = 1) -> None:
        """:meth:`add_many` without validation (the aggregator's values are validated on the wire)."""
        n = len(values)
        low, high = min(values), max(values)
        if low < self.min:
            self.min = low
        if high > self.max:
            self.max = high
        if weight == 1:
            self.count += n
            self.sum += sum(values)
            kept = self._values
            if kept is not None:
                if len(kept) + n <= self.max_exact:
                    kept.extend(values)
                    return
                self._start_buckets()
        else:
            self.count += n * weight
            self.sum += sum(values) * weight
            if self._values is not None:
                self._start_buckets()
        # In C when building anew (sparse: new buckets at every turn) or for very large batches;
        # the Python loop is faster for a record into buckets already in use.
        if (n >= _BULK_LARGE or (n >= _BULK and not (self.positive.counts or self.negative.counts))) and (
            low > 0 or high < 0
        ):
            self._bucket_bulk(values, weight, low, high)
        else:
            self._bucket(values, weight)

    def _start_buckets(self) -> None:
        kept, self._values = self._values, None
        if kept:
            self._bucket(kept, 1)

    def _bucket_bulk(self, values: Sequence[float], weight: float, low: float, high: float) -> None:
        """Many values of one sign (an exact series at flush, a huge record): counted in C.

        The buckets a batch needs are known from its extremes, so the scale is
        lowered once, first, if it must be; then ``map`` and ``Counter`` count
        every value's index without a Python loop per value.
        """
        magnitudes: Iterable[float]
        if low > 0:
            buckets, magnitudes, smallest, largest = self.positive, values, low, high
        else:
            buckets, magnitudes, smallest, largest = self.negative, map(_neg, values), -high, -low
        factor = self._factor
        first = math.ceil(math.log2(smallest) * factor) - 1
        last = math.ceil(math.log2(largest) * factor) - 1
        if buckets.counts:
            first, last = min(first, buckets.offset), max(last, buckets.last)
        shift = 0
        while (last >> shift) - (first >> shift) >= self.max_buckets and self.scale - shift > MIN_SCALE:
            shift += 1
        if shift:
            self._downscale(shift)
            factor = self._factor
        buckets.cover(first >> shift, last >> shift)
        counts, offset = buckets.counts, buckets.offset + 1  # index = upper - 1
        for upper, n in Counter(map(math.ceil, map(factor.__mul__, map(math.log2, magnitudes)))).items():
            counts[upper - offset] += n * weight

    def _bucket(self, values: Iterable[float], weight: float) -> None:
        """Count values into buckets: the hot loop (``log2`` keeps bucket edges exact on powers of 2)."""
        positive, negative = self.positive, self.negative
        factor, log2, ceil = self._factor, math.log2, math.ceil
        pos, pos_offset, pos_size = positive.counts, positive.offset, len(positive.counts)
        neg, neg_offset, neg_size = negative.counts, negative.offset, len(negative.counts)
        zeros: float = 0
        for x in values:
            if x > 0:
                j = ceil(log2(x) * factor) - 1 - pos_offset
                if 0 <= j < pos_size:
                    pos[j] += weight
                    continue
                self._new_bucket(positive, j + pos_offset, weight)
            elif x < 0:
                j = ceil(log2(-x) * factor) - 1 - neg_offset
                if 0 <= j < neg_size:
                    neg[j] += weight
                    continue
                self._new_bucket(negative, j + neg_offset, weight)
            else:
                zeros += weight
                continue
            # a bucket was added (and the scale may have dropped): reload
            factor = self._factor
            pos, pos_offset, pos_size = positive.counts, positive.offset, len(positive.counts)
            neg, neg_offset, neg_size = negative.counts, negative.offset, len(negative.counts)
        if zeros:
            self.zero_count += zeros

    def _new_bucket(self, buckets: Buckets, index: int, weight: float) -> None:
        """A bucket outside those held: within ``max_buckets`` of the others, or lower the scale first."""
        if buckets.counts:
            low, high = min(buckets.offset, index), max(buckets.last, index)
            shift = 0
            while (high >> shift) - (low >> shift) >= self.max_buckets and self.scale - shift > MIN_SCALE:
                shift += 1
            if shift:
                self._downscale(shift)
                index >>= shift
        buckets.cover(*span(buckets, index, index))
        buckets.counts[index - buckets.offset] += weight

    def _read_buckets(self, buckets: Buckets, scale: int, offset: int, counts: Sequence[float]) -> None:
        """Counts of one sign at ``scale`` from ``offset`` on, into empty ``buckets``: one pass.

        The span they need is known first, so the scale is lowered once (never
        below MIN_SCALE) and every index is shifted by the scale in force, the
        other sign's lowering included.
        """
        populated = [(offset + i, c) for i, c in enumerate(counts) if c]
        for _, count in populated:
            if not (0 < count < math.inf):
                raise ValueError(f"bad bucket count {count!r}")
        if not populated:
            return
        low, high = populated[0][0], populated[-1][0]
        shift = scale - self.scale
        while (high >> shift) - (low >> shift) >= self.max_buckets:
            if scale - shift <= MIN_SCALE:
                raise ValueError(f"buckets {low}..{high} do not fit {self.max_buckets} even at scale {MIN_SCALE}")
            shift += 1
        if scale - shift < self.scale:
            self._downscale(self.scale - (scale - shift))
        buckets.cover(low >> shift, high >> shift)
        table, first = buckets.counts, buckets.offset
        for index, count in populated:
            table[(index >> shift) - first] += count

    def _downscale(self, shift: int) -> None:
        """Lower the scale by ``shift``: bucket i becomes i >> shift (pairs merge)."""
        self.positive.shifted(shift)
        self.negative.shifted(shift)
        self.scale -= shift
        self._factor = math.ldexp(1.0, self.scale)

    # --- merging ----------------------------------------------------------------

    def merge(self, other: Sketch) -> Sketch:
        """Add ``other``'s observations to this sketch (in place; returns self)."""
        if not other.count:
            return self
        if (
            self._values is not None
            and other._values is not None
            and len(self._values) + len(other._values) <= self.max_exact
        ):
            self._values.extend(other._values)
        else:
            if self._values is not None:
                self._start_buckets()
            source = other if other._values is None else other._bucketed()
            self._merge_buckets(source)
        self.count += other.count
        self.sum += other.sum
        self.min = min(self.min, other.min)
        self.max = max(self.max, other.max)
        return self

    def _merge_buckets(self, other: Sketch) -> None:
        target = min(self.scale, other.scale)
        shift = 0
        while not self._fits(other, target - shift) and target - shift > MIN_SCALE:
            shift += 1
        if self.scale > target - shift:
            self._downscale(self.scale - (target - shift))
        other_shift = other.scale - self.scale
        for mine, theirs in ((self.positive, other.positive), (self.negative, other.negative)):
            if not theirs.counts:
                continue
            mine.cover(*span(mine, theirs.offset >> other_shift, theirs.last >> other_shift))
            counts, offset = mine.counts, mine.offset
            for index, count in theirs.items():
                counts[(index >> other_shift) - offset] += count
        self.zero_count += other.zero_count

    def _fits(self, other: Sketch, scale: int) -> bool:
        """Whether the union of both sketches' buckets fits ``max_buckets`` per sign at ``scale``."""
        for mine, theirs in ((self.positive, other.positive), (self.negative, other.negative)):
            ends = [i >> (self.scale - scale) for i in bucket_ends(mine)]
            ends += [i >> (other.scale - scale) for i in bucket_ends(theirs)]
            if ends and max(ends) - min(ends) >= self.max_buckets:
                return False
        return True

    def _bucketed(self) -> Sketch:
        """This sketch as buckets only (an exact sketch's values counted into a copy)."""
        copy = Sketch(max_buckets=self.max_buckets, max_exact=0)
        copy.initial_scale = copy.scale = self.initial_scale
        copy._factor = math.ldexp(1.0, copy.scale)
        if self._values is None:
            copy.scale, copy._factor = self.scale, self._factor
            copy.positive, copy.negative = self.positive.copy(), self.negative.copy()
            copy.zero_count = self.zero_count
        elif self._values:
            values = self._values
            low, high = min(values), max(values)
            if len(values) >= _BULK and (low > 0 or high < 0):
                copy._bucket_bulk(values, 1, low, high)
            else:
                copy._bucket(values, 1)
        copy.count, copy.sum, copy.min, copy.max = self.count, self.sum, self.min, self.max
        return copy

    # --- the dict form ----------------------------------------------------------

    def to_dict(self) -> SketchDict:
        """The plain-dict form (OpenTelemetry ExponentialHistogram fields; JSON- and msgpack-ready)."""
        source = self if self._values is None else self._bucketed()
        empty = not self.count
        return {
            "scale": source.scale,
            "zero_count": source.zero_count,
            "positive": dense(source.positive),
            "negative": dense(source.negative),
            "count": self.count,
            "sum": self.sum,
            "min": None if empty else self.min,
            "max": None if empty else self.max,
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any], max_buckets: int = DEFAULT_MAX_BUCKETS) -> Sketch:
        """A sketch from :meth:`to_dict`'s form (or an OTLP exponential histogram's fields)."""
        try:
            scale = int(data["scale"])
            if not MIN_SCALE <= scale <= MAX_SCALE:
                raise ValueError(f"scale {scale} outside [{MIN_SCALE}, {MAX_SCALE}]")
            sketch = cls(max_buckets=max_buckets, max_exact=0)  # any scale: a coarse one has no relative error < 1
            sketch.initial_scale = sketch.scale = scale
            sketch._factor = math.ldexp(1.0, scale)
            for name, buckets in (("positive", sketch.positive), ("negative", sketch.negative)):
                part = data.get(name) or {"offset": 0, "counts": []}
                sketch._read_buckets(buckets, scale, int(part["offset"]), part["counts"])
            sketch.zero_count = data.get("zero_count") or 0
            sketch.count, sketch.sum = data["count"], float(data["sum"])
            if sketch.count:
                sketch.min, sketch.max = data["min"], data["max"]
        except (KeyError, TypeError) as error:
            raise ValueError(f"not a sketch dict: {error!r}") from None
        return sketch

    def __repr__(self) -> str:
        mode = "exact" if self._values is not None else f"scale {self.scale}"
        return f"<Sketch {mode}, count {self.count}, {self.buckets_held} buckets>"
