"""zibrato.aggregation against references from the statistics module and a plain nearest rank."""
from __future__ import annotations

import bisect
import math
import random
import statistics
import tracemalloc
from fractions import Fraction

import pytest
from expecter import expect

from zibrato.aggregation import Aggregator, nearest_rank, percentile_key

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
        agg.add(type_, name, source, tags, tuple(values[i:i + n]))
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
    expect(s) == {"time": T, "type": "counter", "name": "hits", "source": None, "tags": [],
                  "value": 6.5, "count": 4, "rate": 0.65}


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
    expect(s) == {"time": T, "type": "gauge", "name": "depth", "source": None, "tags": [],
                  "value": 2, "count": 4, "min": -7, "max": 5, "sum": 0}


@pytest.mark.parametrize("records, expected", [
    # all negative: a max that starts at 0 would be wrong
    ([(-3,), (-1,), (-2,)], {"value": -2, "min": -3, "max": -1, "sum": -6, "count": 3}),
    ([(-3, -1), (-2, -5)], {"value": -5, "min": -5, "max": -1, "sum": -11, "count": 4}),
    # all positive: a min that starts at 0 would be wrong
    ([(3,), (1.5,), (2,)], {"value": 2, "min": 1.5, "max": 3, "sum": 6.5, "count": 3}),
    # zero as the last value, the maximum and the minimum
    ([(-5,), (0,)], {"value": 0, "min": -5, "max": 0, "sum": -5, "count": 2}),
    ([(5,), (0,), (3,)], {"value": 3, "min": 0, "max": 5, "sum": 8, "count": 3}),
    ([(0,), (0,)], {"value": 0, "min": 0, "max": 0, "sum": 0, "count": 2}),
])
def test_gauge_extremes_with_negative_values_and_zero(records, expected):
    agg = Aggregator()
    for values in records:
        agg.add("g", "g", None, (), values)
    s = only(agg.flush(T, 10.0))
    expect({k: s[k] for k in expected}) == expected


# --- timers --------------------------------------------------------------------


def timer_reference(values, percentiles=(50, 90, 95, 99)):
    ref = {"count": len(values), "sum": math.fsum(values), "sum_squares": math.fsum(x * x for x in values),
           "min": min(values), "max": max(values), "mean": statistics.fmean(values),
           "median": statistics.median(values), "stddev": statistics.pstdev(values)}
    ref.update({percentile_key(p): reference_rank(values, p) for p in percentiles})
    return ref


def expect_timer_matches(summary, values, percentiles=(50, 90, 95, 99)):
    ref = timer_reference(values, percentiles)
    for key in ("count", "min", "max", "median") + tuple(percentile_key(p) for p in percentiles):
        assert summary[key] == ref[key], key
    for key in ("sum", "sum_squares", "mean", "stddev"):
        assert close(summary[key], ref[key]), (key, summary[key], ref[key])
    expect(set(summary)) == {"time", "type", "name", "source", "tags", *ref}


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
        "p50": 500, "p90": 900, "p95": 950, "p99": 990, "p99_9": 999}
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
    agg = Aggregator(percentiles=(25, 99.99, 100))
    add_in_batches(agg, "t", "t", [float(v) for v in range(1, 20001)])
    s = only(agg.flush(T, 10.0))
    expect((s["p25"], s["p99_99"], s["p100"])) == (5000, 19998, 20000)
    expect("p50" in s) == False


def test_duplicate_percentiles_give_one_key():
    agg = Aggregator(percentiles=(99, 99.0, 50))
    agg.add("t", "t", None, (), (1.0,))
    s = only(agg.flush(T, 10.0))
    expect([k for k in s if k.startswith("p")]) == ["p99", "p50"]


@pytest.mark.parametrize("p, key", [
    (50, "p50"), (95.0, "p95"), (99, "p99"), (99.9, "p99_9"), (99.99, "p99_99"),
    (100, "p100"), (0.1, "p0_1"), (12.5, "p12_5"), (1e-05, "p0_00001"),
])
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
    expect(nearest_rank(values, 99.9)) == 999   # naive ceil(0.999 * 1000) gives 1000
    expect(nearest_rank(list(range(1, 101)), 7)) == 7  # naive ceil(0.07 * 100) gives 8


