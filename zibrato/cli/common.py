"""Options and start-up shared by every daemon command."""

from __future__ import annotations

import functools
import logging
import math
import threading
from collections.abc import Callable
from typing import Any

import click
from click.core import ParameterSource

from ..aggregation import DEFAULT_MAX_EXACT, parse_expire
from ..curve import ClientKeys, KeyFileError
from ..delivery import Backoff
from ..destination import Destination
from ..rules import SeriesRules, check_pattern
from ..runtime import install_stop_handlers, setup_logging
from ..shard import Shard
from ..sketch import scale_for
from ..worker import DEFAULT_LATENESS, Worker, parse_levels, parse_percentiles
from .addresses import split_host_port

CONTEXT_SETTINGS = {"help_option_names": ["-h", "--help"], "max_content_width": 100}
MIN_FLUSH, MAX_FLUSH = 0.1, 86_400.0


class Seconds(click.ParamType):
    """A finite number of seconds within [low, high] (``low_open``: strictly above low).

    click's FloatRange lets ``nan`` through (every comparison with NaN is
    false) and accepts ``inf``; a duration must be neither.
    """

    name = "seconds"

    def __init__(self, low: float = 0.0, high: float = 86_400.0, low_open: bool = False) -> None:
        self.low, self.high, self.low_open = low, high, low_open

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> float:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            number = float(value)
        else:
            try:
                number = float(str(value).strip())
            except ValueError:
                self.fail(f"{value!r} is not a number of seconds", param, ctx)
        if not math.isfinite(number):
            self.fail(f"{value!r} is not a finite number of seconds", param, ctx)
        too_low = number <= self.low if self.low_open else number < self.low
        if too_low or number > self.high:
            low = f"more than {self.low:g}" if self.low_open else f"at least {self.low:g}"
            self.fail(f"{number:g} s is out of range: {low} and at most {self.high:g}", param, ctx)
        return number

    def get_metavar(self, param: click.Parameter, ctx: click.Context | None = None) -> str:
        return "SECONDS"


#: a timeout or a delay: more than 0, at most an hour, never NaN or infinite
POSITIVE_SECONDS = Seconds(0, 3600, low_open=True)


def retry_options(first: float, cap: float, scope: str = "") -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """--retry-delay and --max-retry-delay, for a destination that retries (read them with :func:`backoff`).

    ``scope`` prefixes the help ("TCP: " where only one transport retries).
    """

    def decorate(func: Callable[..., Any]) -> Callable[..., Any]:
        func = click.option(
            "--max-retry-delay",
            default=cap,
            show_default=True,
            type=POSITIVE_SECONDS,
            help=f"{scope}Cap on the delay between retries (Retry-After: up to 300 s).",
        )(func)
        return click.option(
            "--retry-delay",
            default=first,
            show_default=True,
            type=POSITIVE_SECONDS,
            help=f"{scope}First delay before a retry; doubles (with jitter).",
        )(func)

    return decorate


def backoff(retry_delay: float, max_retry_delay: float) -> Backoff:
    """The delivery backoff of --retry-delay and --max-retry-delay (a usage error when the cap is below it)."""
    if max_retry_delay < retry_delay:
        raise click.BadParameter("must not be less than --retry-delay", param_hint="--max-retry-delay")
    return Backoff(retry_delay, max_retry_delay)


def _brokers(ctx: click.Context, param: click.Parameter, value: tuple[str, ...]) -> tuple[str, ...]:
    """--broker values: comma lists of HOST:PORT, each checked (the port is required)."""
    parts = tuple(part.strip() for item in value for part in item.split(",") if part.strip())
    for part in parts:
        try:
            split_host_port(part, "--broker")
        except ValueError as error:
            raise click.BadParameter(str(error).removeprefix("--broker: ")) from None
    return parts


#: deprecation lines found while reading the options, logged once logging is set up
_DEPRECATIONS: list[str] = []


def _broker_address(options: dict) -> tuple[tuple[str, ...], int]:
    """(hosts, port) for the Worker from --broker, or from the deprecated --host/--port (noted for the log)."""
    brokers, host, port = options.pop("broker", ()), options.pop("host"), options.pop("port")
    ctx = click.get_current_context(silent=True)
    old = [
        f"--{name}"
        for name in ("host", "port")
        if ctx is not None and ctx.get_parameter_source(name) not in (None, ParameterSource.DEFAULT)
    ]
    if brokers:
        if old:
            raise click.UsageError(f"give --broker HOST:PORT or the deprecated {'/'.join(old)}, not both")
        return brokers, split_host_port(brokers[0], "--broker")[1]
    if old:
        _DEPRECATIONS.append(
            f"{'/'.join(old)} on workers are deprecated and will go in the next minor version: "
            f"use --broker HOST:PORT, the broker's worker-facing address (e.g. --broker 127.0.0.1:{port})"
        )
    return tuple(host), port


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


def _patterns(ctx: click.Context, param: click.Parameter, value: tuple[str, ...]) -> tuple[str, ...]:
    try:
        return tuple(check_pattern(p) for p in value)
    except ValueError as error:
        raise click.BadParameter(str(error)) from None


