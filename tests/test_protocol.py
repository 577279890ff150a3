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

    expect(batch) == Batch(
        "info",
        1700000000.25,
        [
            Record("c", "signups", (1, 2, 3), "web-1", ("env:prod", "role:api")),
            Record("g", "queue.depth", (0,), None, ()),
            Record("t", "db.query", (0.25, 1e-06, 3.5), "db", ("table:users",)),
        ],
    )


def test_round_trip_keeps_unicode_names_sources_and_tags():
    batch = decode(encode("niveau-e", 1.0, [("c", "заказ.создан", [1], "сервер", ["ключ:значение"])]))

    expect(batch.level) == "niveau-e"
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
    # the client's rules for names, sources, tags and levels (protocol.name_problem & co)
    "newline in name": (raw([1, 1.0, [good_record(name="a\nb")]]), "control characters"),
    "NUL in name": (raw([1, 1.0, [good_record(name="a\x00b")]]), "control characters"),
    "name of 256 characters": (raw([1, 1.0, [good_record(name="n" * 256)]]), "longer than 255"),
    "100k-character name": (raw([1, 1.0, [good_record(name="n" * 100_000)]]), "longer than 255"),
    "newline in source": (raw([1, 1.0, [good_record(source="web\n1")]]), "source contains control"),
    "empty source": (raw([1, 1.0, [good_record(source="")]]), "source must be a non-empty"),
    "source of 256": (raw([1, 1.0, [good_record(source="s" * 256)]]), "source is longer"),
    "empty tag": (raw([1, 1.0, [good_record(tags=[""])]]), "bad tag"),
    "tag with a tab": (raw([1, 1.0, [good_record(tags=["a:\t"])]]), "bad tag"),
    "tag of 256": (raw([1, 1.0, [good_record(tags=["t" * 256])]]), "bad tag"),
    "65 tags": (raw([1, 1.0, [good_record(tags=[f"k{i}:v" for i in range(65)])]]), "at most 64"),
    "tags a map inside": (raw([1, 1.0, [good_record(tags=[{"a": 1}])]]), "tags"),
    "empty level": (raw([1, 1.0, [good_record()]], level=""), "level"),
    "level with a comma": (raw([1, 1.0, [good_record()]], level="info,warn"), "level"),
    "level with a space": (raw([1, 1.0, [good_record()]], level="in fo"), "level"),
    "non-ascii level": (raw([1, 1.0, [good_record()]], level="niveau-é"), "level"),
    "level of 65": (raw([1, 1.0, [good_record()]], level="l" * 65), "level"),
    # protocol 1.1: weights, units, sets
    "record of 8": (raw([1, 1.0, [good_record() + [1, None, "x"]]]), "record"),
    "weight zero": (raw([1, 1.0, [good_record() + [0]]]), "weight"),
    "weight negative": (raw([1, 1.0, [good_record() + [-2]]]), "weight"),
    "weight nan": (raw([1, 1.0, [good_record() + [float("nan")]]]), "weight"),
    "weight inf": (raw([1, 1.0, [good_record() + [float("inf")]]]), "weight"),
    "weight a string": (raw([1, 1.0, [good_record() + ["10"]]]), "weight"),
    "weight true": (raw([1, 1.0, [good_record() + [True]]]), "weight"),
    "unit empty": (raw([1, 1.0, [good_record(type="h") + [None, ""]]]), "unit"),
    "unit with a space": (raw([1, 1.0, [good_record(type="h") + [None, "k B"]]]), "unit"),
    "unit of 65": (raw([1, 1.0, [good_record(type="h") + [None, "u" * 65]]]), "unit"),
    "unit a number": (raw([1, 1.0, [good_record(type="h") + [None, 5]]]), "unit"),
    "unit on a timer": (raw([1, 1.0, [good_record(type="t") + [None, "ms"]]]), "only histograms"),
    "unit on a counter": (raw([1, 1.0, [good_record() + [2, "bytes"]]]), "only histograms"),
    "histogram nan": (raw([1, 1.0, [good_record(type="h", values=[float("nan")])]]), "finite"),
    "set member a float": (raw([1, 1.0, [good_record(type="s", values=[1.5])]]), "members"),
    "set member empty": (raw([1, 1.0, [good_record(type="s", values=[""])]]), "members"),
    "set member nil": (raw([1, 1.0, [good_record(type="s", values=[None])]]), "members"),
    "set member true": (raw([1, 1.0, [good_record(type="s", values=[True])]]), "members"),
    "set member of 256": (raw([1, 1.0, [good_record(type="s", values=["m" * 256])]]), "members"),
    "set member an array": (raw([1, 1.0, [good_record(type="s", values=[["a"]])]]), "members"),
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
        decode(raw([1, 1.0, [good_record(), good_record(type="x"), good_record()]]))


