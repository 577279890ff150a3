"""zibrato.sketch: error bound against exact nearest rank, merge laws (hypothesis), dict form, sets."""

from __future__ import annotations

import math
import os
import random

import pytest
from expecter import expect
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from support.lanes import examples
from zibrato.sketch import SetSketch, Sketch, relative_error_of, scale_for

# No per-example deadline (a busy 2-core machine is slow at random moments); in CI the examples
# are derived from each test's name, so a run there is repeatable.
settings.register_profile("zibrato", deadline=None)
settings.register_profile("zibrato-ci", deadline=None, derandomize=True)
settings.load_profile("zibrato-ci" if os.environ.get("CI") else "zibrato")

QUANTILES = (0.0, 0.01, 0.25, 0.5, 0.9, 0.99, 0.999, 1.0)

# Magnitudes from 1e-300 to 1e300, either sign, and zeros: sums of a few hundred stay finite.
magnitudes = st.floats(min_value=1e-300, max_value=1e300, allow_nan=False, allow_infinity=False)
values_strategy = st.one_of(
    magnitudes, magnitudes.map(lambda x: -x), st.just(0.0), st.integers(min_value=-(10**6), max_value=10**6)
)
value_lists = st.lists(values_strategy, min_size=1, max_size=300)
# Latency-like values: a realistic spread where no scale reduction happens at the default bound
latencies = st.lists(st.floats(min_value=1e-6, max_value=100.0), min_size=1, max_size=300)


def nearest_rank(values, q):
    ordered = sorted(values)
    k = max(1, math.ceil(q * len(ordered) - 1e-9))
    return ordered[min(k, len(ordered)) - 1]


def sketch_of(values, **options):
    sketch = Sketch(**options)
    for v in values:
        sketch.add(v)
    return sketch


def within(estimate, exact, bound):
    """Within the bound, plus the ~1e-11 by which log2's rounding can misplace a value at a bucket edge."""
    return abs(estimate - exact) <= (bound + 1e-10) * abs(exact) + 1e-300


def same_sketch(a: dict, b: dict, values=()) -> bool:
    """Equal dict forms; ``sum`` up to float rounding (the order of additions differs), i.e. within
    a few ulps of the sum of the magnitudes of the values."""
    rest_a = {k: v for k, v in a.items() if k != "sum"}
    rest_b = {k: v for k, v in b.items() if k != "sum"}
    tolerance = 1e-12 * math.fsum(abs(v) for v in values) + 1e-200
    return rest_a == rest_b and math.isclose(a["sum"], b["sum"], rel_tol=1e-9, abs_tol=tolerance)


# --- scale and error -------------------------------------------------------------------


@pytest.mark.parametrize(
    "error, scale", [(0.01, 6), (0.02, 5), (0.005, 7), (0.0055, 6), (0.0054, 7), (0.2, 1), (0.5, 0)]
)
def test_scale_is_the_coarsest_whose_bound_meets_the_asked_error(error, scale):
    expect(scale_for(error)) == scale
    expect(relative_error_of(scale) <= error) == True
    expect(relative_error_of(scale - 1) > error) == True


def test_scale_6_bound_is_0_54_percent():
    assert math.isclose(relative_error_of(6), (2 ** (1 / 64) - 1) / (2 ** (1 / 64) + 1))
    assert 0.0054 < relative_error_of(6) < 0.00542


@pytest.mark.parametrize("bad", [0, -0.1, 1, 1.5, float("nan")])
def test_impossible_relative_errors_are_refused(bad):
    with expect.raises(ValueError):
        Sketch(relative_error=bad)


@pytest.mark.parametrize(
    "value, scale, index",
    [
        (1.0, 0, -1),
        (2.0, 0, 0),
        (2.5, 0, 1),
        (4.0, 0, 1),
        (1.0, 6, -1),
        (2.0, 6, 63),
        (2.0, 3, 7),
        (0.5, 0, -2),
        (3.0, -1, 0),
        (4.0, -1, 0),
        (4.5, -1, 1),
    ],
)
def test_bucket_index_follows_opentelemetry_upper_inclusive_boundaries(value, scale, index):
    """Bucket i holds (base**i, base**(i+1)]: a power of two is the upper edge of its bucket."""
    sketch = Sketch(relative_error=relative_error_of(scale), max_exact=0)
    sketch.add(value)
    sketch.add(-value)
    d = sketch.to_dict()
    expect((d["scale"], d["positive"], d["negative"])) == (
        scale,
        {"offset": index, "counts": [1]},
        {"offset": index, "counts": [1]},
    )


