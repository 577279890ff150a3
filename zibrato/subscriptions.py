"""The broker learns what workers subscribe to, and counts what is sent on levels nobody receives.

A measurement on a level no connected worker subscribes to used to vanish
without a word (the README's examples use ``debug`` and ``crit``; a worker
started with ``--levels info,warn`` never sees them). Now the broker says so:
``zibrato status`` lists such levels with their counts, and the log has one
line per level and minute::

    level 'debug': 1,234 measurements in the last minute, no worker subscribes

How, without slowing the forwarding: the broker's worker-facing socket is an
XPUB (it hands the workers' subscriptions to the application). The C proxy
that forwards clients' messages writes into an in-process PUB; a second C
proxy carries them from an XSUB (subscribed to everything) to the XPUB and
the workers' subscriptions back, and copies both directions to a capture
socket. The capture is a PUB: when this module's reader thread falls behind,
copies are dropped (counted as ``capture_dropped`` only by their absence),
never the forwarding. The reader reads only the level in front of each copy;
it decodes a message's header to count its measurements only for a level
nobody subscribes to.
"""

from __future__ import annotations

import logging
import struct
import threading
import time
from collections import Counter
from collections.abc import Callable
from typing import Any

import msgpack
import zmq

from .protocol import LEVEL_TERMINATOR

log = logging.getLogger("zibrato.broker")

REPORT_EVERY = 60.0
SELF_LEVEL = "zibrato"
_SUBSCRIBE, _UNSUBSCRIBE = 1, 0
_STAT_NAMES: tuple[str, ...] = ("frontend_messages_in", "frontend_bytes_in", "frontend_messages_out")
_STAT_NAMES += ("frontend_bytes_out", "backend_messages_in", "backend_bytes_in", "backend_messages_out")


class SubscriptionTable:
    """Topic prefixes the connected workers hold (each counted per subscriber), and what they cover."""

    def __init__(self) -> None:
        self.topics: Counter[bytes] = Counter()
        self._covered: dict[bytes, bool] = {}

    def apply(self, message: bytes) -> None:
        """An XPUB (verbose) message: 0x01 + topic subscribes, 0x00 + topic unsubscribes."""
        kind, topic = message[0], message[1:]
        if kind == _SUBSCRIBE:
            self.topics[topic] += 1
        elif kind == _UNSUBSCRIBE and self.topics[topic] > 0:
            self.topics[topic] -= 1
            if not self.topics[topic]:
                del self.topics[topic]
        self._covered.clear()

    def covers(self, level: bytes) -> bool:
        """Does any worker receive this level (all of it, or a shard of it)?"""
        known = self._covered.get(level)
        if known is None:
            key = level + LEVEL_TERMINATOR
            known = any(key.startswith(topic) or topic.startswith(key) for topic in self.topics)
            self._covered[level] = known
        return known

    def levels(self) -> list[str]:
        """The subscribed levels as workers asked for them ('*' for a worker taking every level)."""
        names = {topic.split(LEVEL_TERMINATOR, 1)[0].decode(errors="replace") or "*" for topic in self.topics}
        return sorted(names)


def measurements_in(frame: bytes) -> int:
    """How many measurements a client message carries (what can be read: workers judge the rest).

    Only the header and each record's value array are walked (``level \\0
    msgpack([version, time, [[type, name, [values], ...], ...]])``); a
    record whose values are not an array (a forwarder's summary) counts as one.
    """
    _, _, payload = frame.partition(LEVEL_TERMINATOR)
    unpacker = msgpack.Unpacker(raw=True)
    unpacker.feed(payload)
    total = 0
    try:
        unpacker.read_array_header()
        unpacker.skip()  # version
        unpacker.skip()  # time
        for _ in range(unpacker.read_array_header()):
            fields = unpacker.read_array_header()
            unpacker.skip()  # type
            unpacker.skip()  # name
            try:
                values = unpacker.read_array_header()
            except ValueError:  # not an array: a summary record
                unpacker.skip()
                values = 1
            else:
                for _ in range(values):
                    unpacker.skip()
            for _ in range(fields - 3):
                unpacker.skip()
            total += values
    except Exception:  # malformed: count what was read; the workers count it as malformed
        return total
    return total


class UnsubscribedCount:
    """Measurements per level that no worker receives: totals, and one log line per level a minute."""

    def __init__(self, every: float = REPORT_EVERY, clock: Callable[[], float] = time.monotonic) -> None:
        self.every, self.clock = every, clock
        self.totals: Counter[str] = Counter()
        self._window: Counter[str] = Counter()
        self._next_report = clock() + every

    def add(self, level: bytes, measurements: int) -> None:
        name = level.decode(errors="replace")
        self.totals[name] += measurements
        self._window[name] += measurements

    def report(self) -> None:
        """Log the last minute's levels, once a minute (called from the reader's loop)."""
        now = self.clock()
        if now < self._next_report:
            return
        self._next_report = now + self.every
        for level, count in sorted(self._window.items()):
            if level == SELF_LEVEL:  # the daemons' own figures: in `zibrato status`, not worth a line a minute
                continue
            log.warning(
                "level %r: %s measurements in the last minute, no worker subscribes "
                "(start a worker with --levels all, or add it to a worker's --levels)",
                level,
                f"{count:,}",
            )
        self._window.clear()


