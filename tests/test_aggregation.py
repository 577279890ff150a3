"""zibrato.aggregation against references from the statistics module and a plain nearest rank."""

from __future__ import annotations

import math
import random
import statistics
import tracemalloc
from fractions import Fraction

import pytest
from expecter import expect

from zibrato.aggregation import Aggregator, nearest_rank, parse_expire, percentile_key
from zibrato.sketch import SetSketch, Sketch, relative_error_of

T = 1_700_000_000.0  # a flush boundary


def reference_rank(values, p):
    """Nearest rank, straightforwardly: the ceil(p/100 * n)-th smallest.

    p/100 is taken as the decimal written (Fraction(str(p))): in floats,
    99.9/100 * 1000 is 999.0000000000001 and ceil would say 1000.
    """
    ordered = sorted(values)
    k = math.ceil(Fraction(str(p)) / 100 * len(ordered))
    return ordered[min(max(k, 1), len(ordered)) - 1]


def add_in_batches(agg, type_, name, values, sizes=(1, 7, 100), source=None, tags=()):
    """Feed values as records of cycling sizes, so that both single-value and batch paths run."""
    i = 0
    for n in _cycle(sizes):
        if i >= len(values):
            break
        agg.add(type_, name, source, tags, tuple(values[i : i + n]))
        i += n


def _cycle(sizes):
    while True:
        yield from sizes


def only(summaries):
    expect(len(summaries)) == 1
    return summaries[0]


def close(a, b, rel=1e-12):
    return math.isclose(a, b, rel_tol=rel, abs_tol=1e-300)


# --- counters and gauges -------------------------------------------------------


def test_counter_sums_values_counts_measurements_and_rates_per_second():
    agg = Aggregator()
    agg.add("c", "hits", None, (), (1,))
    agg.add("c", "hits", None, (), (2, 3))
    agg.add("c", "hits", None, (), (0.5,))
    s = only(agg.flush(T, 10.0))
    expect(s) == {
        "time": T,
        "type": "counter",
        "name": "hits",
        "source": None,
        "tags": [],
        "value": 6.5,
        "count": 4,
        "rate": 0.65,
    }
    expect(isinstance(s["value"], float)) == True


def test_counter_first_record_may_be_a_batch():
    agg = Aggregator()
    agg.add("c", "hits", None, (), (4, 4, -1))
    s = only(agg.flush(T, 2.0))
    expect((s["value"], s["count"], s["rate"])) == (7, 3, 3.5)


def test_gauge_keeps_last_value_and_min_max_sum_count():
    agg = Aggregator()
    agg.add("g", "depth", None, (), (5,))
    agg.add("g", "depth", None, (), (-7, 0))
    agg.add("g", "depth", None, (), (2,))
    s = only(agg.flush(T, 10.0))
    expect(s) == {
        "time": T,
        "type": "gauge",
        "name": "depth",
        "source": None,
        "tags": [],
        "value": 2,
        "count": 4,
        "min": -7,
        "max": 5,
        "sum": 0,
    }


@pytest.mark.parametrize(
    "records, expected",
    [
        # all negative: a max that starts at 0 would be wrong
        ([(-3,), (-1,), (-2,)], {"value": -2, "min": -3, "max": -1, "sum": -6, "count": 3}),
        ([(-3, -1), (-2, -5)], {"value": -5, "min": -5, "max": -1, "sum": -11, "count": 4}),
        # all positive: a min that starts at 0 would be wrong
        ([(3,), (1.5,), (2,)], {"value": 2, "min": 1.5, "max": 3, "sum": 6.5, "count": 3}),
        # zero as the last value, the maximum and the minimum
        ([(-5,), (0,)], {"value": 0, "min": -5, "max": 0, "sum": -5, "count": 2}),
        ([(5,), (0,), (3,)], {"value": 3, "min": 0, "max": 5, "sum": 8, "count": 3}),
        ([(0,), (0,)], {"value": 0, "min": 0, "max": 0, "sum": 0, "count": 2}),
    ],
)
def test_gauge_extremes_with_negative_values_and_zero(records, expected):
    agg = Aggregator()
    for values in records:
        agg.add("g", "g", None, (), values)
    s = only(agg.flush(T, 10.0))
    expect({k: s[k] for k in expected}) == expected


