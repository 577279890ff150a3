"""One validation of everything that comes off the wire into a summary (protocol 1.2 ``"m"`` records).

Why one place: a summary record is merged into a worker's state and, from
there, into every interval that follows (OTLP cumulative totals, Prometheus'
running series). A forged number that passes here poisons all of that, so
the decoder (:mod:`zibrato.protocol`) asks :func:`summary_problem` about each
summary record *before* anything is built from it, and refuses the record
alone (never its message, never its interval) with a reason from
:data:`REASONS`, which the worker counts in ``malformed_by_reason``.

What an accepted summary guarantees (docs/PROTOCOL.md, "Summary records"):

* every number is a finite int or float; counts (counter ``count``, gauge
  ``count``, a sketch's ``count``, ``zero_count`` and bucket counts) are not
  negative (they may be fractional: a sampled value counts ``1 / rate``);
  a timer's or histogram's ``sum_squares`` is not negative;
* ``start < end``, the interval at most :data:`MAX_INTERVAL_SECONDS` long;
  ``end`` (and a gauge's ``time``) no further than :data:`MAX_AGE_SECONDS`
  in the past and :data:`MAX_AHEAD_SECONDS` in the future of the receiver's
  clock (when the receiver says what time it is) and of the interval's end;
* a gauge's ``min <= last <= max``;
* a sketch: ``scale`` an int in [``MIN_SCALE``, ``MAX_SCALE``]; at most
  ``max_buckets`` buckets per sign; every bucket index inside the range a
  finite double can reach at that scale; its counts add up to ``count``; its
  ``min <= max``, each inside the lowest and highest populated buckets (what
  OTLP receivers check);
* a set sketch: members as the client allows them, or HyperLogLog registers
  of precision 14 (the only one workers merge) whose ranks a 64-bit hash can produce.

Checking costs one pass over a sketch's buckets; nothing here builds a sketch.
"""

from __future__ import annotations

import base64
import binascii
import math
from collections.abc import Mapping
from typing import Any, NamedTuple

from .name_rules import UNIT_PATTERN as _UNIT
from .sketch import DEFAULT_MAX_BUCKETS, DEFAULT_PRECISION, MAX_SCALE, MIN_SCALE
from .sketch_buckets import bucket_edge
from .summary import COUNTER, GAUGE, HISTOGRAM, SET, TIMER

__all__ = [
    "REASONS",
    "SummaryProblem",
    "summary_problem",
    "MAX_AGE_SECONDS",
    "MAX_AHEAD_SECONDS",
    "MAX_INTERVAL_SECONDS",
]

#: a summary may describe an interval that ended this long ago (a forwarder's backlog is
#: 15 minutes by default; a day is far past any honest retry)
MAX_AGE_SECONDS = 86_400.0
#: ... or ending this far ahead of the receiver's clock (clock skew between hosts)
MAX_AHEAD_SECONDS = 300.0
#: the longest interval one summary may cover
MAX_INTERVAL_SECONDS = 86_400.0
_TOLERANCE = 1e-9  # relative: float rounding of bucket edges and of summed fractional counts

#: every reason a summary record is refused for (the keys of the worker's ``malformed_by_reason``)
REASONS = (
    "summary_shape",  # not exactly one map, or a field missing or of the wrong type
    "summary_kind",  # an unknown kind
    "summary_time",  # start/end/time not finite, start >= end, too long, or outside the window of now
    "summary_number",  # a field that must be a finite number is not
    "negative_count",  # a count, zero_count, bucket count or sum_squares below 0
    "min_above_max",  # min > max (or a gauge's last outside [min, max])
    "summary_unit",  # a unit on a kind other than histogram, or not a valid unit
    "summary_values",  # a timer's or histogram's values not a non-empty array of finite numbers
    "sketch_scale",  # scale not an int in [MIN_SCALE, MAX_SCALE]
    "sketch_buckets",  # more than max_buckets buckets per sign
    "sketch_offset",  # a bucket index no finite double reaches at the scale
    "sketch_counts",  # counts that do not add up, or min/max outside the populated buckets
    "set_sketch",  # a set sketch that is neither valid members nor valid registers
)


class SummaryProblem(NamedTuple):
    """Why a summary record is refused: one of :data:`REASONS`, and a sentence for the log."""

    reason: str
    message: str


class _Refused(Exception):
    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.problem = SummaryProblem(reason, message)


def summary_problem(
    values: Any, now: float | None = None, max_buckets: int = DEFAULT_MAX_BUCKETS
) -> SummaryProblem | None:
    """Why the values of a summary record (a 1-tuple holding its map) are refused, or None.

    ``now``: the receiver's clock (Unix seconds), to refuse intervals outside
    the window around it; None checks the times against each other only.
    ``max_buckets``: the most buckets per sign a sketch may carry (the
    receiver's own limit).
    """
    try:
        _check(values, now, max_buckets)
    except _Refused as refused:
        return refused.problem
    return None


# --- the checks -------------------------------------------------------------------------


