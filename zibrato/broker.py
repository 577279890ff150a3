"""The broker: PULL from every client, PUB to every worker, forwarding in C.

Messages are never decoded here: ``zmq.proxy_steerable`` moves them between
the sockets without the GIL, so the broker's cost per message is libzmq's.
Workers validate what they receive.

Two choices protect measurements:

* **High-water marks** (``hwm``, default 100,000 messages on both sides)
  replace ZeroMQ's default of 1,000, which loses data as soon as a worker
  falls briefly behind (PUB drops silently at its high-water mark).
* **Start-up grace**: the PUB side is bound first and the PULL side only
  ``startup_grace`` seconds later. Clients queue while the broker is away,
  so after a restart their backlog would otherwise be published before the
  workers' SUB sockets have reconnected (ZeroMQ's "slow joiner") and lost.

On stop, the proxy is terminated, the PULL socket drained of what already
arrived, and the PUB socket closed with a linger so that workers receive it.
"""

from __future__ import annotations

import logging
import struct
import threading
import time

import zmq

from .curve import ServerAuth, warn_if_exposed
from .curve_watch import ConnectionWatch
from .health import StatusPortError, bind_status_port, judged
from .protocol import MAX_MESSAGE_SIZE
from .runtime import answer_status, describe_bind_error
from .subscriptions import SubscriptionWatch

log = logging.getLogger("zibrato.broker")

DEFAULT_HWM = 100_000
DEFAULT_MAX_MESSAGE_SIZE = MAX_MESSAGE_SIZE
_DRAIN_QUIET_MS = 10  # on stop, this long without a message after one ends the drain
_DRAIN_IDLE_SECONDS = 0.1  # ...and this long without any message (see Broker._drain)
_STAT_NAMES = (
    "frontend_messages_in",
    "frontend_bytes_in",
    "frontend_messages_out",
    "frontend_bytes_out",
    "backend_messages_in",
    "backend_bytes_in",
    "backend_messages_out",
    "backend_bytes_out",
)


class BrokerError(RuntimeError):
    """The broker cannot start (the message says why)."""


