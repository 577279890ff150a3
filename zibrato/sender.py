"""What happens to a measurement after the application recorded it.

Three small parts, each with one job (the pystatsd model: one publisher owns
the protocol, each transport only moves bytes):

* :class:`Buffer`, the bounded queue between the application's threads and
  the sender. Recording is one C-level ``deque.insert`` that raises
  ``IndexError`` when the queue is full: no lock, no Python call, and a
  hard bound (the caller drops and counts).
* :class:`Publisher`, which groups values per series, splits them into
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

import logging
import threading
import time
from collections import deque
from collections.abc import Iterable, Iterator

import zmq

from . import protocol
from .curve import ClientKeys

__all__ = ["Buffer", "Tally", "Transport", "ZmqTransport", "Publisher", "Sender", "END"]

log = logging.getLogger("zibrato.client")

#: the index recorders insert at: past the end of any buffer, so ``deque.insert`` appends
#: (below 2**30: one machine digit, the fastest integer for ``insert`` to read)
END = (1 << 30) - 1
#: how long flush() waits for ZeroMQ to write out what it took, when ZeroMQ is writing at all
SETTLE_WHEN_STALLED = 0.1


class Tally:
    """Measurements sent and dropped. Written by one thread at a time (the sender's)."""

    __slots__ = ("sent", "dropped")

    def __init__(self) -> None:
        self.sent = 0
        self.dropped = 0


class Buffer:
    """The bounded queue of ``(series, value)`` items waiting for the sender.

    ``insert(END, item)`` is the recording path: it appends, or raises
    ``IndexError`` when ``capacity`` items wait (a ``deque`` with ``maxlen``
    refuses ``insert`` rather than discarding its oldest item). The caller
    then calls :meth:`overflow`, which counts under a lock: only an
    overloaded process pays for it.
    """

    def __init__(self, capacity: int) -> None:
        self.capacity = capacity
        self.items: deque = deque(maxlen=capacity)
        self.insert = self.items.insert
        self.overflowed = 0
        self._lock = threading.Lock()

    def overflow(self) -> None:
        with self._lock:
            self.overflowed += 1

    def __len__(self) -> int:
        return len(self.items)

    def take(self) -> Iterator[tuple]:
        """The items present now, oldest first, removed one by one (appends may race)."""
        pop = self.items.popleft
        for _ in range(len(self.items)):
            try:
                yield pop()
            except IndexError:  # emptied by another taker (close() after a sender that hung)
                return

    def discard(self) -> int:
        """Remove everything waiting; return how many (to be counted as dropped)."""
        return sum(1 for _ in self.take())

    def reset(self) -> None:
        """After fork: the child forgets the parent's items (the parent sends them)."""
        self.items.clear()
        self.overflowed = 0
        self._lock = threading.Lock()


class Transport:
    """Where encoded messages go. A subclass implements :meth:`send`; the rest is optional.

    ``synchronous = True`` means publishing in the recording thread is fine
    (an in-memory transport): the client then starts no sender thread.
    """

    synchronous = False

    def open(self) -> None:
        """Called once, in the thread that will send."""

    def send(self, frame: bytes) -> bool:
        """Take one message, without blocking; False if it cannot (it is then dropped and counted)."""
        raise NotImplementedError

    def settle(self, timeout: float) -> bool:
        """Wait up to ``timeout`` for what was sent to leave the process; True when it has."""
        return True

    def close(self, linger: float) -> None:
        """Release what :meth:`open` made, waiting up to ``linger`` seconds for delivery."""

    def fork_child(self) -> "Transport":
        """The transport a forked child uses (sockets cannot cross a fork: a new one)."""
        return self


class ZmqTransport(Transport):
    """A ZeroMQ PUSH socket that never blocks, with a bound in bytes on what ZeroMQ holds.

    Every frame is sent zero-copy with a tracker, which ZeroMQ marks done when
    it has written the frame to the connection. The frames not yet done are
    what ZeroMQ holds for an absent broker: at most ``max_bytes`` bytes (and
    ``hwm`` messages); a frame past that is refused, and dropped and counted
    by the publisher. The trackers also let :meth:`settle` wait until what
    was sent has actually left the process (``flush()`` before ``os._exit``).
    """

    def __init__(self, endpoint: str, hwm: int, linger: float, max_bytes: int,
                 context: zmq.Context | None = None, curve: ClientKeys | None = None) -> None:
        self.endpoint, self.hwm, self.linger, self.max_bytes = endpoint, hwm, linger, max_bytes
        #: CURVE keys (zibrato.curve): the broker is then a CURVE server that checks this client's key
        self.curve = curve
        self._given_context = context
        self._context: zmq.Context | None = None
        self._socket: zmq.Socket | None = None
        self._held: deque = deque()  # (tracker, bytes, sent at) of frames ZeroMQ has not written
        #: bytes of the frames ZeroMQ holds (not yet written to the broker's connection)
        self.held_bytes = 0
        self._failing = False

    def open(self) -> None:
        try:
            context = self._given_context
            if context is None:
                context = self._context = zmq.Context(io_threads=1)
            socket = context.socket(zmq.PUSH)
            socket.setsockopt(zmq.SNDHWM, self.hwm)
            socket.setsockopt(zmq.RECONNECT_IVL_MAX, 1000)
            socket.setsockopt(zmq.LINGER, int(self.linger * 1000))
            socket.copy_threshold = 0  # every frame zero-copy, so that every frame is tracked
            if self.curve is not None:
                self.curve.apply(socket)
            socket.connect(self.endpoint)
            self._socket = socket
        except Exception as error:  # a bad host string, no file descriptors left...
            log.error("zibrato: cannot connect to %s (%s); measurements will be dropped and counted",
                      self.endpoint, error)

    def send(self, frame: bytes) -> bool:
        if self._socket is None:
            return False
        self._forget_written()
        if self.held_bytes + len(frame) > self.max_bytes:
            self._report_failure(f"{self.held_bytes:,} bytes already wait for the broker")
            return False
        try:
            tracker = self._socket.send(frame, zmq.NOBLOCK, copy=False, track=True)
        except zmq.ZMQError as error:
            self._report_failure("buffer full, broker unreachable" if isinstance(error, zmq.Again)
                                 else str(error))
            return False
        self._held.append((tracker, len(frame), time.monotonic()))
        self.held_bytes += len(frame)
        if self._failing:
            self._failing = False
            log.warning("zibrato: sending to %s again", self.endpoint)
        return True

    def settle(self, timeout: float) -> bool:
        """Wait until ZeroMQ has written every frame, unless it has stopped writing (broker away)."""
        deadline = time.monotonic() + timeout
        while True:
            self._forget_written()
            if not self._held:
                return True
            now = time.monotonic()
            if now >= deadline or now - self._held[0][2] > SETTLE_WHEN_STALLED:
                return False
            time.sleep(0.0005)

    def close(self, linger: float) -> None:
        if self._socket is not None:
            self._socket.close(linger=int(linger * 1000))
            self._socket = None
        if self._context is not None:
            self._context.term()  # waits up to the linger for delivery
            self._context = None
        self._held.clear()
        self.held_bytes = 0

    def fork_child(self) -> "ZmqTransport":
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
            log.warning("zibrato: cannot queue measurements for %s (%s); dropping and counting them",
                        self.endpoint, reason)


class Publisher:
    """Groups, splits, encodes and sends; counts every measurement as sent or dropped."""

    def __init__(self, transport: Transport, tally: Tally, batch: int, max_message_size: int,
                 shards: bool = False) -> None:
        self.transport, self.tally = transport, tally
        self.batch, self.max_message_size = batch, max_message_size
        #: put each series' shard in the frame (protocol 1.2), for levels spread over N workers
        self.shards = shards

    def publish(self, items: Iterable[tuple]) -> None:
        """Send ``(series, value)`` items: one record per series, one message per level."""
        grouped: dict[tuple, list] = {}
        for series, value in items:
            values = grouped.get(series)
            if values is None:
                grouped[series] = [value]
            else:
                values.append(value)
        self._publish_grouped(grouped)

    def drain(self, buffer: Buffer) -> None:
        """:meth:`publish` what waits in ``buffer`` now (the sender's loop, inlined for speed)."""
        items = buffer.items
        count = len(items)
        if not count:
            return
        pop = items.popleft
        grouped: dict[tuple, list] = {}
        try:
            for _ in range(count):
                series, value = pop()
                values = grouped.get(series)
                if values is None:
                    grouped[series] = [value]
                else:
                    values.append(value)
        except IndexError:  # emptied by close() after a sender that hung
            pass
        self._publish_grouped(grouped)

    def _publish_grouped(self, grouped: dict[tuple, list]) -> None:
        if not grouped:
            return
        now = time.time()
        if self.shards:
            for (level, shard), records, size in messages(_by_shard(grouped), self.batch):
                self._send(level, now, records, size, shard)
            return
        for level, records, size in messages(grouped, self.batch):
            self._send(level, now, records, size)

    def _send(self, level: str, now: float, records: list, size: int, shard: int | None = None) -> None:
        """Encode and send one message; split one the broker would refuse as too large."""
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
                log.error("zibrato: one measurement of %r is %d bytes encoded, over the %d-byte "
                          "message limit; dropped and counted", records[0][1], len(frame),
                          self.max_message_size)
                return
            for half in halves:
                self._send(level, now, half, sum(len(record[2]) for record in half), shard)
            return
        if self.transport.send(frame):
            tally.sent += size
        else:
            tally.dropped += size


_shard_cache: dict[tuple, int] = {}


def _by_shard(grouped: dict[tuple, list]) -> dict[tuple, list]:
    """The same groups, each series' level replaced by (level, shard): one message per shard."""
    cache = _shard_cache
    out = {}
    for series, values in grouped.items():
        shard = cache.get(series)
        if shard is None:
            if len(cache) >= 100_000:
                cache.clear()
            level, type_, name, source, tags, _weight, unit = series
            shard = cache[series] = protocol.shard_of(type_, name, source, tags, unit)
        out[((series[0], shard), *series[1:])] = values
    return out


def record_of(series: tuple, values: list) -> tuple:
    """The wire record of a series (protocol 1.1: weight and unit appended only when needed)."""
    _level, type_, name, source, tags, weight, unit = series
    if unit is not None:
        return (type_, name, values, source, tags, weight, unit)
    if weight is not None:
        return (type_, name, values, source, tags, weight)
    return (type_, name, values, source, tags)


def messages(grouped: dict[tuple, list], batch: int) -> Iterator[tuple[str, list, int]]:
    """Yield (level, records, measurement count) per message, at most ``batch`` values each."""
    by_level: dict[str, list] = {}
    for series, values in grouped.items():
        by_level.setdefault(series[0], []).append((series, values))
    for level, pairs in by_level.items():
        chunk: list = []
        size = 0
        for series, values in pairs:
            for start in range(0, len(values), batch):
                part = values[start:start + batch] if len(values) > batch else values
                if size + len(part) > batch and chunk:
                    yield level, chunk, size
                    chunk, size = [], 0
                chunk.append(record_of(series, part))
                size += len(part)
        if chunk:
            yield level, chunk, size


def split(records: list) -> tuple[list, list] | None:
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


class Sender(threading.Thread):
    """Drains a buffer into a publisher every ``interval`` seconds; owns the transport.

    It knows the buffer, the publisher and the transport it is given, and
    nothing of the client that made them.
    """

    def __init__(self, buffer: Buffer, publisher: Publisher, interval: float, linger: float) -> None:
        super().__init__(name="zibrato-sender", daemon=True)
        self.buffer, self.publisher = buffer, publisher
        self.transport = publisher.transport
        self.interval, self.linger = interval, linger
        self._wake = threading.Event()
        self._done = threading.Condition()
        self._requested = self._completed = 0
        self._stopping = False

    def drain_now(self, timeout: float) -> bool:
        """Publish everything recorded before this call; wait until ZeroMQ has written it.

        True when it was all handed to the transport within ``timeout``. The
        wait for the writing is skipped when the transport has stopped
        writing (broker away): the measurements then wait in ZeroMQ.
        """
        deadline = time.monotonic() + timeout
        with self._done:
            self._requested += 1
            wanted = self._requested
        self._wake.set()
        with self._done:
            return self._done.wait_for(lambda: self._completed >= wanted,
                                       max(0.0, deadline - time.monotonic()))

    def stop(self, timeout: float) -> None:
        self._stopping = True
        self._wake.set()
        self.join(timeout)

    def run(self) -> None:
        self.transport.open()
        try:
            while True:
                self._wake.wait(self.interval)
                self._wake.clear()
                # Read before draining: a stop requested during the drain gets one more
                # drain, for what was recorded after this one's snapshot of the queue.
                stopping = self._stopping
                with self._done:
                    wanted = self._requested
                try:
                    self.publisher.drain(self.buffer)
                    if wanted > self._completed:  # someone waits in flush(): let ZeroMQ write it out
                        self.transport.settle(SETTLE_WHEN_STALLED * 10)
                except Exception:  # pragma: no cover - a bug here must not kill the sender
                    log.exception("zibrato: sender failed to drain measurements")
                with self._done:
                    self._completed = wanted
                    self._done.notify_all()
                if stopping:
                    return
        finally:
            self.transport.close(self.linger)
