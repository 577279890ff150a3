"""zibrato-prometheus: the worker Prometheus scrapes (GET /metrics), with l2met's read API."""
from __future__ import annotations

import click

from .common import CONTEXT_SETTINGS, run_worker, standalone, worker_kwargs, worker_options

POSITIVE = click.FloatRange(min=0, min_open=True)


def _listen(ctx: click.Context, param: click.Parameter, value: str) -> tuple[str, int]:
    from ..backends.prometheus import parse_listen
    try:
        return parse_listen(value)
    except ValueError as error:
        raise click.BadParameter(str(error)) from None


def _buckets(ctx: click.Context, param: click.Parameter, value: str | None):
    if value is None:
        return None
    from ..backends.prometheus_mapping import parse_buckets
    try:
        return parse_buckets(value)
    except ValueError as error:
        raise click.BadParameter(str(error)) from None


@click.command("prometheus", context_settings=CONTEXT_SETTINGS)
@worker_options(default_flush=10.0)
@click.option("--listen", default="127.0.0.1:9464", show_default=True, callback=_listen,
              metavar="HOST:PORT", help="Where to serve /metrics and /series/<name> (loopback by default).")
@click.option("--buckets", default=None, callback=_buckets, metavar="LE,LE,...",
              help="Histogram upper bounds for timers and histograms "
                   "[default: powers of two, 2^-10 s (~1 ms) to 32 s, exact on the sketch's buckets].")
@click.option("--expire", default=300.0, show_default=True, type=POSITIVE,
              help="Seconds without data after which a series is dropped from /metrics.")
@click.option("--history", default=5, show_default=True, type=click.IntRange(1, 1000),
              help="Intervals kept per series for /series/<name>?offset=N.")
def command(listen: tuple[str, int], buckets: tuple[float, ...] | None, expire: float, history: int,
            verbose: bool, **options: object) -> None:
    """Serve the subscribed levels to Prometheus: GET /metrics (text or OpenMetrics).

    Counters are cumulative <name>_total since the start, gauges and sets their
    last value, timers and histograms cumulative le buckets with _count and
    _sum. Idle series expire after --expire seconds. GET /series/<name>?source=
    &offset=N answers a series' summary as JSON; add count=, mean= or sum=
    (and tol=) for l2met's metric assertion: 200 when it holds, 404 when not.
    """
    try:
        from ..backends.prometheus import PrometheusDestination
        from ..backends.prometheus_mapping import DEFAULT_BUCKETS
    except ImportError as error:
        raise click.ClickException(f"zibrato-prometheus needs the prometheus extra ({error.name} is "
                                   "missing): pip install 'zibrato[prometheus]'") from None
    run_worker(lambda: PrometheusDestination(listen, buckets=buckets or DEFAULT_BUCKETS, expire=expire,
                                             history=history), verbose, **worker_kwargs(options))


main = standalone(command, "zibrato-prometheus", "ZIBRATO_PROMETHEUS")
