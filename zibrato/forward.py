"""The forwarder tier: a worker whose destination is an upstream broker.

A host runs a broker, its producers and ``zibrato-forward --to GLOBAL:5550``.
The forwarder aggregates the host's measurements per level like any worker,
and at each flush sends the interval's **mergeable summaries** upstream as
protocol 1.2 summary records (``"m"``; docs/PROTOCOL.md): counter sum and
count; gauge last value with its time, min, max, count and sum; timer and
histogram sketches (:mod:`zibrato.sketch` dict form) with the sum of
squares; set sketches. A worker upstream merges them per series and
interval with whatever it receives raw (:meth:`zibrato.aggregation.Aggregator.add_summary`),
so the global counts and sums are exact and its percentiles carry the
sketch's error, as if one worker had seen all the raw data.

Delivery goes through the runtime's queue (:mod:`zibrato.delivery`): a
backlog of 15 minutes of intervals by default, retries with backoff. ZeroMQ
PUSH has no acknowledgements, so the forwarder's socket sets
``ZMQ_IMMEDIATE=1``: it queues only on a live connection, and a send while
the upstream broker is unreachable raises ``zmq.Again``, which becomes
:class:`~zibrato.delivery.Retryable`. Each message of an interval is one
part of the destination contract (:meth:`Forwarder.parts`,
:meth:`Forwarder.send`): the queue sends them in order, remembers which were
taken and retries only the others, so nothing is sent twice, and counts the
parts a stop cuts off (``cut_off_parts``, ``cut_off_points``: summary
records). ZeroMQ heartbeats detect a peer that vanished without closing its
connection. What can still be lost is listed in docs/SCALING.md.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import msgpack
import zmq

from . import framing, protocol
from .aggregation import LevelAggregators
from .aggregation_needs import AggregationNeeds
from .curve import ClientKeys
from .delivery import Retryable
from .destination import Destination, Interval, Part
from .summary import TYPE_CODES, Summary
from .worker import Worker

log = logging.getLogger("zibrato.forward")

#: summary records per message (a message also stays under max_message_size)
RECORDS_PER_MESSAGE = 500
#: an exact timer or histogram of at most this many values travels as its values, not a sketch
VALUES_UP_TO = 64
HEARTBEAT_MS = 1000  # ZMTP pings: a silent, dead upstream is noticed within HEARTBEAT_TIMEOUT_MS
HEARTBEAT_TIMEOUT_MS = 5000


# --- summaries as wire records ----------------------------------------------------------


def summary_record(summary: Summary, start: float, end: float, source: str | None) -> tuple | None:
    """The protocol 1.2 summary record of one flushed summary, or None when it holds nothing to merge."""
    kind = TYPE_CODES[summary["type"]]
    state: dict = {"kind": kind, "start": start, "end": end}
    if kind == "c":
        state.update(sum=summary["value"], count=summary["count"])
    elif kind == "g":
        last = summary["value"]
        if last is None:
            return None
        state.update(
            last=last,
            time=summary.get("last_time", end),
            count=summary["count"],
            min=summary["min"],
            max=summary["max"],
            sum=summary["sum"],
        )
    elif kind == "s":
        if not summary.get("sketch") or not summary["value"]:
            return None
        state["sketch"] = summary["sketch"]
    else:
        if not summary.get("count") or "sketch" not in summary:
            return None
        values = summary.get("values")
        if summary.get("exact") and values is not None and len(values) <= VALUES_UP_TO:
            state["values"] = list(values)  # few values: smaller than a sketch, and exact upstream
        else:
            state.update(sketch=_compact(summary["sketch"]))
        state["sum_squares"] = summary["sum_squares"]
        if kind == "h" and summary.get("unit") is not None:
            state["unit"] = summary["unit"]
    return (protocol.SUMMARY, summary["name"], (state,), source, tuple(summary["tags"]))


def _compact(sketch: Mapping[str, Any]) -> dict[str, Any]:
    """The sketch without what its dict form lets a reader assume (no buckets of a sign, no zeros)."""
    return {
        key: value
        for key, value in sketch.items()
        if not ((key == "positive" or key == "negative") and not value["counts"])
        and not (key == "zero_count" and not value)
    }


def interval_frames(
    interval: Interval,
    now: float,
    max_message_size: int,
    fix_source: Callable[[str | None], str | None] = lambda s: s,
    records_per_message: int = RECORDS_PER_MESSAGE,
) -> tuple[list[bytes], int]:
    """The messages of one interval (per level and shard), and how many summary records they carry.

    Framed by the rule every producer follows (:func:`zibrato.framing.frames`):
    a summary record is one value, so ``records_per_message`` is the batch.
    """
    groups: dict[tuple[str, int], list] = {}
    for summary in interval.summaries:
        record = summary_record(summary, interval.start, interval.end, fix_source(summary["source"]))
        if record is None:
            continue
        level = summary.get("level") or "info"
        groups.setdefault((level, protocol.record_shard(record)), []).append(record)
    frames: list[bytes] = []
    count = 0
    for (level, shard), records in groups.items():
        count += len(records)
        framed = framing.frames(level, now, records, records_per_message, max_message_size, shard, _not_forwarded)
        frames.extend(frame for frame, _ in framed)
    return frames, count


def _fitted(level: str, shard: int, now: float, records: list, limit: int) -> list[bytes]:
    """One message's frames, halved until each fits ``limit`` (:func:`zibrato.framing.fit`)."""
    return [frame for frame, _ in framing.fit(level, now, records, limit, shard, _not_forwarded)]


