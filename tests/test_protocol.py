"""Wire protocol v1: round trips, exact level matching over real PUB/SUB, and what decode rejects."""
from __future__ import annotations

import time

import msgpack
import pytest
import zmq
from expecter import expect

from zibrato import protocol
from zibrato.protocol import Batch, ProtocolError, Record, decode, encode, topic


def raw(payload, level: str = "info") -> bytes:
    """A frame with a hand-made msgpack payload (what a buggy or hostile sender could send)."""
    return topic(level) + msgpack.packb(payload, use_bin_type=True)


def good_record(**changes) -> list:
    record = {"type": "c", "name": "hits", "values": [1], "source": None, "tags": []}
    record.update(changes)
    return [record["type"], record["name"], record["values"], record["source"], record["tags"]]


# --- round trip -------------------------------------------------------------

def test_encode_decode_round_trip():
    records = [
        ("c", "signups", [1, 2, 3], "web-1", ["env:prod", "role:api"]),
        ("g", "queue.depth", [0], None, []),
        ("t", "db.query", [0.25, 1e-06, 3.5], "db", ["table:users"]),
    ]

    batch = decode(encode("info", 1700000000.25, records))

    expect(batch) == Batch("info", 1700000000.25, [
        Record("c", "signups", (1, 2, 3), "web-1", ("env:prod", "role:api")),
        Record("g", "queue.depth", (0,), None, ()),
        Record("t", "db.query", (0.25, 1e-06, 3.5), "db", ("table:users",)),
    ])


def test_round_trip_keeps_unicode_names_and_levels():
    batch = decode(encode("niveau-é", 1.0, [("c", "заказ.создан", [1], "сервер", ["ключ:значение"])]))

    expect(batch.level) == "niveau-é"
    expect(batch.records) == [Record("c", "заказ.создан", (1,), "сервер", ("ключ:значение",))]


def test_round_trip_accepts_huge_finite_values():
    # Each value is finite even though their sum overflows to inf.
    batch = decode(encode("info", 1.0, [("g", "big", [1e308, 1e308, -1e308], None, [])]))

    expect(batch.records[0].values) == (1e308, 1e308, -1e308)


def test_topic_is_the_level_and_a_terminator_leading_every_message():
    expect(topic("info")) == b"info\x00"
    expect(encode("info", 1.0, [("c", "x", [1], None, [])]).startswith(b"info\x00")) == True
    expect(encode("information", 1.0, [("c", "x", [1], None, [])]).startswith(topic("info"))) == False


# --- exact level matching through real PUB/SUB ---------------------------------

@pytest.fixture
def pub_sub(zmq_context):
    pub = zmq_context.socket(zmq.PUB)
    pub.linger = 0
    port = pub.bind_to_random_port("tcp://127.0.0.1")
    sub = zmq_context.socket(zmq.SUB)
    sub.linger = 0
    sub.setsockopt(zmq.SUBSCRIBE, topic("info"))
    sub.connect(f"tcp://127.0.0.1:{port}")
    yield pub, sub
    sub.close(linger=0)
    pub.close(linger=0)


def message(level: str, name: str) -> bytes:
    return encode(level, time.time(), [("c", name, [1], None, [])])


def test_subscriber_to_a_level_receives_exactly_that_level(pub_sub):
    pub, sub = pub_sub
    received: list[Batch] = []

    # Slow joiner: publish until the subscription is live, i.e. the first info message arrives.
    deadline = time.monotonic() + 5
    while not received:
        assert time.monotonic() < deadline, "the subscription never became live"
        pub.send(message("info", "probe"))
        if sub.poll(20, zmq.POLLIN):
            received.append(decode(sub.recv()))

    for level in ("information", "info2", "inf", "INFO", "info", "info.db", "infoinfo"):
        pub.send(message(level, f"from.{level}"))
    pub.send(message("info", "sentinel"))

    # One PUB to one SUB keeps order: once the sentinel is in, whatever matched before it is too.
    deadline = time.monotonic() + 5
    while not any(r.name == "sentinel" for b in received for r in b.records):
        assert time.monotonic() < deadline, "the sentinel never arrived"
        if sub.poll(100, zmq.POLLIN):
            received.append(decode(sub.recv()))

    expect({b.level for b in received}) == {"info"}
    names = [r.name for b in received for r in b.records if r.name != "probe"]
    expect(names) == ["from.info", "sentinel"]


# --- what decode rejects ----------------------------------------------------------

