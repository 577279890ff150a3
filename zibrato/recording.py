"""The client's recording path: from a call's arguments to its series' lane, and which function records.

A measurement is recorded by ``self._record(item)`` (or a lane's
``record``), and which function that is changes over a client's life: the
first measurement starts the sender thread (:meth:`Recording._start_sender_and_record`);
then it is the buffer's C-level append (past half full, its guarded recorder,
which drops and counts what arrives when the buffer is full); an idle sender
is woken by the next measurement (:meth:`Recording._wake_sender_and_record`);
``zibrato.testing.capture`` diverts measurements into memory
(:meth:`Recording._divert`); after ``close()`` each is dropped and counted.
``flush()`` and ``close()`` are here too: they drain and stop that sender.

The direct calls' arguments map to a validated series (:mod:`zibrato.series_rules`)
and its lane through caches, so that a repeated call skips validation.

:class:`Recording` is the part of :class:`zibrato.client.Zibrato` that does
this; the client's constructor sets the state it declares.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from typing import Any

from . import lifecycle
from .buffer import Buffer, Item, Lane, Recorder, SharedLane, Tally
from .publisher import Publisher
from .sender import Sender
from .series_rules import Series, Tags, make_series
from .transport import Transport

__all__ = ["Recording"]

log = logging.getLogger("zibrato.client")

#: distinct call signatures remembered per cache (then forgotten all at once)
MAX_CACHED_SERIES = 10_000


class Recording:
    """The client's series caches, recording path, flush and close (see the module's docstring)."""

    # Set by Zibrato.__init__.
    source: str | None
    tags: tuple[str, ...]
    interval: float
    linger: float
    batch: int
    max_message_size: int
    shards: bool
    _buffer: Buffer
    _tally: Tally
    _transport: Transport
    _clock: Callable[[], float]
    _random: Callable[[], float]
    _record: Recorder
    _sender: Sender | None
    _publisher: Publisher | None
    _start_lock: threading.Lock
    _publish_lock: threading.Lock
    _closed: bool
    _no_sender_reported: bool
    _process_metrics: Any
    _series_cache: dict[tuple[Any, ...], Series]
    _lane_cache: dict[tuple[Any, ...], Lane | SharedLane]

    def series(
        self,
        level: str,
        type: str,
        name: str,
        source: str | None = None,
        tags: Tags = None,
        rate: float = 1.0,
        unit: str | None = None,
    ) -> Series:
        """Validate a series once and return its hashable key (raises on misuse)."""
        return make_series(level, type, name, source, tags, rate, unit, self.source, self.tags)

    # --- flush and close ---------------------------------------------------------

    def flush(self, timeout: float = 1.0) -> bool:
        """Hand every measurement recorded so far to ZeroMQ now, and let ZeroMQ write it out.

        Returns False if the sender did not finish within ``timeout``. When
        the broker is connected, flush() also waits (within ``timeout``)
        until ZeroMQ has written the messages to the connection, so that a
        process may end with ``os._exit`` right after it; when the broker is
        away the measurements wait in ZeroMQ (bounded) and flush() does not
        wait for them.
        """
        sender = self._sender
        if sender is None:
            return not self._buffer
        return sender.drain_now(timeout)

    def close(self, timeout: float | None = None) -> None:
        """Send what is pending, wait up to ``linger`` for delivery, release sockets.

        Measurements recorded after close() are dropped and counted (an
        in-memory transport has nothing to release and keeps recording).
        """
        if self._transport.synchronous:
            return
        with self._start_lock:
            if self._closed:
                return
            self._closed = True
            self._use(self._drop)
            sender = self._sender  # kept while it stops: a SIGTERM meanwhile waits for it too
        self._stop(sender, self.linger + 1.0 if timeout is None else timeout)
        self._sender = None
        self._buffer.retire()
        lifecycle.forget(self)

    # --- from a call's arguments to a series and its lane ---------------------

    def _cached_series(
        self,
        level: str,
        type: str,
        name: str,
        source: str | None,
        tags: Tags,
        rate: float = 1.0,
        unit: str | None = None,
    ) -> Series:
        """series() for the direct calls, cached so that repeated calls skip validation."""
        try:
            return self._series_cache[level, type, name, source, tags, rate, unit]
        except (KeyError, TypeError):  # TypeError: tags given as an unhashable mapping
            return self._validate_and_cache((level, type, name, source, tags, rate, unit))

    def _plain_series(self, level: str, type: str, name: str, source: str | None, tags: Tags) -> Series:
        """:meth:`_cached_series` without rate or unit: the common calls' shorter path."""
        try:
            return self._series_cache[level, type, name, source, tags]
        except (KeyError, TypeError):
            return self._validate_and_cache((level, type, name, source, tags))

    def _cached_lane(self, call: tuple[Any, ...]) -> Lane | SharedLane:
        """The lane of a direct call's series (validated once), cached by the call's arguments.

        Unhashable tags (a mapping) are validated every time and take the shared queue.
        """
        lane = self._buffer.lane_or_shared(self._plain_series(*call))
        if len(self._lane_cache) >= MAX_CACHED_SERIES:
            self._lane_cache.clear()  # the lanes stay (their buffer keeps them): a new entry finds its lane
        try:
            self._lane_cache[call] = lane
        except TypeError:
            pass
        return lane

    def _lane(self, series: Series) -> Lane | SharedLane:
        """The lane an instrument records into (its series validated already)."""
        return self._buffer.lane_or_shared(series)

    def _validate_and_cache(self, call: tuple[Any, ...]) -> Series:
        key = self.series(*call)
        if len(self._series_cache) >= MAX_CACHED_SERIES:
            self._series_cache.clear()
        try:
            self._series_cache[call] = key
        except TypeError:
            pass
        return key

    # --- the recording path ---------------------------------------------------
    # self._record(item) is the buffer's append (past half full, its guarded recorder, which
    # drops and counts what arrives when the buffer is full); before the sender starts, after
    # close() and while diverted, one of the methods below.

    def _sampled(self, series: Series, value: Any, rate: float) -> None:
        """Record one in ``1 / rate`` calls (chosen at random, as statsd clients do)."""
        if rate == 1.0 or self._random() < rate:
            self._record((series, value))

    def _use(self, recorder: Recorder) -> None:
        """Record through ``recorder`` from now on, every lane included."""
        self._record = recorder
        self._buffer.route(recorder)

    def _forward(self, item: Item) -> None:
        """A lane's measurement while the client records through one of its own paths (see Lane)."""
        self._record(item)

    def _install_recorder(self, recorder: Recorder) -> None:
        """The buffer's choice between its fast and guarded recorders, while the sender runs."""
        if self._record is self._buffer.fast or self._record is self._buffer.guarded:
            self._use(recorder)

    def _record_then_wake(self) -> bool:
        """The sender's idle hook: record through :meth:`_wake_sender_and_record` until the next measurement.

        Only over the buffer's own recorders (not a closed, diverted or
        starting client); False if not installed.
        """
        if self._record is self._buffer.fast or self._record is self._buffer.guarded:
            self._use(self._wake_sender_and_record)
            return True
        return False

    def _wake_sender_and_record(self, item: Item) -> None:
        """The first measurement after the sender went idle: the plain append again, and a wake-up."""
        buffer, sender = self._buffer, self._sender
        if self._record == self._wake_sender_and_record:  # bound methods: equal, never identical
            self._use(buffer.guarded if buffer.guarding else buffer.fast)
        self._record_in_order(item)
        if sender is not None:
            sender.idle = False
            sender.wake()

    def _start_sender_and_record(self, item: Item) -> None:
        """The first measurement (in this process) starts the sender, then takes the fast path."""
        with self._start_lock:
            if self._closed:
                self._drop(item)
                return
            if self._transport.synchronous:
                self._publisher = self._new_publisher(self._transport, self._tally)
                self._use(self._publish_now)
            elif self._sender is None:
                publisher = self._new_publisher(self._transport, self._tally)
                sender = Sender(self._buffer, publisher, self.interval, self.linger, idle=self._record_then_wake)
                if self._process_metrics is not None:
                    sender.periodic.append(self._process_metrics.tick)
                try:
                    sender.start()
                except RuntimeError as error:  # no threads left, or interpreter shutting down
                    self._report_no_sender(error)
                    self._drop(item)
                    return  # the next measurement tries again
                self._publisher, self._sender = publisher, sender
                self._use(self._buffer.guarded if self._buffer.guarding else self._buffer.fast)
                lifecycle.sender_started(self)
        self._record_in_order(item)

    def _record_in_order(self, item: Item) -> None:
        """Record ``item`` into its series' lane when it has one (a lane's measurement that came
        through the client's path): what the series records next goes there too, and the sender
        takes each lane before the shared queue, so the series' values stay in order."""
        lane = self._buffer.lane_of(item[0]) if self._record is not self._publish_now else None
        if lane is None:
            self._record(item)
        else:
            lane.record((item[1],))

    def _publish_now(self, item: Item) -> None:
        """Synchronous transports (in memory): publish in the recording thread, in order."""
        with self._publish_lock:
            self._publisher.publish((item,))  # type: ignore[union-attr]

    def _new_publisher(self, transport: Transport, tally: Tally) -> Publisher:
        return Publisher(transport, tally, self.batch, self.max_message_size, shards=self.shards, clock=self._clock)

    def _report_no_sender(self, error: RuntimeError) -> None:
        if not self._no_sender_reported:
            self._no_sender_reported = True
            log.error(
                "zibrato: cannot start the sender thread (%s); measurements are dropped and counted until it can", error
            )

    def _drop(self, item: Item) -> None:
        self._buffer.overflow()

    def _divert(self, transport: Transport) -> Callable[[], None]:
        """Send what is recorded from now on to ``transport`` (synchronous); return the undo."""
        publisher = self._new_publisher(transport, Tally())
        lock = threading.Lock()

        def publish_there(item: Item) -> None:
            with lock:
                publisher.publish((item,))

        previous = self._record
        self._use(publish_there)

        def undo() -> None:
            if self._record is publish_there:  # unless the block closed the client (or forked)
                self._use(self._drop if self._closed else previous)

        return undo

    def _stop(self, sender: Sender | None, timeout: float) -> None:
        if sender is not None:
            sender.stop(timeout)
            if sender.is_alive():  # still draining: it counts what it takes
                return
        self._tally.dropped += self._buffer.discard()
