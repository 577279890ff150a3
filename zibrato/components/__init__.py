"""Component specs: each destination and daemon declared once, the rest built from that.

A destination is one module: a frozen config dataclass whose fields are
:func:`option` (or an embedded shared struct such as :class:`Retry`), a
:class:`~zibrato.destination.Destination`, and a :class:`DestinationSpec`
registered in the ``zibrato.destinations`` entry-point group. The builder
(:mod:`zibrato.components.builder`) makes its command, entry point,
``--config`` keys and docs/CLI.md section (:mod:`zibrato.components.docs`).
"""

from .fields import POSITIVE_SECONDS, Parsed, Seconds, embed, option
from .settings import Retry, read_secret, secret_file, timeout
from .spec import DaemonSpec, DestinationSpec

__all__ = [
    "POSITIVE_SECONDS",
    "DaemonSpec",
    "DestinationSpec",
    "Parsed",
    "Retry",
    "Seconds",
    "embed",
    "option",
    "read_secret",
    "secret_file",
    "timeout",
]
