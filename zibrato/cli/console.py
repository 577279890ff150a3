"""zibrato-console: the worker that prints to the terminal."""

from __future__ import annotations

import click

from ..backends.console import FORMATS, Console
from .common import CONTEXT_SETTINGS, WorkerCommand, run_worker, standalone, worker_kwargs, worker_options


@click.command("console", cls=WorkerCommand, context_settings=CONTEXT_SETTINGS)
@worker_options(default_flush=10.0)
@click.option(
    "--format",
    "format_",
    type=click.Choice(FORMATS),
    default="table",
    show_default=True,
    help="A readable table, or one JSON object per series per flush.",
)
@click.option(
    "--sketch",
    is_flag=True,
    help='With --format json, include each sketched series\' whole distribution ("sketch").',
)
def command(format_: str, sketch: bool, verbose: bool, **options: object) -> None:
    """Print each flush of the subscribed levels to standard output.

    An interval in which nothing arrived prints nothing; but with --levels all
    and self-metrics on (the defaults), the worker's own figures arrive every
    flush under the level 'zibrato' (--no-self-metrics, or --levels without
    zibrato, hides them).
    """
    run_worker(lambda: Console(format=format_, sketch=sketch), verbose, **worker_kwargs(options))


main = standalone(command, "zibrato-console", "ZIBRATO_CONSOLE")
