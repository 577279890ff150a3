"""The flags every worker shares, read from :class:`~zibrato.worker_config.WorkerConfig`'s field metadata.

Most shared flags are one WorkerConfig field each (their flag, type and help
sit on the field). A few settings are built from several flags and are
declared here: the broker address (``--broker``, and the deprecated hidden
``--host``/``--port``), ``--self-metrics``, the series rules
(``--keep``/``--drop``/``--drop-tags``) and the CURVE key files.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import click
from click.core import ParameterSource

from ..worker_config import SELF_LEVEL, WorkerConfig
from .addresses import split_host_port
from .fields import FLAG, Flag, FlagField, Parsed, flag_fields, option
from .settings import CurveClient

#: the help section every worker's shared flags are listed under
SHARED_TITLE = "Shared worker options (every zibrato-<destination>; docs/CLI.md)"


def parse_relative_error(text: str) -> float:
    from ..sketch import scale_for

    value = float(text)
    scale_for(value)
    return value


def _brokers(text: str) -> tuple[str, ...]:
    parts = tuple(part.strip() for part in text.split(",") if part.strip())
    for part in parts:
        split_host_port(part, "--broker")
    return parts


def _patterns(text: str) -> str:
    from ..rules import check_pattern

    return check_pattern(text)


def _patterns_flag(metavar: str, help: str) -> Any:
    return option((), help, multiple=True, type=Parsed(_patterns), metavar=metavar, show_default=False)


@dataclasses.dataclass(frozen=True)
class _Composite:
    """The shared flags that are not one WorkerConfig field each (see the module's docstring)."""

    broker: tuple[str, ...] = option(
        (),
        "The broker's worker-facing address (its --port + 1); repeat it or give "
        "a comma list to read several brokers.  [default: 127.0.0.1:5551]",
        multiple=True,
        type=Parsed(_brokers),
        metavar="HOST:PORT",
        show_default=False,
    )
    # --host/--port: the former words, hidden, for one minor version (a deprecation line at start)
    host: tuple[str, ...] = option(("127.0.0.1",), "", multiple=True, hidden=True)
    port: int = option(5551, "", type=click.IntRange(1, 65535), hidden=True)
    self_metrics: bool = option(
        True,
        "Publish this worker's own figures under the level 'zibrato'.",
        secondary="--no-self-metrics",
    )
    keep: tuple[str, ...] = _patterns_flag(
        "PATTERN",
        "Keep only series matching a pattern (repeatable): a name glob ('db.*') or, after #, a tag glob ('#env:prod').",
    )
    drop: tuple[str, ...] = _patterns_flag(
        "PATTERN", "Drop series matching a pattern (repeatable; same forms as --keep)."
    )
    drop_tags: tuple[str, ...] = _patterns_flag(
        "KEY", "Remove tags whose key matches this glob (repeatable), e.g. 'pod*'."
    )


_ORDER = (
    "broker host port levels flush_interval percentiles max_exact relative_error expire status_port "
    "self_metrics broker_port keep drop drop_tags shard lateness curve_secret_key curve_server_key stop_timeout"
).split()


def shared_flags(default_flush: float) -> list[FlagField]:
    """The shared worker flags in --help order, ``--flush`` defaulting to the destination's own flush."""
    found = {f.name: f for f in (*flag_fields(_Composite), *flag_fields(CurveClient))}
    for item in flag_fields(WorkerConfig):
        if item.name == "flush_interval":
            item = dataclasses.replace(item, default=default_flush)
        found[item.name] = item
    return [found[name] for name in _ORDER]


def verbose_flag() -> FlagField:
    return FlagField("verbose", ("verbose",), Flag("Log debug details.", is_flag=True, short="-v"), False)


#: the parameter names of every shared worker flag (grouped apart in --help)
SHARED_NAMES = frozenset((*_ORDER, "verbose"))


def _given(ctx: click.Context | None, name: str) -> bool:
    return ctx is not None and ctx.get_parameter_source(name) not in (None, ParameterSource.DEFAULT)


def worker_config(values: dict[str, Any], deprecations: list[str]) -> WorkerConfig:
    """The WorkerConfig of the shared flags' values (by parameter name); a usage error on a conflict.

    A deprecation line for the hidden --host/--port goes into ``deprecations``
    (logged once logging is set up).
    """
    from ..rules import SeriesRules

    ctx = click.get_current_context(silent=True)
    old = [f"--{name}" for name in ("host", "port") if _given(ctx, name)]
    brokers: tuple[str, ...] = tuple(part for item in values["broker"] for part in item)
    if brokers:
        if old:
            raise click.UsageError(f"give --broker HOST:PORT or the deprecated {'/'.join(old)}, not both")
        hosts, port = brokers, split_host_port(brokers[0], "--broker")[1]
    else:
        hosts, port = tuple(values["host"]), values["port"]
        if old:
            deprecations.append(
                f"{'/'.join(old)} on workers are deprecated and will go in the next minor version: "
                f"use --broker HOST:PORT, the broker's worker-facing address (e.g. --broker 127.0.0.1:{port})"
            )
    own = {f.name for f in dataclasses.fields(WorkerConfig) if FLAG in f.metadata}
    return WorkerConfig(
        brokers=hosts,
        port=port,
        self_level=SELF_LEVEL if values["self_metrics"] else None,
        rules=SeriesRules(keep=values["keep"], drop=values["drop"], drop_tags=values["drop_tags"]),
        curve=CurveClient(values["curve_secret_key"], values["curve_server_key"]).keys(),
        **{name: values[name] for name in own if name != "status_port"},
        status_port=values["status_port"] or None,
    )
