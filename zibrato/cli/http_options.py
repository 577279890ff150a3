"""The flags of every daemon that serves HTTP (zibrato-listen's drain, zibrato-web, zibrato-prometheus).

One set of names and defaults (:mod:`zibrato.http_server`), so "a connection
cap" and "a header timeout" mean the same in each; read them back with
:func:`http_limits`.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import click

from ..http_server import DEFAULT_HEADER_TIMEOUT, DEFAULT_IDLE_TIMEOUT, DEFAULT_MAX_CONNECTIONS, HttpLimits
from .common import Seconds

_TIMEOUT = Seconds(0, 3600, low_open=True)


def http_limit_options(what: str) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """--http-max-connections, --http-header-timeout, --http-idle-timeout for the server ``what`` names."""

    def decorate(func: Callable[..., Any]) -> Callable[..., Any]:
        func = click.option(
            "--http-idle-timeout",
            default=DEFAULT_IDLE_TIMEOUT,
            show_default=True,
            type=_TIMEOUT,
            help=f"{what}: close a kept-alive connection whose next request has not arrived within this many seconds.",
        )(func)
        func = click.option(
            "--http-header-timeout",
            default=DEFAULT_HEADER_TIMEOUT,
            show_default=True,
            type=_TIMEOUT,
            help=f"{what}: close a connection whose request line and headers are not complete within this "
            "many seconds (in all, however slowly they drip).",
        )(func)
        return click.option(
            "--http-max-connections",
            default=DEFAULT_MAX_CONNECTIONS,
            show_default=True,
            type=click.IntRange(1, 100_000),
            help=f"{what}: most open connections; past it the one waiting longest for its headers is closed "
            "(or, all being busy, the new one gets 503). Keep it below the descriptor limit (ulimit -n).",
        )(func)

    return decorate


def http_limits(options: dict[str, Any]) -> HttpLimits:
    """The :class:`HttpLimits` of the flags above, taken out of ``options``."""
    return HttpLimits(
        max_connections=options.pop("http_max_connections"),
        header_timeout=options.pop("http_header_timeout"),
        idle_timeout=options.pop("http_idle_timeout"),
    )


def allow_host_option(func: Callable[..., Any]) -> Callable[..., Any]:
    """--allow-host NAME (repeatable): a Host name answered besides loopback names (DNS rebinding guard)."""
    return click.option(
        "--allow-host",
        "allowed_hosts",
        multiple=True,
        metavar="NAME",
        help="A Host name to answer besides loopback names when listening on loopback (repeat for more): "
        "other names get 403, so a web page cannot read this server through DNS rebinding.",
    )(func)
