"""Summaries built by hand to COMMON.md's contract, for destination tests.

``sketch_of`` makes the dict form of a zibrato.sketch (OpenTelemetry
exponential-histogram buckets: bucket i holds (base**i, base**(i+1)], base =
2 ** 2 ** -scale) from values, so destinations can be tested before, and
independently of, the sketch module.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence


def bucket_index(value: float, scale: int) -> int:
    """The bucket of |value| > 0: ceil(log2(v) * 2**scale) - 1, exact at powers of two."""
    mantissa, exponent = math.frexp(abs(value))  # v = m * 2**e, 0.5 <= m < 1
    if mantissa == 0.5:  # an exact power of two: upper bound of its bucket
        return ((exponent - 1) << scale) - 1 if scale >= 0 else -((1 - exponent) >> -scale) - 1
    return math.ceil(math.log2(abs(value)) * 2.0**scale) - 1


def sketch_of(values: Iterable[float], scale: int = 6, weights: Sequence[float] | None = None) -> dict:
    values = list(values)
    weights = list(weights) if weights is not None else [1] * len(values)  # ints, as zibrato.sketch
    positive: dict[int, float] = {}
    negative: dict[int, float] = {}
    zero = 0
    for value, weight in zip(values, weights):
        if value == 0:
            zero += weight
        else:
            side = positive if value > 0 else negative
            index = bucket_index(value, scale)
            side[index] = side.get(index, 0) + weight
    return {
        "scale": scale,
        "zero_count": zero,
        "positive": _side(positive),
        "negative": _side(negative),
        "count": sum(weights),
        "sum": sum(v * w for v, w in zip(values, weights)),
        "min": min(values) if values else None,
        "max": max(values) if values else None,
    }


def _side(buckets: dict[int, float]) -> dict:
    if not buckets:
        return {"offset": 0, "counts": []}
    low, high = min(buckets), max(buckets)
    return {"offset": low, "counts": [buckets.get(i, 0) for i in range(low, high + 1)]}


def base(
    name: str,
    type_: str,
    source: str | None = None,
    tags=(),
    time: float = 1_800_000_060.0,
    interval: float = 60.0,
    **fields,
) -> dict:
    return {
        "time": time,
        "interval": interval,
        "type": type_,
        "name": name,
        "source": source,
        "tags": list(tags),
        **fields,
    }


def counter(name: str, value: float, count: int = 1, **kw) -> dict:
    interval = kw.get("interval", 60.0)
    return base(name, "counter", value=value, count=count, rate=value / interval, **kw)


def gauge(name: str, value: float, **kw) -> dict:
    return base(name, "gauge", value=value, count=1, min=value, max=value, sum=value, **kw)


def timer(
    name: str,
    values: Sequence[float],
    scale: int = 6,
    type_: str = "timer",
    weights: Sequence[float] | None = None,
    **kw,
) -> dict:
    values = sorted(values)
    if not values:
        return base(name, type_, count=0, sum=0.0, exact=True, **kw)
    n = len(values)
    mean = sum(values) / n
    stats = dict(
        count=n,
        sum=sum(values),
        sum_squares=sum(v * v for v in values),
        min=values[0],
        max=values[-1],
        mean=mean,
        median=values[n // 2],
        stddev=math.sqrt(sum((v - mean) ** 2 for v in values) / n),
        exact=True,
        p50=values[math.ceil(0.5 * n) - 1],
        p99=values[math.ceil(0.99 * n) - 1],
        sketch=sketch_of(values, scale, weights),
    )
    if weights is not None:
        stats["count"] = sum(weights)
    return base(name, type_, **stats, **kw)


def set_(name: str, unique: int, **kw) -> dict:
    return base(name, "set", value=unique, exact=True, **kw)
