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

:class:`SetSketch` -- unique members
------------------------------------
Exact (a Python set) up to ``max_exact`` members, then HyperLogLog with
``2 ** precision`` one-byte registers (precision 14: 16 KiB, standard error
``1.04 / sqrt(2 ** 14)`` = 0.81 %), 64-bit BLAKE2b hashes and Ertl's improved
raw estimator (O. Ertl, "New cardinality estimation algorithms for
HyperLogLog sketches", 2017), which needs no bias tables and is unbiased from
0 to billions. Merging takes the register-wise maximum (exact: the union).
"""

from __future__ import annotations

import base64
import hashlib
import math
from array import array
from collections import Counter
from collections.abc import Iterable, Iterator, Sequence
from fractions import Fraction
from operator import neg as _neg
from typing import Any

__all__ = [
    "Sketch",
    "SetSketch",
    "Buckets",
    "scale_for",
    "relative_error_of",
    "DEFAULT_RELATIVE_ERROR",
    "DEFAULT_MAX_BUCKETS",
]

DEFAULT_RELATIVE_ERROR = 0.01
DEFAULT_MAX_BUCKETS = 2048
DEFAULT_MAX_EXACT = 1024
MAX_SCALE = 20
MIN_SCALE = -10
_BULK = 64  # a batch of at least this many values of one sign, into an empty sketch, is counted in C
_BULK_LARGE = 4096  # ... and into any sketch


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


def _rank(q: float, count: float) -> int:
    """Nearest rank ``ceil(q * count)``, with q taken as the decimal written (0.999 * 1000 is 999)."""
    return math.ceil(Fraction(repr(float(q))) * Fraction(count))


def _power_of_base(index: int, scale: int) -> float:
    """b ** index = 2 ** (index / 2 ** scale), inf past the float range."""
    try:
        return float(2.0 ** math.ldexp(index, -scale))
    except OverflowError:
        return math.inf


def _representative(index: int, scale: int) -> float:
    """The value relatively closest to every point of bucket ``index``: 2 L U / (L + U).

    Computed as L * 2b / (b + 1) (U = L * b), which neither overflows nor underflows early.
    """
    base = 2.0 ** math.ldexp(1.0, -scale) if scale > -10 else math.inf
    factor = 2.0 if math.isinf(base) else 2 * base / (base + 1)
    return _power_of_base(index, scale) * factor


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


class Sketch:
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
        buckets.cover(*_span(buckets, index, index))
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
            mine.cover(*_span(mine, theirs.offset >> other_shift, theirs.last >> other_shift))
            counts, offset = mine.counts, mine.offset
            for index, count in theirs.items():
                counts[(index >> other_shift) - offset] += count
        self.zero_count += other.zero_count

    def _fits(self, other: Sketch, scale: int) -> bool:
        """Whether the union of both sketches' buckets fits ``max_buckets`` per sign at ``scale``."""
        for mine, theirs in ((self.positive, other.positive), (self.negative, other.negative)):
            ends = [i >> (self.scale - scale) for i in _ends(mine)]
            ends += [i >> (other.scale - scale) for i in _ends(theirs)]
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

    # --- answers ----------------------------------------------------------------

    @property
    def exact(self) -> bool:
        """True while every value is kept: quantiles are then exact nearest ranks."""
        return self._values is not None

    @property
    def relative_error_bound(self) -> float:
        """The relative error of quantiles now: 0 while exact, else that of the current scale."""
        return 0.0 if self._values is not None else relative_error_of(self.scale)

    @property
    def buckets_held(self) -> int:
        """Bucket slots held, both signs (8 bytes each): the memory that grows with the range."""
        return len(self.positive.counts) + len(self.negative.counts)

    def quantile(self, q: float) -> float:
        """The q-quantile (0 <= q <= 1) by nearest rank: exact while exact, else within the bound.

        Rank ``ceil(q * count)`` over the observations (weights included); the
        answer is kept within [min, max].
        """
        if not 0 <= q <= 1:
            raise ValueError(f"quantile must be in [0, 1], got {q!r}")
        if not self.count:
            raise ValueError("an empty sketch has no quantiles")
        if q == 0:
            return self.min
        rank = _rank(q, self.count)
        if rank >= self.count:
            return self.max
        if self._values is not None:
            ordered = sorted(self._values)
            return ordered[max(rank, 1) - 1]
        return self._bucket_quantile(max(rank, 1))

    def quantiles(self, qs: Sequence[float]) -> list[float]:
        """Several quantiles at once (one sort, or one walk of the buckets per quantile)."""
        if self._values is not None and self.count:
            ordered = sorted(self._values)
            out = []
            for q in qs:
                if not 0 <= q <= 1:
                    raise ValueError(f"quantile must be in [0, 1], got {q!r}")
                out.append(ordered[min(max(_rank(q, self.count), 1), len(ordered)) - 1])
            return out
        return [self.quantile(q) for q in qs]

    def evenly_spaced(self, m: int) -> list[float]:
        """``m`` values spread evenly over the distribution: its ``(k - 1/2) / m`` quantiles, k = 1..m.

        What a destination that wants raw values (statsd) can be sent in place
        of values no longer kept; in ascending order.
        """
        if m < 1 or not self.count:
            return []
        if self._values is not None:
            ordered = sorted(self._values)
            n = len(ordered)
            return [ordered[min(int((k + 0.5) * n / m), n - 1)] for k in range(m)]
        out: list[float] = []
        walk = self._walk()
        seen, value = 0.0, self.min
        for k in range(m):
            target = (k + 0.5) * self.count / m
            while seen < target:
                try:
                    count, value = next(walk)
                except StopIteration:
                    break
                seen += count
            out.append(value)
        return out

    def _walk(self) -> Iterator[tuple[float, float]]:
        """(count, representative value) of each bucket, from the smallest values to the largest."""
        for index, count in reversed(self.negative.items()):  # the most negative values first
            yield count, self._clamp(-_representative(index, self.scale))
        if self.zero_count:
            yield self.zero_count, self._clamp(0.0)
        for index, count in self.positive.items():
            yield count, self._clamp(_representative(index, self.scale))

    def _bucket_quantile(self, rank: float) -> float:
        seen: float = 0
        for count, value in self._walk():
            seen += count
            if seen >= rank:
                return value
        return self.max  # float weights: the running sum fell a hair short of count

    def _clamp(self, value: float) -> float:
        return min(max(value, self.min), self.max)

    # --- the dict form ----------------------------------------------------------

    def to_dict(self) -> dict[str, Any]:
        """The plain-dict form (OpenTelemetry ExponentialHistogram fields; JSON- and msgpack-ready)."""
        source = self if self._values is None else self._bucketed()
        empty = not self.count
        return {
            "scale": source.scale,
            "zero_count": source.zero_count,
            "positive": _dense(source.positive),
            "negative": _dense(source.negative),
            "count": self.count,
            "sum": self.sum,
            "min": None if empty else self.min,
            "max": None if empty else self.max,
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any], max_buckets: int = DEFAULT_MAX_BUCKETS) -> Sketch:
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


