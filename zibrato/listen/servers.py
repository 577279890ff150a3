"""The listener daemon: sockets in, parsers in the middle, the publisher out.

One thread (the main one) owns the statsd sockets (UDP, TCP, unix
datagram), the status socket and the publisher, and polls them all with one
``zmq.Poller``; it drains what is readable, parses it into the pending
mapping, and every ``flush_interval`` (50 ms by default, like the Zibrato
client) hands that mapping to the publisher. The l2met HTTP drain and the
``--stdin`` reader run in their own threads and add to the same mapping
under a lock.

Nothing a sender does stops the loop: parsers never raise, a bad TCP peer
loses its connection only, and a slow broker costs dropped (and counted)
messages, never a blocked receive.
"""

from __future__ import annotations

import logging
import os
import socket
import stat
import sys
import threading
import time
from typing import Any, BinaryIO

import zmq

from ..health import Rises, bind_status_port, judged
from ..http_server import GuardedHTTPServer
from ..link_watch import LinkWatch
from ..runtime import answer_status
from .config import (
    DEFAULT_FLUSH_INTERVAL,
    DEFAULT_MAX_BODY,
    DEFAULT_MAX_TCP_CONNECTIONS,
    DEFAULT_RECEIVE_BUFFER,
    ListenConfig,
    split_address,
)
from .drain import drain_server
from .inbox import Inbox
from .publisher import Publisher
from .series import Pending, Series
from .tcp import TcpConnections

log = logging.getLogger("zibrato.listen")

SELF_LEVEL = "zibrato"
MAX_TCP_CONNECTIONS = DEFAULT_MAX_TCP_CONNECTIONS  # the default of --tcp-max-connections
_IDLE_CHECK_EVERY = 1.0
_DATAGRAMS_PER_WAKE = 2000  # bounded, so the flush and status stay on time
_MAX_DATAGRAM = 65536
_DONTWAIT = getattr(socket, "MSG_DONTWAIT", 0)
_PENDING_LIMIT = 200_000  # series; past it the pending values are published at once
_SELF_EVERY = 10.0
_DROPS_EVERY = 1.0


