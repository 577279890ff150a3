"""zibrato-broker's settings and spec: the PULL -> PUB forwarder between clients and workers."""

from __future__ import annotations

import threading
from dataclasses import dataclass

import click

from .broker import DEFAULT_HWM, DEFAULT_MAX_MESSAGE_SIZE
from .components.fields import Seconds, option
from .components.settings import key_file
from .components.spec import DaemonSpec


@dataclass(frozen=True)
class BrokerConfig:
    """Forward measurements from clients (PULL on PORT) to workers (PUB on PORT + 1).

    Runs in the foreground; stops cleanly on TERM, INT or QUIT, forwarding
    what clients already sent.
    """

    host: str = option("127.0.0.1", "Interface to bind. Loopback by default; 0.0.0.0 exposes it to the network.")
    port: int = option(5550, "PULL port for clients; workers subscribe on PORT + 1.", type=click.IntRange(1, 65534))
    status_port: int | None = option(
        None,
        "Loopback port answering `zibrato status` [default: PORT + 2; 0: off].",
        type=click.IntRange(0, 65535),
        show_default=False,
    )
    hwm: int = option(
        DEFAULT_HWM,
        "Messages queued per socket (and per worker) before ZeroMQ drops.",
        type=click.IntRange(1, 100_000_000),
    )
    max_message_size: int = option(
        DEFAULT_MAX_MESSAGE_SIZE,
        "Bytes; a client sending more is disconnected and that message dropped.",
        type=click.IntRange(1024, 2**31 - 1),
    )
    startup_grace: float = option(
        1.0, "Seconds between binding PUB and accepting clients, so workers reconnect first.", type=Seconds(0, 60)
    )
    curve_secret_key: str | None = key_file(
        "The broker's CURVE secret key file (NAME.key_secret): encrypt and authenticate both ports."
    )
    curve_clients: str | None = key_file(
        "Directory of allowed client and worker public keys (*.key), reloaded when it changes.", directory=True
    )

    def __post_init__(self) -> None:
        if self.status_port is None and self.port + 2 > 65535:
            raise click.BadParameter(
                f"{self.port} leaves no room for the status port (PORT + 2 = "
                f"{self.port + 2}); use a lower port, or give --status-port (0: off)",
                param_hint="--port",
            )
        if bool(self.curve_secret_key) != bool(self.curve_clients):
            raise click.UsageError("CURVE needs both --curve-secret-key and --curve-clients")


def run(config: BrokerConfig) -> int:
    from .broker import Broker, run_broker
    from .curve import KeyFileError, ServerAuth
    from .runtime import install_stop_handlers

    curve = None
    if config.curve_secret_key and config.curve_clients:
        try:
            curve = ServerAuth(config.curve_secret_key, config.curve_clients)
        except KeyFileError as error:
            raise click.UsageError(str(error)) from None
    status_port = config.port + 2 if config.status_port is None else config.status_port or None
    stop = threading.Event()
    install_stop_handlers(stop)
    broker = Broker(
        config.host,
        config.port,
        status_port=status_port,
        hwm=config.hwm,
        max_message_size=config.max_message_size,
        startup_grace=config.startup_grace,
        curve=curve,
    )
    return run_broker(broker, stop)


SPEC = DaemonSpec("broker", BrokerConfig, run)
