"""zibrato-listen: statsd/DogStatsD and l2met log lines in, Zibrato measurements out."""

from __future__ import annotations

import os
import threading
from typing import Any

import click

from ..listen import statsd
from ..listen.publisher import DEFAULT_HWM
from ..listen.servers import (
    DEFAULT_FLUSH_INTERVAL,
    DEFAULT_MAX_BODY,
    DEFAULT_RECEIVE_BUFFER,
    ListenConfig,
    Listener,
    split_address,
)
from ..listen.tcp import DEFAULT_MAX_TCP_CONNECTIONS, DEFAULT_TCP_IDLE_TIMEOUT
from ..protocol import is_valid_level
from ..runtime import install_stop_handlers, setup_logging
from .addresses import check_listen_port
from .common import CONTEXT_SETTINGS, Seconds, curve_client_options, curve_keys, standalone, verbose_option
from .http_options import http_limit_options, http_limits

_OFF = ("", "off", "none")


def _address(ctx: click.Context, param: click.Parameter, value: str | None) -> str | None:
    if value is None or (param.name == "statsd" and value.lower() in _OFF):
        return None
    try:
        check_listen_port(value, f"--{param.name.replace('_', '-')}")
        split_address(value, f"--{param.name.replace('_', '-')}")
    except ValueError as error:
        raise click.BadParameter(str(error)) from None
    return value


def _is_default(name: str) -> bool:
    """True when the option was neither given nor set through the environment."""
    source = click.get_current_context().get_parameter_source(name)
    return source in (None, click.core.ParameterSource.DEFAULT)


def _level(ctx: click.Context, param: click.Parameter, value: str) -> str:
    if not is_valid_level(value):
        raise click.BadParameter("1-64 characters of A-Z a-z 0-9 _ . -")
    return value.lower()  # levels are case-insensitive


