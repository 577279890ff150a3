"""zibrato-listen's settings and spec: statsd/DogStatsD and l2met log lines in, Zibrato measurements out."""

from __future__ import annotations

import dataclasses
import threading
from dataclasses import dataclass

import click

from ..components.addresses import check_listen_port
from ..components.fields import Parsed, Seconds, embed, option, values
from ..components.http_settings import HttpLimitSettings, http_limits
from ..components.settings import CurveClient, read_secret, secret_file
from ..components.spec import DaemonSpec
from ..protocol import is_valid_level
from . import statsd as lines
from .publisher import DEFAULT_HWM
from .servers import DEFAULT_FLUSH_INTERVAL, DEFAULT_MAX_BODY, DEFAULT_RECEIVE_BUFFER, split_address
from .tcp import DEFAULT_MAX_TCP_CONNECTIONS, DEFAULT_TCP_IDLE_TIMEOUT

_OFF = ("", "off", "none")


def _address(flag: str, can_be_off: bool = False) -> Parsed:
    def parse(value: str) -> str | None:
        if can_be_off and value.lower() in _OFF:
            return None
        check_listen_port(value, flag)
        split_address(value, flag)
        return value

    return Parsed(parse)


def _level(value: str) -> str:
    if not is_valid_level(value):
        raise ValueError("1-64 characters of A-Z a-z 0-9 _ . -")
    return value.lower()  # levels are case-insensitive


@dataclass(frozen=True)
class ListenFlags:
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

    statsd: str | None = option(
        "127.0.0.1:8125",
        "HOST:PORT for statsd/DogStatsD lines, on UDP and TCP (newline-delimited); 'off' to disable.",
        type=_address("--statsd", can_be_off=True),
    )
    statsd_unix: str | None = option(
        None, "Also read statsd datagrams from a unix datagram socket at this path.", type=click.Path(dir_okay=False)
    )
    l2met: str | None = option(
        None, "HOST:PORT of an HTTP log drain (POST /logs, logplex/log-shuttle framing).", type=_address("--l2met")
    )
    l2met_token_file: str | None = secret_file(
        "File holding the drain's token (required with --l2met); senders give it "
        "as the drain URL's user-info or an 'Authorization: Bearer' header."
    )
    read_stdin: bool = option(
        False,
        "Read l2met log lines from standard input; stop at its end (implies --statsd off unless --statsd is given).",
        flag="--stdin",
        is_flag=True,
    )
    tee: bool = option(False, "With --stdin, copy every input line to standard output.", is_flag=True)
    broker: str = option("127.0.0.1:5550", "HOST:PORT of the broker's PULL socket.", type=_address("--broker"))
    level: str = option(
        lines.DEFAULT_LEVEL,
        "Level of everything received; a 'level:<name>' tag overrides it per line.",
        type=Parsed(_level),
    )
    gauge_sign: str = option(
        "delta",
        "What '+5'/'-5' means for a gauge: add to its value (Etsy statsd, pystatsd) or set it (DogStatsD).",
        type=click.Choice(lines.GAUGE_SIGNS),
    )
    timestamp_window: float = option(
        lines.DEFAULT_TIMESTAMP_WINDOW,
        "Seconds a '|T' timestamp may differ from now; beyond, the line is rejected.",
        type=Seconds(0, 31 * 86400),
    )
    max_line_length: int = option(
        lines.DEFAULT_MAX_LINE, "Bytes; a longer statsd line is rejected.", type=click.IntRange(64, 1024 * 1024)
    )
    receive_buffer: int = option(
        DEFAULT_RECEIVE_BUFFER,
        "SO_RCVBUF bytes for datagram sockets: what absorbs bursts before the "
        "kernel drops (forced past net.core.rmem_max when permitted).",
        type=click.IntRange(65536, 1024**3),
    )
    flush_interval: float = option(
        DEFAULT_FLUSH_INTERVAL, "Seconds between sends to the broker.", type=Seconds(0.001, 10)
    )
    hwm: int = option(
        DEFAULT_HWM,
        "Messages queued for the broker before new ones are dropped (and counted).",
        type=click.IntRange(1, 10_000_000),
    )
    gauge_expire: float = option(
        lines.DEFAULT_GAUGE_EXPIRE,
        "Seconds a gauge's value is remembered for '+n'/'-n' deltas after its last line "
        "(forgotten after 1-2 times this; counted as gauges_expired).",
        type=Seconds(1, 31 * 86400),
    )
    max_gauges: int = option(
        lines.DEFAULT_MAX_GAUGES,
        "Gauges remembered for deltas before the idle ones are forgotten early (at most twice this are held).",
        type=click.IntRange(1, 100_000_000),
    )
    max_body: int = option(DEFAULT_MAX_BODY, "Bytes accepted in one drain POST.", type=click.IntRange(1024, 1024**3))
    status_port: int = option(0, "Loopback port answering `zibrato status` (0: off).", type=click.IntRange(0, 65535))
    self_metrics: bool = option(
        True,
        "Publish this listener's own figures (lines, rejects by reason, drops) under the level 'zibrato' every 10 s.",
        secondary="--no-self-metrics",
    )
    tcp_idle_timeout: float = option(
        DEFAULT_TCP_IDLE_TIMEOUT,
        "Close a TCP statsd connection with nothing received for this many seconds (clients reconnect).",
        type=Seconds(0, 86400, low_open=True),
    )
    tcp_max_connections: int = option(
        DEFAULT_MAX_TCP_CONNECTIONS,
        "Most open TCP statsd connections; past it the one idle longest is closed to let a new one in. "
        "Keep it and --http-max-connections below the descriptor limit (ulimit -n).",
        type=click.IntRange(1, 100_000),
    )
    http: HttpLimitSettings = http_limits("The l2met drain")
    curve: CurveClient = embed(CurveClient())


def run(flags: ListenFlags) -> int:
    """Check what the flags ask for together, then run the listener until stopped."""
    from ..components.builder import flag_given
    from ..runtime import install_stop_handlers
    from .servers import ListenConfig, Listener

    statsd = flags.statsd
    if flags.read_stdin and not flag_given("statsd"):
        statsd = None  # --stdin alone reads standard input only: no statsd port to bind
    if flags.tee and not flags.read_stdin:
        raise click.UsageError("--tee needs --stdin")
    token = None
    if flags.l2met:
        if not flags.l2met_token_file:
            raise click.UsageError("--l2met needs --l2met-token-file: a drain is never open to anyone")
        token = read_secret(flags.l2met_token_file, "--l2met-token-file")
    if not (statsd or flags.statsd_unix or flags.l2met or flags.read_stdin):
        raise click.UsageError("nothing to listen to: give --statsd, --statsd-unix, --l2met or --stdin")
    same = {field.name for field in dataclasses.fields(ListenConfig)} & {
        field.name for field in dataclasses.fields(flags)
    }
    config = ListenConfig(
        **values(flags, *same - {"statsd", "status_port", "curve"}),
        statsd=statsd,
        l2met_token=token,
        stdin=flags.read_stdin,
        status_port=flags.status_port or None,
        max_tcp_connections=flags.tcp_max_connections,
        http_limits=flags.http.limits(),
        curve=flags.curve.keys(),
    )
    stop = threading.Event()
    install_stop_handlers(stop)
    return int(Listener(config).run(stop))


SPEC = DaemonSpec("listen", ListenFlags, run)