# --- timers --------------------------------------------------------------------


def timer_reference(values, percentiles=(50, 90, 95, 99)):
    ref = {
        "count": len(values),
        "sum": math.fsum(values),
        "sum_squares": math.fsum(x * x for x in values),
        "min": min(values),
        "max": max(values),
        "mean": statistics.fmean(values),
        "median": statistics.median(values),
        "stddev": statistics.pstdev(values),
    }
    ref.update({percentile_key(p): reference_rank(values, p) for p in percentiles})
    return ref


def expect_timer_matches(summary, values, percentiles=(50, 90, 95, 99)):
    ref = timer_reference(values, percentiles)
    for key in ("count", "min", "max", "median") + tuple(percentile_key(p) for p in percentiles):
        assert summary[key] == ref[key], key
    for key in ("sum", "sum_squares", "mean", "stddev"):
        assert close(summary[key], ref[key]), (key, summary[key], ref[key])
    expect(set(summary)) == {"time", "type", "name", "source", "tags", "exact", "sketch", *ref}
    expect(summary["exact"]) == True
    expect(summary["sketch"]["count"]) == len(values)


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_timer_statistics_match_the_statistics_module(seed):
    rng = random.Random(seed)
    values = [rng.lognormvariate(-3, 1) for _ in range(1000 + seed)]  # latencies, odd and even n
    agg = Aggregator()
    add_in_batches(agg, "t", "latency", values)
    s = only(agg.flush(T, 10.0))
    expect((s["type"], s["name"])) == ("timer", "latency")
    expect_timer_matches(s, values)


def test_timer_values_far_from_zero_keep_a_precise_stddev():
    # mean / stddev = 1e6: a one-pass sum-of-squares formula would lose ~12 digits
    rng = random.Random(7)
    values = [1e6 + rng.random() for _ in range(500)]
    agg = Aggregator()
    add_in_batches(agg, "t", "t", values)
    s = only(agg.flush(T, 10.0))
    assert close(s["stddev"], statistics.pstdev(values), rel=1e-9)


def test_timer_with_one_value():
    agg = Aggregator()
    agg.add("t", "t", None, (), (0.25,))
    s = only(agg.flush(T, 10.0))
    expect_timer_matches(s, [0.25])
    expect((s["stddev"], s["median"], s["p99"], s["mean"])) == (0.0, 0.25, 0.25, 0.25)


def test_timer_with_two_values_median_is_their_mean_and_percentiles_are_values():
    agg = Aggregator()
    agg.add("t", "t", None, (), (0.3,))
    agg.add("t", "t", None, (), (0.1,))
    s = only(agg.flush(T, 10.0))
    expect_timer_matches(s, [0.3, 0.1])
    expect((s["median"], s["p50"], s["p90"])) == ((0.1 + 0.3) / 2, 0.1, 0.3)


def test_timer_with_equal_values_has_exactly_zero_stddev_and_the_value_as_mean():
    agg = Aggregator()
    agg.add("t", "t", None, (), (0.1, 0.1))  # fsum([0.1] * 3) / 3 is 0.10000000000000002
    agg.add("t", "t", None, (), (0.1,))
    s = only(agg.flush(T, 10.0))
    expect((s["stddev"], s["mean"], s["median"], s["min"], s["max"])) == (0.0, 0.1, 0.1, 0.1, 0.1)


def test_timer_accepts_integer_values():
    agg = Aggregator()
    agg.add("t", "t", None, (), (3, 1, 2))
    agg.add("t", "t", None, (), (4,))
    s = only(agg.flush(T, 10.0))
    expect_timer_matches(s, [3, 1, 2, 4])


