"""zibrato-statsd's settings and spec: the worker that forwards each flush to statsd."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import click

from ..components.addresses import host_callback
from ..components.fields import PORT, embed, option, values
from ..components.settings import Retry, timeout
from ..components.spec import DestinationSpec
from .statsd import DEFAULT_MTU, HISTOGRAM_MODES, MAX_UDP_PAYLOAD, PROTOCOLS, SET_MODES, SOURCE_MODES, TAG_MODES

SELF_METRICS = "zibrato.*"  # the names every worker and listener publishes its own figures under


@dataclass(frozen=True)
class StatsdConfig:
    """Forward each flush of the subscribed levels to statsd, so that its statistics stay exact.

    See docs/STATSD.md.
    \f

    Counters are sent as one pre-summed line per flush, gauges as their last
    value (negative ones set correctly), timers as every value in
    milliseconds (past --max-exact values per series and flush, values spread
    over the sketch, marked |@rate), histograms like timers (or |h), sets as
    a gauge of their count (or |s per member). Zibrato's own figures
    (zibrato.* series) are sent only with an explicit --self-metrics.
    """

    statsd_host: str = option("127.0.0.1", "statsd server host (UDP: resolved once at start).", callback=host_callback)
    statsd_port: int = option(8125, "statsd server port.", type=PORT)
    protocol: str = option(
        "udp", "udp: datagrams, never blocking; tcp: failed intervals retried.", type=click.Choice(PROTOCOLS)
    )
    prefix: str = option("", "Prepended to every name ('app' -> 'app.name').")
    mtu: int = option(
        DEFAULT_MTU,
        "Largest UDP datagram in bytes (1432 LAN, 8932 jumbo frames, 512 internet).",
        type=click.IntRange(64, MAX_UDP_PAYLOAD),
    )
    source_as: str = option(
        "prefix",
        "prefix: 'source.name' (l2met's convention); tag: the DogStatsD tag source:<source>.",
        type=click.Choice(SOURCE_MODES),
    )
    tag_mode: str = option(
        "drop", "dogstatsd: tags as |#k:v; drop: leave them out.", flag="--tags", type=click.Choice(TAG_MODES)
    )
    histograms: str = option(
        "timer", "timer: histograms as |ms lines; dogstatsd: as |h lines.", type=click.Choice(HISTOGRAM_MODES)
    )
    sets: str = option("count", "count: a gauge of unique members; members: |s lines.", type=click.Choice(SET_MODES))
    timeout: float = timeout(5.0, "TCP: seconds for a connect or a write.")
    retry: Retry = embed(Retry(0.5, 30.0), scope="TCP: ")


def build(config: StatsdConfig) -> Any:
    from .statsd import Statsd

    named = values(config, "protocol", "prefix", "mtu", "source_as", "timeout", "histograms", "sets")
    return Statsd(config.statsd_host, config.statsd_port, tags=config.tag_mode, **named)


def without_self_metrics(config: StatsdConfig, shared: Any, given: Callable[[str], bool]) -> tuple[Any, Any]:
    """Zibrato's own figures (zibrato.* series) stay out of the user's statsd unless --self-metrics is given."""
    if given("self_metrics"):
        return config, shared
    from ..components.builder import replace_shared
    from ..rules import SeriesRules

    rules = shared.rules
    drop = (*rules.drop, SELF_METRICS)
    return config, replace_shared(shared, rules=SeriesRules(keep=rules.keep, drop=drop, drop_tags=rules.drop_tags))


SPEC = DestinationSpec("statsd", StatsdConfig, build, 10.0, resolve=without_self_metrics)
