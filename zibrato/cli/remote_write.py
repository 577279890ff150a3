"""zibrato-remote-write: the command its spec declares (`zibrato.backends.remote_write_spec`)."""

from __future__ import annotations

from ..components.builder import command_named, entry_point

command = command_named("zibrato.backends.remote_write_spec:SPEC")
main = entry_point("zibrato.backends.remote_write_spec:SPEC")