def test_configured_percentiles_give_one_key_each_by_nearest_rank():
    values = list(range(1, 1001))
    random.Random(5).shuffle(values)
    agg = Aggregator(percentiles=(50, 90, 95, 99, 99.9))
    add_in_batches(agg, "t", "t", values)
    s = only(agg.flush(T, 10.0))
    # 999, not 1000: the rank of 99.9 in 1000 values is exactly 999
    expect({k: v for k, v in s.items() if k.startswith("p")}) == {
        "p50": 500,
        "p90": 900,
        "p95": 950,
        "p99": 990,
        "p99_9": 999,
    }
    expect(s["p99_9"] == s["max"] or s["p99_9"] == s["p99"]) == False


def test_p99_9_of_a_thousand_random_values_is_the_999th_smallest():
    """On fewer than 1,000 values p99.9 is the max; from 1,000 on it must not be."""
    rng = random.Random(9)
    values = [rng.lognormvariate(0, 1) for _ in range(1000)]
    agg = Aggregator(percentiles=(99, 99.9))
    add_in_batches(agg, "t", "t", values)
    s = only(agg.flush(T, 10.0))
    ordered = sorted(values)
    expect(s["p99_9"]) == ordered[998] == reference_rank(values, 99.9)
    expect(s["p99_9"] < s["max"]) == True
    expect(s["p99_9"] > s["p99"]) == True


def test_percentiles_follow_the_configuration():
    agg = Aggregator(percentiles=(25, 99.99, 100), max_exact=20_000)
    add_in_batches(agg, "t", "t", [float(v) for v in range(1, 20001)])
    s = only(agg.flush(T, 10.0))
    expect((s["p25"], s["p99_99"], s["p100"])) == (5000, 19998, 20000)
    expect("p50" in s) == False


def test_duplicate_percentiles_give_one_key():
    agg = Aggregator(percentiles=(99, 99.0, 50))
    agg.add("t", "t", None, (), (1.0,))
    s = only(agg.flush(T, 10.0))
    expect([k for k in s if k.startswith("p")]) == ["p99", "p50"]


@pytest.mark.parametrize(
    "p, key",
    [
        (50, "p50"),
        (95.0, "p95"),
        (99, "p99"),
        (99.9, "p99_9"),
        (99.99, "p99_99"),
        (100, "p100"),
        (0.1, "p0_1"),
        (12.5, "p12_5"),
        (1e-05, "p0_00001"),
    ],
)
def test_percentile_key_examples(p, key):
    expect(percentile_key(p)) == key


def test_percentile_keys_never_collide():
    ps = [1, 9.9, 9.99, 10, 10.1, 19.9, 50, 90, 99, 99.09, 99.9, 99.99, 99.999, 100, 0.999, 0.0999]
    keys = [percentile_key(p) for p in ps]
    expect(len(set(keys))) == len(ps)


def test_nearest_rank_matches_the_reference():
    rng = random.Random(11)
    for n in range(1, 60):
        values = sorted(rng.random() for _ in range(n))
        for p in (0.1, 1, 7, 10, 25, 33.3, 50, 66.7, 75, 90, 95, 99, 99.9, 100):
            assert nearest_rank(values, p) == reference_rank(values, p), (n, p)


def test_nearest_rank_is_not_fooled_by_float_rounding():
    values = list(range(1, 1001))
    expect(nearest_rank(values, 99.9)) == 999  # naive ceil(0.999 * 1000) gives 1000
    expect(nearest_rank(list(range(1, 101)), 7)) == 7  # naive ceil(0.07 * 100) gives 8


def test_nearest_rank_of_nothing_raises():
    with expect.raises(ValueError):
        nearest_rank([], 50)


# --- series, flush, order ----------------------------------------------------------


def test_flush_resets_everything():
    agg = Aggregator(max_exact=10)
    agg.add("c", "c", None, (), (5,))
    agg.add("g", "g", None, (), (5,))
    agg.add("t", "t", None, (), tuple(range(100)))  # sketched
    expect(len(agg)) == 3
    expect(len(agg.flush(T, 10.0))) == 3
    expect(len(agg)) == 0
    expect(agg.values_held()) == 0
    expect(agg.flush(T + 10, 10.0)) == []
    agg.add("c", "c", None, (), (1,))
    agg.add("g", "g", None, (), (1,))
    agg.add("t", "t", None, (), (1000.0,))
    c, g, t = agg.flush(T + 20, 10.0)
    expect((c["value"], c["count"])) == (1, 1)
    expect((g["min"], g["max"], g["sum"], g["count"])) == (1, 1, 1, 1)
    expect((t["count"], t["min"], t["sum"], t["exact"])) == (1, 1000.0, 1000.0, True)