@settings(max_examples=examples(150), suppress_health_check=[HealthCheck.too_slow])
@given(value_lists, st.integers(min_value=0, max_value=50))
def test_every_quantile_is_within_the_bound_of_exact_nearest_rank(values, max_exact):
    sketch = sketch_of(values, max_exact=max_exact)
    bound = sketch.relative_error_bound
    for q in QUANTILES:
        exact = nearest_rank(values, q)
        assert within(sketch.quantile(q), exact, bound), (q, sketch.quantile(q), exact, bound)


@settings(max_examples=examples(100))
@given(latencies)
def test_latencies_keep_the_asked_scale_and_one_percent(values):
    sketch = sketch_of(values, max_exact=0)
    expect(sketch.scale) == 6
    for q in QUANTILES:
        assert within(sketch.quantile(q), nearest_rank(values, q), 0.01)


def test_exact_while_small_gives_the_values_themselves():
    values = [0.3, 0.1, 0.2, 0.4]
    sketch = sketch_of(values, max_exact=4)
    expect(sketch.exact) == True
    expect(sketch.quantiles([0.25, 0.5, 0.75, 1.0])) == [0.1, 0.2, 0.3, 0.4]
    expect(sketch.relative_error_bound) == 0.0
    sketch.add(0.5)
    expect(sketch.exact) == False
    expect(sketch.relative_error_bound) == relative_error_of(6)


def test_count_sum_min_max_are_exact():
    rng = random.Random(4)
    values = [rng.lognormvariate(-3, 2) for _ in range(5000)] + [0.0, -2.5]
    sketch = sketch_of(values, max_exact=0)
    expect((sketch.count, sketch.min, sketch.max)) == (len(values), min(values), max(values))
    assert math.isclose(sketch.sum, math.fsum(values), rel_tol=1e-12)
    expect(sketch.to_dict()["zero_count"]) == 1


# --- bounded buckets, scale reduction ----------------------------------------------------


def test_five_orders_of_magnitude_fit_at_scale_6_in_about_1100_buckets():
    values = [1e-4 * 10 ** (5 * i / 10_000) for i in range(10_001)]  # 100 us .. 10 s
    sketch = sketch_of(values, max_exact=0)
    expect(sketch.scale) == 6
    assert 1050 <= len(sketch.positive) <= 1110, len(sketch.positive)  # slots, 8 bytes each


def test_a_wider_range_than_the_bound_lowers_the_scale_and_says_so():
    sketch = Sketch(max_buckets=160, max_exact=0)
    for v in (1e-4, 1e-2, 1.0, 10.0):
        sketch.add(v)
    expect(sketch.scale < 6) == True
    d = sketch.to_dict()
    expect(len(d["positive"]["counts"]) <= 160) == True
    expect(sketch.relative_error_bound) == relative_error_of(sketch.scale)
    expect(sketch.relative_error_bound > 0.01) == True


@settings(max_examples=examples(100))
@given(value_lists, st.integers(min_value=2, max_value=64))
def test_buckets_never_exceed_the_bound_per_sign(values, max_buckets):
    sketch = sketch_of(values, max_buckets=max_buckets, max_exact=0)
    d = sketch.to_dict()
    expect(len(d["positive"]["counts"]) <= max_buckets) == True
    expect(len(d["negative"]["counts"]) <= max_buckets) == True
    expect(sum(d["positive"]["counts"]) + sum(d["negative"]["counts"]) + d["zero_count"]) == len(values)


# --- merging ----------------------------------------------------------------------------


def split(values, cuts):
    cuts = sorted({c % (len(values) + 1) for c in cuts})
    parts, start = [], 0
    for cut in cuts + [len(values)]:
        parts.append(values[start:cut])
        start = cut
    return parts


