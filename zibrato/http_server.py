"""The one HTTP server every daemon serves with (l2met drain, zibrato-web, zibrato-prometheus).

``http.server.ThreadingHTTPServer`` alone gives a thread to every connection
for as long as the peer likes: about a thousand half-open connections use up
a 1,024-descriptor limit (supervisord's and systemd's default), after which
``accept`` fails in a busy loop and nothing is answered, not even the
daemon's status port. :class:`GuardedHTTPServer` adds what a server facing
the network needs (:class:`HttpLimits`):

* a **connection cap**: past it, the connection that has waited longest for
  its request's headers is closed to make room (``http_evicted_connections``),
  so a flood of half-open connections cannot lock out a client that sends
  its request at once; when every connection is busy with a request, the new
  one gets a 503 and is closed (``http_refused_connections``);
* a **header timeout**: a request line and headers not complete within
  ``header_timeout`` seconds of the connection (total, not per read: a client
  dripping a byte at a time is cut too) close it (``http_header_timeouts``);
* an **idle timeout**: a kept-alive connection whose next request's headers
  do not arrive within ``idle_timeout`` seconds of the last answer is closed
  (``http_idle_closed``);
* **size limits**: a request line over ``max_request_line`` bytes gets 414,
  headers over ``max_header_bytes`` 431 (``http_oversized_requests``);
* a client that goes away mid-answer (a scraper's timeout) is counted
  (``http_client_disconnects``) and logged in at most one line a minute, never
  with a traceback.

Every refusal is logged, rate-limited. :meth:`GuardedHTTPServer.figures`
returns these counters (the ``http_*`` keys of each daemon's status) and
``http_connections`` / ``http_max_connections``.

It also holds the ``Host`` check that stops DNS rebinding
(:func:`host_allowed`): a server bound to loopback answers only requests for
a loopback name or one of the names it is told to accept.
"""

from __future__ import annotations

import errno
import http.client
import ipaddress
import logging
import socket
import sys
import threading
import time
from collections.abc import Iterable
from dataclasses import dataclass
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from .runtime import RateLimitedLog

LOOPBACK_NAMES = ("localhost", "localhost.")
DEFAULT_MAX_CONNECTIONS = 200  # well below a 1,024-descriptor limit, far above what a scraper or a page needs
DEFAULT_HEADER_TIMEOUT = 10.0
DEFAULT_IDLE_TIMEOUT = 30.0
_DISCONNECTS = (BrokenPipeError, ConnectionResetError, ConnectionAbortedError, TimeoutError)
_REFUSAL = b"HTTP/1.1 503 Service Unavailable\r\nContent-Length: 0\r\nConnection: close\r\nRetry-After: 1\r\n\r\n"


@dataclass(frozen=True)
class HttpLimits:
    """What one server tolerates from its clients (see the module docstring)."""

    max_connections: int = DEFAULT_MAX_CONNECTIONS
    header_timeout: float = DEFAULT_HEADER_TIMEOUT
    idle_timeout: float = DEFAULT_IDLE_TIMEOUT
    max_request_line: int = 8 * 1024
    max_header_bytes: int = 64 * 1024

    def __post_init__(self) -> None:
        if self.max_connections < 1 or not (self.header_timeout > 0 and self.idle_timeout > 0):
            raise ValueError("the connection cap and the timeouts must be positive")


# --- Host header (DNS rebinding) --------------------------------------------------------


def is_loopback(host: str) -> bool:
    if host.lower() in LOOPBACK_NAMES:
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def host_of(header: str) -> str:
    """The host part of a Host header: 'a:80' -> 'a', '[::1]:80' -> '::1'."""
    if header.startswith("["):
        return header[1:].partition("]")[0]
    return header.rpartition(":")[0] if header.count(":") == 1 else header


def host_allowed(header: str | None, loopback_only: bool, allowed: Iterable[str] = ()) -> bool:
    """Whether a request with this ``Host`` may be answered by a server bound to loopback (or not).

    A server bound to a loopback address answers only loopback names and the
    names in ``allowed`` (case-insensitive); a web page elsewhere that
    rebinds its own name to 127.0.0.1 then gets 403, not the data.
    """
    if not loopback_only:
        return True
    host = host_of(header or "").lower()
    return is_loopback(host) or host in {name.lower() for name in allowed}


# --- the server ---------------------------------------------------------------------------


class _Connection:
    __slots__ = ("deadline", "first", "sock", "state")

    def __init__(self, sock: socket.socket, deadline: float) -> None:
        self.sock, self.deadline, self.state, self.first = sock, deadline, "headers", True


