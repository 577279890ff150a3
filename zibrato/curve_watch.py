"""The broker's view of its CURVE connections: failed handshakes counted, removed keys cut.

ZeroMQ hides connections from the application, and a PULL or PUB socket
has no call to close one peer. Two things still have to be seen and done:

* **Handshakes that fail** (a plain client, a client with the wrong server
  key, junk) never reach the ZAP handler, so :class:`~zibrato.curve.ServerAuth`
  cannot count them. The sockets' monitors report them
  (``EVENT_HANDSHAKE_FAILED_*``): counted by kind in
  ``curve_handshakes_failed`` and logged, rate-limited.
* **A removed key's live connections**: a CURVE key is checked once, at the
  handshake, so removing it from the allowed directory refuses only its
  *next* connection. The monitors report each accepted connection's
  descriptor (``EVENT_ACCEPTED``), from which the peer's address is read;
  the ZAP handler records from which addresses each key authenticated. When
  a key is removed, every live connection from those addresses is shut down
  (``curve_connections_cut``); libzmq then closes it and the client
  reconnects, to be checked again: a removed key is refused, an allowed one
  (another process on the same host) is back within ZeroMQ's reconnect
  interval (100 ms), losing at most what was in flight on that connection.

The precision is the peer's address: ZAP tells which address a key came
from, not which connection (several clients on one host share it), so all
connections from that address are cut rather than risk keeping the removed
one.
"""

from __future__ import annotations

import logging
import os
import socket
from typing import Any

import zmq
from zmq.utils.monitor import recv_monitor_message

from .runtime import RateLimitedLog

log = logging.getLogger("zibrato.curve")

_FAILURES = {
    zmq.EVENT_HANDSHAKE_FAILED_NO_DETAIL: "no_detail",
    zmq.EVENT_HANDSHAKE_FAILED_PROTOCOL: "protocol",
    zmq.EVENT_HANDSHAKE_FAILED_AUTH: "auth",
}
_EVENTS = zmq.EVENT_ACCEPTED | zmq.EVENT_DISCONNECTED | zmq.EVENT_CLOSED
for _event in _FAILURES:
    _EVENTS |= _event


class ConnectionWatch:
    """Monitors the broker's CURVE sockets; :meth:`poll` from the broker's loop, :meth:`cut` on key removal."""

    def __init__(self) -> None:
        self._monitors: list[zmq.Socket[bytes]] = []
        self._peers: dict[int, str] = {}  # descriptor -> peer address of each live accepted connection
        self.failed: dict[str, int] = {kind: 0 for kind in _FAILURES.values()}
        self.cut_connections = 0
        self._failure_log = RateLimitedLog(log, 10.0)

    def watch(self, sock: zmq.Socket[bytes]) -> None:
        """Monitor ``sock`` (call it in the thread that owns ``sock``, before another thread uses it)."""
        self._monitors.append(sock.get_monitor_socket(_EVENTS))

    def poll(self) -> None:
        """Read every pending monitor event (never blocks)."""
        for monitor in self._monitors:
            while monitor.poll(0):
                try:
                    event = recv_monitor_message(monitor, zmq.NOBLOCK)
                except zmq.Again:
                    break
                self._handle(event)

    def _handle(self, event: Any) -> None:
        kind, value = event["event"], event["value"]
        if kind == zmq.EVENT_ACCEPTED:
            peer = _peer_address(value)
            if peer is not None:
                self._peers[value] = peer
        elif kind in (zmq.EVENT_DISCONNECTED, zmq.EVENT_CLOSED):
            self._peers.pop(value, None)
        elif kind in _FAILURES:
            name = _FAILURES[kind]
            self.failed[name] += 1
            self._failure_log.warning(
                "a client failed the CURVE handshake on %s (%s, code %s): a plain client, the wrong "
                "server key, or not ZeroMQ (%d failed so far)",
                event["endpoint"].decode("utf-8", "replace"),
                name,
                value,
                sum(self.failed.values()),
            )

    def cut(self, addresses: set[str]) -> int:
        """Shut down every live connection from ``addresses``; how many were cut."""
        self.poll()  # the latest connections first
        cut = 0
        for fd, peer in list(self._peers.items()):
            if peer not in addresses:
                continue
            if _peer_address(fd) != peer:  # closed, or the descriptor reused: not ours to cut
                self._peers.pop(fd, None)
                continue
            try:
                with socket.socket(fileno=os.dup(fd)) as conn:
                    conn.shutdown(socket.SHUT_RDWR)  # libzmq sees the end and closes its descriptor
                cut += 1
            except OSError:
                pass
            self._peers.pop(fd, None)
        self.cut_connections += cut
        return cut

    def close(self) -> None:
        for monitor in self._monitors:
            monitor.close(linger=0)
        self._monitors.clear()

    def figures(self) -> dict[str, Any]:
        return {
            "curve_handshakes_failed": dict(self.failed),
            "curve_connections_cut": self.cut_connections,
            "curve_connections": len(self._peers),
        }


def _peer_address(fd: int) -> str | None:
    """The peer IP of a connected TCP descriptor (None if it is not one any more)."""
    try:
        with socket.socket(fileno=os.dup(fd)) as conn:
            return str(conn.getpeername()[0])
    except (OSError, IndexError, TypeError):
        return None
