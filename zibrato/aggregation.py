"""Per-interval aggregation of measurements into one summary per series.

A series is ``(type, name, source, tags)`` (histograms add their unit);
``type`` is the wire code ``"c"`` (counter), ``"g"`` (gauge), ``"t"``
(timer, seconds), ``"h"`` (histogram, any unit) or ``"s"`` (set).
:class:`Aggregator` is pure code (no I/O, no threads): the worker calls
:meth:`Aggregator.add_records` for every message it receives and
:meth:`Aggregator.flush` at every interval boundary.

What a summary holds
--------------------
Every summary is a plain dict ``{"time", "type", "name", "source", "tags", ...}``
(plus ``"interval"``, the seconds it covers, with ``include_interval``):

* counter: ``value`` (float sum, each value times its record's weight),
  ``count`` (observations: values times weight), ``rate`` (value per second);
* gauge: ``value`` (last received), ``count``, ``min``, ``max``, ``sum``;
* timer (seconds) and histogram (any unit; ``"unit"``: str or None):
  ``count``, ``sum``, ``sum_squares``, ``min``, ``max``, ``mean``,
  ``median``, ``stddev`` (population) and one key per configured percentile
  (:func:`percentile_key`: 99.9 -> ``"p99_9"``); ``"exact"``: True when the
  median and percentiles are exact nearest ranks (:func:`nearest_rank`),
  and ``"sketch"``: the series' distribution in :class:`zibrato.sketch.Sketch`'s
  dict form, mergeable across workers and intervals;
* set: ``value`` (unique members), ``"exact"``, and ``"sketch"``
  (:class:`zibrato.sketch.SetSketch`'s dict form).

Exact while small, then a sketch
--------------------------------
A timer or histogram series keeps its values exactly, as packed doubles
(``array('d')``, 8 bytes a value), up to ``max_exact`` values per interval
(10,000 by default: 80 kB): its median and percentiles are then exact
nearest ranks and ``"exact"`` is True. Past that, or at the first weighted
record (a sampled value is not an exact sample), the series becomes a
:class:`~zibrato.sketch.Sketch`: an exponential histogram whose quantiles are
within ``relative_error`` (1 % by default: scale 6, a bound of 0.54 %) of the
exact nearest-rank values, in at most ``max_buckets`` buckets per sign
(2,048: 5 orders of magnitude take ~1,100). A series whose range needs more
is brought to a lower scale; its summary then says the bound in force,
``"relative_error"`` (always present once sketched). ``count``, ``sum``,
``sum_squares``, ``min``, ``max``, ``mean`` and ``stddev`` stay exact (sums
as running float sums). The median of a sketched series is its 0.5
quantile by nearest rank.

Sets keep their members exactly up to ``set_max_exact`` (1,000), then a
HyperLogLog sketch (standard error 0.81 %, 16 KiB).

Weights and units (protocol 1.1)
--------------------------------
A record may carry a weight (``1 / sample rate``): a counter's values count
``value x weight``; a timer's or histogram's values count as ``weight``
observations each, in ``count``, the sums and the sketch; gauges and sets
ignore it. A histogram record may carry a unit, which is part of its series.

Expiry
------
``expire`` (seconds; a number for every kind, or a dict by summary type)
keeps reporting a series that stopped receiving, as gostatsd does, until
that many seconds have passed since the end of its last interval with
data: a counter as 0 (value, count, rate), a gauge as its last value (count
0), a timer or histogram as count 0 without percentiles, a set as 0. 0 (the
default) reports only intervals with data.

No non-finite number, ever
--------------------------
Values on the wire are finite, but their sums can overflow (``1e308`` twice).
:meth:`Aggregator.flush` is the one place that checks: a summary holding an
infinity or NaN is dropped whole (a clamped number would look real), the
drop is counted in :attr:`Aggregator.non_finite_dropped` and the series is
listed in :attr:`Aggregator.last_non_finite` for the worker to log. No
destination ever receives one.

Raw values (``keep_values=True``)
---------------------------------
A backend that forwards values (statsd, which computes its own percentiles)
builds its aggregator with ``keep_values=True``: each timer and histogram
summary then also carries ``"values"``: every value in arrival order while
exact (the array the series held, handed over rather than copied), or, once
sketched, ``max_exact`` values spread evenly over the sketch (its
``(k - 1/2) / m`` quantiles), with ``"sampled"``: how many.

Speed
-----
:meth:`Aggregator.add_records` is the worker's hot loop, one call per
message: one dict lookup per record, a fast path per type, C-level builtins
over the record's values (timer values appended with one cached ``struct``
pack into the array). A sketched series costs one ``log2`` and one dict
update per value (~0.2 us). Sorting for the percentiles happens once per
series at flush.
"""