def _dense(buckets: Buckets) -> dict[str, Any]:
    if not buckets.counts:
        return {"offset": 0, "counts": []}
    return {"offset": buckets.offset, "counts": [_count(c) for c in buckets.counts]}


def _ends(buckets: Buckets) -> list[int]:
    return [buckets.offset, buckets.last] if buckets.counts else []


def _span(buckets: Buckets, low: int, high: int) -> tuple[int, int]:
    """The index range that covers ``buckets`` and ``low..high``."""
    if not buckets.counts:
        return low, high
    return min(buckets.offset, low), max(buckets.last, high)


# --- sets ---------------------------------------------------------------------------

DEFAULT_SET_MAX_EXACT = 1000
DEFAULT_PRECISION = 14


def _member_hash(member: str | int) -> int:
    """A 64-bit hash that is the same in every process (unlike hash()), strings and ints apart."""
    data = (b"s" + member.encode("utf-8")) if isinstance(member, str) else (b"i" + str(member).encode())
    return int.from_bytes(hashlib.blake2b(data, digest_size=8).digest(), "little")


def _sigma(x: float) -> float:
    if x == 1:
        return math.inf
    y, z = 1.0, x
    while True:
        x *= x
        previous = z
        z += x * y
        y += y
        if z == previous:
            return z


def _tau(x: float) -> float:
    if x == 0 or x == 1:
        return 0.0
    y, z = 1.0, 1 - x
    while True:
        x = math.sqrt(x)
        previous = z
        y *= 0.5
        z -= (1 - x) ** 2 * y
        if z == previous:
            return z / 3


