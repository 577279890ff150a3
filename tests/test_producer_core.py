"""One producer core: the client, the listener and the forwarder share one framing rule, one set of
series rules and one ZeroMQ transport; the client's clock and random source are injectable."""

from __future__ import annotations

import logging
import socket
import threading

import msgpack
import pytest
import zmq
from expecter import expect

from support.daemons import wait_until
from zibrato import Zibrato, framing, protocol, series_rules
from zibrato.aggregation import Aggregator, LevelAggregators
from zibrato.destination import Interval
from zibrato.forward import interval_frames
from zibrato.listen.publisher import Publisher as ListenPublisher
from zibrato.listen.series import Series as ListenSeries
from zibrato.listen.servers import ListenConfig, Listener
from zibrato.sender import Publisher, Tally
from zibrato.testing import MemoryTransport, MemoryZibrato
from zibrato.transport import ZmqTransport


def values_per_frame(frames):
    return [sum(len(record[2]) for record in msgpack.unpackb(frame.partition(b"\x00")[2])[2]) for frame in frames]


# --- the framing rule ------------------------------------------------------------------------------


def test_a_message_carries_at_most_batch_values_and_a_long_record_is_cut_in_order():
    records = [("c", "a", list(range(7)), None, ()), ("c", "b", [7, 8], None, ()), ("c", "c", [9], None, ())]

    chunks = list(framing.messages(records, 4))

    expect([size for _, size in chunks]) == [4, 3, 3]  # a record's part is never spread over two messages
    expect([[(r[1], list(r[2])) for r in chunk] for chunk, _ in chunks]) == [
        [("a", [0, 1, 2, 3])],
        [("a", [4, 5, 6])],
        [("b", [7, 8]), ("c", [9])],
    ]


def test_the_clients_messages_carry_each_series_record_as_record_of_makes_it_at_most_batch_values_each():
    from zibrato import publisher

    plain = [("info", "c", f"s{i}", None, (), None, None) for i in range(5)]
    weighted = ("info", "t", "w", "web", ("a:1",), 0.5, None)
    with_unit = ("info", "h", "u", None, (), None, "bytes")
    other_level = ("debug", "c", "d", None, (), None, None)
    grouped = {plain[0]: [1, 2, 3], weighted: [0.1, 0.2], plain[1]: [4], with_unit: [5, 6, 7, 8, 9], other_level: [1]}
    grouped.update({series: [9] for series in plain[2:]})

    out = list(publisher.messages(grouped, 4))

    expect(all(size <= 4 and size == sum(len(r[2]) for r in records) for _, records, size in out)) == True
    records = [(level, record) for level, chunk, _ in out for record in chunk]
    # each record shaped as record_of makes it (a long one cut in two: the same fields twice)
    expect({(level, *r[:2], *r[3:]) for level, r in records}) == {
        (s[0], *publisher.record_of(s, [])[:2], *publisher.record_of(s, [])[3:]) for s in grouped
    }
    sent: dict = {}
    for level, record in records:
        sent.setdefault((level, record[1]), []).extend(record[2])
    expect(sent) == {(series[0], series[2]): values for series, values in grouped.items()}


def test_a_message_over_the_size_limit_is_halved_until_it_fits_and_a_lone_value_over_it_is_dropped():
    fits = ("c", "fits", [1.5] * 300, None, ())
    huge = ("s", "huge", ["m" * 3000], None, ())
    dropped = []

    frames = framing.fit("info", 10.0, [fits, huge], 2048, on_drop=lambda *why: dropped.append(why))

    expect(all(len(frame) <= 2048 for frame, _ in frames)) == True
    expect(sum(count for _, count in frames)) == 300
    expect(sum(values_per_frame([frame for frame, _ in frames]))) == 300
    expect([(record[1], limit) for record, _size, limit in dropped]) == [("huge", 2048)]
    expect(dropped[0][1] > 2048) == True


