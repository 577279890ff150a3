"""The statistics that turn one series' interval state into its summary (:mod:`zibrato.summary`).

Why apart from :mod:`zibrato.aggregation`: the aggregator's job is to hold
per-series state while records arrive (the hot loop); what a summary says
about that state (percentiles by nearest rank, mean, median, stddev, rates,
whether it is exact or sketched) is a separate concern, with its own rules
about precision, and what destinations' authors read to know what a number
means.

Exact or sketched
-----------------
A timer or histogram series is exact (an ``array('d')`` of its values) up to
the aggregator's ``max_exact`` values, then a :class:`Distribution` (a
:class:`~zibrato.sketch.Sketch` plus the sum of squares). :func:`exact_stats`
answers exact nearest ranks and ``"exact": True``; :func:`sketch_stats` answers
the sketch's quantiles, ``"exact": False`` and the ``"relative_error"`` in force.
Both give the series' sketch in its dict form, mergeable upstream. ``count``,
``sum``, ``sum_squares``, ``min``, ``max``, ``mean`` and ``stddev`` (population)
are exact either way (sums as running float sums). The sketch's quantiles are
within ``relative_error`` (1 % by default: scale 6, a bound of 0.54 %) of the
exact nearest-rank values in at most ``max_buckets`` buckets per sign (2,048:
5 orders of magnitude take ~1,100); a series whose range needs more is brought
to a lower scale, and its ``"relative_error"`` says the bound in force. A
sketched series' median is its 0.5 quantile by nearest rank.

Raw values
----------
A destination that forwards values (statsd computes its own percentiles)
asks for ``"values"``: every value in arrival order while exact (the array
itself, handed over rather than copied), or, once sketched, values spread
evenly over the sketch (its ``(k - 1/2) / m`` quantiles), with ``"sampled"``:
how many.

No non-finite number
--------------------
Sums can overflow (``1e308`` twice): :func:`all_finite` is the check the
aggregator makes before a summary leaves it; :func:`fsum` never raises.
"""

from __future__ import annotations

import functools
import math
from array import array
from collections.abc import Sequence
from decimal import Decimal
from fractions import Fraction
from typing import Any

from .sketch import SetSketch, Sketch, relative_error_of

__all__ = [
    "Distribution",
    "PercentileKey",
    "all_finite",
    "counter_stats",
    "exact_stats",
    "fsum",
    "gauge_stats",
    "nearest_rank",
    "parse_percentiles",
    "percentile_key",
    "set_stats",
    "sketch_stats",
]

#: (summary key, numerator, denominator of p / 100): one configured percentile, exactly
PercentileKey = tuple[str, int, int]


def percentile_key(p: float) -> str:
    """The summary key of percentile ``p``: 50 -> "p50", 99.9 -> "p99_9", 95.0 -> "p95".

    Written from the shortest decimal that round-trips the float, so distinct
    percentiles never share a key (99 vs 99.9 vs 99.99) and the key reads as
    the user wrote it.
    """
    text = format(Decimal(repr(float(p))), "f")
    if "." in text:
        text = text.rstrip("0").rstrip(".")
    return "p" + text.replace(".", "_")


@functools.lru_cache(maxsize=256)
def quantile_fraction(p: float) -> tuple[int, int]:
    """p / 100 as an exact fraction of the decimal p is written as (99.9 -> 999/1000).

    Exact, because the float arithmetic ``p / 100 * n`` lands just above an
    integer at rank boundaries (0.999 * 1000 == 999.0000000000001) and
    ``ceil`` would then pick the next value.
    """
    q = Fraction(repr(float(p))) / 100
    return q.numerator, q.denominator


