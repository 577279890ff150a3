"""zibrato-web: a worker that serves a live page of its series instead of sending them anywhere.

Delivery is keeping: :meth:`WebBackend.post` hands each interval to a
:class:`~zibrato.web.view.History` of the last ``history`` intervals, which
never fails; the HTTP server (:mod:`zibrato.web.server`) reads it. Everything
the page shows is computed by the pure functions of :mod:`zibrato.web.view`,
so moving to the destination interface (``post(interval)``) changes only
:meth:`post`.
"""
from __future__ import annotations

import threading
from typing import Sequence

from ..web.server import WebServer, is_loopback
from ..web.view import CHART_PERCENTILES, History
from ..worker import DEFAULT_PERCENTILES, Backend

DEFAULT_LISTEN = ("127.0.0.1", 8080)
DEFAULT_HISTORY = 60


class WebBackend(Backend):
    """Aggregate like every worker; keep the last ``history`` intervals for the page."""

    name = "web"

    def __init__(self, *args, listen: tuple[str, int] = DEFAULT_LISTEN,
                 history: int = DEFAULT_HISTORY,
                 percentiles: Sequence[float] = DEFAULT_PERCENTILES, **kwargs) -> None:
        # The charts draw p50, p90 and p99 whatever --percentiles says.
        wanted = tuple(sorted(set(map(float, percentiles)) | set(CHART_PERCENTILES)))
        super().__init__(*args, percentiles=wanted, **kwargs)
        self.aggregator.include_interval = True
        self.listen = listen
        self.history = History(history)
        self.server: WebServer | None = None

    def run(self, stop: threading.Event) -> int:
        """Listen first (a port in use is exit status 1 at once), then run the worker."""
        host, port = self.listen
        try:
            self.server = WebServer(host, port, self.history)
        except OSError as error:
            self.log.error("cannot listen on %s:%d: %s", host, port, error.strerror or error)
            return 1
        if not is_loopback(host):
            self.log.warning("listening on %s, not loopback: anyone who can reach this address "
                             "sees every series name, tag and value (there is no authentication)",
                             host)
        self.server.start()
        self.log.info("web view at %s", self.server.url)
        try:
            return super().run(stop)
        finally:
            self.server.stop()

    def post(self, time: float, summaries: list[dict]) -> None:
        interval = summaries[0].get("interval", self.flush_interval) if summaries else self.flush_interval
        self.history.add(time, interval, summaries)

    def figures(self) -> dict:
        f = super().figures()
        f.update(history=self.history.size, intervals_held=self.history.summary()["intervals"])
        if self.server is not None:
            f.update(self.server.figures())
        return f