class Listener:
    """Owns the sockets, the parsers and the publisher; ``run`` until ``stop`` is set."""

    def __init__(self, config: ListenConfig, stdin: BinaryIO | None = None, stdout: BinaryIO | None = None) -> None:
        self.config = config
        self._stdin, self._stdout = stdin, stdout
        #: what every input adds to (the parsers, the pending values, the figures), under its lock
        self.inbox = inbox = Inbox(config)
        self.statsd, self.l2met = inbox.statsd, inbox.l2met
        self.statsd_rejects, self.l2met_rejects = inbox.statsd_rejects, inbox.l2met_rejects
        self.figures = inbox.figures
        self.context = zmq.Context(io_threads=1)
        self.started = time.time()
        self.addresses: dict[str, str] = {}
        self.receive_buffer: int | None = None
        self._udp: socket.socket | None = None
        self._tcp: socket.socket | None = None
        self._unix: socket.socket | None = None
        self._by_fd: dict[int, socket.socket] = {}
        self.tcp = TcpConnections(inbox, self._by_fd, config.tcp_idle_timeout, config.max_tcp_connections)
        self._http: GuardedHTTPServer | None = None
        self._status: zmq.Socket | None = None
        self._rises = Rises()  # kernel_drops and values_dropped: a problem while they rise
        self.publisher: Publisher | None = None

    # --- start and stop ---------------------------------------------------------

    def open(self) -> None:
        """Bind everything (raises RuntimeError with a clear message when one cannot be bound)."""
        c = self.config
        host, port = split_address(c.broker, "--broker")
        self.publisher = Publisher(
            self.context, f"tcp://{host}:{port}", hwm=c.hwm, curve=c.curve, max_bytes=c.max_buffer_bytes
        )
        if c.statsd:
            self._open_statsd(*split_address(c.statsd, "--statsd"))
        if c.statsd_unix:
            self._open_unix(c.statsd_unix)
        if c.l2met:
            self._open_drain(*split_address(c.l2met, "--l2met"))
        self._status = bind_status_port(self.context, c.status_port)  # StatusPortError: a RuntimeError
        if c.stdin:
            threading.Thread(target=self._read_stdin, name="zibrato-listen-stdin", daemon=True).start()

    def _open_statsd(self, host: str, port: int) -> None:
        """UDP and TCP on the same port; port 0 picks one free for both."""
        for attempt in range(20 if port == 0 else 1):
            udp, tcp = self._bind_statsd_pair(host, port)
            if tcp is not None:
                break
            udp.close()
        else:
            raise RuntimeError(f"cannot bind --statsd (TCP) {host}:{port}: address already in use")
        self._udp, self._tcp = udp, tcp
        self.receive_buffer = _size_receive_buffer(udp, self.config.receive_buffer)
        tcp.listen(128)
        for sock in (udp, tcp):
            sock.setblocking(False)
        shown = f"[{host}]" if ":" in host else host
        self.addresses["statsd"] = f"{shown}:{udp.getsockname()[1]}"

    @staticmethod
    def _bind_statsd_pair(host: str, port: int) -> tuple[socket.socket, socket.socket | None]:
        family = socket.AF_INET6 if ":" in host else socket.AF_INET
        udp = socket.socket(family, socket.SOCK_DGRAM)
        _bind(udp, (host, port), "--statsd (UDP)")
        tcp = socket.socket(family, socket.SOCK_STREAM)
        tcp.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            tcp.bind((host, udp.getsockname()[1]))
        except OSError:
            tcp.close()
            return udp, None
        return udp, tcp

    def _open_unix(self, path: str) -> None:
        if os.path.exists(path):
            if not stat.S_ISSOCK(os.stat(path).st_mode):
                raise RuntimeError(f"--statsd-unix {path} exists and is not a socket")
            os.unlink(path)  # a stale socket from an earlier run
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self._unix = sock
        _size_receive_buffer(sock, self.config.receive_buffer)
        _bind(sock, path, "--statsd-unix")
        sock.setblocking(False)
        self.addresses["statsd_unix"] = path

    def _open_drain(self, host: str, port: int) -> None:
        self._http = drain_server(self.inbox, host, port)
        self.addresses["l2met"] = f"{host}:{self._http.server_address[1]}"
        threading.Thread(
            target=self._http.serve_forever, kwargs={"poll_interval": 0.1}, name="zibrato-listen-drain", daemon=True
        ).start()

    def close(self) -> None:
        """Publish what is pending, give it a moment to reach the broker, release everything."""
        if self._http is not None:
            self._http.shutdown()
            self._http.server_close()
        self.tcp.close_all()
        for sock in [self._udp, self._tcp, self._unix]:
            if sock is not None:
                self._drain_closing(sock)
                sock.close()
        if self._unix is not None and self.config.statsd_unix:
            try:
                os.unlink(self.config.statsd_unix)
            except OSError:
                pass
        self._report_self()  # the last figures too, as a worker's final flush
        self.flush()
        if self._status is not None:
            self._status.close(linger=0)
        if self.publisher is not None:
            self.publisher.close(linger=2.0)
        self.context.term()

    def _drain_closing(self, sock: socket.socket) -> None:
        """What the kernel already holds for a datagram socket is read before closing it."""
        if sock is self._udp or sock is self._unix:
            self._read_datagrams(sock)

    # --- the loop ------------------------------------------------------------------

    def run(self, stop: threading.Event) -> int:
        """Serve until ``stop`` is set; return an exit code."""
        self._stop = stop  # before open(): the stdin reader sets it at end of input
        try:
            self.open()
        except (RuntimeError, ValueError) as error:
            log.error("%s", error)
            self.close()
            return 1
        assert self.publisher is not None  # open() made it
        log.info(
            "listen ready: %s -> broker %s, level %s",
            ", ".join(f"{k} {v}" for k, v in self.addresses.items()) or "stdin",
            self.publisher.endpoint,
            self.config.level,
        )
        poller = zmq.Poller()
        for sock in (self._udp, self._tcp, self._unix):
            if sock is not None:
                poller.register(sock, zmq.POLLIN)
                self._by_fd[sock.fileno()] = sock
        if self._status is not None:
            poller.register(self._status, zmq.POLLIN)
        next_flush = time.monotonic() + self.config.flush_interval
        next_drops = next_self = next_idle = time.monotonic()
        next_expiry = time.monotonic() + self.config.gauge_expire
        link = self.publisher.link
        watch = LinkWatch(log, self.publisher.endpoint, "--broker")
        try:
            while not stop.is_set():
                watch.unconnected(link.poll())
                timeout = max(0.0, min(next_flush - time.monotonic(), 0.1))
                for sock, _ in poller.poll(int(timeout * 1000)):
                    self._readable(sock, poller)
                now = time.monotonic()
                if now >= next_flush or len(self.inbox.pending) > _PENDING_LIMIT:
                    self.flush()
                    next_flush = now + self.config.flush_interval
                if now >= next_expiry or len(self.statsd.gauges) > self.config.max_gauges:
                    self.statsd.expire_gauges()
                    next_expiry = now + self.config.gauge_expire
                if now >= next_drops:
                    self._count_kernel_drops()
                    next_drops = now + _DROPS_EVERY
                if now >= next_self:
                    self._report_self()
                    next_self = now + _SELF_EVERY
                if now >= next_idle:
                    self.tcp.close_idle(poller)
                    next_idle = now + min(_IDLE_CHECK_EVERY, self.config.tcp_idle_timeout / 4)
        finally:
            self.close()  # the publisher's close() closes its link too
            log.info("listen stopped")
        return 0

    def _readable(self, ready: object, poller: zmq.Poller) -> None:
        """``ready`` is what zmq.Poller returns: the zmq socket itself, or a plain socket's fd."""
        status = self._status
        if status is not None and ready is status:
            answer_status(status, self.status)
            return
        sock = self._by_fd.get(ready) if isinstance(ready, int) else None
        if sock is None:
            return
        if sock is self._udp or sock is self._unix:
            self._read_datagrams(sock)
        elif sock is self._tcp:
            self.tcp.accept(sock, poller)
        else:
            self.tcp.read(sock, poller)

    def _read_datagrams(self, sock: socket.socket) -> None:
        """Drain what the kernel holds (bounded per wake), then parse it all in one call.

        The datagrams are joined with newlines: a line never spans two
        datagrams, so this parses exactly as one call per datagram would, but
        pays the parser's per-call costs (decode, split, setup) once per wake
        rather than per datagram: a fifth less CPU per line for one-line
        datagrams (bench/ingress.py).
        """
        chunks: list[bytes] = []
        receive, keep = sock.recv, chunks.append
        for _ in range(_DATAGRAMS_PER_WAKE):
            try:
                keep(receive(_MAX_DATAGRAM, _DONTWAIT))  # never blocks, even at close
            except (BlockingIOError, InterruptedError):
                break
            except OSError as error:  # e.g. ECONNREFUSED from an ICMP error: keep going
                log.debug("receive error: %s", error)
                break
        if chunks:
            self.inbox.feed_statsd(chunks[0] if len(chunks) == 1 else b"\n".join(chunks))
            self.figures["datagrams"] += len(chunks)

    # --- l2met inputs ---------------------------------------------------------------

    def _read_stdin(self) -> None:
        """Log lines from a pipe; ``--tee`` passes each through unchanged. EOF stops the listener."""
        stdin = self._stdin or sys.stdin.buffer
        stdout = self._stdout or sys.stdout.buffer
        try:
            for raw in stdin:
                if self.config.tee:
                    stdout.write(raw)
                    stdout.flush()
                try:
                    line = raw.decode("utf-8")
                except UnicodeDecodeError:
                    self.l2met_rejects("invalid utf-8", raw)
                    continue
                self.inbox.feed_line(line)
        except (OSError, ValueError) as error:
            log.error("reading standard input failed: %s", error)
        log.info("end of standard input: stopping")
        stop = getattr(self, "_stop", None)
        if stop is not None:
            stop.set()

    # --- out ------------------------------------------------------------------------

    def flush(self) -> None:
        """Hand the pending values to the publisher (which never blocks)."""
        pending = self.inbox.take()
        if pending and self.publisher is not None:
            self.publisher.publish(pending)
            self.figures["flushes"] += 1

    def _count_kernel_drops(self) -> None:
        if self._udp is None:
            return
        drops = udp_drops(self._udp)
        if drops is not None:
            self.figures["kernel_drops"] = drops

    def status(self) -> dict[str, Any]:
        """What `zibrato status` shows."""
        self._count_kernel_drops()
        now = time.time()
        sent = self.publisher.figures if self.publisher is not None else {}
        figures: dict[str, Any] = {
            "role": "listen",
            "broker": self.publisher.endpoint if self.publisher else None,
            "level": self.config.level,
            "addresses": dict(self.addresses),
            "lines": self.statsd.lines,
            "l2met_lines": self.l2met.lines,
            "l2met_measurements": self.l2met.measurements,
            "rejected": dict(self.statsd_rejects.counts),
            "l2met_rejected": dict(self.l2met_rejects.counts),
            "receive_buffer": self.receive_buffer,
            "gauges_held": self.statsd.gauges_held,
            "gauges_expired": self.statsd.gauges_expired,
            "tcp_open": len(self.tcp),
            "tcp_max_connections": self.tcp.max_connections,
            **(self._http.figures() if self._http is not None else {}),
            "uptime_seconds": round(now - self.started, 3),
            **self.figures,
            **sent,
        }
        return judged(figures, self._rises.problems(figures, ("kernel_drops", "values_dropped")))

    def _report_self(self) -> None:
        """Cumulative figures as gauges under the level 'zibrato', like the workers' own."""
        if not self.config.self_metrics or self.publisher is None:
            return
        f, p = self.figures, self.publisher.figures
        host = socket.gethostname().split(".")[0] or None
        pending: Pending = {}

        def gauge(name: str, value: float, *tags: str) -> None:
            pending[Series(SELF_LEVEL, "g", f"zibrato.listen.{name}", host, tags)] = [value]

        gauge("lines", self.statsd.lines)
        gauge("l2met_measurements", self.l2met.measurements)
        gauge("kernel_drops", f["kernel_drops"])
        gauge("values_dropped", p["values_dropped"])
        gauge("values_sent", p["values_sent"])
        for reason, count in self.statsd_rejects.counts.items():
            gauge("rejected", count, "input:statsd", f"reason:{reason}")
        for reason, count in self.l2met_rejects.counts.items():
            gauge("rejected", count, "input:l2met", f"reason:{reason}")
        self.publisher.publish(pending)


