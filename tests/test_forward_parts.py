"""The forwarder on the parts contract: each message of an interval is a part the delivery queue tracks.

Real ZeroMQ on 127.0.0.1, in-process: the upstream broker is a PULL socket the
test binds, closes and binds again; the delivery queue is the real one.
"""

from __future__ import annotations

import threading
from collections.abc import Sequence

import zmq
from expecter import expect

from support.daemons import free_ports, wait_until
from zibrato import protocol
from zibrato.aggregation import Aggregator
from zibrato.delivery import Backoff, DeliveryQueue
from zibrato.destination import Destination, Interval, Part
from zibrato.forward import Forwarder, LevelAggregators, records_in

SERIES = 40  # spread over shards: several messages per interval


def host_interval(series: int = SERIES) -> Interval:
    """What a forwarder flushes for ``series`` counters (its per-level aggregator)."""
    levels = LevelAggregators(lambda: Aggregator(percentiles=(), include_interval=True))
    levels.level("info").add_records([("c", f"hits{i}", (1,), None, ()) for i in range(series)])
    return Interval(0.0, 10.0, levels.flush(10.0, 10.0))


def pull(context: zmq.Context, port: int) -> zmq.Socket:
    socket = context.socket(zmq.PULL)
    socket.setsockopt(zmq.LINGER, 0)
    socket.bind(f"tcp://127.0.0.1:{port}")
    return socket


def receive(socket: zmq.Socket, count: int) -> list[bytes]:
    frames: list[bytes] = []
    while len(frames) < count:
        expect(socket.poll(10_000)) != 0  # a frame within 10 s, or the test fails here
        frames.append(socket.recv())
    return frames


class OutageAtSecondMessage(Destination):
    """The real forwarder; just before the second message's first attempt its upstream broker goes away
    (closed, and the forwarder has seen its connection end), and it is back right after that attempt."""

    name = "forward"

    def __init__(self, forwarder: Forwarder, context: zmq.Context, port: int, upstream: zmq.Socket) -> None:
        self.forwarder, self.context, self.port, self.upstream = forwarder, context, port, upstream
        self.sent_parts: list[Part] = []
        self.before_outage: list[bytes] = []
        self.failures: list[str] = []
        self.back = threading.Event()  # set once the upstream is bound again: the test reads it from then on

    def connect(self) -> None:
        self.forwarder.connect()  # here and below in the delivery thread: the socket's only user
        wait_until(self.forwarder.upstream_ready, message="the forwarder's connection upstream")

    def parts(self, interval: Interval) -> Sequence[Part]:
        self.sent_parts = list(self.forwarder.parts(interval))
        return self.sent_parts

    def send(self, part: Part) -> None:
        if part.payload.number != 2 or self.failures:
            self.forwarder.send(part)
            return
        self.before_outage = receive(self.upstream, 1)  # the first message arrived before the outage
        self.upstream.close()
        wait_until(lambda: not self.forwarder.upstream_ready(), message="the forwarder to see upstream gone")
        try:
            self.forwarder.send(part)
        except Exception as error:
            self.failures.append(str(error))
            raise
        finally:
            self.upstream = pull(self.context, self.port)  # the upstream broker is back on its port
            self.back.set()

    def close(self) -> None:
        self.forwarder.close()


def test_a_later_message_that_fails_once_is_the_only_one_sent_again():
    port = free_ports(1)
    context = zmq.Context()
    forwarder = Forwarder(f"127.0.0.1:{port}", context=context)
    destination = OutageAtSecondMessage(forwarder, context, port, pull(context, port))
    queue = DeliveryQueue(destination, backoff=Backoff(0.01, 0.1))
    thread = queue.start()
    try:
        queue.put(host_interval())
        expect(destination.back.wait(10)) == True
        total = len(destination.sent_parts)
        expect(total) >= 3
        after_outage = receive(destination.upstream, total - 1)
        wait_until(lambda: queue.counts["delivered_intervals"] == 1, message="the interval delivered")
        expect(destination.upstream.poll(0)) == 0  # nothing after the last message: none came twice
        queue.stop(queue.clock() + 5)
        thread.join(10)
        expect(thread.is_alive()) == False
        expect(destination.failures[0]).contains("not connected")
        expect(destination.failures[0]).contains(f"{total - 1} of {total} messages wait")
        expect(destination.before_outage + after_outage) == [p.payload.frame for p in destination.sent_parts]
        expect(queue.counts["parts_retried"]) == 1  # the second message, however many attempts it took
        expect(queue.counts["parts_delivered"]) == total
        expect(forwarder.counts["forwarded_messages"]) == total  # each taken once
        expect(forwarder.counts["forwarded_summaries"]) == SERIES
        expect(forwarder.counts["forwarded_intervals"]) == 1
        expect(forwarder.counts["upstream_unavailable"]) >= 1
    finally:
        queue.stop(queue.clock())
        thread.join(10)
        destination.upstream.close()
        context.term()


def test_a_stop_during_an_outage_counts_each_message_cut_off_and_its_summaries():
    forwarder = Forwarder(f"127.0.0.1:{free_ports(1)}")  # nobody listens there
    interval = host_interval()
    messages = len(forwarder.parts(interval))
    queue = DeliveryQueue(forwarder, backoff=Backoff(0.01, 0.05))
    thread = queue.start()
    try:
        queue.put(interval)
        wait_until(lambda: queue.counts["failed_attempts"] >= 1, message="a failed attempt")
    finally:
        queue.stop(queue.clock())
        thread.join(10)
    expect(thread.is_alive()) == False
    expect(queue.counts["cut_off_intervals"]) == 1
    expect(queue.counts["cut_off_parts"]) == messages
    expect(queue.counts["cut_off_points"]) == SERIES
    expect(forwarder.counts["forwarded_messages"]) == 0
    expect(forwarder.counts["forwarded_intervals"]) == 0


def test_each_message_is_a_part_whose_points_are_its_summary_records():
    forwarder = Forwarder("127.0.0.1:1")
    parts = forwarder.parts(host_interval())
    expect(sum(p.points for p in parts)) == SERIES
    for part in parts:
        expect(part.points) == len(protocol.decode_plain(part.payload.frame).records) == records_in(part.payload.frame)
    expect([p.payload.number for p in parts]) == list(range(1, len(parts) + 1))


def test_an_interval_with_nothing_to_merge_is_one_empty_part_that_still_counts_as_forwarded():
    forwarder = Forwarder("127.0.0.1:1")  # never connects: nothing to send
    [part] = forwarder.parts(Interval(0.0, 10.0, []))
    expect(part.points) == 0
    forwarder.send(part)
    expect(forwarder.counts["forwarded_intervals"]) == 1
    expect(forwarder.counts["forwarded_messages"]) == 0