class SetSketch:
    """Unique members of a set: exact up to ``max_exact``, then HyperLogLog (module docstring)."""

    __slots__ = ("max_exact", "precision", "members", "registers")

    def __init__(self, max_exact: int = DEFAULT_SET_MAX_EXACT, precision: int = DEFAULT_PRECISION) -> None:
        if not 4 <= precision <= 18:
            raise ValueError(f"precision must be in [4, 18], got {precision!r}")
        self.max_exact, self.precision = max_exact, precision
        #: the members while exact (None once sketched)
        self.members: set[str | int] | None = set()
        #: HyperLogLog's registers once past max_exact (empty while exact)
        self.registers = bytearray()

    @property
    def exact(self) -> bool:
        return self.members is not None

    @property
    def standard_error(self) -> float:
        """0 while exact, else HyperLogLog's 1.04 / sqrt(registers)."""
        return 0.0 if self.members is not None else 1.04 / math.sqrt(1 << self.precision)

    def add(self, member: str | int) -> None:
        self.update((member,))

    def update(self, members: Iterable[str | int]) -> None:
        """Add members (strings or integers; 99 and "99" are different members)."""
        if self.members is not None:
            self.members.update(members)
            if len(self.members) <= self.max_exact:
                return
            members, self.members = self.members, None
            self.registers = bytearray(1 << self.precision)
        registers, p = self.registers, self.precision
        bits = 64 - p
        mask = (1 << bits) - 1
        for member in members:
            h = _member_hash(member)
            index, rest = h >> bits, h & mask
            rank = bits - rest.bit_length() + 1
            if rank > registers[index]:
                registers[index] = rank

    def merge(self, other: SetSketch) -> SetSketch:
        """The union of both (in place; returns self). Precisions must match."""
        if other.members is not None:
            self.update(other.members)
            return self
        if other.precision != self.precision:
            raise ValueError(f"cannot merge precision {other.precision} into {self.precision}")
        if self.members is not None:
            members, self.members = self.members, None
            self.registers = bytearray(1 << self.precision)
            self.update(members)
        mine = self.registers
        for i, rank in enumerate(other.registers):
            if rank > mine[i]:
                mine[i] = rank
        return self

    @property
    def count(self) -> int:
        """The number of unique members: exact, or HyperLogLog's estimate (rounded)."""
        if self.members is not None:
            return len(self.members)
        m, bits = 1 << self.precision, 64 - self.precision
        histogram = [0] * (bits + 2)
        for rank in self.registers:
            histogram[rank] += 1
        z = m * _tau(1 - histogram[bits + 1] / m)
        for k in range(bits, 0, -1):
            z = 0.5 * (z + histogram[k])
        z += m * _sigma(histogram[0] / m)
        return round(m * m / (2 * math.log(2)) / z)

    def to_dict(self) -> dict[str, Any]:
        """``{"exact": True, "count", "members"}`` or ``{"exact": False, "count", "precision", "registers"}``
        (registers: base64 of one byte each)."""
        if self.members is not None:
            members = sorted(self.members, key=lambda m: (isinstance(m, str), m))
            return {"exact": True, "count": len(members), "members": members}
        return {
            "exact": False,
            "count": self.count,
            "precision": self.precision,
            "registers": base64.b64encode(bytes(self.registers)).decode("ascii"),
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any], max_exact: int = DEFAULT_SET_MAX_EXACT) -> SetSketch:
        try:
            if data.get("exact", "members" in data):
                sketch = cls(max_exact=max_exact)
                sketch.update(data["members"])
                return sketch
            sketch = cls(max_exact=max_exact, precision=int(data["precision"]))
            registers = base64.b64decode(data["registers"], validate=True)
        except (KeyError, TypeError, ValueError) as error:
            raise ValueError(f"not a set sketch dict: {error!r}") from None
        if len(registers) != 1 << sketch.precision:
            raise ValueError("set sketch registers do not match its precision")
        sketch.members, sketch.registers = None, bytearray(registers)
        return sketch

    def __repr__(self) -> str:
        mode = "exact" if self.members is not None else f"HyperLogLog p={self.precision}"
        return f"<SetSketch {mode}, count {self.count}>"
