"""zibrato-prometheus: the worker Prometheus scrapes (GET /metrics), with l2met's read API."""

from __future__ import annotations

from typing import cast

import click

from .addresses import check_listen_port
from .common import CONTEXT_SETTINGS, Seconds, WorkerCommand, run_worker, standalone, worker_kwargs, worker_options
from .http_options import allow_host_option, http_limit_options, http_limits


def _needs_extra() -> None:
    """A clear message, not a traceback, when prometheus_client is not installed."""
    try:
        import prometheus_client  # noqa: F401
    except ImportError as error:
        raise click.ClickException(
            f"zibrato-prometheus needs the prometheus extra ({error.name} is "
            "missing): pip install '.[prometheus]' in Zibrato's checkout"
        ) from None


def _listen(ctx: click.Context, param: click.Parameter, value: str) -> tuple[str, int]:
    _needs_extra()
    from ..backends.prometheus import parse_listen

    try:
        check_listen_port(value, "--listen")
        return parse_listen(value)
    except ValueError as error:
        raise click.BadParameter(str(error)) from None


def bucket_rules(ctx: click.Context, param: click.Parameter, value: tuple[str, ...]):
    """--buckets, repeatable: NAME_GLOB=b1,b2,... or b1,b2,... (every name) -> [(glob, bounds)]."""
    from ..backends.classic_buckets import parse_bucket_rule

    try:
        return tuple(parse_bucket_rule(text) for text in value)
    except ValueError as error:
        raise click.BadParameter(str(error)) from None


def buckets_option(func):
    """--buckets, shared with zibrato-remote-write."""
    return click.option(
        "--buckets",
        multiple=True,
        callback=bucket_rules,
        metavar="[NAME_GLOB=]LE,LE,...",
        help="Classic le bounds of the series matching the glob (repeatable; defaults by unit: docs/PROMETHEUS.md).",
    )(func)


def max_native_buckets_option(func):
    """--max-native-buckets, shared with zibrato-remote-write."""
    return click.option(
        "--max-native-buckets",
        default=160,
        show_default=True,
        type=click.IntRange(1, 100_000),
        help="Most buckets of a native histogram (past it, neighbours merge).",
    )(func)


def _own_expire(func):
    """--expire, unless the shared worker options already have it (then that one is used)."""
    if any(param.name == "expire" for param in getattr(func, "__click_params__", ())):
        return func
    return click.option(
        "--expire",
        default=300.0,
        show_default=True,
        type=Seconds(0, 366 * 86400, low_open=True),
        help="Seconds without data after which a series is dropped from /metrics.",
    )(func)


@click.command("prometheus", cls=WorkerCommand, context_settings=CONTEXT_SETTINGS)
@_own_expire
@worker_options(default_flush=10.0)
@click.option(
    "--listen",
    default="127.0.0.1:9464",
    show_default=True,
    callback=_listen,
    metavar="HOST:PORT",
    help="Where to serve /metrics and /series/<name> (loopback by default).",
)
@buckets_option
@max_native_buckets_option
@click.option(
    "--history",
    default=10,
    show_default=True,
    type=click.IntRange(1, 1000),
    help="Intervals kept for /series/<name>?offset=N, by each series once asked for (before that, its last one).",
)
@allow_host_option
@http_limit_options("The /metrics server")
def command(
    listen: tuple[str, int],
    buckets: tuple[tuple[str, tuple[float, ...]], ...],
    max_native_buckets: int,
    history: int,
    allowed_hosts: tuple[str, ...],
    verbose: bool,
    **options: object,
) -> None:
    """Serve the subscribed levels to Prometheus: GET /metrics (text, OpenMetrics or protobuf).

    Counters are cumulative <name>_total since the start, gauges and sets their
    last value, timers (<name>_seconds) and histograms cumulative le buckets
    with _count and _sum; to a Prometheus that asks for protobuf (native
    histograms enabled), timers and histograms are native histograms as well.
    Idle series expire after --expire seconds. GET /series/<name>?source=
    &offset=N answers a series' summary as JSON; add count=, mean= or sum=
    (and tol=) for l2met's metric assertion: 200 when it holds, 404 when not.
    """
    _needs_extra()
    from ..backends.prometheus import PrometheusDestination, check_listen

    try:
        check_listen(listen)  # a port in use is a clear error at start, as for the broker
    except OSError as error:
        raise click.ClickException(str(error)) from None
    # the shared --expire (seconds per type; 0: the default 300 s here) or this command's own
    expire = cast(
        "float | dict[str, float]", options["expire"] if "expire" in _shared_params() else options.pop("expire")
    )
    limits = http_limits(options)
    run_worker(
        lambda: PrometheusDestination(
            listen,
            expire=expire,
            history=history,
            bucket_rules=buckets,
            max_native_buckets=max_native_buckets,
            limits=limits,
            allowed_hosts=allowed_hosts,
        ),
        verbose,
        **worker_kwargs(options),
    )


def _shared_params() -> set[str]:
    @worker_options(default_flush=10.0)
    def probe(**kwargs: object) -> None: ...

    return {param.name for param in getattr(probe, "__click_params__", ()) if param.name}


main = standalone(command, "zibrato-prometheus", "ZIBRATO_PROMETHEUS")
