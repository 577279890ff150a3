"""The limits of every daemon that serves HTTP (the l2met drain, zibrato-web, zibrato-prometheus).

One set of names and defaults (:mod:`zibrato.http_server`), so "a connection
cap" and "a header timeout" mean the same in each. Apart from
:mod:`zibrato.components.settings` so that a command without a server does
not import one.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import click

from ..http_server import DEFAULT_HEADER_TIMEOUT, DEFAULT_IDLE_TIMEOUT, DEFAULT_MAX_CONNECTIONS, HttpLimits
from .fields import Seconds, embed, option

_HTTP_TIMEOUT = Seconds(0, 3600, low_open=True)
_LIMITS = "HTTP server limits (docs/OPERATIONS.md)"


@dataclass(frozen=True)
class HttpLimitSettings:
    """The limits of every daemon that serves HTTP (the drain, zibrato-web, zibrato-prometheus)."""

    http_max_connections: int = option(
        DEFAULT_MAX_CONNECTIONS,
        "{scope}: most open connections; past it the one waiting longest for its headers is closed "
        "(or, all being busy, the new one gets 503). Keep it below the descriptor limit (ulimit -n).",
        type=click.IntRange(1, 100_000),
        section=_LIMITS,
    )
    http_header_timeout: float = option(
        DEFAULT_HEADER_TIMEOUT,
        "{scope}: close a connection whose request line and headers are not complete within this "
        "many seconds (in all, however slowly they drip).",
        type=_HTTP_TIMEOUT,
        section=_LIMITS,
    )
    http_idle_timeout: float = option(
        DEFAULT_IDLE_TIMEOUT,
        "{scope}: close a kept-alive connection whose next request has not arrived within this many seconds.",
        type=_HTTP_TIMEOUT,
        section=_LIMITS,
    )

    def limits(self) -> HttpLimits:
        return HttpLimits(
            max_connections=self.http_max_connections,
            header_timeout=self.http_header_timeout,
            idle_timeout=self.http_idle_timeout,
        )


def http_limits(scope: str) -> Any:
    """An embedded :class:`HttpLimitSettings` whose help names the server (``scope``)."""
    return embed(HttpLimitSettings(), scope=scope)
