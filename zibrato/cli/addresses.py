"""Former home of the address checks: see :mod:`zibrato.components.addresses`."""

from __future__ import annotations

from ..components.addresses import (
    check_host,
    check_listen_port,
    check_port,
    check_url,
    host_callback,
    port_callback,
    split_host_port,
    url_callback,
)

__all__ = [
    "check_host",
    "check_listen_port",
    "check_port",
    "check_url",
    "host_callback",
    "port_callback",
    "split_host_port",
    "url_callback",
]
