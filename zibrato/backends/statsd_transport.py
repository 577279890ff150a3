"""statsd's two transports: UDP datagrams (fire and forget) and one TCP stream.

Both take payloads already packed (:func:`pack`: lines joined by newlines,
never split) and keep their figures in the dict the destination hands them
(``lines_sent``, ``datagrams_sent``, ``bytes_sent``, ``send_errors``,
``lines_lost``, ``oversized_lines``, ``reconnects``), so ``zibrato status``
reads the same keys whichever is used.

* :class:`UdpTransport`: a send never blocks; what cannot be sent is counted
  and logged (rate-limited), never retried: a datagram refused by the kernel
  (the ICMP of an earlier one) is sent once more, then lost.
* :class:`TcpTransport`: one connection, reopened when statsd closed it; a
  write that fails raises :class:`~zibrato.delivery.Retryable`, so the
  delivery queue retries that chunk (and never the chunks already written).
"""

from __future__ import annotations

import errno
import logging
import select
import socket

from ..delivery import Retryable, request_timeout
from ..runtime import RateLimitedLog, printable

DEFAULT_MTU = 1432  # Etsy's advice for a LAN; 8932 with jumbo frames, 512 across the internet
MAX_UDP_PAYLOAD = 65507
STREAM_CHUNK = 65536  # bytes per TCP write; lines are never split across writes

#: (payload, the lines in it): what a transport sends
Payload = tuple[bytes, int]


def new_counts() -> dict[str, int]:
    """The figures both transports keep."""
    return dict(
        lines_sent=0, datagrams_sent=0, bytes_sent=0, send_errors=0, lines_lost=0, oversized_lines=0, reconnects=0
    )


class Transport:
    """What both transports share: the endpoint, the socket, the figures, the last error."""

    protocol = "udp"
    #: the largest payload :func:`pack` should make for this transport
    payload_limit = STREAM_CHUNK - 1

    def __init__(self, host: str, port: int, timeout: float, counts: dict[str, int], log: logging.Logger) -> None:
        self.host, self.port, self.timeout = host, port, timeout
        self.counts, self.log = counts, log
        self.sock: socket.socket | None = None
        self.last_error: str | None = None
        #: send errors in the last send (UDP: health reports them until a clean send)
        self.last_send_errors = 0

    @property
    def endpoint(self) -> str:
        return f"{self.protocol}://{self.host}:{self.port}"

    def open(self) -> socket.socket:
        raise NotImplementedError

    def send(self, payloads: list[Payload]) -> None:
        raise NotImplementedError

    def close(self) -> None:
        if self.sock is not None:
            self.sock.close()
            self.sock = None


class UdpTransport(Transport):
    """Datagrams of at most ``mtu`` bytes; never blocking, never retried."""

    protocol = "udp"

    def __init__(self, host: str, port: int, timeout: float, counts: dict[str, int], log: logging.Logger, mtu: int):
        super().__init__(host, port, timeout, counts, log)
        self.mtu = self.payload_limit = mtu
        self._send_log = RateLimitedLog(log)
        self._oversized_logged = False

    def open(self) -> socket.socket:
        self.close()
        family, _, _, _, address = socket.getaddrinfo(self.host, self.port, type=socket.SOCK_DGRAM)[0]
        sock = socket.socket(family, socket.SOCK_DGRAM)
        sock.setblocking(False)
        sock.connect(address)  # resolve once; lets the kernel report refused datagrams
        self.sock = sock
        return sock

    def send(self, payloads: list[Payload]) -> None:
        c = self.counts
        sock = self.sock
        if sock is None:
            try:
                sock = self.open()
            except OSError as error:
                c["send_errors"] += 1
                c["lines_lost"] += sum(n for _, n in payloads)
                self.last_send_errors = 1
                self.last_error = f"cannot resolve or reach {self.endpoint}: {describe(error)}"
                self._send_log.warning(
                    "%s: UDP is not retried (%d lines lost so far)", self.last_error, c["lines_lost"]
                )
                return
        errors = sum(self._send_one(sock, datagram, lines) for datagram, lines in payloads)
        self.last_send_errors = errors
        if errors:
            self._send_log.warning(
                "statsd at %s: %d send errors in this flush (%s); UDP is not retried (%d lines lost so far)",
                self.endpoint,
                errors,
                self.last_error,
                c["lines_lost"],
            )

    def _send_one(self, sock: socket.socket, datagram: bytes, lines: int) -> int:
        """Send one datagram; the number of send errors it met (0, 1 or 2)."""
        c = self.counts
        self._check_size(datagram)
        errors = 0
        for attempt in (1, 2):
            try:
                sock.send(datagram)
            except ConnectionRefusedError as error:
                # An earlier datagram was refused (ICMP port unreachable): the kernel reports
                # it on this send, which then did not go out. Once more, then it is lost.
                errors += 1
                c["send_errors"] += 1
                self.last_error = describe(error)
                if attempt == 2:
                    c["lines_lost"] += lines
                continue
            except OSError as error:  # EAGAIN (buffer full), ENOBUFS, EMSGSIZE ...
                c["send_errors"] += 1
                c["lines_lost"] += lines
                self.last_error = describe(error)
                return errors + 1
            c["datagrams_sent"] += 1
            c["lines_sent"] += lines
            c["bytes_sent"] += len(datagram)
            break
        return errors

    def _check_size(self, datagram: bytes) -> None:
        if len(datagram) <= self.mtu:
            return
        self.counts["oversized_lines"] += 1
        if not self._oversized_logged:
            self._oversized_logged = True
            self.log.warning(
                "a line of %d bytes does not fit --mtu %d: sent alone, it may be fragmented or dropped (%s...)",
                len(datagram),
                self.mtu,
                printable(datagram[:80]),
            )


