"""What a series and a value may be: the producers' rules, beside the name rules (:mod:`zibrato.name_rules`).

The client, its instruments, ``zibrato.otel`` and the listener all make
series and values out of what an application (or a statsd line) hands them;
each used to keep its own copy of these checks, and the copies drift. Here is
the one copy: a level, a name, a source, tags, a sample rate, a unit, a
number and a set member, each checked with the message the client has always
raised (tests and users read them), and the hashable series key the client
records under.

A check raises (``ValueError`` for a bad value, ``TypeError`` for a wrong
kind of value) and returns what it checked, normalised: these run once per
distinct series (the client caches the key), never per measurement, but for
:func:`number`, which the direct calls use for each value and which is
written for that.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping

from . import name_rules
from .protocol import GAUGE, SET

__all__ = [
    "Tags",
    "Series",
    "INT64_MIN",
    "UINT64_LIMIT",
    "check_level",
    "check_name",
    "check_rate",
    "check_unit",
    "number",
    "member",
    "normalise_tags",
    "make_series",
    "add_tags",
    "clean_tag",
]

# Evaluated at import: "|" between generic aliases needs Python 3.10, the oldest supported.
#: tags as an application gives them: a mapping, ``key:value`` strings, or None
Tags = Mapping[str, object] | Iterable[str] | None
#: a validated series: (level, type, name, source, tags, weight, unit)
Series = tuple[str, str, str, str | None, tuple[str, ...], float | None, str | None]

#: the integers msgpack can carry: INT64_MIN <= n < UINT64_LIMIT
INT64_MIN, UINT64_LIMIT = -(1 << 63), 1 << 64


def check_level(level: object, what: str = "level") -> str:
    """A level, lower-cased (levels are case-insensitive)."""
    if not isinstance(level, str) or not name_rules.is_valid_level(level):
        raise ValueError(f"{what} must be 1-64 characters of A-Z a-z 0-9 _ . -, got {level!r}")
    return level.lower()


def check_name(name: object, what: str = "name") -> str:
    """A metric name, a source or a set member (:func:`zibrato.name_rules.name_problem`)."""
    problem = name_rules.name_problem(name, what)
    if problem:
        raise ValueError(problem)
    return name  # type: ignore[return-value]  # name_problem: a str


def check_rate(rate: object) -> float:
    """A sample rate: a number in (0, 1]."""
    if isinstance(rate, bool) or not isinstance(rate, (int, float)) or not 0 < rate <= 1:
        raise ValueError(f"rate must be a number in (0, 1], got {rate!r}")
    return float(rate)


def check_unit(unit: object) -> str | None:
    """A histogram's unit (protocol 1.1), or None."""
    if unit is not None and (not isinstance(unit, str) or not name_rules.UNIT_PATTERN.match(unit)):
        raise ValueError(f"unit must be 1-64 characters of A-Z a-z 0-9 _ . / % -, got {unit!r}")
    return unit


def number(value: object) -> float:
    """A measurement's value: a finite number msgpack can carry (a big integer becomes a float)."""
    if type(value) is float:
        if math.isfinite(value):
            return value
        raise ValueError(f"value must be finite, got {value!r}")
    if type(value) is int:
        if INT64_MIN <= value < UINT64_LIMIT:
            return value
        try:
            return float(value)  # beyond 64 bits msgpack cannot carry it; a float can, rounded
        except OverflowError:
            raise ValueError(f"value must be finite, got an integer of {value.bit_length()} bits") from None
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise TypeError(f"value must be a number, got {value!r}")
    return number(float(value))


def member(value: object) -> str | int:
    """A set member: a name-like string or an integer msgpack can carry."""
    if type(value) is int:
        if INT64_MIN <= value < UINT64_LIMIT:
            return value
        raise ValueError(f"set member must fit in 64 bits, got an integer of {value.bit_length()} bits")
    if isinstance(value, str):
        return check_name(value, "set member")
    raise TypeError(f"set member must be a string or an integer, got {value!r}")


def normalise_tags(tags: Tags) -> tuple[str, ...]:
    """Tags as a sorted tuple of "key:value" strings (a mapping or strings accepted)."""
    if not tags:
        return ()
    if isinstance(tags, str):
        raise TypeError("tags must be a mapping or a list of 'key:value' strings, not one string")
    items = [f"{k}:{v}" for k, v in tags.items()] if isinstance(tags, Mapping) else list(tags)
    problem = name_rules.tags_problem(items)
    if problem:
        raise ValueError(problem)
    return tuple(sorted(set(items)))


def make_series(
    level: str,
    type_: str,
    name: str,
    source: str | None,
    tags: Tags,
    rate: float,
    unit: str | None,
    default_source: str | None = None,
    default_tags: tuple[str, ...] = (),
) -> Series:
    """Validate a series once and return its hashable key (raises on misuse).

    ``default_source`` and ``default_tags`` are the client's own: a
    measurement's source wins, its tags are merged. The weight is
    ``1 / rate`` for the kinds a sample rate scales (not gauges or sets).
    """
    level = check_level(level)
    name = check_name(name, "name")
    source = default_source if source is None else check_name(source, "source")
    merged = tuple(sorted(set(default_tags).union(normalise_tags(tags)))) if tags else default_tags
    rate = check_rate(rate)
    weight = None if rate == 1.0 or type_ in (GAUGE, SET) else 1.0 / rate
    return (level, type_, name, source, merged, weight, check_unit(unit))


def add_tags(series: Series, *extra: str) -> Series:
    """The same series with ``extra`` tags (already valid ones: an instrument's outcome tags)."""
    level, type_, name, source, tags, weight, unit = series
    return (level, type_, name, source, tuple(sorted(set(tags).union(extra))), weight, unit)


def clean_tag(tag: str) -> str:
    """A tag made valid rather than refused: control characters become ``_``, cut to the longest tag.

    For tags taken from outside (an OpenTelemetry attribute from a request):
    a user agent must never cost the measurement.
    """
    return name_rules.CONTROL_CHARACTERS.sub("_", tag)[: name_rules.MAX_TAG_LENGTH]
