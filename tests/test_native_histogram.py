"""Native histograms from sketches, the protobuf exposition and the classic bounds by unit: pure code, no sockets."""

from __future__ import annotations

import math
import random

import pytest
from expecter import expect
from google.protobuf.internal.decoder import _DecodeVarint32
from prometheus_client import exposition
from prometheus_client.parser import text_string_to_metric_families

from support.summaries import counter, gauge, sketch_of, timer
from zibrato.backends.classic_buckets import (
    BYTES_BUCKETS,
    DEFAULT_BUCKETS,
    bounds_for,
    decade_bounds,
    parse_bucket_rule,
)
from zibrato.backends.native_histogram import MAX_SCHEMA, NativeHistogram, deltas, spans_and_counts
from zibrato.backends.prometheus_mapping import PrometheusState
from zibrato.backends.prometheus_proto import metrics_pb2 as pb
from zibrato.backends.prometheus_protobuf import CONTENT_TYPE, wants_protobuf
from zibrato.backends.prometheus_protobuf import exposition as protobuf_exposition
from zibrato.sketch import Sketch

SCRAPER_ACCEPT = (  # what Prometheus 2.42 sends with --enable-feature=native-histograms
    "application/vnd.google.protobuf;proto=io.prometheus.client.MetricFamily;encoding=delimited;q=0.7,"
    "text/plain;version=0.0.4;q=0.3,*/*;q=0.2"
)


def families(body: bytes) -> dict[str, pb.MetricFamily]:
    """The delimited MetricFamily messages of a protobuf exposition, by name."""
    out, position = {}, 0
    while position < len(body):
        size, position = _DecodeVarint32(body, position)
        family = pb.MetricFamily()
        family.ParseFromString(body[position : position + size])
        out[family.name] = family
        position += size
    return out


def expand(spans, counts) -> dict[int, float]:
    """Prometheus index -> count, from spans and absolute counts."""
    out, index, i = {}, 0, 0
    for n, (offset, length) in enumerate(spans):
        index = offset if n == 0 else index + offset
        for _ in range(length):
            out[index] = counts[i]
            index, i = index + 1, i + 1
    return out


def undelta(ds) -> list[int]:
    out, running = [], 0
    for d in ds:
        running += d
        out.append(running)
    return out


# --- spans, deltas and the index shift ----------------------------------------------------


def test_spans_and_deltas_follow_the_specs_example():
    # Prometheus buckets -2:3, -1:5, 2:1, 4:3, 5:2 are OpenTelemetry buckets one lower
    buckets = {-3: 3, -2: 5, 1: 1, 3: 3, 4: 2}
    spans, counts = spans_and_counts(buckets)
    expect(spans) == [(-2, 2), (2, 1), (1, 2)]
    expect(deltas(counts)) == [3, 2, -4, 2, -1]


def test_a_value_lands_in_the_prometheus_bucket_that_covers_it():
    for value in (0.001, 0.003, 1.0, 2.0, 37.5, 1e-6):
        native = NativeHistogram()
        native.add(sketch_of([value]))
        [(index, count)] = [(i + 1, n) for i, n in native.positive.items()]  # Prometheus index
        base = 2 ** (2**-native.schema)
        expect(base ** (index - 1) < value <= base**index * (1 + 1e-12)) == True
        expect(count) == 1


# --- schema, budget, cumulative ---------------------------------------------------------------


def test_the_budget_lowers_the_schema_and_keeps_every_count():
    rng = random.Random(7)
    values = [rng.lognormvariate(-3, 1.5) for _ in range(5000)]
    native = NativeHistogram(max_buckets=160)
    native.add(sketch_of(values, scale=6))

    expect(native.buckets_held) <= 160
    expect(native.schema) < 6
    expect(sum(native.positive.values())) == 5000
    expect(native.count) == 5000
    # the lowered histogram is exactly the sketch of the same values at that scale
    expect(native.positive) == _dense(sketch_of(values, scale=native.schema))


