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
  default: at scale 6 a range of 2**32, e.g. 1 us to over an hour). A series
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
from collections import Counter
from operator import neg as _neg
from fractions import Fraction
from typing import Iterable, Sequence

__all__ = ["Sketch", "SetSketch", "scale_for", "relative_error_of",
           "DEFAULT_RELATIVE_ERROR", "DEFAULT_MAX_BUCKETS"]

DEFAULT_RELATIVE_ERROR = 0.01
DEFAULT_MAX_BUCKETS = 2048
DEFAULT_MAX_EXACT = 1024
MAX_SCALE = 20
MIN_SCALE = -10
_BULK = 64  # a batch of at least this many values of one sign is counted in C


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
        raise ValueError(f"relative error must be in [{relative_error_of(MAX_SCALE):.2g}, 1), "
                         f"got {relative_error!r}")
    for scale in range(MIN_SCALE, MAX_SCALE + 1):
        if relative_error_of(scale) <= relative_error:
            return scale
    return MAX_SCALE  # pragma: no cover - checked above


def _rank(q: float, count: float) -> float:
    """Nearest rank ``ceil(q * count)``, with q taken as the decimal written (0.999 * 1000 is 999)."""
    return math.ceil(Fraction(repr(float(q))) * Fraction(count))


def _power_of_base(index: int, scale: int) -> float:
    """b ** index = 2 ** (index / 2 ** scale), inf past the float range."""
    try:
        return 2.0 ** math.ldexp(index, -scale)
    except OverflowError:
        return math.inf


def _representative(index: int, scale: int) -> float:
    """The value relatively closest to every point of bucket ``index``: 2 L U / (L + U).

    Computed as L * 2b / (b + 1) (U = L * b), which neither overflows nor underflows early.
    """
    base = 2.0 ** math.ldexp(1.0, -scale) if scale > -10 else math.inf
    factor = 2.0 if math.isinf(base) else 2 * base / (base + 1)
    return _power_of_base(index, scale) * factor