from __future__ import annotations

import functools
import math
import struct
from array import array
from collections.abc import Callable, Iterable, Mapping, Sequence
from decimal import Decimal
from fractions import Fraction
from typing import Any

from .sketch import DEFAULT_MAX_BUCKETS, DEFAULT_RELATIVE_ERROR, SetSketch, Sketch, relative_error_of

__all__ = ["Aggregator", "nearest_rank", "percentile_key", "parse_expire", "TYPE_NAMES", "KINDS"]

#: wire code -> the ``type`` of a summary
TYPE_NAMES = {"c": "counter", "g": "gauge", "t": "timer", "h": "histogram", "s": "set"}
KINDS = tuple(TYPE_NAMES.values())
DEFAULT_MAX_EXACT = 10_000
DEFAULT_SET_MAX_EXACT = 1_000

_MAX_CACHED_PACKER = 4096  # record lengths up to this get a cached struct packer
_LAST_NON_FINITE = 20  # series names kept for the worker's log


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
def _quantile_fraction(p: float) -> tuple[int, int]:
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
    num, den = _quantile_fraction(p)
    k = -(-num * n // den)
    return sorted_values[min(max(k, 1), n) - 1]


def parse_expire(value: float | str | Mapping[str, float] | None) -> dict[str, float]:
    """Seconds of expiry per summary type from ``300``, ``"300,gauge=3600"`` or ``{"gauge": 3600}``.

    A bare number applies to every kind; ``kind=seconds`` overrides one
    (counter, gauge, timer, histogram, set). 0 means "report only intervals
    with data". ValueError on anything else.
    """
    out = dict.fromkeys(KINDS, 0.0)
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


class _Distribution(Sketch):
    """A sketched timer or histogram series: the sketch plus the sum of squares (for stddev)."""

    __slots__ = ("squares",)

    def __init__(self, relative_error: float, max_buckets: int) -> None:
        super().__init__(relative_error=relative_error, max_buckets=max_buckets, max_exact=0)
        self.squares = 0.0

    def add_weighted(self, values: Sequence[float], weight: float) -> None:
        norm = math.hypot(*values)  # one C call, as accurate as summing the squares
        self.squares += norm * norm * weight  # (x * x overflows to inf; x ** 2 would raise)
        self._add_unchecked(values, weight)


class Aggregator:
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
        parsed: dict[str, tuple[int, int]] = {}
        for p in percentiles:
            try:
                value = float(p)
            except (TypeError, ValueError):
                raise ValueError(f"percentile {p!r} is not a number") from None
            if not 0 < value <= 100:  # also rejects NaN
                raise ValueError(f"percentile {p!r} is outside (0, 100]")
            parsed.setdefault(percentile_key(value), _quantile_fraction(value))
        #: (summary key, numerator, denominator of p/100), duplicates removed, in the given order
        self._percentiles = [(key, num, den) for key, (num, den) in parsed.items()]
        self.percentiles = tuple(float(p) for p in percentiles)
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
        self._series: dict[tuple, Any] = {}
        #: summaries (protocol 1.2 "m" records) merged, and those that came after their interval
        #: was flushed (merged into the current one instead; see "Summaries" above)
        self.summaries_merged = 0
        self.late_summaries = 0
        #: the interval held open for late summaries: (start, end, series), or None
        self._held: tuple[float, float, dict] | None = None
        #: where the current interval starts (a summary ending before it is late); None: unknown
        self.current_start: float | None = None
        #: series key -> (end of its last interval with data, its gauge's last value): for expiry
        self._seen: dict[tuple, tuple[float, float | None]] = {}
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
        values: Sequence,
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

    def add_records(self, records: Iterable[Sequence]) -> int:
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

    def _add_extended(self, record: Sequence) -> int:
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
        values: Sequence,
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

    # --- summaries from forwarders (protocol 1.2) ------------------------------------

    def add_summary(self, name: str, source: str | None, tags: tuple[str, ...], summary: Mapping) -> float:
        """Merge one series' interval summary (a "m" record's map, already validated).

        Returns the observations it stands for. It goes into the interval it
        belongs to (its ``end``): the held one (:meth:`hold`) when it ends
        inside it, the current one otherwise; one that ends before both is
        late, counted in :attr:`late_summaries`, and merged into the current.
        """
        return self._add_summary(name, source, tags, summary)

    def _add_summary(self, name: str, source: str | None, tags: tuple, summary: Mapping) -> float:
        series = self._series_for(summary["end"])
        kind = summary["kind"]
        key: tuple[Any, ...] = (kind, name, source, tuple(tags))
        if kind == "h":
            key += (summary.get("unit"),)
        state = series.get(key)
        self.summaries_merged += 1
        if kind == "c":
            total, count = summary["sum"], summary["count"]
            if state is None:
                series[key] = [total, count]
            else:
                state[0] += total
                state[1] += count
            return count
        if kind == "g":
            return self._merge_gauge(series, key, state, summary)
        if kind == "s":
            incoming = SetSketch.from_dict(summary["sketch"], max_exact=self.set_max_exact)
            if state is None:
                state = series[key] = SetSketch(max_exact=self.set_max_exact)
            state.merge(incoming)
            return 0
        values = summary.get("values")
        if values is not None:  # a source's few exact values: they stay exact here too
            current, self._series = self._series, series
            try:
                self._add_other(kind, name, values, source, tuple(tags), 1, summary.get("unit"))
            finally:
                self._series = current
            return len(values)
        sketch = Sketch.from_dict(summary["sketch"], max_buckets=self.max_buckets)
        if not sketch.count:
            return 0
        if state is None or state.__class__ is array:
            state = series[key] = self._start_sketch(state if state is not None else array("d"))
        state.merge(sketch)
        state.squares += summary["sum_squares"]
        return sketch.count

    @staticmethod
    def _merge_gauge(series: dict, key: tuple, state: list | None, summary: Mapping) -> float:
        """Counts, sums and extremes add up; the last value is the one with the latest time.

        A gauge state built from raw values has no time (5 fields): what this
        worker received itself is newer than any source's finished interval,
        so a summary never replaces its last value.
        """
        last, when, count = summary["last"], summary["time"], summary["count"]
        low, high, total = summary["min"], summary["max"], summary["sum"]
        if state is None:
            series[key] = [last, count, low, high, total, when]
            return count
        state[1] += count
        if low < state[2]:
            state[2] = low
        if high > state[3]:
            state[3] = high
        state[4] += total
        if len(state) > 5 and when >= state[5]:
            state[0], state[5] = last, when
        return count

    def stamp_gauges(self, records: Iterable[Sequence], time: float) -> None:
        """Note ``time`` as when the gauges among ``records`` (just added) took their last value.

        A forwarder calls it with each message's time, so that the gauge
        summaries it sends carry ``last_time`` and the latest value wins
        upstream.
        """
        series = self._series
        for record in records:
            if record[0] == "g":
                state = series.get(("g", record[1], record[3], record[4]))
                if state is not None:
                    if len(state) > 5:
                        state[5] = time
                    else:
                        state.append(time)

    def _series_for(self, end: float) -> dict:
        """The series dict a summary for the interval ending at ``end`` belongs in."""
        held = self._held
        if held is not None and held[0] < end <= held[1]:
            return held[2]
        start = held[0] if held is not None else self.current_start
        if start is not None and end <= start:
            self.late_summaries += 1
        return self._series

    def hold(self, start: float, end: float) -> None:
        """End the current interval but keep it open for summaries still on their way.

        Raw measurements from now on go into the next interval; summaries of
        this one (their ``end`` in (start, end]) still join it until
        :meth:`flush_held`. At most one interval is held.
        """
        if self._held is not None:
            raise RuntimeError("an interval is already held: flush it first")
        self._held = (start, end, self._series)
        self._series = {}
        self.current_start = end

    @property
    def held(self) -> tuple[float, float] | None:
        """(start, end) of the interval held for late summaries, or None."""
        return None if self._held is None else self._held[:2]

    def flush_held(self) -> list[dict]:
        """Summaries of the held interval (see :meth:`hold`); then nothing is held."""
        if self._held is None:
            return []
        start, end, series = self._held
        self._held = None
        return self.flush(end, max(end - start, 1e-6), series=series)

    def _packer(self, n: int) -> Callable[..., bytes]:
        """A function packing n numbers as doubles, for array.frombytes (one C call a record)."""
        pack = struct.Struct(f"{n}d").pack
        if n <= _MAX_CACHED_PACKER:
            self._packers[n] = pack
        return pack

    def _start_sketch(self, exact: array) -> _Distribution:
        """Switch an exact series to a sketch: its values go in first."""
        sketch = _Distribution(self.relative_error, self.max_buckets)
        if exact:
            sketch.add_weighted(exact, 1)
            sketch.sum = _fsum(exact)  # as exact as the exact series was
        return sketch

    # --- flush ----------------------------------------------------------------------

    def flush(self, time: float, interval: float, series: dict | None = None) -> list[dict]:
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
        summaries = []
        for key in sorted(series.keys() | idle, key=_sort_key):
            type_, name, source, tags = key[:4]
            summary = {**stamp, "type": TYPE_NAMES[type_], "name": name, "source": source, "tags": list(tags)}
            if type_ == "h":
                summary["unit"] = key[4]
            state = series.get(key)
            try:  # each series under its own guard: one that cannot be summarised is dropped alone
                if state is None:
                    summary.update(self._idle_stats(type_, self._seen[key][1]))
                else:
                    summary.update(self._stats(type_, state, interval))
                    if self.expire[TYPE_NAMES[type_]]:
                        self._seen[key] = (time, state[0] if type_ == "g" else None)
            except Exception as error:
                self._failed(name, error)
                continue
            if _all_finite(summary):
                summaries.append(summary)
            else:
                self._dropped_non_finite(summary)
        return summaries

    def _idle_keys(self, series: dict, time: float) -> set[tuple]:
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

    def _stats(self, type_: str, state: Any, interval: float) -> dict:
        if type_ == "c":
            value, count = state
            return {"value": float(value), "count": count, "rate": value / interval}
        if type_ == "g":
            last, count, low, high, total = state[:5]
            stats = {"value": last, "count": count, "min": low, "max": high, "sum": total}
            if len(state) > 5:  # merged from summaries: when the last value was taken
                stats["last_time"] = state[5]
            return stats
        if type_ == "s":
            return {"value": state.count, "exact": state.exact, "sketch": state.to_dict()}
        if state.__class__ is array:
            return self._exact_stats(state)
        return self._sketch_stats(state)

    @staticmethod
    def _idle_stats(type_: str, last: float | None) -> dict:
        """What an idle, unexpired series reports (as gostatsd does)."""
        if type_ == "c":
            return {"value": 0.0, "count": 0, "rate": 0.0}
        if type_ == "g":
            return {"value": last, "count": 0, "min": last, "max": last, "sum": 0}
        if type_ == "s":
            return {"value": 0, "exact": True, "sketch": SetSketch().to_dict()}
        return {"count": 0, "sum": 0.0, "sum_squares": 0.0, "exact": True}

    def _exact_stats(self, state: array) -> dict:
        ordered = state.tolist()  # floats in memory order: the sums run faster before the sort
        count = len(ordered)
        total = _fsum(ordered)
        norm = math.hypot(*ordered)
        squares = norm * norm
        mean = total / count
        # sqrt(sum((x - mean)**2) / n) in C, with hypot's extended precision
        stddev = math.dist(ordered, [mean] * count) / math.sqrt(count) if math.isfinite(mean) else mean
        sketch = Sketch(relative_error=self.relative_error, max_buckets=self.max_buckets, max_exact=0)
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
        summary = {
            "count": count,
            "sum": total,
            "sum_squares": squares,
            "min": low,
            "max": high,
            "mean": mean,
            "median": median,
            "stddev": stddev,
        }
        for key, num, den in self._percentiles:
            summary[key] = ordered[min(max(-(-num * count // den), 1), count) - 1]
        summary["exact"] = True
        summary["sketch"] = sketch.to_dict()
        if self.keep_values or count <= self.values_up_to:
            summary["values"] = state
        return summary

    def _sketch_stats(self, state: _Distribution) -> dict:
        count, total, squares = state.count, float(state.sum), float(state.squares)
        low, high = state.min, state.max
        mean = min(max(total / count, low), high) if math.isfinite(total) else total
        if low == high:
            stddev = 0.0
        else:
            stddev = math.sqrt(max((squares - total * mean) / count, 0.0))
        summary: dict[str, Any] = {
            "count": count,
            "sum": total,
            "sum_squares": squares,
            "min": low,
            "max": high,
            "mean": mean,
            "median": state.quantile(0.5),
            "stddev": stddev,
        }
        for key, num, den in self._percentiles:
            summary[key] = state.quantile(num / den)
        summary["exact"] = False
        summary["relative_error"] = relative_error_of(state.scale)
        summary["sketch"] = state.to_dict()
        if self.keep_values:
            values = state.evenly_spaced(min(self.max_exact, max(1, math.ceil(count))))
            summary["values"], summary["sampled"] = values, len(values)
        return summary

    def _failed(self, name: str, error: Exception) -> None:
        self.series_failed += 1
        self.last_failed.append((name, f"{error.__class__.__name__}: {error}"))
        del self.last_failed[:-_LAST_NON_FINITE]

    def _dropped_non_finite(self, summary: dict) -> None:
        self.non_finite_dropped += 1
        self.last_non_finite.append(summary["name"])
        del self.last_non_finite[:-_LAST_NON_FINITE]


def _all_finite(summary: dict) -> bool:
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


def _fsum(values: Sequence[float]) -> float:
    """math.fsum, but an overflowing total is inf rather than an exception that loses the flush."""
    try:
        return math.fsum(values)
    except OverflowError:
        return sum(values)


def _sort_key(key: tuple) -> tuple:
    type_, name, source, tags = key[:4]
    unit = key[4] if len(key) > 4 else None
    return (TYPE_NAMES[type_], name, source or "", source is not None, tags, unit or "", unit is not None)


class LevelAggregators:
    """One :class:`Aggregator` per level, behind the one interface the worker uses.

    For the workers whose destination keeps the level (a forwarder: upstream
    workers subscribe by level; OTLP and Prometheus: an attribute and a label),
    levels are aggregated apart and every summary flushed carries ``"level"``.
    """

    def __init__(self, make: Callable[[], Aggregator]) -> None:
        self._make = make
        self.by_level: dict[str, Aggregator] = {}
        self._current_start: float | None = None

    @property
    def current_start(self) -> float | None:
        return self._current_start

    @current_start.setter
    def current_start(self, start: float | None) -> None:
        """Where the current interval starts, for every level (see Aggregator.current_start)."""
        self._current_start = start
        for aggregator in self.by_level.values():
            aggregator.current_start = start

    def level(self, level: str) -> Aggregator:
        aggregator = self.by_level.get(level)
        if aggregator is None:
            aggregator = self.by_level[level] = self._make()
            aggregator.current_start = self._current_start
            held = self.held
            if held is not None:  # summaries of the interval held open join it here too
                aggregator.hold(*held)
        return aggregator

    def __len__(self) -> int:
        return sum(len(a) for a in self.by_level.values())

    def add_records(self, records: Iterable[Sequence]) -> int:  # pragma: no cover - use level()
        raise TypeError("a forwarder aggregates per level: use level(name).add_records")

    def _each(self, method: str, *args: object) -> list[dict]:
        out = []
        for level, aggregator in self.by_level.items():
            for summary in getattr(aggregator, method)(*args):
                summary["level"] = level
                out.append(summary)
        return out

    def flush(self, time: float, interval: float) -> list[dict]:
        self._current_start = time
        return self._each("flush", time, interval)

    _held: tuple[float, float] | None = None

    def hold(self, start: float, end: float) -> None:
        self._held = (start, end)
        self._current_start = end
        for aggregator in self.by_level.values():
            aggregator.hold(start, end)

    @property
    def held(self) -> tuple[float, float] | None:
        return self._held

    def flush_held(self) -> list[dict]:
        self._held = None
        return self._each("flush_held")

    def _total(self, name: str) -> int:
        return sum(getattr(a, name) for a in self.by_level.values())

    @property
    def summaries_merged(self) -> int:
        return self._total("summaries_merged")

    @property
    def late_summaries(self) -> int:
        return self._total("late_summaries")

    @property
    def non_finite_dropped(self) -> int:
        return self._total("non_finite_dropped")

    @property
    def last_non_finite(self) -> list[str]:
        return [name for a in self.by_level.values() for name in a.last_non_finite]

    @property
    def series_failed(self) -> int:
        return self._total("series_failed")

    @property
    def last_failed(self) -> list[tuple[str, str]]:
        return [failure for a in self.by_level.values() for failure in a.last_failed]