def test_nearest_rank_of_nothing_raises():
    with expect.raises(ValueError):
        nearest_rank([], 50)


# --- series, flush, order ----------------------------------------------------------


def test_flush_resets_everything():
    agg = Aggregator(max_samples=10)
    agg.add("c", "c", None, (), (5,))
    agg.add("g", "g", None, (), (5,))
    agg.add("t", "t", None, (), tuple(range(100)))  # sampled
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
    expect((t["count"], t["min"], t["sum"], "sampled" in t)) == (1, 1000.0, 1000.0, False)


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
        ("counter", None, ()): 1, ("counter", "web1", ()): 2, ("counter", "web2", ()): 4,
        ("counter", "web1", ("env:prod",)): 108, ("counter", "web1", ("env:prod", "az:b")): 16,
        ("counter", "web1", ("env:dev",)): 32, ("gauge", None, ()): 64}
    expect(all(isinstance(s["tags"], list) for s in summaries)) == True


def test_output_is_sorted_by_type_name_source_and_tags():
    records = [("t", "b", None, ()), ("c", "b", "x", ()), ("c", "b", None, ()), ("g", "a", None, ()),
               ("c", "a", "y", ("k:2",)), ("c", "a", "y", ("k:1",)), ("c", "a", "y", ()), ("t", "a", "z", ())]
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
        ("counter", "a", "y", ()), ("counter", "a", "y", ("k:1",)), ("counter", "a", "y", ("k:2",)),
        ("counter", "b", None, ()), ("counter", "b", "x", ()), ("gauge", "a", None, ()),
        ("timer", "a", "z", ()), ("timer", "b", None, ())]
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
    expect(Aggregator(percentiles=(0.001, 100)).percentiles) == (0.001, 100.0)


@pytest.mark.parametrize("bad", [0, -5, 1.5, True])
def test_invalid_max_samples_raises(bad):
    with expect.raises(ValueError):
        Aggregator(max_samples=bad)


def test_unknown_type_raises_and_holds_nothing():
    agg = Aggregator()
    with expect.raises(ValueError):
        agg.add("h", "x", None, (), (1,))
    expect(len(agg)) == 0


# --- sampling ----------------------------------------------------------------------


def test_exactly_max_samples_values_stay_exact():
    agg = Aggregator(max_samples=100)
    values = [float(v) for v in range(100)]
    add_in_batches(agg, "t", "t", values, sizes=(50,))
    s = only(agg.flush(T, 10.0))
    expect("sampled" in s) == False
    expect_timer_matches(s, values)


def sampled_run(seed=123, n=100_000, m=1000, batch=100):
    # An increasing stream: a sampler that favoured early or late values would miss badly.
    data_rng = random.Random(99)
    values = sorted(data_rng.uniform(0.001, 2.0) for _ in range(n))
    agg = Aggregator(percentiles=(50, 90, 95, 99), max_samples=m, rng=random.Random(seed))
    for i in range(0, n, batch):
        agg.add("t", "t", None, (), tuple(values[i:i + batch]))
    return agg, values


@pytest.fixture(scope="module")
def sampled():
    """100,000 values through a 1,000-value reservoir: (summary, values, values held before flush)."""
    agg, values = sampled_run()
    held = agg.values_held()
    return only(agg.flush(T, 10.0)), values, held


def test_sampling_keeps_max_samples_values_and_exact_totals(sampled):
    s, values, held = sampled
    expect(held) == 1000
    expect(s["sampled"]) == 1000
    expect((s["count"], s["min"], s["max"])) == (100_000, min(values), max(values))
    assert close(s["sum"], math.fsum(values), rel=1e-12)
    assert close(s["sum_squares"], math.fsum(x * x for x in values), rel=1e-12)
    assert close(s["mean"], statistics.fmean(values), rel=1e-12)
    assert close(s["stddev"], statistics.pstdev(values), rel=1e-9)