def _check(values: Any, now: float | None, max_buckets: int) -> None:
    if values.__class__ is not tuple or len(values) != 1 or values[0].__class__ is not dict:
        raise _Refused("summary_shape", "a summary record carries exactly one map")
    summary: dict[str, Any] = values[0]
    kind = summary.get("kind")
    if kind.__class__ is not str or kind not in _CHECKS:
        raise _Refused("summary_kind", f"unknown summary kind {_short(kind)}")
    end = _interval_end(summary, now)
    unit = summary.get("unit")
    if unit is not None and (kind != HISTOGRAM or unit.__class__ is not str or not _UNIT.match(unit)):
        raise _Refused("summary_unit", "only a histogram summary carries a unit, 1-64 characters of A-Za-z0-9_./%-")
    _CHECKS[kind](summary, end, now, max_buckets)


def _interval_end(summary: Mapping[str, Any], now: float | None) -> float:
    start: Any = summary.get("start")
    end: Any = summary.get("end")
    if not (_is_number(start) and _is_number(end) and start < end):
        raise _Refused("summary_time", "a summary needs a finite start before its end")
    if end - start > MAX_INTERVAL_SECONDS:
        raise _Refused("summary_time", f"a summary covers at most {MAX_INTERVAL_SECONDS:g} s")
    _within_window("end", end, now)
    return float(end)


def _within_window(what: str, when: float, now: float | None, end: float | None = None) -> None:
    for reference in (now, end):
        if reference is not None and not (reference - MAX_AGE_SECONDS <= when <= reference + MAX_AHEAD_SECONDS):
            raise _Refused(
                "summary_time",
                f"summary {what} {when!r} is more than {MAX_AGE_SECONDS:g} s before or "
                f"{MAX_AHEAD_SECONDS:g} s after {'now' if reference is now else 'its end'}",
            )


def _counter(summary: Mapping[str, Any], end: float, now: float | None, max_buckets: int) -> None:
    _numbers(summary, ("sum", "count"))
    _not_negative(summary["count"], "count")


def _gauge(summary: Mapping[str, Any], end: float, now: float | None, max_buckets: int) -> None:
    _numbers(summary, ("last", "time", "count", "min", "max", "sum"))
    _not_negative(summary["count"], "count")
    _within_window("time", summary["time"], now, end)
    low, high, last = summary["min"], summary["max"], summary["last"]
    if not low <= last <= high:
        raise _Refused("min_above_max", f"gauge min {low!r}, last {last!r}, max {high!r} are not in order")


def _distribution(summary: Mapping[str, Any], end: float, now: float | None, max_buckets: int) -> None:
    _numbers(summary, ("sum_squares",))
    _not_negative(summary["sum_squares"], "sum_squares")
    if "values" in summary:  # few values: forwarded as they are
        values = summary["values"]
        if values.__class__ is not tuple or not values or not all(_is_number(v) for v in values):
            raise _Refused("summary_values", "summary values must be a non-empty array of finite numbers")
        return
    sketch = summary.get("sketch")
    if sketch.__class__ is not dict:
        raise _Refused("summary_shape", "a timer or histogram summary needs a sketch map")
    _sketch(sketch, max_buckets)


def _set(summary: Mapping[str, Any], end: float, now: float | None, max_buckets: int) -> None:
    sketch = summary.get("sketch")
    if sketch.__class__ is not dict:
        raise _Refused("summary_shape", "a set summary needs a sketch map")
    assert isinstance(sketch, dict)
    if sketch.get("exact", "members" in sketch):
        members = sketch.get("members")
        if members.__class__ is not tuple or not all(_is_member(m) for m in members):
            raise _Refused("set_sketch", "set members must be strings of 1-255 characters or integers")
        return
    precision, registers = sketch.get("precision"), sketch.get("registers")
    if precision != DEFAULT_PRECISION or precision.__class__ is not int or registers.__class__ is not str:
        # one precision on the wire: a worker's own sets cannot merge another (the merge would raise)
        raise _Refused(
            "set_sketch", f"a HyperLogLog set sketch needs precision {DEFAULT_PRECISION} and base64 registers"
        )
    try:
        raw = base64.b64decode(registers, validate=True)
    except (binascii.Error, ValueError):
        raise _Refused("set_sketch", "set sketch registers are not base64") from None
    if len(raw) != 1 << precision or (raw and max(raw) > 64 - precision + 1):
        raise _Refused("set_sketch", "set sketch registers do not match its precision")


_CHECKS = {COUNTER: _counter, GAUGE: _gauge, TIMER: _distribution, HISTOGRAM: _distribution, SET: _set}