class SubscriptionWatch:
    """The XSUB -> XPUB leg of the broker (C proxy with capture) and the thread reading the capture."""

    def __init__(self, context: zmq.Context[Any], xpub: zmq.Socket[bytes], hwm: int) -> None:
        self.context, self.xpub = context, xpub
        name = f"{id(self)}"
        #: where the clients' proxy writes (an in-process PUB in front of the XSUB)
        self.upstream = self._socket(zmq.PUB, zmq.SNDHWM, hwm)
        self.upstream.bind(f"inproc://zibrato-fanout-{name}")
        self._xsub = self._socket(zmq.XSUB, zmq.RCVHWM, hwm)
        self._xsub.connect(f"inproc://zibrato-fanout-{name}")
        self._xsub.send(b"\x01")  # everything: the XPUB filters per worker
        self._capture = self._socket(zmq.PUB, zmq.SNDHWM, hwm)
        self._capture.bind(f"inproc://zibrato-capture-{name}")
        self._reader = self._socket(zmq.SUB, zmq.RCVHWM, hwm)
        self._reader.setsockopt(zmq.SUBSCRIBE, b"")
        self._reader.connect(f"inproc://zibrato-capture-{name}")
        self._control = self._socket(zmq.REP, zmq.RCVHWM, 10)
        self._control.bind(f"inproc://zibrato-fanout-control-{name}")
        self._requests = self._socket(zmq.REQ, zmq.SNDHWM, 10)
        self._requests.setsockopt(zmq.REQ_RELAXED, 1)
        self._requests.setsockopt(zmq.REQ_CORRELATE, 1)
        self._requests.connect(f"inproc://zibrato-fanout-control-{name}")
        self.table = SubscriptionTable()
        self.unsubscribed = UnsubscribedCount()
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._proxy = threading.Thread(target=self._forward, name="zibrato-fanout", daemon=True)
        self._read = threading.Thread(target=self._read_capture, name="zibrato-subscriptions", daemon=True)

    def _socket(self, kind: int, hwm_option: int, hwm: int) -> zmq.Socket[bytes]:
        sock: zmq.Socket[bytes] = self.context.socket(kind)
        sock.setsockopt(hwm_option, hwm)
        sock.setsockopt(zmq.LINGER, 0)
        return sock

    def start(self) -> None:
        self._proxy.start()
        self._read.start()

    def _forward(self) -> None:
        while True:
            try:
                zmq.proxy_steerable(self._xsub, self.xpub, self._capture, self._control)
            except zmq.ContextTerminated:
                pass
            except zmq.Again:  # libzmq 4.3 woke with nothing to read (see Broker._proxy): resume
                continue
            except zmq.ZMQError as error:  # pragma: no cover - libzmq failure, not bad input
                log.error("fan-out proxy stopped: %s", error)
            return

    def _read_capture(self) -> None:
        reader, table, unsubscribed = self._reader, self.table, self.unsubscribed
        while not self._stop.is_set():
            if reader.poll(100):
                for _ in range(10_000):
                    try:
                        copy = reader.recv(zmq.NOBLOCK)
                    except zmq.Again:
                        break
                    if not copy:
                        continue
                    with self._lock:
                        if copy[0] in (_SUBSCRIBE, _UNSUBSCRIBE):
                            table.apply(copy)
                            continue
                        level = copy.split(LEVEL_TERMINATOR, 1)[0]
                        if not table.covers(level):
                            unsubscribed.add(level, measurements_in(copy))
            with self._lock:
                unsubscribed.report()

    def forwarded(self, timeout: float = 1.0) -> int | None:
        """Messages this leg has forwarded to workers (None when the proxy does not answer)."""
        try:
            self._requests.send(b"STATISTICS")
            if not self._requests.poll(int(timeout * 1000)):
                return None
            frames = self._requests.recv_multipart()
        except zmq.ZMQError:  # pragma: no cover - REQ_RELAXED prevents EFSM
            return None
        stats = {name: struct.unpack("=Q", frame)[0] for name, frame in zip(_STAT_NAMES, frames)}
        return int(stats["frontend_messages_in"])

    def wait_quiet(self, timeout: float = 1.0) -> None:
        """On stop: until this leg has forwarded what the clients' proxy wrote (its count holds still)."""
        deadline = time.monotonic() + timeout
        last, still = self.forwarded(0.2), 0
        while still < 3 and time.monotonic() < deadline:
            time.sleep(0.005)
            now = self.forwarded(0.2)
            still = still + 1 if now == last else 0
            last = now

    def figures(self) -> dict[str, Any]:
        with self._lock:
            return {
                "subscribed_levels": self.table.levels(),
                "unsubscribed_levels": dict(sorted(self.unsubscribed.totals.items())),
            }

    def close(self) -> None:
        """Stop the leg and the reader; the XPUB itself is the broker's to close (with its linger)."""
        self._stop.set()
        if self._proxy.is_alive():
            try:
                self._requests.send(b"TERMINATE")
                self._requests.poll(1000)
            except zmq.ZMQError:  # pragma: no cover - REQ_RELAXED prevents EFSM
                pass
        self._proxy.join(2.0)
        self._read.join(2.0)
        for sock in (self._requests, self._control, self._reader, self._capture, self._xsub, self.upstream):
            sock.close(linger=0)
