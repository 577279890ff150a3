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
  the shared queue's per series, splits them into
  protocol messages of at most ``batch`` values and ``max_message_size``
  bytes, encodes them (:mod:`zibrato.protocol`) and hands each to a
  transport, counting what was sent and what was dropped.
* :class:`Sender`, the background thread that drains a buffer into a
  publisher every ``interval`` seconds and owns the transport (ZeroMQ sockets
  are not thread-safe, so they live in this one thread).

Transports: :class:`ZmqTransport` here (a PUSH socket that never blocks and
bounds in bytes what ZeroMQ holds), ``zibrato.testing.MemoryTransport`` for
tests.
"""

from __future__ import annotations

import itertools
import logging
import operator
import queue
import signal
import threading
import time
from collections import deque
from collections.abc import Callable, Iterable, Iterator, Sequence
from typing import Any

import zmq

# Tracked frames need pyzmq's collector thread, which stops at interpreter exit from an
# atexit hook registered when this module is imported: imported here, before the client
# registers its own exit flush, so that flush runs first (atexit runs hooks last-in first-out).
import zmq.utils.garbage

from . import protocol
from .buffer import FAST_FROM, MAX_CAPACITY, SLACK, Buffer, Item, Lane, Recorder, Tally
from .client_link import BrokerLink
from .curve import ClientKeys

__all__ = [
    "Buffer",
    "Lane",
    "Tally",
    "Transport",
    "ZmqTransport",
    "Publisher",
    "Sender",
    "group",
    "Item",
    "Recorder",
    "MAX_CAPACITY",
    "SLACK",
    "FAST_FROM",
]

log = logging.getLogger("zibrato.client")

#: series -> its values; sharded (_by_shard), the series' level is (level, shard)
Grouped = dict[tuple[Any, ...], list[Any]]
#: one wire record (zibrato.protocol.Record's fields, as a tuple)
Record = tuple[Any, ...]

#: how long flush() waits for ZeroMQ to write out what it took, when ZeroMQ is writing at all
SETTLE_WHEN_STALLED = 0.1
#: drains in a row that found nothing before the sender sleeps until woken (see Sender): one, so that
#: a process recording a few measurements a second wakes its sender twice per measurement, not 20 times a second
IDLE_AFTER = 1
#: the longest an idle sender sleeps without being woken, in seconds
IDLE_MAX_SLEEP = 10.0


class Transport:
    """Where encoded messages go. A subclass implements :meth:`send`; the rest is optional.

    ``synchronous = True`` means publishing in the recording thread is fine
    (an in-memory transport): the client then starts no sender thread.
    """

    synchronous = False
    #: set by the sender: a flush() waits for the drain under way (a transport may track its last frame)
    flushing = False

    def open(self) -> None:
        """Called once, in the thread that will send."""

    def send(self, frame: bytes, last: bool = True) -> bool:
        """Take one message, without blocking; False if it cannot (it is then dropped and counted).

        ``last`` marks the last message of a drain (a transport may track only those).
        """
        raise NotImplementedError

    def settle(self, timeout: float) -> bool:
        """Wait up to ``timeout`` for what was sent to leave the process; True when it has."""
        return True

    def close(self, linger: float) -> None:
        """Release what :meth:`open` made, waiting up to ``linger`` seconds for delivery."""

    def tick(self) -> None:
        """Called by the sender thread after each drain (every ``interval``), busy or idle."""

    def fork_child(self) -> Transport:
        """The transport a forked child uses (sockets cannot cross a fork: a new one)."""
        return self


class ZmqTransport(Transport):
    """A ZeroMQ PUSH socket that never blocks, with a bound in bytes on what ZeroMQ holds.

    Frames are sent as copies (``copy=True``: for frames of a few hundred
    bytes to a few KiB, a memcpy is cheaper than pyzmq's zero-copy
    bookkeeping). A few are sent zero-copy with a tracker, which ZeroMQ marks
    done when it has written the frame to the connection; frames on one
    connection are written in order, so one tracker vouches for every frame
    sent before it. A tracker costs a wake-up of pyzmq's collector thread,
    so one is taken only when it is needed:

    * for the last frame of a drain that a ``flush()`` waits for (and, when
      that drain sent nothing, for a tiny marker frame: a message with no
      records), so that :meth:`settle` can wait until what was sent has left
      the process (``flush()`` before ``os._exit``);
    * every ``TRACK_EVERY`` bytes, so that what ZeroMQ holds for an absent
      broker is known: the frames not yet vouched for count as held, at most
      ``max_bytes`` bytes (and ``hwm`` messages); a frame past that is
      refused, and dropped and counted by the publisher.

    A client recording a thousand measurements a second sends about 10 KB a
    second: one tracker every few tens of seconds instead of twenty a second.
    """

    #: bytes sent between two tracked frames (at most a sixteenth of ``max_bytes``)
    TRACK_EVERY = 256 * 1024

    def __init__(
        self,
        endpoint: str,
        hwm: int,
        linger: float,
        max_bytes: int,
        context: zmq.Context[zmq.Socket[bytes]] | None = None,
        curve: ClientKeys | None = None,
    ) -> None:
        self.endpoint, self.hwm, self.linger, self.max_bytes = endpoint, hwm, linger, max_bytes
        #: CURVE keys (zibrato.curve): the broker is then a CURVE server that checks this client's key
        self.curve = curve
        self._given_context = context
        self._context: zmq.Context[zmq.Socket[bytes]] | None = None
        self._socket: zmq.Socket[bytes] | None = None
        # (tracker, bytes it vouches for, sent at), oldest first
        self._held: deque[tuple[zmq.MessageTracker, int, float]] = deque()
        self._untracked = 0  # bytes sent since the last tracked frame
        self._track_every = max(1, min(self.TRACK_EVERY, max_bytes // 16))
        self._last_level = b""  # the level of the first frame sent (where a marker goes)
        #: bytes of the frames ZeroMQ holds (not yet written to the broker's connection)
        self.held_bytes = 0
        self._failing = False
        #: whether the broker is reached (zibrato.client_link), made in open()
        self.link: BrokerLink | None = None

    def open(self) -> None:
        try:
            context = self._given_context
            if context is None:
                context = self._context = zmq.Context(io_threads=1)
            socket = context.socket(zmq.PUSH)
            socket.setsockopt(zmq.SNDHWM, self.hwm)
            socket.setsockopt(zmq.RECONNECT_IVL_MAX, 1000)
            socket.setsockopt(zmq.LINGER, int(self.linger * 1000))
            socket.copy_threshold = 0  # a tracked frame zero-copy (a smaller one would be copied, untracked)
            if self.curve is not None:
                self.curve.apply(socket)
            self.link = BrokerLink(socket, self.endpoint, self._waiting)
            socket.connect(self.endpoint)
            self._socket = socket
        except Exception as error:  # a bad host string, no file descriptors left...
            log.error(
                "zibrato: cannot connect to %s (%s); measurements will be dropped and counted", self.endpoint, error
            )

    def send(self, frame: bytes, last: bool = True) -> bool:
        if self._socket is None:
            return False
        self._forget_written()
        size = len(frame)
        if self.held_bytes + size > self.max_bytes:
            if self._untracked and not self._held:  # nothing in flight would ever vouch for them
                self._vouch()
            self._report_failure(f"{self.held_bytes:,} bytes already wait for the broker")
            return False
        track = (last and self.flushing) or self._untracked + size >= self._track_every
        try:
            tracker = self._send_tracked(frame) if track else self._socket.send(frame, zmq.NOBLOCK)
        except zmq.ZMQError as error:
            self._report_failure("buffer full, broker unreachable" if isinstance(error, zmq.Again) else str(error))
            return False
        self.held_bytes += size
        self._untracked += size
        if tracker is not None:
            self._held.append((tracker, self._untracked, time.monotonic()))
            self._untracked = 0
        if last and not self._last_level:
            self._last_level = frame[: frame.find(protocol.LEVEL_TERMINATOR)]
        if self._failing:
            self._failing = False
            log.warning("zibrato: sending to %s again", self.endpoint)
        return True

    def _send_tracked(self, frame: bytes) -> zmq.MessageTracker | None:
        try:
            return self._socket.send(frame, zmq.NOBLOCK, copy=False, track=True)  # type: ignore[union-attr]
        except RuntimeError:  # pyzmq's collector has stopped (interpreter exit): send untracked
            self._socket.send(frame, zmq.NOBLOCK)  # type: ignore[union-attr]
            return None

    def _vouch(self) -> None:
        """Send a tracked marker (a message with no records) behind the untracked frames."""
        level = self._last_level
        if self._socket is None or not level:
            return
        try:
            tracker = self._send_tracked(protocol.encode(level.decode(), time.time(), ()))
        except (zmq.ZMQError, ValueError):  # ZeroMQ full: the broker is away, nothing to wait for
            return
        if tracker is not None:
            self._held.append((tracker, self._untracked, time.monotonic()))
            self._untracked = 0

    def settle(self, timeout: float) -> bool:
        """Wait until ZeroMQ has written every frame, unless it has stopped writing (broker away)."""
        deadline = time.monotonic() + timeout
        self._forget_written()
        if self._untracked and not self._held:  # sent by drains nobody waited for
            self._vouch()
        while True:
            self._forget_written()
            if not self._held:
                return not self._untracked  # untracked bytes (a last frame refused): cannot tell
            now = time.monotonic()
            if now >= deadline or now - self._held[-1][2] > SETTLE_WHEN_STALLED:
                return False
            time.sleep(0.0005)

    def tick(self) -> None:
        if self.link is not None:
            self.link.check()

    def _waiting(self) -> str:
        return f"{self.held_bytes:,} bytes wait in ZeroMQ (at most {self.max_bytes:,}; then dropped and counted)"

    def close(self, linger: float) -> None:
        if self.link is not None:
            self.link.close()
        if self._socket is not None:
            self._socket.close(linger=int(linger * 1000))
            self._socket = None
        if self._context is not None:
            self._context.term()  # waits up to the linger for delivery
            self._context = None
        self._held.clear()
        self.held_bytes = self._untracked = 0
        self._last_level = b""

    def fork_child(self) -> ZmqTransport:
        """A context made before fork is unusable in the child: a fresh transport of its own."""
        return ZmqTransport(self.endpoint, self.hwm, self.linger, self.max_bytes, curve=self.curve)

    def _forget_written(self) -> None:
        held = self._held
        while held and held[0][0].done:
            self.held_bytes -= held.popleft()[1]

    def _report_failure(self, reason: str) -> None:
        """Log the start of a failure once, not every message (logs must not flood)."""
        if not self._failing:
            self._failing = True
            log.warning(
                "zibrato: cannot queue measurements for %s (%s); dropping and counting them", self.endpoint, reason
            )


class Publisher:
    """Groups, splits, encodes and sends; counts every measurement as sent or dropped."""

    def __init__(
        self, transport: Transport, tally: Tally, batch: int, max_message_size: int, shards: bool = False
    ) -> None:
        self.transport, self.tally = transport, tally
        self.batch, self.max_message_size = batch, max_message_size
        #: put each series' shard in the frame (protocol 1.2), for levels spread over N workers
        self.shards = shards

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
        now = time.time()
        if not self.shards and self._publish_in_one_message(grouped, now):
            return
        batches: list[tuple[str, int | None, list[Record], int]]
        if self.shards:  # one message per (level, shard)
            batches = [
                (level, shard, records, size)
                for (level, shard), records, size in messages(_by_shard(grouped), self.batch)
            ]
        else:
            batches = [(level, None, records, size) for level, records, size in messages(grouped, self.batch)]
        frames = [
            framed
            for level, shard, records, size in batches
            for framed in self._encode(level, now, records, size, shard)
        ]
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
        self, level: str, now: float, records: Sequence[Record], size: int, shard: int | None = None
    ) -> Iterator[tuple[bytes, int]]:
        """(frame, measurements) for one message; split one the broker would refuse as too large."""
        tally = self.tally
        try:
            frame = protocol.encode(level, now, records, shard)
        except Exception as error:  # pragma: no cover - values are validated when recorded
            tally.dropped += size
            log.error("zibrato: cannot encode %d measurements: %s; dropped and counted", size, error)
            return
        if len(frame) > self.max_message_size:
            halves = split(records)
            if halves is None:
                tally.dropped += size
                log.error(
                    "zibrato: one measurement of %r is %d bytes encoded, over the %d-byte "
                    "message limit; dropped and counted",
                    records[0][1],
                    len(frame),
                    self.max_message_size,
                )
                return
            for half in halves:
                yield from self._encode(level, now, half, sum(len(record[2]) for record in half), shard)
            return
        yield frame, size


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
    if unit is not None:
        return (type_, name, values, source, tags, weight, unit)
    if weight is not None:
        return (type_, name, values, source, tags, weight)
    return (type_, name, values, source, tags)


def messages(grouped: Grouped, batch: int) -> Iterator[tuple[Any, list[Record], int]]:
    """Yield (level, records, measurement count) per message, at most ``batch`` values each.

    The level is the series' first field: a string, or (level, shard) from :func:`_by_shard`.
    """
    by_level: dict[Any, list[tuple[tuple[Any, ...], list[Any]]]] = {}
    for series, values in grouped.items():
        by_level.setdefault(series[0], []).append((series, values))
    for level, pairs in by_level.items():
        chunk: list[Record] = []
        size = 0
        for series, values in pairs:
            for start in range(0, len(values), batch):
                part = values[start : start + batch] if len(values) > batch else values
                if size + len(part) > batch and chunk:
                    yield level, chunk, size
                    chunk, size = [], 0
                chunk.append(record_of(series, part))
                size += len(part)
        if chunk:
            yield level, chunk, size


def split(records: Sequence[Record]) -> tuple[Sequence[Record], Sequence[Record]] | None:
    """Two halves of a message's records (or of its one record's values); None if one value."""
    if len(records) > 1:
        middle = len(records) // 2
        return records[:middle], records[middle:]
    record = records[0]
    values = record[2]
    if len(values) < 2:
        return None
    middle = len(values) // 2
    return ((*record[:2], values[:middle], *record[3:]),), ((*record[:2], values[middle:], *record[3:]),)


#: the longest a measurement waits in the client before a drain hands it to ZeroMQ, at low rates (seconds;
#: the client's ``interval`` when that is longer). A worker's flush is 1 s or more, flush() drains at once.
MAX_DELAY = 1.0
#: the measurements a drain aims to carry: its fixed cost (a few hundred microseconds) is then a few
#: tens of nanoseconds each. At lower rates the sender drains less often, up to MAX_DELAY (see Sender)
DRAIN_BATCH = 4096
_monotonic = time.monotonic


class Sender(threading.Thread):
    """Drains a buffer into a publisher; owns the transport.

    It knows the buffer, the publisher and the transport it is given, and
    nothing of the client that made them, but for one hook: ``idle``.

    **Its cadence follows the rate.** A drain has a fixed cost (a thread
    wake-up, a message, ZeroMQ's I/O thread woken for it) of a few hundred
    microseconds, whatever it carries: drained every ``interval`` at 100
    measurements a second, that is most of what a measurement costs. So
    after each drain the sender sleeps long enough for about
    ``DRAIN_BATCH`` measurements to arrive at the rate it just saw, no less
    than ``interval`` (the cadence under load) and no more than
    :attr:`max_delay` (``MAX_DELAY``, 1 s, or ``interval`` if longer): the
    bound on how long a measurement waits in the client before it is handed
    to ZeroMQ. A series' measurements wait in its lane meanwhile, under the
    buffer's one bound; a burst that fills the buffer faster than the rate
    seen wakes the sender at once (the buffer's ``on_filling``, from the
    garbage collector's callback, see :mod:`zibrato.buffer`), and
    ``flush()``, ``close()``, fork and exit drain at once as before.

    **Idle, it sleeps.** After ``IDLE_AFTER`` drains in a row found nothing,
    it calls ``idle``: the client then records through a function that
    wakes the sender (:meth:`wake`) with the next measurement and puts the
    plain append back. Its waits double from its last cadence up to
    ``IDLE_MAX_SLEEP`` (a last resort for an append that raced the switch:
    the first wait, one cadence, delivers it within :attr:`max_delay`), and
    the first measurement wakes it at once.
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
        #: the longest a measurement waits before a drain hands it to ZeroMQ, at any rate
        self.max_delay = max(interval, MAX_DELAY)
        self._idle_hook = idle
        #: the longest an idle sender sleeps without being woken (doubling from ``interval``)
        self.idle_max_sleep = max(interval, IDLE_MAX_SLEEP)
        #: times the sender woke up (a test's seam: an idle sender wakes a few times, then sleeps)
        self.wakes = 0
        #: drains made (a test's seam: at a steady low rate, about one per ``max_delay``)
        self.drains = 0
        #: True while the client records through the waking function (see :meth:`wake`)
        self.idle = False
        # No lock that an application thread takes while waking the sender: a SIGTERM
        # handler (client._close_all_then_die) may run on top of any line of close() or
        # flush() and wake it again. A threading.Event's lock, held by the interrupted
        # Event.set(), deadlocked it. A SimpleQueue's put() is one C call (reentrant: the
        # collector's callback may put too); the flush waiters are locks that only the
        # sender releases.
        self._wake: queue.SimpleQueue[bool] = queue.SimpleQueue()
        self._waiters: deque[threading.Lock] = deque()  # one held lock per flush() waiting for a drain
        self._stopping = False
        buffer.on_filling = self.wake  # a burst past a drain's worth wakes this sender before its time

    def wake(self) -> None:
        """Wake the sender now (the first measurement after an idle spell, a burst): one C-level put."""
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

    def cadence(self, found: int, elapsed: float) -> float:
        """How long to sleep after a drain that found ``found`` measurements ``elapsed`` s after the last.

        Long enough for about ``DRAIN_BATCH`` more at that rate, within
        ``interval`` .. :attr:`max_delay`.
        """
        if found <= 0:
            return self.interval
        return min(self.max_delay, max(self.interval, DRAIN_BATCH * elapsed / found))

    def run(self) -> None:
        _leave_signals_to_the_main_thread()
        self.transport.open()
        empty_drains = 0
        sleep = self.interval
        last = _monotonic()
        try:
            while True:
                woken = self._wait(sleep)
                self.wakes += 1
                now = _monotonic()
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
                    self.drains += 1
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
                    if found:
                        sleep = self.cadence(found, now - last)
                    if empty_drains >= IDLE_AFTER:
                        self._go_idle()  # its first wait is one cadence: for an append that raced
                else:  # back off, unless flush() woke it (more may follow)
                    sleep = self.interval if woken else min(sleep * 2, self.idle_max_sleep)
                last = now
        finally:
            self.transport.close(self.linger)

    def _wait(self, timeout: float) -> bool:
        """Sleep up to ``timeout``; True when woken (a measurement after idling, a burst, flush, stop)."""
        try:
            self._wake.get(timeout=timeout)
        except queue.Empty:
            return False
        wake = self._wake
        while not wake.empty():  # several wake-ups meanwhile: one drain takes what they announced
            wake.get_nowait()
        return True

    def _go_idle(self) -> None:
        """Ask the client to wake this sender with its next measurement."""
        hook = self._idle_hook
        if hook is not None:
            self.idle = True  # before the hook: a measurement right after it sets it back
            if not hook():  # the client is not on its plain append (closed, diverted...)
                self.idle = False


#: Asynchronous signals an application may handle (or die of) in its main thread.
_APPLICATION_SIGNALS = frozenset(
    getattr(signal, name)
    for name in ("SIGTERM", "SIGINT", "SIGHUP", "SIGQUIT", "SIGUSR1", "SIGUSR2", "SIGALRM", "SIGCHLD", "SIGWINCH")
    if hasattr(signal, name)
)


def _leave_signals_to_the_main_thread() -> None:
    """Block the application's signals in the sender thread.

    The kernel delivers a process-directed signal to any thread that does not
    block it. Landing on the sender, a SIGTERM would only set CPython's flag,
    and a main thread asleep in ``time.sleep(60)`` would run its handler a
    minute late (``Pool.terminate()`` then hangs on a busy child). Blocked
    here, every such signal goes to a thread that can act on it.
    """
    try:
        signal.pthread_sigmask(signal.SIG_BLOCK, _APPLICATION_SIGNALS)
    except (AttributeError, OSError, ValueError):  # pragma: no cover - no pthread_sigmask (Windows)
        pass
