"""The typed interval contract: what a summary holds, per kind, and the codes that name the kinds.

Why one module: a worker's aggregator writes summaries, every destination,
the forwarder and the web view read them, and the wire protocol names their
kinds by one-letter codes. Declared here once, a reader that asks for a key
no kind carries is a type error (mypy), not a ``KeyError`` in production.

The types are ``TypedDict``\\ s: at run time a summary stays the plain dict it
always was (JSON- and msgpack-ready, built with no class in the way), so
nothing here costs the hot path anything.

What a flushed summary holds
----------------------------
Every summary carries :class:`SummaryBase`'s keys (``time``, ``type``,
``name``, ``source``, ``tags``; ``interval`` when the aggregator is built
with ``include_interval``, ``level`` when levels are kept apart), then by kind:

* :class:`CounterSummary`: ``value`` (sum of values times weight), ``count``, ``rate``;
* :class:`GaugeSummary`: ``value`` (the last), ``count``, ``min``, ``max``, ``sum``
  (``last_time`` once merged from forwarded summaries);
* :class:`TimerSummary` (seconds) and :class:`HistogramSummary` (any ``unit``):
  ``count``, ``sum``, ``sum_squares`` and ``exact`` always; with data also
  ``min``, ``max``, ``mean``, ``median``, ``stddev``, ``sketch`` and one key per
  configured percentile (:func:`zibrato.statistics.percentile_key`: 99.9 ->
  ``"p99_9"``; a TypedDict cannot name keys chosen at run time, so those are
  read with :func:`percentile_values`); once sketched ``relative_error``;
  ``values`` (and ``sampled``) for destinations that forward raw values;
* :class:`SetSummary`: ``value`` (unique members), ``exact``, ``sketch``.

:data:`KindSummary` is their union: exactly one describes each summary.
:class:`Summary`, what :class:`zibrato.destination.Interval` carries and a
destination's mapping reads, declares every key any kind carries, each with
its one type: a reader that dispatches on ``summary["type"]`` at run time is
checked for every key it names (a misspelt key, or a number read as a
string, is a mypy error); the per-kind types say which of those keys each
kind really carries. The protocol 1.2 summary records a forwarder sends (the
map of an ``"m"`` record, checked by :mod:`zibrato.summary_check`) are
:data:`SummaryRecord`.
"""

from __future__ import annotations

from array import array
from collections.abc import Callable, Iterator, Mapping, Sequence
from typing import Any, Generic, Literal, TypedDict, TypeVar

__all__ = [
    "COUNTER",
    "GAUGE",
    "TIMER",
    "HISTOGRAM",
    "SET",
    "SUMMARY",
    "TYPE_NAMES",
    "TYPE_CODES",
    "KINDS",
    "STATSD_TYPES",
    "SeriesKey",
    "series_order",
    "series_of",
    "SeriesMemo",
    "BucketsDict",
    "SketchDict",
    "SetSketchDict",
    "SummaryBase",
    "CounterSummary",
    "GaugeSummary",
    "DistributionSummary",
    "TimerSummary",
    "HistogramSummary",
    "SetSummary",
    "Summary",
    "KindSummary",
    "CounterRecord",
    "GaugeRecord",
    "DistributionRecord",
    "SetRecord",
    "SummaryRecord",
    "percentile_values",
]

# --- the wire codes, once -----------------------------------------------------------

#: protocol 1.0 kinds: the one-letter type of a record on the wire (docs/PROTOCOL.md)
COUNTER, GAUGE, TIMER = "c", "g", "t"
#: protocol 1.1 kinds: a distribution of any quantity, and unique members
HISTOGRAM, SET = "h", "s"
#: protocol 1.2: a mergeable summary of one series over one interval (forwarders)
SUMMARY = "m"

