"""What the client costs when nothing happens, and where its measurements wait (issue 24).

An idle sender sleeps (its wake-ups counted through ``Sender.wakes``, not
timed); the next measurement wakes it; each series waits in its own lane
under one bound; frames are copies, tracked only when flush() waits.
"""

from __future__ import annotations

import threading

from expecter import expect

import zibrato.buffer
import zibrato.sender
from conftest import values_of, wait_until
from zibrato import protocol
from zibrato.testing import client_parts


def idle(z) -> None:
    wait_until(
        lambda: client_parts(z).sender is not None and client_parts(z).sender.idle, message="the sender to go idle"
    )


def test_an_idle_sender_sleeps_instead_of_waking_every_interval(broker_pull, make_client):
    z = make_client(interval=0.01)
    z.count("info", "once")
    expect(z.flush()) == True
    idle(z)
    sender = client_parts(z).sender
    before = sender.wakes
    # 0.5 s idle: waking every interval would be 50 wake-ups; backing off from 0.01 s
    # (0.01, 0.02, 0.04 ... 0.32) is at most 6, fewer on a loaded machine, never more.
    threading.Event().wait(0.5)
    expect(sender.wakes - before) <= 6
    expect(sender.idle) == True
    expect(values_of(broker_pull.settle(z), "once")) == [1]


def test_a_measurement_after_a_long_idle_wakes_the_sender_at_once(broker_pull, make_client, monkeypatch):
    monkeypatch.setattr(zibrato.sender, "IDLE_AFTER", 1)
    z = make_client(interval=600)  # the sender's own timeout never comes during this test
    z.count("info", "first")
    expect(z.flush()) == True
    expect(z.flush()) == True  # a drain that finds nothing: the sender goes idle, asleep for 600 s or more
    idle(z)

    @z.time_me("info", "after.idle")
    def work():
        pass

    work()  # its lane wakes the sender: it arrives without flush()
    received = broker_pull.receive_count(1, "after.idle")
    expect(len(received)) == 1
    expect(client_parts(z).sender.idle) == False
    z.count("info", "next")  # the plain append again: delivered with the next drain
    expect(values_of(broker_pull.settle(z), "next")) == [1]


def test_an_idle_sender_is_woken_by_every_kind_of_recording(broker_pull, make_client, monkeypatch):
    monkeypatch.setattr(zibrato.sender, "IDLE_AFTER", 1)
    z = make_client(interval=600)
    z.count("info", "start")
    expect(z.flush()) == True
    calls = {
        "count": lambda: z.count("info", "wake.count"),
        "gauge": lambda: z.gauge("info", "wake.gauge", 3),
        "timing": lambda: z.timing("info", "wake.timing", 0.5),
        "histogram": lambda: z.histogram("info", "wake.histogram", 5, unit="bytes"),
        "set": lambda: z.set("info", "wake.set", "member"),
        "block": lambda: z.Time_me("info", "wake.block").__enter__().__exit__(None, None, None),
    }
    for kind, call in calls.items():
        expect(z.flush()) == True  # nothing new: idle again
        idle(z)
        call()
        broker_pull.receive_count(1, f"wake.{kind}")


def test_lanes_take_instruments_and_cached_calls_and_the_shared_queue_the_rest(make_client):
    z = make_client(interval=600)  # nothing drains while the test looks
    z.count("info", "start")

    @z.time_me("info", "laned.timer")
    def work():
        pass

    for _ in range(3):
        work()
        z.count("info", "laned.count", 2)
        z.gauge("info", "laned.gauge", 1.5)
        z.histogram("info", "shared.histogram", 4)
    buffer = client_parts(z).buffer
    by_name = {lane.series[2]: [item[0] for item in lane.items] for lane in buffer.lanes}
    expect(by_name["laned.count"]) == [2, 2, 2]
    expect(by_name["laned.gauge"]) == [1.5, 1.5, 1.5]
    expect(len(by_name["laned.timer"])) == 3
    expect(sorted(series[2] for series, _ in buffer.items)) == ["shared.histogram"] * 3
    expect(z.queued) == 1 + 4 * 3


def test_a_gauge_keeps_its_order_across_the_start_of_the_sender(broker_pull, make_client):
    """The first measurement goes through the client's path: it lands in its lane, before the second."""
    z = make_client()
    z.gauge("info", "ordered.gauge", 1)
    z.gauge("info", "ordered.gauge", 2)
    expect(values_of(broker_pull.settle(z), "ordered.gauge")) == [1, 2]


