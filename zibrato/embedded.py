"""One-process mode: the worker runtime and a destination inside the application.

For a single-process service, or a first try, with no broker and no worker
to run::

    import zibrato.embedded
    z = zibrato.embedded.start("prometheus", listen="127.0.0.1:9464")
    z.count("info", "signup")           # the same client API
    z.close()                           # final flush and delivery

``start`` accepts any destination by name (:data:`DESTINATIONS`: console,
prometheus, otlp, graphite, influxdb, statsd, web) with that destination's
own options as keywords, or a :class:`~zibrato.destination.Destination`
instance. The measurements take the production path up to the wire: the
client's bounded queue and sender thread encode them as usual, then an
in-process transport (:class:`QueueTransport`) hands the frames to the same
:class:`~zibrato.worker.Worker` runtime a `zibrato-<name>` daemon runs
(validation, aggregation, flushes on wall-clock boundaries, the delivery
queue with its backlog and retries), driven by a thread of its own.

The promises hold: recording never blocks (the sender thread, never the
application, puts frames into the transport), and memory is bounded (the
client's queue, then at most ``max_bytes`` of frames waiting for the
runtime; past that, frames are dropped and counted in ``z.dropped``).

Embedded mode does not aggregate across processes: that is the broker's
job. A forked child (gunicorn, multiprocessing) logs one warning and drops
what it records (counted in its ``z.dropped``); nothing crashes.
"""

from __future__ import annotations

import collections
import logging
import threading
import time
from collections.abc import Callable
from typing import Any

from .client import Zibrato
from .destination import Destination
from .sender import Transport
from .worker import Worker, parse_levels

__all__ = ["DESTINATIONS", "EmbeddedZibrato", "QueueTransport", "start"]

log = logging.getLogger("zibrato.embedded")

DEFAULT_MAX_BYTES = 64 * 1024 * 1024  # frames waiting for the runtime, as the client's ZeroMQ bound
_POLL_SECONDS = 0.1


class QueueTransport(Transport):
    """Frames from the client's sender thread to the runtime's thread, bounded in bytes; never blocks."""

    def __init__(self, max_bytes: int = DEFAULT_MAX_BYTES) -> None:
        self.max_bytes = max_bytes
        self.frames: collections.deque[bytes] = collections.deque()
        self.bytes = 0
        self.refused = 0
        self.ready = threading.Event()
        self._lock = threading.Lock()

    def send(self, frame: bytes, last: bool = True) -> bool:
        with self._lock:
            if self.bytes + len(frame) > self.max_bytes:
                self.refused += 1
                return False  # the publisher drops it and counts it
            self.frames.append(frame)
            self.bytes += len(frame)
        self.ready.set()
        return True

    def take(self) -> list[bytes]:
        """Every frame waiting, in order (the runtime's thread)."""
        with self._lock:
            frames = list(self.frames)
            self.frames.clear()
            self.bytes = 0
            self.ready.clear()
        return frames

    def settle(self, timeout: float) -> bool:
        """True once the runtime has taken every frame (``flush()`` waits on it)."""
        deadline = time.monotonic() + timeout
        while self.frames and time.monotonic() < deadline:
            time.sleep(0.005)
        return not self.frames

    def fork_child(self) -> Transport:
        return _ForkedChild()


class _ForkedChild(Transport):
    """A forked child's transport: the runtime lives in the parent; say so once, drop and count."""

    def __init__(self) -> None:
        self._warned = False

    def send(self, frame: bytes, last: bool = True) -> bool:
        if not self._warned:
            self._warned = True
            log.warning(
                "zibrato.embedded runs in the process that called start(); this forked child's "
                "measurements are dropped (counted in z.dropped): embedded mode does not aggregate "
                "across processes, run zibrato-broker and a worker for that (README, Quick start)"
            )
        return False


def _console(format: str = "table", sketch: bool = False) -> Destination:
    from .backends.console import Console

    return Console(format=format, sketch=sketch)


def _prometheus(listen: str = "127.0.0.1:9464", **options: Any) -> Destination:
    from .backends.prometheus import PrometheusDestination, parse_listen

    return PrometheusDestination(parse_listen(listen), **options)


def _otlp(endpoint: str | None = None, **options: Any) -> Destination:
    from .backends.otlp import OtlpDestination, metrics_url

    return OtlpDestination(metrics_url(endpoint), **options)


def _graphite(graphite: str = "127.0.0.1:2003", **options: Any) -> Destination:
    from .backends.graphite import GraphiteDestination
    from .cli.addresses import split_host_port

    host, port = split_host_port(graphite, "graphite", default_port=2003)
    return GraphiteDestination(host, port, **options)


def _influxdb(url: str = "http://127.0.0.1:8086", **options: Any) -> Destination:
    from .backends.influxdb import InfluxDBDestination

    return InfluxDBDestination(url, **options)