class Sketch:
    """A mergeable distribution: exact while small, then an exponential histogram (module docstring).

    >>> s = Sketch()
    >>> for v in (0.002, 0.003, 0.5): s.add(v)
    >>> s.quantile(0.5)
    0.003
    """

    __slots__ = ("max_buckets", "max_exact", "initial_scale", "scale", "_factor", "positive",
                 "negative", "_bounds", "zero_count", "count", "sum", "min", "max", "_values")

    def __init__(self, relative_error: float = DEFAULT_RELATIVE_ERROR,
                 max_buckets: int = DEFAULT_MAX_BUCKETS, max_exact: int = DEFAULT_MAX_EXACT) -> None:
        if isinstance(max_buckets, bool) or not isinstance(max_buckets, int) or max_buckets < 2:
            raise ValueError(f"max_buckets must be an integer >= 2, got {max_buckets!r}")
        if isinstance(max_exact, bool) or not isinstance(max_exact, int) or max_exact < 0:
            raise ValueError(f"max_exact must be an integer >= 0, got {max_exact!r}")
        self.max_buckets, self.max_exact = max_buckets, max_exact
        self.initial_scale = self.scale = scale_for(relative_error)
        self._factor = math.ldexp(1.0, self.scale)
        #: bucket index -> count, per sign; a negative value -x is counted at the index of x
        self.positive: dict[int, float] = {}
        self.negative: dict[int, float] = {}
        #: [lowest, highest] index in use, per bucket dict (keyed by id: the dicts are never replaced)
        self._bounds: dict[int, list[int]] = {}
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
        if (value.__class__ is not float and value.__class__ is not int) or not math.isfinite(value) \
                or weight != 1:
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
            index = math.ceil(math.log2(value) * self._factor) - 1
            positive = self.positive
            if index in positive:
                positive[index] += 1
            else:
                self._new_bucket(positive, index, 1)
        else:
            self._bucket((value,), 1)

    def add_many(self, values: Sequence[float], weight: float = 1) -> None:
        """Add finite values, each counting ``weight`` times; a ValueError leaves the sketch unchanged."""
        if not values:
            return
        if not all(isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)
                   for v in values):
            raise ValueError("sketch values must be finite numbers")
        if isinstance(weight, bool) or not isinstance(weight, (int, float)) or \
                not (0 < weight < math.inf):
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
        if n >= _BULK and (low > 0 or high < 0):
            self._bucket_bulk(values, weight, low, high)
        else:
            self._bucket(values, weight)

    def _start_buckets(self) -> None:
        kept, self._values = self._values, None
        if kept:
            self._bucket(kept, 1)

    def _bucket_bulk(self, values: Sequence[float], weight: float, low: float, high: float) -> None:
        """Many values of one sign (a timer's record, an exact series at flush): counted in C.

        The buckets a batch needs are known from its extremes, so the scale is
        lowered once, first, if it must be; then ``map`` and ``Counter`` count
        every value's index without a Python loop per value.
        """
        if low > 0:
            buckets, magnitudes, smallest, largest = self.positive, values, low, high
        else:
            buckets, magnitudes, smallest, largest = self.negative, map(_neg, values), -high, -low
        factor = self._factor
        first = math.ceil(math.log2(smallest) * factor) - 1
        last = math.ceil(math.log2(largest) * factor) - 1
        bounds = self._bounds.get(id(buckets))
        if bounds is not None:
            first, last = min(first, bounds[0]), max(last, bounds[1])
        shift = 0
        while (last >> shift) - (first >> shift) >= self.max_buckets:
            shift += 1
        if shift:
            self._downscale(shift)
            factor = self._factor
        counted = Counter(map(math.ceil, map(factor.__mul__, map(math.log2, magnitudes))))
        get = buckets.get
        for upper, count in counted.items():
            buckets[upper - 1] = get(upper - 1, 0) + count * weight
        self._bounds[id(buckets)] = [first >> shift, last >> shift]

    def _bucket(self, values: Iterable[float], weight: float) -> None:
        """Count values into buckets: the hot loop (``log2`` keeps bucket edges exact on powers of 2)."""
        positive, negative = self.positive, self.negative
        factor, log2, ceil = self._factor, math.log2, math.ceil
        zeros = 0
        for x in values:
            if x > 0:
                i = ceil(log2(x) * factor) - 1
                if i in positive:
                    positive[i] += weight
                else:
                    self._new_bucket(positive, i, weight)
                    factor = self._factor
            elif x < 0:
                i = ceil(log2(-x) * factor) - 1
                if i in negative:
                    negative[i] += weight
                else:
                    self._new_bucket(negative, i, weight)
                    factor = self._factor
            else:
                zeros += weight
        if zeros:
            self.zero_count += zeros

    def _new_bucket(self, buckets: dict, index: int, weight: float) -> None:
        """A bucket not yet used: within ``max_buckets`` of the others, or lower the scale first."""
        bounds = self._bounds.get(id(buckets))
        if bounds is None:
            self._bounds[id(buckets)] = [index, index]
            buckets[index] = weight
            return
        low, high = bounds
        if low <= index <= high:  # a gap between buckets in use
            buckets[index] = weight
            return
        if index < low:
            low = index
        else:
            high = index
        shift = 0
        while (high >> shift) - (low >> shift) >= self.max_buckets:
            shift += 1
        if shift:
            self._downscale(shift)  # shifts bounds too
            low, high, index = low >> shift, high >> shift, index >> shift
        bounds[0], bounds[1] = low, high
        buckets[index] = buckets.get(index, 0) + weight

    def _downscale(self, shift: int) -> None:
        """Lower the scale by ``shift``: bucket i becomes i >> shift (pairs merge, in place)."""
        for buckets in (self.positive, self.negative):
            if not buckets:
                continue
            merged: dict[int, float] = {}
            for index, count in buckets.items():
                merged[index >> shift] = merged.get(index >> shift, 0) + count
            buckets.clear()
            buckets.update(merged)
            bounds = self._bounds[id(buckets)]
            bounds[0] >>= shift
            bounds[1] >>= shift
        self.scale -= shift
        self._factor = math.ldexp(1.0, self.scale)

    # --- merging ----------------------------------------------------------------

    def merge(self, other: "Sketch") -> "Sketch":
        """Add ``other``'s observations to this sketch (in place; returns self)."""
        if not other.count:
            return self
        if self._values is not None and other._values is not None and \
                len(self._values) + len(other._values) <= self.max_exact:
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

    def _merge_buckets(self, other: "Sketch") -> None:
        target = min(self.scale, other.scale)
        shift = 0
        while not self._fits(other, target - shift):
            shift += 1
        if self.scale > target - shift:
            self._downscale(self.scale - (target - shift))
        other_shift = other.scale - self.scale
        for mine, theirs in ((self.positive, other.positive), (self.negative, other.negative)):
            for index, count in theirs.items():
                index >>= other_shift
                if index in mine:
                    mine[index] += count
                else:
                    self._new_bucket(mine, index, count)
        self.zero_count += other.zero_count

    def _fits(self, other: "Sketch", scale: int) -> bool:
        """Whether the union of both sketches' buckets fits ``max_buckets`` per sign at ``scale``."""
        for mine, theirs in ((self.positive, other.positive), (self.negative, other.negative)):
            ends = [i >> (self.scale - scale) for i in self._ends(mine)]
            ends += [i >> (other.scale - scale) for i in other._ends(theirs)]
            if ends and max(ends) - min(ends) >= self.max_buckets:
                return False
        return True

    def _ends(self, buckets: dict) -> list[int]:
        bounds = self._bounds.get(id(buckets))
        return list(bounds) if bounds and buckets else []

    def _bucketed(self) -> "Sketch":
        """This sketch as buckets only (an exact sketch's values counted into a copy)."""
        copy = Sketch(max_buckets=self.max_buckets, max_exact=0)
        copy.initial_scale = copy.scale = self.initial_scale
        copy._factor = math.ldexp(1.0, copy.scale)
        if self._values is None:
            copy.scale, copy._factor = self.scale, self._factor
            for mine, theirs in ((copy.positive, self.positive), (copy.negative, self.negative)):
                mine.update(theirs)
                if theirs:
                    copy._bounds[id(mine)] = list(self._bounds[id(theirs)])
            copy.zero_count = self.zero_count
        elif self._values:
            copy._bucket(self._values, 1)
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

    def _walk(self):
        """(count, representative value) of each bucket, from the smallest values to the largest."""
        for index in sorted(self.negative, reverse=True):
            yield self.negative[index], self._clamp(-_representative(index, self.scale))
        if self.zero_count:
            yield self.zero_count, self._clamp(0.0)
        for index in sorted(self.positive):
            yield self.positive[index], self._clamp(_representative(index, self.scale))

    def _bucket_quantile(self, rank: float) -> float:
        seen: float = 0
        for index in sorted(self.negative, reverse=True):  # the most negative values first
            seen += self.negative[index]
            if seen >= rank:
                return self._clamp(-_representative(index, self.scale))
        seen += self.zero_count
        if seen >= rank:
            return self._clamp(0.0)
        for index in sorted(self.positive):
            seen += self.positive[index]
            if seen >= rank:
                return self._clamp(_representative(index, self.scale))
        return self.max  # float weights: the running sum fell a hair short of count

    def _clamp(self, value: float) -> float:
        return min(max(value, self.min), self.max)

    # --- the dict form ----------------------------------------------------------

    def to_dict(self) -> dict:
        """The plain-dict form (OpenTelemetry ExponentialHistogram fields; JSON- and msgpack-ready)."""
        source = self if self._values is None else self._bucketed()
        empty = not self.count
        return {"scale": source.scale, "zero_count": source.zero_count,
                "positive": source._dense(source.positive), "negative": source._dense(source.negative),
                "count": self.count, "sum": self.sum,
                "min": None if empty else self.min, "max": None if empty else self.max}

    def _dense(self, buckets: dict) -> dict:
        if not buckets:
            return {"offset": 0, "counts": []}
        low, high = self._bounds[id(buckets)]
        return {"offset": low, "counts": [buckets.get(i, 0) for i in range(low, high + 1)]}

    @classmethod
    def from_dict(cls, data: dict, max_buckets: int = DEFAULT_MAX_BUCKETS) -> "Sketch":
        """A sketch from :meth:`to_dict`'s form (or an OTLP exponential histogram's fields)."""
        try:
            scale = int(data["scale"])
            if not MIN_SCALE <= scale <= MAX_SCALE:
                raise ValueError(f"scale {scale} outside [{MIN_SCALE}, {MAX_SCALE}]")
            sketch = cls(relative_error=relative_error_of(scale) * (1 + 1e-9),
                         max_buckets=max_buckets, max_exact=0)
            sketch.initial_scale = sketch.scale = scale
            sketch._factor = math.ldexp(1.0, scale)
            for name, buckets in (("positive", sketch.positive), ("negative", sketch.negative)):
                part = data.get(name) or {"offset": 0, "counts": []}
                offset = int(part["offset"])
                for i, count in enumerate(part["counts"]):
                    if count:
                        if not (0 < count < math.inf):
                            raise ValueError(f"bad bucket count {count!r}")
                        sketch._new_bucket(buckets, offset + i, count)
            sketch.zero_count = data.get("zero_count") or 0
            sketch.count, sketch.sum = data["count"], float(data["sum"])
            if sketch.count:
                sketch.min, sketch.max = data["min"], data["max"]
        except (KeyError, TypeError) as error:
            raise ValueError(f"not a sketch dict: {error!r}") from None
        return sketch

    def __repr__(self) -> str:
        mode = "exact" if self._values is not None else f"scale {self.scale}"
        return f"<Sketch {mode}, count {self.count}, {len(self.positive) + len(self.negative)} buckets>"


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
        self.members: set | None = set()
        self.registers: bytearray | None = None

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

    def merge(self, other: "SetSketch") -> "SetSketch":
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

    def to_dict(self) -> dict:
        """``{"exact": True, "count", "members"}`` or ``{"exact": False, "count", "precision", "registers"}``
        (registers: base64 of one byte each)."""
        if self.members is not None:
            members = sorted(self.members, key=lambda m: (isinstance(m, str), m))
            return {"exact": True, "count": len(members), "members": members}
        return {"exact": False, "count": self.count, "precision": self.precision,
                "registers": base64.b64encode(bytes(self.registers)).decode("ascii")}

    @classmethod
    def from_dict(cls, data: dict, max_exact: int = DEFAULT_SET_MAX_EXACT) -> "SetSketch":
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
