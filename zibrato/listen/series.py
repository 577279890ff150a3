"""What the parsers produce and the publisher sends: a series and its values.

Both parsers fill a ``pending`` mapping of :class:`Series` to a list of
values; the publisher turns each entry into one Protocol 1.1 record. A plain
dict and a list append per value is the cheapest shape Python offers, and the
parsers' hot loops are written around it.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable
from typing import NamedTuple

from .. import protocol
from ..framing import record_of

Value = float | str  # a number, or a set member


class Series(NamedTuple):
    """One series as the worker will see it, plus where it goes.

    ``weight`` (1 / sample rate, timers and histograms only) and ``unit``
    (histograms only) are Protocol 1.1's record fields 5 and 6; ``time`` is a
    statsd ``|T`` timestamp, None for "when the listener sends it".
    """

    level: str
    type: str
    name: str
    source: str | None
    tags: tuple
    weight: float | None = None
    unit: str | None = None
    time: float | None = None

    def record(self, values: list[Value]) -> list:
        """The Protocol record: 5 fields when 1.0 says it all, else 6 or 7 (:func:`zibrato.framing.record_of`)."""
        return [*record_of(self.type, self.name, values, self.source, list(self.tags), self.weight, self.unit)]

    @property
    def needs_1_1(self) -> bool:
        """True when a Protocol 1.0 worker would count this record as malformed."""
        return self.type in (protocol.HISTOGRAM, protocol.SET) or self.weight is not None or self.unit is not None


Pending = dict[Series, list[Value]]
RejectHook = Callable[[str, object], None]


class Rejects:
    """Rejected input counted by reason; the hook (logging, rate-limited) sees each one."""

    def __init__(self, hook: RejectHook | None = None) -> None:
        self.counts: Counter = Counter()
        self.hook = hook

    def __call__(self, reason: str, what: object) -> None:
        self.counts[reason] += 1
        if self.hook is not None:
            self.hook(reason, what)

    @property
    def total(self) -> int:
        return sum(self.counts.values())


def add(pending: Pending, series: Series, value: Value) -> None:
    values = pending.get(series)
    if values is None:
        pending[series] = [value]
    else:
        values.append(value)
