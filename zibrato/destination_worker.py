"""STOPGAP: run a Destination under today's Backend runtime, until the worker runs destinations itself.

The daemon branch (issue 12) brings :mod:`zibrato.delivery` (merged here) and
will make :mod:`zibrato.worker` drive a :class:`~zibrato.destination.Destination`
through its :class:`~zibrato.delivery.DeliveryQueue`. Until that lands,
``zibrato-graphite`` and ``zibrato-influxdb`` run their destination with
:class:`DestinationBackend`: today's :class:`~zibrato.worker.Backend` keeps
the schedule and the bounded backlog, and its ``post`` applies the delivery
contract: :class:`~zibrato.delivery.Retryable` (and ``OSError``) retried with
:class:`~zibrato.delivery.Backoff` (honouring ``retry_after``) until
delivered or out of time at stop; :class:`~zibrato.delivery.Rejected`
logged, counted and dropped. Delete this module once the worker does it.
"""
from __future__ import annotations

import time as _time

from .delivery import Backoff, Rejected, Retryable, describe, iso
from .destination import Destination, Interval
from .worker import Backend


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
        self.backoff = Backoff(backoff_base, backoff_cap)
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
        seconds = summaries[0].get("interval", self.flush_interval) if summaries else self.flush_interval
        interval = Interval(start=time - seconds, end=time, summaries=summaries)
        failures = 0
        while True:
            try:
                self.destination.post(interval)
                return
            except Rejected as error:
                self.figures_["rejected_intervals"] += 1
                self.figures_["last_error"] = error.reason
                self.log.error("dropped the interval at %s (%d series): %s", iso(time),
                               len(summaries), error.reason)
                return
            except (Retryable, OSError) as error:
                failures += 1
                reason = error.reason if isinstance(error, Retryable) else describe(error)
                self.figures_["last_error"] = reason
                delay = self.backoff.delay(failures, getattr(error, "retry_after", None))
                if not self._wait_before_retry(delay):
                    raise
                self.figures_["retries"] += 1
                self.log.warning("%s delivery failed (%s); retry %d in %.2g s", self.name, reason,
                                 failures, delay)

    def _wait_before_retry(self, delay: float) -> bool:
        """Wait ``delay`` seconds; False when stopping leaves no time for another attempt."""
        if self.stopping.is_set():
            deadline = self.stop_deadline or _time.monotonic()
            if _time.monotonic() + delay >= deadline:
                return False
        self.stopping.wait(delay)
        return True


__all__ = ["DestinationBackend"]
