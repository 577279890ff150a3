"""A worker's self-metrics carry the delivery queue's part figures, beside its other delivery figures.

In-process: the worker's real delivery queue and thread, a destination with
parts whose behaviour each part names (no sockets needed to make a part fail).
"""

from __future__ import annotations

from collections.abc import Sequence

from expecter import expect

from support.daemons import wait_until
from zibrato.delivery import Backoff, Rejected, Retryable
from zibrato.destination import Destination, Interval, Part
from zibrato.worker import Worker
from zibrato.worker_config import WorkerConfig

PART_FIGURES = (
    "parts_delivered",
    "parts_rejected",
    "parts_retried",
    "cut_off_parts",
    "cut_off_points",
    "rejected_points",
)


class Scripted(Destination):
    """Parts that say what happens to them: "flaky" fails once, "refused" is refused, "away" always fails."""

    name = "scripted"

    def __init__(self) -> None:
        self.failed: set[str] = set()

    def parts(self, interval: Interval) -> Sequence[Part]:
        if interval.start == 0.0:
            return [Part("flaky", 2), Part("refused", 3)]
        return [Part("away", 4)]

    def send(self, part: Part) -> None:
        if part.payload == "refused":
            raise Rejected("the service refused it")
        if part.payload == "away" or part.payload not in self.failed:
            self.failed.add(part.payload)
            raise Retryable("the service is away")


def test_self_metrics_publish_the_delivery_queues_part_figures():
    worker = Worker(Scripted(), WorkerConfig(self_level=None, flush_interval=10.0), backoff=Backoff(0.01, 0.05))
    queue = worker.delivery
    thread = queue.start()
    try:
        queue.put(Interval(0.0, 10.0, []))
        wait_until(lambda: queue.counts["rejected_intervals"] == 1, message="the first interval done")
        queue.put(Interval(10.0, 20.0, []))
        wait_until(lambda: queue.counts["parts_retried"] == 2, message="the second interval failing")
    finally:
        queue.stop(queue.clock())  # the deadline is now: the part in flight is cut off
        thread.join(10)
    expect(thread.is_alive()) == False
    gauges = worker.self_figures(0)
    published = {key: gauges[key] for key in PART_FIGURES}
    expect(published) == {
        "parts_delivered": 1,  # the flaky part, on its second attempt
        "parts_rejected": 1,
        "parts_retried": 2,  # the flaky part and the away part, once each
        "cut_off_parts": 1,
        "cut_off_points": 4,
        "rejected_points": 3,
    }
    expect(published) == {key: queue.counts[key] for key in PART_FIGURES}
    expect(gauges["cut_off_intervals"]) == 1  # beside the interval figures published before
