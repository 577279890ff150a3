"""What a destination asks of the worker's aggregation, declared beside the destination.

A destination used to get what it needed by side doors: ``needs_level`` and
``needs_values`` read with ``getattr``, and the forwarder subclassed the
worker to swap its aggregator and stamp gauges. Now a destination sets one
class attribute, ``aggregation_needs = AggregationNeeds(...)``, and the worker
builds its aggregator from that and its :class:`~zibrato.worker_config.WorkerConfig`
(:func:`build_aggregator`) and feeds it through :func:`feeder`. The two old
attributes are still read for destinations written against them.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from . import protocol
from .aggregation import Aggregator, LevelAggregators
from .worker_config import WorkerConfig

#: what the intake hands the aggregation: a decoded message and its records that passed the filters
Feed = Callable[[protocol.Batch, Sequence[Sequence[Any]]], float]


@dataclass(frozen=True)
class AggregationNeeds:
    """A destination's needs; the defaults are what most destinations want."""

    #: one aggregator per level, every summary carrying ``"level"`` (OTLP, Prometheus, the forwarder)
    levels_apart: bool = False
    #: keep each timer's and histogram's values in its summary (the console, Graphite's exact mode)
    values: bool = False
    #: the percentiles to summarise; None: the worker's ``--percentiles``
    percentiles: Sequence[float] | None = None
    #: a timer or histogram of at most this many values keeps them (the forwarder sends them exact)
    values_up_to: int = 0
    #: remember when each gauge's last value came (the forwarder sends it upstream)
    gauge_times: bool = False

    @classmethod
    def of(cls, destination: object) -> AggregationNeeds:
        """The destination's declared needs, or the ones its older attributes ask for."""
        declared = getattr(destination, "aggregation_needs", None)
        if isinstance(declared, AggregationNeeds):
            return declared
        return cls(
            levels_apart=bool(getattr(destination, "needs_level", False)),
            values=bool(getattr(destination, "needs_values", False)),
        )


def build_aggregator(needs: AggregationNeeds, config: WorkerConfig) -> Aggregator | LevelAggregators:
    """The aggregator a worker with ``config`` keeps for a destination with ``needs``."""
    make = functools.partial(
        Aggregator,
        percentiles=config.percentiles if needs.percentiles is None else needs.percentiles,
        max_exact=config.max_exact,
        relative_error=config.relative_error,
        expire=config.expire,
        keep_values=needs.values,
        include_interval=True,
        values_up_to=needs.values_up_to,
        **config.aggregation,
    )
    return LevelAggregators(make) if needs.levels_apart else make()


def feeder(aggregator: Aggregator | LevelAggregators, needs: AggregationNeeds) -> Feed:
    """The one call that adds a message's records (to its level's aggregator when levels are apart)."""

    def feed(batch: protocol.Batch, records: Sequence[Sequence[Any]]) -> float:
        target = aggregator.level(batch.level) if isinstance(aggregator, LevelAggregators) else aggregator
        count = target.add_records(records)
        if needs.gauge_times:
            target.stamp_gauges(records, batch.time)  # the last value's time travels upstream
        return count

    return feed


__all__ = ["AggregationNeeds", "Feed", "build_aggregator", "feeder"]
