"""What every worker is configured with, declared once: :class:`WorkerConfig`.

The command-line builder fills it from the shared worker flags (and a
``--config`` file); :class:`zibrato.worker.Worker` reads it. A destination's
own settings live in its own config dataclass, never here.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from .aggregation import DEFAULT_MAX_EXACT
from .curve import ClientKeys
from .rules import SeriesRules
from .shard import Shard

DEFAULT_PERCENTILES = (50.0, 90.0, 95.0, 99.0)
ALL_LEVELS = "all"
SELF_LEVEL = "zibrato"
#: seconds an interval stays open for summaries from forwarders (--lateness), at most half a flush
DEFAULT_LATENESS = 3.0


@dataclass(frozen=True)
class WorkerConfig:
    """The settings every worker shares; the defaults are the ones `--help` shows.

    ``brokers`` are HOST or HOST:PORT endpoints (``port`` is used where one
    has none). ``flush_interval`` has no single default: each destination's
    spec names its own.
    """

    flush_interval: float = 60.0
    brokers: Sequence[str] = ("127.0.0.1",)
    port: int = 5551
    levels: Sequence[str] = (ALL_LEVELS,)
    percentiles: Sequence[float] = DEFAULT_PERCENTILES
    max_exact: int = DEFAULT_MAX_EXACT
    relative_error: float = 0.01
    #: the aggregator's expiry options (see :func:`zibrato.aggregation.parse_expire`)
    expire: dict[str, Any] = field(default_factory=dict)
    status_port: int | None = None
    self_level: str | None = SELF_LEVEL
    broker_port: int | None = None
    max_backlog: int | None = None
    stop_timeout: float = 8.0
    hwm: int = 100_000
    max_message_size: int | None = None
    rules: SeriesRules | None = None
    shard: Shard | None = None
    lateness: float = DEFAULT_LATENESS
    curve: ClientKeys | None = None
    #: aggregator options beyond relative_error and expire (max_buckets, set_max_exact)
    aggregation: dict[str, Any] = field(default_factory=dict)
