"""One check for every destination's URL, host and port, run at start.

A worker that starts with an address that can never work (``ftp://x``, a URL
without a scheme, port 99999) would retry it forever and look healthy; these
checks turn that into a usage error (exit 2) before anything starts, with one
wording for every command.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any
from urllib.parse import urlsplit

import click

HTTP_SCHEMES = ("http", "https")


def check_port(port: str | int, what: str, allow_zero: bool = False) -> int:
    """The port as a number, or ValueError saying "port out of range" / "not a number"."""
    try:
        number = int(str(port).strip())
    except ValueError:
        raise ValueError(f"{what}: port {str(port)!r} is not a number") from None
    low = 0 if allow_zero else 1
    if not low <= number <= 65535:
        raise ValueError(f"{what}: port {number} out of range ({low}-65535)")
    return number


def check_host(host: str, what: str) -> str:
    """A host name or address without spaces, slashes or a scheme (ValueError otherwise)."""
    if not host or any(c.isspace() for c in host) or "/" in host or "@" in host:
        raise ValueError(f"{what}: {host!r} is not a host name or address")
    return host


def split_host_port(
    value: str, what: str, default_port: int | None = None, allow_zero: bool = False
) -> tuple[str, int]:
    """'HOST:PORT', '[v6]:PORT' (or 'HOST' when there is a default port) -> (host, port), or ValueError."""
    text = value.strip()
    if "://" in text:
        raise ValueError(f"{what}: expected HOST:PORT without a scheme, got {value!r}")
    if text.startswith("["):
        host, _, rest = text[1:].partition("]")
        port = rest[1:] if rest.startswith(":") else ""
        if rest and not rest.startswith(":"):
            raise ValueError(f"{what}: expected HOST:PORT, got {value!r}")
    elif text.count(":") == 1:
        host, port = text.split(":")
    elif ":" not in text:
        host, port = text, ""
    else:
        raise ValueError(f"{what}: expected HOST:PORT ('[v6]:PORT' for IPv6), got {value!r}")
    if not port:
        if default_port is None:
            raise ValueError(f"{what}: expected HOST:PORT, got {value!r} (no port)")
        port = str(default_port)
    if not port.strip().isdigit():
        raise ValueError(f"{what}: expected HOST:PORT, and {port!r} is not a port number")
    return check_host(host, what), check_port(port, what, allow_zero)


def check_url(url: str, what: str, schemes: Iterable[str] = HTTP_SCHEMES) -> str:
    """The URL when its scheme is one of ``schemes`` and it has a host and a valid port, else ValueError."""
    allowed = tuple(schemes)
    parts = urlsplit(url.strip())
    if parts.scheme.lower() not in allowed:
        shown = f"{parts.scheme}://" if parts.scheme else "no scheme"
        wanted = " or ".join(f"{s}://" for s in allowed)
        raise ValueError(f"{what}: {shown} in {_redacted(url)!r}; expected a {wanted} URL")
    if not parts.hostname:
        raise ValueError(f"{what}: no host in {_redacted(url)!r}")
    try:
        port = parts.port
    except ValueError:
        raise ValueError(f"{what}: port out of range (1-65535) in {_redacted(url)!r}") from None
    if port == 0:
        raise ValueError(f"{what}: port 0 out of range (1-65535) in {_redacted(url)!r}")
    return url.strip()


def _redacted(url: str) -> str:
    parts = urlsplit(url.strip())
    if parts.password:
        return parts._replace(netloc=f"{parts.username}:***@{parts.hostname}").geturl()
    return url


def _callback(check: Callable[[Any, str], Any]) -> Callable[[click.Context, click.Parameter, Any], Any]:
    """A click callback running ``check(value, flag)``; its ValueError is the usage error (None passes)."""

    def callback(ctx: click.Context, param: click.Parameter, value: Any) -> Any:
        if value is None:
            return None
        try:
            return check(value, _flag(param))
        except ValueError as error:
            raise click.BadParameter(_without_prefix(str(error), param)) from None

    return callback


def url_callback(schemes: Iterable[str] = HTTP_SCHEMES) -> Callable[[click.Context, click.Parameter, Any], Any]:
    """A click callback: the URL option checked by :func:`check_url` (None passes)."""
    allowed = tuple(schemes)
    return _callback(lambda value, flag: check_url(value, flag, allowed))


#: a click callback: a port number in 1-65535 ("out of range" otherwise)
port_callback = _callback(check_port)
#: a click callback: a host name or address (no scheme, no path)
host_callback = _callback(check_host)


def _flag(param: click.Parameter) -> str:
    return (param.opts[0] if getattr(param, "opts", None) else param.name) or "value"


def _without_prefix(message: str, param: click.Parameter) -> str:
    """click already names the option ("Invalid value for '--url': ..."): do not say it twice."""
    return message.removeprefix(f"{_flag(param)}: ")


def check_listen_port(value: str, what: str) -> None:
    """Before a command's own HOST:PORT parser: a numeric port beyond 65535 is "out of range", not "not HOST:PORT"."""
    _, sep, port = value.strip().rpartition(":")
    if sep and port.strip().isdigit():
        check_port(port, what, allow_zero=True)
