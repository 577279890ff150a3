"""Run a :class:`~zibrato.destination.Destination` on today's worker runtime.

A bridge until the daemon engineer's runtime (issue 12: zibrato/delivery.py
driving destinations) is merged: it turns ``Backend.post(time, summaries)``
into ``Destination.post(Interval)`` and does what the contract asks of the
runtime: retry a :class:`~zibrato.delivery.Retryable` failure with
exponential backoff and jitter (honouring ``retry_after``) while later
intervals wait in the bounded backlog, and log, count and drop a
:class:`~zibrato.delivery.Rejected` one. When the real runtime lands, the
commands switch to it and this module goes.
"""
from __future__ import annotations

import random
import time as _time

from ..delivery import Rejected, Retryable
from ..destination import Destination, Interval
from ..worker import Backend

MAX_RETRY_AFTER = 300.0  # seconds of a server's Retry-After honoured


class DestinationBackend(Backend):
    """A worker delivering to one destination."""

    def __init__(self, destination: Destination, *args, backoff_base: float = 1.0,
                 backoff_cap: float = 60.0, **kwargs) -> None:
        self.name = destination.name
        super().__init__(*args, **kwargs)
        self.destination = destination
        self.aggregator.include_interval = True
        self.aggregator.keep_values = bool(destination.needs_values)
        self.backoff_base, self.backoff_cap = backoff_base, backoff_cap
        self._starts: dict[float, float] = {}
        self._random = random.Random()
        self.figures_.update(retries=0, intervals_rejected=0)

    def connect(self) -> None:
        self.destination.connect()

    def flush(self, time: float, interval: float) -> None:
        self._starts[time] = time - interval
        super().flush(time, interval)

    def post(self, time: float, summaries: list[dict]) -> None:
        start = self._starts.pop(time, time - (summaries[0].get("interval", 0) if summaries else 0))
        interval = Interval(start=start, end=time, summaries=summaries)
        attempt = 0
        while True:
            try:
                self.destination.post(interval)
                return
            except Rejected as rejection:
                self.figures_["intervals_rejected"] += 1
                self.log.error("%s rejected the interval at %s (%d series), dropped: %s",
                               self.destination.name, _iso(time), len(summaries), rejection)
                return
            except Retryable as failure:
                delay = self._delay(attempt, failure.retry_after)
                attempt += 1
                if self._out_of_time(delay):
                    self.log.error("stopping: the interval at %s (%d series) is not delivered: %s",
                                   _iso(time), len(summaries), failure)
                    return
                self.figures_["retries"] += 1
                self.log.warning("delivery to %s failed (%s); retrying in %.1f s",
                                 self.destination.name, failure, delay)
                self.stopping.wait(delay)

    def close(self) -> None:
        self.destination.close()

    def figures(self) -> dict:
        f = super().figures()
        f.update(self.destination.figures())
        return f

    def _delay(self, attempt: int, retry_after: float | None) -> float:
        if retry_after is not None:
            return min(max(retry_after, 0.0), max(self.backoff_cap, MAX_RETRY_AFTER))
        delay = min(self.backoff_cap, self.backoff_base * 2 ** min(attempt, 30))
        return self._random.uniform(delay / 2, delay)

    def _out_of_time(self, delay: float) -> bool:
        if not self.stopping.is_set():
            return False
        deadline = self.stop_deadline or 0.0
        return _time.monotonic() + delay > deadline


def _iso(timestamp: float) -> str:
    return _time.strftime("%Y-%m-%dT%H:%M:%SZ", _time.gmtime(timestamp))
