"""The worker runtime: intake, schedule and delivery around one :class:`~zibrato.destination.Destination`.

Three threads, so that neither a slow destination nor a flood of messages
stops the others:

* the **receive loop** (the main thread, which also handles stop signals)
  subscribes to the broker for the configured levels, validates each message,
  applies the series rules (:mod:`zibrato.rules`), feeds the
  :class:`~zibrato.aggregation.Aggregator` and, at every wall-clock multiple of
  the flush interval (:class:`Schedule`), puts the interval on the delivery
  queue, whether or not anything arrived;
* the **delivery thread** (:class:`zibrato.delivery.DeliveryQueue`) hands each
  interval to the destination's ``post``, retrying with backoff; intervals
  waiting form the bounded backlog;
* the **status thread** (:class:`zibrato.runtime.StatusServer`) answers
  `zibrato status` at once, however busy the receive loop is.

Writing a new worker means writing a Destination; see the README, "Writing a
new worker".
"""

from __future__ import annotations

import functools
import logging
import math
import os
import socket as _socket
import threading
import time
from collections.abc import Callable, Iterable, Sequence
from typing import TYPE_CHECKING, Any

import zmq
from zmq.utils.monitor import recv_monitor_message

from . import protocol
from .aggregation import DEFAULT_MAX_EXACT, Aggregator, LevelAggregators
from .curve import ClientKeys
from .delivery import Backoff, DeliveryQueue, iso
from .destination import Destination, Interval
from .link_watch import LinkWatch
from .rules import SeriesRules
from .runtime import RateLimitedLog, StatusServer, describe_bind_error, printable
from .series_guard import SeriesGuard, count_refused
from .shard import Shard
from .sketch import DEFAULT_MAX_BUCKETS
from .summary import Summary
from .worker_config import ALL_LEVELS, DEFAULT_LATENESS, DEFAULT_PERCENTILES, SELF_LEVEL, WorkerConfig

if TYPE_CHECKING:
    from .client import Zibrato

_POLL_MS = 100  # short, so that stop signals are noticed promptly
_STOP_QUIET_SECONDS = 0.3  # on stop, receiving ends after this long without a message
_BATCH_SECONDS = 0.05  # the receive loop checks the schedule at least this often
_SILENT_FLUSHES = 3  # nothing received for this many flushes (and 30 s): unhealthy
_MIN_SILENT_SECONDS = 30.0
_STALLED_FLUSHES = 3  # one interval in flight for this many flushes (and 5 s): unhealthy
_MIN_STALLED_SECONDS = 5.0
_UNCONNECTED_SECONDS = 10.0  # not connected to the broker this long: unhealthy
_MONITORED = zmq.EVENT_CONNECTED | zmq.EVENT_DISCONNECTED


class Schedule:
    """Flush boundaries at wall-clock multiples of the interval; counts flushes that run late.

    The clock is injected (``time.time`` by default), so the schedule is tested
    without real time. The first interval starts at :meth:`start`, not at the
    boundary before it, so that its rates are per second of receiving.
    """

    def __init__(self, flush_interval: float, clock: Callable[[], float] = time.time) -> None:
        if not (flush_interval > 0 and math.isfinite(flush_interval)):
            raise ValueError("flush interval must be a positive, finite number of seconds")
        self.flush_interval, self.clock = flush_interval, clock
        self.late_flushes = 0
        self.missed_boundaries = 0
        self.lag = 0.0  # seconds between the last boundary and its flush
        self.max_lag = 0.0
        self.start()

    def start(self) -> None:
        now = self.clock()
        self.boundary = self.next_boundary(now)
        self.interval_start = max(self.boundary - self.flush_interval, now)

    def next_boundary(self, now: float) -> float:
        """The next multiple of the interval after ``now``, rounded to the µs (0.1 * k is 613.3000002)."""
        return round((math.floor(now / self.flush_interval) + 1) * self.flush_interval, 6)

    @property
    def late_after(self) -> float:
        """A flush this long after its boundary is late: half an interval, at most 1 s."""
        return min(self.flush_interval / 2, 1.0)

    def seconds_to_boundary(self) -> float:
        return max(0.0, self.boundary - self.clock())

    def due(self) -> tuple[float, float] | None:
        """The interval ``(start, end)`` to flush now, or None; advances the schedule.

        A flush later than a whole interval has missed boundaries: the interval
        flushed then covers them all (its length says so) and they are counted.
        """
        now = self.clock()
        if now < self.boundary:
            return None
        end = self.boundary
        missed = math.floor((now - end) / self.flush_interval + 1e-9)
        if missed > 0:
            end = round(end + missed * self.flush_interval, 6)
            self.missed_boundaries += missed
        lag = now - self.boundary
        self.lag = lag
        self.max_lag = max(self.max_lag, lag)
        if lag > self.late_after:
            self.late_flushes += 1
        start = self.interval_start
        self.interval_start = end
        self.boundary = self.next_boundary(max(now, end))
        return start, end

    def final(self) -> tuple[float, float]:
        """The partial interval at stop: from the last boundary to now."""
        now = self.clock()
        return self.interval_start, max(now, self.interval_start + 1e-6)