@settings(max_examples=examples(150), suppress_health_check=[HealthCheck.too_slow])
@given(
    value_lists,
    st.lists(st.integers(min_value=0), max_size=6),
    st.sampled_from([8, 64, 2048]),
    st.integers(min_value=0, max_value=40),
    st.randoms(),
)
def test_merging_parts_in_any_order_equals_one_sketch_of_all(values, cuts, max_buckets, max_exact, rnd):
    whole = sketch_of(values, max_buckets=max_buckets, max_exact=max_exact)
    parts = [
        sketch_of(part, max_buckets=max_buckets, max_exact=rnd.choice([0, max_exact])) for part in split(values, cuts)
    ]
    rnd.shuffle(parts)
    while len(parts) > 1:  # merge random neighbours: any grouping, any order
        i = rnd.randrange(len(parts) - 1)
        parts[i : i + 2] = [parts[i].merge(parts[i + 1])]
    merged = parts[0]
    assert same_sketch(merged.to_dict(), whole.to_dict(), values)
    for q in (0.5, 0.99):
        if merged.exact == whole.exact:
            expect(merged.quantile(q)) == whole.quantile(q)


@settings(max_examples=examples(100))
@given(value_lists, value_lists, st.sampled_from([8, 2048]))
def test_merge_is_commutative(a_values, b_values, max_buckets):
    ab = sketch_of(a_values, max_buckets=max_buckets, max_exact=0).merge(
        sketch_of(b_values, max_buckets=max_buckets, max_exact=0)
    )
    ba = sketch_of(b_values, max_buckets=max_buckets, max_exact=0).merge(
        sketch_of(a_values, max_buckets=max_buckets, max_exact=0)
    )
    assert same_sketch(ab.to_dict(), ba.to_dict(), a_values + b_values)


@settings(max_examples=examples(60))
@given(value_lists, value_lists, value_lists)
def test_merge_is_associative(a, b, c):
    def s(values):
        return sketch_of(values, max_buckets=16, max_exact=0)

    left = s(a).merge(s(b)).merge(s(c))
    right = s(a).merge(s(b).merge(s(c)))
    assert same_sketch(left.to_dict(), right.to_dict(), a + b + c)


def test_merging_an_empty_sketch_changes_nothing():
    a = sketch_of([1.0, 2.0], max_exact=0)
    before = a.to_dict()
    expect(a.merge(Sketch()).to_dict()) == before
    expect(Sketch().merge(a).to_dict()) == before


def test_sketches_of_different_errors_merge_at_the_coarser_scale():
    fine = sketch_of([1.0, 3.0], relative_error=0.001, max_exact=0)
    coarse = sketch_of([5.0], relative_error=0.05, max_exact=0)
    expect(fine.merge(coarse).scale) == scale_for(0.05)
    expect(fine.count) == 3


# --- weights --------------------------------------------------------------------------


@settings(max_examples=examples(100))
@given(value_lists, st.integers(min_value=1, max_value=20))
def test_a_weighted_value_counts_as_that_many_observations(values, weight):
    weighted = Sketch(max_exact=0)
    repeated = Sketch(max_exact=0)
    for v in values:
        weighted.add(v, weight)
        for _ in range(weight):
            repeated.add(v)
    assert same_sketch(weighted.to_dict(), repeated.to_dict(), values * weight)
    for q in QUANTILES:
        expect(weighted.quantile(q)) == repeated.quantile(q)


def test_fractional_weights_give_fractional_counts():
    sketch = Sketch()
    sketch.add(1.0, 2.5)
    sketch.add(2.0, 0.5)
    d = sketch.to_dict()
    expect((d["count"], d["sum"])) == (3.0, 3.5)
    expect(sketch.exact) == False  # a weighted value is not an exact sample


@pytest.mark.parametrize(
    "value, weight",
    [
        (float("nan"), 1),
        (float("inf"), 1),
        ("1", 1),
        (None, 1),
        (True, 1),
        (1.0, 0),
        (1.0, -1),
        (1.0, float("inf")),
        (1.0, float("nan")),
    ],
)
def test_bad_values_and_weights_raise_and_change_nothing(value, weight):
    sketch = sketch_of([1.0])
    with expect.raises(ValueError):
        sketch.add(value, weight)
    expect((sketch.count, sketch.sum)) == (1, 1.0)