def test_series_are_separated_by_type_source_and_tags():
    agg = Aggregator()
    agg.add("c", "req", None, (), (1,))
    agg.add("c", "req", "web1", (), (2,))
    agg.add("c", "req", "web2", (), (4,))
    agg.add("c", "req", "web1", ("env:prod",), (8,))
    agg.add("c", "req", "web1", ("env:prod", "az:b"), (16,))
    agg.add("c", "req", "web1", ("env:dev",), (32,))
    agg.add("g", "req", None, (), (64,))
    agg.add("c", "req", "web1", ("env:prod",), (100,))
    summaries = agg.flush(T, 1.0)
    got = {(s["type"], s["source"], tuple(s["tags"])): s["value"] for s in summaries}
    expect(got) == {
        ("counter", None, ()): 1,
        ("counter", "web1", ()): 2,
        ("counter", "web2", ()): 4,
        ("counter", "web1", ("env:prod",)): 108,
        ("counter", "web1", ("env:prod", "az:b")): 16,
        ("counter", "web1", ("env:dev",)): 32,
        ("gauge", None, ()): 64,
    }
    expect(all(isinstance(s["tags"], list) for s in summaries)) == True


def test_output_is_sorted_by_type_name_source_and_tags():
    records = [
        ("t", "b", None, ()),
        ("c", "b", "x", ()),
        ("c", "b", None, ()),
        ("g", "a", None, ()),
        ("c", "a", "y", ("k:2",)),
        ("c", "a", "y", ("k:1",)),
        ("c", "a", "y", ()),
        ("t", "a", "z", ()),
    ]
    outputs = []
    for seed in range(4):
        shuffled = records[:]
        random.Random(seed).shuffle(shuffled)
        agg = Aggregator()
        for type_, name, source, tags in shuffled:
            agg.add(type_, name, source, tags, (1.0,))
        outputs.append(agg.flush(T, 10.0))
    order = [(s["type"], s["name"], s["source"], tuple(s["tags"])) for s in outputs[0]]
    expect(order) == [
        ("counter", "a", "y", ()),
        ("counter", "a", "y", ("k:1",)),
        ("counter", "a", "y", ("k:2",)),
        ("counter", "b", None, ()),
        ("counter", "b", "x", ()),
        ("gauge", "a", None, ()),
        ("timer", "a", "z", ()),
        ("timer", "b", None, ()),
    ]
    expect(all(out == outputs[0] for out in outputs)) == True


def test_include_interval_stamps_every_summary_with_the_seconds_it_covers():
    agg = Aggregator(include_interval=True)
    for type_ in ("c", "g", "t"):
        agg.add(type_, "x", None, (), (4,))
    summaries = agg.flush(T, 2.5)
    expect([s["interval"] for s in summaries]) == [2.5, 2.5, 2.5]
    counter = summaries[0]
    expect(counter["rate"] * counter["interval"]) == counter["value"]
    agg = Aggregator()
    agg.add("c", "x", None, (), (4,))
    expect("interval" in only(agg.flush(T, 2.5))) == False


def test_flush_stamps_time_and_needs_a_positive_interval():
    agg = Aggregator()
    agg.add("c", "c", None, (), (1,))
    with expect.raises(ValueError):
        agg.flush(T, 0)
    expect(len(agg)) == 1  # nothing lost by the refused flush
    expect(only(agg.flush(T, 4.0))["time"]) == T


# --- validation ------------------------------------------------------------------


@pytest.mark.parametrize("bad", [0, -1, 100.5, float("nan"), float("inf"), "abc", None])
def test_invalid_percentile_raises(bad):
    with expect.raises(ValueError):
        Aggregator(percentiles=(50, bad))


