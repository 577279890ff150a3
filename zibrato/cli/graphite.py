"""zibrato-graphite: the worker that sends each flush to Graphite (carbon's plaintext protocol)."""

from __future__ import annotations

import click

from ..backends.graphite import DEFAULT_PORT, DEFAULT_PREFIX, TAG_MODES, GraphiteDestination
from .addresses import split_host_port
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


def parse_address(ctx: click.Context | None, param: click.Parameter | None, value: str) -> tuple[str, int]:
    """'HOST:PORT', 'HOST' (port 2003) or '[v6]:PORT' -> (host, port)."""
    try:
        return split_host_port(value, "--graphite", default_port=DEFAULT_PORT)
    except ValueError as error:
        raise click.BadParameter(str(error).removeprefix("--graphite: ")) from None


@click.command("graphite", cls=WorkerCommand, context_settings=CONTEXT_SETTINGS)
@worker_options(default_flush=10.0)
@click.option(
    "--graphite",
    "address",
    default=f"127.0.0.1:{DEFAULT_PORT}",
    show_default=True,
    callback=parse_address,
    metavar="HOST:PORT",
    help="carbon's plaintext (line) receiver.",
)
@click.option(
    "--prefix",
    default=DEFAULT_PREFIX,
    show_default=True,
    help="First part of every path ('' for none): <prefix>.counters.<name>.count.",
)
@click.option(
    "--tags",
    "tag_mode",
    type=click.Choice(TAG_MODES),
    default="drop",
    show_default=True,
    help="drop: the source is a path part, tags are left out; graphite: source, level "
    "and tags as Graphite 1.1 ';k=v' tags (carbon's ENABLE_TAGS).",
)
@click.option(
    "--timeout",
    default=10.0,
    show_default=True,
    type=POSITIVE_SECONDS,
    help="Seconds for connecting, writing and carbon's confirmation.",
)
@retry_options(first=0.5, cap=30.0)
def command(
    address: tuple[str, int],
    prefix: str,
    tag_mode: str,
    timeout: float,
    retry_delay: float,
    max_retry_delay: float,
    verbose: bool,
    **options: object,
) -> None:
    """Send each flush of the subscribed levels to Graphite, retrying until carbon has it.

    Counters as <prefix>.counters.<name>.count and .rate, gauges as
    <prefix>.gauges.<name>, timers and histograms as one path per statistic
    (count, sum, mean, median, p99 ...), sets as <prefix>.sets.<name>.count.
    See README, "Where the metrics go".
    """
    host, port = address
    retries = backoff(retry_delay, max_retry_delay)
    run_worker(
        lambda: GraphiteDestination(host, port, prefix=prefix, tags=tag_mode, timeout=timeout),
        verbose,
        backoff=retries,
        **worker_kwargs(options),
    )


main = standalone(command, "zibrato-graphite", "ZIBRATO_GRAPHITE")
