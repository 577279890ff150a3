"""zibrato-forward: the command its spec declares (`zibrato.forward_spec`)."""

from __future__ import annotations

from ..components.builder import command_named, entry_point

command = command_named("zibrato.forward_spec:SPEC")
main = entry_point("zibrato.forward_spec:SPEC")
