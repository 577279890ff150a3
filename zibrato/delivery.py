"""STUB of the delivery module (issue 12), until the daemon branch is merged.

Only what the Graphite and InfluxDB destinations need: the two exceptions of
the Destination contract, and :class:`DestinationBackend`, which runs a
:class:`~zibrato.destination.Destination` under today's
:class:`~zibrato.worker.Backend` runtime: it retries :class:`Retryable`
failures with capped, jittered exponential backoff until delivered or the
stop deadline, and drops (counting and logging) what is :class:`Rejected`.
The daemon branch's ``zibrato.delivery`` replaces this file whole; the
``zibrato-graphite`` and ``zibrato-influxdb`` scripts then build their worker
the way that branch runs destinations.
"""
from __future__ import annotations

import random
import time as _time

from .destination import Destination, Interval
from .worker import Backend


class Retryable(Exception):
    """A transient failure: the interval is retried with backoff."""

    def __init__(self, reason: str, retry_after: float | None = None) -> None:
        super().__init__(reason)
        self.retry_after = retry_after


class Rejected(Exception):
    """A permanent failure: the interval is logged, counted and dropped."""


class DestinationBackend(Backend):
    """Today's worker runtime driving a Destination (see the module docstring)."""

    def __init__(self, destination: Destination, *args, backoff_base: float = 0.5,
                 backoff_cap: float = 30.0, **kwargs) -> None:
        self.name = destination.name
        super().__init__(*args, **kwargs)
        self.destination = destination
        self.aggregator.keep_values = destination.needs_values
        if hasattr(self.aggregator, "include_interval"):
            self.aggregator.include_interval = True
        self.backoff_base, self.backoff_cap = backoff_base, backoff_cap
        self._random = random.Random()
        self.figures_.update(retries=0, rejected_intervals=0, last_error=None)

    def connect(self) -> None:
        self.destination.connect()

    def close(self) -> None:
        self.destination.close()

    def figures(self) -> dict:
        f = super().figures()
        own = dict(self.destination.figures())
        problems = own.pop("problems", [])
        f.update(own)
        if problems:
            f["problems"].extend(problems)
            f["healthy"] = False
        return f

    def post(self, time: float, summaries: list[dict]) -> None:
        """Deliver one interval, retrying until delivered, rejected, or out of time at stop."""
        start = time - self.flush_interval
        if summaries and "interval" in summaries[0]:
            start = time - summaries[0]["interval"]
        interval = Interval(start=start, end=time, summaries=summaries)
        attempt = 0
        while True:
            try:
                self.destination.post(interval)
                return
            except Rejected as error:
                self.figures_["rejected_intervals"] += 1
                self.figures_["last_error"] = str(error)
                self.log.error("%s rejected the interval at %s (%d series), dropped: %s",
                               self.name, _time.strftime("%Y-%m-%dT%H:%M:%SZ", _time.gmtime(time)),
                               len(summaries), error)
                return
            except Exception as error:  # Retryable, or a failure nobody classified
                attempt += 1
                self.figures_["retries"] += 1
                self.figures_["last_error"] = str(error)
                delay = self._delay(attempt, getattr(error, "retry_after", None))
                if not self._wait_before_retry(delay):
                    raise
                self.log.warning("%s delivery failed (%s); retry %d in %.1f s", self.name, error,
                                 attempt, delay)

    def _delay(self, attempt: int, retry_after: float | None) -> float:
        delay = min(self.backoff_cap, self.backoff_base * 2 ** (attempt - 1))
        delay = self._random.uniform(delay / 2, delay)
        return max(delay, retry_after or 0.0)

    def _wait_before_retry(self, delay: float) -> bool:
        """Wait ``delay`` seconds; False when stopping leaves no time for another attempt."""
        if self.stopping.is_set():
            deadline = self.stop_deadline or _time.monotonic()
            if _time.monotonic() + delay >= deadline:
                return False
        self.stopping.wait(delay)
        return True


__all__ = ["DestinationBackend", "Rejected", "Retryable"]
