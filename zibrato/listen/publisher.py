"""Send parsed series to the broker as Protocol 1.1 messages, never blocking.

The listener is a client like any other, and publishes through the client's
own transport (:class:`zibrato.transport.ZmqTransport`): a PUSH socket
connected to the broker's PULL port that never blocks (a statsd sender does
not wait, and a blocked listener drops datagrams in the kernel) and bounds
what waits for a broker that is down or slow, in messages (``hwm``) and in
bytes (``max_bytes``). Past either bound, a message is dropped and its
values counted. Messages are framed by the rule every producer follows
(:mod:`zibrato.framing`).

Records that only Protocol 1.1 workers read (histograms, sets, weighted
timers) travel in their own messages: a 1.0 worker rejects a whole message
for one record it does not know, and that must not cost it the counters,
gauges and timers it does know.
"""

from __future__ import annotations

import logging
import time as _time
from collections.abc import Callable, Sequence
from typing import Any

import zmq

from .. import framing, protocol
from ..curve import ClientKeys
from ..link_watch import PushLinkMonitor
from ..transport import ZmqTransport
from .series import Pending, Series

log = logging.getLogger("zibrato.listen")

DEFAULT_HWM = 10_000
#: values per message, as the Zibrato client's default ``batch``
DEFAULT_BATCH = 1000
#: bytes that may wait in ZeroMQ for the broker, as the Zibrato client's default ``max_buffer_bytes``
DEFAULT_MAX_BYTES = 64 * 1024 * 1024


class Publisher:
    """One PUSH socket to the broker (a :class:`ZmqTransport`); ``publish`` empties a pending mapping into it.

    Made and used in one thread (the listener's loop): ZeroMQ sockets are not thread-safe.
    """

    def __init__(
        self,
        context: zmq.Context,
        endpoint: str,
        hwm: int = DEFAULT_HWM,
        batch: int = DEFAULT_BATCH,
        max_message_size: int = protocol.MAX_MESSAGE_SIZE,
        clock: Callable[[], float] = _time.time,
        curve: ClientKeys | None = None,
        max_bytes: int = DEFAULT_MAX_BYTES,
    ) -> None:
        self.endpoint, self.batch, self.max_message_size, self.clock = endpoint, batch, max_message_size, clock
        # linger 0 while open: close() says how long queued messages may take; the listener watches
        # the connection itself (zibrato.link_watch), so the transport does not
        self.transport = ZmqTransport(
            endpoint, hwm, 0.0, max_bytes, context, curve=curve, watch_link=False, before_connect=self._watch
        )
        self._link: PushLinkMonitor | None = None
        self.transport.open()
        if self.transport.socket is None:
            raise RuntimeError(f"cannot connect to the broker at {endpoint}")
        self.figures = {"messages_sent": 0, "values_sent": 0, "messages_dropped": 0, "values_dropped": 0}

    def _watch(self, socket: zmq.Socket[bytes]) -> None:
        self._link = PushLinkMonitor(socket)  # before connect(): it sees the first connection too

    @property
    def link(self) -> PushLinkMonitor:
        """The PUSH socket's connection, followed from before it connected."""
        assert self._link is not None  # made in __init__, when the socket was
        return self._link

    @property
    def socket(self) -> zmq.Socket[bytes]:
        """The PUSH socket (the listener follows its connection)."""
        socket = self.transport.socket
        assert socket is not None  # made in __init__, until close()
        return socket

    @property
    def held_bytes(self) -> int:
        """Bytes ZeroMQ holds for the broker now (at most ``max_bytes``)."""
        return self.transport.held_bytes

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
            records = [series.record(values) for series, values in entries]
            limit = self.max_message_size
            for frame, count in framing.frames(level, time, records, self.batch, limit, None, self._drop):
                if self.transport.send(frame):
                    self.figures["messages_sent"] += 1
                    self.figures["values_sent"] += count
                else:
                    self._dropped(count)

    def _drop(self, record: Sequence[Any], encoded: int, limit: int) -> None:
        """The framing rule's drop: one value that alone is over the message limit."""
        self._dropped(1)

    def _dropped(self, count: int) -> None:
        self.figures["messages_dropped"] += 1
        self.figures["values_dropped"] += count

    def close(self, linger: float | None = 2.0) -> None:
        """Give queued messages ``linger`` seconds to reach the broker, then close."""
        if self._link is not None:
            self._link.close()  # its monitor socket first: the context waits for every socket
            self._link = None
        self.transport.close(-0.001 if linger is None else linger)  # None: as long as it takes (ZeroMQ's -1)
