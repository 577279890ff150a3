"""zibrato-statsd: the worker that forwards each flush to statsd."""

from __future__ import annotations

import click
from click.core import ParameterSource

from ..backends.statsd import (
    DEFAULT_MTU,
    HISTOGRAM_MODES,
    MAX_UDP_PAYLOAD,
    PROTOCOLS,
    SET_MODES,
    SOURCE_MODES,
    TAG_MODES,
    Statsd,
)
from ..rules import SeriesRules
from .addresses import host_callback
from .common import (
    CONTEXT_SETTINGS,
    POSITIVE_SECONDS,
    WorkerCommand,
    backoff,
    retry_options,
    run_worker,
    standalone,
    worker_kwargs,
    worker_options,
)

SELF_METRICS = "zibrato.*"  # the names every worker and listener publishes its own figures under


@click.command("statsd", cls=WorkerCommand, context_settings=CONTEXT_SETTINGS)
@worker_options(default_flush=10.0)
@click.option(
    "--statsd-host",
    default="127.0.0.1",
    show_default=True,
    callback=host_callback,
    help="statsd server host (UDP: resolved once at start).",
)
@click.option(
    "--statsd-port", default=8125, show_default=True, type=click.IntRange(1, 65535), help="statsd server port."
)
@click.option(
    "--protocol",
    type=click.Choice(PROTOCOLS),
    default="udp",
    show_default=True,
    help="udp: datagrams, never blocking; tcp: failed intervals retried.",
)
@click.option("--prefix", default="", show_default=True, help="Prepended to every name ('app' -> 'app.name').")
@click.option(
    "--mtu",
    default=DEFAULT_MTU,
    show_default=True,
    type=click.IntRange(64, MAX_UDP_PAYLOAD),
    help="Largest UDP datagram in bytes (1432 LAN, 8932 jumbo frames, 512 internet).",
)
@click.option(
    "--source-as",
    type=click.Choice(SOURCE_MODES),
    default="prefix",
    show_default=True,
    help="prefix: 'source.name' (l2met's convention); tag: the DogStatsD tag source:<source>.",
)
@click.option(
    "--tags",
    "tag_mode",
    type=click.Choice(TAG_MODES),
    default="drop",
    show_default=True,
    help="dogstatsd: tags as |#k:v; drop: leave them out.",
)
@click.option(
    "--histograms",
    type=click.Choice(HISTOGRAM_MODES),
    default="timer",
    show_default=True,
    help="timer: histograms as |ms lines; dogstatsd: as |h lines.",
)
@click.option(
    "--sets",
    type=click.Choice(SET_MODES),
    default="count",
    show_default=True,
    help="count: a gauge of unique members; members: |s lines.",
)
@click.option(
    "--timeout", default=5.0, show_default=True, type=POSITIVE_SECONDS, help="TCP: seconds for a connect or a write."
)
@retry_options(first=0.5, cap=30.0, scope="TCP: ")
def command(
    statsd_host: str,
    statsd_port: int,
    protocol: str,
    prefix: str,
    mtu: int,
    source_as: str,
    tag_mode: str,
    histograms: str,
    sets: str,
    timeout: float,
    retry_delay: float,
    max_retry_delay: float,
    verbose: bool,
    **options: object,
) -> None:
    """Forward each flush of the subscribed levels to statsd, so that its statistics stay exact.

    See docs/STATSD.md.
    \f

    Counters are sent as one pre-summed line per flush, gauges as their last
    value (negative ones set correctly), timers as every value in
    milliseconds (past --max-exact values per series and flush, values spread
    over the sketch, marked |@rate), histograms like timers (or |h), sets as
    a gauge of their count (or |s per member). Zibrato's own figures
    (zibrato.* series) are sent only with an explicit --self-metrics.
    See docs/STATSD.md.
    """
    retries = backoff(retry_delay, max_retry_delay)
    worker = worker_kwargs(options)
    if click.get_current_context().get_parameter_source("self_metrics") in (None, ParameterSource.DEFAULT):
        # Zibrato's own figures (every worker's zibrato.* series) stay out of the
        # user's statsd unless --self-metrics is given; `zibrato status` has them.
        rules = worker["rules"]
        worker["rules"] = SeriesRules(keep=rules.keep, drop=(*rules.drop, SELF_METRICS), drop_tags=rules.drop_tags)
    run_worker(
        lambda: Statsd(
            statsd_host,
            statsd_port,
            protocol=protocol,
            prefix=prefix,
            mtu=mtu,
            source_as=source_as,
            tags=tag_mode,
            timeout=timeout,
            histograms=histograms,
            sets=sets,
        ),
        verbose,
        backoff=retries,
        **worker,
    )


main = standalone(command, "zibrato-statsd", "ZIBRATO_STATSD")
