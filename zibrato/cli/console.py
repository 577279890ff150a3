"""zibrato-console: built from its spec (zibrato/backends/console_spec.py)."""

from __future__ import annotations

from ..components.builder import command_named, entry_point

command = command_named("console")
main = entry_point("console")
