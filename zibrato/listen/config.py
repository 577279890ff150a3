"""What `zibrato-listen` is configured with: :class:`ListenConfig` and its defaults, declared once.

Its own module so that the servers, the TCP connections, the drain and the
inbox all read the same settings without importing one another.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from ..curve import ClientKeys
from ..http_server import HttpLimits
from . import statsd as statsd_lines
from .publisher import DEFAULT_HWM, DEFAULT_MAX_BYTES

DEFAULT_RECEIVE_BUFFER = 8 * 1024 * 1024
DEFAULT_FLUSH_INTERVAL = 0.05
DEFAULT_MAX_BODY = 8 * 1024 * 1024
DEFAULT_TCP_IDLE_TIMEOUT = 300.0
DEFAULT_MAX_TCP_CONNECTIONS = 500  # with the drain's 200, well inside a 1,024-descriptor limit


@dataclass
class ListenConfig:
    """Everything the CLI decides (see zibrato/listen/spec.py for what each means)."""

    broker: str = "127.0.0.1:5550"
    statsd: str | None = "127.0.0.1:8125"
    statsd_unix: str | None = None
    l2met: str | None = None
    l2met_token: str | None = field(default=None, repr=False)
    stdin: bool = False
    tee: bool = False
    level: str = statsd_lines.DEFAULT_LEVEL
    gauge_sign: str = "delta"
    timestamp_window: float = statsd_lines.DEFAULT_TIMESTAMP_WINDOW
    max_line_length: int = statsd_lines.DEFAULT_MAX_LINE
    receive_buffer: int = DEFAULT_RECEIVE_BUFFER
    flush_interval: float = DEFAULT_FLUSH_INTERVAL
    hwm: int = DEFAULT_HWM
    max_buffer_bytes: int = DEFAULT_MAX_BYTES  # bytes that may wait in ZeroMQ for the broker, as the client's
    status_port: int | None = None
    self_metrics: bool = True
    max_body: int = DEFAULT_MAX_BODY
    gauge_expire: float = statsd_lines.DEFAULT_GAUGE_EXPIRE
    max_gauges: int = statsd_lines.DEFAULT_MAX_GAUGES
    curve: ClientKeys | None = field(default=None, repr=False)  # keys of a CURVE broker link
    tcp_idle_timeout: float = DEFAULT_TCP_IDLE_TIMEOUT
    max_tcp_connections: int = DEFAULT_MAX_TCP_CONNECTIONS
    http_limits: HttpLimits = field(default_factory=HttpLimits)  # the l2met drain's


def split_address(text: str, what: str) -> tuple[str, int]:
    """'HOST:PORT' (or '[v6]:PORT') -> (host, port); ValueError with a clear message."""
    host, sep, port = text.rpartition(":")
    host = host.strip("[]")
    if not sep or not host or not port.isdigit() or not 0 <= int(port) <= 65535:
        raise ValueError(f"{what} must be HOST:PORT (port 0-65535), got {text!r}")
    return host, int(port)


__all__ = [
    "DEFAULT_FLUSH_INTERVAL",
    "DEFAULT_MAX_BODY",
    "DEFAULT_MAX_TCP_CONNECTIONS",
    "DEFAULT_RECEIVE_BUFFER",
    "DEFAULT_TCP_IDLE_TIMEOUT",
    "ListenConfig",
    "split_address",
]
