"""``--config FILE``: a daemon's flags from a TOML file, the keys being the long flag names without dashes.

    flush = 1
    statsd-host = "10.0.0.5"
    keep = ["db.*", "#env:prod"]

The file fills click's ``default_map``, so what is given on the command line
or in ``ZIBRATO_<COMMAND>_<FLAG>`` overrides it (click reads the command
line, then the environment, then the default map). An unknown key is a usage
error that names it and the closest valid key; a secret is only ever named
by its file (``apitoken-file``), never written in the file itself.
"""

from __future__ import annotations

import difflib
import sys
from typing import Any

import click


def config_keys(command: click.Command) -> dict[str, click.Option]:
    """Every key a --config file of ``command`` may hold: long flag (without dashes) -> its option."""
    keys: dict[str, click.Option] = {}
    for param in command.params:
        if not isinstance(param, click.Option) or param.name in (None, "config"):
            continue
        for opt in (*param.opts, *param.secondary_opts):
            if opt.startswith("--") and not (param.secondary_opts and opt in param.secondary_opts):
                keys[opt[2:]] = param
    return keys


def read_config(command: click.Command, path: str) -> dict[str, Any]:
    """The ``default_map`` of the TOML file at ``path`` (parameter name -> value); a usage error if invalid."""
    if sys.version_info >= (3, 11):
        import tomllib
    else:  # pragma: no cover - Python 3.10 has no tomllib
        import tomli as tomllib  # type: ignore[import-not-found, unused-ignore]

    try:
        with open(path, "rb") as file:
            document = tomllib.load(file)
    except OSError as error:
        raise click.BadParameter(f"cannot read {path}: {error.strerror or error}", param_hint="--config") from None
    except tomllib.TOMLDecodeError as error:
        raise click.BadParameter(f"{path} is not valid TOML: {error}", param_hint="--config") from None
    keys = config_keys(command)
    secrets: frozenset[str] = getattr(command, "secret_params", frozenset())
    values: dict[str, Any] = {}
    for key, value in document.items():
        option = keys.get(key)
        if option is None:
            close = difflib.get_close_matches(key, keys, n=1, cutoff=0.5)
            hint = f"; did you mean '{close[0]}'?" if close else f"; valid keys: {', '.join(sorted(keys))}"
            raise click.UsageError(f"unknown key '{key}' in --config {path}{hint}")
        if option.name in secrets:
            raise click.UsageError(
                f"'{key}' in --config {path}: a secret is never written in a config file; "
                f"give the file that holds it ('{key}-file') or the environment variable"
            )
        if isinstance(value, dict):
            raise click.UsageError(f"'{key}' in --config {path}: expected a value, not a table")
        if option.multiple and not isinstance(value, list):
            value = [value]
        elif not option.multiple and isinstance(value, list):
            raise click.UsageError(f"'{key}' in --config {path}: one value, not a list")
        values[str(option.name)] = value
    return values


def _load(ctx: click.Context, param: click.Parameter, value: str | None) -> None:
    if value is None:
        return
    ctx.default_map = {**(ctx.default_map or {}), **read_config(ctx.command, value)}


def config_option() -> click.Option:
    """The eager ``--config FILE`` option: read before every other flag, so it only fills defaults."""
    return click.Option(
        ["--config"],
        type=click.Path(exists=True, dir_okay=False),
        metavar="FILE",
        is_eager=True,
        expose_value=False,
        callback=_load,
        help="TOML file of flags (keys: long flag names without dashes); flags and variables override it.",
    )