def _sketch(sketch: dict[str, Any], max_buckets: int) -> None:
    """A distribution sketch's dict form (:meth:`zibrato.sketch.Sketch.to_dict`), checked in one pass."""
    scale = sketch.get("scale")
    if scale.__class__ is not int or not MIN_SCALE <= scale <= MAX_SCALE:
        raise _Refused("sketch_scale", f"sketch scale {_short(scale)} is not an integer in [{MIN_SCALE}, {MAX_SCALE}]")
    assert isinstance(scale, int)
    zero_count = sketch.get("zero_count") or 0
    count: Any = sketch.get("count")
    total: Any = sketch.get("sum")
    for what, number in (("count", count), ("zero_count", zero_count), ("sum", total)):
        if not _is_number(number):
            raise _Refused("summary_number", f"sketch {what} must be a finite number, got {_short(number)}")
    _not_negative(count, "sketch count")
    _not_negative(zero_count, "sketch zero_count")
    lowest, highest = _reachable(scale)
    sides = {}
    held = zero_count
    for name in ("positive", "negative"):
        part = sketch.get(name) or {"offset": 0, "counts": ()}
        if part.__class__ is not dict:
            raise _Refused("summary_shape", f"sketch {name} must be a map of offset and counts")
        offset, counts = part.get("offset"), part.get("counts", ())
        if offset.__class__ is not int or counts.__class__ not in (tuple, list):
            raise _Refused("summary_shape", f"sketch {name} needs an integer offset and an array of counts")
        if len(counts) > max_buckets:
            raise _Refused("sketch_buckets", f"sketch {name} has {len(counts)} buckets: at most {max_buckets}")
        populated = [(offset + i, c) for i, c in enumerate(counts) if c]
        for _, bucket in populated:  # _is_number inlined: a call per bucket costs as much as the check
            cls = bucket.__class__
            if not ((cls is int or (cls is float and bucket - bucket == 0)) and bucket >= 0):
                raise _Refused("negative_count", f"bucket counts must be finite numbers >= 0, got {_short(bucket)}")
        if populated and not (lowest <= populated[0][0] and populated[-1][0] <= highest):
            raise _Refused(
                "sketch_offset",
                f"sketch {name} buckets {populated[0][0]}..{populated[-1][0]} are outside the "
                f"{lowest}..{highest} a finite double reaches at scale {scale}",
            )
        held += sum(c for _, c in populated)
        sides[name] = populated
    if abs(held - count) > _TOLERANCE * max(1.0, abs(count)):
        raise _Refused("sketch_counts", f"sketch buckets hold {held!r} observations but its count is {count!r}")
    if count:
        _extremes(sketch, scale, sides, zero_count)


def _extremes(
    sketch: Mapping[str, Any], scale: int, sides: dict[str, list[tuple[int, float]]], zero_count: float
) -> None:
    low: Any = sketch.get("min")
    high: Any = sketch.get("max")
    if not (_is_number(low) and _is_number(high)):
        raise _Refused("summary_number", "a sketch with observations needs finite min and max")
    if low > high:
        raise _Refused("min_above_max", f"sketch min {low!r} > max {high!r}")
    negative, positive = sides["negative"], sides["positive"]
    ranges = [(-bucket_edge(i + 1, scale), -bucket_edge(i, scale)) for i in _ends(negative)[::-1]]  # the ends only
    if zero_count:
        ranges.append((0.0, 0.0))
    ranges += [(bucket_edge(i, scale), bucket_edge(i + 1, scale)) for i in _ends(positive)]
    if not ranges:  # pragma: no cover - counts that add up to count > 0 populate something
        return
    for what, value, (lower, upper) in (("min", low, ranges[0]), ("max", high, ranges[-1])):
        slack = _TOLERANCE * max(abs(lower), abs(upper))
        if not lower - slack <= value <= upper + slack:
            raise _Refused(
                "sketch_counts", f"sketch {what} {value!r} is not in its populated bucket [{lower!r}, {upper!r}]"
            )


def _ends(populated: list[tuple[int, float]]) -> list[int]:
    """The lowest and highest populated index (one if they are the same), ascending."""
    if not populated:
        return []
    return [populated[0][0]] if len(populated) == 1 else [populated[0][0], populated[-1][0]]


def _reachable(scale: int) -> tuple[int, int]:
    """The bucket indexes a finite, non-zero double can land in at ``scale``.

    Bucket i holds (base**i, base**(i+1)]: the smallest subnormal (2**-1074)
    and the largest double (just under 2**1024) bound them.
    """
    return math.floor(math.ldexp(-1074, scale)) - 1, math.ceil(math.ldexp(1024, scale)) - 1


def _numbers(summary: Mapping[str, Any], keys: tuple[str, ...]) -> None:
    for key in keys:
        if not _is_number(summary.get(key)):
            raise _Refused("summary_number", f"summary field {key!r} must be a finite number")


def _not_negative(value: float, what: str) -> None:
    if value < 0:
        raise _Refused("negative_count", f"{what} must not be negative, got {value!r}")


def _is_number(value: Any) -> bool:
    cls = value.__class__
    if cls is float:
        return math.isfinite(value)
    return cls is int  # msgpack ints are at most 64 bits: always finite as floats


def _is_member(member: Any) -> bool:
    cls = member.__class__
    return cls is int or (cls is str and 0 < len(member) <= 255)


def _short(value: object, limit: int = 60) -> str:
    text = repr(value)
    return text if len(text) <= limit else text[:limit] + f"...({len(text)} characters)"