# --- sockets ------------------------------------------------------------------------


def _bind(sock: socket.socket, address: str | tuple[str, int], what: str) -> None:
    try:
        sock.bind(address)
    except OSError as error:
        sock.close()
        raise RuntimeError(f"cannot bind {what} {address}: {error.strerror}") from None


def _size_receive_buffer(sock: socket.socket, wanted: int) -> int:
    """Ask for ``wanted`` bytes of receive buffer; past net.core.rmem_max, force it if allowed.

    The kernel's default (about 200 KiB) holds a fraction of a second of a
    busy sender's datagrams: a pause of the listener (a flush, a GC) would
    drop them. Returns what the kernel granted (it reports twice the request,
    counting its own bookkeeping).
    """
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, wanted)
    granted = sock.getsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF)
    if granted < wanted and hasattr(socket, "SO_RCVBUFFORCE"):
        try:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUFFORCE, wanted)
            granted = sock.getsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF)
        except OSError:
            pass
    if granted < wanted:
        log.warning(
            "receive buffer is %d bytes, not the %d asked: raise net.core.rmem_max "
            "(sysctl -w net.core.rmem_max=%d) or run with CAP_NET_ADMIN",
            granted,
            wanted,
            wanted,
        )
    return granted


def udp_drops(sock: socket.socket) -> int | None:
    """Datagrams the kernel dropped for this socket (its receive buffer was full).

    Linux's /proc/net/udp (udp6) lists each socket with its inode and a
    ``drops`` column; None where there is no such file.
    """
    inode = str(os.fstat(sock.fileno()).st_ino)
    name = "/proc/net/udp6" if sock.family == socket.AF_INET6 else "/proc/net/udp"
    try:
        with open(name) as table:
            next(table)
            for row in table:
                fields = row.split()
                if len(fields) >= 13 and fields[9] == inode:
                    return int(fields[12])
    except OSError:
        return None
    return None


__all__ = [  # the settings' names too, where the command line has always imported them
    "DEFAULT_FLUSH_INTERVAL",
    "DEFAULT_MAX_BODY",
    "DEFAULT_RECEIVE_BUFFER",
    "ListenConfig",
    "Listener",
    "MAX_TCP_CONNECTIONS",
    "split_address",
    "udp_drops",
]