def _not_forwarded(record: Sequence, encoded: int, limit: int) -> None:
    """The framing rule's drop: one summary that alone is over the message limit."""
    log.error(
        "the summary of %r is %d bytes encoded, over the %d-byte message limit: not forwarded",
        record[1],
        encoded,
        limit,
    )


# --- the destination ------------------------------------------------------------------------


@dataclass(frozen=True)
class IntervalMessage:
    """One message of an interval: a part of its delivery, taken by the upstream socket or not as a whole.

    ``frame`` is None for an interval with nothing to merge upstream: one
    empty part, so that the interval still counts as forwarded.
    """

    frame: bytes | None
    number: int  # 1 for the first message of the interval
    total: int


def records_in(frame: bytes) -> int:
    """How many summary records a message carries, read from its msgpack headers (nothing else decoded)."""
    _, _, payload = frame.partition(protocol.LEVEL_TERMINATOR)
    if payload[:1] == protocol.SHARD_MARK:
        payload = payload[2:]
    unpacker = msgpack.Unpacker()
    unpacker.feed(payload)
    unpacker.read_array_header()  # [version, time, records]
    unpacker.skip()
    unpacker.skip()
    return int(unpacker.read_array_header())


class Forwarder(Destination):
    """Sends each interval's summaries to an upstream broker's client (PULL) port, one message per part."""

    name = "forward"
    self_figures = ("forwarded_messages", "forwarded_summaries", "forwarded_bytes")
    #: levels kept apart (upstream workers subscribe by level); no percentiles (the sketch travels);
    #: small timers travel as their values; a gauge's last value travels with its time
    aggregation_needs = AggregationNeeds(levels_apart=True, percentiles=(), values_up_to=VALUES_UP_TO, gauge_times=True)

    def __init__(
        self,
        to: str,
        *,
        drop_source: bool = False,
        source: str | None = None,
        curve: ClientKeys | None = None,
        hwm: int = 10_000,
        max_message_size: int = protocol.MAX_MESSAGE_SIZE,
        context: zmq.Context | None = None,
    ) -> None:
        self.endpoint = to if to.startswith("tcp://") else f"tcp://{to}"
        self.drop_source, self.source = drop_source, source
        if source is not None:
            problem = protocol.name_problem(source, "source")
            if problem:
                raise ValueError(problem)
        self.curve, self.hwm, self.max_message_size = curve, hwm, max_message_size
        self._given_context = context
        self._context: zmq.Context | None = None
        self._socket: zmq.Socket | None = None
        self.counts = {
            "forwarded_messages": 0,
            "forwarded_summaries": 0,
            "forwarded_bytes": 0,
            "forwarded_intervals": 0,
            "upstream_unavailable": 0,
        }

    def fix_source(self, source: str | None) -> str | None:
        if self.drop_source:
            return None
        return self.source if source is None else source

    def connect(self) -> None:
        context = self._given_context or zmq.Context(io_threads=1)
        if self._given_context is None:
            self._context = context
        socket = context.socket(zmq.PUSH)
        socket.setsockopt(zmq.IMMEDIATE, 1)  # queue only on a live connection: Again says "away"
        socket.setsockopt(zmq.SNDHWM, self.hwm)
        socket.setsockopt(zmq.LINGER, 2000)
        socket.setsockopt(zmq.RECONNECT_IVL_MAX, 2000)
        socket.setsockopt(zmq.HEARTBEAT_IVL, HEARTBEAT_MS)
        socket.setsockopt(zmq.HEARTBEAT_TIMEOUT, HEARTBEAT_TIMEOUT_MS)
        if self.curve is not None:
            self.curve.apply(socket)
        socket.connect(self.endpoint)
        self._socket = socket

    def upstream_ready(self, timeout: float = 0.0) -> bool:
        """True when a message would be taken now: a live upstream connection with room
        (``ZMQ_IMMEDIATE``); waits up to ``timeout`` seconds for one. Connects first if needed."""
        if self._socket is None:
            self.connect()
        assert self._socket is not None
        return bool(self._socket.poll(int(timeout * 1000), zmq.POLLOUT))

    def parts(self, interval: Interval) -> Sequence[Part]:
        """The interval's messages (per level and shard, each under the size limit), one part each;
        a part's points are its summary records."""
        frames, _ = interval_frames(interval, time.time(), self.max_message_size, self.fix_source)
        if not frames:
            return [Part(IntervalMessage(None, 1, 1), 0)]
        total = len(frames)
        return [Part(IntervalMessage(frame, n, total), records_in(frame)) for n, frame in enumerate(frames, 1)]

    def send(self, part: Part) -> None:
        """Hand one message to the upstream socket, or raise Retryable when no upstream takes it."""
        message: IntervalMessage = part.payload
        if message.frame is not None:
            if self._socket is None:
                self.connect()
            socket = self._socket
            assert socket is not None  # connect() made it
            try:
                socket.send(message.frame, zmq.NOBLOCK)
            except zmq.Again:
                self.counts["upstream_unavailable"] += 1
                raise Retryable(
                    f"upstream broker {self.endpoint} not connected (or its queue is full): "
                    f"{message.total - message.number + 1} of {message.total} messages wait"
                ) from None
            self.counts["forwarded_messages"] += 1
            self.counts["forwarded_bytes"] += len(message.frame)
            self.counts["forwarded_summaries"] += part.points
        if message.number == message.total:
            self.counts["forwarded_intervals"] += 1

    def close(self) -> None:
        if self._socket is not None:
            self._socket.close()
            self._socket = None
        if self._context is not None:
            self._context.term()
            self._context = None

    def figures(self) -> dict:
        return {"upstream": self.endpoint, **self.counts, "curve": self.curve is not None}


# --- kept for code that names it -------------------------------------------------------------


class ForwardWorker(Worker):
    """A :class:`~zibrato.worker.Worker`: a Forwarder declares what it needs (:attr:`Forwarder.aggregation_needs`)."""


__all__ = [
    "ForwardWorker",
    "Forwarder",
    "IntervalMessage",
    "LevelAggregators",
    "interval_frames",
    "records_in",
    "summary_record",
]