def test_the_client_the_listener_and_the_forwarder_frame_by_the_same_rule(zmq_context):
    """The same series, batch and limit: the frames framing.frames makes, from the client and the listener."""
    values = [v + 0.5 for v in range(2500)]
    expected = [count for _, count in framing.frames("info", 5.0, [("t", "x", values, None, ())], 1000, 8192)]
    expect(sum(expected)) == 2500
    expect(len(expected) > 3) == True  # cut at 1000 values, then halved to fit 8 KiB

    client_frames = []

    class Keep(MemoryTransport):
        def send(self, frame, last=True):
            client_frames.append(frame)
            return True

    Publisher(Keep(), Tally(), 1000, 8192).publish([(("info", "t", "x", None, (), None, None), v) for v in values])

    pull = zmq_context.socket(zmq.PULL)
    port = pull.bind_to_random_port("tcp://127.0.0.1")
    listen = ListenPublisher(zmq_context, f"tcp://127.0.0.1:{port}", batch=1000, max_message_size=8192)
    listen.publish({ListenSeries("info", "t", "x", None, ()): list(values)})
    listen_frames = [pull.recv() for _ in range(listen.figures["messages_sent"])]
    listen.close(linger=0)

    expect(values_per_frame(client_frames)) == expected
    expect(values_per_frame(listen_frames)) == expected

    levels = LevelAggregators(lambda: Aggregator(percentiles=(), include_interval=True))
    levels.level("info").add_records([("c", f"c{i}", (i,), None, ()) for i in range(25)])
    interval = Interval(0.0, 10.0, levels.flush(10.0, 10.0))
    forwarded, count = interval_frames(interval, 10.5, 8192, records_per_message=10)
    expect(count) == 25
    sizes = [len(protocol.decode(frame, now=10.5).records) for frame in forwarded]
    expect(sum(sizes)) == 25
    expect(max(sizes) <= 10) == True  # a summary record is one value: the batch is records_per_message


HUGE_TAGS = tuple(f"k{i:02d}:" + "v" * 250 for i in range(64))  # valid tags, 16 KiB in all


def test_each_producer_drops_a_lone_value_over_the_limit_says_so_and_sends_the_rest(zmq_context, caplog):
    caplog.set_level(logging.ERROR)
    memory = MemoryTransport()
    z = Zibrato(transport=memory, max_message_size=4096)
    z.count("info", "huge", tags=HUGE_TAGS)
    z.count("info", "small")
    expect([m.name for m in memory.measurements]) == ["small"]
    expect(z.dropped) == 1

    pull = zmq_context.socket(zmq.PULL)
    port = pull.bind_to_random_port("tcp://127.0.0.1")
    listen = ListenPublisher(zmq_context, f"tcp://127.0.0.1:{port}", max_message_size=4096)
    listen.publish(
        {ListenSeries("info", "c", "huge", None, HUGE_TAGS): [1], ListenSeries("info", "c", "ok", None, ()): [1]}
    )
    expect((listen.figures["values_dropped"], listen.figures["values_sent"])) == (1, 1)
    listen.close(linger=0)

    levels = LevelAggregators(lambda: Aggregator(percentiles=(), include_interval=True))
    levels.level("info").add_records([("c", "huge", (1,), None, HUGE_TAGS), ("c", "ok", (1,), None, ())])
    forwarded, _ = interval_frames(Interval(0.0, 10.0, levels.flush(10.0, 10.0)), 10.5, 4096)
    expect([r[1] for frame in forwarded for r in protocol.decode(frame, now=10.5).records]) == ["ok"]
    logged = [r.getMessage() for r in caplog.records]
    expect(any("one measurement of 'huge'" in line for line in logged)) == True
    expect(any("the summary of 'huge'" in line and "not forwarded" in line for line in logged)) == True


# --- the listener's queue is bounded in bytes, like the client's --------------------------------


