"""zibrato-broker: the command its spec declares (`zibrato.broker_spec`)."""

from __future__ import annotations

from ..components.builder import command_named, entry_point

command = command_named("zibrato.broker_spec:SPEC")
main = entry_point("zibrato.broker_spec:SPEC")
