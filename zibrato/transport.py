"""Where the producers' encoded messages go: the :class:`Transport` seam and :class:`ZmqTransport`.

The client's sender thread hands each message to a transport and counts it as
sent or dropped by what :meth:`Transport.send` answers; the listener
(:mod:`zibrato.listen.publisher`) publishes through the same ZeroMQ
transport, so both inherit one byte bound on what waits for an absent
broker. ``zibrato.testing.MemoryTransport`` keeps messages in memory.
"""

from __future__ import annotations

import logging
import time
from collections import deque
from collections.abc import Callable

import zmq

# Tracked frames need pyzmq's collector thread, which stops at interpreter exit from an
# atexit hook registered when this module is imported: imported here, before the client
# registers its own exit flush, so that flush runs first (atexit runs hooks last-in first-out).
import zmq.utils.garbage

from . import protocol
from .client_link import BrokerLink
from .curve import ClientKeys

__all__ = ["Transport", "ZmqTransport", "SETTLE_WHEN_STALLED"]

log = logging.getLogger("zibrato.client")

#: how long flush() waits for ZeroMQ to write out what it took, when ZeroMQ is writing at all
SETTLE_WHEN_STALLED = 0.1


class Transport:
    """Where encoded messages go. A subclass implements :meth:`send`; the rest is optional.

    ``synchronous = True`` means publishing in the recording thread is fine
    (an in-memory transport): the client then starts no sender thread.
    """

    synchronous = False
    #: set by the sender: a flush() waits for the drain under way (a transport may track its last frame)
    flushing = False

    def open(self) -> None:
        """Called once, in the thread that will send."""

    def send(self, frame: bytes, last: bool = True) -> bool:
        """Take one message, without blocking; False if it cannot (it is then dropped and counted).

        ``last`` marks the last message of a drain (a transport may track only those).
        """
        raise NotImplementedError

    def settle(self, timeout: float) -> bool:
        """Wait up to ``timeout`` for what was sent to leave the process; True when it has."""
        return True

    def close(self, linger: float) -> None:
        """Release what :meth:`open` made, waiting up to ``linger`` seconds for delivery."""

    def tick(self) -> None:
        """Called by the sender thread after each drain (every ``interval``), busy or idle."""

    def fork_child(self) -> Transport:
        """The transport a forked child uses (sockets cannot cross a fork: a new one)."""
        return self


