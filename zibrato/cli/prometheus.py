"""zibrato-prometheus: the worker Prometheus scrapes (GET /metrics), with l2met's read API."""

from __future__ import annotations

from typing import cast

import click

from .common import CONTEXT_SETTINGS, Seconds, run_worker, standalone, worker_kwargs, worker_options
from .http_options import allow_host_option, http_limit_options, http_limits


def _needs_extra() -> None:
    """A clear message, not a traceback, when prometheus_client is not installed."""
    try:
        import prometheus_client  # noqa: F401
    except ImportError as error:
        raise click.ClickException(
            f"zibrato-prometheus needs the prometheus extra ({error.name} is "
            "missing): pip install 'zibrato[prometheus]'"
        ) from None


def _listen(ctx: click.Context, param: click.Parameter, value: str) -> tuple[str, int]:
    _needs_extra()
    from ..backends.prometheus import parse_listen

    try:
        return parse_listen(value)
    except ValueError as error:
        raise click.BadParameter(str(error)) from None


def _buckets(ctx: click.Context, param: click.Parameter, value: str | None):
    if value is None:
        return None
    _needs_extra()
    from ..backends.prometheus_mapping import parse_buckets

    try:
        return parse_buckets(value)
    except ValueError as error:
        raise click.BadParameter(str(error)) from None


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


@click.command("prometheus", context_settings=CONTEXT_SETTINGS)
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
@click.option(
    "--buckets",
    default=None,
    callback=_buckets,
    metavar="LE,LE,...",
    help="Histogram upper bounds for timers and histograms "
    "[default: powers of two, 2^-10 s (~1 ms) to 32 s, exact on the sketch's buckets].",
)
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
    buckets: tuple[float, ...] | None,
    history: int,
    allowed_hosts: tuple[str, ...],
    verbose: bool,
    **options: object,
) -> None:
    """Serve the subscribed levels to Prometheus: GET /metrics (text or OpenMetrics).

    Counters are cumulative <name>_total since the start, gauges and sets their
    last value, timers and histograms cumulative le buckets with _count and
    _sum. Idle series expire after --expire seconds. GET /series/<name>?source=
    &offset=N answers a series' summary as JSON; add count=, mean= or sum=
    (and tol=) for l2met's metric assertion: 200 when it holds, 404 when not.
    """
    _needs_extra()
    from ..backends.prometheus import PrometheusDestination, check_listen
    from ..backends.prometheus_mapping import DEFAULT_BUCKETS

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
            buckets=buckets or DEFAULT_BUCKETS,
            expire=expire,
            history=history,
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