def _statsd(statsd_host: str = "127.0.0.1", statsd_port: int = 8125, **options: Any) -> Destination:
    from .backends.statsd import Statsd

    return Statsd(statsd_host, statsd_port, **options)


def _web(listen: str = "127.0.0.1:8080", **options: Any) -> Destination:
    from .backends.web import WebView
    from .web.server import parse_listen

    return WebView(listen=parse_listen(listen), **options)


#: name -> factory(**options): the destinations `zibrato-<name>` runs, built from keywords
DESTINATIONS: dict[str, Callable[..., Destination]] = {
    "console": _console,
    "prometheus": _prometheus,
    "otlp": _otlp,
    "graphite": _graphite,
    "influxdb": _influxdb,
    "statsd": _statsd,
    "web": _web,
}


class EmbeddedRuntime:
    """The worker runtime fed by a :class:`QueueTransport` instead of a SUB socket, in its own thread."""

    def __init__(self, worker: Worker, transport: QueueTransport) -> None:
        self.worker, self.transport = worker, transport
        self._prefixes = tuple(worker.subscriptions())
        self._stop = threading.Event()
        self._started = threading.Event()
        self._thread = threading.Thread(target=self._run, name=f"zibrato-embedded-{worker.name}", daemon=True)

    def start(self) -> EmbeddedRuntime:
        self._thread.start()
        self._started.wait(5.0)
        return self

    def _run(self) -> None:
        worker = self.worker
        worker.connection.assume_connected()  # there is no broker to be away from
        delivery = worker.delivery.start()
        worker.schedule.start()
        worker.aggregator.current_start = worker.schedule.interval_start
        self._started.set()
        try:
            while not self._stop.is_set():
                self.transport.ready.wait(min(worker.schedule.seconds_to_boundary(), _POLL_SECONDS))
                self._ingest()
                due = worker.schedule.due()
                if due is not None:
                    worker.close_interval(*due)
        except Exception:  # pragma: no cover - a bug here must not take the application down
            log.exception("embedded runtime stopped")
        finally:
            stopped = time.monotonic()
            self._ingest()
            worker.final_flush()
            worker.finish_delivery(delivery, stopped)
            log.info("embedded %s stopped", worker.name)

    def _ingest(self) -> None:
        """What a SUB socket would have let through (the levels' exact topics), then the worker's own checks."""
        prefixes = self._prefixes
        for frame in self.transport.take():
            if any(frame.startswith(prefix) for prefix in prefixes):
                self.worker.ingest(frame)

    def stop(self, timeout: float | None = None) -> None:
        self._stop.set()
        self.transport.ready.set()
        self._thread.join(timeout if timeout is not None else self.worker.stop_timeout + 1.0)


class EmbeddedZibrato(Zibrato):
    """The client of embedded mode: :meth:`close` also flushes and delivers the last interval."""

    runtime: EmbeddedRuntime

    def close(self, timeout: float | None = None) -> None:
        super().close(timeout)
        runtime = getattr(self, "runtime", None)
        if runtime is not None and runtime._thread.is_alive():
            runtime.stop()

    @property
    def destination(self) -> Destination:
        return self.runtime.worker.destination


def start(
    destination: str | Destination,
    *,
    levels: str = "all",
    flush: float = 10.0,
    source: str | None = None,
    tags: dict[str, str] | None = None,
    max_bytes: int = DEFAULT_MAX_BYTES,
    worker: dict[str, Any] | None = None,
    **options: Any,
) -> EmbeddedZibrato:
    """A client whose measurements are aggregated and delivered in this process.

    ``destination``: a name of :data:`DESTINATIONS` (its options as keywords,
    e.g. ``listen="127.0.0.1:9464"`` for prometheus) or a Destination.
    ``levels`` and ``flush`` are the worker's ``--levels`` and ``--flush``;
    ``worker`` passes further :class:`~zibrato.worker.Worker` keywords
    (``percentiles``, ``stop_timeout``...). A bad name or option raises
    ValueError or TypeError at once.
    """
    if isinstance(destination, str):
        try:
            factory = DESTINATIONS[destination]
        except KeyError:
            raise ValueError(
                f"unknown destination {destination!r}: one of {', '.join(DESTINATIONS)}, or a Destination"
            ) from None
        target = factory(**options)
    elif options:
        raise TypeError(f"options {sorted(options)} apply only to a destination given by name")
    else:
        target = destination
    runtime_worker = Worker(
        target, levels=parse_levels(levels), flush_interval=flush, self_level=None, **(worker or {})
    )
    transport = QueueTransport(max_bytes)
    client = EmbeddedZibrato(source=source, tags=tags, transport=transport)
    client.runtime = EmbeddedRuntime(runtime_worker, transport).start()
    return client
