"""zibrato-broker: the PULL -> PUB forwarder between clients and workers."""

from __future__ import annotations

import threading

import click

from ..broker import DEFAULT_HWM, DEFAULT_MAX_MESSAGE_SIZE, Broker, run_broker
from ..curve import KeyFileError, ServerAuth
from ..runtime import install_stop_handlers, setup_logging
from .common import CONTEXT_SETTINGS, Seconds, standalone, verbose_option


@click.command("broker", context_settings=CONTEXT_SETTINGS)
@click.option(
    "--host",
    default="127.0.0.1",
    show_default=True,
    help="Interface to bind. Loopback by default; 0.0.0.0 exposes it to the network.",
)
@click.option(
    "--port",
    default=5550,
    show_default=True,
    type=click.IntRange(1, 65534),
    help="PULL port for clients; workers subscribe on PORT + 1.",
)
@click.option(
    "--status-port",
    type=click.IntRange(0, 65535),
    default=None,
    help="Loopback port answering `zibrato status` [default: PORT + 2; 0: off].",
)
@click.option(
    "--hwm",
    default=DEFAULT_HWM,
    show_default=True,
    type=click.IntRange(1, 100_000_000),
    help="Messages queued per socket (and per worker) before ZeroMQ drops.",
)
@click.option(
    "--max-message-size",
    default=DEFAULT_MAX_MESSAGE_SIZE,
    show_default=True,
    type=click.IntRange(1024, 2**31 - 1),
    help="Bytes; a client sending more is disconnected and that message dropped.",
)
@click.option(
    "--startup-grace",
    default=1.0,
    show_default=True,
    type=Seconds(0, 60),
    help="Seconds between binding PUB and accepting clients, so workers reconnect first.",
)
@click.option(
    "--curve-secret-key",
    type=click.Path(dir_okay=False),
    default=None,
    metavar="FILE",
    help="The broker's CURVE secret key file (NAME.key_secret): encrypt and authenticate both ports.",
)
@click.option(
    "--curve-clients",
    type=click.Path(file_okay=False),
    default=None,
    metavar="DIR",
    help="Directory of allowed client and worker public keys (*.key), reloaded when it changes.",
)
@verbose_option
def command(
    host: str,
    port: int,
    status_port: int | None,
    hwm: int,
    max_message_size: int,
    startup_grace: float,
    curve_secret_key: str | None,
    curve_clients: str | None,
    verbose: bool,
) -> None:
    """Forward measurements from clients (PULL on PORT) to workers (PUB on PORT + 1).

    Runs in the foreground; stops cleanly on TERM, INT or QUIT, forwarding
    what clients already sent.
    """
    status_port = _status_port(port, status_port)
    curve = _curve(curve_secret_key, curve_clients)
    setup_logging(verbose)
    stop = threading.Event()
    install_stop_handlers(stop)
    broker = Broker(
        host,
        port,
        status_port=status_port,
        hwm=hwm,
        max_message_size=max_message_size,
        startup_grace=startup_grace,
        curve=curve,
    )
    raise SystemExit(run_broker(broker, stop))


def _curve(secret_key: str | None, clients: str | None) -> ServerAuth | None:
    """Both --curve-secret-key and --curve-clients, or neither; a usage error if unreadable."""
    if not secret_key and not clients:
        return None
    if not (secret_key and clients):
        raise click.UsageError("CURVE needs both --curve-secret-key and --curve-clients")
    try:
        return ServerAuth(secret_key, clients)
    except KeyFileError as error:
        raise click.UsageError(str(error)) from None


def _status_port(port: int, status_port: int | None) -> int | None:
    """--status-port, PORT + 2 by default, None when off; a usage error past 65535."""
    if status_port is None:
        if port + 2 > 65535:
            raise click.BadParameter(
                f"{port} leaves no room for the status port (PORT + 2 = "
                f"{port + 2}); use a lower port, or give --status-port "
                "(0: off)",
                param_hint="--port",
            )
        return port + 2
    return status_port or None


main = standalone(command, "zibrato-broker", "ZIBRATO_BROKER")
