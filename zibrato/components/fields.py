"""What a config dataclass's field says about its command-line flag: :func:`option`, :class:`Flag`.

A destination's settings are one frozen dataclass; each field carries its
flag name, type or range, default, help, metavar, hidden aliases and
environment variable, so the click command, the ``--config`` keys and
docs/CLI.md are all built from that one declaration (the OpenTelemetry
Collector's "a factory with a default config"). This module imports only
click, so :mod:`zibrato.worker_config` can use it without a cycle.
"""

from __future__ import annotations

import dataclasses
import importlib
import math
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import click

#: the ``metadata`` key of a field that is a flag, and of a field that embeds a settings struct
FLAG, EMBED = "zibrato.flag", "zibrato.embed"


class Seconds(click.ParamType):  # type: ignore[type-arg]  # generic only in click >= 8.2
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
PORT = click.IntRange(1, 65535)
MIN_FLUSH, MAX_FLUSH = 0.1, 86_400.0


class Parsed(click.ParamType):  # type: ignore[type-arg]  # generic only in click >= 8.2
    """A value read by ``parse(text)``; its ValueError becomes the usage error (exit 2).

    ``parse`` may import what it needs when called, so a command's --help never
    imports a destination's optional extra.
    """

    def __init__(self, parse: Callable[[str], Any] | str, name: str = "text") -> None:
        self._parse, self.name = parse, name

    def parse(self, text: str) -> Any:
        """``parse`` given as "module:function" is imported on first use (no import cycle, fast --help)."""
        if isinstance(self._parse, str):
            module, _, function = self._parse.partition(":")
            target: Any = importlib.import_module(module)
            for name in function.split("."):
                target = getattr(target, name)
            self._parse = target
        return self._parse(text)  # type: ignore[operator]

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> Any:
        if not isinstance(value, str):
            return value  # already parsed (a default, or a value from a --config file read twice)
        try:
            return self.parse(value)
        except ValueError as error:
            flag = param.opts[0] if param is not None and param.opts else ""
            self.fail(str(error).removeprefix(f"{flag}: "), param, ctx)


@dataclass(frozen=True)
class Flag:
    """How one config field appears on the command line (see :func:`option`)."""

    help: str
    flag: str | None = None  #: the long flag; default: the field's name with dashes
    type: Any = None
    metavar: str | None = None
    aliases: tuple[str, ...] = ()  #: more names shown beside the flag (a former name)
    secondary: str | None = None  #: the "off" flag of an on/off pair (--no-self-metrics)
    envvar: str | None = None  #: a variable besides ZIBRATO_<COMMAND>_<FLAG>
    show_default: bool | str = True
    multiple: bool = False
    is_flag: bool = False
    required: bool = False
    hidden: bool = False
    callback: Callable[[click.Context, click.Parameter, Any], Any] | None = None
    short: str | None = None  #: a one-letter form ("-v")
    section: str = ""  #: a help section of its own ("HTTP server limits ...")
    secret: bool = False  #: the value itself is a secret: never read from a --config file
    cli_default: Any = None  #: the default as typed on the command line, when it differs from the field's

    def long_flag(self, name: str) -> str:
        return self.flag or "--" + name.replace("_", "-")


def flag_metadata(help: str, **flag: Any) -> dict[str, Flag]:
    """The ``metadata`` of a dataclass field that is also a flag, for a field whose default is declared apart."""
    return {FLAG: Flag(help=help, **flag)}


def option(default: Any = None, help: str = "", **flag: Any) -> Any:
    """A dataclass field that is also a command-line flag (``flag`` holds :class:`Flag`'s fields)."""
    if isinstance(default, (list, dict, set)):
        raise TypeError("a flag's default must be immutable (a tuple, not a list)")
    return dataclasses.field(default=default, metadata={FLAG: Flag(help=help, **flag)})


def values(config: Any, *names: str) -> dict[str, Any]:
    """Some of a config's settings by name: the keyword arguments a factory passes on as they are."""
    return {name: getattr(config, name) for name in names}


def embed(default: Any, scope: str = "") -> Any:
    """A field holding a shared settings struct (retry, HTTP limits) whose own fields are flags.

    ``default`` is the struct with this destination's defaults; ``scope``
    prefixes each of its flags' help ("TCP: " where only one transport uses it).
    """
    return dataclasses.field(default=default, metadata={EMBED: scope})


@dataclass(frozen=True)
class FlagField:
    """One flag of a config class: its click parameter name, where it goes, its declaration."""

    name: str  #: the click parameter name (the field's name; unique in a command)
    path: tuple[str, ...]  #: field names from the config class down to this field
    flag: Flag
    default: Any
    scope: str = ""

    @property
    def long_flag(self) -> str:
        return self.flag.long_flag(self.name)

    @property
    def key(self) -> str:
        """The --config file key: the long flag without its dashes."""
        return self.long_flag.removeprefix("--")


def flag_fields(config_class: type, default: Any = None, scope: str = "") -> Iterator[FlagField]:
    """Every flag of a config dataclass, embedded structs flattened, in declaration order."""
    for field in dataclasses.fields(config_class):
        value = getattr(default, field.name) if default is not None else _field_default(field)
        if FLAG in field.metadata:
            declared = field.metadata[FLAG]
            cli_value = declared.cli_default if declared.cli_default is not None else value
            yield FlagField(field.name, (field.name,), declared, cli_value, scope)
        elif EMBED in field.metadata:
            for inner in flag_fields(type(value), value, field.metadata[EMBED] or scope):
                yield dataclasses.replace(inner, path=(field.name, *inner.path))


def build_config(config_class: type, values: dict[str, Any]) -> Any:
    """The config dataclass from parameter values by name (embedded structs rebuilt); ValueError if invalid."""
    kwargs: dict[str, Any] = {}
    for field in dataclasses.fields(config_class):
        if FLAG in field.metadata and field.name in values:
            kwargs[field.name] = values[field.name]
        elif EMBED in field.metadata:
            default = _field_default(field)
            kwargs[field.name] = build_config(type(default), values)
    return config_class(**kwargs)


def _field_default(field: dataclasses.Field[Any]) -> Any:
    if field.default is not dataclasses.MISSING:
        return field.default
    if field.default_factory is not dataclasses.MISSING:
        return field.default_factory()
    return None