def nearest_rank(sorted_values: Sequence[float], p: float) -> float:
    """The p-th percentile by nearest rank: the k-th smallest, k = ceil(p/100 * n) in [1, n].

    Nearest rank always returns one of the measured values (no interpolation),
    which is what statsd and most dashboards expect of "p99".
    """
    n = len(sorted_values)
    if not n:
        raise ValueError("no values: a percentile needs at least one")
    num, den = quantile_fraction(p)
    k = -(-num * n // den)
    return sorted_values[min(max(k, 1), n) - 1]


def parse_percentiles(percentiles: Sequence[Any]) -> list[PercentileKey]:
    """The percentiles a summary reports, checked: each a number in (0, 100], duplicates once, in order.

    ValueError names the first bad one.
    """
    parsed: dict[str, tuple[int, int]] = {}
    for p in percentiles:
        try:
            value = float(p)
        except (TypeError, ValueError):
            raise ValueError(f"percentile {p!r} is not a number") from None
        if not 0 < value <= 100:  # also rejects NaN
            raise ValueError(f"percentile {p!r} is outside (0, 100]")
        parsed.setdefault(percentile_key(value), quantile_fraction(value))
    return [(key, num, den) for key, (num, den) in parsed.items()]


class Distribution(Sketch):
    """A sketched timer or histogram series: the sketch plus the sum of squares (for stddev)."""

    __slots__ = ("squares",)

    def __init__(self, relative_error: float, max_buckets: int) -> None:
        super().__init__(relative_error=relative_error, max_buckets=max_buckets, max_exact=0)
        self.squares = 0.0

    def add_weighted(self, values: Sequence[float], weight: float) -> None:
        norm = math.hypot(*values)  # one C call, as accurate as summing the squares
        self.squares += norm * norm * weight  # (x * x overflows to inf; x ** 2 would raise)
        self._add_unchecked(values, weight)


# --- one kind each ------------------------------------------------------------------


def counter_stats(state: list[float], interval: float) -> dict[str, Any]:
    """A counter's ``[sum, count]``: the sum as a float, and per second over ``interval``."""
    value, count = state
    return {"value": float(value), "count": count, "rate": value / interval}


def gauge_stats(state: list[float]) -> dict[str, Any]:
    """A gauge's ``[last, count, min, max, sum(, time of last)]``."""
    last, count, low, high, total = state[:5]
    stats = {"value": last, "count": count, "min": low, "max": high, "sum": total}
    if len(state) > 5:  # merged from summaries: when the last value was taken
        stats["last_time"] = state[5]
    return stats


def set_stats(state: SetSketch) -> dict[str, Any]:
    return {"value": state.count, "exact": state.exact, "sketch": state.to_dict()}


def exact_stats(
    state: array[float],
    percentiles: Sequence[PercentileKey],
    relative_error: float,
    max_buckets: int,
    with_values: bool,
) -> dict[str, Any]:
    """An exact timer or histogram series (every value kept): nearest ranks, exact median.

    ``with_values``: the summary also carries ``"values"``, the array itself (handed over, not copied).
    """
    ordered = state.tolist()  # floats in memory order: the sums run faster before the sort
    count = len(ordered)
    total = fsum(ordered)
    norm = math.hypot(*ordered)
    squares = norm * norm
    mean = total / count
    # sqrt(sum((x - mean)**2) / n) in C, with hypot's extended precision
    stddev = math.dist(ordered, [mean] * count) / math.sqrt(count) if math.isfinite(mean) else mean
    sketch = Sketch(relative_error=relative_error, max_buckets=max_buckets, max_exact=0)
    sketch._add_unchecked(ordered)
    sketch.sum = total
    ordered.sort()
    low, high = ordered[0], ordered[-1]
    if low == high:  # fsum([0.1] * 3) / 3 is not 0.1
        mean, stddev = low, 0.0
    else:
        mean = min(max(mean, low), high)
    half = count // 2
    median = ordered[half] if count % 2 else (ordered[half - 1] + ordered[half]) / 2
    summary = _moments(count, total, squares, low, high, mean, median, stddev)
    for key, num, den in percentiles:
        summary[key] = ordered[min(max(-(-num * count // den), 1), count) - 1]
    summary["exact"] = True
    summary["sketch"] = sketch.to_dict()
    if with_values:
        summary["values"] = state
    return summary


def _moments(
    count: float, total: float, squares: float, low: float, high: float, mean: float, median: float, stddev: float
) -> dict[str, Any]:
    """The keys an exact and a sketched distribution summary share, in the order both write them."""
    return {
        "count": count,
        "sum": total,
        "sum_squares": squares,
        "min": low,
        "max": high,
        "mean": mean,
        "median": median,
        "stddev": stddev,
    }


def sketch_stats(state: Distribution, percentiles: Sequence[PercentileKey], spread: int) -> dict[str, Any]:
    """A sketched timer or histogram series: quantiles within the sketch's bound.

    ``spread``: when positive, the summary also carries ``"values"``, at most
    that many spread evenly over the sketch, and ``"sampled"``, how many.
    """
    count, total, squares = state.count, float(state.sum), float(state.squares)
    low, high = state.min, state.max
    mean = min(max(total / count, low), high) if math.isfinite(total) else total
    if low == high:
        stddev = 0.0
    else:
        stddev = math.sqrt(max((squares - total * mean) / count, 0.0))
    summary = _moments(count, total, squares, low, high, mean, state.quantile(0.5), stddev)
    for key, num, den in percentiles:
        summary[key] = state.quantile(num / den)
    summary["exact"] = False
    summary["relative_error"] = relative_error_of(state.scale)
    summary["sketch"] = state.to_dict()
    if spread:
        values = state.evenly_spaced(min(spread, max(1, math.ceil(count))))
        summary["values"], summary["sampled"] = values, len(values)
    return summary


# --- finiteness ---------------------------------------------------------------------------


def all_finite(summary: dict[str, Any]) -> bool:
    """True unless a number of the summary (or of its sketch's totals) is infinite or NaN."""
    isfinite = math.isfinite
    for value in summary.values():
        if value.__class__ is float and not isfinite(value):
            return False
    sketch = summary.get("sketch")
    if sketch is not None:
        for key in ("count", "sum", "zero_count"):
            value = sketch.get(key)
            if value.__class__ is float and not isfinite(value):
                return False
    return True


def fsum(values: Sequence[float]) -> float:
    """math.fsum, but an overflowing total is inf rather than an exception that loses the flush."""
    try:
        return math.fsum(values)
    except OverflowError:
        return sum(values)