def test_the_bound_is_one_across_a_thousand_lanes_with_four_threads_flat_out(broker_pull, make_client):
    # Half of it is the margin the collector's callback guards with (as test_client's bound test).
    capacity = 40_000
    z = make_client(interval=600, max_queue=capacity)  # only flush() drains: the queues fill up
    z.gauge("info", "lanes.warm", 1)  # starts the sender, which hooks its early wake to the buffer
    # ... and this test is about the bound, not the early wake (tests/test_sender_cadence.py):
    # without it, a burst's drain would empty the queues into the broker and nothing be dropped
    client_parts(z).buffer.on_filling = None
    threads, calls, series = 4, 25_000, 1000
    recorded = [0] * threads
    highest = [0]
    start, stop = threading.Barrier(threads + 1), threading.Event()
    timers = [z.time_me("info", f"lanes.timer.{i}")(lambda: None) for i in range(100)]

    def record(n: int) -> None:
        start.wait()
        for i in range(calls):
            if i % 4:
                z.count("info", f"lanes.count.{i % series}")
            else:
                timers[i % len(timers)]()
            recorded[n] += 1

    def watch() -> None:
        while not stop.is_set():
            highest[0] = max(highest[0], z.queued)
            stop.wait(0.001)

    pool = [threading.Thread(target=record, args=(n,)) for n in range(threads)]
    watcher = threading.Thread(target=watch)
    for thread in pool + [watcher]:
        thread.start()
    start.wait()
    for thread in pool:
        thread.join(60)
        expect(thread.is_alive()) == False
    stop.set()
    watcher.join()
    highest[0] = max(highest[0], z.queued)

    total = threads * calls + 1  # and the gauge that started the sender
    expect(len(client_parts(z).buffer.lanes)) >= 100 + series * 3 // 4  # the timers, and the counts of i % 4 != 0
    expect(highest[0]) <= capacity + zibrato.buffer.SLACK
    expect(z.dropped) > 0
    expect(z.flush(10)) == True
    sent = z.sent
    expect(sent + z.dropped) == total  # every measurement either sent or counted
    expect(len(broker_pull.settle(z, timeout=10))) == sent


def test_a_flush_after_untracked_drains_waits_behind_a_marker_with_no_records(broker_pull, make_client):
    z = make_client()
    z.count("info", "untracked")
    wait_until(lambda: z.sent == 1, message="a periodic drain")  # nobody waited: a copy, untracked
    transport = client_parts(z).transport
    expect(transport._untracked) > 0
    expect(z.flush()) == True  # nothing new to send: a tracked marker vouches for what was sent
    expect(transport._untracked) == 0
    # and ZeroMQ writes it: flush() waits up to 0.1 s for a tracker that does not move (a broker
    # away), and four loaded test workers can keep ZeroMQ's I/O thread off the CPU that long
    wait_until(lambda: all(tracker.done for tracker, _, _ in list(transport._held)), message="the marker written")
    broker_pull.receive_count(1, "untracked")

    def marker_arrived() -> bool:
        if broker_pull.socket.poll(20):
            broker_pull._receive_available()
        return any(not batch.records for batch in broker_pull.batches)

    wait_until(marker_arrived, message="the marker")
    [marker] = [batch for batch in broker_pull.batches if not batch.records]
    expect(marker.level) == "info"


def test_frames_are_copies_tracked_only_when_a_flush_waits_or_every_track_every_bytes(unused_port):
    transport = zibrato.sender.ZmqTransport(f"tcp://127.0.0.1:{unused_port}", 1000, 0.0, 64 * 1024 * 1024)
    transport.open()
    try:
        frame = protocol.encode("info", 1.0, [("c", "n", [1], None, ())])
        expect(transport.send(frame, True)) == True
        expect(len(transport._held)) == 0  # a plain copy
        transport.flushing = True
        expect(transport.send(frame, True)) == True
        expect(len(transport._held)) == 1  # tracked: flush() waits for it
        transport.flushing = False
        big = protocol.encode("info", 1.0, [("c", "n", [1] * (transport.TRACK_EVERY // 2), None, ())])
        transport.send(big, False)
        expect(len(transport._held)) == 1
        transport.send(big, False)  # past TRACK_EVERY bytes since the last tracked frame
        expect(len(transport._held)) == 2
        expect(transport.held_bytes) == 2 * len(frame) + 2 * len(big)
    finally:
        transport.close(0)
