"""zibrato-statsd: forward each flush to a statsd server, so that statsd's own statistics stay exact.

Three modules, one concept each:

* :mod:`.statsd_mapping`: summaries to statsd lines (pure: see its docstring
  and docs/STATSD.md for what each kind becomes);
* :mod:`.statsd_transport`: :class:`UdpTransport` (fire and forget: a send
  never blocks, what cannot be sent is counted and logged, never retried) and
  :class:`TcpTransport` (one connection; a failed write raises
  :class:`~zibrato.delivery.Retryable`);
* this module: :class:`Statsd`, the destination that joins them.

Lines are packed into payloads (:func:`pack`): datagrams of at most ``mtu``
bytes for UDP, chunks of at most 64 KiB for TCP. Over TCP each chunk is a part
of the interval (:meth:`Statsd.parts`), so the delivery queue retries only the
chunks not yet written, with backoff, while later intervals wait in the
backlog; over UDP the interval is one part, sent once. Every public name of
the two other modules is importable from here too.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any

from ..aggregation_needs import AggregationNeeds
from ..destination import CUT_OFF, Destination, Interval, Part
from .statsd_mapping import (
    HISTOGRAM_MODES,
    NAME_RULE,
    SET_MODES,
    SOURCE_MODES,
    TAG_MODES,
    TAG_RULE,
    StatsdMapping,
    fit_name,
    fit_tag,
    milliseconds,
    number,
    sample_rate,
)
from .statsd_transport import (
    DEFAULT_MTU,
    MAX_UDP_PAYLOAD,
    STREAM_CHUNK,
    TcpTransport,
    Transport,
    UdpTransport,
    new_counts,
    pack,
)

PROTOCOLS = ("udp", "tcp")


class Statsd(Destination):
    """The statsd destination: ``zibrato-statsd``. ``timeout`` bounds a TCP connect or write."""

    name = "statsd"
    aggregation_needs = AggregationNeeds(values=True)  # every timer value is forwarded
    self_figures = ("lines_sent", "datagrams_sent", "send_errors", "lines_lost")

    def __init__(
        self,
        host: str = "127.0.0.1",
        port: int = 8125,
        *,
        protocol: str = "udp",
        prefix: str = "",
        mtu: int = DEFAULT_MTU,
        source_as: str = "prefix",
        tags: str = "drop",
        timeout: float = 5.0,
        histograms: str = "timer",
        sets: str = "count",
    ) -> None:
        if protocol not in PROTOCOLS:
            raise ValueError(f"unknown protocol {protocol!r} (udp or tcp)")
        if not 1 <= port <= 65535:
            raise ValueError(f"statsd port {port} is outside 1-65535")
        if not 64 <= mtu <= MAX_UDP_PAYLOAD:
            raise ValueError(f"mtu {mtu} is outside 64-{MAX_UDP_PAYLOAD} bytes")
        if not timeout > 0:
            raise ValueError("timeout must be positive")
        self.log = logging.getLogger("zibrato.statsd")
        self.mapping = StatsdMapping(prefix, source_as, tags, self.log, histograms=histograms, sets=sets)
        self.host, self.port, self.protocol = host, port, protocol
        self.mtu, self.timeout = mtu, timeout
        self.counts = new_counts()
        self.transport: Transport = (
            UdpTransport(host, port, timeout, self.counts, self.log, mtu)
            if protocol == "udp"
            else TcpTransport(host, port, timeout, self.counts, self.log)
        )

    @property
    def endpoint(self) -> str:
        return self.transport.endpoint

    @property
    def last_error(self) -> str | None:
        return self.transport.last_error

    def connect(self) -> None:
        m = self.mapping
        self.log.info(
            "sending to statsd at %s (%s, source as %s, tags %s)",
            self.endpoint,
            f"datagrams of at most {self.mtu} bytes" if self.protocol == "udp" else "one persistent connection",
            m.source_as,
            "as DogStatsD tags" if m.tag_mode == "dogstatsd" else "dropped",
        )
        self.transport.open()

    def parts(self, interval: Interval) -> list[Part]:
        """UDP: the interval's datagrams, one part sent once. TCP: each chunk a part."""
        units = self.mapping.lines(interval.summaries)
        payloads = pack(units, self.transport.payload_limit)
        if not payloads:
            return []
        if self.protocol == "udp":
            return [Part(payloads, sum(lines for _, lines in payloads))]
        return [Part([payload], payload[1]) for payload in payloads]

    def send(self, part: Part) -> None:
        self.transport.send(part.payload)

    def lost(self, parts: Sequence[Part], reason: str) -> None:
        if reason == CUT_OFF:
            self.counts["lines_lost"] += sum(part.points for part in parts)

    def close(self) -> None:
        c = self.counts
        self.log.info(
            "%d lines sent to statsd at %s in %d %s (%d send errors, %d lines lost)",
            c["lines_sent"],
            self.endpoint,
            c["datagrams_sent"],
            "datagrams" if self.protocol == "udp" else "writes",
            c["send_errors"],
            c["lines_lost"],
        )
        self.transport.close()

    def figures(self) -> dict[str, Any]:
        f: dict[str, Any] = {
            **self.counts,
            "names_changed": self.mapping.names_changed,
            "timer_values_dropped": self.mapping.timer_values_dropped,
            "series_failed_mapping": self.mapping.guard.failed,
            "statsd": self.endpoint,
            "protocol": self.protocol,
            "mtu": self.mtu,
            "statsd_error": self.last_error,
        }
        if self.transport.last_send_errors:
            f["problems"] = [
                f"{self.transport.last_send_errors} send errors in the last flush "
                f"({self.last_error}): is statsd running at {self.endpoint}?"
            ]
        return f


__all__ = [
    "DEFAULT_MTU",
    "HISTOGRAM_MODES",
    "MAX_UDP_PAYLOAD",
    "NAME_RULE",
    "PROTOCOLS",
    "SET_MODES",
    "SOURCE_MODES",
    "STREAM_CHUNK",
    "TAG_MODES",
    "TAG_RULE",
    "Statsd",
    "StatsdMapping",
    "TcpTransport",
    "Transport",
    "UdpTransport",
    "fit_name",
    "fit_tag",
    "milliseconds",
    "number",
    "pack",
    "sample_rate",
]
