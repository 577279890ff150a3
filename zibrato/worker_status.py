"""What a worker reports about itself: its `zibrato status` figures and its self-metrics gauges.

Composed here from the worker's parts (the intake's counts, the flushes',
the schedule's lateness, the delivery queue's, the destination's own),
judged healthy the way every daemon is (:func:`zibrato.health.judged`). The
worker is seen through :class:`ReportedWorker`, the parts it exposes, so this
module does not import the worker.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import Any, Protocol

from .aggregation import Aggregator, LevelAggregators
from .curve import ClientKeys
from .delivery import DeliveryQueue
from .destination import Destination
from .health import Connection, judged
from .rules import SeriesRules
from .schedule import Schedule
from .shard import Shard

HINT = "--host, --port"  # the flags that say where the broker is
_SILENT_FLUSHES = 3  # nothing received for this many flushes (and 30 s): unhealthy
_MIN_SILENT_SECONDS = 30.0


class ReportedWorker(Protocol):
    """The parts of a worker its reports read."""

    name: str
    levels: tuple[str, ...]
    flush_interval: float
    lateness: float
    started: float
    shard: Shard | None
    curve: ClientKeys | None
    rules: SeriesRules | None
    schedule: Schedule
    delivery: DeliveryQueue
    destination: Destination
    aggregator: Aggregator | LevelAggregators
    connection: Connection

    @property
    def broker_endpoint(self) -> str: ...
    @property
    def figures_(self) -> dict[str, Any]: ...


def status_figures(worker: ReportedWorker) -> dict[str, Any]:
    """What `zibrato status` shows for a worker (called from its status thread)."""
    f = worker.figures_
    f["malformed_by_reason"] = dict(f["malformed_by_reason"])  # the receive loop adds to it
    now = time.time()
    problems = problems_of(worker, now, f)
    destination = dict(worker.destination.figures())
    problems += destination.pop("problems", [])
    problems += worker.delivery.problems()
    schedule, aggregator, rules = worker.schedule, worker.aggregator, worker.rules
    f.update(destination)
    f.update(worker.delivery.figures())
    f.update(
        role=worker.name,
        broker=worker.broker_endpoint,
        levels=list(worker.levels),
        broker_connected=worker.connection.connected,
        flush_interval=worker.flush_interval,
        series_held=len(aggregator),
        late_flushes=schedule.late_flushes,
        missed_boundaries=schedule.missed_boundaries,
        flush_lag_seconds=round(schedule.lag, 6),
        max_flush_lag_seconds=round(schedule.max_lag, 6),
        uptime_seconds=round(now - worker.started, 3),
    )
    judged(f, problems)
    f.update(
        summaries_merged=aggregator.summaries_merged,
        late_summaries=aggregator.late_summaries,
        lateness=worker.lateness,
        shard=None if worker.shard is None else str(worker.shard),
        curve=worker.curve is not None,
    )
    if rules:
        f.update(
            rules=rules.describe(),
            measurements_dropped_by_rules=rules.measurements_dropped,
            tags_dropped_by_rules=rules.tags_dropped,
        )
    return f


def problems_of(worker: ReportedWorker, now: float, f: dict[str, Any]) -> list[str]:
    """The worker's own problems: no flush, no broker or nothing from it, a backlog, late flushes."""
    problems = []
    interval, endpoint = worker.flush_interval, worker.broker_endpoint
    if f["last_flush"] is not None and now - f["last_flush"] > 3 * interval + 5:
        problems.append(f"no flush for {now - f['last_flush']:.0f} s")
    silent_after = max(_SILENT_FLUSHES * interval, _MIN_SILENT_SECONDS)
    heard = f["last_received"] or worker.started
    unconnected = worker.connection.problem(endpoint, HINT)
    if unconnected is not None:
        problems.append(unconnected)
    elif now - heard > silent_after:
        problems.append(
            f"nothing received from the broker at {endpoint} for {now - heard:.0f} s: "
            f"is the broker running there ({HINT}), and is anything sending?"
        )
    backlog, most = worker.delivery.backlog, worker.delivery.max_backlog
    if backlog > most // 2:
        problems.append(f"delivery backlog {backlog} of {most} intervals")
    if worker.schedule.lag > interval:
        problems.append(f"flushes run {worker.schedule.lag:.1f} s late: the worker cannot keep up")
    return problems


def self_gauges(worker: ReportedWorker, series: int) -> dict[str, float]:
    """The gauges a worker publishes about itself after each flush (and its destination's ``self_figures``)."""
    f, q, s = worker.figures_, worker.delivery.counts, worker.schedule
    figures = {
        "received": f["received"],
        "malformed": f["malformed"],
        "measurements": f["measurements"],
        "series_flushed": series,
        "backlog": worker.delivery.backlog,
        "dropped_intervals": q["dropped_intervals"],
        "cut_off_intervals": q["cut_off_intervals"],
        # the parts of intervals (a destination's requests, batches, messages; an interval sent whole is one)
        "parts_delivered": q["parts_delivered"],
        "parts_rejected": q["parts_rejected"],
        "parts_retried": q["parts_retried"],
        "cut_off_parts": q["cut_off_parts"],
        "cut_off_points": q["cut_off_points"],
        "rejected_points": q["rejected_points"],
        "late_flushes": s.late_flushes,
        "non_finite_dropped": f["non_finite_dropped"],
        "malformed_records": f["malformed_records"],
        "series_failed": f["series_failed"],
        "late_summaries": worker.aggregator.late_summaries,
        "flush_lag": s.lag,
    }
    keys: Sequence[str] = getattr(worker.destination, "self_figures", ())
    own = worker.destination.figures() if keys else {}
    for key in keys:
        value = own.get(key)
        if isinstance(value, (int, float)):
            figures[key] = value
    return figures


__all__ = ["HINT", "ReportedWorker", "problems_of", "self_gauges", "status_figures"]