def _relative_error(ctx: click.Context, param: click.Parameter, value: float) -> float:
    try:
        scale_for(value)
    except ValueError as error:
        raise click.BadParameter(str(error)) from None
    return value


def _expire(ctx: click.Context, param: click.Parameter, value: str) -> dict:
    try:
        return parse_expire(value)
    except ValueError as error:
        raise click.BadParameter(str(error)) from None


def verbose_option(func: Callable) -> Callable:
    return click.option("-v", "--verbose", is_flag=True, help="Log debug details.")(func)


def curve_client_options(func: Callable) -> Callable:
    """--curve-secret-key and --curve-server-key, for any command that connects to a broker
    (workers, forwarders, zibrato-listen); read them with :func:`curve_keys`."""
    func = click.option(
        "--curve-server-key",
        type=click.Path(dir_okay=False),
        default=None,
        metavar="FILE",
        help="The broker's CURVE public key file (NAME.key).",
    )(func)
    return click.option(
        "--curve-secret-key",
        type=click.Path(dir_okay=False),
        default=None,
        metavar="FILE",
        help="This process's CURVE secret key file (NAME.key_secret).",
    )(func)


def worker_options(default_flush: float) -> Callable[[Callable], Callable]:
    """The flags every worker shares (see README, "CLI reference")."""

    def decorate(func: Callable) -> Callable:
        options: list[Callable[[Callable[..., Any]], Callable[..., Any]]] = [
            click.option(
                "--broker",
                multiple=True,
                default=(),
                callback=_brokers,
                metavar="HOST:PORT",
                help="The broker's worker-facing address (its --port + 1); repeat it or give "
                "a comma list to read several brokers.  [default: 127.0.0.1:5551]",
            ),
            # --host/--port: the former words, hidden, for one minor version (a deprecation line at start)
            click.option("--host", multiple=True, default=("127.0.0.1",), hidden=True),
            click.option("--port", default=5551, type=click.IntRange(1, 65535), hidden=True),
            click.option(
                "--levels",
                default="all",
                show_default=True,
                callback=_levels,
                help="Comma-separated levels to aggregate, matched exactly; 'all' for every level.",
            ),
            click.option(
                "--flush",
                "flush_interval",
                default=default_flush,
                show_default=True,
                type=Seconds(MIN_FLUSH, MAX_FLUSH),
                help=f"Seconds between flushes, aligned to the wall clock ({MIN_FLUSH:g} to {MAX_FLUSH:g}).",
            ),
            click.option(
                "--percentiles",
                default="50,90,95,99",
                show_default=True,
                callback=_percentiles,
                help="Timer percentiles by nearest rank; fractions allowed (99.9 -> p99_9).",
            ),
            click.option(
                "--max-exact",
                "--max-samples",
                "max_exact",
                default=DEFAULT_MAX_EXACT,
                show_default=True,
                type=click.IntRange(1, 100_000_000),
                help="Timer/histogram values kept exactly per series and interval; beyond, "
                "a sketch within --relative-error (--max-samples: former name).",
            ),
            click.option(
                "--relative-error",
                default=0.01,
                show_default=True,
                type=float,
                callback=_relative_error,
                help="Bound on a sketched percentile's relative error (0.01: OpenTelemetry scale 6, 0.54 %).",
            ),
            click.option(
                "--expire",
                default="0",
                show_default=True,
                callback=_expire,
                help="Seconds an idle series is still reported (as 0 / its last value), "
                "e.g. 300 or 300,gauge=3600; 0: only intervals with data.",
            ),
            click.option(
                "--status-port",
                type=click.IntRange(0, 65535),
                default=0,
                show_default=True,
                help="Loopback port answering `zibrato status` (0: off).",
            ),
            click.option(
                "--self-metrics/--no-self-metrics",
                default=True,
                show_default=True,
                help="Publish this worker's own figures under the level 'zibrato'.",
            ),
            click.option(
                "--broker-port",
                type=click.IntRange(1, 65535),
                default=None,
                help="Broker PULL port for self-metrics [default: the --broker port - 1].",
            ),
            click.option(
                "--keep",
                multiple=True,
                callback=_patterns,
                metavar="PATTERN",
                help="Keep only series matching a pattern (repeatable): a name glob "
                "('db.*') or, after #, a tag glob ('#env:prod').",
            ),
            click.option(
                "--drop",
                multiple=True,
                callback=_patterns,
                metavar="PATTERN",
                help="Drop series matching a pattern (repeatable; same forms as --keep).",
            ),
            click.option(
                "--drop-tags",
                multiple=True,
                callback=_patterns,
                metavar="KEY",
                help="Remove tags whose key matches this glob (repeatable), e.g. 'pod*'.",
            ),
            click.option(
                "--shard",
                default=None,
                callback=_shard,
                metavar="K/N",
                help="Aggregate only shard K of N of each level (N workers share a level; "
                "clients shard with ZIBRATO_SHARDS=1).",
            ),
            click.option(
                "--lateness",
                default=DEFAULT_LATENESS,
                show_default=True,
                type=Seconds(0, 3600),
                help="Seconds an interval stays open for forwarders' summaries (at most "
                "half of --flush); later ones join the next interval, counted as late.",
            ),
            curve_client_options,
            click.option(
                "--stop-timeout",
                default=8.0,
                show_default=True,
                type=Seconds(0.5, 3600),
                help="Seconds from a stop signal to exit: reading what is queued, the "
                "final flush and its delivery (supervisord's stopwaitsecs is 10).",
            ),
            verbose_option,
        ]
        before = {param.name for param in getattr(func, "__click_params__", [])}
        for option in reversed(options):
            func = option(func)
        SHARED_WORKER_OPTIONS.update(
            param.name for param in getattr(func, "__click_params__", []) if param.name not in before
        )
        return func

    return decorate


