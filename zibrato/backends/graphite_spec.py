"""zibrato-graphite's settings and spec: the worker that sends each flush to carbon's plaintext receiver."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import click

from ..components.addresses import split_host_port
from ..components.fields import Parsed, embed, option
from ..components.settings import Retry, timeout
from ..components.spec import DestinationSpec
from .graphite import DEFAULT_PORT, DEFAULT_PREFIX, TAG_MODES


def parse_address(value: str) -> tuple[str, int]:
    """'HOST:PORT', 'HOST' (port 2003) or '[v6]:PORT' -> (host, port)."""
    return split_host_port(value, "--graphite", default_port=DEFAULT_PORT)


@dataclass(frozen=True)
class GraphiteConfig:
    """Send each flush of the subscribed levels to Graphite, retrying until carbon has it.

    Counters as <prefix>.counters.<name>.count and .rate, gauges as
    <prefix>.gauges.<name>, timers and histograms as one path per statistic
    (count, sum, mean, median, p99 ...), sets as <prefix>.sets.<name>.count.
    See docs/CLI.md and README, "Where the metrics go".
    """

    address: tuple[str, int] = option(
        ("127.0.0.1", DEFAULT_PORT),
        "carbon's plaintext (line) receiver.",
        flag="--graphite",
        type=Parsed(parse_address),
        metavar="HOST:PORT",
        cli_default=f"127.0.0.1:{DEFAULT_PORT}",
    )
    prefix: str = option(DEFAULT_PREFIX, "First part of every path ('' for none): <prefix>.counters.<name>.count.")
    tag_mode: str = option(
        "drop",
        "drop: the source is a path part, tags are left out; graphite: source, level "
        "and tags as Graphite 1.1 ';k=v' tags (carbon's ENABLE_TAGS).",
        flag="--tags",
        type=click.Choice(TAG_MODES),
    )
    timeout: float = timeout(10.0, "Seconds for connecting, writing and carbon's confirmation.")
    retry: Retry = embed(Retry(0.5, 30.0))


def build(config: GraphiteConfig) -> Any:
    from .graphite import GraphiteDestination

    host, port = config.address
    return GraphiteDestination(host, port, prefix=config.prefix, tags=config.tag_mode, timeout=config.timeout)


SPEC = DestinationSpec("graphite", GraphiteConfig, build, 10.0)
