"""What a component declares, once: :class:`DestinationSpec` and :class:`DaemonSpec`, and where they are found.

A destination is registered in the ``zibrato.destinations`` entry-point
group (``name = "package.module:SPEC"``); every built-in one is, in
setup.py, and a third-party package adds its own the same way. The builder
(:mod:`zibrato.components.builder`) turns a spec into the ``zibrato-<name>``
command, the ``zibrato <name>`` subcommand, the ``--config`` keys and a
section of docs/CLI.md.
"""

from __future__ import annotations

import importlib
import inspect
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # annotations only: importing a spec never imports the worker
    from ..delivery import Backoff
    from ..destination import Destination

#: the shared worker settings (:class:`zibrato.worker_config.WorkerConfig`, which imports
#: :mod:`zibrato.components.fields`: named here as Any so that no import circle forms)
WorkerConfig = Any

GROUP = "zibrato.destinations"


@dataclass(frozen=True)
class DestinationSpec:
    """One destination: its command name, settings, default flush and how to build it.

    ``config`` is a frozen dataclass whose fields carry their flags
    (:func:`zibrato.components.fields.option`); ``factory(config)`` builds the
    destination (opening nothing: the worker connects it), a ValueError
    being a usage error. The command's help is ``summary``, or else the
    config class's docstring (a ``\\f`` line ends what --help shows). The optional hooks: ``backoff(config)`` (default:
    the embedded ``retry`` settings, if any), ``resolve(config, worker, given)
    -> (config, worker)`` for settings that depend on each other or on whether
    a flag was set (``given(name)``; a usage error raised there stops the
    start), and ``worker_class`` ("module:Class") for a worker that is not the
    plain :class:`~zibrato.worker.Worker`.
    """

    name: str
    config: type
    factory: Callable[[Any], Destination]
    default_flush: float
    summary: str = ""
    backoff: Callable[[Any], Backoff | None] | None = None
    resolve: Callable[[Any, WorkerConfig, Callable[[str], bool]], tuple[Any, WorkerConfig]] | None = None
    worker_class: str | None = None

    script = property(lambda self: f"zibrato-{self.name}", doc="The console script's name.")
    help = property(lambda self: help_of(self), doc="The command's help.")

    def delivery_backoff(self, config: Any) -> Backoff | None:
        if self.backoff is not None:
            return self.backoff(config)
        retry = getattr(config, "retry", None)
        return retry.backoff() if retry is not None else None


@dataclass(frozen=True)
class DaemonSpec:
    """A daemon that is not a worker (the broker, the listener): settings and ``run(config) -> exit code``.

    Built by the same builder, so its flags, ``--config`` file, environment
    variables and docs/CLI.md section follow the same rules as a destination's.
    """

    name: str
    config: type
    run: Callable[[Any], int]
    summary: str = ""

    script = DestinationSpec.script
    help = DestinationSpec.help


def help_of(spec: DestinationSpec | DaemonSpec) -> str:
    """The command's help: the spec's summary, else its config class's docstring."""
    return spec.summary or inspect.getdoc(spec.config) or ""


#: the daemons that are not destinations: name -> "module:SPEC"
DAEMONS = {
    "broker": "zibrato.broker_spec:SPEC",
    "listen": "zibrato.listen.spec:SPEC",
}


def load(reference: str) -> Any:
    """The object a "module:attribute" reference names."""
    module, _, attribute = reference.partition(":")
    return getattr(importlib.import_module(module), attribute)


def destination_references() -> dict[str, str]:
    """Every registered destination: name -> "module:SPEC", read from the installed packages' metadata."""
    from importlib.metadata import entry_points

    return {entry.name: entry.value for entry in entry_points(group=GROUP)}


def _built_in(name: str) -> str | None:
    """Zibrato's own registration of ``name``: its metadata alone is read, not every package's (fast)."""
    from importlib.metadata import PackageNotFoundError, distribution

    try:
        entries = distribution("zibrato").entry_points
    except PackageNotFoundError:  # pragma: no cover - a source tree that is not installed
        return None
    return next((entry.value for entry in entries if entry.group == GROUP and entry.name == name), None)


def find(name: str) -> DestinationSpec | DaemonSpec | None:
    """The spec registered under ``name`` (a daemon or a destination), or None.

    ``name`` may also be a "module:SPEC" reference (a console script that knows its spec).
    """
    reference = name if ":" in name else DAEMONS.get(name) or _built_in(name) or destination_references().get(name)
    if reference is None:
        return None
    spec = load(reference)
    if not isinstance(spec, (DestinationSpec, DaemonSpec)) or (":" not in name and spec.name != name):
        raise TypeError(f"{reference} is not the spec of {name!r}")
    return spec