class Worker:
    """Subscribe, validate, aggregate, flush on schedule and deliver to one destination."""

    def __init__(
        self,
        destination: Destination,
        host: str | Sequence[str] = "127.0.0.1",
        port: int = 5551,
        *,
        levels: Sequence[str] = (ALL_LEVELS,),
        flush_interval: float = 60.0,
        percentiles: Sequence[float] = DEFAULT_PERCENTILES,
        max_samples: int = DEFAULT_MAX_EXACT,
        status_port: int | None = None,
        self_level: str | None = SELF_LEVEL,
        broker_port: int | None = None,
        max_backlog: int | None = None,
        stop_timeout: float = 8.0,
        hwm: int = 100_000,
        max_message_size: int | None = None,
        rules: SeriesRules | None = None,
        backoff: Backoff | None = None,
        clock: Callable[[], float] = time.time,
        aggregation: dict[str, Any] | None = None,
        shard: Shard | None = None,
        lateness: float = DEFAULT_LATENESS,
        curve: ClientKeys | None = None,
    ) -> None:
        self.destination = destination
        self.name = destination.name
        #: every broker subscribed to (``--host`` repeated or a comma list, each HOST or HOST:PORT)
        self.endpoints = parse_hosts([host] if isinstance(host, str) else host, port)
        self.host, self.port = split_endpoint(self.endpoints[0])
        self.shard, self.curve = shard, curve
        if not 0 <= lateness < math.inf:
            raise ValueError(f"lateness must be 0 or more finite seconds, got {lateness!r}")
        #: seconds an interval waits for summaries still on their way (at most half a flush)
        self.lateness = min(lateness, flush_interval / 2)
        self._hold_until: float | None = None
        self.levels = tuple(level.lower() for level in levels)  # levels are case-insensitive
        self.schedule = Schedule(flush_interval, clock)
        self.flush_interval = flush_interval
        self.clock = clock
        # max_samples: values kept exactly per series (--max-exact); aggregation: the Aggregator's
        # other options (relative_error, expire, max_buckets, set_max_exact)
        make_aggregator = functools.partial(
            Aggregator,
            percentiles=percentiles,
            max_exact=max_samples,
            keep_values=getattr(destination, "needs_values", False),
            include_interval=True,
            **(aggregation or {}),
        )
        #: the most buckets per sign a summary's sketch may carry (the aggregator's own limit)
        self.max_buckets = int((aggregation or {}).get("max_buckets", DEFAULT_MAX_BUCKETS))
        self.aggregator: Aggregator | LevelAggregators = (
            LevelAggregators(make_aggregator) if getattr(destination, "needs_level", False) else make_aggregator()
        )
        self.rules = rules if rules else None
        self.status_port, self.stop_timeout = status_port, stop_timeout
        # No limit by default: the broker enforces --max-message-size on what clients send,
        # and a SUB that meets a message over its own limit drops the whole connection.
        self.hwm, self.max_message_size = hwm, max_message_size
        self.log = logging.getLogger(f"zibrato.{self.name}")
        # 15 minutes of intervals by default, so an outage that long loses nothing.
        self.delivery = DeliveryQueue(
            destination,
            log=self.log,
            backoff=backoff,
            max_backlog=max_backlog or max(16, int(900 / flush_interval) + 1),
            stalled_after=max(_STALLED_FLUSHES * flush_interval, _MIN_STALLED_SECONDS),
        )
        self._malformed_log = RateLimitedLog(self.log)
        self._late_log = RateLimitedLog(self.log, every=60.0)
        self._series_guard = SeriesGuard(self.log)  # series_failed: each name logged once
        #: counts, and times or None (never yet): what `zibrato status` and self-metrics report
        self.figures_: dict[str, Any] = {
            "received": 0,
            "measurements": 0,
            "malformed": 0,
            "flushes": 0,
            "series_flushed": 0,
            "unread_at_stop": 0,
            "unread_messages_at_stop": 0,
            "non_finite_dropped": 0,
            "malformed_records": 0,
            "malformed_by_reason": {},
            "series_failed": 0,
            "last_flush": None,
            "last_flush_seconds": None,
            "last_received": None,
        }
        self.started = time.time()
        if self_level and not protocol.is_valid_level(self_level):
            raise ValueError(f"invalid self-metrics level {self_level!r}")
        #: the level this worker's own figures are published under (None: not published)
        self.self_level = self_level or None
        self.broker_port = broker_port
        self._self_client: Zibrato | None = None
        #: since when the SUB socket has had no connection to the broker (None: connected)
        self._unconnected_since: float | None = time.monotonic()
        self._connections = 0  # live connections to brokers (the SUB may connect to several)
        self._watch = LinkWatch(self.log, self.broker_endpoint, "--host, --port", levels=self.levels)

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
        return cls(
            destination,
            host=list(config.brokers),
            port=config.port,
            levels=config.levels,
            flush_interval=config.flush_interval,
            percentiles=config.percentiles,
            max_samples=config.max_exact,
            status_port=config.status_port,
            self_level=config.self_level,
            broker_port=config.broker_port,
            max_backlog=config.max_backlog,
            stop_timeout=config.stop_timeout,
            hwm=config.hwm,
            max_message_size=config.max_message_size,
            rules=config.rules,
            backoff=backoff,
            clock=clock,
            aggregation=dict(config.aggregation, relative_error=config.relative_error, expire=config.expire),
            shard=config.shard,
            lateness=config.lateness,
            curve=config.curve,
        )

    # --- figures ------------------------------------------------------------------

    @property
    def broker_endpoint(self) -> str:
        return ",".join(self.endpoints)

    def figures(self) -> dict[str, Any]:
        """What `zibrato status` shows for this worker (called from the status thread)."""
        f: dict[str, Any] = dict(self.figures_)
        f["malformed_by_reason"] = dict(f["malformed_by_reason"])  # the receive loop adds to it
        now = time.time()
        problems = self._problems(now)
        destination = dict(self.destination.figures())
        problems += destination.pop("problems", [])
        problems += self.delivery.problems()
        schedule = self.schedule
        f.update(destination)
        f.update(self.delivery.figures())
        f.update(
            role=self.name,
            broker=self.broker_endpoint,
            levels=list(self.levels),
            broker_connected=self._unconnected_since is None,
            flush_interval=self.flush_interval,
            series_held=len(self.aggregator),
            late_flushes=schedule.late_flushes,
            missed_boundaries=schedule.missed_boundaries,
            flush_lag_seconds=round(schedule.lag, 6),
            max_flush_lag_seconds=round(schedule.max_lag, 6),
            uptime_seconds=round(now - self.started, 3),
            healthy=not problems,
            problems=problems,
            summaries_merged=self.aggregator.summaries_merged,
            late_summaries=self.aggregator.late_summaries,
            lateness=self.lateness,
            shard=None if self.shard is None else str(self.shard),
            curve=self.curve is not None,
        )
        if self.rules:
            f.update(
                rules=self.rules.describe(),
                measurements_dropped_by_rules=self.rules.measurements_dropped,
                tags_dropped_by_rules=self.rules.tags_dropped,
            )
        return f

    def _problems(self, now: float) -> list[str]:
        f, problems = self.figures_, []
        if f["last_flush"] is not None and now - f["last_flush"] > 3 * self.flush_interval + 5:
            problems.append(f"no flush for {now - f['last_flush']:.0f} s")
        silent_after = max(_SILENT_FLUSHES * self.flush_interval, _MIN_SILENT_SECONDS)
        heard = f["last_received"] or self.started
        unconnected = self._unconnected_since
        if unconnected is not None and time.monotonic() - unconnected > _UNCONNECTED_SECONDS:
            problems.append(
                f"not connected to the broker at {self.broker_endpoint} for "
                f"{time.monotonic() - unconnected:.0f} s: is it running there "
                "(--host, --port)?"
            )
        elif now - heard > silent_after:
            problems.append(
                f"nothing received from the broker at {self.broker_endpoint} for "
                f"{now - heard:.0f} s: is the broker running there (--host, --port), "
                "and is anything sending?"
            )
        backlog, most = self.delivery.backlog, self.delivery.max_backlog
        if backlog > most // 2:
            problems.append(f"delivery backlog {backlog} of {most} intervals")
        if self.schedule.lag > self.flush_interval:
            problems.append(f"flushes run {self.schedule.lag:.1f} s late: the worker cannot keep up")
        return problems

    # --- running ------------------------------------------------------------------

    def run(self, stop: threading.Event) -> int:
        """Receive and flush until ``stop`` is set; flush once more, deliver, return an exit code."""
        context = zmq.Context(io_threads=1)
        try:
            status = StatusServer(context, "127.0.0.1", self.status_port, self.figures)
        except zmq.ZMQError as error:
            self.log.error("%s", describe_bind_error(f"tcp://127.0.0.1:{self.status_port}", error))
            context.term()
            return 1
        self._self_client = self._make_self_client()
        self._unconnected_since = time.monotonic()
        sub = self._subscribe(context)
        monitor = sub.get_monitor_socket(_MONITORED)
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
            self._receive_what_is_queued(sub, stopped + self.stop_timeout / 2)
        finally:
            self._final_flush()
            self._finish_delivery(delivery, stopped or time.monotonic())
            sub.disable_monitor()
            monitor.close(linger=0)
            sub.close(linger=0)
            status.close()
            if self._self_client is not None:
                self._self_client.close(timeout=1.0)
            context.term()
            self.log.info("%s worker stopped", self.name)
        return 0

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

    def _deliver(self, start: float, end: float, summaries: list[Summary], started: float) -> Interval:
        self._count_non_finite()
        self._count_failed()
        interval = Interval(start, end, summaries)
        self.delivery.put(interval)
        elapsed = time.perf_counter() - started
        f = self.figures_
        f["flushes"] += 1
        f["series_flushed"] += len(summaries)
        f["last_flush"], f["last_flush_seconds"] = end, round(elapsed, 6)
        self._report_self(len(summaries), elapsed)
        return interval

    def _count_non_finite(self) -> None:
        """Figures and a log line for summaries the aggregator dropped because a sum overflowed."""
        dropped = self.aggregator.non_finite_dropped - self.figures_["non_finite_dropped"]
        if dropped:
            self.figures_["non_finite_dropped"] = self.aggregator.non_finite_dropped
            names = ", ".join(protocol._short(name) for name in self.aggregator.last_non_finite[-dropped:])
            self._malformed_log.warning(
                "dropped %d series' interval: a sum overflowed to a non-finite number (%s)", dropped, names
            )

    def _count_failed(self) -> None:
        """Figures and one log line per series name for series the aggregator could not summarise."""
        failed = self.aggregator.series_failed - self.figures_["series_failed"]
        if failed:
            self.figures_["series_failed"] = self.aggregator.series_failed
            for name, error in self.aggregator.last_failed[-failed:]:
                self._series_guard.dropped({"name": name}, error, "it could not be summarised")

    # --- receive loop ------------------------------------------------------------------

    def _subscribe(self, context: zmq.Context[zmq.Socket[bytes]]) -> zmq.Socket[bytes]:
        sub = context.socket(zmq.SUB)
        sub.setsockopt(zmq.RCVHWM, self.hwm)
        if self.max_message_size is not None:
            sub.setsockopt(zmq.MAXMSGSIZE, self.max_message_size)
        sub.setsockopt(zmq.LINGER, 0)
        if self.curve is not None:
            self.curve.apply(sub)
        for prefix in self.subscriptions():
            sub.setsockopt(zmq.SUBSCRIBE, prefix)
        for endpoint in self.endpoints:
            sub.connect(endpoint)
        return sub

    def subscriptions(self) -> list[bytes]:
        """The SUB prefixes: each level exactly (a sharded worker: its shards of each level).

        With ``all`` levels a sharded worker subscribes to everything and
        drops other shards' frames before decoding them (:meth:`ingest`).
        """
        if ALL_LEVELS in self.levels:
            return [b""]
        if self.shard is not None:
            return [prefix for level in self.levels for prefix in self.shard.subscriptions(level)]
        return [protocol.topic(level) for level in self.levels]

    def _receive_until(
        self, stop: threading.Event, sub: zmq.Socket[bytes], monitor: zmq.Socket[bytes] | None = None
    ) -> None:
        """Receive, flushing at each boundary, until ``stop``; follow the connection to the broker."""
        schedule = self.schedule
        poller = zmq.Poller()
        poller.register(sub, zmq.POLLIN)
        if monitor is not None:
            poller.register(monitor, zmq.POLLIN)
        while not stop.is_set():
            wait = min(schedule.seconds_to_boundary(), _POLL_MS / 1000)
            if self._hold_until is not None:
                wait = min(wait, max(0.0, self._hold_until - self.clock()))
            ready = dict(poller.poll(int(wait * 1000)))  # ms, as pyzmq truncates
            if sub in ready:
                self._receive_available(sub)
            if monitor is not None and monitor in ready:
                self._connection_changed(monitor)
            if self._hold_until is not None and self.clock() >= self._hold_until:
                self.flush_held()
            self._watch.unconnected(self._unconnected_since)
            due = schedule.due()
            if due is not None:
                self.close_interval(*due)
                self._watch.flushed(self.figures_["measurements"], self._unconnected_since is None)
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
            event = recv_monitor_message(monitor)["event"]
            if event == zmq.EVENT_CONNECTED:
                self._connections += 1
                if self._unconnected_since is not None and self.figures_["flushes"]:
                    self.log.info("connected to the broker at %s again", self.broker_endpoint)
                self._unconnected_since = None
            elif event == zmq.EVENT_DISCONNECTED:
                # with several brokers (--host a,b), unconnected means connected to none of them
                self._connections = max(0, self._connections - 1)
                if self._connections or self._unconnected_since is not None:
                    continue
                self._unconnected_since = time.monotonic()
                # info: a broker stopped cleanly looks the same; the watch warns if it stays away
                self.log.info("lost the connection to the broker at %s; reconnecting", self.broker_endpoint)

    def _receive_what_is_queued(self, sub: zmq.Socket[bytes], read_until: float) -> None:
        """On stop: take what the broker sends, until quiet, so the final flush has it.

        ``supervisorctl stop all`` signals the broker and the workers at once,
        and the broker forwards what it drains from clients up to about 0.2 s
        later; the quiet gap that ends this is longer than that. A worker that
        is behind reads what is queued for up to half its stop budget; what it
        cannot read by then is counted (``unread_at_stop``: its measurements, as
        ``measurements`` counts them, so that the figure is what was lost;
        ``unread_messages_at_stop``: the messages) and logged, never dropped
        silently.
        """
        while time.monotonic() < read_until and sub.poll(int(_STOP_QUIET_SECONDS * 1000)):
            self._receive_available(sub)
        left = messages = 0
        give_up = time.monotonic() + min(1.0, self.stop_timeout / 8)
        while time.monotonic() < give_up:
            try:
                frame = sub.recv(zmq.NOBLOCK)
            except zmq.Again:
                if not sub.poll(10):
                    break
                continue
            if self.shard is not None and self.shard.owns_frame(frame) is False:
                continue  # another worker's shard: never this worker's to lose
            messages += 1
            left += protocol.measurements_in(frame)
        if messages:
            self.figures_["unread_at_stop"] += left
            self.figures_["unread_messages_at_stop"] += messages
            more = " at least" if time.monotonic() >= give_up else ""
            self.log.error(
                "stopping:%s %d measurements in %d messages queued from the broker were not read "
                "within half the stop budget (%g s) and are lost (unread_at_stop)",
                more,
                left,
                messages,
                self.stop_timeout / 2,
            )

    def _receive_available(self, sub: zmq.Socket[bytes], limit: int = 10_000) -> None:
        """Take what is queued now, bounded in count and time so that flushes stay on schedule."""
        until = time.perf_counter() + _BATCH_SECONDS
        received = 0
        for _ in range(limit):
            try:
                frame = sub.recv(zmq.NOBLOCK)
            except zmq.Again:
                break
            received += 1
            if sub.getsockopt(zmq.RCVMORE):
                self._discard_rest(sub)
                self._malformed("multipart message")
                continue
            self.ingest(frame)
            if not received & 7 and time.perf_counter() > until:
                break
        if received:
            self.figures_["last_received"] = time.time()

    def ingest(self, frame: bytes) -> None:
        """Validate one message and aggregate its records; count and log what is malformed."""
        self.figures_["received"] += 1
        owned = None
        if self.shard is not None:
            owned = self.shard.owns_frame(frame)
            if owned is False:  # another worker's shard (subscribed to 'all' levels)
                return
        try:
            batch = protocol.decode_plain(frame, self.clock(), self.max_buckets)
        except protocol.ProtocolError as error:
            self._malformed(str(error))
            return
        except Exception as error:  # a decoder that misses a case must not stop the worker
            self._malformed(f"unparseable ({error.__class__.__name__}: {error})")
            return
        if batch.refused:
            count_refused(self.figures_, batch.refused, self._malformed_log)
        records = batch.records
        if owned is None and self.shard is not None:  # an unsharded message: keep our series
            records = self.shard.own_records(records)
        if self.rules is not None:
            records = self.rules.apply(records)
        try:
            self.figures_["measurements"] += self._aggregate(batch, records)
        except (ValueError, TypeError, KeyError) as error:  # e.g. two sketches that cannot merge
            self._malformed(f"cannot aggregate ({error.__class__.__name__}: {error})")

    def _aggregate(self, batch: protocol.Batch, records: Sequence[Sequence[Any]]) -> float:
        """Feed validated records to the aggregator (the level's, when levels are kept apart)."""
        aggregator = self.aggregator
        if isinstance(aggregator, LevelAggregators):
            aggregator = aggregator.level(batch.level)
        return aggregator.add_records(records)

    def _discard_rest(self, sub: zmq.Socket[bytes]) -> None:
        while sub.getsockopt(zmq.RCVMORE):
            sub.recv()

    def _malformed(self, reason: str) -> None:
        self.figures_["malformed"] += 1
        self._malformed_log.warning(
            "dropped malformed message: %s (%d malformed so far)", printable(reason), self.figures_["malformed"]
        )

    def _final_flush(self) -> None:
        """On stop: the partial interval is flushed too (the last minute must not be lost)."""
        self.flush_held()
        if len(self.aggregator):
            self.flush(*self.schedule.final())

    def _finish_delivery(self, delivery: threading.Thread, stopped: float) -> None:
        """Give delivery what is left of ``stop_timeout`` since the stop (supervisord's stopwaitsecs is 10)."""
        deadline = stopped + self.stop_timeout
        self.delivery.stop(deadline)
        delivery.join(max(0.0, deadline - time.monotonic()) + 0.2)
        if delivery.is_alive():
            self.delivery.abandon()

    # --- self-observation -----------------------------------------------------------

    def _make_self_client(self) -> Zibrato | None:
        """Workers measure themselves through the broker, under their own level."""
        if not self.self_level:
            return None
        from . import Zibrato  # the public client, however zibrato.client is laid out

        port = self.broker_port if self.broker_port is not None else self.port - 1
        return Zibrato(self.host, port, tags={"worker": self.name, "host": _hostname()}, curve_keys=self.curve)

    def self_figures(self, series: int) -> dict[str, float]:
        """The gauges this worker publishes about itself after each flush."""
        f, q, s = self.figures_, self.delivery.counts, self.schedule
        figures = {
            "received": f["received"],
            "malformed": f["malformed"],
            "measurements": f["measurements"],
            "series_flushed": series,
            "backlog": self.delivery.backlog,
            "dropped_intervals": q["dropped_intervals"],
            "cut_off_intervals": q["cut_off_intervals"],
            "late_flushes": s.late_flushes,
            "non_finite_dropped": f["non_finite_dropped"],
            "malformed_records": f["malformed_records"],
            "series_failed": f["series_failed"],
            "late_summaries": self.aggregator.late_summaries,
            "flush_lag": s.lag,
        }
        keys = getattr(self.destination, "self_figures", ())
        own = self.destination.figures() if keys else {}
        for key in keys:
            value = own.get(key)
            if isinstance(value, (int, float)):
                figures[key] = value
        return figures

    def _report_self(self, series: int, elapsed: float) -> None:
        client, level = self._self_client, self.self_level
        if client is None or level is None:  # made only when there is a self level
            return
        prefix = f"zibrato.{self.name}"
        for key, value in self.self_figures(series).items():
            client.gauge(level, f"{prefix}.{key}", value)
        client.timing(level, f"{prefix}.flush_duration", elapsed)


