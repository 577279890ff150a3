"""The typed interval contract (zibrato.summary) says what the aggregator really builds.

A TypedDict is not checked at run time, so these tests flush every kind of
summary the aggregator makes (exact and sketched, idle, with values, merged
from a forwarder, per level) and compare its keys with the declared types:
a key the aggregator adds without declaring it, or a declared required key it
leaves out, fails here.
"""

from __future__ import annotations

from expecter import expect

from zibrato import aggregation, protocol, summary
from zibrato.aggregation import Aggregator, LevelAggregators
from zibrato.sketch import SetSketch, Sketch
from zibrato.summary import (
    KINDS,
    STATSD_TYPES,
    TYPE_CODES,
    TYPE_NAMES,
    CounterSummary,
    GaugeSummary,
    HistogramSummary,
    SetSummary,
    SketchDict,
    Summary,
    TimerSummary,
    percentile_values,
)

T = 1_700_000_000.0
BY_KIND = {
    "counter": CounterSummary,
    "gauge": GaugeSummary,
    "timer": TimerSummary,
    "histogram": HistogramSummary,
    "set": SetSummary,
}


def declared(kind_type: type) -> tuple[frozenset[str], frozenset[str]]:
    return kind_type.__required_keys__, kind_type.__optional_keys__


def check_against_its_kind(flushed: dict) -> None:
    required, optional = declared(BY_KIND[flushed["type"]])
    keys = set(flushed) - {key for key, _ in percentile_values(flushed)}
    expect(required - keys) == set()  # every required key is there
    expect(keys - required - optional) == set()  # and nothing undeclared
    everything = Summary.__required_keys__ | Summary.__optional_keys__
    expect(keys - everything) == set()  # the readers' view names it too


def every_kind(agg: Aggregator) -> list:
    agg.add("c", "hits", None, (), (1, 2))
    agg.add("g", "depth", "web1", ("az:1",), (5, -3))
    agg.add("t", "exact", None, (), (0.1, 0.2, 0.3))
    agg.add("t", "sketched", None, (), tuple(float(i) for i in range(1, 50)), weight=2.0)
    agg.add("h", "size", None, (), (10, 20), unit="bytes")
    agg.add("h", "plain", None, (), (1,))
    agg.add("s", "users", None, (), ("a", "b", 3))
    return agg.flush(T, 10.0)


def test_every_kind_the_aggregator_flushes_has_exactly_its_declared_keys():
    flushed = every_kind(Aggregator(percentiles=(50, 99.9), expire=60, include_interval=True, keep_values=True))
    expect(sorted({s["type"] for s in flushed})) == sorted(KINDS)
    for s in flushed:
        check_against_its_kind(s)


def test_idle_series_kept_by_expiry_have_their_kinds_declared_keys():
    agg = Aggregator(expire=60)
    every_kind(agg)
    idle = agg.flush(T + 10, 10.0)
    expect(len(idle)) == 7
    for s in idle:
        check_against_its_kind(s)


def test_gauges_merged_from_a_forwarder_declare_last_time_and_levels_declare_level():
    agg = Aggregator()
    gauge = {
        "kind": "g",
        "start": T - 10,
        "end": T,
        "last": 4.0,
        "time": T - 1,
        "count": 2,
        "min": 1,
        "max": 4,
        "sum": 5,
    }
    agg.add_summary("depth", None, (), gauge)
    [merged] = agg.flush(T, 10.0)
    expect(merged["last_time"]) == T - 1
    check_against_its_kind(merged)
    levels = LevelAggregators(Aggregator)
    levels.level("info").add("c", "hits", None, (), (1,))
    [leveled] = levels.flush(T, 10.0)
    expect(leveled["level"]) == "info"
    check_against_its_kind(leveled)


def test_percentile_values_gives_the_configured_percentiles_in_order():
    agg = Aggregator(percentiles=(99.9, 50, 90))
    agg.add("t", "t", None, (), tuple(range(1, 1001)))
    [flushed] = agg.flush(T, 10.0)
    expect(list(percentile_values(flushed))) == [("p99_9", 999), ("p50", 500), ("p90", 900)]


def test_the_sketch_dict_forms_have_their_declared_keys():
    sketch = Sketch(max_exact=0)
    sketch.add_many([0.5, 2.0, -1.0, 0.0])
    expect(set(sketch.to_dict())) == set(SketchDict.__required_keys__)
    required, optional = declared(summary.SetSketchDict)
    for members in (["a"], [str(i) for i in range(2000)]):
        sets = SetSketch()
        sets.update(members)
        keys = set(sets.to_dict())
        expect(required <= keys <= required | optional) == True


def test_the_wire_codes_are_declared_once():
    # protocol and aggregation re-export the one table rather than spelling their own
    expect(protocol.TYPE_NAMES is TYPE_NAMES and aggregation.TYPE_NAMES is TYPE_NAMES) == True
    expect((protocol.COUNTER, protocol.GAUGE, protocol.TIMER, protocol.HISTOGRAM, protocol.SET)) == tuple(TYPE_NAMES)
    expect({TYPE_CODES[name] for name in KINDS}) == set(TYPE_NAMES)
    expect(set(STATSD_TYPES.values())) == set(TYPE_NAMES)
