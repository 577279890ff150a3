"""The instrumentation client: what application code imports.

Recording a measurement is one attribute lookup and one C-level append of a
``(series, value)`` pair to a bounded buffer: no lock, no I/O, no encoding.
A background sender thread (:mod:`zibrato.sender`), started by the first
measurement, drains the buffer at a cadence that follows the rate (every
``interval``, 50 ms by default, under load; up to once a second at low rates,
so that a drain's fixed cost is shared by many measurements; ``flush()``
drains at once), encodes one message per level and hands it to a ZeroMQ PUSH
socket without blocking.

Everything the client keeps is bounded: at most ``max_queue`` measurements
wait in the buffer, and at most ``max_buffer_bytes`` bytes (``hwm``
messages) wait in ZeroMQ for an absent broker. Past either bound,
measurements are dropped and counted in :attr:`Zibrato.dropped`; nothing the
transport does ever raises into the application or blocks it.

Misuse, on the other hand, raises at once: a missing level or name, a
non-numeric value, an unrepresentable name (the rules: :mod:`zibrato.series_rules`).
The decorators and context managers live in :mod:`zibrato.instruments`; the
recording path, its caches, ``flush()`` and ``close()`` in
:mod:`zibrato.recording`; what happens at fork, exit and SIGTERM in
:mod:`zibrato.lifecycle`.
"""

from __future__ import annotations

import logging
import os
import random as _random_module
import threading
import time
from collections.abc import Callable
from typing import Any

import zmq

from . import lifecycle, protocol
from .buffer import MAX_CAPACITY, Buffer, Lane, Recorder, SharedLane, Tally
from .curve import ENV_SECRET_KEY, ENV_SERVER_KEY, ClientKeys
from .instruments import Block, Counter, Timer, TimerBlock, _Instrument
from .protocol import COUNTER, GAUGE, HISTOGRAM, SET, TIMER
from .publisher import Publisher
from .recording import MAX_CACHED_SERIES, Recording
from .sender import Sender
from .series_rules import INT64_MIN, UINT64_LIMIT, Series, Tags, check_level, check_name, number
from .series_rules import member as _member
from .series_rules import normalise_tags as _normalise_tags
from .transport import Transport, ZmqTransport

__all__ = ["Zibrato", "DEFAULT_HOST", "DEFAULT_PORT", "Timer", "Counter", "Series", "Tags"]

log = logging.getLogger("zibrato.client")

DEFAULT_HOST = "127.0.0.1"
DEFAULT_PORT = 5550


