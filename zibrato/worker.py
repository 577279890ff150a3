"""The worker runtime that every backend (console, statsd, Librato, yours) subclasses.

Two threads, so that a slow destination never stops the intake:

* the **receive loop** (the main thread, which also handles stop signals)
  subscribes to the broker for the configured levels, validates each message
  (:meth:`Backend.parse`), feeds the :class:`~zibrato.aggregation.Aggregator`
  and, at every wall-clock multiple of the flush interval, hands the
  interval's summaries over (:meth:`Backend.flush`), whether or not anything
  arrived;
* the **delivery thread** calls :meth:`Backend.connect` once and then
  :meth:`Backend.post` for each interval, in order. Intervals waiting for
  delivery form the backlog, bounded by ``max_backlog``; past it the oldest
  interval is dropped and counted.

Writing a new worker means subclassing :class:`Backend` and implementing
``post`` (and ``connect`` if the destination needs a connection); see the
README, "Writing a new worker".
"""
from __future__ import annotations

import collections
import logging
import os
import socket as _socket
import threading
import time
from typing import Any, Iterable, Sequence

import zmq

from . import protocol
from .aggregation import Aggregator
from .client import Zibrato
from .runtime import RateLimitedLog, answer_status, bind_status, describe_bind_error

DEFAULT_PERCENTILES = (50.0, 90.0, 95.0, 99.0)
ALL_LEVELS = "all"
SELF_LEVEL = "zibrato"
_POLL_MS = 100  # short, so that stop signals are noticed promptly
_STOP_QUIET_SECONDS = 0.3  # on stop, receiving ends after this long without a message


