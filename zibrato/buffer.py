"""The bounded queues between the application's threads and the sender.

A measurement waits in one of two places:

* a :class:`Lane`: the queue of one series, for the instruments (each
  ``@z.time_me``, ``@z.count_me``...) and the cached series of ``z.count``,
  ``z.gauge`` and ``z.timing``. Recording is one C-level ``deque.append`` of
  a one-value tuple to the series' own queue, so the sender takes each
  series' values as they are, without hashing and grouping each
  measurement;
* the shared queue of ``(series, value)`` items (:attr:`Buffer.items`): every
  other call (histograms, sets, sampled or outcome-tagged instruments, tags
  given as a mapping), and every lane's measurements while the buffer is
  guarded (below).

One bound covers them all: at most ``capacity`` measurements wait, in every
lane and the shared queue together, and each one refused is counted. The
plain appends (:attr:`Buffer.fast`, :attr:`Lane.fast`) cannot count, so they
are used only while the whole buffer is at most half full; past that, every
lane and the shared path record through a small guarded function (about 40
ns more) that appends to the shared queue while there is room and otherwise
drops and counts (:meth:`Buffer.overflow`).

The switch to guarded is made at once by the garbage collector's callback
(:func:`_guard_buffers`): CPython collects its youngest generation after a
few hundred allocations of container objects (plus what its free lists
hold), and every queued measurement is one (a tuple), so the queues cannot
grow from half full to full between two collections. The callback does not
count every lane each time: it adds the most one collection can have let
through, and counts for real only when that could reach half full. The
sender checks too, at every wake, and switches back to fast once it has
drained the queues.

The same callback wakes the sender early (:attr:`Buffer.on_filling`) once
the queues hold ``WAKE_AT`` measurements (at most a quarter of the
capacity): at a low rate the sender sleeps up to a second between drains
(see :class:`zibrato.sender.Sender`), and a burst must not wait for it.
"""

from __future__ import annotations

import functools
import gc
import itertools
import logging
import operator
import threading
import time
import weakref
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from typing import Any

__all__ = [
    "Buffer",
    "Lane",
    "SharedLane",
    "Tally",
    "Item",
    "Recorder",
    "MAX_CAPACITY",
    "SLACK",
    "FAST_FROM",
    "MAX_LANES",
    "WAKE_AT",
    "MANY",
]

log = logging.getLogger("zibrato.client")

#: what a client records: (series, value), the series a zibrato.client.Series key
Item = tuple[Any, Any]
#: a recording path: the buffer's append, or one of the client's
Recorder = Callable[[Item], None]

#: the largest queue a client may ask for
MAX_CAPACITY = 1 << 30
#: room past a queue's capacity for appends already under way when it switched to guarded
SLACK = 1024
#: queues smaller than this are always guarded (see Buffer)
FAST_FROM = 20_000
#: series with a lane of their own, per client; more series share the (grouped) shared queue
MAX_LANES = 4096
#: from this many values a lane is taken by one C-level pass (``starmap`` over ``popleft``), below by plain calls
MANY = 32
#: measurements waiting that wake the sender before its time (a burst; at most a quarter of the capacity)
WAKE_AT = 16_384
#: the longest the collector's callback goes without counting every lane (seconds): the GIL lets
#: all threads together append a few thousand measurements a millisecond, and half the queue is
#: at least 10,000 (FAST_FROM / 2)
EXACT_EVERY = 0.002
#: what the tuple free lists (one-value and two-value tuples) can hand out between two collections
#: without the collector counting it
_FREE_LIST = 2 * 2000

_first = operator.itemgetter(0)
_starmap, _repeat, _compress = itertools.starmap, itertools.repeat, itertools.compress
_monotonic = time.monotonic
_exhaust: Callable[[Iterable[Any]], None] = deque(maxlen=0).extend  # runs an iterator to its end, in C


class Tally:
    """Measurements sent and dropped. Written by one thread at a time (the sender's)."""

    __slots__ = ("sent", "dropped")

    def __init__(self) -> None:
        self.sent = 0
        self.dropped = 0


