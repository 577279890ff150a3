"""zibrato-web's settings and spec: the worker that serves a live web page of the series (docs/WEB.md)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import click

from ..components.fields import option, values
from ..components.http_settings import HttpLimitSettings, http_limits
from ..components.listen_address import allow_host, listen_address
from ..components.spec import DestinationSpec
from ..web.server import DEFAULT_MAX_EVENT_STREAMS
from .web import DEFAULT_HISTORY


@dataclass(frozen=True)
class WebConfig:
    """Serve a searchable table of the last interval's series and live charts of the last ones.

    Open the URL it logs ("web view at ..."); the page updates at each flush.
    """

    listen: tuple[str, int] = listen_address(
        "zibrato.web.server:parse_listen",
        "127.0.0.1:8080",
        "HOST:PORT to serve the page on ([::1]:8080 for IPv6; port 0: any free port). "
        "Anything but loopback logs a warning: the page has no authentication.",
    )
    history: int = option(
        DEFAULT_HISTORY, "Intervals the charts show (held in memory).", type=click.IntRange(1, 10_000)
    )
    max_event_streams: int = option(
        DEFAULT_MAX_EVENT_STREAMS,
        "Most live event streams (open pages) at once; more get 503 and are counted.",
        type=click.IntRange(1, 10_000),
    )
    allowed_hosts: tuple[str, ...] = allow_host()
    http: HttpLimitSettings = http_limits("The page's server")


def chart_percentiles(config: WebConfig, shared: Any, given: Callable[[str], bool]) -> tuple[Any, Any]:
    """The charts need their percentiles computed: add them to --percentiles."""
    from ..components.builder import replace_shared
    from .web import chart_percentiles as needed

    return config, replace_shared(shared, percentiles=needed(shared.percentiles))


def build(config: WebConfig) -> Any:
    """The view, its port already taken: a port in use is a clear error (exit 1) before the worker starts."""
    from .web import WebView

    view = WebView(
        limits=config.http.limits(), **values(config, "listen", "history", "allowed_hosts", "max_event_streams")
    )
    try:
        view.bind()
    except OSError as error:
        host, port = config.listen
        click.echo(f"zibrato-web: cannot listen on {host}:{port}: {error.strerror or error}", err=True)
        raise SystemExit(1) from None
    return view


SPEC = DestinationSpec("web", WebConfig, build, 2.0, resolve=chart_percentiles)