class TcpTransport(Transport):
    """One persistent connection; newline-terminated chunks of at most :data:`STREAM_CHUNK` bytes."""

    protocol = "tcp"

    def open(self) -> socket.socket:
        self.close()
        sock = socket.create_connection((self.host, self.port), timeout=request_timeout(self.timeout))
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.sock = sock
        return sock

    def send(self, payloads: list[Payload]) -> None:
        """Write chunk after chunk; raise Retryable at the first that fails."""
        c = self.counts
        for chunk, lines in payloads:
            try:
                self._write(chunk + b"\n")
            except OSError as error:
                self.close()
                c["send_errors"] += 1
                self.last_error = f"{self.endpoint}: {describe(error)}"
                raise Retryable(f"cannot send to statsd at {self.last_error}") from None
            c["datagrams_sent"] += 1
            c["lines_sent"] += lines
            c["bytes_sent"] += len(chunk) + 1

    def _write(self, payload: bytes) -> None:
        """Write on the connection, opened anew if statsd closed it (statsd never writes back)."""
        sock = self.sock
        if sock is not None and _peer_closed(sock):
            self.log.info("statsd at %s closed the connection; reconnecting", self.endpoint)
            self.counts["reconnects"] += 1
            self.close()
            sock = None
        if sock is None:
            sock = self.open()
        sock.settimeout(request_timeout(self.timeout))
        sock.sendall(payload)


def pack(units: list[bytes], limit: int) -> list[tuple[bytes, int]]:
    """Join units with newlines into payloads of at most ``limit`` bytes, in order.

    Returns ``(payload, lines)`` pairs. A unit longer than ``limit`` travels
    alone (the caller logs it); units are never split.
    """
    payloads: list[tuple[bytes, int]] = []
    current: list[bytes] = []
    size = lines = 0
    for unit in units:
        length = len(unit)
        if current and size + 1 + length > limit:
            payloads.append((b"\n".join(current), lines))
            current, size, lines = [], 0, 0
        size += length + (1 if current else 0)
        current.append(unit)
        lines += unit.count(b"\n") + 1
    if current:
        payloads.append((b"\n".join(current), lines))
    return payloads


def _peer_closed(sock: socket.socket) -> bool:
    """True when the peer has closed or reset the connection (statsd never sends anything)."""
    try:
        readable, _, _ = select.select([sock], [], [], 0)
        if not readable:
            return False
        return not sock.recv(4096, socket.MSG_DONTWAIT)
    except BlockingIOError:
        return False
    except OSError:
        return True


def describe(error: OSError) -> str:
    """A socket error as one log-safe phrase."""
    if isinstance(error, socket.timeout):
        return "timed out"
    if error.errno == errno.ECONNREFUSED:
        return "connection refused (is statsd running?)"
    return printable(str(error) or error.__class__.__name__)
