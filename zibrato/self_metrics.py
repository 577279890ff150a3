"""How a worker measures itself: through the public client, to the broker, under its own level.

The worker depends on :class:`SelfMetrics`, a narrow protocol, rather than
on :mod:`zibrato.client` (the daemon side imports nothing of the client's
module graph to type it); :func:`self_client` makes the real one.
"""

from __future__ import annotations

import os
import socket
from collections.abc import Mapping
from typing import Protocol

from .curve import ClientKeys


class SelfMetrics(Protocol):
    """What the worker publishes its own figures through (the public client, or a test's memory client)."""

    def gauge(self, level: str, name: str, value: float, /) -> None: ...
    def timing(self, level: str, name: str, seconds: float, /) -> None: ...
    def close(self, timeout: float | None = None) -> None: ...


def self_client(host: str, port: int, worker: str, curve: ClientKeys | None) -> SelfMetrics:
    """A client of the broker's PULL port at ``host:port``, every measurement tagged with the worker and host."""
    from . import Zibrato  # the public client, however zibrato.client is laid out

    return Zibrato(host, port, tags={"worker": worker, "host": hostname()}, curve_keys=curve)


def publish(client: SelfMetrics, level: str, prefix: str, figures: Mapping[str, float], elapsed: float) -> None:
    """The figures as gauges ``<prefix>.<key>``, and the flush's duration as a timing."""
    for key, value in figures.items():
        client.gauge(level, f"{prefix}.{key}", value)
    client.timing(level, f"{prefix}.flush_duration", elapsed)


def hostname() -> str:
    """The short host name (the pid where it has none): the ``host`` tag of self-metrics."""
    return socket.gethostname().split(".")[0] or str(os.getpid())


__all__ = ["SelfMetrics", "hostname", "publish", "self_client"]
