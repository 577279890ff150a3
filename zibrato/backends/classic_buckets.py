"""Classic ``le`` buckets for Prometheus: which bounds a series gets, and how a sketch's counts fall in them.

Pure code, shared by zibrato-prometheus and zibrato-remote-write. Native
histograms need no bounds; classic ones do, and a bad choice is a histogram
whose every observation lands in ``+Inf``. So the bounds follow the unit:

* a timer, or a histogram in seconds (``s``, ``seconds``): powers of two from
  2**-10 s (~1 ms) to 32 s (:data:`DEFAULT_BUCKETS`, today's bounds), which are
  sketch bucket boundaries at every scale >= 0, so the counts are exact;
* a histogram in bytes (``bytes``, ``byte``, ``B``): powers of 4 from 64 B to
  1 GiB (:data:`BYTES_BUCKETS`), sketch boundaries too;
* any other histogram: powers of 10 over the range the series shows in its
  first interval with data (a decade below its minimum to two above its
  maximum), chosen then and fixed for the series' life: cumulative buckets
  cannot change their bounds;
* ``--buckets NAME_GLOB=b1,b2,...`` (first match wins) sets them by Zibrato
  name; a plain ``--buckets b1,b2,...`` sets them for every series, as before.
"""

from __future__ import annotations

import bisect
import fnmatch
import math
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from ..summary import Summary

DEFAULT_BUCKETS = tuple(2.0**e for e in range(-10, 6))  # 0.0009765625 s .. 32 s
BYTES_BUCKETS = tuple(4.0**e for e in range(3, 16))  # 64 B .. 1 GiB
SECONDS_UNITS = frozenset({"s", "sec", "second", "seconds"})
BYTES_UNITS = frozenset({"b", "byte", "bytes"})
#: (Zibrato name glob, bounds): the first that matches a series' name gives its bounds
BucketRule = tuple[str, tuple[float, ...]]


def parse_bucket_rule(text: str) -> BucketRule:
    """'db.*=0.01,0.1,1' -> ('db.*', (0.01, 0.1, 1.0)); a plain '0.01,0.1' applies to every name ('*')."""
    glob, sep, bounds = text.rpartition("=")
    if not sep:
        return ("*", parse_buckets(text))
    if not glob.strip():
        raise ValueError(f"expected NAME_GLOB=b1,b2,... got {text!r}")
    return (glob.strip(), parse_buckets(bounds))


def bounds_for(kind: str, name: str, unit: str | None, rules: Sequence[BucketRule] = ()) -> tuple[float, ...] | None:
    """The bounds a timer or histogram gets now, or None: chosen from its first data (:func:`decade_bounds`)."""
    for glob, bounds in rules:
        if fnmatch.fnmatchcase(name, glob):
            return bounds
    folded = (unit or "").lower()
    if kind == "timer" or folded in SECONDS_UNITS:
        return DEFAULT_BUCKETS
    if folded in BYTES_UNITS:
        return BYTES_BUCKETS
    return None


def decade_bounds(low: float, high: float) -> tuple[float, ...]:
    """Powers of ten from a decade below ``low`` to two above ``high`` (and 0 when ``low`` <= 0)."""
    bounds: set[float] = set()
    if low <= 0:
        bounds.add(0.0)
    if high > 0:
        first = math.floor(math.log10(low)) - 1 if low > 0 else math.floor(math.log10(high)) - 3
        last = math.ceil(math.log10(high)) + 2
        bounds.update(_decade(e) for e in range(max(first, last - 24), last + 1))
    if low < 0:
        top = math.ceil(math.log10(-low))
        bounds.update(-_decade(e) for e in range(top - 3, top + 1))
    return tuple(sorted(bounds))


def _decade(exponent: int) -> float:
    return float(f"1e{exponent}")  # exactly the decimal 10**e (10.0**-3 is not 0.001)


def parse_buckets(text: str) -> tuple[float, ...]:
    """'0.005,0.01,0.1' -> sorted finite upper bounds (+Inf is always added)."""
    try:
        bounds = sorted({float(part) for part in text.split(",") if part.strip()})
    except ValueError:
        raise ValueError(f"buckets must be numbers, e.g. 0.005,0.01,0.1; got {text!r}") from None
    if not bounds or not all(math.isfinite(b) for b in bounds):
        raise ValueError("give at least one finite bucket bound (+Inf is added)")
    return tuple(bounds)


def bucket_increments(summary: Summary, bounds: Sequence[float]) -> list[float]:
    """How many of the interval's values fall in each ``le`` bucket (not cumulative; last: +Inf)."""
    counts = [0.0] * (len(bounds) + 1)
    sketch = summary.get("sketch")
    if sketch:
        for value, count in _sketch_points(sketch):
            counts[bisect.bisect_left(bounds, value)] += count
        return counts
    values = summary.get("values")
    if values is not None and len(values):
        weight = summary.get("count", len(values)) / len(values)
        for value in values:
            counts[bisect.bisect_left(bounds, value)] += weight
        return counts
    counts[-1] = float(summary.get("count") or 0)  # no distribution known: only the total
    return counts


def _sketch_points(sketch: Mapping[str, Any]) -> Iterable[tuple[float, float]]:
    """(a value inside the bucket, count) for every non-empty bucket of a sketch dict."""
    base = 2.0 ** (2.0 ** -int(sketch.get("scale", 0)))
    if sketch.get("zero_count"):
        yield 0.0, sketch["zero_count"]
    for side, sign in (("positive", 1.0), ("negative", -1.0)):
        buckets = sketch.get(side) or {}
        offset = int(buckets.get("offset", 0))
        for i, count in enumerate(buckets.get("counts") or ()):
            if count:
                # the middle of (base**k, base**(k+1)] in log space: never on a boundary
                yield sign * _power(base, offset + i + 0.5), count


def _power(base: float, exponent: float) -> float:
    try:
        return base**exponent
    except OverflowError:
        return math.inf
