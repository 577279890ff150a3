"""What happens to a measurement after the application recorded it.

Three small parts, each with one job (the pystatsd model: one publisher owns
the protocol, each transport only moves bytes):

* :class:`~zibrato.buffer.Buffer`, the bounded queues between the
  application's threads and the sender: one per series (a lane) and one
  shared. Recording is one C-level ``deque.append`` (no lock, no Python
  call); past half full, a small function that refuses and counts what
  arrives when the queues are full, so that the bound is hard and every
  refused measurement is counted.
* :class:`Publisher`, which takes each lane's values as they are and groups
  the shared queue's per series, frames them (:mod:`zibrato.framing`: at
  most ``batch`` values and ``max_message_size`` bytes a message, the one
  rule every producer follows) and hands each frame to a transport,
  counting what was sent and what was dropped.
* :class:`Sender`, the background thread that drains a buffer into a
  publisher every ``interval`` seconds and owns the transport (ZeroMQ sockets
  are not thread-safe, so they live in this one thread).

Transports (:mod:`zibrato.transport`): :class:`ZmqTransport` (a PUSH socket
that never blocks and bounds in bytes what ZeroMQ holds),
``zibrato.testing.MemoryTransport`` for tests.
"""

from __future__ import annotations

import itertools
import logging
import operator
import queue
import threading
import time
from collections import deque
from collections.abc import Callable, Iterable, Iterator, Sequence
from typing import Any

from . import framing, protocol
from .buffer import FAST_FROM, MAX_CAPACITY, SLACK, Buffer, Item, Lane, Recorder, Tally
from .framing import Record, split
from .lifecycle import _leave_signals_to_the_main_thread
from .transport import SETTLE_WHEN_STALLED, Transport, ZmqTransport

__all__ = [
    "Buffer",
    "Lane",
    "Tally",
    "Transport",
    "ZmqTransport",
    "Publisher",
    "Sender",
    "group",
    "messages",
    "record_of",
    "split",
    "Item",
    "Recorder",
    "MAX_CAPACITY",
    "SLACK",
    "FAST_FROM",
    "SETTLE_WHEN_STALLED",
]

log = logging.getLogger("zibrato.client")

#: series -> its values; sharded (_by_shard), the series' level is (level, shard)
Grouped = dict[tuple[Any, ...], list[Any]]

#: drains in a row that found nothing before the sender sleeps until woken (see Sender): one, so that
#: a process recording a few measurements a second wakes its sender twice per measurement, not 20 times a second
IDLE_AFTER = 1
#: the longest an idle sender sleeps without being woken, in seconds
IDLE_MAX_SLEEP = 10.0


