"""An aggregator's side of protocol 1.2: forwarded summaries, and the interval held open for them.

Why apart from :mod:`zibrato.aggregation`: a forwarder's summary of a series
is not a measurement. It belongs to the interval its ``end`` falls in, which
may be the one just ended (:meth:`SummaryMerging.hold` keeps it open while
summaries are on their way) or one already flushed (late: counted, merged
into the current one); how each kind's state merges is :mod:`zibrato.merging`.
:class:`zibrato.aggregation.Aggregator` is built on this class: the state it
reads is the aggregator's, declared below for the type checker.
"""

from __future__ import annotations

from array import array
from collections.abc import Iterable, Mapping, Sequence
from typing import TYPE_CHECKING, Any

from .merging import Series, merge_counter, merge_gauge, merge_set, merge_sketch, stamp_gauges
from .summary import COUNTER, GAUGE, HISTOGRAM, SET, Summary

__all__ = ["SummaryMerging"]


class SummaryMerging:
    """Merging forwarded summaries into the interval they belong to (a base of ``Aggregator``)."""

    _series: Series
    _held: tuple[float, float, Series] | None
    current_start: float | None
    summaries_merged: int
    late_summaries: int
    set_max_exact: int
    max_buckets: int

    if TYPE_CHECKING:  # the aggregator's own, which this class calls

        def _add_other(self, *args: Any, **kwargs: Any) -> None: ...

        def _start_sketch(self, exact: array[float]) -> Any: ...

        def flush(self, time: float, interval: float, series: Series | None = None) -> list[Summary]: ...

    def add_summary(self, name: str, source: str | None, tags: tuple[str, ...], summary: Mapping[str, Any]) -> float:
        """Merge one series' interval summary (a "m" record's map, already validated).

        Returns the observations it stands for. It goes into the interval it
        belongs to (its ``end``): the held one (:meth:`hold`) when it ends
        inside it, the current one otherwise; one that ends before both is
        late, counted in :attr:`late_summaries`, and merged into the current.
        """
        return self._add_summary(name, source, tags, summary)

    def _add_summary(self, name: str, source: str | None, tags: tuple[str, ...], summary: Mapping[str, Any]) -> float:
        series = self._series_for(summary["end"])
        kind = summary["kind"]
        key: tuple[Any, ...] = (kind, name, source, tuple(tags))
        if kind == HISTOGRAM:
            key += (summary.get("unit"),)
        state = series.get(key)
        self.summaries_merged += 1
        if kind == COUNTER:
            return merge_counter(series, key, state, summary)
        if kind == GAUGE:
            return merge_gauge(series, key, state, summary)
        if kind == SET:
            return merge_set(series, key, state, summary, self.set_max_exact)
        values = summary.get("values")
        if values is not None:  # a source's few exact values: they stay exact here too
            current, self._series = self._series, series
            try:
                self._add_other(kind, name, values, source, tuple(tags), 1, summary.get("unit"))
            finally:
                self._series = current
            return len(values)
        return merge_sketch(series, key, state, summary, self.max_buckets, self._start_sketch)

    def stamp_gauges(self, records: Iterable[Sequence[Any]], time: float) -> None:
        """Note ``time`` as when the gauges among ``records`` (just added) took their last value.

        A forwarder calls it with each message's time, so that the gauge
        summaries it sends carry ``last_time`` and the latest value wins
        upstream.
        """
        stamp_gauges(self._series, records, time)

    def _series_for(self, end: float) -> Series:
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

    def flush_held(self) -> list[Summary]:
        """Summaries of the held interval (see :meth:`hold`); then nothing is held."""
        if self._held is None:
            return []
        start, end, series = self._held
        self._held = None
        return self.flush(end, max(end - start, 1e-6), series=series)
