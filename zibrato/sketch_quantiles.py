"""Reading a distribution sketch: quantiles by nearest rank, and values spread over it.

Why apart from :mod:`zibrato.sketch`: adding and merging (the sketch's state)
change often for speed; how a quantile is answered from that state (nearest
rank, the bucket's representative value, kept within [min, max]) is the
accuracy contract, stated once here. :class:`SketchQuantiles` is the base of
:class:`zibrato.sketch.Sketch` and reads only the attributes it declares.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence

from .sketch_buckets import Buckets, rank_of, relative_error_of, representative

__all__ = ["SketchQuantiles"]


class SketchQuantiles:
    """The answers of a :class:`zibrato.sketch.Sketch` (its exact values, or its buckets)."""

    __slots__ = ()

    scale: int
    positive: Buckets
    negative: Buckets
    zero_count: float
    count: float
    min: float
    max: float
    _values: list[float] | None

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
        rank = rank_of(q, self.count)
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
                out.append(ordered[min(max(rank_of(q, self.count), 1), len(ordered)) - 1])
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
            yield count, self._clamp(-representative(index, self.scale))
        if self.zero_count:
            yield self.zero_count, self._clamp(0.0)
        for index, count in self.positive.items():
            yield count, self._clamp(representative(index, self.scale))

    def _bucket_quantile(self, rank: float) -> float:
        seen: float = 0
        for count, value in self._walk():
            seen += count
            if seen >= rank:
                return value
        return self.max  # float weights: the running sum fell a hair short of count

    def _clamp(self, value: float) -> float:
        return min(max(value, self.min), self.max)
