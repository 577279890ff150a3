"""ONE builder: a spec becomes its click command, its ``zibrato-<name>`` entry point and its umbrella subcommand.

The command's flags come from the spec's config dataclass (own flags first),
then, for a destination, the shared worker flags of
:class:`~zibrato.worker_config.WorkerConfig`; every command takes
``--config FILE`` (:mod:`zibrato.components.config_file`) and reads each flag
from ``ZIBRATO_<COMMAND>_<FLAG>`` too. The worker is built with
:meth:`Worker.from_config <zibrato.worker.Worker.from_config>`.
"""

from __future__ import annotations

import dataclasses
import functools
import logging
import threading
from collections.abc import Callable
from typing import Any

import click
from click.core import ParameterSource

from .config_file import config_option
from .fields import FlagField, build_config, flag_fields
from .spec import DaemonSpec, DestinationSpec, find, load
from .worker_flags import SHARED_NAMES, SHARED_TITLE, shared_flags, verbose_flag, worker_config

CONTEXT_SETTINGS = {"help_option_names": ["-h", "--help"], "max_content_width": 100}


def click_option(field: FlagField) -> click.Option:
    """The click option a config field declares."""
    flag = field.flag
    names = [flag.long_flag(field.name), *flag.aliases]
    if flag.short:
        names.insert(0, flag.short)
    if flag.secondary:
        names = [f"{names[0]}/{flag.secondary}"]
    show_default = flag.show_default if not (flag.is_flag and not flag.secondary) else False
    return click.Option(
        [*names, field.name],
        default=field.default,
        type=flag.type,
        metavar=flag.metavar,
        help=flag.help.replace("{scope}", field.scope) or None,
        show_default=show_default,
        multiple=flag.multiple,
        is_flag=True if flag.is_flag or flag.secondary else None,
        required=flag.required,
        hidden=flag.hidden,
        callback=flag.callback,
        envvar=flag.envvar,
        show_envvar=bool(flag.envvar),
    )


class SpecCommand(click.Command):
    """A command built from a spec: its own flags first, then each section's, then the shared worker flags."""

    def __init__(self, *args: Any, sections: dict[str, str], secrets: frozenset[str], **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.sections, self.secret_params = sections, secrets

    def format_options(self, ctx: click.Context, formatter: click.HelpFormatter) -> None:
        groups: dict[str, list[tuple[str, str]]] = {"Options": []}
        for param in self.get_params(ctx):
            record = param.get_help_record(ctx)
            if record is None:
                continue
            name = "verbose" if "--help" in getattr(param, "opts", ()) else param.name or ""
            title = self.sections.get(name, "Options")
            groups.setdefault(title, []).append(record)
        for title, records in groups.items():
            if records:
                with formatter.section(title):
                    formatter.write_dl(records)


def build_command(spec: DestinationSpec | DaemonSpec) -> click.Command:
    """The click command of ``spec`` (no import of the destination itself: --help stays fast)."""
    own = list(flag_fields(spec.config))
    shared = shared_flags(spec.default_flush) if isinstance(spec, DestinationSpec) else []
    fields = [*own, *shared, verbose_flag()]
    names = [f.name for f in fields]
    if len(set(names)) != len(names):
        raise TypeError(f"{spec.name}: a flag is declared twice: {sorted({n for n in names if names.count(n) > 1})}")
    sections = {f.name: f.flag.section or "Options" for f in own}
    if isinstance(spec, DestinationSpec):
        sections.update(dict.fromkeys((*SHARED_NAMES, "config"), SHARED_TITLE))
    secrets = frozenset(f.name for f in fields if f.flag.secret)

    def callback(**values: Any) -> None:
        verbose = values.pop("verbose")
        deprecations: list[str] = []
        try:
            config = build_config(spec.config, values)
        except ValueError as error:
            raise click.UsageError(str(error)) from None
        if isinstance(spec, DaemonSpec):
            _start_logging(verbose, deprecations)
            raise SystemExit(spec.run(config))
        shared = worker_config(values, deprecations)
        if spec.resolve is not None:
            config, shared = spec.resolve(config, shared, flag_given)
        run_worker(spec, config, shared, verbose, deprecations)

    return SpecCommand(
        spec.name,
        context_settings=CONTEXT_SETTINGS,
        callback=callback,
        params=[
            *(click_option(f) for f in own),
            config_option(),
            *(click_option(f) for f in (*shared, verbose_flag())),
        ],
        help=spec.help,
        sections=sections,
        secrets=secrets,
    )


def flag_given(name: str) -> bool:
    """True when the flag ``name`` was set (command line, environment or --config), not left at its default."""
    ctx = click.get_current_context(silent=True)
    return ctx is not None and ctx.get_parameter_source(name) not in (None, ParameterSource.DEFAULT)


def _start_logging(verbose: bool, deprecations: list[str]) -> None:
    from ..runtime import setup_logging

    setup_logging(verbose)
    for line in deprecations:
        logging.getLogger("zibrato").warning("%s", line)


def run_worker(spec: DestinationSpec, config: Any, shared: Any, verbose: bool, deprecations: list[str]) -> None:
    """Build the destination and its worker (a ValueError is a usage error); run until stopped."""
    from ..runtime import install_stop_handlers
    from ..worker import Worker

    _start_logging(verbose, deprecations)
    worker_class = load(spec.worker_class) if spec.worker_class else Worker
    destination = None
    try:
        destination = spec.factory(config)
        runtime = worker_class.from_config(destination, shared, backoff=spec.delivery_backoff(config))
    except ValueError as error:
        _close(destination)
        raise click.UsageError(str(error)) from None
    except BaseException:
        _close(destination)
        raise
    stop = threading.Event()
    install_stop_handlers(stop)
    raise SystemExit(runtime.run(stop))


def _close(destination: Any) -> None:
    if destination is not None:
        destination.close()


@functools.cache
def command_named(name: str) -> click.Command | None:
    """The command of the spec registered as ``name`` (None if there is none)."""
    spec = find(name)
    return build_command(spec) if spec is not None else None


def envvar_prefix(name: str) -> str:
    """``ZIBRATO_<COMMAND>``, as click derives it under the umbrella (dashes become underscores)."""
    return f"ZIBRATO_{name.upper().replace('-', '_')}"


def entry_point(spec: str | DestinationSpec | DaemonSpec) -> Callable[[], None]:
    """The ``main`` of a ``zibrato-<name>`` console script: the command, every flag settable from the environment.

    ``spec`` is a registered name or a "module:SPEC" reference (both looked up
    when the script runs: importing the script's module stays cheap), or the spec itself.
    """

    def main() -> None:
        command = command_named(spec) if isinstance(spec, str) else build_command(spec)
        if command is None:
            raise SystemExit(f"zibrato: no component {spec!r} is registered (is its package installed?)")
        name = command.name or ""
        command.main(prog_name=f"zibrato-{name}", auto_envvar_prefix=envvar_prefix(name))

    main.__doc__ = "A zibrato-<name> console script (see its --help)."
    return main


def replace_shared(shared: Any, **changes: Any) -> Any:
    """A copy of the shared WorkerConfig with ``changes`` (for a spec's ``tune`` hook)."""
    return dataclasses.replace(shared, **changes)