def parse_levels(text: str) -> tuple[str, ...]:
    """'info,warn' -> ('info', 'warn'); 'all' alone means every level. Case-insensitive: 'INFO' is info."""
    levels = tuple(dict.fromkeys(part.strip().lower() for part in text.split(",") if part.strip()))
    if not levels:
        raise ValueError("no level given (use 'all' for every level)")
    for level in levels:
        if level != ALL_LEVELS and not protocol.is_valid_level(level):
            raise ValueError(f"invalid level {level!r}: 1-64 characters of A-Z a-z 0-9 _ . -")
    return levels


def parse_percentiles(text: str | Iterable[float]) -> tuple[float, ...]:
    parts = text.split(",") if isinstance(text, str) else list(text)
    try:
        values = tuple(float(p) for p in parts if str(p).strip())
    except ValueError:
        raise ValueError(f"percentiles must be numbers, e.g. 50,90,99.9; got {text!r}") from None
    for p in values:
        if not 0 < p <= 100:  # also NaN
            raise ValueError(f"percentile {p:g} is outside (0, 100]")
    return values


def parse_hosts(hosts: Iterable[str], port: int) -> list[str]:
    """Broker endpoints from ``--host`` values: each a comma list of HOST or HOST:PORT.

    '10.0.0.1,10.0.0.2:6551' with port 5551 -> ['tcp://10.0.0.1:5551', 'tcp://10.0.0.2:6551'];
    an IPv6 address takes brackets: '[::1]:5551'. Duplicates are removed.
    """
    endpoints: list[str] = []
    for value in hosts:
        for part in str(value).split(","):
            part = part.strip()
            if not part:
                continue
            host, own_port = part, port
            if part.startswith("["):
                host, _, rest = part[1:].partition("]")
                if rest.startswith(":"):
                    own_port = _port_of(rest[1:], part)
                elif rest:
                    raise ValueError(f"bad host {part!r}: expected [IPv6] or [IPv6]:PORT")
                host = f"[{host}]"
            elif part.count(":") == 1:
                host, text = part.split(":")
                own_port = _port_of(text, part)
            elif ":" in part:
                host = f"[{part}]"
            if not host or host == "[]":
                raise ValueError(f"bad host {part!r}")
            endpoint = f"tcp://{host}:{own_port}"
            if endpoint not in endpoints:
                endpoints.append(endpoint)
    if not endpoints:
        raise ValueError("no broker host given")
    return endpoints


def _port_of(text: str, part: str) -> int:
    if not text.isdigit() or not 1 <= int(text) <= 65535:
        raise ValueError(f"bad port in {part!r}: 1 to 65535")
    return int(text)


def split_endpoint(endpoint: str) -> tuple[str, int]:
    """'tcp://[::1]:5551' -> ('::1', 5551)."""
    host, _, port = endpoint[len("tcp://") :].rpartition(":")
    return host.strip("[]"), int(port)


def _hostname() -> str:
    return _socket.gethostname().split(".")[0] or str(os.getpid())


__all__ = [
    "ALL_LEVELS",
    "DEFAULT_LATENESS",
    "DEFAULT_PERCENTILES",
    "parse_hosts",
    "split_endpoint",
    "SELF_LEVEL",
    "Schedule",
    "Worker",
    "parse_levels",
    "parse_percentiles",
]