def test_an_empty_sketch_has_no_quantile_and_a_dict_without_extremes():
    with expect.raises(ValueError):
        Sketch().quantile(0.5)
    expect(Sketch().to_dict()) == {
        "scale": 6,
        "zero_count": 0,
        "positive": {"offset": 0, "counts": []},
        "negative": {"offset": 0, "counts": []},
        "count": 0,
        "sum": 0.0,
        "min": None,
        "max": None,
    }


# --- dict form ---------------------------------------------------------------------------


def test_dict_form_is_exactly_the_documented_shape():
    sketch = sketch_of([-3.0, 0, 0.25, 0.5, 0.5], max_exact=0)
    d = sketch.to_dict()
    expect(set(d)) == {"scale", "zero_count", "positive", "negative", "count", "sum", "min", "max"}
    expect(d["scale"]) == 6
    expect(d["zero_count"]) == 1
    expect(d["positive"]["offset"]) == -129  # 0.25 = 2**-2 is the upper edge of bucket -2*64 - 1
    expect(d["positive"]["counts"][0]) == 1
    expect(d["positive"]["counts"][-1]) == 2
    expect(sum(d["positive"]["counts"])) == 3
    expect((d["count"], d["sum"], d["min"], d["max"])) == (5, -1.75, -3.0, 0.5)


@settings(max_examples=examples(100))
@given(value_lists, st.integers(min_value=0, max_value=20))
def test_dict_round_trip_and_merge_through_dicts(values, max_exact):
    sketch = sketch_of(values, max_exact=max_exact)
    d = sketch.to_dict()
    again = Sketch.from_dict(d)
    expect(again.to_dict()) == d
    half = len(values) // 2
    a, b = sketch_of(values[:half]), sketch_of(values[half:])
    merged = Sketch.from_dict(a.to_dict()).merge(Sketch.from_dict(b.to_dict()))
    assert same_sketch(merged.to_dict(), sketch_of(values, max_exact=0).to_dict(), values)


def test_json_round_trip():
    import json

    sketch = sketch_of([0.001, 0.002, 0.5, -1], max_exact=0)
    expect(Sketch.from_dict(json.loads(json.dumps(sketch.to_dict()))).to_dict()) == sketch.to_dict()


@pytest.mark.parametrize(
    "bad",
    [
        {},
        {"scale": 6},
        {"scale": 99, "count": 0, "sum": 0},
        {"scale": 6, "count": 1, "sum": 1, "min": 1, "max": 1, "positive": {"offset": 0, "counts": [-1]}},
    ],
)
def test_from_dict_refuses_what_is_not_a_sketch(bad):
    with expect.raises(ValueError):
        Sketch.from_dict(bad)


# --- sets ---------------------------------------------------------------------------------


def test_set_is_exact_up_to_its_bound():
    s = SetSketch(max_exact=100)
    s.update(["a", "b", "a", 1, 1, "1"])
    expect((s.count, s.exact)) == (4, True)  # 1 and "1" are different members
    expect(s.to_dict()) == {"exact": True, "count": 4, "members": [1, "1", "a", "b"]}


@pytest.mark.parametrize("n", [2_000, 30_000, 200_000])
def test_hyperloglog_estimate_is_within_three_standard_errors(n):
    s = SetSketch(max_exact=1000)
    s.update(f"user-{i}" for i in range(n))
    expect(s.exact) == False
    assert abs(s.count / n - 1) < 3 * s.standard_error, (n, s.count)
    expect(s.standard_error) == pytest.approx(0.0081, abs=1e-4)


def test_set_merge_is_the_union_and_equals_one_sketch_of_all():
    members = [f"m{i}" for i in range(5000)]
    whole = SetSketch()
    whole.update(members + members[:100])
    parts = [SetSketch(), SetSketch(), SetSketch()]
    parts[0].update(members[:2500])
    parts[1].update(members[2000:4000])
    parts[2].update(members[3900:] + members[:10])
    merged = parts[2].merge(parts[0]).merge(parts[1])
    expect(merged.to_dict()) == whole.to_dict()
    small = SetSketch()
    small.update(["x", "y"])
    other = SetSketch()
    other.update(["y", "z"])
    expect(small.merge(other).to_dict()["members"]) == ["x", "y", "z"]


