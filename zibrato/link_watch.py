"""Say in the log what `zibrato status` alone would hide: no broker, or levels that hear nothing.

A worker or `zibrato-listen` pointed at the wrong host used to log "ready" and
then nothing; a worker started with `--levels infoo` printed nothing, forever.
These watches turn both into one warning per episode:

* :class:`LinkWatch` after 10 s without a connection to the broker (a broker
  that stops cleanly, e.g. supervisord stopping it first, is only an info line
  unless it stays away), and when the subscribed levels received nothing for
  3 flushes while connected;
* :class:`PushLinkMonitor` follows a PUSH socket's connection with libzmq's
  socket monitor, for the listener (a worker follows its own SUB socket).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Sequence

import zmq
from zmq.utils.monitor import recv_monitor_message

from .health import Connection

WARN_AFTER_SECONDS = 10.0
SILENT_FLUSHES = 3


class LinkWatch:
    """One warning per episode; ``unconnected`` and ``flushed`` are called from the owner's loop."""

    def __init__(
        self,
        log: logging.Logger,
        endpoint: str,
        hint: str,
        levels: Sequence[str] = (),
        warn_after: float = WARN_AFTER_SECONDS,
        silent_flushes: int = SILENT_FLUSHES,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.log, self.endpoint, self.hint = log, endpoint, hint
        self.levels = tuple(levels)
        self.warn_after, self.silent_flushes, self.clock = warn_after, silent_flushes, clock
        self._warned_unconnected = False
        self._received_total = 0
        self._silent = 0
        self.warnings = 0

    def unconnected(self, since: float | None) -> None:
        """``since``: when the connection was lost (monotonic), or None while connected."""
        if since is None:
            self._warned_unconnected = False
            return
        waited = self.clock() - since
        if not self._warned_unconnected and waited >= self.warn_after:
            self._warned_unconnected = True
            self.warnings += 1
            self.log.warning(
                "no connection to the broker at %s for %.0f s: is it running there (%s)? Nothing is %s meanwhile.",
                self.endpoint,
                waited,
                self.hint,
                "sent (it waits in the send queue up to its high-water mark)" if not self.levels else "received",
            )

    def flushed(self, received_total: int, connected: bool) -> None:
        """After each flush: ``received_total`` counts every measurement received so far."""
        new = received_total - self._received_total
        self._received_total = received_total
        if new > 0 or not connected:
            self._silent = 0
            return
        self._silent += 1
        if self._silent == self.silent_flushes:
            self.warnings += 1
            self.log.warning(
                "levels %s received nothing for %d flushes while connected to the broker at %s: "
                "does anything send on them? Levels match exactly (in lower case); "
                "`zibrato status` on the broker's status port lists levels sent that no worker subscribes to.",
                ",".join(self.levels),
                self.silent_flushes,
                self.endpoint,
            )


class PushLinkMonitor:
    """Whether a connect()ed socket has a peer, from libzmq's socket monitor (no thread, polled).

    The counting is :class:`zibrato.health.Connection`'s, the one a worker's SUB socket uses too.
    """

    EVENTS = zmq.EVENT_CONNECTED | zmq.EVENT_DISCONNECTED

    def __init__(self, sock: zmq.Socket[bytes], clock: Callable[[], float] = time.monotonic) -> None:
        self.clock = clock
        self.monitor = sock.get_monitor_socket(self.EVENTS)
        self._sock = sock
        self.link = Connection(clock)

    @property
    def connections(self) -> int:
        return self.link.connections

    @property
    def unconnected_since(self) -> float | None:
        return self.link.unconnected_since

    def poll(self) -> float | None:
        """Read the pending events; return when the connection was lost (None while connected)."""
        while self.monitor.poll(0):
            self.link.event(recv_monitor_message(self.monitor)["event"])
        return self.link.unconnected_since

    def close(self) -> None:
        try:
            self._sock.disable_monitor()
        except zmq.ZMQError:  # the socket is already closed
            pass
        self.monitor.close(linger=0)
