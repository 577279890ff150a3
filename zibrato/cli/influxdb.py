"""zibrato-influxdb: the command its spec declares (`zibrato.backends.influxdb_spec`)."""

from __future__ import annotations

from ..components.builder import command_named, entry_point

command = command_named("zibrato.backends.influxdb_spec:SPEC")
main = entry_point("zibrato.backends.influxdb_spec:SPEC")