#: the parameter names :func:`worker_options` adds (grouped apart in --help by :class:`WorkerCommand`)
SHARED_WORKER_OPTIONS: set[str | None] = set()


def _shard(ctx: click.Context, param: click.Parameter, value: str | None) -> Shard | None:
    if value is None:
        return None
    try:
        return Shard.parse(value)
    except ValueError as error:
        raise click.BadParameter(str(error)) from None


def curve_keys(options: dict) -> ClientKeys | None:
    """The CURVE keys of --curve-secret-key / --curve-server-key (popped); a usage error if unreadable."""
    try:
        return ClientKeys.from_options(options.pop("curve_secret_key", None), options.pop("curve_server_key", None))
    except KeyFileError as error:
        raise click.BadParameter(str(error), param_hint="--curve-secret-key/--curve-server-key") from None


def worker_kwargs(options: dict) -> dict:
    """Map the shared CLI options onto :class:`zibrato.worker.Worker`'s constructor (popping them)."""
    rules = SeriesRules(
        keep=options.pop("keep", ()), drop=options.pop("drop", ()), drop_tags=options.pop("drop_tags", ())
    )
    hosts, port = _broker_address(options)
    return dict(
        host=hosts,
        port=port,
        levels=options.pop("levels"),
        flush_interval=options.pop("flush_interval"),
        percentiles=options.pop("percentiles"),
        max_samples=options.pop("max_exact"),
        status_port=options.pop("status_port") or None,
        self_level="zibrato" if options.pop("self_metrics") else None,
        broker_port=options.pop("broker_port"),
        rules=rules,
        aggregation=dict(relative_error=options.pop("relative_error"), expire=options.pop("expire")),
        stop_timeout=options.pop("stop_timeout", 8.0),
        shard=options.pop("shard", None),
        lateness=options.pop("lateness", DEFAULT_LATENESS),
        curve=curve_keys(options),
    )


def run_worker(make: Callable[[], Destination], verbose: bool, worker_class: type = Worker, **worker: Any) -> None:
    """Build the destination (a ValueError is a usage error), run a worker around it until stopped.

    ``worker`` holds :class:`~zibrato.worker.Worker`'s keyword arguments
    (:func:`worker_kwargs` of the shared options, plus e.g. ``backoff``).
    """
    setup_logging(verbose)
    while _DEPRECATIONS:
        logging.getLogger("zibrato").warning("%s", _DEPRECATIONS.pop(0))
    try:
        runtime = worker_class(make(), **worker)
    except ValueError as error:
        raise click.UsageError(str(error)) from None
    stop = threading.Event()
    install_stop_handlers(stop)
    raise SystemExit(runtime.run(stop))


def standalone(command: click.Command, prog_name: str, envvar_prefix: str) -> Callable[[], None]:
    """An entry point for a `zibrato-<name>` script, every option settable from the environment."""

    def main() -> None:
        command.main(prog_name=prog_name, auto_envvar_prefix=envvar_prefix)

    if command.callback is not None:  # the command's name and docstring
        functools.update_wrapper(main, command.callback)
    return main


class WorkerCommand(click.Command):
    """A worker's command: its own flags first, then the flags every worker shares under their own title.

    Help used to run about 70 lines with each command's own flags last; now
    what is particular to a destination comes right after its description.
    """

    def format_options(self, ctx: click.Context, formatter: click.HelpFormatter) -> None:
        own: list[tuple[str, str]] = []
        limits: list[tuple[str, str]] = []
        shared: list[tuple[str, str]] = []
        for param in self.get_params(ctx):
            record = param.get_help_record(ctx)
            if record is None:
                continue
            if param.name in SHARED_WORKER_OPTIONS or "--help" in getattr(param, "opts", ()):
                shared.append(record)
            elif (param.name or "").startswith("http_"):  # the HTTP server's limits (cli/http_options.py)
                limits.append(record)
            else:
                own.append(record)
        if own:
            with formatter.section("Options"):
                formatter.write_dl(own)
        if limits:
            with formatter.section("HTTP server limits (docs/OPERATIONS.md)"):
                formatter.write_dl(limits)
        if shared:
            with formatter.section("Shared worker options (every zibrato-<destination>; README, CLI reference)"):
                formatter.write_dl(shared)
