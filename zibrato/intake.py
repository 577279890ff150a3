"""What a worker receives: the SUB socket, one decode per message, record filters, malformed counting.

The :class:`Intake` is everything between the broker and the aggregation:

* the SUB socket, subscribed to each level exactly (a sharded worker: its
  shards of each level), connected to every broker endpoint;
* each message decoded once (:func:`zibrato.protocol.decode_plain`);
* an ordered list of record filters (:data:`RecordFilter`): the shard's own
  series of an unsharded message, then the series rules (:mod:`zibrato.rules`);
* malformed input counted (``malformed``, ``malformed_records``,
  ``malformed_by_reason``) and logged, rate-limited, never stopping the worker;
* the stop-time drain: what is queued when the worker stops is read for
  the final flush, and what cannot be read in time is counted
  (``unread_at_stop``, ``unread_messages_at_stop``).

The worker (:mod:`zibrato.worker`) is the loop around it; the embedded
runtime feeds :meth:`Intake.ingest` without a socket.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Sequence
from typing import Any

import zmq

from . import protocol
from .aggregation_needs import Feed
from .curve import ClientKeys
from .runtime import RateLimitedLog, printable
from .series_guard import count_refused
from .shard import Shard
from .worker_config import ALL_LEVELS, WorkerConfig

Records = Sequence[Sequence[Any]]
#: a record filter: (the records, whether the message carried a shard) -> the records kept
RecordFilter = Callable[[Records, bool], Records]

_STOP_QUIET_SECONDS = 0.3  # on stop, receiving ends after this long without a message
_BATCH_SECONDS = 0.05  # a receive batch ends after this long, so flushes stay on schedule


class Intake:
    """The SUB socket's messages, decoded, filtered and fed to the aggregation; what went wrong, counted."""

    def __init__(
        self,
        config: WorkerConfig,
        endpoints: Sequence[str],
        feed: Feed,
        *,
        log: logging.Logger,
        max_buckets: int,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.endpoints = list(endpoints)
        self.levels = tuple(level.lower() for level in config.levels)  # levels are case-insensitive
        self.shard: Shard | None = config.shard
        self.rules = config.rules if config.rules else None
        self.curve: ClientKeys | None = config.curve
        # No limit by default: the broker enforces --max-message-size on what clients send,
        # and a SUB that meets a message over its own limit drops the whole connection.
        self.hwm, self.max_message_size = config.hwm, config.max_message_size
        self.stop_timeout = config.stop_timeout
        self.feed, self.log, self.clock, self.max_buckets = feed, log, clock, max_buckets
        #: the record filters, in order (each sees what the one before kept)
        self.filters: list[RecordFilter] = []
        if self.shard is not None:
            self.filters.append(_shard_filter(self.shard))
        if self.rules is not None:
            rules = self.rules
            self.filters.append(lambda records, sharded: rules.apply(records))
        #: rate-limited: a flood of bad input is visible in the log without filling it
        self.malformed_log = RateLimitedLog(log)
        #: what was received and what was wrong with it; times are None until the first message
        self.figures: dict[str, Any] = {
            "received": 0,
            "measurements": 0,
            "malformed": 0,
            "unread_at_stop": 0,
            "unread_messages_at_stop": 0,
            "malformed_records": 0,
            "malformed_by_reason": {},
            "last_received": None,
        }

    def subscriptions(self) -> list[bytes]:
        """The SUB prefixes: each level exactly (a sharded worker: its shards of each level).

        With ``all`` levels a sharded worker subscribes to everything and
        drops other shards' frames before decoding them (:meth:`ingest`).
        """
        if ALL_LEVELS in self.levels:
            return [b""]
        if self.shard is not None:
            return [prefix for level in self.levels for prefix in self.shard.subscriptions(level)]
        return [protocol.topic(level) for level in self.levels]

    def subscribe(self, context: zmq.Context[zmq.Socket[bytes]]) -> zmq.Socket[bytes]:
        """The SUB socket, every option set, subscribed and connected to every broker."""
        sub = self.socket(context)
        self.connect(sub)
        return sub

    def socket(self, context: zmq.Context[zmq.Socket[bytes]]) -> zmq.Socket[bytes]:
        """The SUB socket, every option set and subscribed, not connected yet (:meth:`connect`).

        A monitor must be attached between the two: a connection made before
        it would never be reported, and the worker would call itself
        unconnected while it receives.
        """
        sub = context.socket(zmq.SUB)
        sub.setsockopt(zmq.RCVHWM, self.hwm)
        if self.max_message_size is not None:
            sub.setsockopt(zmq.MAXMSGSIZE, self.max_message_size)
        sub.setsockopt(zmq.LINGER, 0)
        if self.curve is not None:
            self.curve.apply(sub)
        for prefix in self.subscriptions():
            sub.setsockopt(zmq.SUBSCRIBE, prefix)
        return sub

    def connect(self, sub: zmq.Socket[bytes]) -> None:
        """Connect ``sub`` (from :meth:`socket`) to every broker."""
        for endpoint in self.endpoints:
            sub.connect(endpoint)

    # --- receiving ---------------------------------------------------------------------

    def receive_available(self, sub: zmq.Socket[bytes], limit: int = 10_000) -> None:
        """Take what is queued now, bounded in count and time so that flushes stay on schedule."""
        until = time.perf_counter() + _BATCH_SECONDS
        received = 0
        for _ in range(limit):
            try:
                frame = sub.recv(zmq.NOBLOCK)
            except zmq.Again:
                break
            received += 1
            if sub.getsockopt(zmq.RCVMORE):
                while sub.getsockopt(zmq.RCVMORE):
                    sub.recv()
                self.malformed("multipart message")
                continue
            self.ingest(frame)
            if not received & 7 and time.perf_counter() > until:
                break
        if received:
            self.figures["last_received"] = time.time()

    def ingest(self, frame: bytes) -> None:
        """Validate one message, filter its records and feed them; count and log what is malformed."""
        f = self.figures
        f["received"] += 1
        owned = None
        if self.shard is not None:
            owned = self.shard.owns_frame(frame)
            if owned is False:  # another worker's shard (subscribed to 'all' levels)
                return
        try:
            batch = protocol.decode_plain(frame, self.clock(), self.max_buckets)
        except protocol.ProtocolError as error:
            self.malformed(str(error))
            return
        except Exception as error:  # a decoder that misses a case must not stop the worker
            self.malformed(f"unparseable ({error.__class__.__name__}: {error})")
            return
        if batch.refused:
            count_refused(f, batch.refused, self.malformed_log)
        records: Records = batch.records
        sharded = owned is not None
        for keep in self.filters:
            records = keep(records, sharded)
        try:
            f["measurements"] += self.feed(batch, records)
        except (ValueError, TypeError, KeyError) as error:  # e.g. two sketches that cannot merge
            self.malformed(f"cannot aggregate ({error.__class__.__name__}: {error})")

    def malformed(self, reason: str) -> None:
        """Count one malformed message and log it (rate-limited, escaped: the reason comes off the wire)."""
        self.figures["malformed"] += 1
        self.malformed_log.warning(
            "dropped malformed message: %s (%d malformed so far)", printable(reason), self.figures["malformed"]
        )

    # --- stopping ----------------------------------------------------------------------

    def drain_at_stop(self, sub: zmq.Socket[bytes], read_until: float) -> None:
        """On stop: take what the broker sends, until quiet, so the final flush has it.

        ``supervisorctl stop all`` signals the broker and the workers at once,
        and the broker forwards what it drains from clients up to about 0.2 s
        later; the quiet gap that ends this is longer than that. A worker that
        is behind reads what is queued until ``read_until`` (half its stop
        budget); what it cannot read by then is counted (``unread_at_stop``:
        its measurements, as ``measurements`` counts them, so that the figure
        is what was lost; ``unread_messages_at_stop``: the messages) and
        logged, never dropped silently.
        """
        while time.monotonic() < read_until and sub.poll(int(_STOP_QUIET_SECONDS * 1000)):
            self.receive_available(sub)
        left = messages = 0
        give_up = time.monotonic() + min(1.0, self.stop_timeout / 8)
        while time.monotonic() < give_up:
            try:
                frame = sub.recv(zmq.NOBLOCK)
            except zmq.Again:
                if not sub.poll(10):
                    break
                continue
            if self.shard is not None and self.shard.owns_frame(frame) is False:
                continue  # another worker's shard: never this worker's to lose
            messages += 1
            left += protocol.measurements_in(frame)
        if messages:
            self.figures["unread_at_stop"] += left
            self.figures["unread_messages_at_stop"] += messages
            more = " at least" if time.monotonic() >= give_up else ""
            self.log.error(
                "stopping:%s %d measurements in %d messages queued from the broker were not read "
                "within half the stop budget (%g s) and are lost (unread_at_stop)",
                more,
                left,
                messages,
                self.stop_timeout / 2,
            )


def _shard_filter(shard: Shard) -> RecordFilter:
    """An unsharded message's records: keep this worker's series (a sharded message was decided whole)."""

    def keep(records: Records, sharded: bool) -> Records:
        return records if sharded else shard.own_records(records)

    return keep


__all__ = ["Intake", "RecordFilter"]
