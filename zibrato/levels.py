"""One aggregator per level, for the destinations that keep levels apart.

Why apart from :mod:`zibrato.aggregation`: it is a composition of
aggregators, not aggregation; it asks of each only what :class:`PerLevel`
names, so this module needs nothing from :mod:`zibrato.aggregation`, which
declares ``LevelAggregators = Levels[Aggregator]`` (as a subclass).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from typing import Any, Generic, Protocol, TypeVar

from .summary import Summary

__all__ = ["Levels", "PerLevel"]


class PerLevel(Protocol):
    """What :class:`LevelAggregators` asks of the aggregator of one level."""

    current_start: float | None
    summaries_merged: int
    late_summaries: int
    non_finite_dropped: int
    last_non_finite: list[str]
    series_failed: int
    last_failed: list[tuple[str, str]]

    def __len__(self) -> int: ...

    def hold(self, start: float, end: float) -> None: ...


A = TypeVar("A", bound=PerLevel)


class Levels(Generic[A]):
    """One :class:`~zibrato.aggregation.Aggregator` per level, behind the one interface the worker uses.

    For the workers whose destination keeps the level (a forwarder: upstream
    workers subscribe by level; OTLP and Prometheus: an attribute and a label),
    levels are aggregated apart and every summary flushed carries ``"level"``.
    """

    def __init__(self, make: Callable[[], A]) -> None:
        self._make = make
        self.by_level: dict[str, A] = {}
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

    def level(self, level: str) -> A:
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

    def add_records(self, records: Iterable[Sequence[Any]]) -> int:  # pragma: no cover - use level()
        raise TypeError("a forwarder aggregates per level: use level(name).add_records")

    def _each(self, method: str, *args: object) -> list[Summary]:
        out: list[Summary] = []
        for level, aggregator in self.by_level.items():
            for summary in getattr(aggregator, method)(*args):
                summary["level"] = level
                out.append(summary)
        return out

    def flush(self, time: float, interval: float) -> list[Summary]:
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

    def flush_held(self) -> list[Summary]:
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
