"""Several workers for one level: each owns a disjoint share of the series.

A series' shard is a stable hash of its identity
(:func:`zibrato.protocol.shard_of`: CRC-32 of type, name, source, tags and
unit, modulo :data:`~zibrato.protocol.SHARDS`, 64). Worker ``K`` of ``N``
(``--shard K/N``) owns the shards ``s`` with ``s % N == K``: disjoint, and
together all of them, so N workers deliver exactly what one would.

The broker still runs no Python per message: a sharding client (and every
forwarder) puts the shard in the frame right after the level's terminator
(``level 0x00 0x00 <shard>``), and a sharded worker subscribes to exactly the
prefixes of its shards; ZeroMQ's PUB filters in C. A worker that is not
sharded subscribes to ``level 0x00`` and still receives every shard.

Messages from clients that do not shard (older ones, or sharding off) carry
no shard byte: every sharded worker also subscribes to them (the prefix
``level 0x00 0x93``, the first byte of every payload) and keeps only the
records of its own shards. Correct, at the cost of each of the N workers
decoding that traffic (see docs/PROTOCOL.md, "Shards").
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from . import protocol

_SPEC = re.compile(r"\s*(\d+)\s*/\s*(\d+)\s*\Z")


@dataclass(frozen=True)
class Shard:
    """Worker ``index`` of ``count`` (``--shard index/count``)."""

    index: int
    count: int

    @classmethod
    def parse(cls, text: str) -> Shard:
        """'2/4' -> Shard(2, 4); ValueError with the reason otherwise."""
        match = _SPEC.match(text)
        if not match:
            raise ValueError(f"shard must be K/N, e.g. 0/4 (worker K of N), got {text!r}")
        index, count = int(match.group(1)), int(match.group(2))
        if not 1 <= count <= protocol.SHARDS:
            raise ValueError(f"the number of workers N must be 1 to {protocol.SHARDS}, got {count}")
        if not 0 <= index < count:
            raise ValueError(f"the worker index K must be 0 to {count - 1}, got {index}")
        return cls(index, count)

    def __str__(self) -> str:
        return f"{self.index}/{self.count}"

    @property
    def shards(self) -> tuple[int, ...]:
        """The shards this worker owns."""
        return tuple(s for s in range(protocol.SHARDS) if s % self.count == self.index)

    def subscriptions(self, level: str) -> list[bytes]:
        """The SUB prefixes for ``level``: each owned shard, plus the unsharded form."""
        return [protocol.topic(level, s) for s in self.shards] + [protocol.topic(level) + protocol.UNSHARDED_MARK]

    def owns_frame(self, frame: bytes) -> bool | None:
        """True/False for a sharded frame; None for an unsharded one (its records decide)."""
        shard = protocol.frame_shard(frame)
        return None if shard is None else shard % self.count == self.index

    def own_records(self, records: Iterable[Sequence]) -> list:
        """The records of an unsharded message that belong to this worker's shards."""
        count, index = self.count, self.index
        return [r for r in records if protocol.record_shard(r) % count == index]


__all__ = ["Shard"]
