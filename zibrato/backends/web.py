"""zibrato-web: a destination that serves a live page of its series instead of sending them anywhere.

Delivery is keeping: :meth:`WebView.post` hands each interval to a
:class:`~zibrato.web.view.History` of the last ``history`` intervals, which
never fails; the HTTP server (:mod:`zibrato.web.server`) reads it. Everything
the page shows is computed by the pure functions of :mod:`zibrato.web.view`.

Constructing a WebView opens nothing. :meth:`WebView.bind` takes the port
(the CLI calls it before the worker starts, so that a port in use is exit
status 1 at once); :meth:`connect` binds if that was not done and serves.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence

from ..destination import Destination, Interval
from ..http_server import HttpLimits
from ..web.server import DEFAULT_MAX_EVENT_STREAMS, WebServer, is_loopback
from ..web.view import CHART_PERCENTILES, History

DEFAULT_LISTEN = ("127.0.0.1", 8080)
DEFAULT_HISTORY = 60

log = logging.getLogger("zibrato.web")


class WebView(Destination):
    """Keep the last ``history`` intervals for the page; serve it on ``listen``."""

    name = "web"

    def __init__(
        self,
        listen: tuple[str, int] = DEFAULT_LISTEN,
        history: int = DEFAULT_HISTORY,
        *,
        limits: HttpLimits | None = None,
        allowed_hosts: tuple[str, ...] = (),
        max_event_streams: int = DEFAULT_MAX_EVENT_STREAMS,
    ) -> None:
        self.listen = listen
        self.limits, self.allowed_hosts, self.max_event_streams = limits, allowed_hosts, max_event_streams
        self.history = History(history)
        self.server: WebServer | None = None
        self._serving = False

    def bind(self) -> WebServer:
        """Take the port (OSError if it cannot); warn when it is not loopback."""
        if self.server is None:
            host, port = self.listen
            self.server = WebServer(
                host,
                port,
                self.history,
                limits=self.limits,
                allowed_hosts=self.allowed_hosts,
                max_event_streams=self.max_event_streams,
            )
            if not is_loopback(host):
                log.warning(
                    "listening on %s, not loopback: anyone who can reach this address "
                    "sees every series name, tag and value (there is no authentication)",
                    host,
                )
            log.info("web view at %s", self.server.url)
        return self.server

    def connect(self) -> None:
        if not self._serving:
            self.bind().start()
            self._serving = True

    def post(self, interval: Interval) -> None:
        self.history.add(interval.end, interval.seconds, interval.summaries)

    def close(self) -> None:
        if self.server is not None:
            self.server.stop()

    def figures(self) -> dict:
        f = {"history": self.history.size, "intervals_held": self.history.summary()["intervals"]}
        if self.server is not None:
            f.update(self.server.figures())
        return f


def chart_percentiles(percentiles: Sequence[float]) -> tuple[float, ...]:
    """The worker's percentiles plus 50, 90 and 99, which the charts draw whatever --percentiles says."""
    return tuple(sorted(set(map(float, percentiles)) | set(CHART_PERCENTILES)))