def test_percentile_100_and_fractions_are_valid():
    agg = Aggregator(percentiles=(0.001, 100))
    agg.add("t", "t", None, (), tuple(range(1, 1001)))
    summary = only(agg.flush(T, 10.0))
    expect((summary["p0_001"], summary["p100"])) == (1, 1000)


@pytest.mark.parametrize("bad", [0, -5, 1.5, True])
def test_invalid_max_exact_raises(bad):
    with expect.raises(ValueError):
        Aggregator(max_exact=bad)
    with expect.raises(ValueError):
        Aggregator(max_samples=bad)  # its former name still works


@pytest.mark.parametrize("bad", [0, 1, -0.5, float("nan")])
def test_invalid_relative_error_raises(bad):
    with expect.raises(ValueError):
        Aggregator(relative_error=bad)


def test_unknown_type_raises_and_holds_nothing():
    agg = Aggregator()
    with expect.raises(ValueError):
        agg.add("x", "x", None, (), (1,))
    expect(len(agg)) == 0


# --- past max_exact: the sketch ---------------------------------------------------------


def test_exactly_max_exact_values_stay_exact():
    agg = Aggregator(max_exact=100)
    values = [float(v) for v in range(100)]
    add_in_batches(agg, "t", "t", values, sizes=(50,))
    s = only(agg.flush(T, 10.0))
    expect(s["exact"]) == True
    expect("relative_error" in s) == False
    expect_timer_matches(s, values)


@pytest.fixture(scope="module")
def sketched():
    """100,000 lognormal values (records of 1, 7, 100) past a 1,000-value exact bound."""
    rng = random.Random(99)
    values = [rng.lognormvariate(-4, 1.5) for _ in range(100_000)]
    agg = Aggregator(percentiles=(50, 90, 95, 99, 99.9), max_exact=1000)
    add_in_batches(agg, "t", "t", values)
    held = agg.values_held()
    return only(agg.flush(T, 10.0)), values, held


def test_sketched_percentiles_are_within_the_relative_error_of_nearest_rank(sketched):
    s, values, _ = sketched
    expect((s["exact"], s["relative_error"])) == (False, relative_error_of(6))
    for p in (50, 90, 95, 99, 99.9):
        exact = reference_rank(values, p)
        assert abs(s[percentile_key(p)] - exact) <= 0.01 * exact, p
        assert abs(s[percentile_key(p)] - exact) <= s["relative_error"] * exact * (1 + 1e-9), p
    assert abs(s["median"] - reference_rank(values, 50)) <= 0.01 * reference_rank(values, 50)


def test_sketched_totals_stay_exact(sketched):
    s, values, _ = sketched
    expect((s["count"], s["min"], s["max"])) == (100_000, min(values), max(values))
    assert close(s["sum"], math.fsum(values), rel=1e-12)
    assert close(s["sum_squares"], math.fsum(x * x for x in values), rel=1e-12)
    assert close(s["mean"], statistics.fmean(values), rel=1e-12)
    assert close(s["stddev"], statistics.pstdev(values), rel=1e-9)


def test_the_summary_sketch_is_the_documented_dict_and_answers_like_the_summary(sketched):
    s, values, held = sketched
    d = s["sketch"]
    expect(set(d)) == {"scale", "zero_count", "positive", "negative", "count", "sum", "min", "max"}
    expect((d["scale"], d["count"], d["min"], d["max"])) == (6, 100_000, min(values), max(values))
    expect(held) == len(d["positive"]["counts"])  # bucket slots, not values
    expect(Sketch.from_dict(d).quantile(0.99)) == s["p99"]


def test_sketched_series_memory_is_bounded_by_buckets_not_values():
    rng = random.Random(3)
    batches = [tuple(rng.lognormvariate(-4, 2) for _ in range(100)) for _ in range(1000)]
    agg = Aggregator(max_exact=1000)
    for batch in batches[:20]:  # past the exact bound, packers and the like, before measuring
        agg.add("t", "t", None, (), batch)
    tracemalloc.start()
    try:
        before = tracemalloc.get_traced_memory()[0]
        for batch in batches[20:]:
            agg.add("t", "t", None, (), batch)
        held = tracemalloc.get_traced_memory()[0] - before
    finally:
        tracemalloc.stop()
    buckets = agg.values_held()
    assert buckets < 2048, buckets
    assert held < 200_000, held  # 98,000 values kept would be 784 kB at least
    expect(only(agg.flush(T, 10.0))["count"]) == 100_000