class GuardedHTTPServer(ThreadingHTTPServer):
    """A ThreadingHTTPServer with a connection cap, timeouts and size limits; handlers subclass GuardedHandler."""

    daemon_threads = True
    block_on_close = False
    allow_reuse_address = True
    request_queue_size = 128  # socketserver's 5 makes a burst of connections wait seconds for a SYN retry

    def __init__(
        self,
        address: tuple[str, int],
        handler: type[GuardedHandler],
        *,
        limits: HttpLimits | None = None,
        log: logging.Logger | None = None,
    ) -> None:
        self.address_family = socket.AF_INET6 if ":" in address[0] else socket.AF_INET
        self.limits = limits or HttpLimits()
        self.log = log or logging.getLogger("zibrato.http")
        self._refusals = RateLimitedLog(self.log, 10.0)
        self._disconnects = RateLimitedLog(self.log, 60.0)
        self._lock = threading.Lock()
        self._connections: dict[socket.socket, _Connection] = {}
        self._closed = threading.Event()
        self.counts = {
            "http_refused_connections": 0,
            "http_evicted_connections": 0,
            "http_header_timeouts": 0,
            "http_idle_closed": 0,
            "http_oversized_requests": 0,
            "http_client_disconnects": 0,
        }
        super().__init__(address, handler)
        self._reaper = threading.Thread(target=self._reap, name="zibrato-http-reaper", daemon=True)
        self._reaper.start()

    def figures(self) -> dict[str, Any]:
        with self._lock:
            live = len(self._connections)
        return {**self.counts, "http_connections": live, "http_max_connections": self.limits.max_connections}

    def count_refusal(self, message: str, *args: object) -> None:
        """Log a refusal counted elsewhere (rate-limited, with the others)."""
        self._refusals.warning(message, *args)

    def count(self, key: str, message: str | None = None, *args: object) -> None:
        with self._lock:
            self.counts[key] += 1
        if message is not None:
            self._refusals.warning(message, *args)

    # --- accepting ---------------------------------------------------------------

    def get_request(self) -> tuple[socket.socket, Any]:
        try:
            return super().get_request()
        except OSError as error:
            if error.errno in (errno.EMFILE, errno.ENFILE, errno.ENOBUFS, errno.ENOMEM):
                self._refusals.warning("cannot accept a connection: %s (out of descriptors?)", error.strerror)
                time.sleep(0.05)  # not a busy loop: the selector would report the same backlog at once
            raise

    def process_request(self, request: Any, client_address: Any) -> None:
        sock: socket.socket = request
        now = time.monotonic()
        evicted: _Connection | None = None
        with self._lock:
            if len(self._connections) >= self.limits.max_connections:
                waiting = [c for c in self._connections.values() if c.state != "busy"]
                if not waiting:
                    self.counts["http_refused_connections"] += 1
                    refused = True
                else:
                    evicted = min(waiting, key=lambda c: c.deadline)
                    del self._connections[evicted.sock]
                    self.counts["http_evicted_connections"] += 1
                    refused = False
            else:
                refused = False
            if not refused:
                self._connections[sock] = _Connection(sock, now + self.limits.header_timeout)
        if evicted is not None:
            _cut(evicted.sock)
            self._refusals.warning(
                "%d connections (the cap): closed the one waiting longest for its request's headers",
                self.limits.max_connections,
            )
        if refused:
            self._refusals.warning(
                "refused a connection from %s: %d connections, each busy with a request (the cap)",
                client_address[0],
                self.limits.max_connections,
            )
            try:
                sock.setblocking(False)
                sock.send(_REFUSAL)
            except OSError:
                pass
            self.shutdown_request(sock)
            return
        super().process_request(request, client_address)

    def shutdown_request(self, request: Any) -> None:
        with self._lock:
            self._connections.pop(request, None)
        super().shutdown_request(request)

    def server_close(self) -> None:
        self._closed.set()
        super().server_close()
        with self._lock:
            live = list(self._connections)
        for sock in live:  # end the handlers waiting on their clients
            _cut(sock)

    # --- the handlers' side --------------------------------------------------------

    def _mark(self, sock: socket.socket, state: str) -> bool:
        """busy (headers read), or waiting for the next request (idle); False if already cut."""
        with self._lock:
            connection = self._connections.get(sock)
            if connection is None:
                return False
            connection.state = state
            if state == "idle":
                connection.first = False
                connection.deadline = time.monotonic() + self.limits.idle_timeout
            return True

    def _reap(self) -> None:
        """Close the connections past their header or idle deadline (one thread per server)."""
        step = min(0.5, self.limits.header_timeout / 4, self.limits.idle_timeout / 4)
        while not self._closed.wait(step):
            now = time.monotonic()
            with self._lock:
                expired = [c for c in self._connections.values() if c.state != "busy" and c.deadline <= now]
                for connection in expired:
                    del self._connections[connection.sock]
                    key = "http_header_timeouts" if connection.state == "headers" else "http_idle_closed"
                    self.counts[key] += 1
            for connection in expired:
                _cut(connection.sock)
            timeouts = sum(1 for c in expired if c.state == "headers")
            if timeouts:
                self._refusals.warning(
                    "closed %d connection(s) whose request headers took over %g s",
                    timeouts,
                    self.limits.header_timeout,
                )

    def handle_error(self, request: Any, client_address: Any) -> None:
        """A client that went away is counted in one rate-limited line; anything else is a bug: logged whole."""
        error = sys.exc_info()[1]
        if isinstance(error, _DISCONNECTS) or (isinstance(error, OSError) and error.errno == errno.EBADF):
            self.count("http_client_disconnects")
            self._disconnects.warning("a client went away before its answer was sent (%s)", error.__class__.__name__)
            return
        self.log.exception("answering %s failed", client_address[0] if client_address else "a client")


