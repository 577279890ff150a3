"""zibrato-web: the worker that serves a live web page of the series (docs/WEB.md)."""

from __future__ import annotations

import click

from ..backends.web import DEFAULT_HISTORY, WebView, chart_percentiles
from ..runtime import setup_logging
from ..web.server import DEFAULT_MAX_EVENT_STREAMS, parse_listen
from .addresses import check_listen_port
from .common import CONTEXT_SETTINGS, WorkerCommand, run_worker, standalone, worker_kwargs, worker_options
from .http_options import allow_host_option, http_limit_options, http_limits


def _listen(ctx: click.Context, param: click.Parameter, value: str) -> tuple[str, int]:
    try:
        check_listen_port(value, "--listen")
        return parse_listen(value)
    except ValueError as error:
        raise click.BadParameter(str(error)) from None


@click.command("web", cls=WorkerCommand, context_settings=CONTEXT_SETTINGS)
@worker_options(default_flush=2.0)
@click.option(
    "--listen",
    default="127.0.0.1:8080",
    show_default=True,
    callback=_listen,
    help="HOST:PORT to serve the page on ([::1]:8080 for IPv6; port 0: any free port). "
    "Anything but loopback logs a warning: the page has no authentication.",
)
@click.option(
    "--history",
    default=DEFAULT_HISTORY,
    show_default=True,
    type=click.IntRange(1, 10_000),
    help="Intervals the charts show (held in memory).",
)
@click.option(
    "--max-event-streams",
    default=DEFAULT_MAX_EVENT_STREAMS,
    show_default=True,
    type=click.IntRange(1, 10_000),
    help="Most live event streams (open pages) at once; more get 503 and are counted.",
)
@allow_host_option
@http_limit_options("The page's server")
def command(
    listen: tuple[str, int],
    history: int,
    max_event_streams: int,
    allowed_hosts: tuple[str, ...],
    verbose: bool,
    **options: object,
) -> None:
    """Serve a searchable table of the last interval's series and live charts of the last ones.

    Open the URL it logs ("web view at ..."); the page updates at each flush.
    """
    limits = http_limits(options)
    kwargs = worker_kwargs(options)
    kwargs["percentiles"] = chart_percentiles(kwargs["percentiles"])
    setup_logging(verbose)
    view = WebView(
        listen=listen,
        history=history,
        limits=limits,
        allowed_hosts=allowed_hosts,
        max_event_streams=max_event_streams,
    )
    try:
        view.bind()  # before the worker starts: a port in use is a clear error at once
    except OSError as error:
        click.echo(f"zibrato-web: cannot listen on {listen[0]}:{listen[1]}: {error.strerror or error}", err=True)
        raise SystemExit(1) from None
    try:
        run_worker(lambda: view, verbose, **kwargs)
    finally:
        view.close()


main = standalone(command, "zibrato-web", "ZIBRATO_WEB")
