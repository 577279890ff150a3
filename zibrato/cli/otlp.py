"""zibrato-otlp: built from its spec (see `zibrato.components.spec`)."""

from __future__ import annotations

from ..components.builder import command_named, entry_point

command = command_named("otlp")
main = entry_point("otlp")