class Backend:
    """Subscribe, validate, aggregate, flush on schedule, deliver.

    Subclasses set :attr:`name` and implement :meth:`post`; the other
    extension points have working defaults.
    """

    name = "backend"
    #: keys of ``figures_`` that a backend adds and publishes with its self-metrics
    self_figures: tuple[str, ...] = ()

    def __init__(self, host: str = "127.0.0.1", port: int = 5551, *,
                 levels: Sequence[str] = (ALL_LEVELS,), flush_interval: float = 60.0,
                 percentiles: Sequence[float] = DEFAULT_PERCENTILES, max_samples: int = 100_000,
                 status_port: int | None = None, self_level: str | None = SELF_LEVEL,
                 broker_port: int | None = None, max_backlog: int | None = None,
                 stop_timeout: float = 8.0, hwm: int = 100_000,
                 max_message_size: int | None = None) -> None:
        if flush_interval <= 0:
            raise ValueError("flush interval must be positive")
        self.host, self.port = host, port
        self.levels = tuple(levels)
        self.flush_interval = flush_interval
        self.aggregator = Aggregator(percentiles=percentiles, max_samples=max_samples)
        self.status_port, self.stop_timeout = status_port, stop_timeout
        # No limit by default: the broker enforces --max-message-size on what clients send,
        # and a SUB that meets a message over its own limit drops the whole connection.
        self.hwm, self.max_message_size = hwm, max_message_size
        # 15 minutes of intervals by default, so an outage that long loses nothing.
        self.max_backlog = max_backlog or max(16, int(900 / flush_interval) + 1)
        self.log = logging.getLogger(f"zibrato.{self.name}")
        self._malformed_log = RateLimitedLog(self.log)
        self._backlog: collections.deque[tuple[float, list[dict[str, Any]]]] = collections.deque()
        self._backlog_ready = threading.Condition()
        self._delivering = False
        self._closing = False  # set at stop: the delivery thread ends once the backlog is empty
        #: set when the worker is stopping: a backend that retries should stop waiting
        #: between attempts and give up by :attr:`stop_deadline` (time.monotonic()).
        self.stopping = threading.Event()
        self.stop_deadline: float | None = None
        self.figures_: dict[str, Any] = {
            "received": 0, "measurements": 0, "malformed": 0, "flushes": 0,
            "series_flushed": 0, "dropped_intervals": 0, "delivery_failures": 0,
            "last_flush": None, "last_flush_seconds": None, "last_delivery": None}
        self.started = time.time()
        if self_level and not protocol.is_valid_level(self_level):
            raise ValueError(f"invalid self-metrics level {self_level!r}")
        #: the level this worker's own figures are published under (None: not published)
        self.self_level = self_level or None
        self._context = zmq.Context(io_threads=1)
        self._self_client = self._make_self_client(self_level, broker_port)

    # --- extension points ------------------------------------------------

    def connect(self) -> None:
        """Open the connection to the destination (called once, in the delivery thread)."""

    def parse(self, frame: bytes) -> protocol.Batch:
        """Turn one broker message into a batch; raise ProtocolError when it is not one.

        Its records are (type, name, values, source, tags) tuples, plain ones
        by default (:func:`zibrato.protocol.decode_plain`, for speed).
        """
        return protocol.decode_plain(frame)

    def flush(self, time: float, interval: float) -> None:
        """Close the interval ending at ``time``: summarise it and queue it for delivery."""
        started = _monotonic()
        summaries = self.aggregator.flush(time, interval)
        self._enqueue(time, summaries)
        elapsed = _monotonic() - started
        f = self.figures_
        f["flushes"] += 1
        f["series_flushed"] += len(summaries)
        f["last_flush"], f["last_flush_seconds"] = time, round(elapsed, 6)
        self._report_self(len(summaries), elapsed)

    def post(self, time: float, summaries: list[dict[str, Any]]) -> None:
        """Deliver one interval's summaries to the destination (delivery thread).

        Raise to report a failure; the runtime logs it and counts it.
        Backends that retry keep the interval themselves.
        """
        raise NotImplementedError

    def close(self) -> None:
        """Release the destination's resources (delivery thread, at exit)."""

    # --- running ---------------------------------------------------------

    @property
    def broker_endpoint(self) -> str:
        return f"tcp://{self.host}:{self.port}"

    def figures(self) -> dict[str, Any]:
        """What `zibrato status` shows for this worker."""
        f = dict(self.figures_)
        now = time.time()
        stale = f["last_flush"] is not None and now - f["last_flush"] > 3 * self.flush_interval + 5
        problems = []
        if stale:
            problems.append(f"no flush for {now - f['last_flush']:.0f} s")
        if len(self._backlog) > self.max_backlog // 2:
            problems.append(f"delivery backlog {len(self._backlog)} of {self.max_backlog} intervals")
        f.update(role=self.name, broker=self.broker_endpoint, levels=list(self.levels),
                 flush_interval=self.flush_interval, backlog=len(self._backlog),
                 series_held=len(self.aggregator), uptime_seconds=round(now - self.started, 3),
                 healthy=not problems, problems=problems)
        return f

    def run(self, stop: threading.Event) -> int:
        """Receive and flush until ``stop`` is set; flush once more, deliver, return an exit code."""
        try:
            status = self._bind_status()
        except RuntimeError as error:
            self.log.error("%s", error)
            return 1
        sub = self._subscribe()
        delivery = threading.Thread(target=self._deliver_forever, args=(stop,),
                                    name=f"zibrato-{self.name}-delivery", daemon=True)
        delivery.start()
        self.log.info("%s worker: levels %s from %s, flushing every %g s", self.name,
                      ",".join(self.levels), self.broker_endpoint, self.flush_interval)
        try:
            self._receive_until(stop, sub, status)
            # The stop budget counts from the signal: receiving the last messages is part of it.
            self.stop_deadline = time.monotonic() + self.stop_timeout
            self._receive_what_arrived(sub)
        finally:
            self._final_flush()
            self._finish_delivery(delivery)
            sub.close(linger=0)
            if status is not None:
                status.close(linger=0)
            if self._self_client is not None:
                self._self_client.close(timeout=1.0)
            self._context.term()
            self.log.info("%s worker stopped", self.name)
        return 0

    def next_boundary(self, now: float) -> float:
        """The next wall-clock multiple of the flush interval after ``now``.

        Rounded to the microsecond: in floats, 0.1 * k is 613.3000002.
        """
        return round((int(now / self.flush_interval) + 1) * self.flush_interval, 6)

    # --- receive loop ------------------------------------------------------

    def _subscribe(self) -> zmq.Socket[bytes]:
        sub = self._context.socket(zmq.SUB)
        sub.setsockopt(zmq.RCVHWM, self.hwm)
        if self.max_message_size is not None:
            sub.setsockopt(zmq.MAXMSGSIZE, self.max_message_size)
        sub.setsockopt(zmq.LINGER, 0)
        if ALL_LEVELS in self.levels:
            sub.setsockopt(zmq.SUBSCRIBE, b"")
        else:
            for level in self.levels:
                sub.setsockopt(zmq.SUBSCRIBE, protocol.topic(level))
        sub.connect(self.broker_endpoint)
        return sub

    def _bind_status(self) -> zmq.Socket[bytes] | None:
        try:
            return bind_status(self._context, "127.0.0.1", self.status_port)
        except zmq.ZMQError as error:
            raise RuntimeError(describe_bind_error(f"tcp://127.0.0.1:{self.status_port}", error)) from error

    def _receive_until(self, stop: threading.Event, sub: zmq.Socket[bytes],
                       status: zmq.Socket[bytes] | None) -> None:
        """Receive, flushing at each boundary, until ``stop``.

        The first interval starts now, not at the boundary before the worker
        existed, so that its rates are per second of receiving.
        """
        poller = zmq.Poller()
        poller.register(sub, zmq.POLLIN)
        if status is not None:
            poller.register(status, zmq.POLLIN)
        now = time.time()
        boundary = self.next_boundary(now)
        self._interval_start = max(boundary - self.flush_interval, now)
        while not stop.is_set():
            wait = max(0.0, min(boundary - time.time(), _POLL_MS / 1000))
            ready = dict(poller.poll(int(wait * 1000)))
            if sub in ready:
                self._receive_available(sub)
            if status is not None and status in ready:
                answer_status(status, self.figures)
            now = time.time()
            if now >= boundary:
                # at least 1 µs: the rounding may put the first boundary a hair before the start
                self.flush(boundary, max(boundary - self._interval_start, 1e-6))
                self._interval_start = boundary
                boundary = self.next_boundary(now)

    def _receive_what_arrived(self, sub: zmq.Socket[bytes], quiet: float = _STOP_QUIET_SECONDS,
                              most: float = 1.0) -> None:
        """On stop: take what the broker sends, until quiet, so the final flush has it.

        ``supervisorctl stop all`` signals the broker and the workers at once,
        and the broker forwards what it drains from clients up to about 0.2 s
        later (it notices the signal within 0.1 s, then drains). The quiet gap
        that ends this is longer than that, so those messages are not lost.
        """
        deadline = time.monotonic() + most
        while time.monotonic() < deadline and sub.poll(int(quiet * 1000)):
            self._receive_available(sub)

    def _receive_available(self, sub: zmq.Socket[bytes], limit: int = 10_000) -> None:
        """Take what is queued now (bounded, so flushes stay on schedule)."""
        for _ in range(limit):
            try:
                frame = sub.recv(zmq.NOBLOCK)
            except zmq.Again:
                return
            if sub.getsockopt(zmq.RCVMORE):
                self._discard_rest(sub)
                self._malformed("multipart message")
                continue
            self.ingest(frame)

    def ingest(self, frame: bytes) -> None:
        """Validate one message and aggregate its records; count and log what is malformed."""
        self.figures_["received"] += 1
        try:
            batch = self.parse(frame)
        except protocol.ProtocolError as error:
            self._malformed(str(error))
            return
        except Exception as error:  # a parse() that misses a case must not stop the worker
            self._malformed(f"unparseable ({error.__class__.__name__}: {error})")
            return
        self.figures_["measurements"] += self.aggregator.add_records(batch.records)

    def _discard_rest(self, sub: zmq.Socket[bytes]) -> None:
        while sub.getsockopt(zmq.RCVMORE):
            sub.recv()

    def _malformed(self, reason: str) -> None:
        self.figures_["malformed"] += 1
        self._malformed_log.warning("dropped malformed message: %s (%d malformed so far)",
                                    reason, self.figures_["malformed"])

    def _final_flush(self) -> None:
        """On stop: the partial interval is flushed too (the last minute must not be lost)."""
        now = time.time()
        start = getattr(self, "_interval_start", now)
        if len(self.aggregator):
            self.flush(now, max(now - start, 1e-6))

    # --- delivery ----------------------------------------------------------

    def _enqueue(self, time: float, summaries: list[dict[str, Any]]) -> None:
        """Queue an interval; past ``max_backlog`` (the one in flight included) drop the oldest waiting.

        The interval being delivered is ``_backlog[0]`` until its post returns:
        dropping it would count as lost an interval that still arrives.
        """
        with self._backlog_ready:
            self._backlog.append((time, summaries))
            while len(self._backlog) > self.max_backlog:
                oldest_waiting = 1 if self._delivering else 0
                dropped_time, dropped = self._backlog[oldest_waiting]
                del self._backlog[oldest_waiting]
                self.figures_["dropped_intervals"] += 1
                self.log.error("delivery backlog full (%d intervals): dropped the interval at %s "
                               "(%d series)", self.max_backlog, _iso(dropped_time), len(dropped))
            self._backlog_ready.notify()

    def _deliver_forever(self, stop: threading.Event) -> None:
        try:
            self.connect()
        except Exception as error:
            self.log.error("cannot connect to the destination: %s (will retry at each post)", error)
        while True:
            with self._backlog_ready:
                while not self._backlog and not self._closing:
                    self._backlog_ready.wait()
                if not self._backlog:
                    return
                time_, summaries = self._backlog[0]
                self._delivering = True
            try:
                self.post(time_, summaries)
                self.figures_["last_delivery"] = time_
            except Exception as error:
                self.figures_["delivery_failures"] += 1
                self.log.error("delivery of the interval at %s failed: %s", _iso(time_), error)
            finally:
                with self._backlog_ready:
                    if self._backlog and self._backlog[0][0] == time_:
                        self._backlog.popleft()
                    self._delivering = False
                    self._backlog_ready.notify_all()

    def _finish_delivery(self, delivery: threading.Thread) -> None:
        """Give delivery what is left of ``stop_timeout`` since the stop (supervisord's stopwaitsecs is 10)."""
        if self.stop_deadline is None:
            self.stop_deadline = time.monotonic() + self.stop_timeout
        self.stopping.set()
        with self._backlog_ready:
            self._closing = True
            self._backlog_ready.notify_all()
        delivery.join(max(0.0, self.stop_deadline - time.monotonic()) + 0.5)
        if delivery.is_alive():
            self.log.error("stopping with %d intervals undelivered after %g s",
                           len(self._backlog), self.stop_timeout)
        else:
            try:
                self.close()
            except Exception as error:  # pragma: no cover - no shipped backend raises in close()
                self.log.error("closing the destination failed: %s", error)

    # --- self-observation ----------------------------------------------------

    def _make_self_client(self, level: str | None, broker_port: int | None) -> Zibrato | None:
        """Workers measure themselves through the broker, under their own level."""
        if not level:
            return None
        port = broker_port if broker_port is not None else self.port - 1
        return Zibrato(self.host, port, tags={"worker": self.name, "host": _hostname()})

    def _report_self(self, series: int, elapsed: float) -> None:
        client, level = self._self_client, self.self_level
        if client is None or level is None:
            return
        f, prefix = self.figures_, f"zibrato.{self.name}"
        client.gauge(level, f"{prefix}.received", f["received"])
        client.gauge(level, f"{prefix}.malformed", f["malformed"])
        client.gauge(level, f"{prefix}.measurements", f["measurements"])
        client.gauge(level, f"{prefix}.series_flushed", series)
        client.gauge(level, f"{prefix}.backlog", len(self._backlog))
        client.gauge(level, f"{prefix}.dropped_intervals", f["dropped_intervals"])
        client.timing(level, f"{prefix}.flush_duration", elapsed)
        for key in self.self_figures:
            client.gauge(level, f"{prefix}.{key}", f[key])


def parse_levels(text: str) -> tuple[str, ...]:
    """'info,warn' -> ('info', 'warn'); 'all' alone means every level."""
    levels = tuple(part.strip() for part in text.split(",") if part.strip())
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
        if not 0 < p <= 100:
            raise ValueError(f"percentile {p:g} is outside (0, 100]")
    return values


def _hostname() -> str:
    return _socket.gethostname().split(".")[0] or str(os.getpid())


def _monotonic() -> float:
    return time.perf_counter()


def _iso(timestamp: float) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(timestamp))