class Publisher:
    """Groups, frames and sends; counts every measurement as sent or dropped.

    ``clock`` stamps each message (Unix seconds, ``time.time`` by default):
    the client's injectable clock.
    """

    def __init__(
        self,
        transport: Transport,
        tally: Tally,
        batch: int,
        max_message_size: int,
        shards: bool = False,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.transport, self.tally = transport, tally
        self.batch, self.max_message_size = batch, max_message_size
        #: put each series' shard in the frame (protocol 1.2), for levels spread over N workers
        self.shards = shards
        self.clock = clock

    def publish(self, items: Iterable[Item]) -> None:
        """Send ``(series, value)`` items: one record per series, one message per level."""
        self._publish_grouped(group(items if isinstance(items, list) else list(items)))

    def drain(self, buffer: Buffer) -> None:
        """:meth:`publish` what waits in ``buffer`` now: each lane as it is, the shared queue grouped."""
        grouped: Grouped = buffer.take_lanes()
        items = buffer.items
        count = len(items)
        if count:
            taken: list[Item] = []
            try:
                taken.extend(_starmap(items.popleft, _repeat((), count)))
            except IndexError:  # emptied by close() after a sender that hung: keep what was popped
                pass
            for key, values in group(taken).items():
                if isinstance(key, Lane):  # a lane's values spilled while guarded: (value,) each
                    key, values = key.series, list(map(_first, values))
                known = grouped.get(key)
                if known is None:
                    grouped[key] = values
                else:  # recorded after what its lane held (the guard came later)
                    known.extend(values)
        if grouped:
            self._publish_grouped(grouped)

    def _publish_grouped(self, grouped: Grouped) -> None:
        if not grouped:
            return
        now = self.clock()
        if not self.shards and self._publish_in_one_message(grouped, now):
            return
        frames: list[framing.Framed] = []
        if self.shards:  # one message per (level, shard)
            for (level, shard), records, size in messages(_by_shard(grouped), self.batch):
                frames.extend(self._encode(level, now, records, size, shard))
        else:
            for level, records, size in messages(grouped, self.batch):
                frames.extend(self._encode(level, now, records, size))
        last = len(frames) - 1
        send, tally = self.transport.send, self.tally
        for index, (frame, size) in enumerate(frames):
            try:
                taken = send(frame, index == last)
            except Exception:  # pragma: no cover - a transport's bug: count, log, go on
                log.exception("zibrato: the transport failed to take a message; dropped and counted")
                taken = False
            if taken:
                tally.sent += size
            else:
                tally.dropped += size

    def _publish_in_one_message(self, grouped: Grouped, now: float) -> bool:
        """The common drain in one go: one level, at most ``batch`` values, one frame. False if not."""
        series = iter(grouped)
        level = next(series)[0]
        size = sum(map(len, grouped.values()))
        if size > self.batch or any(other[0] != level for other in series):
            return False
        records = [
            (key[1], key[2], values, key[3], key[4]) if key[5] is None and key[6] is None else record_of(key, values)
            for key, values in grouped.items()
        ]
        try:
            frame = protocol.encode(level, now, records)
        except Exception:  # pragma: no cover - values are validated when recorded: the general path logs it
            return False
        if len(frame) > self.max_message_size:
            return False
        try:
            taken = self.transport.send(frame, True)
        except Exception:  # pragma: no cover - a transport's bug: count, log, go on
            log.exception("zibrato: the transport failed to take a message; dropped and counted")
            taken = False
        if taken:
            self.tally.sent += size
        else:
            self.tally.dropped += size
        return True

    def _encode(
        self, level: str, now: float, records: Sequence[Sequence[Any]], size: int, shard: int | None = None
    ) -> list[framing.Framed]:
        """(frame, measurements) for one message, split by the framing rule when too large."""
        try:
            return framing.fit(level, now, records, self.max_message_size, shard, self._too_large, size)
        except Exception as error:  # pragma: no cover - values are validated when recorded
            self.tally.dropped += size
            log.error("zibrato: cannot encode %d measurements: %s; dropped and counted", size, error)
            return []

    def _too_large(self, record: Sequence[Any], encoded: int, limit: int) -> None:
        """The framing rule's drop: one measurement that alone is over the limit."""
        self.tally.dropped += 1
        log.error(
            "zibrato: one measurement of %r is %d bytes encoded, over the %d-byte message limit; dropped and counted",
            record[1],
            encoded,
            limit,
        )


_starmap, _repeat, _groupby = itertools.starmap, itertools.repeat, itertools.groupby
_series_of, _value_of = operator.itemgetter(0), operator.itemgetter(1)
_first = _series_of  # a lane's (value,) tuple
#: items looked at to choose how to group a drain, and the most runs among them for runs to pay
SAMPLE, MOST_RUNS = 64, 8


def group(items: list[Item]) -> Grouped:
    """``(series, value)`` items grouped per series, each series' values in recorded order.

    A busy series arrives in runs (a loop calling one function): those are
    grouped a run at a time, in C (``groupby``, ``map(itemgetter)``), about
    a third of the cost of a dict lookup per item. Interleaved series (runs
    of one or two) would pay more per run than per item, so the first
    ``SAMPLE`` items decide: few runs among them, by run; many (or a handful
    of items, as a synchronous transport publishes), item by item.
    """
    grouped: Grouped = {}
    get = grouped.get
    if len(items) >= MOST_RUNS and _runs(items[:SAMPLE]) <= MOST_RUNS:
        for series, run in _groupby(items, _series_of):
            values = get(series)
            if values is None:
                grouped[series] = list(map(_value_of, run))
            else:
                values.extend(map(_value_of, run))
    else:
        for series, value in items:
            values = get(series)
            if values is None:
                grouped[series] = [value]
            else:
                values.append(value)
    return grouped


def _runs(sample: list[Item]) -> int:
    """Runs of one series object in ``sample`` (identity: a cheap, conservative count)."""
    column = list(map(_series_of, sample))
    return 1 + sum(map(operator.is_not, column[1:], column))


_shard_cache: dict[tuple[Any, ...], int] = {}


def _by_shard(grouped: Grouped) -> Grouped:
    """The same groups, each series' level replaced by (level, shard): one message per shard."""
    cache = _shard_cache
    out: Grouped = {}
    for series, values in grouped.items():
        shard = cache.get(series)
        if shard is None:
            if len(cache) >= 100_000:
                cache.clear()
            level, type_, name, source, tags, _weight, unit = series
            shard = cache[series] = protocol.shard_of(type_, name, source, tags, unit)
        sharded = ((series[0], shard), *series[1:])
        out[sharded] = values
    return out


def record_of(series: tuple[Any, ...], values: list[Any]) -> Record:
    """The wire record of a series (protocol 1.1: weight and unit appended only when needed)."""
    _level, type_, name, source, tags, weight, unit = series
    return framing.record_of(type_, name, values, source, tags, weight, unit)


def messages(grouped: Grouped, batch: int) -> Iterator[tuple[Any, list[Sequence[Any]], int]]:
    """Yield (level, records, measurement count) per message (:func:`zibrato.framing.messages`).

    The level is the series' first field: a string, or (level, shard) from :func:`_by_shard`.
    """
    by_level: dict[Any, list[Record]] = {}
    for series, values in grouped.items():
        records = by_level.get(series[0])
        if records is None:
            records = by_level[series[0]] = []
        records.append(record_of(series, values))
    for level, records in by_level.items():
        for chunk, size in framing.messages(records, batch):
            yield level, chunk, size


class Sender(threading.Thread):
    """Drains a buffer into a publisher every ``interval`` seconds; owns the transport.

    It knows the buffer, the publisher and the transport it is given, and
    nothing of the client that made them, but for one hook: ``idle``, called
    after ``IDLE_AFTER`` drains in a row found nothing. The client then
    records through a function that wakes the sender (:meth:`wake`) with the
    next measurement and puts the plain append back, so an idle sender sleeps
    instead of waking every ``interval`` to find nothing: its waits double
    from ``interval`` up to ``IDLE_MAX_SLEEP`` (a last resort for an append
    that raced the switch), and the first measurement wakes it at once.
    """

    def __init__(
        self,
        buffer: Buffer,
        publisher: Publisher,
        interval: float,
        linger: float,
        idle: Callable[[], bool] | None = None,
    ) -> None:
        super().__init__(name="zibrato-sender", daemon=True)
        self.buffer, self.publisher = buffer, publisher
        self.transport = publisher.transport
        #: callables run by this thread after each drain (e.g. process metrics' sampler)
        self.periodic: list[Callable[[], None]] = []
        self.interval, self.linger = interval, linger
        self._idle_hook = idle
        #: the longest an idle sender sleeps without being woken (doubling from ``interval``)
        self.idle_max_sleep = max(interval, IDLE_MAX_SLEEP)
        #: times the sender woke up (a test's seam: an idle sender wakes a few times, then sleeps)
        self.wakes = 0
        #: True while the client records through the waking function (see :meth:`wake`)
        self.idle = False
        # No lock that an application thread takes while waking the sender: a SIGTERM
        # handler (client._close_all_then_die) may run on top of any line of close() or
        # flush() and wake it again. A threading.Event's lock, held by the interrupted
        # Event.set(), deadlocked it. A SimpleQueue's put() is one C call; the flush
        # waiters are locks that only the sender releases.
        self._wake: queue.SimpleQueue[bool] = queue.SimpleQueue()
        self._waiters: deque[threading.Lock] = deque()  # one held lock per flush() waiting for a drain
        self._stopping = False

    def wake(self) -> None:
        """Wake the sender now (the first measurement after an idle spell): one C-level put."""
        self._wake.put(True)

    def drain_now(self, timeout: float) -> bool:
        """Publish everything recorded before this call; wait until ZeroMQ has written it.

        True when it was all handed to the transport within ``timeout``. The
        wait for the writing is skipped when the transport has stopped
        writing (broker away): the measurements then wait in ZeroMQ.
        """
        drained = threading.Lock()
        drained.acquire()
        self._waiters.append(drained)  # before the wake: the drain it wakes sees it
        self._wake.put(True)
        return drained.acquire(timeout=max(0.0, timeout))

    def stop(self, timeout: float) -> None:
        """Ask for a last drain and wait up to ``timeout`` for it (safe in a signal handler)."""
        self._stopping = True
        self._wake.put(True)
        self.join(timeout)

    def run(self) -> None:
        _leave_signals_to_the_main_thread()
        self.transport.open()
        empty_drains = 0
        sleep = self.interval
        try:
            while True:
                woken = self._wait(sleep)
                self.wakes += 1
                # Read before draining: a stop or flush requested during the drain gets one
                # more drain (its wake-up waits in the queue), for what was recorded after
                # this one's snapshot of the buffer.
                stopping = self._stopping
                waiters = [self._waiters.popleft() for _ in range(len(self._waiters))]
                found = 0
                try:
                    found = self.buffer.check()
                    self.transport.flushing = bool(waiters)
                    self.publisher.drain(self.buffer)
                    self.buffer.relax()
                    self.transport.tick()
                    for task in self.periodic:
                        task()
                    if waiters:  # someone waits in flush(): let ZeroMQ write it out
                        self.transport.settle(SETTLE_WHEN_STALLED * 10)
                except Exception:  # pragma: no cover - a bug here must not kill the sender
                    log.exception("zibrato: sender failed to drain measurements")
                for drained in waiters:
                    drained.release()
                if stopping:
                    return
                empty_drains = 0 if found else empty_drains + 1
                if not self.idle:
                    sleep = self.interval
                    if empty_drains >= IDLE_AFTER:
                        self._go_idle()  # its first wait is one cadence: for an append that raced
                else:  # back off, unless flush() woke it (more may follow)
                    sleep = self.interval if woken else min(sleep * 2, self.idle_max_sleep)
        finally:
            self.transport.close(self.linger)

    def _wait(self, timeout: float) -> bool:
        """Sleep up to ``timeout``; True when woken (a measurement after idling, flush, stop)."""
        try:
            self._wake.get(timeout=timeout)
        except queue.Empty:
            return False
        try:
            while True:
                self._wake.get_nowait()
        except queue.Empty:
            return True

    def _go_idle(self) -> None:
        """Ask the client to wake this sender with its next measurement."""
        hook = self._idle_hook
        if hook is not None:
            self.idle = True  # before the hook: a measurement right after it sets it back
            if not hook():  # the client is not on its plain append (closed, diverted...)
                self.idle = False
