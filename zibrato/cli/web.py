"""zibrato-web: the command its spec declares (`zibrato.backends.web_spec`)."""

from __future__ import annotations

from ..components.builder import command_named, entry_point

command = command_named("zibrato.backends.web_spec:SPEC")
main = entry_point("zibrato.backends.web_spec:SPEC")