def _dense(sketch: dict) -> dict[int, float]:
    part = sketch["positive"]
    return {part["offset"] + i: n for i, n in enumerate(part["counts"]) if n}


def test_the_schema_only_goes_down_and_counts_are_cumulative():
    native = NativeHistogram(max_buckets=10_000)
    native.add(sketch_of([0.5, 1.5], scale=6))
    native.add(sketch_of([0.7], scale=3))  # a coarser sketch: the series goes down to 3
    expect(native.schema) == 3
    native.add(sketch_of([0.9, 3.0], scale=6))  # a finer one is brought down, never up
    expect(native.schema) == 3
    expect(native.count) == 5
    expect(native.positive) == _dense(sketch_of([0.5, 1.5, 0.7, 0.9, 3.0], scale=3))


def test_a_scale_above_eight_is_lowered_to_prometheus_highest_schema():
    native = NativeHistogram()
    native.add(sketch_of([0.25, 0.3], scale=10))
    expect(native.schema) == MAX_SCHEMA
    expect(native.positive) == _dense(sketch_of([0.25, 0.3], scale=8))


def test_zero_and_negative_values_keep_their_buckets():
    native = NativeHistogram()
    native.add(sketch_of([0.0, 0.0, -2.0, 3.0]))
    expect((native.zero_count, sum(native.negative.values()), sum(native.positive.values()))) == (2, 1, 1)


# --- the protobuf exposition ----------------------------------------------------------------


def test_the_scrape_format_is_chosen_only_when_asked_for():
    expect(wants_protobuf(SCRAPER_ACCEPT)) == True
    expect(wants_protobuf("text/plain;version=0.0.4;q=0.5,*/*;q=0.1")) == False
    expect(wants_protobuf("application/vnd.google.protobuf;proto=io.prometheus.client.MetricFamily")) == False
    expect(wants_protobuf(SCRAPER_ACCEPT.replace("q=0.7", "q=0"))) == False
    expect(wants_protobuf(None)) == False
    expect(CONTENT_TYPE).contains("encoding=delimited")


def test_timers_are_native_histograms_with_their_classic_buckets_beside():
    state = PrometheusState()
    values = [0.001, 0.003, 0.125, 0.1, 5.0, 0.0001]
    state.update([timer("db.query", values[:3]), counter("signup", 3), gauge("depth", 7)])
    state.update([timer("db.query", values[3:]), counter("signup", 2)])

    got = families(protobuf_exposition(state))
    expect(sorted(got)) == ["db_query_seconds", "depth", "signup_total"]
    expect(got["signup_total"].metric[0].counter.value) == 5
    expect(got["depth"].metric[0].gauge.value) == 7
    h = got["db_query_seconds"].metric[0].histogram
    expect(got["db_query_seconds"].type) == pb.HISTOGRAM
    expect((h.sample_count, h.schema)) == (6, 6)
    expect(h.sample_sum) == pytest.approx(sum(values))
    native = expand([(s.offset, s.length) for s in h.positive_span], undelta(h.positive_delta))
    expect(sum(native.values())) == 6
    base = 2 ** (2**-6)
    for value in values:  # each value is counted in the bucket (base**(i-1), base**i] that holds it
        expect(any(base ** (i - 1) < value <= base**i * (1 + 1e-12) for i in native)) == True
    classic = {b.upper_bound: b.cumulative_count for b in h.bucket}
    for bound in DEFAULT_BUCKETS:
        expect((bound, classic[bound])) == (bound, sum(v <= bound for v in values))


def test_a_histogram_without_data_is_still_native_by_its_no_op_span():
    state = PrometheusState()
    state.update([timer("idle", [])])
    h = families(protobuf_exposition(state))["idle_seconds"].metric[0].histogram
    expect([(s.offset, s.length) for s in h.positive_span]) == [(0, 0)]
    expect(h.zero_threshold) > 0


