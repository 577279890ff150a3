"""The worker: the loop around one :class:`~zibrato.destination.Destination`, built from parts.

Three threads, so that neither a slow destination nor a flood of messages
stops the others:

* the **receive loop** (the main thread, which also handles stop signals):
  the :class:`~zibrato.intake.Intake` receives, decodes and filters each
  message and feeds the aggregator; at every wall-clock multiple of the flush
  interval (:class:`~zibrato.schedule.Schedule`) the loop puts the interval on
  the delivery queue, whether or not anything arrived;
* the **delivery thread** (:class:`zibrato.delivery.DeliveryQueue`) hands each
  interval to the destination's ``post``, retrying with backoff; intervals
  waiting form the bounded backlog;
* the **status thread** (:func:`zibrato.health.status_server`) answers
  `zibrato status` at once, however busy the receive loop is.

What a worker is configured with is one :class:`~zibrato.worker_config.WorkerConfig`;
what its destination asks of the aggregation, the destination declares
(:class:`~zibrato.aggregation_needs.AggregationNeeds`). Writing a new worker
means writing a Destination; see the README, "Writing a new worker".
"""

from __future__ import annotations

import logging
import math
import threading
import time
from collections.abc import Callable
from typing import Any

import zmq
from zmq.utils.monitor import recv_monitor_message

from . import protocol
from .aggregation_needs import AggregationNeeds, build_aggregator, feeder
from .delivery import Backoff, DeliveryQueue, iso
from .destination import Destination, Interval
from .health import Connection, StatusPortError, status_server
from .intake import Intake
from .link_watch import LinkWatch
from .runtime import RateLimitedLog
from .schedule import Schedule
from .self_metrics import SelfMetrics, publish, self_client
from .series_guard import SeriesGuard
from .sketch import DEFAULT_MAX_BUCKETS
from .summary import Summary
from .worker_config import ALL_LEVELS, DEFAULT_LATENESS, DEFAULT_PERCENTILES, SELF_LEVEL, WorkerConfig
from .worker_options import config_from_keywords, parse_hosts, parse_levels, parse_percentiles, split_endpoint
from .worker_status import HINT, self_gauges, status_figures

_POLL_MS = 100  # short, so that stop signals are noticed promptly
_STALLED_FLUSHES = 3  # one interval in flight for this many flushes (and 5 s): unhealthy
_MIN_STALLED_SECONDS = 5.0
_MONITORED = zmq.EVENT_CONNECTED | zmq.EVENT_DISCONNECTED