Kind = Literal["counter", "gauge", "timer", "histogram", "set"]
#: wire code -> the ``type`` of a summary
TYPE_NAMES: dict[str, Kind] = {COUNTER: "counter", GAUGE: "gauge", TIMER: "timer", HISTOGRAM: "histogram", SET: "set"}
#: the ``type`` of a summary -> its wire code
TYPE_CODES: dict[str, str] = {name: code for code, name in TYPE_NAMES.items()}
#: the summary types, in wire-code order
KINDS: tuple[Kind, ...] = tuple(TYPE_NAMES.values())
#: statsd line types (``name:value|<type>``: Etsy's c, g, ms, s; DogStatsD's h and d) -> wire code
STATSD_TYPES: dict[str, str] = {"c": COUNTER, "g": GAUGE, "ms": TIMER, "h": HISTOGRAM, "d": HISTOGRAM, "s": SET}

_T = TypeVar("_T")

# --- the series key ----------------------------------------------------------------

#: ``(code, name, source, tags)``, and a histogram's ``unit`` after them: one series of one
#: interval. Tuples rather than a class: the aggregator builds one per record (the hot loop).
SeriesKey = tuple[str, str, str | None, tuple[str, ...]] | tuple[str, str, str | None, tuple[str, ...], str | None]


def series_order(key: tuple[Any, ...]) -> tuple[Any, ...]:
    """Sort key of a :data:`SeriesKey`: by type name, name, source, tags, unit (None before any text)."""
    type_, name, source, tags = key[:4]
    unit = key[4] if len(key) > 4 else None
    return (TYPE_NAMES[type_], name, source or "", source is not None, tags, unit or "", unit is not None)


def series_of(summary: Summary) -> tuple[Any, ...]:
    """What identifies a flushed summary's series across intervals (type, name, source,
    tags, level, unit): the key a destination keeps running state or a cache under."""
    return (
        summary["type"],
        summary["name"],
        summary.get("source"),
        tuple(summary.get("tags") or ()),
        summary.get("level"),
        summary.get("unit"),
    )


class SeriesMemo(Generic[_T]):
    """What a destination builds once per series (an escaped path, a line key), bounded.

    Why: escaping a name per summary per flush costs more than the rest of
    the mapping; a series comes back every interval. At ``limit`` series the
    memo starts afresh rather than growing without bound (churning names).
    """

    def __init__(self, build: Callable[[Summary], _T], limit: int = 100_000) -> None:
        self._build, self._limit = build, limit
        self._built: dict[tuple[Any, ...], _T] = {}

    def __call__(self, summary: Summary) -> _T:
        series = series_of(summary)
        found = self._built.get(series)
        if found is None:
            if len(self._built) >= self._limit:
                self._built.clear()
            found = self._built[series] = self._build(summary)
        return found

    def __len__(self) -> int:
        return len(self._built)


# --- the sketches' dict forms (zibrato.sketch) -------------------------------------------


class BucketsDict(TypedDict):
    """The counts of one sign: bucket ``offset + i`` holds ``counts[i]`` observations."""

    offset: int
    counts: list[float]


class SketchDict(TypedDict):
    """:meth:`zibrato.sketch.Sketch.to_dict`: an OpenTelemetry exponential histogram's fields."""

    scale: int
    zero_count: float
    positive: BucketsDict
    negative: BucketsDict
    count: float
    sum: float
    min: float | None
    max: float | None


class _SetSketchRequired(TypedDict):
    exact: bool
    count: int


class SetSketchDict(_SetSketchRequired, total=False):
    """:meth:`zibrato.sketch.SetSketch.to_dict`: ``members`` while exact, else HyperLogLog
    ``precision`` and base64 ``registers``."""

    members: list[str | int]
    precision: int
    registers: str


# --- flushed summaries ------------------------------------------------------------------


class _Base(TypedDict):
    time: float
    type: Kind
    name: str
    source: str | None
    tags: list[str]


class SummaryBase(_Base, total=False):
    """What every summary carries; ``interval`` and ``level`` only when asked for."""

    #: the seconds the interval covers (``include_interval``)
    interval: float
    #: the level the series was aggregated in (destinations with ``needs_level``)
    level: str


