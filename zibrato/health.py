"""What "healthy" means for every daemon, said once: the broker, the listener and the workers.

`zibrato status` shows ``healthy`` and ``problems``, and the three daemons
used to decide them three ways (the broker could answer unhealthy with no
problem named). Here:

* :func:`judged`: ``healthy`` is true exactly when ``problems`` is empty;
  each problem is a sentence an operator can act on;
* :class:`Connection`: since when a connect()ed socket has had no peer
  (libzmq's socket monitor events, several brokers counted as one link),
  and the problem it becomes after :data:`UNCONNECTED_SECONDS`;
* :class:`Rises`: a running total that went up recently (kernel drops,
  values dropped) is a problem for :data:`RISE_WINDOW` seconds;
* :func:`bind_status_port` and :func:`status_server`: the status socket on
  loopback, a port in use being one clear start-up error
  (:class:`StatusPortError`).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable
from typing import Any

import zmq

from .runtime import StatusServer, bind_status, describe_bind_error

#: the status socket listens on loopback only (any local user may ask; nobody else)
STATUS_HOST = "127.0.0.1"
#: not connected to the broker this long: unhealthy
UNCONNECTED_SECONDS = 10.0
#: a running total that rose within this many seconds is a problem
RISE_WINDOW = 60.0


class StatusPortError(RuntimeError):
    """The status port cannot be bound (the message says why: usually another daemon has it)."""


def judged(figures: dict[str, Any], problems: Iterable[str]) -> dict[str, Any]:
    """``figures`` with ``healthy`` and ``problems`` set the one way every daemon sets them."""
    named = list(problems)
    figures.update(healthy=not named, problems=named)
    return figures


class Connection:
    """Whether a connect()ed socket has a peer, and since when it has none.

    Fed with libzmq's monitor events (:meth:`event`); a socket connected to
    several brokers is unconnected only when it has none. The clock is
    ``time.monotonic`` (a wall-clock step must not make a link look old).
    """

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self.clock = clock
        self.connections = 0
        #: since when no peer is connected (monotonic seconds), None while one is
        self.unconnected_since: float | None = clock()

    @property
    def connected(self) -> bool:
        return self.unconnected_since is None

    def restart(self) -> None:
        """A new socket: unconnected from now until its first connection."""
        self.connections, self.unconnected_since = 0, self.clock()

    def assume_connected(self) -> None:
        """No broker to be away from (the embedded runtime is fed in-process)."""
        self.unconnected_since = None

    def event(self, event: int) -> str | None:
        """Count one monitor event; ``"connected"`` or ``"lost"`` when the link changed state."""
        if event == zmq.EVENT_CONNECTED:
            self.connections += 1
            was_unconnected = self.unconnected_since is not None
            self.unconnected_since = None
            return "connected" if was_unconnected else None
        if event == zmq.EVENT_DISCONNECTED:
            self.connections = max(0, self.connections - 1)
            if self.connections or self.unconnected_since is not None:
                return None
            self.unconnected_since = self.clock()
            return "lost"
        return None

    def unconnected_for(self) -> float | None:
        """Seconds without a peer, or None while connected."""
        since = self.unconnected_since
        return None if since is None else self.clock() - since

    def problem(self, endpoint: str, hint: str, after: float = UNCONNECTED_SECONDS) -> str | None:
        """The status problem once unconnected longer than ``after`` seconds."""
        waited = self.unconnected_for()
        if waited is None or waited <= after:
            return None
        return f"not connected to the broker at {endpoint} for {waited:.0f} s: is it running there ({hint})?"


class Rises:
    """Running totals that are a problem while they rose within the last ``window`` seconds."""

    def __init__(self, window: float = RISE_WINDOW, clock: Callable[[], float] = time.monotonic) -> None:
        self.window, self.clock = window, clock
        self._seen: dict[str, tuple[float, float | None]] = {}

    def rose(self, key: str, value: float) -> bool:
        """True when ``value`` (the total now) went up within the window; remembers it."""
        now = self.clock()
        last_value, last_rise = self._seen.get(key, (0, None))
        if value > last_value:
            last_rise = now
        self._seen[key] = (value, last_rise)
        return last_rise is not None and now - last_rise < self.window

    def problems(self, figures: dict[str, Any], keys: Iterable[str]) -> list[str]:
        """One sentence per figure of ``keys`` that rose within the window."""
        return [
            f"{key} rose in the last {self.window:g} s: {figures[key]}"
            for key in keys
            if self.rose(key, figures.get(key, 0))
        ]


def bind_status_port(context: zmq.Context[Any], port: int | None) -> zmq.Socket[Any] | None:
    """The status (REP) socket on loopback, None without a port; StatusPortError when it cannot bind."""
    try:
        return bind_status(context, STATUS_HOST, port)
    except zmq.ZMQError as error:
        raise StatusPortError(describe_bind_error(f"tcp://{STATUS_HOST}:{port}", error)) from None


def status_server(context: zmq.Context[Any], port: int | None, figures: Callable[[], dict[str, Any]]) -> StatusServer:
    """A status server answering from its own thread (start it); StatusPortError when it cannot bind."""
    try:
        return StatusServer(context, STATUS_HOST, port, figures)
    except zmq.ZMQError as error:
        raise StatusPortError(describe_bind_error(f"tcp://{STATUS_HOST}:{port}", error)) from None


__all__ = [
    "Connection",
    "RISE_WINDOW",
    "Rises",
    "STATUS_HOST",
    "StatusPortError",
    "UNCONNECTED_SECONDS",
    "bind_status_port",
    "judged",
    "status_server",
]