class Worker:
    """Subscribe, validate, aggregate, flush on schedule and deliver to one destination.

    ``Worker(destination, WorkerConfig(...))``; the keywords of the former
    constructor (``host``, ``port``, ``flush_interval``, ``max_samples``,
    ``aggregation``...) are still accepted and override ``config``
    (:func:`config_from_keywords`).
    """

    def __init__(
        self,
        destination: Destination,
        config: WorkerConfig | None = None,
        *,
        backoff: Backoff | None = None,
        clock: Callable[[], float] = time.time,
        **keywords: Any,
    ) -> None:
        config = config_from_keywords(config or WorkerConfig(), keywords)
        self.config, self.destination, self.name, self.clock = config, destination, destination.name, clock
        flush_interval = self.flush_interval = config.flush_interval
        #: every broker subscribed to (``--host`` repeated or a comma list, each HOST or HOST:PORT)
        self.endpoints = parse_hosts(config.brokers, config.port)
        self.host, self.port = split_endpoint(self.endpoints[0])
        self.shard, self.curve, self.rules = config.shard, config.curve, config.rules or None
        if not 0 <= config.lateness < math.inf:
            raise ValueError(f"lateness must be 0 or more finite seconds, got {config.lateness!r}")
        #: seconds an interval waits for summaries still on their way (at most half a flush)
        self.lateness = min(config.lateness, flush_interval / 2)
        self._hold_until: float | None = None
        self.levels = tuple(level.lower() for level in config.levels)  # levels are case-insensitive
        self.schedule = Schedule(flush_interval, clock)
        self.stop_timeout = config.stop_timeout
        #: what the destination asks of the aggregation (declared on the destination)
        self.needs = AggregationNeeds.of(destination)
        self.aggregator = build_aggregator(self.needs, config)
        #: the most buckets per sign a summary's sketch may carry (the aggregator's own limit)
        self.max_buckets = int(config.aggregation.get("max_buckets", DEFAULT_MAX_BUCKETS))
        self.log = logging.getLogger(f"zibrato.{self.name}")
        self.intake = Intake(
            config,
            self.endpoints,
            feeder(self.aggregator, self.needs),
            log=self.log,
            max_buckets=self.max_buckets,
            clock=clock,
        )
        # 15 minutes of intervals by default, so an outage that long loses nothing.
        self.delivery = DeliveryQueue(
            destination,
            log=self.log,
            backoff=backoff,
            max_backlog=config.max_backlog or max(16, int(900 / flush_interval) + 1),
            stalled_after=max(_STALLED_FLUSHES * flush_interval, _MIN_STALLED_SECONDS),
        )
        self._late_log = RateLimitedLog(self.log, every=60.0)
        self._series_guard = SeriesGuard(self.log)  # series_failed: each name logged once
        #: what the flushes did (the intake counts what was received): `zibrato status` and self-metrics
        self.flush_figures: dict[str, Any] = {
            "flushes": 0,
            "series_flushed": 0,
            "non_finite_dropped": 0,
            "series_failed": 0,
            "last_flush": None,
            "last_flush_seconds": None,
        }
        self.started = time.time()
        if config.self_level and not protocol.is_valid_level(config.self_level):
            raise ValueError(f"invalid self-metrics level {config.self_level!r}")
        #: the level this worker's own figures are published under (None: not published)
        self.self_level = config.self_level or None
        #: the client publishing this worker's own figures (made by run(); None: not published)
        self.self_client: SelfMetrics | None = None
        #: the SUB socket's link to the brokers: connected, or since when not
        self.connection = Connection()
        self._watch = LinkWatch(self.log, self.broker_endpoint, HINT, levels=self.levels)

    @classmethod
    def from_config(
        cls,
        destination: Destination,
        config: WorkerConfig,
        *,
        backoff: Backoff | None = None,
        clock: Callable[[], float] = time.time,
    ) -> Worker:
        """A worker around ``destination`` with the shared settings of ``config``."""
        return cls(destination, config, backoff=backoff, clock=clock)

    # --- figures ------------------------------------------------------------------

    @property
    def broker_endpoint(self) -> str:
        return ",".join(self.endpoints)

    @property
    def figures_(self) -> dict[str, Any]:
        """The counts, and times or None (never yet): the intake's and the flushes' (a snapshot)."""
        return {**self.intake.figures, **self.flush_figures}

    def figures(self) -> dict[str, Any]:
        """What `zibrato status` shows for this worker (called from the status thread)."""
        return status_figures(self)

    # --- running ------------------------------------------------------------------

    def subscriptions(self) -> list[bytes]:
        """The SUB prefixes (see :meth:`zibrato.intake.Intake.subscriptions`)."""
        return self.intake.subscriptions()

    def ingest(self, frame: bytes) -> None:
        """Validate one message and aggregate its records (see :meth:`zibrato.intake.Intake.ingest`)."""
        self.intake.ingest(frame)

    def run(self, stop: threading.Event) -> int:
        """Receive and flush until ``stop`` is set; flush once more, deliver, return an exit code."""
        context = zmq.Context(io_threads=1)
        try:
            status = status_server(context, self.config.status_port, self.figures)
        except StatusPortError as error:
            self.log.error("%s", error)
            context.term()
            return 1
        self.self_client = self.make_self_client()
        self.connection.restart()
        sub = self.intake.socket(context)
        monitor = sub.get_monitor_socket(_MONITORED)  # before connecting: else a quick connection goes unseen
        self.intake.connect(sub)
        status.start()
        delivery = self.delivery.start()
        self.log.info(
            "%s worker: levels %s from %s, flushing every %g s",
            self.name,
            ",".join(self.levels),
            self.broker_endpoint,
            self.flush_interval,
        )
        stopped = None
        try:
            self.schedule.start()
            # summaries of intervals that ended before this worker's first one are late
            self.aggregator.current_start = self.schedule.interval_start
            self._receive_until(stop, sub, monitor)
            # The stop budget counts from the signal: receiving what is queued is part of it.
            stopped = time.monotonic()
            self.intake.drain_at_stop(sub, stopped + self.stop_timeout / 2)
        finally:
            self.final_flush()
            self.finish_delivery(delivery, stopped or time.monotonic())
            sub.disable_monitor()
            monitor.close(linger=0)
            sub.close(linger=0)
            status.close()
            if self.self_client is not None:
                self.self_client.close(timeout=1.0)
            context.term()
            self.log.info("%s worker stopped", self.name)
        return 0

    def _receive_until(self, stop: threading.Event, sub: zmq.Socket[bytes], monitor: zmq.Socket[bytes]) -> None:
        """Receive, flushing at each boundary, until ``stop``; follow the connection to the broker."""
        schedule, intake = self.schedule, self.intake
        poller = zmq.Poller()
        poller.register(sub, zmq.POLLIN)
        poller.register(monitor, zmq.POLLIN)
        while not stop.is_set():
            wait = min(schedule.seconds_to_boundary(), _POLL_MS / 1000)
            if self._hold_until is not None:
                wait = min(wait, max(0.0, self._hold_until - self.clock()))
            ready = dict(poller.poll(int(wait * 1000)))  # ms, as pyzmq truncates
            if sub in ready:
                intake.receive_available(sub)
            if monitor in ready:
                self._connection_changed(monitor)
            if self._hold_until is not None and self.clock() >= self._hold_until:
                self.flush_held()
            self._watch.unconnected(self.connection.unconnected_since)
            due = schedule.due()
            if due is not None:
                self.close_interval(*due)
                self._watch.flushed(intake.figures["measurements"], self.connection.connected)
                if schedule.lag > schedule.late_after:
                    self._late_log.warning(
                        "flush of the interval at %s ran %.2f s late (%d late flushes, %d boundaries "
                        "merged so far): the worker is not keeping up with what it receives",
                        iso(due[1]),
                        schedule.lag,
                        schedule.late_flushes,
                        schedule.missed_boundaries,
                    )

    def _connection_changed(self, monitor: zmq.Socket[bytes]) -> None:
        """A connection to the broker came or went (libzmq's socket monitor)."""
        while monitor.poll(0):
            change = self.connection.event(recv_monitor_message(monitor)["event"])
            if change == "connected" and self.flush_figures["flushes"]:
                self.log.info("connected to the broker at %s again", self.broker_endpoint)
            elif change == "lost":  # info: a broker stopped cleanly looks the same; the watch warns if it stays
                self.log.info("lost the connection to the broker at %s; reconnecting", self.broker_endpoint)

    # --- flushing -----------------------------------------------------------------

    def flush(self, start: float, end: float) -> Interval:
        """Close the interval ``(start, end)``: summarise it and queue it for delivery."""
        started = time.perf_counter()
        summaries = self.aggregator.flush(end, max(end - start, 1e-6))
        return self._deliver(start, end, summaries, started)

    def close_interval(self, start: float, end: float) -> Interval | None:
        """At a boundary: flush now, or, once summaries have arrived, hold the interval open.

        A worker that receives summaries from forwarders keeps each interval
        open ``lateness`` seconds past its end, so the summaries that the
        sources flushed at the same boundary join it (:meth:`flush_held`).
        """
        if self.aggregator.held is not None:  # a boundary came before the hold ended
            self.flush_held()
        if self.lateness > 0 and self.aggregator.summaries_merged:
            self.aggregator.hold(start, end)
            self._hold_until = self.clock() + self.lateness
            return None
        return self.flush(start, end)

    def flush_held(self) -> Interval | None:
        """Deliver the interval held open for late summaries."""
        held = self.aggregator.held
        self._hold_until = None
        if held is None:
            return None
        started = time.perf_counter()
        return self._deliver(*held, self.aggregator.flush_held(), started)

    def final_flush(self) -> None:
        """On stop: the partial interval is flushed too (the last minute must not be lost)."""
        self.flush_held()
        if len(self.aggregator):
            self.flush(*self.schedule.final())

    def finish_delivery(self, delivery: threading.Thread, stopped: float) -> None:
        """Give delivery what is left of ``stop_timeout`` since the stop (supervisord's stopwaitsecs is 10)."""
        deadline = stopped + self.stop_timeout
        self.delivery.stop(deadline)
        delivery.join(max(0.0, deadline - time.monotonic()) + 0.2)
        if delivery.is_alive():
            self.delivery.abandon()

    def _deliver(self, start: float, end: float, summaries: list[Summary], started: float) -> Interval:
        self._count_dropped_series()
        interval = Interval(start, end, summaries)
        self.delivery.put(interval)
        elapsed = time.perf_counter() - started
        f = self.flush_figures
        f["flushes"] += 1
        f["series_flushed"] += len(summaries)
        f["last_flush"], f["last_flush_seconds"] = end, round(elapsed, 6)
        self.report_self(len(summaries), elapsed)
        return interval

    def _count_dropped_series(self) -> None:
        """Figures and log lines for series the aggregator dropped: a sum overflowed, or no summary."""
        f, aggregator = self.flush_figures, self.aggregator
        dropped = aggregator.non_finite_dropped - f["non_finite_dropped"]
        if dropped:
            f["non_finite_dropped"] = aggregator.non_finite_dropped
            names = ", ".join(protocol._short(name) for name in aggregator.last_non_finite[-dropped:])
            self.intake.malformed_log.warning(
                "dropped %d series' interval: a sum overflowed to a non-finite number (%s)", dropped, names
            )
        failed = aggregator.series_failed - f["series_failed"]
        if failed:
            f["series_failed"] = aggregator.series_failed
            for name, error in aggregator.last_failed[-failed:]:
                self._series_guard.dropped({"name": name}, error, "it could not be summarised")

    # --- self-observation -----------------------------------------------------------

    def make_self_client(self) -> SelfMetrics | None:
        """Workers measure themselves through the broker (its PULL port: ours - 1), under their own level."""
        if not self.self_level:
            return None
        broker_port = self.config.broker_port
        return self_client(self.host, self.port - 1 if broker_port is None else broker_port, self.name, self.curve)

    def self_figures(self, series: int) -> dict[str, float]:
        """The gauges this worker publishes about itself after each flush."""
        return self_gauges(self, series)

    def report_self(self, series: int, elapsed: float) -> None:
        """Publish :meth:`self_figures` and the flush's duration under the self level."""
        client, level = self.self_client, self.self_level
        if client is None or level is None:  # made only when there is a self level
            return
        publish(client, level, f"zibrato.{self.name}", self.self_figures(series), elapsed)


__all__ = [
    "ALL_LEVELS",
    "DEFAULT_LATENESS",
    "DEFAULT_PERCENTILES",
    "parse_hosts",
    "split_endpoint",
    "SELF_LEVEL",
    "Schedule",
    "SelfMetrics",
    "Worker",
    "config_from_keywords",
    "parse_levels",
    "parse_percentiles",
]
