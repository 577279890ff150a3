"""The sender's cadence follows the rate (issue 24): few drains at low rates, none lost, none late.

A drain's fixed cost is paid per drain, so at a low rate the sender drains
about once per ``MAX_DELAY`` instead of every ``interval``. These tests count
drains through :attr:`Sender.drains` (a seam, not a clock), and check what
must not change: every measurement arrives without a flush(), flush() still
drains at once, and a burst wakes a sender that sleeps long.
"""

from __future__ import annotations

import gc
import threading
import time

import pytest
from expecter import expect

import zibrato.sender
from conftest import values_of, wait_until
from support.pipeline import WorkerPipeline, pipelines
from zibrato.buffer import Buffer, Tally
from zibrato.sender import DRAIN_BATCH, MAX_DELAY, Publisher, Sender
from zibrato.testing import MemoryTransport, client_parts


def a_sender(interval: float = 0.05, capacity: int = 100_000) -> Sender:
    """A sender that is never started: its cadence and its buffer's hook, looked at alone."""
    buffer = Buffer(capacity, lambda recorder: None)
    publisher = Publisher(MemoryTransport(), Tally(), 1000, 64 * 1024)
    return Sender(buffer, publisher, interval, linger=0.1)


def test_the_cadence_is_the_interval_under_load_and_max_delay_at_a_trickle():
    sender = a_sender(interval=0.05)
    expect(sender.cadence(50_000, 0.05)) == 0.05  # a million a second: the interval
    expect(sender.cadence(5, 0.05)) == MAX_DELAY  # 100 a second: once per MAX_DELAY
    expect(sender.cadence(DRAIN_BATCH, 0.3)) == pytest.approx(0.3)  # a drain's worth every 0.3 s
    expect(sender.cadence(0, 0.05)) == 0.05  # nothing found: the idle path decides
    slow = a_sender(interval=5.0)  # a client that asked for a longer interval keeps it
    expect(slow.max_delay) == 5.0
    expect(slow.cadence(1, 5.0)) == 5.0


def test_the_buffer_tells_the_sender_once_per_drain_when_a_burst_fills_it():
    sender = a_sender()
    buffer = sender.buffer
    told = []
    buffer.on_filling = lambda: told.append(len(buffer))
    lane = buffer.lane(("info", "c", "burst", None, (), None, None))
    # New tuples, as the hot path appends: the collector runs every few hundred, its callback counts.
    lane.items.extend((value,) for value in range(buffer.wake_at - 1))
    gc.collect()
    expect(told) == []  # short of a drain's worth: the sender keeps its cadence
    lane.items.extend((value,) for value in range(10_000))
    gc.collect()
    expect(len(told)) == 1  # once, until the sender drained
    expect(told[0]) >= buffer.wake_at
    buffer.take_lanes()
    buffer.relax()
    lane.items.extend((value,) for value in range(2 * buffer.wake_at))
    expect(len(told)) == 2


def test_a_sender_hooks_itself_to_its_buffer_and_a_forked_child_forgets_it():
    sender = a_sender()
    expect(sender.buffer.on_filling) == sender.wake
    sender.buffer.reset()
    expect(sender.buffer.on_filling) == None


def test_at_a_steady_low_rate_the_sender_drains_about_once_per_max_delay(broker_pull, make_client):
    z = make_client(interval=0.01)  # every 10 ms before: about 150 drains in this test
    pause = threading.Event()
    start = time.monotonic()
    for _ in range(150):  # about 100 a second for 1.5 s (slower on a loaded machine, never faster)
        z.count("info", "steady.low")
        pause.wait(0.01)
    sender = client_parts(z).sender
    drains, elapsed = sender.drains, time.monotonic() - start
    # one drain at the sender's start (one interval in), then one per MAX_DELAY at most
    expect(drains) <= elapsed / MAX_DELAY + 2
    expect(values_of(broker_pull.receive_count(150, "steady.low"), "steady.low")) == [1] * 150
    expect(z.dropped) == 0


def test_flush_drains_at_once_while_the_sender_sleeps_long(broker_pull, make_client, monkeypatch):
    monkeypatch.setattr(zibrato.sender, "MAX_DELAY", 3600.0)  # its own timer never comes in this test
    z = make_client()
    z.count("info", "first")
    wait_until(
        lambda: client_parts(z).sender is not None and client_parts(z).sender.drains >= 1, message="the first drain"
    )
    for _ in range(5):
        z.count("info", "flushed")
    expect(z.flush()) == True
    expect(values_of(broker_pull.receive_count(5, "flushed"), "flushed")) == [1] * 5


def test_a_burst_wakes_a_sender_that_sleeps_long(broker_pull, make_client, monkeypatch):
    monkeypatch.setattr(zibrato.sender, "MAX_DELAY", 3600.0)  # after a trickle, it would sleep an hour
    z = make_client()
    z.count("info", "first")
    wait_until(
        lambda: client_parts(z).sender is not None and client_parts(z).sender.drains >= 1, message="the first drain"
    )
    burst = client_parts(z).buffer.wake_at + 1000
    for _ in range(burst):  # each a new tuple: the collector runs, its callback wakes the sender
        z.count("info", "burst")
    received = broker_pull.receive_count(burst, "burst")  # no flush(): the wake-up drained them
    expect(len(received)) == burst
    expect(z.dropped) == 0


class Pipeline(WorkerPipeline):
    """A real broker and a real console worker; the test counts what reached the worker."""


@pytest.fixture
def pipeline(tmp_path):
    yield from pipelines(lambda *args, **kwargs: Pipeline(tmp_path, *args, **kwargs))


@pytest.mark.parametrize("rate", [100, 1000])
def test_nothing_is_lost_or_late_at_steady_rates_through_a_real_broker(pipeline, rate):
    p = pipeline()
    z = p.client
    timer = z.time_me("info", "steady.timer")(lambda: None)
    calls = rate * 2  # two seconds
    period, due = 1.0 / rate, time.perf_counter()
    for _ in range(calls // 2):
        timer()
        z.count("info", "steady.count")
        due += period
        delay = due - time.perf_counter()
        if delay > 0:
            time.sleep(delay)  # pacing the load, not waiting for a result
    # No flush(): within MAX_DELAY of the last call the sender hands everything to ZeroMQ.
    wait_until(
        lambda: p.status()["measurements"] >= p.baseline + calls,
        timeout=10,
        message=f"{calls} measurements at the worker without a flush",
    )
    expect(p.status()["measurements"]) == p.baseline + calls
    expect(z.dropped) == 0