@click.command("listen", context_settings=CONTEXT_SETTINGS)
@click.option(
    "--statsd",
    default="127.0.0.1:8125",
    show_default=True,
    callback=_address,
    help="HOST:PORT for statsd/DogStatsD lines, on UDP and TCP (newline-delimited); 'off' to disable.",
)
@click.option(
    "--statsd-unix",
    type=click.Path(dir_okay=False),
    default=None,
    help="Also read statsd datagrams from a unix datagram socket at this path.",
)
@click.option(
    "--l2met",
    default=None,
    callback=_address,
    help="HOST:PORT of an HTTP log drain (POST /logs, logplex/log-shuttle framing).",
)
@click.option(
    "--l2met-token-file",
    type=click.Path(exists=True, dir_okay=False),
    default=None,
    help="File holding the drain's token (required with --l2met); senders give it "
    "as the drain URL's user-info or an 'Authorization: Bearer' header.",
)
@click.option(
    "--stdin",
    "read_stdin",
    is_flag=True,
    help="Read l2met log lines from standard input; stop at its end (implies --statsd off unless --statsd is given).",
)
@click.option("--tee", is_flag=True, help="With --stdin, copy every input line to standard output.")
@click.option(
    "--broker",
    default="127.0.0.1:5550",
    show_default=True,
    callback=_address,
    help="HOST:PORT of the broker's PULL socket.",
)
@click.option(
    "--level",
    default=statsd.DEFAULT_LEVEL,
    show_default=True,
    callback=_level,
    help="Level of everything received; a 'level:<name>' tag overrides it per line.",
)
@click.option(
    "--gauge-sign",
    type=click.Choice(statsd.GAUGE_SIGNS),
    default="delta",
    show_default=True,
    help="What '+5'/'-5' means for a gauge: add to its value (Etsy statsd, pystatsd) or set it (DogStatsD).",
)
@click.option(
    "--timestamp-window",
    default=statsd.DEFAULT_TIMESTAMP_WINDOW,
    show_default=True,
    type=Seconds(0, 31 * 86400),
    help="Seconds a '|T' timestamp may differ from now; beyond, the line is rejected.",
)
@click.option(
    "--max-line-length",
    default=statsd.DEFAULT_MAX_LINE,
    show_default=True,
    type=click.IntRange(64, 1024 * 1024),
    help="Bytes; a longer statsd line is rejected.",
)
@click.option(
    "--receive-buffer",
    default=DEFAULT_RECEIVE_BUFFER,
    show_default=True,
    type=click.IntRange(65536, 1024**3),
    help="SO_RCVBUF bytes for datagram sockets: what absorbs bursts before the "
    "kernel drops (forced past net.core.rmem_max when permitted).",
)
@click.option(
    "--flush-interval",
    default=DEFAULT_FLUSH_INTERVAL,
    show_default=True,
    type=Seconds(0.001, 10),
    help="Seconds between sends to the broker.",
)
@click.option(
    "--hwm",
    default=DEFAULT_HWM,
    show_default=True,
    type=click.IntRange(1, 10_000_000),
    help="Messages queued for the broker before new ones are dropped (and counted).",
)
@click.option(
    "--gauge-expire",
    default=statsd.DEFAULT_GAUGE_EXPIRE,
    show_default=True,
    type=Seconds(1, 31 * 86400),
    help="Seconds a gauge's value is remembered for '+n'/'-n' deltas after its last line "
    "(forgotten after 1-2 times this; counted as gauges_expired).",
)
@click.option(
    "--max-gauges",
    default=statsd.DEFAULT_MAX_GAUGES,
    show_default=True,
    type=click.IntRange(1, 100_000_000),
    help="Gauges remembered for deltas before the idle ones are forgotten early (at most twice this are held).",
)
@click.option(
    "--max-body",
    default=DEFAULT_MAX_BODY,
    show_default=True,
    type=click.IntRange(1024, 1024**3),
    help="Bytes accepted in one drain POST.",
)
@click.option(
    "--status-port",
    type=click.IntRange(0, 65535),
    default=0,
    show_default=True,
    help="Loopback port answering `zibrato status` (0: off).",
)
@click.option(
    "--self-metrics/--no-self-metrics",
    default=True,
    show_default=True,
    help="Publish this listener's own figures (lines, rejects by reason, drops) under the level 'zibrato' every 10 s.",
)
@click.option(
    "--tcp-idle-timeout",
    default=DEFAULT_TCP_IDLE_TIMEOUT,
    show_default=True,
    type=Seconds(0, 86400, low_open=True),
    help="Close a TCP statsd connection with nothing received for this many seconds (clients reconnect).",
)
@click.option(
    "--tcp-max-connections",
    default=DEFAULT_MAX_TCP_CONNECTIONS,
    show_default=True,
    type=click.IntRange(1, 100_000),
    help="Most open TCP statsd connections; past it the one idle longest is closed to let a new one in. "
    "Keep it and --http-max-connections below the descriptor limit (ulimit -n).",
)
@http_limit_options("The l2met drain")
@curve_client_options
@verbose_option
def command(
    statsd: str | None,
    statsd_unix: str | None,
    l2met: str | None,
    l2met_token_file: str | None,
    read_stdin: bool,
    tee: bool,
    broker: str,
    level: str,
    gauge_sign: str,
    timestamp_window: float,
    max_line_length: int,
    receive_buffer: int,
    flush_interval: float,
    hwm: int,
    max_body: int,
    gauge_expire: float,
    max_gauges: int,
    status_port: int,
    self_metrics: bool,
    tcp_idle_timeout: float,
    tcp_max_connections: int,
    verbose: bool,
    **options: Any,
) -> None:
    """Accept statsd/DogStatsD lines and l2met log lines; publish them to the broker.

    \b
    statsd:  name:value[:value...]|type[|@rate][|#tag,k:v][|T<unix s>]
             types c g ms h d s; 'host:' tag -> source, 'level:' tag -> level
    l2met:   measure#name=4ms  count#name[=n]  sample#name=3GB  source=web
             (HTTP drain: POST /logs?prefix=P&source-prefix=S; or --stdin)

    Rejected lines are counted by reason (`zibrato status --port STATUS_PORT`)
    and never stop the listener. docs/INGRESS.md has the whole grammar and
    every choice where statsd servers disagree.
    """
    if read_stdin and _is_default("statsd"):
        statsd = None  # --stdin alone reads standard input only: no statsd port to bind
    if tee and not read_stdin:
        raise click.UsageError("--tee needs --stdin")
    token = None
    if l2met:
        if not l2met_token_file:
            raise click.UsageError("--l2met needs --l2met-token-file: a drain is never open to anyone")
        token = _read_token(l2met_token_file)
    if not (statsd or statsd_unix or l2met or read_stdin):
        raise click.UsageError("nothing to listen to: give --statsd, --statsd-unix, --l2met or --stdin")
    setup_logging(verbose)
    config = ListenConfig(
        broker=broker,
        statsd=statsd,
        statsd_unix=statsd_unix,
        l2met=l2met,
        l2met_token=token,
        stdin=read_stdin,
        tee=tee,
        level=level,
        gauge_sign=gauge_sign,
        timestamp_window=timestamp_window,
        max_line_length=max_line_length,
        receive_buffer=receive_buffer,
        flush_interval=flush_interval,
        hwm=hwm,
        status_port=status_port or None,
        self_metrics=self_metrics,
        max_body=max_body,
        tcp_idle_timeout=tcp_idle_timeout,
        max_tcp_connections=tcp_max_connections,
        http_limits=http_limits(options),
        curve=curve_keys(options),
        gauge_expire=gauge_expire,
        max_gauges=max_gauges,
    )
    stop = threading.Event()
    install_stop_handlers(stop)
    raise SystemExit(Listener(config).run(stop))


def _read_token(path: str) -> str:
    try:
        with open(path, encoding="utf-8") as file:
            token = file.read().strip()
    except (OSError, UnicodeDecodeError) as error:
        raise click.BadParameter(f"cannot read {path}: {error}", param_hint="--l2met-token-file") from None
    if not token:
        raise click.BadParameter(f"{path} is empty", param_hint="--l2met-token-file")
    if os.stat(path).st_mode & 0o004:
        click.echo(f"warning: {path} is readable by everyone", err=True)
    return token


main = standalone(command, "zibrato-listen", "ZIBRATO_LISTEN")