class Zibrato(Recording):
    """A client that publishes measurements to a Zibrato broker.

    ``host`` and ``port`` default to ``$ZIBRATO_HOST`` / ``$ZIBRATO_PORT``,
    then 127.0.0.1:5550. ``source`` and ``tags`` apply to every measurement
    (a measurement's own ``source`` wins, tags are merged).

    What the client keeps is bounded (see README, "Instrumenting code"):
    ``max_queue`` measurements wait for the sender thread (about 100 bytes
    each), and while the broker is away ZeroMQ holds at most
    ``max_buffer_bytes`` bytes in at most ``hwm`` messages of at most
    ``batch`` measurements. Past either bound measurements are dropped and
    counted in :attr:`dropped`. ``max_message_size`` matches the broker's
    limit: a bigger message is split, and one that cannot be is dropped and
    counted. ``linger`` bounds how long closing (and interpreter exit) waits
    for queued messages to reach the broker. ``transport`` replaces the
    ZeroMQ socket (``zibrato.testing.MemoryTransport`` keeps measurements in
    memory).

    CURVE (encrypted, authenticated link to a broker started with
    ``--curve-secret-key``): ``curve_secret_key`` is this client's
    ``NAME.key_secret`` file and ``curve_server_key`` the broker's public
    ``.key`` file (or ``$ZIBRATO_CURVE_SECRET_KEY`` / ``$ZIBRATO_CURVE_SERVER_KEY``);
    paths, never key values. ``shards=True`` (or ``$ZIBRATO_SHARDS=1``) puts
    each series' shard in the frame, so that a level can be spread over
    several workers (``--shard K/N``; docs/PROTOCOL.md, "Shards").

    ``clock`` (Unix seconds, ``time.time`` by default) stamps each message,
    and so each measurement; ``random`` (a float in [0, 1), ``random.random``
    by default) decides which calls a sample ``rate`` keeps. Tests pass
    their own to make both predictable.
    """

    def __init__(
        self,
        host: str | None = None,
        port: int | None = None,
        context: zmq.Context[zmq.Socket[bytes]] | None = None,
        source: str | None = None,
        tags: Tags = None,
        *,
        interval: float = 0.05,
        hwm: int = 10_000,
        batch: int = 1_000,
        linger: float = 1.0,
        max_message_size: int = protocol.MAX_MESSAGE_SIZE,
        max_queue: int = 100_000,
        max_buffer_bytes: int = 64 * 1024 * 1024,
        transport: Transport | None = None,
        curve_secret_key: str | os.PathLike[str] | None = None,
        curve_server_key: str | os.PathLike[str] | None = None,
        shards: bool | None = None,
        curve_keys: ClientKeys | None = None,
        process_metrics: bool | str = False,
        process_metrics_pid: bool = False,
        clock: Callable[[], float] = time.time,
        random: Callable[[], float] = _random_module.random,
    ) -> None:
        self.host = host or os.environ.get("ZIBRATO_HOST") or DEFAULT_HOST
        self.port = _port(port if port is not None else os.environ.get("ZIBRATO_PORT") or DEFAULT_PORT)
        self.source = None if source is None else check_name(source, "source")
        self.tags = _normalise_tags(tags)
        if interval <= 0 or hwm < 1 or batch < 1 or linger < 0 or not 1 < max_queue < MAX_CAPACITY:
            raise ValueError("interval, hwm, batch, max_queue and linger must be positive")
        if max_message_size < 1024 or max_buffer_bytes < max_message_size:
            raise ValueError("max_message_size must be at least 1024, and max_buffer_bytes at least max_message_size")
        self.interval, self.hwm, self.batch, self.linger = interval, hwm, batch, linger
        self.max_message_size, self.max_queue, self.max_buffer_bytes = max_message_size, max_queue, max_buffer_bytes
        if curve_keys is None:
            curve_keys = ClientKeys.from_options(
                curve_secret_key or os.environ.get(ENV_SECRET_KEY) or None,
                curve_server_key or os.environ.get(ENV_SERVER_KEY) or None,
            )
        #: shard each series (protocol 1.2) so that N workers can share a level (``--shard K/N``)
        self.shards = _flag(os.environ.get("ZIBRATO_SHARDS")) if shards is None else bool(shards)
        #: the wall clock that stamps messages, and the draw that sampling compares with ``rate``
        self._clock, self._random = clock, random
        self._transport = transport or ZmqTransport(
            self.endpoint, hwm, linger, max_buffer_bytes, context, curve=curve_keys
        )
        self._buffer = Buffer(max_queue, self._install_recorder)
        self._tally = Tally()
        self._series_cache: dict[tuple[Any, ...], Series] = {}  # call arguments -> series
        self._lane_cache: dict[tuple[Any, ...], Lane | SharedLane] = {}  # call arguments -> its series' lane
        self._instrument_cache: dict[tuple[Any, ...], _Instrument] = {}
        self._sender: Sender | None = None
        self._publisher: Publisher | None = None
        self._start_lock = threading.Lock()
        self._publish_lock = threading.Lock()
        self._closed = False
        self._no_sender_reported = False  # a sender that cannot start is logged once
        self._record: Recorder = self._start_sender_and_record
        #: process and runtime metrics, sampled by the sender thread (zibrato.process_metrics)
        self._process_metrics = _process_metrics(self, process_metrics, process_metrics_pid)
        self._buffer.forward_to = self._forward  # the lanes' way in while the client is not on fast/guarded
        lifecycle.track(self)

    @property
    def endpoint(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"tcp://{host}:{self.port}"

    @property
    def sent(self) -> int:
        """Measurements handed to the transport (ZeroMQ)."""
        return self._tally.sent

    @property
    def dropped(self) -> int:
        """Measurements dropped: buffer full, ZeroMQ's bound reached, too large, or after close()."""
        return self._tally.dropped + self._buffer.overflowed

    @property
    def queued(self) -> int:
        """Measurements waiting for the sender thread now."""
        return len(self._buffer)

    # --- instruments -----------------------------------------------------

    def time_me(
        self,
        level: str,
        name: str,
        source: str | None = None,
        tags: Tags = None,
        outcome: bool = False,
        rate: float = 1.0,
    ) -> Timer:
        """Decorator (and context manager) that records how long each call takes, in seconds."""
        return Timer(self, level, name, source, tags, outcome, rate)

    def Time_me(
        self,
        level: str,
        name: str,
        source: str | None = None,
        tags: Tags = None,
        outcome: bool = False,
        rate: float = 1.0,
    ) -> Block | TimerBlock:
        """Context manager that records how long its block takes, in seconds."""
        try:  # the cache lookup inlined: this runs on every block
            timer = self._instrument_cache[(Timer, level, name, source, tags, outcome, rate)]
        except (KeyError, TypeError):
            timer = self._cached_instrument(Timer, level, name, source, tags, outcome, rate)
        if outcome or timer.rate < 1.0:
            return Block(timer)
        return TimerBlock(timer)  # type: ignore[arg-type]  # the cache holds a Timer under this key

    def count_me(
        self,
        level: str,
        name: str,
        value: float = 1,
        source: str | None = None,
        tags: Tags = None,
        outcome: bool = False,
        rate: float = 1.0,
    ) -> Counter:
        """Decorator that adds ``value`` to a counter on every call."""
        return Counter(self, level, name, value, source, tags, outcome, rate)

    def Count_me(
        self,
        level: str,
        name: str,
        value: float = 1,
        source: str | None = None,
        tags: Tags = None,
        outcome: bool = False,
        rate: float = 1.0,
    ) -> Block:
        """Context manager that adds ``value`` to a counter for its block."""
        return Block(self._cached_instrument(Counter, level, name, source, tags, outcome, rate, value))

    # --- direct calls ------------------------------------------------------

    def count(
        self, level: str, name: str, value: float = 1, source: str | None = None, tags: Tags = None, rate: float = 1.0
    ) -> None:
        """Add ``value`` to a counter (floats stay floats). ``rate`` < 1 samples the calls."""
        if rate != 1.0:
            self._sampled(self._cached_series(level, COUNTER, name, source, tags, rate), number(value), rate)
            return
        # The common call inlined (the lane cache and a small int's check): one call fewer
        # than a function per step, which is most of what a direct call costs.
        try:
            lane = self._lane_cache[level, COUNTER, name, source, tags]
        except (KeyError, TypeError):
            lane = self._cached_lane((level, COUNTER, name, source, tags))
        if type(value) is not int or not INT64_MIN <= value < UINT64_LIMIT:
            value = number(value)
        lane.record((value,))

    def gauge(self, level: str, name: str, value: float, source: str | None = None, tags: Tags = None) -> None:
        """Set a gauge to ``value`` (the last value of an interval wins)."""
        try:
            lane = self._lane_cache[level, GAUGE, name, source, tags]
        except (KeyError, TypeError):
            lane = self._cached_lane((level, GAUGE, name, source, tags))
        lane.record((number(value),))

    def timing(
        self, level: str, name: str, seconds: float, source: str | None = None, tags: Tags = None, rate: float = 1.0
    ) -> None:
        """Record a duration measured elsewhere, in seconds. ``rate`` < 1 samples the calls."""
        if rate == 1.0:
            try:
                lane = self._lane_cache[level, TIMER, name, source, tags]
            except (KeyError, TypeError):
                lane = self._cached_lane((level, TIMER, name, source, tags))
            seconds = number(seconds)
            if seconds < 0:
                raise ValueError(f"timing {name!r}: negative duration {seconds}")
            lane.record((seconds,))
            return
        series = self._cached_series(level, TIMER, name, source, tags, rate)
        seconds = number(seconds)
        if seconds < 0:
            raise ValueError(f"timing {name!r}: negative duration {seconds}")
        self._sampled(series, seconds, rate)

    def histogram(
        self,
        level: str,
        name: str,
        value: float,
        unit: str | None = None,
        source: str | None = None,
        tags: Tags = None,
        rate: float = 1.0,
    ) -> None:
        """Record one value of a distribution of any quantity (bytes, rows, queue wait...).

        ``unit`` (1-64 characters of ``A-Za-z0-9_./%-``) is part of the series.
        Timers are always seconds; use :meth:`timing` for durations.
        """
        series = self._cached_series(level, HISTOGRAM, name, source, tags, rate, unit)
        self._sampled(series, number(value), rate)

    def set(self, level: str, name: str, member: str | int, source: str | None = None, tags: Tags = None) -> None:
        """Add ``member`` to a set: workers report the number of unique members per interval."""
        self._record((self._plain_series(level, SET, name, source, tags), _member(member)))

    # --- lifecycle -------------------------------------------------------

    @property
    def broker_connected(self) -> bool | None:
        """Whether the broker is reached now (None: not known yet, or not a ZeroMQ transport)."""
        link = getattr(self._transport, "link", None)
        return None if link is None else bool(link.connected)

    def __enter__(self) -> Zibrato:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"<Zibrato {self.endpoint} sent={self.sent} dropped={self.dropped}>"

    # --- the with-blocks' instruments ---------------------------------------------

    def _cached_instrument(
        self,
        kind: type[_Instrument],
        level: str,
        name: str,
        source: str | None,
        tags: Tags,
        outcome: bool,
        rate: float,
        *value: float,
    ) -> _Instrument:
        """One validated instrument per distinct ``with`` statement, reused by every block."""
        key = (kind, level, name, source, tags, outcome, rate, *value)
        try:
            return self._instrument_cache[key]
        except (KeyError, TypeError):  # TypeError: unhashable tags, validated every time
            if kind is Timer:
                instrument: _Instrument = Timer(self, level, name, source, tags, outcome, rate)
            else:
                instrument = Counter(self, level, name, value[0], source, tags, outcome, rate)  # Count_me's one
            if len(self._instrument_cache) >= MAX_CACHED_SERIES:
                self._instrument_cache.clear()
            try:
                self._instrument_cache[key] = instrument
            except TypeError:
                pass
            return instrument


# --- options ------------------------------------------------------------------


def _flag(value: str | None) -> bool:
    """An environment flag: 1, true, yes, on (any case) are true."""
    return (value or "").strip().lower() in ("1", "true", "yes", "on")


def _port(value: object) -> int:
    try:
        port: int = int(value)  # type: ignore[call-overload]  # anything int() takes
    except (TypeError, ValueError):
        raise ValueError(f"port must be an integer, got {value!r}") from None
    if not 0 < port < 65536:
        raise ValueError(f"port must be 1-65535, got {port}")
    return port


def _process_metrics(client: Zibrato, wanted: bool | str, pid: bool) -> Any:
    """The sampler of ``process_metrics`` (True: level 'info'; a string: that level), or None."""
    if not wanted:
        return None
    from .process_metrics import ProcessMetrics

    level = check_level(wanted if isinstance(wanted, str) else "info", "process_metrics level")
    return ProcessMetrics(client, level=level, pid_tag=pid)