def test_decode_accepts_the_hand_made_equivalent_of_a_good_message():
    expect(decode(raw([protocol.VERSION, 5, [good_record(values=[0, 2.5])]]))) == Batch(
        "info", 5.0, [Record("c", "hits", (0, 2.5), None, ())]
    )


def test_decode_plain_gives_the_same_records_as_plain_tuples():
    frame = raw([1, 2.5, [good_record(), good_record(type="t", values=[0.5, 1e-06], source="db", tags=["a:1", "b:2"])]])

    named, plain = decode(frame), protocol.decode_plain(frame)

    expect((plain.level, plain.time)) == (named.level, named.time)
    # a 1.0 record: the plain tuple is the named one's first five fields (weight 1 and unit None follow)
    expect([tuple(r[:5]) for r in named.records]) == list(plain.records)
    expect({(r.weight, r.unit) for r in named.records}) == {(1, None)}
    expect({type(record) for record in named.records}) == {Record}
    expect({type(record) for record in plain.records}) == {tuple}


# --- protocol 1.1 -------------------------------------------------------------------


def test_a_1_0_record_decodes_with_weight_1_and_no_unit():
    batch = decode(raw([1, 2.0, [good_record(type="t", values=[0.5])]]))

    expect(batch.records) == [Record("t", "hits", (0.5,), None, (), 1, None)]
    expect((batch.records[0].weight, batch.records[0].unit)) == (1, None)


def test_1_1_records_decode_with_weight_unit_histograms_and_sets():
    records = [
        ("c", "cache.miss", [1, 1], None, [], 10),
        ("h", "response.size", [5120, 880, -3.5], "api", [], None, "bytes"),
        ("t", "db.query", [0.25], None, [], 2.5, None),
        ("s", "users.active", ["u-17", "u-42", 99], None, ["env:prod"]),
        ("s", "users.active", ["u-17"], None, [], 4),
    ]

    batch = decode(encode("info", 1.0, records))

    expect(batch.records) == [
        Record("c", "cache.miss", (1, 1), None, (), 10, None),
        Record("h", "response.size", (5120, 880, -3.5), "api", (), 1, "bytes"),
        Record("t", "db.query", (0.25,), None, (), 2.5, None),
        Record("s", "users.active", ("u-17", "u-42", 99), None, ("env:prod",), 1, None),
        Record("s", "users.active", ("u-17",), None, (), 4, None),
    ]
    plain = protocol.decode_plain(encode("info", 1.0, records))
    expect([len(r) for r in plain.records]) == [6, 7, 7, 5, 6]  # as sent: the aggregator reads them


def test_the_decoder_rejects_exactly_what_the_client_rules_reject():
    """One definition: name_problem's message is the decoder's reason."""
    for bad in ("", "x" * 256, "a\x7fb", "line\nforged"):
        problem = protocol.name_problem(bad)
        expect(problem is None) == False
        with pytest.raises(ProtocolError) as raised:
            decode(raw([1, 1.0, [good_record(name=bad)]]))
        expect(str(raised.value)) == problem
    for good in ("x" * 255, "db.query", "заказ"):
        expect(protocol.name_problem(good)) == None
        expect(decode(raw([1, 1.0, [good_record(name=good)]])).records[0].name) == good


def test_remembered_names_are_bounded_and_still_validated(monkeypatch):
    monkeypatch.setattr(protocol, "MAX_REMEMBERED", 10)
    for i in range(50):
        decode(raw([1, 1.0, [good_record(name=f"name.{i}", source=f"s{i}", tags=[f"k:{i}"])]]))
    expect(len(protocol._known_names) <= 10) == True
    expect(len(protocol._known_tags) <= 10) == True
    with pytest.raises(ProtocolError, match="control"):  # a bad name is never remembered
        decode(raw([1, 1.0, [good_record(name="bad\n")]]))
    with pytest.raises(ProtocolError, match="control"):
        decode(raw([1, 1.0, [good_record(name="bad\n")]]))


def test_a_tag_is_key_value_or_a_bare_key_but_never_without_a_key():
    """Issue 22, item 10: PROTOCOL.md's rule, the same at the client and the decoder."""
    assert protocol.tag_problem("env:prod") is None
    assert protocol.tag_problem("canary") is None  # DogStatsD's bare tag: key:true downstream
    assert "key must not be empty" in protocol.tag_problem(":prod")
    frame = protocol.encode("info", 1.0, [("c", "x", (1,), None, (":prod",))])
    with pytest.raises(protocol.ProtocolError, match="key must not be empty"):
        protocol.decode_plain(frame)