def test_set_dict_round_trip_in_both_modes():
    for n in (10, 3000):
        s = SetSketch()
        s.update(range(n))
        d = s.to_dict()
        expect(SetSketch.from_dict(d).to_dict()) == d


def test_set_from_dict_refuses_bad_registers():
    with expect.raises(ValueError):
        SetSketch.from_dict({"exact": False, "precision": 14, "registers": "AAAA"})
    with expect.raises(ValueError):
        SetSketch.from_dict({"exact": False, "precision": 14, "registers": "not base64!"})


@settings(max_examples=examples(150), suppress_health_check=[HealthCheck.too_slow])
@given(
    st.lists(values_strategy, min_size=1, max_size=600),
    st.lists(st.integers(min_value=0), max_size=5),
    st.sampled_from([4, 16, 2048]),
    st.integers(min_value=0, max_value=100),
)
def test_adding_in_batches_of_any_size_equals_adding_one_by_one(values, cuts, max_buckets, max_exact):
    """Batches of one sign take a bulk path (counted in C); the result must not depend on it."""
    one_by_one = sketch_of(values, max_buckets=max_buckets, max_exact=max_exact)
    batched = Sketch(max_buckets=max_buckets, max_exact=max_exact)
    for part in split(sorted(values) if len(cuts) % 2 else values, cuts):
        batched.add_many(part)
    assert same_sketch(batched.to_dict(), one_by_one.to_dict(), values)


def test_from_dict_lowers_the_scale_once_and_shifts_every_index_by_the_scale_in_force():
    """Issue 22, item 1: 3,500 contiguous buckets went to scale -1,946, one downscale per bucket."""
    from zibrato.sketch import MIN_SCALE

    wide = {
        "scale": 6,
        "zero_count": 0,
        "positive": {"offset": 100, "counts": [1] * 100_000},
        "negative": {"offset": -50, "counts": [2] * 3500},
        "count": 107_000,
        "sum": 1.0,
        "min": -1.0,
        "max": 1.0,
    }
    sketch = Sketch.from_dict(wide, max_buckets=2048)
    assert MIN_SCALE <= sketch.scale < 6
    assert len(sketch.positive) <= 2048 and len(sketch.negative) <= 2048
    assert sum(sketch.positive.counts) == 100_000 and sum(sketch.negative.counts) == 7000
    shift = 6 - sketch.scale  # each bucket went where i >> shift says, on both signs
    assert sketch.positive.offset == 100 >> shift
    assert sketch.negative.offset == -50 >> shift
    expected = {}
    for i in range(100, 100_100):
        expected[i >> shift] = expected.get(i >> shift, 0) + 1
    assert dict(sketch.positive.items()) == expected


def test_a_sketch_read_back_equals_the_sketch_built_at_the_smaller_table():
    rng = random.Random(7)
    values = [rng.lognormvariate(0, 4) for _ in range(5000)] + [-rng.lognormvariate(0, 6) for _ in range(2000)]
    fine = Sketch(max_exact=0, max_buckets=8192)
    fine.add_many(values)
    direct = Sketch(max_exact=0, max_buckets=128)
    direct.add_many(values)
    read = Sketch.from_dict(fine.to_dict(), max_buckets=128)
    assert read.scale == direct.scale
    assert read.positive.items() == direct.positive.items()
    assert read.negative.items() == direct.negative.items()


def test_from_dict_reads_the_coarse_scales_a_wide_sketch_reaches():
    coarse = {
        "scale": -8,
        "zero_count": 1,
        "positive": {"offset": 0, "counts": [2]},
        "count": 3,
        "sum": 2.0,
        "min": 0.0,
        "max": 1.0,
    }
    sketch = Sketch.from_dict(coarse)
    assert (sketch.scale, sketch.count, sketch.quantile(1.0)) == (-8, 3, 1.0)