def test_a_range_wider_than_the_bucket_bound_lowers_the_scale_and_the_summary_says_so():
    agg = Aggregator(max_exact=1, max_buckets=64)
    agg.add("t", "t", None, (), (1e-6, 1.0, 1000.0))
    s = only(agg.flush(T, 10.0))
    expect(s["sketch"]["scale"] < 6) == True
    expect(s["relative_error"]) == relative_error_of(s["sketch"]["scale"])
    expect(s["relative_error"] > 0.01) == True


def test_relative_error_is_settable():
    agg = Aggregator(max_exact=1, relative_error=0.002)
    agg.add("t", "t", None, (), (0.1, 0.2, 0.3))
    s = only(agg.flush(T, 10.0))
    expect((s["sketch"]["scale"], s["relative_error"] <= 0.002)) == (8, True)


def test_sketches_of_two_aggregators_merge_into_the_sketch_of_one():
    rng = random.Random(5)
    values = [rng.lognormvariate(-3, 1) for _ in range(30_000)]
    one, first, second = Aggregator(max_exact=500), Aggregator(max_exact=500), Aggregator(max_exact=500)
    add_in_batches(one, "t", "t", values)
    add_in_batches(first, "t", "t", values[::2])
    add_in_batches(second, "t", "t", values[1::2])
    whole = only(one.flush(T, 10.0))["sketch"]
    merged = (
        Sketch.from_dict(only(first.flush(T, 10.0))["sketch"])
        .merge(Sketch.from_dict(only(second.flush(T, 10.0))["sketch"]))
        .to_dict()
    )
    expect({k: v for k, v in merged.items() if k != "sum"}) == {k: v for k, v in whole.items() if k != "sum"}
    assert close(merged["sum"], whole["sum"], rel=1e-12)


def test_an_exact_series_also_carries_its_sketch():
    agg = Aggregator()
    agg.add("t", "t", None, (), (0.001, 0.002, 0.002))
    d = only(agg.flush(T, 10.0))["sketch"]
    expect((d["count"], d["min"], d["max"], sum(d["positive"]["counts"]))) == (3, 0.001, 0.002, 3)


# --- weights, histograms, units, sets ---------------------------------------------------------


def test_a_counter_weight_multiplies_its_values_and_count():
    agg = Aggregator()
    agg.add_records(
        [("c", "miss", (1, 1), None, (), 10), ("c", "miss", (0.5,), None, ()), ("c", "miss", (2,), None, (), None)]
    )
    s = only(agg.flush(T, 10.0))
    expect((s["value"], s["count"], s["rate"])) == (22.5, 22, 2.25)


def test_a_timer_weight_counts_each_value_as_that_many_observations():
    agg = Aggregator()
    agg.add_records([("t", "t", (0.1, 0.2), None, (), 10), ("t", "t", (0.4,), None, ())])
    s = only(agg.flush(T, 10.0))
    expect((s["count"], s["exact"], s["min"], s["max"])) == (21, False, 0.1, 0.4)
    assert close(s["sum"], 3.4)
    assert close(s["sum_squares"], 0.1**2 * 10 + 0.2**2 * 10 + 0.4**2)
    expect(s["sketch"]["count"]) == 21
    assert abs(s["p50"] - 0.2) <= 0.01 * 0.2  # 10 of 21 at 0.1: rank 11 is 0.2
    assert abs(s["p90"] - 0.2) <= 0.01 * 0.2  # rank 19 of 21
    assert abs(s["p99"] - 0.4) <= 0.01 * 0.4  # rank 21
    assert abs(s["median"] - 0.2) <= 0.01 * 0.2


def test_gauges_and_sets_ignore_weights():
    agg = Aggregator()
    agg.add_records([("g", "g", (5,), None, (), 10), ("s", "s", ("a", "b"), None, (), 10)])
    g, st = agg.flush(T, 10.0)
    expect((g["value"], g["count"], g["sum"])) == (5, 1, 5)
    expect(st["value"]) == 2


