"""Options and start-up shared by every daemon command."""
from __future__ import annotations

import functools
import threading
from typing import Callable

import click

from ..runtime import install_stop_handlers, setup_logging
from ..worker import Backend, parse_levels, parse_percentiles

CONTEXT_SETTINGS = {"help_option_names": ["-h", "--help"], "max_content_width": 100}


def _levels(ctx: click.Context, param: click.Parameter, value: str) -> tuple[str, ...]:
    try:
        return parse_levels(value)
    except ValueError as error:
        raise click.BadParameter(str(error)) from None


def _percentiles(ctx: click.Context, param: click.Parameter, value: str) -> tuple[float, ...]:
    try:
        return parse_percentiles(value)
    except ValueError as error:
        raise click.BadParameter(str(error)) from None


def _positive(ctx: click.Context, param: click.Parameter, value: float) -> float:
    if value is not None and value <= 0:
        raise click.BadParameter("must be greater than 0")
    return value


def verbose_option(func: Callable) -> Callable:
    return click.option("-v", "--verbose", is_flag=True, help="Log debug details.")(func)


def worker_options(default_flush: float) -> Callable[[Callable], Callable]:
    """The flags every worker shares (see README, "CLI reference")."""
    def decorate(func: Callable) -> Callable:
        options: list[Callable[[Callable], Callable]] = [
            click.option("--host", default="127.0.0.1", show_default=True,
                         help="Broker host to subscribe to."),
            click.option("--port", default=5551, show_default=True, type=click.IntRange(1, 65535),
                         help="Broker PUB port (the broker's --port + 1)."),
            click.option("--levels", default="all", show_default=True, callback=_levels,
                         help="Comma-separated levels to aggregate, matched exactly; 'all' for every level."),
            click.option("--flush", "flush_interval", default=default_flush, show_default=True,
                         type=float, callback=_positive,
                         help="Seconds between flushes, aligned to the wall clock (0.5 allowed)."),
            click.option("--percentiles", default="50,90,95,99", show_default=True,
                         callback=_percentiles,
                         help="Timer percentiles by nearest rank; fractions allowed (99.9 -> p99_9)."),
            click.option("--max-samples", default=100_000, show_default=True,
                         type=click.IntRange(1, None),
                         help="Timer values kept exactly per series and interval; beyond, a uniform sample."),
            click.option("--status-port", type=click.IntRange(0, 65535), default=0, show_default=True,
                         help="Loopback port answering `zibrato status` (0: off)."),
            click.option("--self-metrics/--no-self-metrics", default=True, show_default=True,
                         help="Publish this worker's own figures under the level 'zibrato'."),
            click.option("--broker-port", type=click.IntRange(1, 65535), default=None,
                         help="Broker PULL port for self-metrics [default: --port - 1]."),
            verbose_option,
        ]
        for option in reversed(options):
            func = option(func)
        return func
    return decorate


def backend_kwargs(options: dict) -> dict:
    """Map the shared CLI options onto Backend's constructor."""
    return dict(
        host=options.pop("host"), port=options.pop("port"), levels=options.pop("levels"),
        flush_interval=options.pop("flush_interval"), percentiles=options.pop("percentiles"),
        max_samples=options.pop("max_samples"), status_port=options.pop("status_port") or None,
        self_level="zibrato" if options.pop("self_metrics") else None,
        broker_port=options.pop("broker_port"),
    )


def run_backend(make: Callable[[], Backend], verbose: bool) -> None:
    """Build the backend (a ValueError is a usage error) and run it until a stop signal."""
    setup_logging(verbose)
    try:
        backend = make()
    except ValueError as error:
        raise click.UsageError(str(error)) from None
    stop = threading.Event()
    install_stop_handlers(stop)
    raise SystemExit(backend.run(stop))


def standalone(command: click.Command, prog_name: str, envvar_prefix: str) -> Callable[[], None]:
    """An entry point for a `zibrato-<name>` script, every option settable from the environment."""
    @functools.wraps(command.callback)  # type: ignore[arg-type]  # @click.command always sets it
    def main() -> None:
        command.main(prog_name=prog_name, auto_envvar_prefix=envvar_prefix)
    return main
