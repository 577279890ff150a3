"""The statsd/DogStatsD parser alone: bytes in, series and values out, no sockets."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from support.lanes import examples
from zibrato import protocol
from zibrato.listen.series import Rejects, Series
from zibrato.listen.statsd import REASONS, StatsdParser

NOW = 1_800_000_000.0


def parse(data: bytes, **options):
    parser = StatsdParser(clock=lambda: NOW, **options)
    pending: dict = {}
    parser.feed(data, pending)
    return parser, pending


def only(pending: dict) -> tuple[Series, list]:
    assert len(pending) == 1, pending
    return next(iter(pending.items()))


def test_each_type_becomes_its_protocol_kind():
    _, pending = parse(b"a:2.5|c\nb:7|g\nc:250|ms\nd:3|h\ne:4|d\nf:u17|s")
    kinds = {series.name: (series.type, values) for series, values in pending.items()}
    assert kinds == {
        "a": ("c", [2.5]),
        "b": ("g", [7.0]),
        "c": ("t", [0.25]),
        "d": ("h", [3.0]),
        "e": ("h", [4.0]),
        "f": ("s", ["u17"]),
    }


def test_optional_fields_in_any_order_and_unknown_ones_ignored():
    one = parse(b"x:1|ms|@0.5|#b:2,a:1|T1800000000|c:container-9")[1]
    other = parse(b"x:1|ms|c:container-9|T1800000000|#a:1,b:2|@0.5|zz")[1]
    assert one == other
    series, values = only(one)
    assert series == Series("statsd", "t", "x", None, ("a:1", "b:2"), 2.0, None, NOW)
    assert values == [0.001]


def test_lines_datagrams_and_crlf():
    parser, pending = parse(b"a:1|c\r\nb:2|c\n\na:3|c\r\n")
    assert {s.name: v for s, v in pending.items()} == {"a": [1.0, 3.0], "b": [2.0]}
    assert parser.lines == 3


def test_counters_keep_floats_and_rate_scales_the_value():
    _, pending = parse(b"hits:0.25|c|@0.1")
    series, values = only(pending)
    assert values == [pytest.approx(2.5)] and series.weight is None


def test_rate_is_a_weight_for_timers_and_histograms_ignored_for_gauges_and_sets():
    _, pending = parse(b"t:10|ms|@0.25\nh:10|h|@0.5\ng:1|g|@0.5\ns:a|s|@0.5")
    weights = {s.name: s.weight for s in pending}
    assert weights == {"t": 4.0, "h": 2.0, "g": None, "s": None}


def test_packed_values_dogstatsd_1_1():
    _, pending = parse(b"t:1:2:3|ms\nc:1:1|c|@0.5")
    values = {s.name: v for s, v in pending.items()}
    assert values == {"t": [0.001, 0.002, 0.003], "c": [2.0, 2.0]}


def test_host_tag_is_the_source_and_level_tag_the_level():
    _, pending = parse(b"x:1|c|#host:web-1,level:payments,region:eu", level="apps")
    series, _ = only(pending)
    assert (series.level, series.source, series.tags) == ("payments", "web-1", ("region:eu",))
    _, pending = parse(b"x:1|c", level="apps")
    assert only(pending)[0].level == "apps"


@pytest.mark.parametrize("sign,expected", [("delta", [10.0, 15.0, 12.0, 3.0]), ("absolute", [10.0, 5.0, -3.0, 3.0])])
def test_signed_gauges_delta_or_absolute(sign, expected):
    _, pending = parse(b"g:10|g\ng:+5|g\ng:-3|g\ng:3|g", gauge_sign=sign)
    assert only(pending)[1] == expected


def test_delta_gauge_keeps_its_value_across_datagrams_and_pystatsd_negative_idiom():
    parser = StatsdParser()
    first: dict = {}
    parser.feed(b"g:0|g\ng:-5|g", first)  # pystatsd's gauge(-5): 0 then -5
    second: dict = {}
    parser.feed(b"g:+2|g\nnew:-4|g", second)  # an unknown gauge starts at 0
    assert [v for v in first.values()] == [[0.0, -5.0]]
    assert {s.name: v for s, v in second.items()} == {"g": [-3.0], "new": [-4.0]}
    assert len(parser.gauges) == 2


@pytest.mark.parametrize(
    "line,reason",
    [
        (b"x:nan|c", "non-finite value"),
        (b"x:inf|g", "non-finite value"),
        (b"x:-Infinity|ms", "non-finite value"),
        (b":1|c", "empty name"),
        (b"|c", "malformed line"),
        (b"x:1|q", "unknown type"),
        (b"x:1|", "unknown type"),
        (b"x:1", "malformed line"),
        (b"x:1|c|@0", "bad rate"),
        (b"x:1|c|@1.5", "bad rate"),
        (b"x:1|c|@abc", "bad rate"),
        (b"x:abc|c", "bad value"),
        (b"x:|c", "bad value"),
        (b"x:1_000|c", "bad value"),
        (b"x:1:y|ms", "bad value"),
        (b"x:-5|ms", "negative timer"),
        (b"x:\x01|s", "bad value"),
        (b"x:1|c|#level:no way", "bad level"),
        (b"x:1|c|#" + b"t" * 300, "bad tag"),
        (b"x:1|c|Tsoon", "bad timestamp"),
        (b"x:1|c|T1000", "timestamp out of window"),
        (b"x:1|c|T1800009999", "timestamp out of window"),
        (b"\xff\xfe:1|c", "invalid utf-8"),
        (b"x" * 9000 + b":1|c", "line too long"),
        (b"\x00x:1|c", "bad name"),
    ],
)
def test_each_reject_is_counted_by_reason_and_the_rest_of_the_datagram_kept(line, reason):
    seen = []
    rejects = Rejects(lambda why, what: seen.append((why, what)))
    parser = StatsdParser(clock=lambda: NOW, rejects=rejects)
    pending: dict = {}
    accepted = parser.feed(b"before:1|c\n" + line + b"\nafter:2|c", pending)
    assert accepted == 2
    assert {s.name: v for s, v in pending.items()} == {"before": [1.0], "after": [2.0]}
    assert dict(rejects.counts) == {reason: 1}
    assert seen[0][0] == reason and reason in REASONS


def test_a_timestamp_within_the_window_is_kept_on_the_series():
    _, pending = parse(b"x:1|c|T1800000100", timestamp_window=600)
    assert only(pending)[0].time == 1_800_000_100.0


def test_cached_lines_give_the_same_series_object():
    parser = StatsdParser()
    pending: dict = {}
    for _ in range(3):
        parser.feed(b"x:1|c|#a:b", pending)
    assert list(pending.values()) == [[1.0, 1.0, 1.0]]


def test_records_are_protocol_1_0_unless_they_need_1_1():
    _, pending = parse(b"c:1|c\nt:1|ms\nw:1|ms|@0.5\nh:1|h\ns:a|s")
    records = {s.name: (s.record(v), s.needs_1_1) for s, v in pending.items()}
    assert records["c"] == (["c", "c", [1.0], None, []], False)
    assert records["t"] == (["t", "t", [0.001], None, []], False)
    assert records["w"] == (["t", "w", [0.001], None, [], 2.0], True)
    assert records["h"][1] and records["s"][1]
    frame = protocol.encode("statsd", NOW, [records["c"][0], records["t"][0]])
    assert len(protocol.decode(frame).records) == 2  # today's worker reads the 1.0 ones


@settings(max_examples=examples(300), deadline=None)
@given(st.binary(max_size=2000))
def test_never_raises_on_any_bytes(data):
    parser = StatsdParser()
    pending: dict = {}
    accepted = parser.feed(data, pending)
    assert accepted + parser.rejects.total >= 0
    for series, values in pending.items():
        assert not protocol.name_problem(series.name)
        assert values and all(isinstance(v, (float, str)) for v in values)


_names = st.text(
    st.characters(blacklist_characters=":|\n\r@#", blacklist_categories=("Cc", "Cs")), min_size=1, max_size=20
)


@settings(max_examples=examples(200), deadline=None)
@given(
    st.lists(
        st.tuples(
            _names, st.floats(allow_nan=False, allow_infinity=False, width=32), st.sampled_from(["c", "g", "h", "d"])
        ),
        min_size=1,
        max_size=30,
    )
)
def test_every_well_formed_line_is_accepted_with_its_value(lines):
    data = "\n".join(f"{name}:{value!r}|{kind}" for name, value, kind in lines).encode()
    parser, pending = parse(data, gauge_sign="absolute")
    assert parser.rejects.total == 0 and parser.lines == len(lines)
    assert sum(len(v) for v in pending.values()) == len(lines)


_pieces = st.sampled_from(
    [
        "a",
        "b.c",
        ":",
        "|",
        "\n",
        "\r\n",
        "1",
        "-2.5",
        "+3",
        "nan",
        "1e400",
        "c",
        "g",
        "ms",
        "h",
        "d",
        "s",
        "@",
        "@0.5",
        "#",
        "host:",
        "level:",
        "x:y",
        ",",
        "T",
        "T1800000000",
        "\x00",
        "\u00e9",
        " ",
    ]
)


@settings(max_examples=examples(500), deadline=None)
@given(st.lists(_pieces, max_size=60).map("".join), st.sampled_from(["delta", "absolute"]))
def test_statsd_like_text_never_raises_and_everything_kept_is_valid(text, sign):
    parser = StatsdParser(clock=lambda: NOW, gauge_sign=sign)
    pending: dict = {}
    accepted = parser.feed(text.encode("utf-8", "surrogatepass"), pending)
    assert accepted == parser.lines
    for series, values in pending.items():
        assert not protocol.name_problem(series.name) and protocol.is_valid_level(series.level)
        assert series.weight is None or series.weight >= 1
        for value in values:
            assert isinstance(value, str) or value - value == 0