def test_sampled_percentiles_are_close_in_rank_to_the_exact_ones(sampled):
    s, values, _ = sampled
    m, n = s["sampled"], len(values)
    for p in (50, 90, 95, 99):
        q = p / 100
        rank = bisect.bisect_left(values, s[percentile_key(p)]) / n
        # 4 standard errors of the rank, plus the rank granularity of the sample
        assert abs(rank - q) <= 4 * math.sqrt(q * (1 - q) / m) + 1 / m, (p, rank)
    rank = bisect.bisect_left(values, s["median"]) / n
    assert abs(rank - 0.5) <= 4 * math.sqrt(0.25 / m) + 1 / m


def test_sampling_is_deterministic_for_a_seeded_rng():
    first = sampled_run(seed=5, n=20_000)[0].flush(T, 10.0)
    again = sampled_run(seed=5, n=20_000)[0].flush(T, 10.0)
    other = sampled_run(seed=6, n=20_000)[0].flush(T, 10.0)
    expect(first) == again
    expect(first == other) == False


def test_reservoir_is_a_uniform_sample_of_the_interval():
    """Each of n values ends in the m-sample with probability m/n, whatever the record sizes."""
    m, n, trials = 10, 100, 1500
    deciles = tuple(range(10, 101, 10))  # with 10 kept values, p10..p100 list the whole sample
    keys = [percentile_key(p) for p in deciles]
    rng, sampler_rng = random.Random(2024), random.Random(2025)  # (seeding 1500 Randoms is slow)
    included = [0] * n
    for trial in range(trials):
        agg = Aggregator(percentiles=deciles, max_samples=m, rng=sampler_rng)
        # every other trial starts with a record that fills the reservoir exactly
        i = m if trial % 2 else 0
        if i:
            agg.add("t", "t", None, (), tuple(float(v) for v in range(m)))
        while i < n:
            size = rng.choice((1, 1, 2, 3, 7, 13, 40))
            agg.add("t", "t", None, (), tuple(float(v) for v in range(i, min(i + size, n))))
            i += size
        s = only(agg.flush(T, 1.0))
        kept = {int(s[key]) for key in keys}
        assert len(kept) == m and s["sampled"] == m and s["count"] == n
        for v in kept:
            included[v] += 1
    expected = trials * m / n  # 150, standard deviation about 11.6
    assert all(abs(c - expected) < 5.5 * math.sqrt(expected) for c in included), included
    # no drift between the first values (the initial fill) and the last ones
    assert abs(sum(included[:m]) - sum(included[-m:])) < 0.15 * expected * m


def test_sampled_series_memory_stays_near_max_samples_doubles():
    m, n = 1000, 100_000
    rng = random.Random(3)
    batches = [tuple(rng.random() for _ in range(100)) for _ in range(n // 100)]
    agg = Aggregator(max_samples=m, rng=random.Random(1))
    agg.add("t", "t", None, (), batches[0])  # struct packers and the like, before measuring
    tracemalloc.start()
    try:
        before = tracemalloc.get_traced_memory()[0]
        for batch in batches[1:]:
            agg.add("t", "t", None, (), batch)
        held = tracemalloc.get_traced_memory()[0] - before
    finally:
        tracemalloc.stop()
    expect(agg.values_held()) == m
    assert held < 4 * m * 8, held  # kept as a list or unbounded, this would be megabytes
    expect(only(agg.flush(T, 10.0))["count"]) == n


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


def test_keep_values_past_max_samples_hands_over_the_reservoir():
    agg = Aggregator(max_samples=50, rng=random.Random(7), keep_values=True)
    values = [float(v) for v in range(1000)]
    add_in_batches(agg, "t", "t", values)
    s = only(agg.flush(T, 10.0))
    kept = sorted(s["values"])
    expect((s["sampled"], len(kept), s["count"])) == (50, 50, 1000)
    expect(len(set(kept))) == 50
    expect(set(kept) <= set(values)) == True
    # the percentiles and median come from the same sample that is handed over
    expect(s["median"]) == (kept[24] + kept[25]) / 2
