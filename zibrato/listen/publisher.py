"""Send parsed series to the broker as Protocol 1.1 messages, never blocking.

The listener is a client like any other: a PUSH socket connected to the
broker's PULL port. It must never block (a statsd sender does not wait, and
a blocked listener drops datagrams in the kernel), so every send is
non-blocking: past the socket's high-water mark (``hwm`` messages queued for
a broker that is down or slow), a message is dropped and its values counted.

Records that only Protocol 1.1 workers read (histograms, sets, weighted
timers) travel in their own messages: a 1.0 worker rejects a whole message
for one record it does not know, and that must not cost it the counters,
gauges and timers it does know.
"""

from __future__ import annotations

import time as _time
from collections.abc import Callable, Iterable

import zmq

from .. import protocol
from ..curve import ClientKeys
from .series import Pending, Series

DEFAULT_HWM = 10_000
#: values per message, as the Zibrato client's default ``batch``
DEFAULT_BATCH = 1000


class Publisher:
    """One PUSH socket to the broker; ``publish`` empties a pending mapping into it."""

    def __init__(
        self,
        context: zmq.Context,
        endpoint: str,
        hwm: int = DEFAULT_HWM,
        batch: int = DEFAULT_BATCH,
        max_message_size: int = protocol.MAX_MESSAGE_SIZE,
        clock: Callable[[], float] = _time.time,
        curve: ClientKeys | None = None,
    ) -> None:
        self.endpoint, self.batch, self.max_message_size, self.clock = endpoint, batch, max_message_size, clock
        self.socket = context.socket(zmq.PUSH)
        self.socket.setsockopt(zmq.SNDHWM, hwm)
        self.socket.setsockopt(zmq.LINGER, 0)
        if curve is not None:  # an encrypted, authenticated link to a CURVE broker
            curve.apply(self.socket)
        self.socket.connect(endpoint)
        self.figures = {"messages_sent": 0, "values_sent": 0, "messages_dropped": 0, "values_dropped": 0}

    def publish(self, pending: Pending) -> None:
        """Encode and send everything in ``pending`` (which the caller no longer uses)."""
        if not pending:
            return
        now = self.clock()
        groups: dict[tuple[str, float, bool], list[tuple[Series, list]]] = {}
        for series, values in pending.items():
            key = (series.level, now if series.time is None else series.time, series.needs_1_1)
            group = groups.get(key)
            if group is None:
                groups[key] = [(series, values)]
            else:
                group.append((series, values))
        for (level, time, _), entries in groups.items():
            for records, count in self._batches(entries):
                self._send(level, time, records, count)

    def _batches(self, entries: Iterable[tuple[Series, list]]) -> Iterable[tuple[list, int]]:
        """Records of at most ``batch`` values per message (a long record is split)."""
        records, count, batch = [], 0, self.batch
        for series, values in entries:
            for start in range(0, len(values), batch):
                chunk = values[start : start + batch] if len(values) > batch else values
                records.append(series.record(chunk))
                count += len(chunk)
                if count >= batch:
                    yield records, count
                    records, count = [], 0
        if records:
            yield records, count

    def _send(self, level: str, time: float, records: list, count: int) -> None:
        frame = protocol.encode(level, time, records)
        if len(frame) > self.max_message_size:
            if len(records) == 1 and len(records[0][2]) == 1:
                self._dropped(1)
                return
            for half in _halves(records):
                self._send(level, time, half, sum(len(r[2]) for r in half))
            return
        try:
            self.socket.send(frame, zmq.NOBLOCK)
        except zmq.Again:
            self._dropped(count)
            return
        self.figures["messages_sent"] += 1
        self.figures["values_sent"] += count

    def _dropped(self, count: int) -> None:
        self.figures["messages_dropped"] += 1
        self.figures["values_dropped"] += count

    def close(self, linger: float | None = 2.0) -> None:
        """Give queued messages ``linger`` seconds to reach the broker, then close."""
        self.socket.close(linger=None if linger is None else int(linger * 1000))


def _halves(records: list) -> list:
    """Split a message's records in two; a one-record message splits its values."""
    if len(records) > 1:
        middle = len(records) // 2
        return [records[:middle], records[middle:]]
    record = records[0]
    values, middle = record[2], len(record[2]) // 2
    return [[[*record[:2], values[:middle], *record[3:]]], [[*record[:2], values[middle:], *record[3:]]]]
