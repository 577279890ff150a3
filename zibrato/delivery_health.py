"""What health and ``zibrato status`` read from a delivery queue, from any thread.

Why apart from :mod:`zibrato.delivery`: the queue's thread changes its state;
this side only reads it, and says in words why delivery is unhealthy
(stalled, failing, an interval lost lately) and in figures what it did.
:class:`zibrato.delivery.DeliveryQueue` is built on :class:`DeliveryHealth`:
the state it reads is the queue's, declared below for the type checker.
"""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Callable
from typing import Any

from .destination import Destination, Interval

__all__ = ["LOSS_MEMORY_SECONDS", "DeliveryHealth", "iso"]

LOSS_MEMORY_SECONDS = 900.0  # a lost interval keeps the worker unhealthy this long


def iso(timestamp: float) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(timestamp))


class DeliveryHealth:
    """The read side of a :class:`~zibrato.delivery.DeliveryQueue` (its base class)."""

    destination: Destination
    clock: Callable[[], float]
    counts: dict[str, int]
    max_backlog: int
    stalled_after: float | None
    failing_since: float | None
    last_error: str | None
    last_delivery: float | None
    _waiting: deque[Interval]
    _in_flight: Interval | None
    _in_flight_since: float | None
    _last_loss: tuple[float, str] | None

    @property
    def backlog(self) -> int:
        return len(self._waiting) + (self._in_flight is not None)

    @property
    def in_flight(self) -> Interval | None:
        return self._in_flight

    def failing_for(self) -> float | None:
        """Seconds since delivery started failing (None: it is not failing)."""
        since = self.failing_since
        return None if since is None else self.clock() - since

    def in_flight_for(self) -> float | None:
        """Seconds the interval in flight has been posted and retried (None: nothing in flight)."""
        since = self._in_flight_since
        return None if since is None or self._in_flight is None else self.clock() - since

    def problems(self) -> list[str]:
        """Why delivery is unhealthy: stalled or failing now, or an interval lost in the last 15 minutes.

        Stalled: one interval in flight longer than ``stalled_after`` (a post
        that never returns, or retries that never succeed): nothing is
        delivered while the queue is trying, and health must say so even
        when no attempt has failed yet.
        """
        problems = []
        busy = self.in_flight_for()
        if self.stalled_after is not None and busy is not None and busy > self.stalled_after:
            running = "" if self.failing_since is not None else ", its post still running"
            problems.append(
                f"{self.destination.name} delivery stalled: nothing delivered for {busy:.0f} s while trying "
                f"(the interval at {iso(self._in_flight.end) if self._in_flight else '?'}{running})"
            )
        failing = self.failing_for()
        if failing is not None:
            problems.append(f"{self.destination.name} delivery failing for {failing:.0f} s ({self.last_error})")
        lost = self.recent_losses()
        if lost:
            problems.append(lost)
        return problems

    def recent_losses(self) -> str | None:
        """The latest loss, if it happened within :data:`LOSS_MEMORY_SECONDS`."""
        loss = self._last_loss
        if loss is None or self.clock() - loss[0] > LOSS_MEMORY_SECONDS:
            return None
        c = self.counts
        return (
            f"intervals lost: {c['dropped_intervals']} dropped (backlog full), "
            f"{c['rejected_intervals']} rejected, {c['cut_off_intervals']} cut off at stop; "
            f"the latest {self.clock() - loss[0]:.0f} s ago: {loss[1]}"
        )

    def _lost(self, what: str) -> None:
        self._last_loss = (self.clock(), what)

    def figures(self) -> dict[str, Any]:
        failing, busy = self.failing_for(), self.in_flight_for()
        return {
            **self.counts,
            "backlog": self.backlog,
            "max_backlog": self.max_backlog,
            "last_delivery": self.last_delivery,
            "last_error": self.last_error,
            "failing_seconds": None if failing is None else round(failing, 3),
            "in_flight_seconds": None if busy is None else round(busy, 3),
        }
