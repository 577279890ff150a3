"""Per-interval aggregation: the state of each series while its measurements arrive.

A series is a :data:`zibrato.summary.SeriesKey`, ``(code, name, source,
tags)`` (histograms add their unit), with the wire codes of
:mod:`zibrato.summary`. :class:`Aggregator` is pure code (no I/O, no
threads): the worker calls :meth:`Aggregator.add_records` for every message
it receives and :meth:`Aggregator.flush` at every interval boundary, which
turns each series' state into its summary (the typed contract is
:mod:`zibrato.summary`; the statistics, :mod:`zibrato.statistics`).

What a series holds
-------------------
* counter: ``[sum, count]`` (each value times its record's weight);
* gauge: ``[last, count, min, max, sum]`` (and, merged from forwarded
  summaries, the time of the last value);
* timer (seconds) and histogram (any unit): its values exactly, as packed
  doubles (``array('d')``, 8 bytes a value), up to ``max_exact`` values per
  interval (10,000 by default: 80 kB); past that, or at the first weighted
  record (a sampled value is not an exact sample), a
  :class:`~zibrato.statistics.Distribution`: an exponential histogram whose
  quantiles are within ``relative_error`` (1 % by default) in at most
  ``max_buckets`` buckets per sign;
* set: a :class:`~zibrato.sketch.SetSketch`, exact up to ``set_max_exact``
  members (1,000), then HyperLogLog.

Weights and units (protocol 1.1)
--------------------------------
A record may carry a weight (``1 / sample rate``): a counter's values count
``value x weight``; a timer's or histogram's values count as ``weight``
observations each, in ``count``, the sums and the sketch; gauges and sets
ignore it. A histogram record may carry a unit, which is part of its series.

Forwarded summaries, expiry, non-finite numbers, raw values
------------------------------------------------------------
:meth:`Aggregator.add_summary` merges a forwarder's summary of a series
(:mod:`zibrato.merging`) into the interval its ``end`` belongs to.
``expire`` (:mod:`zibrato.expiry`) keeps reporting a series that stopped
receiving. A summary holding an infinity or NaN (sums overflow) is dropped
whole at :meth:`Aggregator.flush` and counted (:attr:`Aggregator.non_finite_dropped`):
no destination ever receives one. With ``keep_values=True`` (statsd) timer and
histogram summaries also carry their ``"values"``.

Speed
-----
:meth:`Aggregator.add_records` is the worker's hot loop, one call per
message: one dict lookup per record, a fast path per type (the wire codes
spelt as literals: a constant, not a global, per record), C-level builtins
over the record's values (timer values appended with one cached ``struct``
pack). A sketched series costs one ``log2`` and one dict update per value
(~0.2 us). Percentiles are sorted for once per series, at flush.
"""

from __future__ import annotations

import struct
from array import array
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any

from .aggregation_summaries import SummaryMerging
from .expiry import idle_stats, parse_expire
from .levels import Levels
from .merging import Series
from .sketch import DEFAULT_MAX_BUCKETS, DEFAULT_RELATIVE_ERROR, SetSketch, Sketch
from .statistics import (
    Distribution,
    all_finite,
    counter_stats,
    exact_stats,
    fsum,
    gauge_stats,
    nearest_rank,
    parse_percentiles,
    percentile_key,
    set_stats,
    sketch_stats,
)
from .summary import COUNTER, GAUGE, HISTOGRAM, KINDS, SET, TYPE_NAMES, Summary, series_order

__all__ = [
    "Aggregator",
    "LevelAggregators",
    "nearest_rank",
    "percentile_key",
    "parse_expire",
    "TYPE_NAMES",
    "KINDS",
]

DEFAULT_MAX_EXACT = 10_000
DEFAULT_SET_MAX_EXACT = 1_000

_MAX_CACHED_PACKER = 4096  # record lengths up to this get a cached struct packer
_LAST_NON_FINITE = 20  # series names kept for the worker's log


