"""zibrato-listen: the command its spec declares (`zibrato.listen.spec`)."""

from __future__ import annotations

from ..components.builder import command_named, entry_point

command = command_named("zibrato.listen.spec:SPEC")
main = entry_point("zibrato.listen.spec:SPEC")
