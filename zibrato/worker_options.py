"""The other forms of the worker's settings: the text of ``--levels``, ``--percentiles``
and ``--host``, and the keywords of the former ``Worker(...)`` constructor.

Parsed here, once, for the command line, the embedded runtime and
:class:`~zibrato.worker.Worker` alike (which re-exports these names).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable
from typing import Any

from . import protocol
from .worker_config import ALL_LEVELS, WorkerConfig


def parse_levels(text: str) -> tuple[str, ...]:
    """'info,warn' -> ('info', 'warn'); 'all' alone means every level. Case-insensitive: 'INFO' is info."""
    levels = tuple(dict.fromkeys(part.strip().lower() for part in text.split(",") if part.strip()))
    if not levels:
        raise ValueError("no level given (use 'all' for every level)")
    for level in levels:
        if level != ALL_LEVELS and not protocol.is_valid_level(level):
            raise ValueError(f"invalid level {level!r}: 1-64 characters of A-Z a-z 0-9 _ . -")
    return levels


def parse_percentiles(text: str | Iterable[float]) -> tuple[float, ...]:
    parts = text.split(",") if isinstance(text, str) else list(text)
    try:
        values = tuple(float(p) for p in parts if str(p).strip())
    except ValueError:
        raise ValueError(f"percentiles must be numbers, e.g. 50,90,99.9; got {text!r}") from None
    for p in values:
        if not 0 < p <= 100:  # also NaN
            raise ValueError(f"percentile {p:g} is outside (0, 100]")
    return values


def parse_hosts(hosts: Iterable[str], port: int) -> list[str]:
    """Broker endpoints from ``--host`` values: each a comma list of HOST or HOST:PORT.

    '10.0.0.1,10.0.0.2:6551' with port 5551 -> ['tcp://10.0.0.1:5551', 'tcp://10.0.0.2:6551'];
    an IPv6 address takes brackets: '[::1]:5551'. Duplicates are removed.
    """
    endpoints: list[str] = []
    for value in hosts:
        for part in str(value).split(","):
            part = part.strip()
            if not part:
                continue
            host, own_port = part, port
            if part.startswith("["):
                host, _, rest = part[1:].partition("]")
                if rest.startswith(":"):
                    own_port = _port_of(rest[1:], part)
                elif rest:
                    raise ValueError(f"bad host {part!r}: expected [IPv6] or [IPv6]:PORT")
                host = f"[{host}]"
            elif part.count(":") == 1:
                host, text = part.split(":")
                own_port = _port_of(text, part)
            elif ":" in part:
                host = f"[{part}]"
            if not host or host == "[]":
                raise ValueError(f"bad host {part!r}")
            endpoint = f"tcp://{host}:{own_port}"
            if endpoint not in endpoints:
                endpoints.append(endpoint)
    if not endpoints:
        raise ValueError("no broker host given")
    return endpoints


def _port_of(text: str, part: str) -> int:
    if not text.isdigit() or not 1 <= int(text) <= 65535:
        raise ValueError(f"bad port in {part!r}: 1 to 65535")
    return int(text)


def split_endpoint(endpoint: str) -> tuple[str, int]:
    """'tcp://[::1]:5551' -> ('::1', 5551)."""
    host, _, port = endpoint[len("tcp://") :].rpartition(":")
    return host.strip("[]"), int(port)


#: the former constructor's keywords whose WorkerConfig field has another name
_RENAMED = {"host": "brokers", "max_samples": "max_exact"}
_FIELDS = {field.name for field in dataclasses.fields(WorkerConfig)}


def config_from_keywords(config: WorkerConfig, keywords: dict[str, Any]) -> WorkerConfig:
    """``config`` with the former ``Worker(...)`` keywords applied (a TypeError names an unknown one).

    ``host`` is a HOST[:PORT] string or a list of them; ``aggregation`` holds
    the aggregator's options, ``relative_error`` and ``expire`` included.
    """
    changes: dict[str, Any] = {}
    for key, value in keywords.items():
        name = _RENAMED.get(key, key)
        if key == "host":
            value = (value,) if isinstance(value, str) else tuple(value)
        elif key == "aggregation":
            options = dict(value or {})
            for option in ("relative_error", "expire"):
                if option in options:
                    changes[option] = options.pop(option)
            value = options
        elif name not in _FIELDS:
            raise TypeError(f"Worker() got an unexpected keyword argument {key!r}")
        changes[name] = value
    return dataclasses.replace(config, **changes) if changes else config


__all__ = ["config_from_keywords", "parse_hosts", "parse_levels", "parse_percentiles", "split_endpoint"]
