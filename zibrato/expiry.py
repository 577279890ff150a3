"""Expiry: how long a series that stopped receiving is still reported, and what it reports.

Why: a dashboard that draws a line per series shows a gap, or a stale
value, when a series has no data in an interval. ``expire`` (seconds; one
number for every kind, or per summary type) keeps reporting such a series,
as gostatsd does, until that many seconds have passed since the end of its
last interval with data: a counter as 0 (value, count, rate), a gauge as its
last value (count 0), a timer or histogram as count 0 without percentiles,
a set as 0. 0 (the default) reports only intervals with data.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

from .sketch import SetSketch
from .summary import COUNTER, GAUGE, KINDS, SET

__all__ = ["idle_stats", "parse_expire"]


def parse_expire(value: float | str | Mapping[str, float] | None) -> dict[str, float]:
    """Seconds of expiry per summary type from ``300``, ``"300,gauge=3600"`` or ``{"gauge": 3600}``.

    A bare number applies to every kind; ``kind=seconds`` overrides one
    (counter, gauge, timer, histogram, set). 0 means "report only intervals
    with data". ValueError on anything else.
    """
    out: dict[str, float] = dict.fromkeys(KINDS, 0.0)
    if value is None:
        return out
    items: list[tuple[str, Any]]  # (kind or "" for all, seconds as given: checked below)
    if isinstance(value, Mapping):
        items = [(str(k), v) for k, v in value.items()]
    elif isinstance(value, str):
        items = []
        for part in (p.strip() for p in value.split(",")):
            if part:
                kind, sep, seconds = part.rpartition("=")
                items.append((kind.strip() if sep else "", seconds))
    else:
        items = [("", value)]
    default, overrides = 0.0, {}
    for kind, seconds in items:
        try:
            number = float(seconds)
        except (TypeError, ValueError):
            raise ValueError(f"expiry must be seconds, got {seconds!r}") from None
        if not 0 <= number < math.inf:
            raise ValueError(f"expiry must be 0 or more finite seconds, got {seconds!r}")
        if not kind:
            default = number
        elif kind in out:
            overrides[kind] = number
        else:
            raise ValueError(f"unknown kind {kind!r} in expiry (one of {', '.join(KINDS)})")
    return {kind: overrides.get(kind, default) for kind in KINDS}


def idle_stats(code: str, last: float | None) -> dict[str, Any]:
    """What an idle, unexpired series reports (as gostatsd does), by wire code."""
    if code == COUNTER:
        return {"value": 0.0, "count": 0, "rate": 0.0}
    if code == GAUGE:
        return {"value": last, "count": 0, "min": last, "max": last, "sum": 0}
    if code == SET:
        return {"value": 0, "exact": True, "sketch": SetSketch().to_dict()}
    return {"count": 0, "sum": 0.0, "sum_squares": 0.0, "exact": True}