class Aggregator(SummaryMerging):
    """Accumulates measurements per series and summarises them once per flush interval."""

    def __init__(
        self,
        percentiles: Sequence[float] = (50, 90, 95, 99),
        max_exact: int = DEFAULT_MAX_EXACT,
        relative_error: float = DEFAULT_RELATIVE_ERROR,
        max_buckets: int = DEFAULT_MAX_BUCKETS,
        set_max_exact: int = DEFAULT_SET_MAX_EXACT,
        expire: float | str | Mapping[str, float] | None = 0,
        keep_values: bool = False,
        include_interval: bool = False,
        max_samples: int | None = None,
        values_up_to: int = 0,
    ) -> None:
        if max_samples is not None:  # its name before sketches (the reservoir's size)
            max_exact = max_samples
        for what, number in (("max_exact", max_exact), ("set_max_exact", set_max_exact)):
            if isinstance(number, bool) or not isinstance(number, int) or number < 1:
                raise ValueError(f"{what} must be a positive integer, got {number!r}")
        #: (summary key, numerator, denominator of p/100), duplicates removed, in the given order
        self._percentiles = parse_percentiles(percentiles)
        self.max_exact, self.set_max_exact = max_exact, set_max_exact
        Sketch(relative_error=relative_error, max_buckets=max_buckets)  # ValueError if they are bad
        self.relative_error, self.max_buckets = relative_error, max_buckets
        #: seconds of expiry by summary type (see "Expiry")
        self.expire = parse_expire(expire)
        #: timer and histogram summaries also carry ``"values"`` (see "Raw values" above)
        self.keep_values = keep_values
        #: every summary also carries ``"interval"``, the seconds it covers
        self.include_interval = include_interval
        #: exact timer and histogram summaries of at most this many values also carry ``"values"``
        #: (a forwarder sends those rather than a sketch: fewer bytes, and exact upstream)
        self.values_up_to = values_up_to
        #: summaries dropped because they held a non-finite number, and the latest such series
        self.non_finite_dropped = 0
        self.last_non_finite: list[str] = []
        #: series whose summary raised at flush (dropped alone: never the interval), and the
        #: latest (name, error) for the worker to log
        self.series_failed = 0
        self.last_failed: list[tuple[str, str]] = []
        self._series: Series = {}
        #: summaries (protocol 1.2 "m" records) merged, and those that came after their interval
        #: was flushed (merged into the current one instead; see "Summaries" above)
        self.summaries_merged = 0
        self.late_summaries = 0
        #: the interval held open for late summaries: (start, end, series), or None
        self._held: tuple[float, float, Series] | None = None
        #: where the current interval starts (a summary ending before it is late); None: unknown
        self.current_start: float | None = None
        #: series key -> (end of its last interval with data, its gauge's last value): for expiry
        self._seen: dict[tuple[Any, ...], tuple[float, float | None]] = {}
        self._packers: dict[int, Callable[..., bytes]] = {}

    @property
    def max_samples(self) -> int:
        """The former name of :attr:`max_exact`."""
        return self.max_exact

    def __len__(self) -> int:
        """Number of series that received data this interval."""
        return len(self._series)

    def values_held(self) -> int:
        """Timer and histogram values (exact) plus sketch buckets held: the memory that grows with data."""
        held = 0
        for key, state in self._series.items():
            if key[0] in "th":
                held += len(state) if state.__class__ is array else state.buckets_held
        return held

    def add(
        self,
        type: str,
        name: str,
        source: str | None,
        tags: tuple[str, ...],
        values: Sequence[Any],
        weight: float | None = None,
        unit: str | None = None,
    ) -> None:
        """Aggregate one record: one or more measurements of one series.

        ``values`` must already be validated (finite ints/floats, at least one;
        set members: strings or ints); checking again here would cost the hot
        loop. Unknown ``type`` -> ValueError.
        """
        if weight is None and unit is None:
            self.add_records(((type, name, values, source, tags),))
        else:
            self.add_records(((type, name, values, source, tags, weight, unit),))

    def add_records(self, records: Iterable[Sequence[Any]]) -> int:
        """Aggregate decoded records ``(type, name, values, source, tags[, weight[, unit]])``.

        Returns how many values. The worker's hot loop: one call per message
        rather than per record, because a Python call costs as much as
        aggregating a one-value record. Values must already be validated, as
        for :meth:`add`. A 1.0 record (five fields) takes the fast paths.
        """
        series, max_exact, packers = self._series, self.max_exact, self._packers
        count = 0
        for record in records:
            try:
                type, name, values, source, tags = record
            except ValueError:  # a protocol 1.1 record with a weight and/or a unit
                count += self._add_extended(record)
                continue
            n = len(values)
            count += n
            key = (type, name, source, tags)
            state = series.get(key)
            if type == "t":
                if state is None:
                    state = series[key] = array("d")
                if isinstance(state, array):
                    if len(state) + n <= max_exact:
                        if n == 1:
                            state.append(values[0])
                        else:
                            pack = packers.get(n)
                            if pack is None:
                                pack = self._packer(n)
                            state.frombytes(pack(*values))
                        continue
                    state = series[key] = self._start_sketch(state)
                state.add_weighted(values, 1)
            elif type == "c":
                if state is None:
                    series[key] = [sum(values), n]
                elif n == 1:
                    state[0] += values[0]
                    state[1] += 1
                else:
                    state[0] += sum(values)
                    state[1] += n
            elif type == "g":
                if state is None:
                    series[key] = [values[-1], n, min(values), max(values), sum(values)]
                elif n == 1:
                    value = values[0]
                    state[0] = value
                    state[1] += 1
                    if value < state[2]:
                        state[2] = value
                    elif value > state[3]:
                        state[3] = value
                    state[4] += value
                else:
                    state[0] = values[-1]
                    state[1] += n
                    low, high = min(values), max(values)
                    if low < state[2]:
                        state[2] = low
                    if high > state[3]:
                        state[3] = high
                    state[4] += sum(values)
            elif type == "m":
                count += round(self._add_summary(name, source, tags, values[0])) - n
            else:
                self._add_other(type, name, values, source, tags, 1, None)
        return count

    # --- the less frequent paths ---------------------------------------------------

    def _add_extended(self, record: Sequence[Any]) -> int:
        if not 5 <= len(record) <= 7:
            raise ValueError(f"a record has 5 to 7 fields, got {len(record)}")
        type, name, values, source, tags = record[:5]
        if type == "m":
            return round(self._add_summary(name, source, tags, values[0]))
        weight = record[5] if len(record) > 5 else None
        unit = record[6] if len(record) > 6 else None
        self._add_other(type, name, values, source, tags, 1 if weight is None else weight, unit)
        return len(values)

    def _add_other(
        self,
        type: str,
        name: str,
        values: Sequence[Any],
        source: str | None,
        tags: tuple[str, ...],
        weight: float,
        unit: str | None,
    ) -> None:
        """Everything but the 1.0 fast paths: histograms, sets, weights."""
        series = self._series
        if type == "t" or type == "h":
            key = (type, name, source, tags) if type == "t" else (type, name, source, tags, unit)
            state = series.get(key)
            if state is None or state.__class__ is array:
                if weight == 1 and (state is None or len(state) + len(values) <= self.max_exact):
                    if state is None:
                        state = series[key] = array("d")
                    state.extend(float(v) for v in values)
                    return
                state = series[key] = self._start_sketch(state if state is not None else array("d"))
            state.add_weighted(values, weight)
        elif type == "c":
            key = (type, name, source, tags)
            state = series.get(key)
            total, n = sum(values) * weight, len(values) * weight
            if state is None:
                series[key] = [total, n]
            else:
                state[0] += total
                state[1] += n
        elif type == "g":  # gauges ignore weights
            self.add_records(((type, name, values, source, tags),))
        elif type == "s":  # so do sets
            key = (type, name, source, tags)
            state = series.get(key)
            if state is None:
                state = series[key] = SetSketch(max_exact=self.set_max_exact)
            state.update(values)
        else:
            raise ValueError(
                f"unknown measurement type {type!r} (expected one of {', '.join(repr(code) for code in TYPE_NAMES)})"
            )

    def _packer(self, n: int) -> Callable[..., bytes]:
        """A function packing n numbers as doubles, for array.frombytes (one C call a record)."""
        pack = struct.Struct(f"{n}d").pack
        if n <= _MAX_CACHED_PACKER:
            self._packers[n] = pack
        return pack

    def _start_sketch(self, exact: array[float]) -> Distribution:
        """Switch an exact series to a sketch: its values go in first."""
        sketch = Distribution(self.relative_error, self.max_buckets)
        if exact:
            sketch.add_weighted(exact, 1)
            sketch.sum = fsum(exact)  # as exact as the exact series was
        return sketch

    # --- flush ----------------------------------------------------------------------

    def flush(self, time: float, interval: float, series: Series | None = None) -> list[Summary]:
        """Summaries of everything added since the last flush (and of idle series not yet
        expired), sorted; then start empty.

        ``time`` is the flush boundary (Unix seconds), stamped on every summary;
        ``interval`` the seconds the flush covers, which turns counters into rates.
        Sorted by (type, name, source, tags, unit) so that output is deterministic.
        A summary that would hold a non-finite number is dropped and counted.
        """
        if not interval > 0:
            raise ValueError(f"flush interval must be positive, got {interval!r}")
        if series is None:
            series, self._series = self._series, {}
            self.current_start = time
        stamp = {"time": time, "interval": interval} if self.include_interval else {"time": time}
        idle = self._idle_keys(series, time)
        summaries: list[Summary] = []
        for key in sorted(series.keys() | idle, key=series_order):
            type_, name, source, tags = key[:4]
            summary: dict[str, Any] = {
                **stamp,
                "type": TYPE_NAMES[type_],
                "name": name,
                "source": source,
                "tags": list(tags),
            }
            if type_ == HISTOGRAM:
                summary["unit"] = key[4]
            state = series.get(key)
            try:  # each series under its own guard: one that cannot be summarised is dropped alone
                if state is None:
                    summary.update(idle_stats(type_, self._seen[key][1]))
                else:
                    summary.update(self._stats(type_, state, interval))
                    if self.expire[TYPE_NAMES[type_]]:
                        self._seen[key] = (time, state[0] if type_ == GAUGE else None)
            except Exception as error:
                self._failed(name, error)
                continue
            if all_finite(summary):
                summaries.append(summary)  # type: ignore[arg-type]  # built by kind: see zibrato.summary
            else:
                self._dropped_non_finite(summary)
        return summaries

    def _idle_keys(self, series: Series, time: float) -> set[tuple[Any, ...]]:
        """Series without data this interval that are still reported (not expired); forget the rest."""
        idle = set()
        for key in list(self._seen):
            if key in series:
                continue
            seen, _ = self._seen[key]
            if time - seen <= self.expire[TYPE_NAMES[key[0]]]:
                idle.add(key)
            else:
                del self._seen[key]
        return idle

    def _stats(self, type_: str, state: Any, interval: float) -> dict[str, Any]:
        """The statistics of one series with data (see :mod:`zibrato.statistics`)."""
        if type_ == COUNTER:
            return counter_stats(state, interval)
        if type_ == GAUGE:
            return gauge_stats(state)
        if type_ == SET:
            return set_stats(state)
        if state.__class__ is array:
            with_values = self.keep_values or len(state) <= self.values_up_to
            return exact_stats(state, self._percentiles, self.relative_error, self.max_buckets, with_values)
        return sketch_stats(state, self._percentiles, self.max_exact if self.keep_values else 0)

    def _failed(self, name: str, error: Exception) -> None:
        self.series_failed += 1
        self.last_failed.append((name, f"{error.__class__.__name__}: {error}"))
        del self.last_failed[:-_LAST_NON_FINITE]

    def _dropped_non_finite(self, summary: dict[str, Any]) -> None:
        self.non_finite_dropped += 1
        self.last_non_finite.append(summary["name"])
        del self.last_non_finite[:-_LAST_NON_FINITE]


class LevelAggregators(Levels[Aggregator]):
    """One :class:`Aggregator` per level (see :class:`zibrato.levels.Levels`)."""
