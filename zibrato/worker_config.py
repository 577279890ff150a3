"""What every worker is configured with, declared once: :class:`WorkerConfig`.

The command-line builder fills it from the shared worker flags (and a
``--config`` file); :class:`zibrato.worker.Worker` reads it. A destination's
own settings live in its own config dataclass, never here.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import click

from .aggregation import DEFAULT_MAX_EXACT
from .components.fields import MAX_FLUSH, MIN_FLUSH, Parsed, Seconds, flag_metadata
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

    A field with flag metadata (:func:`zibrato.components.fields.flag_metadata`)
    is one of the shared worker flags; ``brokers``/``port``, ``self_level``,
    ``rules`` and ``curve`` are built from several flags
    (:mod:`zibrato.components.worker_flags`). ``brokers`` are HOST or HOST:PORT endpoints (``port`` is used where one
    has none). ``flush_interval`` has no single default: each destination's
    spec names its own.
    """

    flush_interval: float = field(
        default=60.0,
        metadata=flag_metadata(
            f"Seconds between flushes, aligned to the wall clock ({MIN_FLUSH:g} to {MAX_FLUSH:g}).",
            flag="--flush",
            type=Seconds(MIN_FLUSH, MAX_FLUSH),
        ),
    )
    brokers: Sequence[str] = ("127.0.0.1",)
    port: int = 5551
    levels: Sequence[str] = field(
        default=(ALL_LEVELS,),
        metadata=flag_metadata(
            "Comma-separated levels to aggregate, matched exactly; 'all' for every level.",
            type=Parsed("zibrato.worker:parse_levels"),
            cli_default=ALL_LEVELS,
        ),
    )
    percentiles: Sequence[float] = field(
        default=DEFAULT_PERCENTILES,
        metadata=flag_metadata(
            "Timer percentiles by nearest rank; fractions allowed (99.9 -> p99_9).",
            type=Parsed("zibrato.worker:parse_percentiles"),
            cli_default="50,90,95,99",
        ),
    )
    max_exact: int = field(
        default=DEFAULT_MAX_EXACT,
        metadata=flag_metadata(
            "Timer/histogram values kept exactly per series and interval; beyond, "
            "a sketch within --relative-error (--max-samples: former name).",
            aliases=("--max-samples",),
            type=click.IntRange(1, 100_000_000),
        ),
    )
    relative_error: float = field(
        default=0.01,
        metadata=flag_metadata(
            "Bound on a sketched percentile's relative error (0.01: OpenTelemetry scale 6, 0.54 %).",
            type=Parsed("zibrato.components.worker_flags:parse_relative_error", "float"),
        ),
    )
    #: the aggregator's expiry options (see :func:`zibrato.aggregation.parse_expire`)
    expire: dict[str, Any] = field(
        default_factory=dict,
        metadata=flag_metadata(
            "Seconds an idle series is still reported (as 0 / its last value), "
            "e.g. 300 or 300,gauge=3600; 0: only intervals with data.",
            type=Parsed("zibrato.aggregation:parse_expire"),
            cli_default="0",
        ),
    )
    status_port: int | None = field(
        default=None,
        metadata=flag_metadata(
            "Loopback port answering `zibrato status` (0: off).", type=click.IntRange(0, 65535), cli_default=0
        ),
    )
    self_level: str | None = SELF_LEVEL
    broker_port: int | None = field(
        default=None,
        metadata=flag_metadata(
            "Broker PULL port for self-metrics [default: the --broker port - 1].",
            type=click.IntRange(1, 65535),
            show_default=False,
        ),
    )
    max_backlog: int | None = None
    stop_timeout: float = field(
        default=8.0,
        metadata=flag_metadata(
            "Seconds from a stop signal to exit: reading what is queued, the "
            "final flush and its delivery (supervisord's stopwaitsecs is 10).",
            type=Seconds(0.5, 3600),
        ),
    )
    hwm: int = 100_000
    max_message_size: int | None = None
    rules: SeriesRules | None = None
    shard: Shard | None = field(
        default=None,
        metadata=flag_metadata(
            "Aggregate only shard K of N of each level (N workers share a level; clients shard with ZIBRATO_SHARDS=1).",
            type=Parsed("zibrato.shard:Shard.parse"),
            metavar="K/N",
            show_default=False,
        ),
    )
    lateness: float = field(
        default=DEFAULT_LATENESS,
        metadata=flag_metadata(
            "Seconds an interval stays open for forwarders' summaries (at most "
            "half of --flush); later ones join the next interval, counted as late.",
            type=Seconds(0, 3600),
        ),
    )
    curve: ClientKeys | None = None
    #: aggregator options beyond relative_error and expire (max_buckets, set_max_exact)
    aggregation: dict[str, Any] = field(default_factory=dict)