def test_the_text_exposition_is_unchanged_by_the_native_state():
    state = PrometheusState()
    state.update([timer("db.query", [0.002, 0.5])])
    text = exposition.generate_latest(type("C", (), {"collect": lambda self: state.families()})()).decode()
    names = {s.name for f in text_string_to_metric_families(text) for s in f.samples}
    expect(names) == {"db_query_seconds_bucket", "db_query_seconds_count", "db_query_seconds_sum"}


# --- classic bounds by unit, and names ------------------------------------------------------


def test_a_histogram_of_bytes_never_lands_whole_in_inf():
    # what a new user tried: 9 of 10 observations landed in +Inf with the seconds bounds
    state = PrometheusState()
    state.update([timer("resp.size", [100.0 * i for i in range(10)], type_="histogram", unit="bytes")])
    [family] = [f for f in state.families() if f.name == "resp_size_bytes"]
    buckets = {s.labels["le"]: s.value for s in family.samples if s.name.endswith("_bucket")}
    expect(buckets["64.0"]) == 1  # the 0
    expect(buckets["1024.0"]) == 10
    expect(buckets["+Inf"] - buckets["1.073741824e+09"]) == 0


def test_a_unit_less_histogram_gets_decades_over_its_first_range_fixed_for_its_life():
    state = PrometheusState()
    state.update([timer("rows", [3.0, 40.0, 250.0], type_="histogram")])
    state.update([timer("rows", [9000.0], type_="histogram")])
    [family] = [f for f in state.families() if f.name == "rows"]
    buckets = {s.labels["le"]: s.value for s in family.samples if s.name.endswith("_bucket")}
    expect(list(buckets)) == ["0.1", "1.0", "10.0", "100.0", "1000.0", "10000.0", "100000.0", "+Inf"]
    expect((buckets["10.0"], buckets["100.0"], buckets["1000.0"], buckets["10000.0"])) == (1, 2, 3, 4)


def test_bounds_by_unit_and_by_rule():
    expect(bounds_for("timer", "db.query", None)) == DEFAULT_BUCKETS
    expect(bounds_for("histogram", "wait", "seconds")) == DEFAULT_BUCKETS
    expect(bounds_for("histogram", "resp.size", "bytes")) == BYTES_BUCKETS
    expect((BYTES_BUCKETS[0], BYTES_BUCKETS[-1])) == (64, 2**30)
    expect(bounds_for("histogram", "rows", None)) == None
    rules = [parse_bucket_rule("db.*=0.01,0.1,1"), parse_bucket_rule("5,50")]
    expect(bounds_for("timer", "db.query", None, rules)) == (0.01, 0.1, 1.0)
    expect(bounds_for("histogram", "rows", None, rules)) == (5.0, 50.0)
    expect(decade_bounds(0.0, 5.0)) == (0.0, 0.001, 0.01, 0.1, 1.0, 10.0, 100.0, 1000.0)
    for bad in ("=1,2", "db.*=", "db.*=1,x"):
        with pytest.raises(ValueError):
            parse_bucket_rule(bad)


def test_the_sketch_of_the_aggregator_reaches_the_native_histogram_whole():
    rng = random.Random(3)
    values = [rng.lognormvariate(0, 0.3) for _ in range(2000)]
    sketch = Sketch(max_exact=0)
    sketch.add_many(values)
    state = PrometheusState(max_native_buckets=2048)
    state.update([{**timer("t", []), "count": 2000, "sum": math.fsum(values), "sketch": sketch.to_dict()}])
    h = families(protobuf_exposition(state))["t_seconds"].metric[0].histogram
    native = expand([(s.offset, s.length) for s in h.positive_span], undelta(h.positive_delta))
    as_sketch = sketch.to_dict()["positive"]
    expect(native) == {as_sketch["offset"] + i + 1: n for i, n in enumerate(as_sketch["counts"]) if n}