def test_histograms_summarise_like_timers_and_their_unit_is_part_of_the_series():
    agg = Aggregator()
    agg.add_records(
        [
            ("h", "size", (5120, 880), "api", (), None, "bytes"),
            ("h", "size", (1,), "api", (), None, "kB"),
            ("h", "size", (2, -3), "api", ()),
            ("h", "size", (100,), "api", (), 1, "bytes"),
        ]
    )
    summaries = agg.flush(T, 10.0)
    expect([(s["type"], s["unit"], s["count"]) for s in summaries]) == [
        ("histogram", None, 2),
        ("histogram", "bytes", 3),
        ("histogram", "kB", 1),
    ]
    expect_timer_matches({k: v for k, v in summaries[1].items() if k != "unit"}, [5120, 880, 100])
    expect(summaries[0]["sketch"]["negative"]) == {"offset": 101, "counts": [1]}  # -3 in (2**1.578..]
    expect(summaries[0]["min"]) == -3


def test_sets_count_unique_members_exactly_then_estimate():
    agg = Aggregator(set_max_exact=100)
    agg.add_records([("s", "users", ("u1", "u2", "u1"), None, ()), ("s", "users", (7, "u2"), None, ())])
    agg.add_records([("s", "big", tuple(f"m{i}" for i in range(5000)), None, ())])
    big, users = agg.flush(T, 10.0)
    expect((users["type"], users["value"], users["exact"])) == ("set", 3, True)
    expect(users["sketch"]) == {"exact": True, "count": 3, "members": [7, "u1", "u2"]}
    expect(big["exact"]) == False
    assert abs(big["value"] / 5000 - 1) < 3 * 0.0081
    expect(SetSketch.from_dict(big["sketch"]).count) == big["value"]


def test_extended_and_plain_records_mix_in_one_message():
    agg = Aggregator()
    count = agg.add_records(
        [("t", "t", (0.5,), None, ()), ("t", "t", (0.25,), None, (), None), ("t", "t", (1.0,), None, (), None, None)]
    )
    expect(count) == 3
    s = only(agg.flush(T, 10.0))
    expect((s["count"], s["exact"], s["median"])) == (3, True, 0.5)


# --- expiry ----------------------------------------------------------------------------------


def test_without_expiry_an_idle_interval_reports_nothing():
    agg = Aggregator()
    agg.add("c", "c", None, (), (1,))
    agg.flush(T, 10.0)
    expect(agg.flush(T + 10, 10.0)) == []


def test_idle_series_are_reported_as_gostatsd_does_until_they_expire():
    agg = Aggregator(expire=20, include_interval=True)
    agg.add("c", "c", None, (), (3,))
    agg.add("g", "g", None, (), (7, 5))
    agg.add("t", "t", None, (), (0.5,))
    agg.add("h", "h", None, (), (4,), unit="rows")
    agg.add("s", "s", None, (), ("a",))
    expect(len(agg.flush(T, 10.0))) == 5
    for later in (T + 10, T + 20):
        c, g, h, s, t = agg.flush(later, 10.0)
        expect((c["value"], c["count"], c["rate"])) == (0.0, 0, 0.0)
        expect((g["value"], g["count"])) == (5, 0)
        expect((t["count"], t["exact"], "p50" in t, "sketch" in t, "median" in t)) == (0, True, False, False, False)
        expect((h["count"], h["unit"])) == (0, "rows")
        expect((s["value"], s["exact"])) == (0, True)
        expect({x["time"] for x in (c, g, h, s, t)}) == {later}
    expect(agg.flush(T + 30, 10.0)) == []  # 30 s after the last data: expired and forgotten
    agg.add("c", "c", None, (), (1,))
    expect([x["value"] for x in agg.flush(T + 40, 10.0)]) == [1.0]


