"""A destination driven by hand in a test: an aggregator to make intervals, and its real delivery queue.

``post(t, summaries)`` calls the destination's own ``post`` (each part sent
once, no retries); ``deliver(t, summaries)`` puts the interval on a real
:class:`~zibrato.delivery.DeliveryQueue` whose thread retries it.
:func:`deliver_now` runs a real queue in the test's own thread until the
intervals given are delivered, refused or cut off.
"""

from __future__ import annotations

import time

from zibrato.aggregation import Aggregator
from zibrato.aggregation_needs import AggregationNeeds
from zibrato.delivery import Backoff, DeliveryQueue
from zibrato.destination import Destination, Interval


def deliver_now(destination: Destination, *intervals: Interval, budget: float = 10.0) -> DeliveryQueue:
    """Deliver ``intervals`` through a real DeliveryQueue (millisecond backoff), in this thread; the queue."""
    queue = DeliveryQueue(destination, backoff=Backoff(0.001, 0.002))
    for interval in intervals:
        queue.put(interval)
    queue.stop(time.monotonic() + budget)  # run() returns once the queue is empty
    queue.run()
    return queue


class Rig:
    def __init__(
        self,
        destination: Destination,
        *,
        max_samples: int = 100_000,
        percentiles: tuple = (50, 90, 95, 99),
        backoff: Backoff | None = None,
        length: float = 10.0,
    ) -> None:
        self.destination = destination
        self.length = length
        self.aggregator = Aggregator(
            percentiles=percentiles,
            max_samples=max_samples,
            keep_values=AggregationNeeds.of(destination).values,
            include_interval=True,
        )
        self.queue = DeliveryQueue(destination, backoff=backoff or Backoff(0.01, 0.05))
        self.thread = None

    def interval(self, t: float, summaries: list[dict]) -> Interval:
        return Interval(t - self.length, t, summaries)

    def post(self, t: float, summaries: list[dict]) -> None:
        self.destination.post(self.interval(t, summaries))

    def deliver(self, t: float, summaries: list[dict]) -> None:
        if self.thread is None:
            self.thread = self.queue.start()
        self.queue.put(self.interval(t, summaries))

    def send(self, t: float, summaries: list[dict], timeout: float = 10.0) -> None:
        """Deliver through the queue (retries included) and wait until it is delivered or dropped."""
        counts = self.queue.counts
        done = counts["delivered_intervals"] + counts["rejected_intervals"]
        self.deliver(t, summaries)
        deadline = time.monotonic() + timeout
        while counts["delivered_intervals"] + counts["rejected_intervals"] == done:
            if time.monotonic() > deadline:
                raise AssertionError(f"interval not delivered within {timeout} s")
            time.sleep(0.005)

    def stop(self, window: float = 0.6) -> float:
        """Stop with ``window`` seconds for delivery; the seconds the delivery thread then took."""
        started = time.monotonic()
        self.queue.stop(started + window)
        if self.thread is not None:
            self.thread.join(window + 5)
        return time.monotonic() - started

    @property
    def figures_(self) -> dict:
        """The queue's counters and the destination's own figures."""
        return {**self.queue.counts, **self.destination.figures()}

    def figures(self) -> dict:
        """The destination's figures with the queue's, and health as `zibrato status` judges it."""
        f = {**self.queue.figures(), **self.destination.figures()}
        problems = f.pop("problems", []) + self.queue.problems()
        f.update(healthy=not problems, problems=problems)
        return f