REJECTED = {
    "no terminator": (b"info" + msgpack.packb([1, 2, []]), "terminator"),  # no NUL byte at all
    "empty frame": (b"", "terminator"),
    "garbage msgpack": (topic("info") + b"\xc1\xc1\xc1", "undecodable"),
    "truncated msgpack": (topic("info") + msgpack.packb([1, 1.0, [good_record()]])[:-3], "undecodable"),
    "trailing bytes": (raw([1, 1.0, []]) + b"\x01", "undecodable"),
    "level not utf-8": (b"\xff\xfe\x00" + msgpack.packb([1, 1.0, []]), "undecodable"),
    "payload a map": (raw({"version": 1}), "payload"),
    "payload too short": (raw([1, 1.0]), "payload"),
    "wrong version": (raw([2, 1.0, [good_record()]]), "version"),
    "version missing": (raw([None, 1.0, [good_record()]]), "version"),
    "time not a number": (raw([1, "now", [good_record()]]), "time"),
    "time nan": (raw([1, float("nan"), [good_record()]]), "time"),
    "records not an array": (raw([1, 1.0, {"c": 1}]), "records"),
    "record too short": (raw([1, 1.0, [["c", "hits", [1]]]]), "record"),
    "bad type code": (raw([1, 1.0, [good_record(type="x")]]), "type"),
    "type code a map": (raw([1, 1.0, [good_record(type={"c": 1})]]), "type"),
    "type code an array": (raw([1, 1.0, [good_record(type=["c"])]]), "type"),
    "version true": (raw([True, 1.0, [good_record()]]), "version"),
    "version a float": (raw([1.0, 1.0, [good_record()]]), "version"),
    "type code ms": (raw([1, 1.0, [good_record(type="ms")]]), "type"),
    "empty values": (raw([1, 1.0, [good_record(values=[])]]), "values"),
    "values not an array": (raw([1, 1.0, [good_record(values=1)]]), "values"),
    "nan value": (raw([1, 1.0, [good_record(values=[1, float("nan")])]]), "finite"),
    "inf value": (raw([1, 1.0, [good_record(values=[float("inf")])]]), "finite"),
    "-inf value": (raw([1, 1.0, [good_record(values=[float("-inf")])]]), "finite"),
    "inf and -inf": (raw([1, 1.0, [good_record(values=[float("inf"), float("-inf")])]]), "finite"),
    "string value": (raw([1, 1.0, [good_record(values=["1"])]]), "numbers"),
    "nil value": (raw([1, 1.0, [good_record(values=[None])]]), "numbers"),
    "non-string name": (raw([1, 1.0, [good_record(name=5)]]), "name"),
    "binary name": (raw([1, 1.0, [good_record(name=b"hits")]]), "name"),
    "empty name": (raw([1, 1.0, [good_record(name="")]]), "name"),
    "non-string source": (raw([1, 1.0, [good_record(source=7)]]), "source"),
    "tags a string": (raw([1, 1.0, [good_record(tags="env:prod")]]), "tags"),
    "tags a map": (raw([1, 1.0, [good_record(tags={"env": "prod"})]]), "tags"),
    "tags of numbers": (raw([1, 1.0, [good_record(tags=[1])]]), "tags"),
    "tags nil": (raw([1, 1.0, [good_record(tags=None)]]), "tags"),
}


@pytest.mark.parametrize("decoder", [decode, protocol.decode_plain], ids=["decode", "decode_plain"])
@pytest.mark.parametrize("frame, reason", REJECTED.values(), ids=REJECTED.keys())
def test_decode_rejects_invalid_messages_with_a_reason(frame, reason, decoder):
    with pytest.raises(ProtocolError) as raised:
        decoder(frame)

    expect(str(raised.value)).contains(reason)
    expect(isinstance(raised.value, ValueError)) == True  # callers may catch ValueError


def test_decode_rejects_a_bad_record_among_good_ones():
    with pytest.raises(ProtocolError, match="type"):
        decode(raw([1, 1.0, [good_record(), good_record(type="s"), good_record()]]))


def test_decode_accepts_the_hand_made_equivalent_of_a_good_message():
    expect(decode(raw([protocol.VERSION, 5, [good_record(values=[0, 2.5])]]))) == Batch(
        "info", 5.0, [Record("c", "hits", (0, 2.5), None, ())])


def test_decode_plain_gives_the_same_records_as_plain_tuples():
    frame = raw([1, 2.5, [good_record(), good_record(type="t", values=[0.5, 1e-06], source="db",
                                                     tags=["a:1", "b:2"])]])

    named, plain = decode(frame), protocol.decode_plain(frame)

    expect((plain.level, plain.time)) == (named.level, named.time)
    expect(list(plain.records)) == named.records  # a named tuple equals the plain tuple of its fields
    expect({type(record) for record in named.records}) == {Record}
    expect({type(record) for record in plain.records}) == {tuple}
