"""The `zibrato` umbrella command; each `zibrato-<name>` script is one of its subcommands."""

from __future__ import annotations

import importlib
import importlib.util

import click

from .. import __version__
from .common import CONTEXT_SETTINGS

# subcommand -> module in this package; imported only when used, so --help stays fast
SUBCOMMANDS = {
    "broker": "broker",
    "console": "console",
    "statsd": "statsd",
    "librato": "librato",
    "listen": "listen",
    "graphite": "graphite",
    "influxdb": "influxdb",
    "web": "web",
    "otlp": "otlp",
    "prometheus": "prometheus",
    "remote-write": "remote_write",
    "demo": "demo",
    "status": "status",
    "forward": "forward",
    "keys": "keys",
}


class _LazyGroup(click.Group):
    def list_commands(self, ctx: click.Context) -> list[str]:
        return [name for name in SUBCOMMANDS if _available(name)]

    def get_command(self, ctx: click.Context, name: str) -> click.Command | None:
        if name not in SUBCOMMANDS or not _available(name):
            return None
        return importlib.import_module(f"{__name__}.{SUBCOMMANDS[name]}").command


def _available(name: str) -> bool:
    return importlib.util.find_spec(f"{__name__}.{SUBCOMMANDS[name]}") is not None


@click.group(cls=_LazyGroup, context_settings=CONTEXT_SETTINGS)
@click.version_option(__version__, prog_name="zibrato")  # the source's version, not stale metadata
def group() -> None:
    """Zibrato: exact application metrics from many processes, aggregated and delivered.

    Applications send to `zibrato broker`; workers aggregate each flush and
    deliver it to OTLP, Prometheus, Graphite, InfluxDB, statsd or the terminal
    (`zibrato console`); `zibrato listen` takes statsd and l2met lines in.

    Start with `zibrato demo`: a broker, a console worker and a small
    workload, all in this terminal.
    """


def main() -> None:
    group.main(prog_name="zibrato", auto_envvar_prefix="ZIBRATO")
