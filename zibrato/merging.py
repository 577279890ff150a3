"""Merging another worker's summary of a series (protocol 1.2 ``"m"`` records) into a series' state.

Why apart from :mod:`zibrato.aggregation`: a forwarder's summary is not a
measurement; each kind merges by its own rule (sums add, a gauge's last
value is the latest in time, sketches and set sketches merge as one sketch
of all the data would). The aggregator decides which interval a summary
joins (:meth:`zibrato.aggregation.Aggregator.add_summary`); these functions
fold it into the state it keeps in that interval's ``series`` dict (the
states :mod:`zibrato.aggregation` documents). Each returns the observations
the summary stands for. The summary was checked first (:mod:`zibrato.summary_check`).
"""

from __future__ import annotations

from array import array
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any

from .sketch import SetSketch, Sketch
from .statistics import Distribution
from .summary import GAUGE

__all__ = ["merge_counter", "merge_gauge", "merge_set", "merge_sketch", "stamp_gauges"]

#: an interval's series: series key -> that series' state
Series = dict[tuple[Any, ...], Any]


def merge_counter(series: Series, key: tuple[Any, ...], state: list[float] | None, summary: Mapping[str, Any]) -> float:
    """Sums and counts add up."""
    total: float = summary["sum"]
    count: float = summary["count"]
    if state is None:
        series[key] = [total, count]
    else:
        state[0] += total
        state[1] += count
    return count


def merge_gauge(series: Series, key: tuple[Any, ...], state: list[float] | None, summary: Mapping[str, Any]) -> float:
    """Counts, sums and extremes add up; the last value is the one with the latest time.

    A gauge state built from raw values has no time (5 fields): what this
    worker received itself is newer than any source's finished interval,
    so a summary never replaces its last value.
    """
    count: float = summary["count"]
    last, when = summary["last"], summary["time"]
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


def merge_set(
    series: Series, key: tuple[Any, ...], state: SetSketch | None, summary: Mapping[str, Any], max_exact: int
) -> float:
    """The union of both sets (a set summary stands for no observations: 0)."""
    incoming = SetSketch.from_dict(summary["sketch"], max_exact=max_exact)
    if state is None:
        state = series[key] = SetSketch(max_exact=max_exact)
    state.merge(incoming)
    return 0


def merge_sketch(
    series: Series,
    key: tuple[Any, ...],
    state: array[float] | Distribution | None,
    summary: Mapping[str, Any],
    max_buckets: int,
    start_sketch: Callable[[array[float]], Distribution],
) -> float:
    """A timer's or histogram's sketch: the series becomes (or stays) a sketch, and adds its squares."""
    sketch = Sketch.from_dict(summary["sketch"], max_buckets=max_buckets)
    if not sketch.count:
        return 0
    if state is None or state.__class__ is array:
        state = series[key] = start_sketch(state if state is not None else array("d"))
    assert isinstance(state, Distribution)
    state.merge(sketch)
    state.squares += summary["sum_squares"]
    return sketch.count


def stamp_gauges(series: Series, records: Iterable[Sequence[Any]], time: float) -> None:
    """Note ``time`` as when the gauges among ``records`` (just added to ``series``) took their last value."""
    for record in records:
        if record[0] == GAUGE:
            state = series.get((GAUGE, record[1], record[3], record[4]))
            if state is not None:
                if len(state) > 5:
                    state[5] = time
                else:
                    state.append(time)
