"""zibrato-statsd: the command its spec declares (`zibrato.backends.statsd_spec`)."""

from __future__ import annotations

from ..components.builder import command_named, entry_point

command = command_named("zibrato.backends.statsd_spec:SPEC")
main = entry_point("zibrato.backends.statsd_spec:SPEC")
