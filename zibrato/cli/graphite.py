"""zibrato-graphite: built from its spec (see `zibrato.components.spec`)."""

from __future__ import annotations

from ..components.builder import command_named, entry_point

command = command_named("graphite")
main = entry_point("graphite")
