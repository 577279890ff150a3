"""TCP statsd: newline-delimited lines over connections the listener's loop polls.

A connection costs a descriptor for as long as the peer keeps it, so without
limits a thousand idle connections (or fewer, under a 1,024-descriptor
limit) lock every real sender out, silently. Here:

* a connection with nothing received for ``idle_timeout`` seconds is closed
  (``tcp_idle_closed``): statsd clients reconnect on their next send;
* at most ``max_connections`` are open; past that (or when ``accept`` finds no
  descriptor left) the connection idle longest is closed to make room
  (``tcp_evicted``), so a new sender always gets in; an ``accept`` that still
  fails is counted (``tcp_refused``);
* each of these is logged, rate-limited.
"""

from __future__ import annotations

import errno
import logging
import socket
import time

import zmq

from ..runtime import RateLimitedLog
from .config import DEFAULT_MAX_TCP_CONNECTIONS, DEFAULT_TCP_IDLE_TIMEOUT
from .inbox import Inbox

log = logging.getLogger("zibrato.listen")

_MAX_READ = 65536
_OUT_OF_DESCRIPTORS = (errno.EMFILE, errno.ENFILE, errno.ENOBUFS, errno.ENOMEM)


class TcpConnections:
    """The open TCP statsd connections: their partial lines, last activity, and the limits."""

    def __init__(
        self, inbox: Inbox, by_fd: dict[int, socket.socket], idle_timeout: float, max_connections: int
    ) -> None:
        self.inbox = inbox
        #: the listener's map of polled descriptors: connections are added and removed here
        self.by_fd = by_fd
        self.idle_timeout, self.max_connections = idle_timeout, max_connections
        self.buffers: dict[socket.socket, bytearray] = {}
        self.last_read: dict[socket.socket, float] = {}
        self.skipping: set[socket.socket] = set()  # connections inside an overlong line
        self._log = RateLimitedLog(log, 10.0)

    def __len__(self) -> int:
        return len(self.buffers)

    def accept(self, server: socket.socket, poller: zmq.Poller) -> None:
        figures = self.inbox.figures
        if len(self.buffers) >= self.max_connections:
            self._evict_idlest(poller, "the connection cap (--tcp-max-connections) is reached")
        try:
            conn, _ = server.accept()
        except (BlockingIOError, InterruptedError):
            return
        except OSError as error:
            figures["tcp_refused"] += 1
            if error.errno in _OUT_OF_DESCRIPTORS and self.buffers:
                self._evict_idlest(poller, f"no descriptor left ({error.strerror})")
            self._log.warning("cannot accept a TCP statsd connection: %s", error.strerror or error)
            return
        conn.setblocking(False)
        self.buffers[conn] = bytearray()
        self.last_read[conn] = time.monotonic()
        self.by_fd[conn.fileno()] = conn
        figures["tcp_connections"] += 1
        poller.register(conn, zmq.POLLIN)

    def read(self, conn: socket.socket, poller: zmq.Poller) -> None:
        """Newline-delimited lines; a partial line waits for the rest (bounded by the line limit)."""
        inbox = self.inbox
        buffer = self.buffers[conn]
        try:
            data = conn.recv(_MAX_READ)
        except (BlockingIOError, InterruptedError):
            return
        except OSError:
            data = b""
        if not data:  # closed by the peer: what is left is a last line without its newline
            self.close(conn, poller, last_line=True)
            return
        self.last_read[conn] = time.monotonic()
        buffer += data
        if conn in self.skipping:  # the rest of an overlong line: up to its newline
            newline = buffer.find(b"\n")
            if newline < 0:
                buffer.clear()
                return
            del buffer[: newline + 1]
            self.skipping.discard(conn)
        end = buffer.rfind(b"\n")
        if end >= 0:
            inbox.feed_statsd(bytes(buffer[:end]))
            del buffer[: end + 1]
        if len(buffer) > inbox.config.max_line_length:
            inbox.statsd_rejects("line too long", bytes(buffer[:80]))
            buffer.clear()
            self.skipping.add(conn)

    def close(self, conn: socket.socket, poller: zmq.Poller | None, last_line: bool = False) -> None:
        """Close one connection; ``last_line``: the peer closed it, so what is left is its last line.

        A connection closed here (idle, evicted, at stop) may hold the start of
        a line whose end never came: it is not parsed (``x:1|c`` of ``x:1|c|@0.1``
        would count 1 instead of 10): it is counted as rejected ("line unfinished at close").
        """
        buffer = self.buffers.pop(conn, None)
        if buffer and conn not in self.skipping:
            if last_line:
                self.inbox.feed_statsd(bytes(buffer))
            else:
                self.inbox.statsd_rejects("line unfinished at close", bytes(buffer[:80]))
        self.last_read.pop(conn, None)
        self.skipping.discard(conn)
        if poller is not None:
            try:
                poller.unregister(conn)
            except KeyError:
                pass
        self.by_fd.pop(conn.fileno(), None)
        conn.close()

    def close_idle(self, poller: zmq.Poller) -> None:
        """Close the connections with nothing received for ``idle_timeout`` seconds."""
        cutoff = time.monotonic() - self.idle_timeout
        idle = [conn for conn, last in self.last_read.items() if last < cutoff]
        for conn in idle:
            self.close(conn, poller)
        if idle:
            self.inbox.figures["tcp_idle_closed"] += len(idle)
            self._log.warning(
                "closed %d TCP statsd connection(s) idle for %g s (--tcp-idle-timeout)", len(idle), self.idle_timeout
            )

    def close_all(self) -> None:
        for conn in list(self.buffers):
            self.close(conn, None)

    def _evict_idlest(self, poller: zmq.Poller, why: str) -> None:
        if not self.last_read:
            return
        idlest = min(self.last_read, key=self.last_read.__getitem__)
        self.close(idlest, poller)
        self.inbox.figures["tcp_evicted"] += 1
        self._log.warning("%s: closed the TCP statsd connection idle longest to let a new one in", why)


__all__ = ["DEFAULT_MAX_TCP_CONNECTIONS", "DEFAULT_TCP_IDLE_TIMEOUT", "TcpConnections"]
