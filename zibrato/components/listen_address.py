"""The ``--listen HOST:PORT`` of every daemon that serves HTTP, and ``--allow-host`` beside it."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from .addresses import check_listen_port
from .fields import Parsed, option


def listen_address(parse: Callable[[str], tuple[str, int]] | str, default: str, help: str) -> Any:
    """A --listen field: ``parse`` ("module:function" for a lazy import) after the shared port check."""

    def checked(text: str) -> tuple[str, int]:
        check_listen_port(text, "--listen")
        host, port = Parsed(parse).parse(text)
        return str(host), int(port)

    return option(None, help, type=Parsed(checked), metavar="HOST:PORT", cli_default=default)


def allow_host() -> Any:
    """--allow-host NAME (repeatable): a Host name answered besides loopback names (DNS rebinding guard)."""
    return option(
        (),
        "A Host name to answer besides loopback names when listening on loopback (repeat for more): "
        "other names get 403, so a web page cannot read this server through DNS rebinding.",
        flag="--allow-host",
        multiple=True,
        metavar="NAME",
        show_default=False,
    )