class CounterSummary(SummaryBase):
    """A counter: ``value`` sums every value times its weight; ``rate`` is value per second."""

    value: float
    count: float
    rate: float


class _GaugeRequired(SummaryBase):
    value: float
    count: float
    min: float
    max: float
    sum: float


class GaugeSummary(_GaugeRequired, total=False):
    """A gauge: the last value, and the count, extremes and sum of the interval's values."""

    #: when the last value was taken (merged from forwarded summaries)
    last_time: float


class _DistributionRequired(SummaryBase):
    count: float
    sum: float
    sum_squares: float
    exact: bool


class DistributionSummary(_DistributionRequired, total=False):
    """A timer or histogram: exact statistics, a mergeable sketch, and percentile keys.

    An idle (not yet expired) series carries only the required keys, with ``count`` 0.
    Percentile keys (``"p99_9"``) are not declared: read them with :func:`percentile_values`.
    """

    min: float
    max: float
    mean: float
    median: float
    stddev: float
    sketch: SketchDict
    #: the quantile bound in force once sketched (absent while exact)
    relative_error: float
    #: the raw values (``keep_values`` or few values): the exact series' array, or a spread
    values: array[float] | list[float]
    #: how many ``values`` were spread over a sketch
    sampled: int
    unit: str | None


class TimerSummary(DistributionSummary):
    """A timer (seconds)."""


class HistogramSummary(DistributionSummary):
    """A histogram of any quantity; ``unit`` (str or None) is part of its series."""


class SetSummary(SummaryBase):
    """A set: ``value`` unique members (exact, or HyperLogLog's estimate)."""

    value: int
    exact: bool
    sketch: SetSketchDict


#: exactly one of these describes each summary (what the statistics build, kind by kind)
KindSummary = CounterSummary | GaugeSummary | TimerSummary | HistogramSummary | SetSummary


class Summary(SummaryBase, total=False):
    """One series' summary of one interval, as :class:`zibrato.destination.Interval` carries it.

    Every key any kind carries, each with its one type: what a reader that
    dispatches on ``type`` at run time is checked against (a misspelt key or
    a wrong type is a mypy error). Which keys a kind really carries is
    :data:`KindSummary` (one ``TypedDict`` per kind); percentile keys are read
    with :func:`percentile_values`.
    """

    # counter, gauge, set: the one number (a set's is an int)
    value: float
    # counter, gauge, timer, histogram
    count: float
    rate: float
    min: float
    max: float
    sum: float
    last_time: float
    # timer, histogram (and set: exact)
    sum_squares: float
    exact: bool
    mean: float
    median: float
    stddev: float
    sketch: SketchDict | SetSketchDict
    relative_error: float
    values: array[float] | list[float]
    sampled: int
    unit: str | None


def percentile_values(summary: Mapping[str, Any]) -> Iterator[tuple[str, float]]:
    """``(key, value)`` of each percentile a summary carries (``"p50"``, ``"p99_9"``), in its order."""
    for key, value in summary.items():
        if key.startswith("p") and key[1:2].isdigit():
            yield key, value


# --- summary records (protocol 1.2 "m": what a forwarder sends upstream) ----------------------


class _RecordBase(TypedDict):
    kind: str
    start: float
    end: float


class CounterRecord(_RecordBase):
    sum: float
    count: float


class GaugeRecord(_RecordBase):
    last: float
    time: float
    count: float
    min: float
    max: float
    sum: float


class DistributionRecord(_RecordBase, total=False):
    """A timer's or histogram's: a sketch, or (few) exact ``values``; histograms may add ``unit``."""

    sum_squares: float
    sketch: Mapping[str, Any]
    values: Sequence[float]
    unit: str


class SetRecord(_RecordBase):
    sketch: SetSketchDict


#: the map of one protocol 1.2 summary record (:mod:`zibrato.summary_check` checks it first)
SummaryRecord = CounterRecord | GaugeRecord | DistributionRecord | SetRecord
