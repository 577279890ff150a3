"""The client notices a broker it cannot reach, and says so once per episode.

`Zibrato(host='nosuch.invalid')` used to report ``sent 10 dropped 0`` and log
nothing: ZeroMQ queues for an absent peer and retries silently. The client's
PUSH socket is now followed with libzmq's socket monitor (polled by the
sender thread after each drain; no thread of its own): after
:data:`WARN_AFTER_SECONDS` without a connection, one warning through the
``zibrato`` logger names the broker, the reason (host not resolved, or
connection refused/unreachable) and what waits in ZeroMQ; when the broker is
reached again, one info line. ``Zibrato.broker_connected`` says the same.

While connected, the events are read at most every :data:`READ_EVERY_WHEN_CONNECTED`
seconds: at a low rate the sender wakes about once a second, and reading the
monitor after sleeping costs some 30 us of cold code each time (a tenth of the
wake), for news that is nearly always "still connected". A lost broker is
then noticed up to that much later (its warning comes 5 to 10 s after); an
unreached one is looked at every drain, so its return is noted at once.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable

import zmq
from zmq.utils.monitor import recv_monitor_message

log = logging.getLogger("zibrato")

WARN_AFTER_SECONDS = 5.0
#: while connected, the monitor's events are read at most this often (seconds)
READ_EVERY_WHEN_CONNECTED = 5.0
_EVENTS = zmq.EVENT_CONNECTED | zmq.EVENT_DISCONNECTED | zmq.EVENT_CONNECT_DELAYED | zmq.EVENT_CONNECT_RETRIED


class BrokerLink:
    """Whether a client's socket reaches its broker; one warning per episode of not reaching it."""

    def __init__(
        self,
        sock: zmq.Socket[bytes],
        endpoint: str,
        waiting: Callable[[], str],
        warn_after: float = WARN_AFTER_SECONDS,
        clock: Callable[[], float] = time.monotonic,
        read_every: float = READ_EVERY_WHEN_CONNECTED,
    ) -> None:
        self.endpoint, self.waiting, self.warn_after, self.clock = endpoint, waiting, warn_after, clock
        self.read_every = read_every
        self._next_read = 0.0  # while connected, events wait until then
        self._sock = sock
        self.monitor: zmq.Socket[bytes] | None = sock.get_monitor_socket(_EVENTS)
        self.connected = False
        self.unconnected_since = clock()
        self._tried_tcp = False  # a TCP connect was attempted (the host resolved)
        self._warned = False

    def check(self) -> None:
        """Read pending events; warn once an episode has lasted ``warn_after`` seconds."""
        monitor = self.monitor
        if monitor is None:
            return
        now = self.clock()
        if self.connected and now < self._next_read:
            return
        self._next_read = now + self.read_every
        while monitor.poll(0):
            event = recv_monitor_message(monitor)["event"]
            if event == zmq.EVENT_CONNECTED:
                if self._warned:
                    log.info("zibrato: reached the broker at %s again", self.endpoint)
                self.connected, self._warned, self._tried_tcp = True, False, False
            elif event == zmq.EVENT_DISCONNECTED and self.connected:
                self.connected, self.unconnected_since = False, self.clock()
            elif event == zmq.EVENT_CONNECT_DELAYED:
                self._tried_tcp = True
        waited = self.clock() - self.unconnected_since
        if not self.connected and not self._warned and waited >= self.warn_after:
            self._warned = True
            reason = "connection refused or unreachable" if self._tried_tcp else "host not resolved"
            log.warning(
                "zibrato: cannot reach the broker at %s for %.0f s (%s); retrying. %s",
                self.endpoint,
                waited,
                reason,
                self.waiting(),
            )

    def close(self) -> None:
        if self.monitor is not None:
            try:
                self._sock.disable_monitor()
            except zmq.ZMQError:  # the socket is already closed
                pass
            self.monitor.close(linger=0)
            self.monitor = None
