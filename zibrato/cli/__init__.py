"""The `zibrato` umbrella command; each `zibrato-<name>` script is one of its subcommands.

Daemons and destinations come from the component registry
(:mod:`zibrato.components.spec`: the ``zibrato.destinations`` entry points),
the tools from :data:`TOOLS`; each is imported only when used, so --help stays fast.
"""

from __future__ import annotations

import importlib

import click

from .. import __version__
from .common import CONTEXT_SETTINGS

# tool subcommand -> module in this package (daemons and destinations are specs)
TOOLS = {"demo": "demo", "status": "status", "keys": "keys"}


def _names() -> list[str]:
    from ..components.spec import DAEMONS, destination_references

    return [*DAEMONS, *destination_references(), *TOOLS]


class _LazyGroup(click.Group):
    def list_commands(self, ctx: click.Context) -> list[str]:
        return _names()

    def get_command(self, ctx: click.Context, name: str) -> click.Command | None:
        if name in TOOLS:
            return importlib.import_module(f"{__name__}.{TOOLS[name]}").command
        from ..components.builder import command_named

        return command_named(name)


@click.group(cls=_LazyGroup, context_settings=CONTEXT_SETTINGS)
@click.version_option(__version__, prog_name="zibrato")  # the source's version, not stale metadata
def group() -> None:
    """Zibrato: exact application metrics from many processes, aggregated and delivered.

    Applications send to `zibrato broker`; workers aggregate each flush and
    deliver it to OTLP, Prometheus, Graphite, InfluxDB, statsd, the terminal
    and more (one command per destination, listed below); `zibrato listen`
    takes statsd and l2met lines in. docs/CLI.md has every command's flags.

    Start with `zibrato demo`: a broker, a console worker and a small
    workload, all in this terminal.
    """


def main() -> None:
    group.main(prog_name="zibrato", auto_envvar_prefix="ZIBRATO")
