"""zibrato-prometheus: the command its spec declares (`zibrato.backends.prometheus_spec`)."""

from __future__ import annotations

from ..components.builder import command_named, entry_point

command = command_named("zibrato.backends.prometheus_spec:SPEC")
main = entry_point("zibrato.backends.prometheus_spec:SPEC")
