"""One delivery policy for every destination: backlog, retries, backoff, parts, stop deadline, health.

The worker's receive loop :meth:`DeliveryQueue.put`\\ s each flushed interval;
the delivery thread (:meth:`DeliveryQueue.run`) takes them one at a time, in
order, asks the destination for the interval's parts
(:meth:`~zibrato.destination.Destination.parts`: one, the interval itself,
unless the destination splits it) and sends them in order
(:meth:`~zibrato.destination.Destination.send`). For each part, ``send``:

* **returns**: the part is accepted and never sent again (parts it returns
  are sent next, in its place);
* raises :class:`Retryable` (or ``OSError``: a connection refused, a timeout):
  that part and the rest are retried after an exponential backoff with jitter
  (:class:`Backoff`), at least as long as the ``Retry-After`` the service
  asked for, while later intervals wait in the bounded backlog (past
  ``max_backlog`` the oldest *waiting* interval is dropped and counted, never
  the one in flight);
* raises :class:`Rejected`, or anything else (a bug in a mapping): that part is
  logged, counted and dropped and the others still go out (all of them with
  it when the rejection says ``whole_interval``), so that one bad request
  never blocks the rest; the interval then counts as rejected.

**Stopping.** :meth:`DeliveryQueue.stop` sets a deadline (monotonic seconds).
From then on a wait that would end past the deadline is shortened once, for
one final attempt, and a request's timeout (:func:`request_timeout`) never
runs past the deadline; so a stop during an outage makes at most one attempt
per backoff step, never a storm, and ends inside the budget. A ``Retry-After``
that ends past the deadline is honoured: no further attempt. What the deadline
cuts off is counted and logged: the intervals not wholly delivered
(``cut_off_intervals`` / ``cut_off_series``: the one in flight and those
waiting) and the parts of the one in flight not yet accepted
(``cut_off_parts`` / ``cut_off_points``, also told to the destination's
:meth:`~zibrato.destination.Destination.lost`).

Backoff and the failure exceptions live in :mod:`zibrato.retry`, what health
reads of a queue (:meth:`~DeliveryQueue.problems`, :meth:`~DeliveryQueue.figures`)
in :mod:`zibrato.delivery_health`; every name is importable from here too.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import deque
from collections.abc import Callable

from .delivery_health import LOSS_MEMORY_SECONDS, DeliveryHealth, iso
from .destination import CUT_OFF, REFUSED, Destination, Interval, Part
from .names import NameFitter
from .retry import (
    MIN_ATTEMPT_SECONDS,
    MIN_RETRY_AFTER_CAP,
    Backoff,
    Rejected,
    Retryable,
    bind_deadline,
    describe,
    parse_retry_after,
    request_timeout,
)
from .runtime import printable

_LOG_EVERY_N_FAILURES = 10


# --- the queue ------------------------------------------------------------------------


class DeliveryQueue(DeliveryHealth):
    """The bounded backlog of intervals and the thread that delivers them (see the module docstring).

    Public figures (read them from any thread): :attr:`backlog` (waiting plus
    in flight), :attr:`in_flight`, and the counters in :meth:`figures`.
    """

    def __init__(
        self,
        destination: Destination,
        *,
        max_backlog: int = 16,
        backoff: Backoff | None = None,
        log: logging.Logger | None = None,
        clock: Callable[[], float] = time.monotonic,
        stalled_after: float | None = None,
    ) -> None:
        if max_backlog < 1:
            raise ValueError("max_backlog must be at least 1")
        #: seconds one interval may stay in flight (posting, retrying) before health says so
        self.stalled_after = stalled_after
        self.destination = destination
        self.max_backlog = max_backlog
        self.backoff = backoff or Backoff()
        self.log = log or logging.getLogger(f"zibrato.{destination.name}")
        self.clock = clock
        self._waiting: deque[Interval] = deque()
        self._in_flight: Interval | None = None
        self._parts: deque[Part] = deque()  # the parts of the interval in flight not yet accepted
        self._in_flight_since: float | None = None  # clock() when the interval in flight was taken
        self._changed = threading.Condition()
        self._closing = False
        self._deadline: float | None = None
        self._final_attempt = False  # while stopping: the one shortened wait is used
        self._abandoned = False
        self._failures = 0  # consecutive failed attempts, across intervals
        self._alarms_logged: set[int | str] = set()
        self.failing_since: float | None = None
        self.last_error: str | None = None
        self.counts = {
            "delivered_intervals": 0,
            "dropped_intervals": 0,
            "dropped_series": 0,
            "rejected_intervals": 0,
            "failed_attempts": 0,
            "retries": 0,
            "cut_off_intervals": 0,
            "cut_off_series": 0,
            # parts (a destination's requests, batches, chunks; an interval sent whole is one)
            "parts_delivered": 0,
            "parts_rejected": 0,
            "parts_retried": 0,  # parts sent again after a failed attempt, each counted once
            "rejected_points": 0,
            "cut_off_parts": 0,  # parts of the interval in flight that a stop left unsent
            "cut_off_points": 0,
        }
        self.last_delivery: float | None = None  # the end of the last interval delivered
        self._last_loss: tuple[float, str] | None = None  # (clock(), what) of the latest loss

    # --- the receive loop's side --------------------------------------------------

    def put(self, interval: Interval) -> None:
        """Queue an interval; past ``max_backlog`` (in flight included) drop the oldest waiting."""
        with self._changed:
            self._waiting.append(interval)
            while self._waiting and len(self._waiting) + (self._in_flight is not None) > self.max_backlog:
                dropped = self._waiting.popleft()
                self.counts["dropped_intervals"] += 1
                self.counts["dropped_series"] += len(dropped.summaries)
                self._lost("backlog full")
                self.log.error(
                    "delivery backlog full (%d intervals): dropped the interval at %s (%d series)",
                    self.max_backlog,
                    iso(dropped.end),
                    len(dropped.summaries),
                )
            self._changed.notify_all()

    def waiting(self) -> list[Interval]:
        with self._changed:
            return list(self._waiting)

    def stop(self, deadline: float) -> None:
        """Deliver what is queued until ``deadline`` (``clock()`` seconds), then give up and count it."""
        with self._changed:
            self._closing = True
            self._deadline = deadline
            self._changed.notify_all()

    def time_left(self) -> float | None:
        """Seconds before the stop deadline; None while not stopping."""
        deadline = self._deadline
        return None if deadline is None else deadline - self.clock()

    def abandon(self) -> None:
        """The stop window is over with a post still running: count what will not be delivered."""
        with self._changed:
            if self._abandoned:
                return
            self._abandoned = True
            intervals = ([self._in_flight] if self._in_flight is not None else []) + list(self._waiting)
            self._waiting.clear()
            parts = list(self._parts) if self._in_flight is not None else []
        self._count_cut_off(intervals, parts, "the stop window ended with a post still running")

    # --- the delivery thread ------------------------------------------------------------

    def start(self) -> threading.Thread:
        thread = threading.Thread(target=self.run, name=f"zibrato-{self.destination.name}-delivery", daemon=True)
        thread.start()
        return thread

    def run(self) -> None:
        """Connect, then deliver each interval in order until stopped and empty (or given up)."""
        bind_deadline(self)
        try:
            self._connect()
            while True:
                interval = self._next()
                if interval is None or not self._deliver(interval):
                    break
            self._close()
        finally:
            bind_deadline(None)

    def _close(self) -> None:
        try:
            self.destination.close()
        except Exception as error:
            self.log.error("closing the destination failed: %s", describe(error))

    def _connect(self) -> None:
        try:
            self.destination.connect()
        except Exception as error:
            self.log.error("cannot connect to the destination: %s (will retry at each post)", describe(error))

    def _next(self) -> Interval | None:
        with self._changed:
            while not self._waiting and not self._closing:
                self._changed.wait()
            if not self._waiting or self._abandoned:
                return None
            self._in_flight = self._waiting.popleft()
            self._in_flight_since = self.clock()
            return self._in_flight

    def _deliver(self, interval: Interval) -> bool:
        """Send the interval's parts until each is accepted or refused (True), or given up at the stop (False)."""
        try:
            self._parts = deque(self.destination.parts(interval))
        except Exception as error:  # a bug in a mapping must not stop delivery
            self.log.exception("mapping the interval at %s failed", iso(interval.end))
            self._drop(interval, describe(error))
            self._done()
            return True
        refused: list[str] = []
        delivered = 0
        failed: Part | None = None  # the part whose last attempt failed
        while self._parts:
            part = self._parts[0]
            try:
                instead = self.destination.send(part)
            except (Retryable, OSError) as error:
                failure = error if isinstance(error, Retryable) else Retryable(describe(error))
                if not self._wait_to_retry(failure):
                    self._give_up(interval)
                    return False
                if failed is not part:
                    failed = part
                    self.counts["parts_retried"] += 1
                continue
            except Rejected as rejection:
                self._recovered()
                self._refuse(interval, rejection.reason, whole=rejection.whole_interval)
                refused.append(rejection.reason)
                continue
            except Exception as error:  # a bug in a mapping must not stop delivery
                self.log.exception("sending a part of the interval at %s failed", iso(interval.end))
                self._refuse(interval, describe(error), whole=False)
                refused.append(describe(error))
                continue
            self._recovered()
            self._parts.popleft()
            if instead:
                self._parts.extendleft(reversed(instead))
            else:
                delivered += 1
                self.counts["parts_delivered"] += 1
        if refused:
            reason = refused[0] if len(refused) == 1 else f"{len(refused)} parts refused, the first: {refused[0]}"
            self._drop(interval, reason, delivered)
        else:
            self.counts["delivered_intervals"] += 1
            self.last_delivery = interval.end
        self._done()
        return True

    def _done(self) -> None:
        with self._changed:
            self._in_flight = None
            self._parts = deque()
            self._changed.notify_all()

    def _refuse(self, interval: Interval, reason: str, whole: bool) -> None:
        """Count the refused part in front (and, ``whole``, every part left) and drop it."""
        refused = [self._parts.popleft()]
        if whole and self._parts:
            rest = list(self._parts)
            self._parts.clear()
            refused += rest
            self.destination.lost(rest, REFUSED)
        self.counts["parts_rejected"] += len(refused)
        self.counts["rejected_points"] += sum(p.points for p in refused)
        self.log.debug("the interval at %s: %d parts refused: %s", iso(interval.end), len(refused), reason)

    def _drop(self, interval: Interval, reason: str, delivered: int = 0) -> None:
        """Count a refused interval; ``delivered``: how many of its parts were accepted all the same."""
        self.counts["rejected_intervals"] += 1
        self.last_error = reason
        self._lost(reason)
        if delivered:
            self.log.error(
                "the interval at %s was partly refused (%d parts delivered, the others dropped): %s",
                iso(interval.end),
                delivered,
                reason,
            )
            return
        self.log.error("dropped the interval at %s (%d series): %s", iso(interval.end), len(interval.summaries), reason)

    def _wait_to_retry(self, failure: Retryable) -> bool:
        """Count and log the failure, then wait; False when the stop deadline says give up."""
        self.counts["failed_attempts"] += 1
        self.last_error = failure.reason
        if self.failing_since is None:
            self.failing_since = self.clock()
        self._failures += 1
        delay = self.backoff.delay(self._failures, failure.retry_after)
        self._log_failure(failure, delay)
        if not self._sleep(delay, strict=failure.retry_after is not None):
            return False
        self.counts["retries"] += 1
        return True

    def _sleep(self, delay: float, strict: bool) -> bool:
        """Wait ``delay`` seconds; a stop shortens the wait once, never to a busy loop.

        ``strict``: the service asked for this wait (Retry-After); if it ends
        past the deadline, give up rather than ask again early.
        """
        end = self.clock() + delay
        with self._changed:
            while True:
                now = self.clock()
                if self._abandoned:
                    return False
                if self._deadline is not None:
                    latest = self._deadline - MIN_ATTEMPT_SECONDS
                    if now >= latest:
                        return False
                    if end > latest:
                        if strict or self._final_attempt:
                            return False
                        self._final_attempt = True
                        end = now + (self._deadline - now) / 2  # one final attempt, half-way
                if now >= end:
                    return True
                self._changed.wait(end - now)

    def _log_failure(self, failure: Retryable, delay: float) -> None:
        """The first failure, every tenth, and the first of each alarming status (as an error)."""
        key = failure.status if failure.status is not None else failure.reason
        new_alarm = failure.alarm and key not in self._alarms_logged
        if new_alarm:
            self._alarms_logged.add(key)
        if new_alarm or self._failures == 1 or self._failures % _LOG_EVERY_N_FAILURES == 0:
            level = self.log.error if failure.alarm else self.log.warning
            level(
                "%s (attempt %d failed; retrying in %.2g s, later flushes keep aggregating)",
                failure.reason,
                self._failures,
                delay,
            )
        else:
            self.log.debug("%s; retrying in %.2g s", failure.reason, delay)

    def _recovered(self) -> None:
        if self.failing_since is not None:
            self.log.info(
                "%s delivery recovered after %d failed attempts over %.1f s",
                self.destination.name,
                self._failures,
                self.clock() - self.failing_since,
            )
        self._failures, self.failing_since = 0, None
        self._alarms_logged.clear()

    def _give_up(self, interval: Interval) -> None:
        with self._changed:
            if self._abandoned:
                return
            self._abandoned = True
            intervals = [interval, *self._waiting]
            self._waiting.clear()
            self._in_flight = None
            parts, self._parts = list(self._parts), deque()
        self._count_cut_off(intervals, parts, f"last error: {self.last_error}")

    def _count_cut_off(self, intervals: list[Interval], parts: list[Part], why: str) -> None:
        """Count what a stop leaves undelivered; tell the destination which of its parts."""
        series = sum(len(i.summaries) for i in intervals)
        points = sum(p.points for p in parts)
        c = self.counts
        c["cut_off_intervals"] += len(intervals)
        c["cut_off_series"] += series
        c["cut_off_parts"] += len(parts)
        c["cut_off_points"] += points
        if intervals:
            self._lost("cut off by the stop deadline")
            self.log.error(
                "stop deadline reached: %d intervals (%d series) not delivered, from %s (%s)%s",
                len(intervals),
                series,
                iso(intervals[0].end),
                why,
                f"; {len(parts)} parts ({points} points) of the first were not sent" if parts else "",
            )
        if parts:
            try:
                self.destination.lost(parts, CUT_OFF)
            except Exception:  # a destination's bookkeeping must not hide the loss
                self.log.exception("the destination could not count its lost parts")


__all__ = [
    "MIN_ATTEMPT_SECONDS",
    "MIN_RETRY_AFTER_CAP",
    "Backoff",
    "DeliveryQueue",
    "LOSS_MEMORY_SECONDS",
    "NameFitter",
    "Rejected",
    "Retryable",
    "describe",
    "iso",
    "parse_retry_after",
    "printable",
    "request_timeout",
]
