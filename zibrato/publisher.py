"""The publisher: takes a drain's measurements, groups them per series, frames, sends and counts.

It takes each lane's values as they are and groups the shared queue's per
series (:func:`group`: runs of one series in C), frames them by the rule
every producer follows (:mod:`zibrato.framing`: at most ``batch`` values and
``max_message_size`` bytes a message), encodes them (:mod:`zibrato.protocol`)
and hands each frame to a transport (:mod:`zibrato.transport`), counting
each measurement as sent or dropped. The sender thread
(:mod:`zibrato.sender`) calls it every ``interval``; a synchronous
transport (in memory) is published to in the recording thread.
"""

from __future__ import annotations

import itertools
import logging
import operator
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from typing import Any

from . import framing, protocol
from .buffer import Buffer, Item, Lane, Tally
from .framing import Record
from .transport import Transport

__all__ = ["Publisher", "Grouped", "Pairs", "group", "messages", "record_of"]

log = logging.getLogger("zibrato.client")

#: series -> its values; sharded (_by_shard), the series' level is (level, shard)
Grouped = dict[tuple[Any, ...], list[Any]]
#: (series, values) per series, each series once: what a drain publishes (a list, not hashed again)
Pairs = list[tuple[tuple[Any, ...], list[Any]]]


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
        self._publish_pairs(list(group(items if isinstance(items, list) else list(items)).items()))

    def drain(self, buffer: Buffer) -> None:
        """:meth:`publish` what waits in ``buffer`` now: each lane as it is, the shared queue grouped."""
        pairs = buffer.take_lanes()
        items = buffer.items
        count = len(items)
        if count:  # calls without a lane, or lanes spilled while guarded: merged by series
            taken: list[Item] = []
            try:
                taken.extend(_starmap(items.popleft, _repeat((), count)))
            except IndexError:  # emptied by close() after a sender that hung: keep what was popped
                pass
            grouped: Grouped = dict(pairs)
            for key, values in group(taken).items():
                if isinstance(key, Lane):  # a lane's values spilled while guarded: (value,) each
                    key, values = key.series, list(map(_first, values))
                known = grouped.get(key)
                if known is None:
                    grouped[key] = values
                else:  # recorded after what its lane held (the guard came later)
                    known.extend(values)
            pairs = list(grouped.items())
        if pairs:
            self._publish_pairs(pairs)

    def _publish_grouped(self, grouped: Grouped) -> None:
        """:meth:`_publish_pairs` for series grouped in a dict."""
        self._publish_pairs(list(grouped.items()))

    def _publish_pairs(self, pairs: Pairs) -> None:
        if not pairs:
            return
        now = self.clock()
        if not self.shards and self._publish_in_one_message(pairs, now):
            return
        frames: list[framing.Framed] = []
        if self.shards:  # one message per (level, shard)
            for (level, shard), records, size in messages(_by_shard(pairs), self.batch):
                frames.extend(self._encode(level, now, records, size, shard))
        else:
            for level, records, size in messages(pairs, self.batch):
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

    def _publish_in_one_message(self, pairs: Pairs, now: float) -> bool:
        """The common drain in one go: one level, at most ``batch`` values, one frame. False if not."""
        level = pairs[0][0][0]
        size = sum(len(values) for _, values in pairs)
        if size > self.batch or any(series[0] != level for series, _ in pairs):
            return False
        records = [
            (key[1], key[2], values, key[3], key[4]) if key[5] is None and key[6] is None else record_of(key, values)
            for key, values in pairs
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


def _by_shard(pairs: Pairs) -> Pairs:
    """The same pairs, each series' level replaced by (level, shard): one message per shard."""
    cache = _shard_cache
    out: Pairs = []
    for series, values in pairs:
        shard = cache.get(series)
        if shard is None:
            if len(cache) >= 100_000:
                cache.clear()
            level, type_, name, source, tags, _weight, unit = series
            shard = cache[series] = protocol.shard_of(type_, name, source, tags, unit)
        out.append((((series[0], shard), *series[1:]), values))
    return out


def record_of(series: tuple[Any, ...], values: list[Any]) -> Record:
    """The wire record of a series (protocol 1.1: weight and unit appended only when needed)."""
    _level, type_, name, source, tags, weight, unit = series
    return framing.record_of(type_, name, values, source, tags, weight, unit)


def messages(grouped: Grouped | Pairs, batch: int) -> Iterator[tuple[Any, list[Sequence[Any]], int]]:
    """Yield (level, records, measurement count) per message (:func:`zibrato.framing.messages`).

    ``grouped``: series -> values, or (series, values) pairs. The level is
    the series' first field: a string, or (level, shard) from :func:`_by_shard`.
    """
    by_level: dict[Any, list[Record]] = {}
    for series, values in grouped.items() if isinstance(grouped, dict) else grouped:
        records = by_level.get(series[0])
        if records is None:
            records = by_level[series[0]] = []
        # record_of inlined for the plain series (no weight, no unit): once per series per drain
        records.append(
            (series[1], series[2], values, series[3], series[4])
            if series[5] is None and series[6] is None
            else record_of(series, values)
        )
    for level, records in by_level.items():
        for chunk, size in framing.messages(records, batch):
            yield level, chunk, size
