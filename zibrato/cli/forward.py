"""zibrato-forward: the forwarder tier, a worker whose destination is an upstream broker."""

from __future__ import annotations

import click

from ..delivery import Backoff
from ..forward import Forwarder, ForwardWorker
from .addresses import split_host_port
from .common import (
    CONTEXT_SETTINGS,
    Seconds,
    WorkerCommand,
    curve_keys,
    run_worker,
    standalone,
    worker_kwargs,
    worker_options,
)


@click.command("forward", cls=WorkerCommand, context_settings=CONTEXT_SETTINGS)
@worker_options(default_flush=10.0)
@click.option(
    "--to",
    "to",
    required=True,
    metavar="HOST:PORT",
    help="The upstream broker's client (PULL) port, e.g. global.example:5550.",
)
@click.option(
    "--drop-source", is_flag=True, help="Forward series without their source, so every host's series merge upstream."
)
@click.option(
    "--source", default=None, metavar="NAME", help="Source given to series that have none (e.g. this host's name)."
)
@click.option(
    "--retry-cap",
    default=10.0,
    show_default=True,
    type=Seconds(0.5, 3600),
    help="Longest wait between attempts while the upstream broker is away.",
)
def command(to: str, drop_source: bool, source: str | None, retry_cap: float, verbose: bool, **options: object) -> None:
    """Aggregate this host's levels and send each interval's mergeable summaries upstream.

    Subscribes to the local broker (--host/--port, plain loopback) and sends
    to --to with --curve-secret-key/--curve-server-key (the upstream broker's
    key) when given. Workers upstream merge the summaries with what they
    receive raw: exact counts and sums, percentiles within the sketch's bound.
    A 15-minute upstream outage is held in the backlog (docs/SCALING.md).
    """
    upstream = curve_keys(options)
    kwargs = worker_kwargs(options)
    try:
        split_host_port(to.removeprefix("tcp://"), "--to")
    except ValueError as error:
        raise click.BadParameter(f"{error} (the upstream broker's --port)", param_hint="--to") from None
    run_worker(
        lambda: Forwarder(to, drop_source=drop_source, source=source, curve=upstream),
        verbose,
        worker_class=ForwardWorker,
        backoff=Backoff(base=0.5, cap=retry_cap),
        **kwargs,
    )


main = standalone(command, "zibrato-forward", "ZIBRATO_FORWARD")
