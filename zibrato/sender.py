"""What happens to a measurement after the application recorded it.

Three small parts, each with one job (the pystatsd model: one publisher owns
the protocol, each transport only moves bytes):

* :class:`~zibrato.buffer.Buffer`, the bounded queues between the
  application's threads and the sender: one per series (a lane) and one
  shared. Recording is one C-level ``deque.append`` (no lock, no Python
  call); past half full, a small function that refuses and counts what
  arrives when the queues are full, so that the bound is hard and every
  refused measurement is counted.
* :class:`~zibrato.publisher.Publisher`, which takes each lane's values as
  they are and groups the shared queue's per series, frames them
  (:mod:`zibrato.framing`: at most ``batch`` values and ``max_message_size``
  bytes a message, the one rule every producer follows) and hands each frame
  to a transport, counting what was sent and what was dropped.
* :class:`Sender` (here), the background thread that drains a buffer into a
  publisher every ``interval`` seconds and owns the transport (ZeroMQ sockets
  are not thread-safe, so they live in this one thread).

Transports (:mod:`zibrato.transport`): :class:`ZmqTransport` (a PUSH socket
that never blocks and bounds in bytes what ZeroMQ holds),
``zibrato.testing.MemoryTransport`` for tests. The names of all three parts
stay importable from here.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from collections import deque
from collections.abc import Callable

from .buffer import FAST_FROM, MAX_CAPACITY, SLACK, Buffer, Item, Lane, Recorder, Tally
from .framing import split
from .lifecycle import _leave_signals_to_the_main_thread
from .publisher import Publisher, group, messages, record_of
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


#: drains in a row that found nothing before the sender sleeps until woken (see Sender): one, so that
#: a process recording a few measurements a second wakes its sender twice per measurement, not 20 times a second
IDLE_AFTER = 1
#: the longest an idle sender sleeps without being woken, in seconds
IDLE_MAX_SLEEP = 10.0

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