def _cut(sock: socket.socket) -> None:
    """Shut a connection down from another thread: its handler's blocked read ends at once."""
    try:
        sock.shutdown(socket.SHUT_RDWR)
    except OSError:
        pass


class GuardedHandler(BaseHTTPRequestHandler):
    """BaseHTTPRequestHandler reading requests within the server's :class:`HttpLimits`."""

    server: GuardedHTTPServer

    def setup(self) -> None:
        limits = self.server.limits
        super().setup()
        self.connection.settimeout(max(limits.header_timeout, limits.idle_timeout))  # per read or write: a backstop

    def handle_one_request(self) -> None:
        server, limits = self.server, self.server.limits
        try:
            self.raw_requestline = self.rfile.readline(limits.max_request_line + 1)
            if len(self.raw_requestline) > limits.max_request_line:
                self.requestline = self.request_version = self.command = ""
                server.count("http_oversized_requests", "refused a request line over %d bytes", limits.max_request_line)
                self.send_error(HTTPStatus.REQUEST_URI_TOO_LONG)
                self.close_connection = True
                return
            if not self.raw_requestline:
                self.close_connection = True
                return
            raw, self.rfile = self.rfile, _HeaderLimit(self.rfile, limits.max_header_bytes)  # type: ignore[assignment]
            try:
                parsed = self.parse_request()
            finally:
                self.rfile = raw
            if not parsed:
                self.close_connection = True
                return
            if not server._mark(self.connection, "busy"):
                self.close_connection = True  # cut (evicted or timed out) while its headers arrived
                return
            method = getattr(self, "do_" + self.command, None)
            if method is None:
                self.send_error(HTTPStatus.NOT_IMPLEMENTED, f"Unsupported method ({self.command!r})")
                return
            method()
            self.wfile.flush()
            if not self.close_connection:
                server._mark(self.connection, "idle")
        except _DISCONNECTS:
            self.close_connection = True
            server.count("http_client_disconnects")
            server._disconnects.warning("a client went away before its request was answered")

    def send_error(self, code: int, message: str | None = None, explain: str | None = None) -> None:
        if code == HTTPStatus.REQUEST_HEADER_FIELDS_TOO_LARGE:
            self.server.count("http_oversized_requests", "refused a request: %s", message or "headers too large")
        try:
            super().send_error(code, message, explain)
        except _DISCONNECTS:
            self.close_connection = True


class _HeaderLimit:
    """The request's reader while its headers are read: past ``limit`` bytes, the headers are too large."""

    def __init__(self, raw: Any, limit: int) -> None:
        self.raw, self.left = raw, limit

    def readline(self, size: int = -1) -> bytes:
        line: bytes = self.raw.readline(min(size, self.left + 1) if size >= 0 else self.left + 1)
        self.left -= len(line)
        if self.left < 0:
            raise http.client.LineTooLong("headers")
        return line

    def __getattr__(self, name: str) -> Any:
        return getattr(self.raw, name)


__all__ = [
    "DEFAULT_HEADER_TIMEOUT",
    "DEFAULT_IDLE_TIMEOUT",
    "DEFAULT_MAX_CONNECTIONS",
    "GuardedHTTPServer",
    "GuardedHandler",
    "HttpLimits",
    "host_allowed",
    "host_of",
    "is_loopback",
]