@pytest.fixture
def silent_broker():
    """A TCP port that accepts connections into its backlog and never reads: a broker that is not reading."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.bind(("127.0.0.1", 0))
    sock.listen(16)
    yield sock.getsockname()[1]
    sock.close()


def test_the_listeners_queue_for_a_broker_that_is_not_reading_is_bounded_in_bytes_like_the_clients(silent_broker):
    bound = 256 * 1024
    listener = Listener(
        ListenConfig(
            broker=f"127.0.0.1:{silent_broker}",
            statsd="127.0.0.1:0",
            flush_interval=0.02,
            hwm=1_000_000,  # the bound in messages out of the way: the bytes decide
            max_buffer_bytes=bound,
            self_metrics=False,
        )
    )
    stop = threading.Event()
    thread = threading.Thread(target=listener.run, args=(stop,), name="test-listener", daemon=True)
    thread.start()
    transport = ZmqTransport(f"tcp://127.0.0.1:{silent_broker}", hwm=1_000_000, linger=0.0, max_bytes=bound)
    client = Zibrato(transport=transport, max_message_size=64 * 1024)  # the client's own transport, seen from here
    udp = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    try:
        wait_until(lambda: "statsd" in listener.addresses, message="the listener to bind")
        host, port = listener.addresses["statsd"].rsplit(":", 1)
        sent = [0]

        def keep_sending():
            start = sent[0]
            lines = [b"bounded.series.number.%d:1|c" % n for n in range(start, start + 40)]
            udp.sendto(b"\n".join(lines), (host, int(port)))
            for n in range(start, start + 40):
                client.count("info", f"bounded.series.number.{n}")
            sent[0] += 40
            assert listener.publisher is not None
            return listener.publisher.figures["values_dropped"] > 0 and client.dropped > 0

        wait_until(keep_sending, timeout=60, interval=0.001, message="both to reach their byte bound")
        client.flush(0.5)

        held = listener.publisher.held_bytes
        expect(0 < held <= bound) == True
        expect(listener.publisher.figures["values_sent"] > 0) == True  # it queued up to the bound, then dropped
        expect(0 < transport.held_bytes <= bound) == True
    finally:
        client.close(timeout=1)
        udp.close()
        stop.set()
        thread.join(15)
    expect(thread.is_alive()) == False


# --- the client's injectable clock and random source ---------------------------------------------


def test_the_clock_given_to_the_client_stamps_every_message(broker_pull, make_client):
    z = make_client(clock=lambda: 1_700_000_000.25)
    z.count("info", "stamped")
    z.timing("info", "stamped.timer", 0.5, rate=0.5)

    broker_pull.settle(z)

    expect({batch.time for batch in broker_pull.batches}) == {1_700_000_000.25}


def test_the_random_source_given_to_the_client_decides_what_sampling_keeps_in_calls_and_instruments():
    draws = iter([0.05, 0.05, 0.5, 0.5] * 5)  # the first two loops' draws are below the rate, the next two not
    z = MemoryZibrato(random=lambda: next(draws))

    @z.count_me("info", "decorated", rate=0.1)
    def call():
        pass

    for _ in range(4):
        call()
        z.count("info", "direct", rate=0.1)

    expect([m.name for m in z.measurements]) == ["decorated", "direct"] * 2
    expect({m.weight for m in z.measurements}) == {10.0}


# --- one copy of the series rules -------------------------------------------------------------


@pytest.mark.parametrize(
    "call, message",
    [
        (lambda: series_rules.check_rate(0), "rate must be a number in (0, 1], got 0"),
        (lambda: series_rules.check_unit("bad unit"), "unit must be 1-64 characters"),
        (lambda: series_rules.number(float("nan")), "value must be finite, got nan"),
        (lambda: series_rules.member(1 << 70), "set member must fit in 64 bits"),
        (lambda: series_rules.normalise_tags([":x"]), "its key must not be empty"),
        (lambda: series_rules.check_level("no spaces"), "level must be 1-64 characters"),
    ],
)
def test_the_client_raises_the_series_rules_messages(call, message):
    z = MemoryZibrato()
    with pytest.raises(ValueError, match=message.replace("(", r"\(").replace(")", r"\)").replace(".", r"\.")):
        call()
    client_calls = {
        "rate": lambda: z.count("info", "x", rate=0),
        "unit": lambda: z.histogram("info", "x", 1, unit="bad unit"),
        "value": lambda: z.gauge("info", "x", float("nan")),
        "set member": lambda: z.set("info", "x", 1 << 70),
        "its key": lambda: z.count("info", "x", tags=[":x"]),
        "level": lambda: z.count("no spaces", "x"),
    }
    (client_call,) = [call for key, call in client_calls.items() if key in message]
    with pytest.raises(ValueError, match=message.replace("(", r"\(").replace(")", r"\)").replace(".", r"\.")):
        client_call()


def test_otel_attributes_are_cleaned_by_the_same_tag_rules_the_client_checks():
    from zibrato.otel.series import attribute_tags

    (tag,) = attribute_tags({"agent": "line\nbreak" + "x" * 400})

    expect(tag) == series_rules.clean_tag("agent:line\nbreak" + "x" * 400)
    expect(protocol.tag_problem(tag)) == None
    expect(len(tag)) == protocol.MAX_TAG_LENGTH
