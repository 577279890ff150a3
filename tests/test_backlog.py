"""The worker runtime's delivery backlog: bounded exactly, and never dropping what is in flight.

A tiny Backend whose ``post`` blocks until the test releases it stands in for
a destination that is down; the real delivery thread runs against it.
"""
from __future__ import annotations

import logging
import threading

import pytest
from expecter import expect

from support.daemons import wait_until
from zibrato.worker import Backend

MINUTE = 60.0


class BlockedBackend(Backend):
    """Records each interval it is asked to post; the first post waits for :attr:`release`."""

    name = "blocked"

    def __init__(self, **kwargs) -> None:
        super().__init__(self_level=None, **kwargs)
        self.release = threading.Event()
        self.started: list[float] = []
        self.delivered: list[float] = []

    def post(self, time: float, summaries: list[dict]) -> None:
        self.started.append(time)
        if not self.release.wait(10):
            raise TimeoutError("the test never released the post")
        self.delivered.append(time)


@pytest.fixture
def make_backend():
    made = []

    def make(**kwargs):
        made.append(BlockedBackend(**kwargs))
        return made[-1]
    yield make
    for backend in made:
        backend.release.set()
        backend._context.term()


def start_delivery(backend: Backend) -> threading.Thread:
    thread = threading.Thread(target=backend._deliver_forever, args=(threading.Event(),), daemon=True)
    thread.start()
    return thread


def finish_delivery(backend: BlockedBackend, thread: threading.Thread) -> None:
    backend.release.set()
    with backend._backlog_ready:
        backend._closing = True
        backend._backlog_ready.notify_all()
    thread.join(5)
    expect(thread.is_alive()) == False


def test_an_overflow_drops_the_oldest_waiting_interval_never_the_one_in_flight(make_backend, caplog):
    backend = make_backend(max_backlog=3)
    delivery = start_delivery(backend)
    backend._enqueue(1 * MINUTE, [])
    wait_until(lambda: backend.started == [MINUTE], message="the first post in flight")
    for minute in range(2, 7):
        backend._enqueue(minute * MINUTE, [])
        expect(len(backend._backlog)) <= 3  # the one in flight counts
    expect([t for t, _ in backend._backlog]) == [1 * MINUTE, 5 * MINUTE, 6 * MINUTE]

    finish_delivery(backend, delivery)
    expect(backend.delivered) == [1 * MINUTE, 5 * MINUTE, 6 * MINUTE]
    expect(backend.figures_["dropped_intervals"]) == 3  # 2, 3 and 4: exactly those not delivered
    dropped = [r.getMessage() for r in caplog.records if "delivery backlog full" in r.getMessage()]
    expect([line.split("interval at ")[1][:20] for line in dropped]) == [
        "1970-01-01T00:02:00Z", "1970-01-01T00:03:00Z", "1970-01-01T00:04:00Z"]
    expect({r.levelno for r in caplog.records if "delivery backlog full" in r.getMessage()}) == {logging.ERROR}


def test_without_delivery_in_flight_the_oldest_interval_is_dropped(make_backend):
    backend = make_backend(max_backlog=3)  # no delivery thread: nothing is in flight
    for minute in range(1, 6):
        backend._enqueue(minute * MINUTE, [])
    expect([t for t, _ in backend._backlog]) == [3 * MINUTE, 4 * MINUTE, 5 * MINUTE]
    expect(backend.figures_["dropped_intervals"]) == 2


def test_a_backlog_of_one_keeps_the_interval_in_flight(make_backend):
    backend = make_backend(max_backlog=1)
    delivery = start_delivery(backend)
    backend._enqueue(1 * MINUTE, [])
    wait_until(lambda: backend.started == [MINUTE], message="the first post in flight")
    backend._enqueue(2 * MINUTE, [])
    expect([t for t, _ in backend._backlog]) == [1 * MINUTE]
    finish_delivery(backend, delivery)
    expect(backend.delivered) == [1 * MINUTE]
    expect(backend.figures_["dropped_intervals"]) == 1