class ZmqTransport(Transport):
    """A ZeroMQ PUSH socket that never blocks, with a bound in bytes on what ZeroMQ holds.

    Frames are sent as copies (``copy=True``: for frames of a few hundred
    bytes to a few KiB, a memcpy is cheaper than pyzmq's zero-copy
    bookkeeping). A few are sent zero-copy with a tracker, which ZeroMQ marks
    done when it has written the frame to the connection; frames on one
    connection are written in order, so one tracker vouches for every frame
    sent before it. A tracker costs a wake-up of pyzmq's collector thread,
    so one is taken only when it is needed:

    * for the last frame of a drain that a ``flush()`` waits for (and, when
      that drain sent nothing, for a tiny marker frame: a message with no
      records), so that :meth:`settle` can wait until what was sent has left
      the process (``flush()`` before ``os._exit``);
    * every ``TRACK_EVERY`` bytes, so that what ZeroMQ holds for an absent
      broker is known: the frames not yet vouched for count as held, at most
      ``max_bytes`` bytes (and ``hwm`` messages); a frame past that is
      refused, and dropped and counted by the publisher.

    A client recording a thousand measurements a second sends about 10 KB a
    second: one tracker every few tens of seconds instead of twenty a second.
    """

    #: bytes sent between two tracked frames (at most a sixteenth of ``max_bytes``)
    TRACK_EVERY = 256 * 1024

    def __init__(
        self,
        endpoint: str,
        hwm: int,
        linger: float,
        max_bytes: int,
        context: zmq.Context[zmq.Socket[bytes]] | None = None,
        curve: ClientKeys | None = None,
        watch_link: bool = True,
        before_connect: Callable[[zmq.Socket[bytes]], None] | None = None,
    ) -> None:
        self.endpoint, self.hwm, self.linger, self.max_bytes = endpoint, hwm, linger, max_bytes
        #: follow the connection with libzmq's monitor (:attr:`link`); False when the owner
        #: watches the socket itself (a socket has one monitor)
        self.watch_link = watch_link
        #: called with the socket just before it connects: where an owner attaches its own monitor
        #: (one attached after connect() can miss the connection, and report none while there is one)
        self.before_connect = before_connect
        #: CURVE keys (zibrato.curve): the broker is then a CURVE server that checks this client's key
        self.curve = curve
        self._given_context = context
        self._context: zmq.Context[zmq.Socket[bytes]] | None = None
        self._socket: zmq.Socket[bytes] | None = None
        # (tracker, bytes it vouches for, sent at), oldest first
        self._held: deque[tuple[zmq.MessageTracker, int, float]] = deque()
        self._untracked = 0  # bytes sent since the last tracked frame
        self._track_every = max(1, min(self.TRACK_EVERY, max_bytes // 16))
        self._last_level = b""  # the level of the first frame sent (where a marker goes)
        #: bytes of the frames ZeroMQ holds (not yet written to the broker's connection)
        self.held_bytes = 0
        self._failing = False
        #: whether the broker is reached (zibrato.client_link), made in open()
        self.link: BrokerLink | None = None

    def open(self) -> None:
        try:
            context = self._given_context
            if context is None:
                context = self._context = zmq.Context(io_threads=1)
            socket = context.socket(zmq.PUSH)
            socket.setsockopt(zmq.SNDHWM, self.hwm)
            socket.setsockopt(zmq.RECONNECT_IVL_MAX, 1000)
            socket.setsockopt(zmq.LINGER, int(self.linger * 1000))
            socket.copy_threshold = 0  # a tracked frame zero-copy (a smaller one would be copied, untracked)
            if self.curve is not None:
                self.curve.apply(socket)
            if self.watch_link:
                self.link = BrokerLink(socket, self.endpoint, self._waiting)
            if self.before_connect is not None:
                self.before_connect(socket)
            socket.connect(self.endpoint)
            self._socket = socket
        except Exception as error:  # a bad host string, no file descriptors left...
            log.error(
                "zibrato: cannot connect to %s (%s); measurements will be dropped and counted", self.endpoint, error
            )

    def send(self, frame: bytes, last: bool = True) -> bool:
        if self._socket is None:
            return False
        self._forget_written()
        size = len(frame)
        if self.held_bytes + size > self.max_bytes:
            if self._untracked and not self._held:  # nothing in flight would ever vouch for them
                self._vouch()
            self._report_failure(f"{self.held_bytes:,} bytes already wait for the broker")
            return False
        track = (last and self.flushing) or self._untracked + size >= self._track_every
        try:
            tracker = self._send_tracked(frame) if track else self._socket.send(frame, zmq.NOBLOCK)
        except zmq.ZMQError as error:
            self._report_failure("buffer full, broker unreachable" if isinstance(error, zmq.Again) else str(error))
            return False
        self.held_bytes += size
        self._untracked += size
        if tracker is not None:
            self._held.append((tracker, self._untracked, time.monotonic()))
            self._untracked = 0
        if last and not self._last_level:
            self._last_level = frame[: frame.find(protocol.LEVEL_TERMINATOR)]
        if self._failing:
            self._failing = False
            log.warning("zibrato: sending to %s again", self.endpoint)
        return True

    def _send_tracked(self, frame: bytes) -> zmq.MessageTracker | None:
        try:
            return self._socket.send(frame, zmq.NOBLOCK, copy=False, track=True)  # type: ignore[union-attr]
        except RuntimeError:  # pyzmq's collector has stopped (interpreter exit): send untracked
            self._socket.send(frame, zmq.NOBLOCK)  # type: ignore[union-attr]
            return None

    def _vouch(self) -> None:
        """Send a tracked marker (a message with no records) behind the untracked frames."""
        level = self._last_level
        if self._socket is None or not level:
            return
        try:
            tracker = self._send_tracked(protocol.encode(level.decode(), time.time(), ()))
        except (zmq.ZMQError, ValueError):  # ZeroMQ full: the broker is away, nothing to wait for
            return
        if tracker is not None:
            self._held.append((tracker, self._untracked, time.monotonic()))
            self._untracked = 0

    def settle(self, timeout: float) -> bool:
        """Wait until ZeroMQ has written every frame, unless it has stopped writing (broker away)."""
        deadline = time.monotonic() + timeout
        self._forget_written()
        if self._untracked and not self._held:  # sent by drains nobody waited for
            self._vouch()
        while True:
            self._forget_written()
            if not self._held:
                return not self._untracked  # untracked bytes (a last frame refused): cannot tell
            now = time.monotonic()
            if now >= deadline or now - self._held[-1][2] > SETTLE_WHEN_STALLED:
                return False
            time.sleep(0.0005)

    def tick(self) -> None:
        if self.link is not None:
            self.link.check()

    def _waiting(self) -> str:
        return f"{self.held_bytes:,} bytes wait in ZeroMQ (at most {self.max_bytes:,}; then dropped and counted)"

    @property
    def socket(self) -> zmq.Socket[bytes] | None:
        """The PUSH socket, once :meth:`open` made it (for an owner that watches its connection)."""
        return self._socket

    def close(self, linger: float) -> None:
        if self.link is not None:
            self.link.close()
        if self._socket is not None:
            self._socket.close(linger=int(linger * 1000))
            self._socket = None
        if self._context is not None:
            self._context.term()  # waits up to the linger for delivery
            self._context = None
        self._held.clear()
        self.held_bytes = self._untracked = 0
        self._last_level = b""

    def fork_child(self) -> ZmqTransport:
        """A context made before fork is unusable in the child: a fresh transport of its own."""
        return ZmqTransport(
            self.endpoint,
            self.hwm,
            self.linger,
            self.max_bytes,
            curve=self.curve,
            watch_link=self.watch_link,
            before_connect=self.before_connect,
        )

    def _forget_written(self) -> None:
        held = self._held
        while held and held[0][0].done:
            self.held_bytes -= held.popleft()[1]

    def _report_failure(self, reason: str) -> None:
        """Log the start of a failure once, not every message (logs must not flood)."""
        if not self._failing:
            self._failing = True
            log.warning(
                "zibrato: cannot queue measurements for %s (%s); dropping and counting them", self.endpoint, reason
            )
