"""zibrato-prometheus's settings and spec: the worker Prometheus scrapes (GET /metrics), with l2met's read API.

Also the flags zibrato-remote-write shares with it (--buckets,
--max-native-buckets, --series-expire). Nothing here imports
prometheus_client: --help works without the extra.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import click

from ..components.fields import Parsed, option, values
from ..components.http_settings import HttpLimitSettings, http_limits
from ..components.listen_address import allow_host, listen_address
from ..components.spec import DestinationSpec


def needs_extra(command: str, extra: str) -> None:
    """A clear message (exit 1), not a traceback, when prometheus_client is not installed."""
    try:
        import prometheus_client  # noqa: F401
    except ImportError as error:
        raise click.ClickException(
            f"{command} needs the {extra} extra ({error.name} is missing): "
            f"pip install '.[{extra}]' in Zibrato's checkout"
        ) from None


def _parse_listen(text: str) -> tuple[str, int]:
    needs_extra("zibrato-prometheus", "prometheus")
    from .prometheus import parse_listen

    return parse_listen(text)


def buckets() -> Any:
    """--buckets, repeatable: NAME_GLOB=b1,b2,... or b1,b2,... (every name)."""
    return option(
        (),
        "Classic le bounds of the series matching the glob (repeatable; defaults by unit: docs/PROMETHEUS.md).",
        multiple=True,
        type=Parsed("zibrato.backends.classic_buckets:parse_bucket_rule"),
        metavar="[NAME_GLOB=]LE,LE,...",
        show_default=False,
    )


def max_native_buckets() -> Any:
    return option(
        160, "Most buckets of a native histogram (past it, neighbours merge).", type=click.IntRange(1, 100_000)
    )


def series_expire(where: str) -> Any:
    """--series-expire: when an idle series is forgotten by the exposition (not the aggregator's --expire)."""
    return option(
        None,
        f"Idle seconds before a series {where} [default: 300, or --expire]; docs/CLI.md.",
        type=Parsed("zibrato.aggregation:parse_expire"),
        metavar="SECONDS[,KIND=S]",
        show_default=False,
    )


def exposition_expiry(config: Any, shared: Any) -> Any:
    """--series-expire, else the shared --expire (its former double meaning; 0 means 300 s here)."""
    return config.series_expire if config.series_expire is not None else shared.expire


@dataclass(frozen=True)
class PrometheusConfig:
    """Serve the subscribed levels to Prometheus: GET /metrics (text, OpenMetrics or protobuf).

    See docs/PROMETHEUS.md.
    \f

    Counters are cumulative <name>_total since the start, gauges and sets their
    last value, timers (<name>_seconds) and histograms cumulative le buckets
    with _count and _sum; to a Prometheus that asks for protobuf (native
    histograms enabled), timers and histograms are native histograms as well.
    Idle series leave /metrics after --series-expire seconds. GET /series/<name>?source=
    &offset=N answers a series' summary as JSON; add count=, mean= or sum=
    (and tol=) for l2met's metric assertion: 200 when it holds, 404 when not.
    """

    listen: tuple[str, int] = listen_address(
        _parse_listen, "127.0.0.1:9464", "Where to serve /metrics and /series/<name> (loopback by default)."
    )
    buckets: tuple[Any, ...] = buckets()
    max_native_buckets: int = max_native_buckets()
    history: int = option(
        10,
        "Intervals kept for /series/<name>?offset=N, by each series once asked for (before that, its last one).",
        type=click.IntRange(1, 1000),
    )
    series_expire: dict[str, float] | None = series_expire("leaves /metrics")
    allowed_hosts: tuple[str, ...] = allow_host()
    http: HttpLimitSettings = http_limits("The /metrics server")
    #: the exposition's expiry once resolved (from --series-expire or --expire)
    expire: Any = None


def resolve(config: PrometheusConfig, shared: Any, given: Callable[[str], bool]) -> tuple[Any, Any]:
    import dataclasses

    return dataclasses.replace(config, expire=exposition_expiry(config, shared)), shared


def build(config: PrometheusConfig) -> Any:
    needs_extra("zibrato-prometheus", "prometheus")
    from .prometheus import PrometheusDestination, check_listen

    try:
        check_listen(config.listen)  # a port in use is a clear error at start, as for the broker
    except OSError as error:
        raise click.ClickException(str(error)) from None
    named = values(config, "expire", "history", "max_native_buckets", "allowed_hosts")
    return PrometheusDestination(config.listen, bucket_rules=config.buckets, limits=config.http.limits(), **named)


SPEC = DestinationSpec("prometheus", PrometheusConfig, build, 10.0, resolve=resolve)