def test_expiry_per_kind_overrides_the_default():
    agg = Aggregator(expire="10,gauge=30,counter=0")
    agg.add("c", "c", None, (), (3,))
    agg.add("g", "g", None, (), (7,))
    agg.add("t", "t", None, (), (0.5,))
    agg.flush(T, 10.0)
    expect([s["type"] for s in agg.flush(T + 10, 10.0)]) == ["gauge", "timer"]
    expect([s["type"] for s in agg.flush(T + 20, 10.0)]) == ["gauge"]
    expect([s["type"] for s in agg.flush(T + 30, 10.0)]) == ["gauge"]
    expect(agg.flush(T + 40, 10.0)) == []


@pytest.mark.parametrize(
    "text, expected",
    [
        ("0", dict.fromkeys(("counter", "gauge", "timer", "histogram", "set"), 0.0)),
        ("gauge=60,300", {"counter": 300.0, "gauge": 60.0, "timer": 300.0, "histogram": 300.0, "set": 300.0}),
        ({"set": 5}, {"counter": 0.0, "gauge": 0.0, "timer": 0.0, "histogram": 0.0, "set": 5.0}),
    ],
)
def test_parse_expire(text, expected):
    expect(parse_expire(text)) == expected


@pytest.mark.parametrize("bad", ["-1", "nan", "inf", "gauges=5", "x", "gauge=abc"])
def test_parse_expire_refuses_bad_values(bad):
    with expect.raises(ValueError):
        parse_expire(bad)


# --- no non-finite number reaches a destination -------------------------------------------------


def test_overflowing_sums_drop_the_series_interval_and_count_it():
    agg = Aggregator()
    agg.add("c", "big", None, (), (1e308,))
    agg.add("c", "big", None, (), (1e308,))
    agg.add("c", "nan", None, (), (1e308, 1e308))
    agg.add("c", "nan", None, (), (-1e308, -1e308))  # inf + -inf
    agg.add("g", "gauge", None, (), (1e308, 1e308))
    agg.add("t", "timer", None, (), (1e308, 1e308))
    agg.add("h", "histo", None, (), (1e200,))  # sum_squares overflows
    agg.add("c", "fine", None, (), (1,))
    summaries = agg.flush(T, 10.0)
    expect([s["name"] for s in summaries]) == ["fine"]
    expect(agg.non_finite_dropped) == 5
    expect(sorted(agg.last_non_finite)) == ["big", "gauge", "histo", "nan", "timer"]
    import json

    json.dumps(summaries, allow_nan=False)  # valid JSON


def test_a_sketched_series_that_overflows_is_dropped_too():
    agg = Aggregator(max_exact=1)
    agg.add("t", "t", None, (), (1e308, 1e308, 1.0))
    expect(agg.flush(T, 10.0)) == []
    expect(agg.non_finite_dropped) == 1


# --- keep_values (raw timer values for backends such as statsd) ---------------------


def test_keep_values_hands_over_every_timer_value_and_is_off_by_default():
    values = [0.3, 0.1, 0.2, 0.1]
    plain, keeping = Aggregator(), Aggregator(keep_values=True)
    for agg in (plain, keeping):
        add_in_batches(agg, "t", "t", values, sizes=(1, 2))
        agg.add("c", "c", None, (), (1,))
        agg.add("g", "g", None, (), (2,))
    expect(any("values" in s for s in plain.flush(T, 10.0))) == False
    counter, gauge, timer = keeping.flush(T, 10.0)
    expect(list(timer["values"])) == values  # every value, in arrival order
    expect("values" in counter or "values" in gauge) == False
    expect("sampled" in timer) == False


def test_keep_values_past_max_exact_hands_over_values_spread_over_the_sketch():
    agg = Aggregator(max_exact=50, keep_values=True)
    values = [float(v) for v in range(1, 1001)]
    add_in_batches(agg, "t", "t", values)
    s = only(agg.flush(T, 10.0))
    kept = s["values"]
    expect((s["sampled"], len(kept), s["count"])) == (50, 50, 1000)
    expect(kept) == sorted(kept)
    for k, value in enumerate(kept):  # the (k + 1/2) / 50 quantiles, within the bound
        exact = values[int((k + 0.5) * 1000 / 50)]
        assert abs(value - exact) <= 0.01 * exact + 1, (k, value, exact)