class Broker:
    """PULL on ``port``, PUB on ``port + 1``, status (REP) on ``status_port``."""

    def __init__(
        self,
        host: str = "127.0.0.1",
        port: int = 5550,
        *,
        status_port: int | None = None,
        hwm: int = DEFAULT_HWM,
        max_message_size: int = DEFAULT_MAX_MESSAGE_SIZE,
        startup_grace: float = 1.0,
        drain_seconds: float = 1.0,
        linger: float = 3.0,
        curve: ServerAuth | None = None,
    ) -> None:
        self.host, self.port, self.status_port = host, port, status_port
        self.hwm, self.max_message_size = hwm, max_message_size
        self.startup_grace, self.drain_seconds, self.linger = startup_grace, drain_seconds, linger
        self.started = time.time()
        self.drained = 0
        self.proxy_resumed = 0  # see _proxy
        self.control_timeout = 1.0  # seconds a status request waits for the proxy's counters
        self._context = zmq.Context(io_threads=1)
        self._ready = threading.Event()
        #: CURVE on both the client (PULL) and the worker (PUB) side: keys checked by ZAP
        self.curve = curve
        self._next_reload_check = 0.0

    @property
    def pull_endpoint(self) -> str:
        return f"tcp://{self.host}:{self.port}"

    @property
    def pub_endpoint(self) -> str:
        return f"tcp://{self.host}:{self.port + 1}"

    def run(self, stop: threading.Event) -> None:
        """Forward until ``stop`` is set; raise BrokerError if a port cannot be bound."""
        context = self._context
        warn_if_exposed(self.host, self.curve is not None, "the broker")
        if self.curve is not None:
            self.curve.watch = ConnectionWatch()
            self.curve.start(context)  # the ZAP handler must exist before a CURVE socket binds
        # XPUB: the workers' subscriptions reach the broker (zibrato.subscriptions)
        pub = self._bind(zmq.XPUB, self.pub_endpoint, zmq.SNDHWM, {zmq.XPUB_VERBOSER: 1})
        try:
            status = self._bind_status()
        except BrokerError:  # close what is bound, or context.term() would wait for it
            pub.close(linger=0)
            if self.curve is not None:
                self.curve.stop()
            context.term()
            raise
        self._watch = watch = SubscriptionWatch(context, pub, self.hwm)
        try:
            log.info(
                "publishing on %s; accepting clients on %s in %.1f s",
                self.pub_endpoint,
                self.pull_endpoint,
                self.startup_grace,
            )
            watch.start()
            if stop.wait(self.startup_grace):
                return
            pull = self._bind(zmq.PULL, self.pull_endpoint, zmq.RCVHWM, {zmq.MAXMSGSIZE: self.max_message_size})
            control = context.socket(zmq.REP)
            control.bind(f"inproc://broker-control-{id(self)}")
            proxy = threading.Thread(
                target=self._proxy, args=(pull, watch.upstream, control), name="zibrato-proxy", daemon=True
            )
            proxy.start()
            requests = self.control_requests()
            log.info("broker ready: clients -> %s -> workers %s", self.pull_endpoint, self.pub_endpoint)
            self._ready.set()
            try:
                self._serve_until(stop, status, requests, proxy)
            finally:
                self._terminate_proxy(requests, proxy)
                self._drain(pull, watch.upstream)
                watch.wait_quiet()
                for socket in (requests, control, pull):
                    socket.close(linger=0)
        finally:
            watch.close()
            if status is not None:
                status.close(linger=0)
            pub.close(linger=int(self.linger * 1000))
            if self.curve is not None:
                if self.curve.watch is not None:
                    self.curve.watch.close()
                self.curve.stop()
            context.term()
            log.info("broker stopped")

    def wait_ready(self, timeout: float) -> bool:
        return self._ready.wait(timeout)

    def _bind(self, kind: int, endpoint: str, hwm_option: int, options: dict[int, int] | None = None) -> zmq.Socket:
        """A socket bound to ``endpoint``, every option set first: libzmq copies
        them into the listener at bind time, so later ones never reach a connection."""
        socket = self._context.socket(kind)
        socket.setsockopt(hwm_option, self.hwm)
        socket.setsockopt(zmq.LINGER, 0)
        for option, value in (options or {}).items():
            socket.setsockopt(option, value)
        if self.curve is not None:
            self.curve.apply(socket)
            if self.curve.watch is not None:
                self.curve.watch.watch(socket)  # here, before the proxy thread owns the socket
        try:
            socket.bind(endpoint)
        except zmq.ZMQError as error:
            socket.close()
            raise BrokerError(describe_bind_error(endpoint, error)) from None
        return socket

    def _bind_status(self) -> zmq.Socket | None:
        try:
            return bind_status_port(self._context, self.status_port)
        except StatusPortError as error:
            raise BrokerError(str(error)) from None

    @property
    def context(self) -> zmq.Context:
        """The broker's ZeroMQ context (its sockets, the proxy's control socket and ZAP live in it)."""
        return self._context

    def control_requests(self) -> zmq.Socket:
        """The REQ side of the proxy's control socket, relaxed so that a request that
        timed out never leaves it unable to send the next one (EFSM)."""
        requests = self._context.socket(zmq.REQ)
        requests.setsockopt(zmq.REQ_RELAXED, 1)
        requests.setsockopt(zmq.REQ_CORRELATE, 1)
        requests.setsockopt(zmq.LINGER, 0)
        requests.connect(f"inproc://broker-control-{id(self)}")
        return requests

    def _proxy(self, pull: zmq.Socket, pub: zmq.Socket, control: zmq.Socket) -> None:
        while True:
            try:
                zmq.proxy_steerable(pull, pub, None, control)
            except zmq.ContextTerminated:
                pass
            except zmq.Again:
                # libzmq 4.3's proxy gives up when a socket polled readable has nothing to read
                # (a wake-up from a handshake, seen with CURVE clients connecting): resume it.
                self.proxy_resumed += 1
                log.debug("proxy woke with nothing to read; resumed (%d times)", self.proxy_resumed)
                continue
            except zmq.ZMQError as error:  # pragma: no cover - libzmq failure, not bad input
                log.error("proxy stopped: %s", error)
            return

    def _serve_until(
        self, stop: threading.Event, status: zmq.Socket | None, requests: zmq.Socket, proxy: threading.Thread
    ) -> None:
        poller = zmq.Poller()
        if status is not None:
            poller.register(status, zmq.POLLIN)
        while not stop.is_set() and proxy.is_alive():
            if poller.poll(100) and status is not None:
                answer_status(status, lambda: self.figures(requests, proxy))
            self._reload_keys()
        if not proxy.is_alive():
            log.error("proxy thread ended unexpectedly")

    def _reload_keys(self) -> None:
        """Reload the allowed client keys when their directory changed (checked every second)."""
        if self.curve is None:
            return
        if self.curve.watch is not None:
            self.curve.watch.poll()  # failed handshakes counted, connections tracked, every 100 ms
        if time.monotonic() < self._next_reload_check:
            return
        self._next_reload_check = time.monotonic() + 1.0
        try:
            self.curve.check_reload()
        except Exception as error:  # a key directory that went away must not stop the broker
            log.error("cannot reload the CURVE client keys: %s", error)

    def figures(self, requests: zmq.Socket, proxy: threading.Thread) -> dict:
        """What `zibrato status` shows: libzmq's own message counters."""
        stats = self.proxy_statistics(requests)
        curve = self.curve.figures() if self.curve is not None else {"curve": False}
        figures = {
            **curve,
            "role": "broker",
            "pull": self.pull_endpoint,
            "pub": self.pub_endpoint,
            "uptime_seconds": round(time.time() - self.started, 3),
            "received": stats.get("frontend_messages_in"),
            "received_bytes": stats.get("frontend_bytes_in"),
            "forwarded": stats.get("backend_messages_out"),
            "forwarded_bytes": stats.get("backend_bytes_out"),
            **self._watch.figures(),
        }
        if not proxy.is_alive():
            problems = ["proxy thread not running"]
        elif not stats:  # unhealthy before too, but with no problem named
            problems = [f"the proxy did not report its counters within {self.control_timeout:g} s"]
        else:
            problems = []
        return judged(figures, problems)

    def proxy_statistics(self, requests: zmq.Socket) -> dict:
        """libzmq's counters from the proxy; {} when it does not answer within ``control_timeout``."""
        try:
            requests.send(b"STATISTICS")
            if not requests.poll(int(self.control_timeout * 1000)):  # ms, as pyzmq truncates
                return {}
            frames = requests.recv_multipart()
        except zmq.ZMQError as error:  # pragma: no cover - REQ_RELAXED prevents EFSM
            log.warning("proxy statistics failed: %s", error)
            return {}
        return {name: struct.unpack("=Q", frame)[0] for name, frame in zip(_STAT_NAMES, frames)}

    def _terminate_proxy(self, requests: zmq.Socket, proxy: threading.Thread) -> None:
        if proxy.is_alive():
            try:
                requests.send(b"TERMINATE")
                requests.poll(1000)
            except zmq.ZMQError as error:  # pragma: no cover - REQ_RELAXED prevents EFSM
                log.error("cannot stop the proxy cleanly: %s", error)
        proxy.join(2.0)

    def _drain(self, pull: zmq.Socket, pub: zmq.Socket) -> None:
        """Forward what clients already sent, then stop reading.

        Whatever a client writes just as PULL closes is lost (ZeroMQ has no
        acknowledgements); what it sends later stays queued in the client
        until the broker is back. So the drain ends a short quiet gap *after a
        message*: a client sending steadily (every 50 ms by default) has just
        sent and its next batch is far away. With no message within
        ``_DRAIN_IDLE_SECONDS`` nobody is sending steadily and it ends then;
        it never lasts longer than ``drain_seconds``.
        """
        started = time.monotonic()
        deadline = started + self.drain_seconds
        seen = False
        while time.monotonic() < deadline:
            if pull.poll(_DRAIN_QUIET_MS):
                try:
                    while True:
                        pub.send_multipart(pull.recv_multipart(zmq.NOBLOCK))
                        self.drained += 1
                except zmq.Again:
                    seen = True
            elif seen or time.monotonic() - started >= _DRAIN_IDLE_SECONDS:
                break
        if self.drained:
            log.info("forwarded %d messages that arrived while stopping", self.drained)


def run_broker(broker: Broker, stop: threading.Event) -> int:
    """Run until stopped; the process exit code."""
    try:
        broker.run(stop)
    except BrokerError as error:
        log.error("%s", error)
        return 1
    return 0


__all__ = ["Broker", "BrokerError", "run_broker"]