class Lane:
    """The queue of one series. :attr:`record` is what the hot path calls with a ``(value,)`` tuple.

    :attr:`record` is one of three recorders, chosen by the buffer for every
    lane at once (:meth:`Buffer.route`): :attr:`fast` (the deque's append),
    :attr:`guarded` (into the shared queue, bounded and counted) or
    :attr:`forward` (the client's own recording path: before the sender
    starts, after close(), while diverted to memory, after the sender went idle).
    """

    __slots__ = ("series", "items", "record", "fast", "guarded", "forward", "__weakref__")

    def __init__(self, series: Any, buffer: Buffer) -> None:
        self.series = series
        self.items: deque[tuple[Any]] = deque(maxlen=buffer.capacity + SLACK)
        self.guarded: Callable[[tuple[Any]], None] = functools.partial(buffer.spill, self)
        self.fast: Callable[[tuple[Any]], None] = self.items.append if buffer.capacity >= FAST_FROM else self.guarded
        self.forward: Callable[[tuple[Any]], None] = functools.partial(_forward, series, buffer)
        self.record = self.forward

    def take(self) -> list[Any]:
        """The values waiting now, oldest first (appends may race; so may close()'s discard)."""
        items = self.items
        popped: list[tuple[Any]] = []
        try:
            popped.extend(_starmap(items.popleft, _repeat((), len(items))))
        except IndexError:  # emptied by another taker (close() after a sender that hung)
            pass
        return list(map(_first, popped))


class SharedLane:
    """What a series gets once ``MAX_LANES`` series have lanes: the same ``record``, into the shared queue."""

    __slots__ = ("series", "record")

    def __init__(self, series: Any, buffer: Buffer) -> None:
        self.series = series
        self.record: Callable[[tuple[Any]], None] = functools.partial(_forward, series, buffer)


def _forward(series: Any, buffer: Buffer, item: tuple[Any]) -> None:
    buffer.forward_to((series, item[0]))


