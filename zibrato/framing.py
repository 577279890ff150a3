"""Records into frames: the one framing rule of every producer (the client, the listener, the forwarder).

Three rules, each written once:

* **split**: a message carries at most ``batch`` values; a record with more
  is cut into records of at most ``batch`` values each
  (:func:`messages`);
* **size**: an encoded message larger than the receiver's limit
  (``max_message_size``, the broker's ``ZMQ_MAXMSGSIZE``) is halved, by
  records, or a one-record message by its values, until each half fits
  (:func:`fit`);
* **drop**: a single value that alone is over the limit cannot be sent: it
  is dropped, and the producer is told (``on_drop``) so that it counts it
  and says so in its own words.

A record is a sequence shaped like :class:`zibrato.protocol.Record`
(``type, name, values, source, tags[, weight[, unit]]``): :func:`record_of`
makes one with protocol 1.1's optional fields only when needed.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Sequence
from typing import Any

from . import protocol

__all__ = ["Record", "Framed", "OnDrop", "record_of", "messages", "split", "fit", "frames"]

#: one wire record (zibrato.protocol.Record's fields, as a tuple)
Record = tuple[Any, ...]
#: an encoded message and how many values it carries
Framed = tuple[bytes, int]
#: told of a record of one value that alone is over the limit: (the record, its encoded size, the limit)
OnDrop = Callable[[Sequence[Any], int, int], None]


def record_of(
    type_: str,
    name: str,
    values: Sequence[Any],
    source: str | None,
    tags: Sequence[str],
    weight: float | None = None,
    unit: str | None = None,
) -> Record:
    """The wire record of a series (protocol 1.1: weight and unit appended only when needed)."""
    if unit is not None:
        return (type_, name, values, source, tags, weight, unit)
    if weight is not None:
        return (type_, name, values, source, tags, weight)
    return (type_, name, values, source, tags)


def messages(records: Iterable[Sequence[Any]], batch: int) -> Iterator[tuple[list[Sequence[Any]], int]]:
    """(records, values) per message: at most ``batch`` values each, a longer record cut in order."""
    chunk: list[Sequence[Any]] = []
    append = chunk.append
    size = 0
    for record in records:
        values = record[2]
        count = len(values)
        if count <= batch:  # the common record, whole: no parts to make (the sender's cost per series)
            if size + count > batch and chunk:
                yield chunk, size
                chunk, size = [], 0
                append = chunk.append
            append(record)
            size += count
            continue
        head, tail = record[:2], record[3:]  # longer than a message: cut in order
        for part in [(*head, values[start : start + batch], *tail) for start in range(0, count, batch)]:
            count = len(part[2])
            if size + count > batch and chunk:
                yield chunk, size
                chunk, size = [], 0
                append = chunk.append
            append(part)
            size += count
    if chunk:
        yield chunk, size


def split(records: Sequence[Sequence[Any]]) -> tuple[Sequence[Sequence[Any]], Sequence[Sequence[Any]]] | None:
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


def fit(
    level: str,
    time: float,
    records: Sequence[Sequence[Any]],
    limit: int,
    shard: int | None = None,
    on_drop: OnDrop | None = None,
    count: int | None = None,
) -> list[Framed]:
    """The frames of one message's ``records``, each at most ``limit`` bytes (halved until they fit).

    ``count``: the values the records carry, when the caller knows it.
    """
    frame = protocol.encode(level, time, records, shard)
    if len(frame) <= limit:
        return [(frame, sum(len(record[2]) for record in records) if count is None else count)]
    halves = split(records)
    if halves is None:
        if on_drop is not None:
            on_drop(records[0], len(frame), limit)
        return []
    first, second = halves
    return fit(level, time, first, limit, shard, on_drop) + fit(level, time, second, limit, shard, on_drop)


def frames(
    level: str,
    time: float,
    records: Iterable[Sequence[Any]],
    batch: int,
    limit: int,
    shard: int | None = None,
    on_drop: OnDrop | None = None,
) -> list[Framed]:
    """Every frame of one level's (and shard's) records: :func:`messages`, then :func:`fit` each."""
    out: list[Framed] = []
    for chunk, count in messages(records, batch):
        out.extend(fit(level, time, chunk, limit, shard, on_drop, count))
    return out
