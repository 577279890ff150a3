"""When a worker flushes: :class:`Schedule`, wall-clock boundaries and the lateness of each flush.

Its own module because the worker's loop, the embedded runtime and the tests
all drive it, and because it is pure arithmetic on an injected clock: no
socket, no thread.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable


class Schedule:
    """Flush boundaries at wall-clock multiples of the interval; counts flushes that run late.

    The clock is injected (``time.time`` by default), so the schedule is tested
    without real time. The first interval starts at :meth:`start`, not at the
    boundary before it, so that its rates are per second of receiving.
    """

    def __init__(self, flush_interval: float, clock: Callable[[], float] = time.time) -> None:
        if not (flush_interval > 0 and math.isfinite(flush_interval)):
            raise ValueError("flush interval must be a positive, finite number of seconds")
        self.flush_interval, self.clock = flush_interval, clock
        self.late_flushes = 0
        self.missed_boundaries = 0
        self.lag = 0.0  # seconds between the last boundary and its flush
        self.max_lag = 0.0
        self.start()

    def start(self) -> None:
        now = self.clock()
        self.boundary = self.next_boundary(now)
        self.interval_start = max(self.boundary - self.flush_interval, now)

    def next_boundary(self, now: float) -> float:
        """The next multiple of the interval after ``now``, rounded to the µs (0.1 * k is 613.3000002)."""
        return round((math.floor(now / self.flush_interval) + 1) * self.flush_interval, 6)

    @property
    def late_after(self) -> float:
        """A flush this long after its boundary is late: half an interval, at most 1 s."""
        return min(self.flush_interval / 2, 1.0)

    def seconds_to_boundary(self) -> float:
        return max(0.0, self.boundary - self.clock())

    def due(self) -> tuple[float, float] | None:
        """The interval ``(start, end)`` to flush now, or None; advances the schedule.

        A flush later than a whole interval has missed boundaries: the interval
        flushed then covers them all (its length says so) and they are counted.
        """
        now = self.clock()
        if now < self.boundary:
            return None
        end = self.boundary
        missed = math.floor((now - end) / self.flush_interval + 1e-9)
        if missed > 0:
            end = round(end + missed * self.flush_interval, 6)
            self.missed_boundaries += missed
        lag = now - self.boundary
        self.lag = lag
        self.max_lag = max(self.max_lag, lag)
        if lag > self.late_after:
            self.late_flushes += 1
        start = self.interval_start
        self.interval_start = end
        self.boundary = self.next_boundary(max(now, end))
        return start, end

    def final(self) -> tuple[float, float]:
        """The partial interval at stop: from the last boundary to now."""
        now = self.clock()
        return self.interval_start, max(now, self.interval_start + 1e-6)


__all__ = ["Schedule"]