class Buffer:
    """Every queue of one client: its lanes and the shared queue, under one bound (module doc).

    ``install`` is the client's: told which of :attr:`fast` and
    :attr:`guarded` to record through. The client tells the buffer which
    recorder it uses (:meth:`route`), and every lane follows.
    """

    def __init__(self, capacity: int, install: Callable[[Recorder], None]) -> None:
        self.capacity = capacity
        self.soft = capacity // 2
        # SLACK past the capacity: room for the appends of threads that fetched the fast
        # recorder just before the switch, so that none of them can push an item out.
        self.items: deque[Item] = deque(maxlen=capacity + SLACK)
        self._reset_count()
        #: room in the shared queue while guarded: the capacity less what the lanes hold
        self.room = capacity
        self.guarded = self._guarded_recorder()
        # A small queue is always guarded: half of it is not a safe margin over a collector's period.
        self.fast = self.items.append if capacity >= FAST_FROM else self.guarded
        self.guarding = False
        self.install = install
        #: the client's recording path, for lanes while it is not one of the buffer's own
        self.forward_to: Recorder = self.guarded
        self.lanes: list[Lane] = []
        self._lane_items: list[deque[tuple[Any]]] = []  # each lane's deque, in the order of lanes
        self._lane_of: dict[Any, Lane] = {}
        self._lane_mode = "forward"
        self._lane_lock = threading.Lock()
        self._counted = 0  # what the queues held when last counted
        self._unseen = 0  # the most that can have arrived since (collections seen times their reach)
        self._counted_at = 0.0  # when (monotonic seconds)
        #: what the queues hold when the collector's callback calls :attr:`on_filling`
        self.wake_at = max(1, min(self.soft // 2, WAKE_AT))
        #: the sender's wake-up (set by the sender), called once per drain when a burst fills the queues
        self.on_filling: Callable[[], None] | None = None
        self._filling_told = False  # on_filling called since the sender's last drain
        self._unguarded_overflow_reported = False
        _buffers.add(self)

    def _guarded_recorder(self) -> Recorder:
        def guarded(
            item: Item,
            _len: Callable[[deque[Item]], int] = len,
            _items: deque[Item] = self.items,
            _append: Recorder = self.items.append,
            _buffer: Buffer = self,
        ) -> None:
            if _len(_items) < _buffer.room:
                _append(item)
            else:  # full: dropped, and counted
                _buffer.overflow()

        return guarded

    def spill(self, lane: Lane, item: tuple[Any]) -> None:
        """A lane's guarded recorder: into the shared queue while there is room, else counted."""
        if len(self.items) < self.room:
            self.items.append((lane, item))
        else:
            self.overflow()

    def _reset_count(self) -> None:
        self._refusals = itertools.count()
        #: count one refused item: one C-level next(), atomic without a lock
        self.overflow = functools.partial(next, self._refusals)

    @property
    def overflowed(self) -> int:
        """Items refused so far (``count``'s repr is its next value: read without consuming it)."""
        return int(repr(self._refusals)[len("count(") : -1])

    def __len__(self) -> int:
        return len(self.items) + sum(map(len, self._lane_items))

    # --- lanes ---------------------------------------------------------------

    def lane(self, series: Any) -> Lane | None:
        """The lane of ``series`` (made on first use); None once ``MAX_LANES`` series have one."""
        lane = self._lane_of.get(series)
        if lane is not None or len(self.lanes) >= MAX_LANES:
            return lane
        with self._lane_lock:  # once per series: two threads making the same lane make one
            lane = self._lane_of.get(series)
            if lane is None:
                if len(self.lanes) >= MAX_LANES:
                    return None
                lane = Lane(series, self)
                self._lane_items.append(lane.items)  # before the lane: the sender zips them shortest-first
                self.lanes.append(lane)
                self._lane_of[series] = lane  # found from here on: it forwards until its mode is set below
        while True:  # a route() meanwhile has either seen this lane or changed the mode we read
            mode = self._lane_mode
            lane.record = getattr(lane, mode)
            if self._lane_mode == mode:
                return lane

    def lane_of(self, series: Any) -> Lane | None:
        """The lane ``series`` has, if any (made by :meth:`lane`)."""
        try:
            return self._lane_of.get(series)
        except TypeError:  # pragma: no cover - series are hashable tuples
            return None

    def lane_or_shared(self, series: Any) -> Lane | SharedLane:
        """The lane of ``series``, or its way into the shared queue when no lane is left."""
        return self.lane(series) or SharedLane(series, self)

    def route(self, recorder: Recorder) -> None:
        """The client records through ``recorder`` now: every lane follows (fast, guarded or forward)."""
        if recorder is self.fast:
            mode = "fast"
        elif recorder is self.guarded:
            mode = "guarded"
        else:
            mode = "forward"
        if mode != self._lane_mode:
            self._lane_mode = mode
            # In C (map and setattr run no bytecode): no other thread runs halfway through,
            # so no lane records the old way for long after the switch (SLACK covers the rest).
            lanes = list(self.lanes)
            _exhaust(map(setattr, lanes, _repeat("record"), map(operator.attrgetter(mode), lanes)))

    def take_lanes(self) -> list[tuple[Any, list[Any]]]:
        """(series, values) of every lane that has values now, each in recorded order.

        Once per lane per drain, so its cost per lane matters as much as per
        value: at 1,000 calls a second over 1,000 series most lanes hold one
        value. A lane of one or a few values is popped by plain calls (the
        C-level ``starmap`` over ``popleft`` costs more to build than it
        saves below ``MANY`` values), and the pairs are a list: a dict keyed
        by series would hash each series tuple again, every drain.
        """
        taken: list[tuple[Any, list[Any]]] = []
        append = taken.append
        for lane in _compress(self.lanes, map(len, self._lane_items)):
            items = lane.items
            count = len(items)
            values: list[Any] = []
            try:  # the sender is a lane's one taker (close() takes only once the sender has stopped)
                if count == 1:
                    values.append(items.popleft()[0])
                elif count < MANY:
                    pop, add = items.popleft, values.append
                    for _ in range(count):
                        add(pop()[0])
                else:
                    values = list(map(_first, _starmap(items.popleft, _repeat((), count))))
            except IndexError:  # pragma: no cover - a second taker after all: the slow, careful way
                values.extend(lane.take())
            if values:
                append((lane.series, values))
        return taken

    # --- the bound -------------------------------------------------------------

    def guard(self) -> None:
        """Record through :attr:`guarded` from now on (the queues are more than half full)."""
        if not self.guarding:
            self.room = self.capacity - sum(map(len, self._lane_items))  # before the switch
            self.guarding = True
            self.install(self.guarded)

    def on_collection(self) -> None:
        """The collector's callback: guard when the queues may be half full.

        It counts every lane when what can have arrived since the last count
        (what the collector counted, more than its threshold when other threads
        allocated while a collection's callbacks ran, and what the free lists
        hand out uncounted) could reach half full, and at least every
        ``EXACT_EVERY`` seconds: allocations made while another thread runs a
        collection's callbacks are not counted at all (the collection resets
        the count), so the estimate alone could fall behind. Past
        :attr:`wake_at`, it wakes the sender (once per drain).
        """
        self._unseen += max(gc.get_count()[0], gc.get_threshold()[0]) + _FREE_LIST
        now = _monotonic()
        if self._counted + self._unseen >= self.wake_at or now - self._counted_at >= EXACT_EVERY:
            self._counted, self._unseen, self._counted_at = len(self), 0, now
            if self._counted >= self.wake_at and not self._filling_told:
                hook = self.on_filling
                if hook is not None:
                    self._filling_told = True
                    hook()
            if self._counted >= self.soft:
                self.guard()

    def retire(self) -> None:
        """The client closed: nothing more is recorded here, the collector's callback can forget it."""
        _buffers.discard(self)

    def check(self) -> int:
        """The sender's look before each drain: guard a filling queue; report an unguarded overflow.

        It installs the guarded recorder again even when the flag says so
        already: whatever race came before, a full-ish queue is guarded from
        here. Returns how many measurements wait.
        """
        length = len(self)
        if length >= self.soft:
            if (
                length >= self.capacity + SLACK
                and not self.guarding
                and self.fast is not self.guarded
                and not self._unguarded_overflow_reported
            ):
                self._unguarded_overflow_reported = True
                log.warning(
                    "zibrato: the client's queue filled up between two garbage collections "
                    "(is the collector disabled?); measurements it discarded are not counted"
                )
            if not self.guarding:
                self.room = self.capacity - sum(map(len, self._lane_items))
            self.guarding = True
            self.install(self.guarded)
        return length

    def relax(self) -> None:
        """After a drain: count again, and go back to :attr:`fast` once the queues are nearly empty."""
        length = len(self)
        self._counted, self._unseen = length, 0
        self._filling_told = False
        if self.guarding:
            self.room = self.capacity - sum(map(len, self._lane_items))
            if length < self.soft // 4:
                self.guarding = False
                self.install(self.fast)
                if self.guarding:  # the collector's callback guarded meanwhile (another thread)
                    self.install(self.guarded)

    def take(self) -> Iterator[Item]:
        """The shared queue's items present now, oldest first, removed one by one (appends may race)."""
        pop = self.items.popleft
        for _ in range(len(self.items)):
            try:
                yield pop()
            except IndexError:  # emptied by another taker (close() after a sender that hung)
                return

    def discard(self) -> int:
        """Remove everything waiting; return how many (to be counted as dropped)."""
        return sum(1 for _ in self.take()) + sum(len(values) for _, values in self.take_lanes())

    def reset(self) -> None:
        """After fork: the child forgets the parent's items (the parent sends them)."""
        self._lane_lock = threading.Lock()  # another thread of the parent may have held it
        self.items.clear()
        for items in self._lane_items:
            items.clear()
        self.guarding = False
        self.room = self.capacity
        self._counted = self._unseen = 0
        self._filling_told = False
        self.on_filling = None  # the parent's sender: the child's own sets it
        self._reset_count()


_buffers: weakref.WeakSet[Buffer] = weakref.WeakSet()


def _guard_buffers(phase: str, info: dict[str, int]) -> None:
    """gc callback: guard every queue that may be more than half full (runs in the thread that allocated)."""
    if phase == "start" and _buffers:
        for buffer in list(_buffers):
            if not buffer.guarding:
                buffer.on_collection()


gc.callbacks.append(_guard_buffers)
