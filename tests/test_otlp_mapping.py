"""The OTLP mapping: summaries -> ExportMetricsServiceRequest, checked without sockets."""

from __future__ import annotations

import math

import pytest
from expecter import expect
from opentelemetry.proto.metrics.v1 import metrics_pb2 as pb

from support.fake_otlp import FakeOtlp, Violation, flatten
from support.summaries import counter, gauge, set_, sketch_of, timer
from zibrato.backends.otlp_mapping import (
    ExpHistogram,
    OtlpMapper,
    attribute_pairs,
    downscale,
    nanos,
    parse_key_values,
    resource_attributes,
)

START, END = 1_800_000_000.0, 1_800_000_060.0


def one_request(mapper, summaries, start=START, end=END):
    [request] = mapper.requests(start, end, summaries)
    return request


def checked(requests):
    """Every request passes the spec-enforcing receiver's rules, in order (streams carry over)."""
    fake = FakeOtlp()
    for request in requests:
        fake._streams.update(fake._check(request))
    return [p for r in requests for p in flatten(r)]


def test_counter_is_a_delta_monotonic_sum_over_the_interval():
    [point] = checked([one_request(OtlpMapper(), [counter("signup", 7.5, count=3)])])

    expect(point.kind) == "sum"
    expect(point.temporality) == pb.AGGREGATION_TEMPORALITY_DELTA
    expect(point.monotonic) == True
    expect(point.value) == 7.5
    expect((point.start, point.time)) == (nanos(START), nanos(END))
    expect(point.time - point.start) == 60 * 10**9


def test_cumulative_counters_keep_running_totals_from_the_first_start():
    mapper = OtlpMapper(temporality="cumulative")
    requests = [
        one_request(mapper, [counter("hits", v)], START + 60 * i, END + 60 * i) for i, v in enumerate([2, 0, 5])
    ]

    points = checked(requests)

    expect([p.value for p in points]) == [2, 2, 7]
    expect({p.start for p in points}) == {nanos(START)}
    expect([p.temporality for p in points]) == [pb.AGGREGATION_TEMPORALITY_CUMULATIVE] * 3


def test_a_cumulative_series_that_stops_being_reported_restarts_from_zero():
    mapper = OtlpMapper(temporality="cumulative")
    first = one_request(mapper, [counter("hits", 4)], START, END)
    one_request(mapper, [counter("other", 1)], END, END + 60)  # "hits" expired by the worker
    again = one_request(mapper, [counter("hits", 1)], END + 60, END + 120)

    points = checked([first, again])

    expect([(p.value, p.start) for p in points]) == [(4, nanos(START)), (1, nanos(END + 60))]


def test_a_negative_increment_makes_the_sum_non_monotonic():
    [point] = checked([one_request(OtlpMapper(), [counter("balance", -3)])])

    expect((point.monotonic, point.value)) == (False, -3)


def test_gauges_and_sets_are_gauges():
    points = checked([one_request(OtlpMapper(), [gauge("queue.depth", -4.25), set_("users", 17)])])

    expect([(p.metric, p.kind, p.value) for p in points]) == [("queue.depth", "gauge", -4.25), ("users", "gauge", 17)]
    expect(points[1].proto.WhichOneof("value")) == "as_int"


def test_a_timer_is_an_exponential_histogram_carrying_its_sketch():
    values = [0.001 * (1 + i) for i in range(100)]
    summary = timer("db.query", values, scale=5)

    [point] = checked([one_request(OtlpMapper(), [summary])])

    h = point.proto
    expect((point.kind, point.unit)) == ("exponential_histogram", "s")
    expect((h.count, h.scale, h.zero_count)) == (100, 5, 0)
    expect(h.positive.offset) == summary["sketch"]["positive"]["offset"]
    expect(list(h.positive.bucket_counts)) == summary["sketch"]["positive"]["counts"]
    expect((h.min, h.max)) == (0.001, 0.1)
    expect(h.sum) == pytest.approx(sum(values))


def test_negative_and_zero_values_of_a_histogram_keep_their_unit():
    summary = timer("temperature", [-12.5, -3.0, 0.0, 0.0, 4.0, 20.0], type_="histogram", unit="Cel")

    [point] = checked([one_request(OtlpMapper(), [summary])])

    h = point.proto
    expect(point.unit) == "Cel"
    expect((h.count, h.zero_count, sum(h.negative.bucket_counts), sum(h.positive.bucket_counts))) == (6, 2, 2, 2)
    expect((h.min, h.max)) == (-12.5, 20.0)


def test_fractional_weighted_counts_are_rounded_and_count_is_their_sum():
    summary = timer("sampled", [0.01, 0.02, 0.5], weights=[2.5, 2.5, 1.4])

    [point] = checked([one_request(OtlpMapper(), [summary])])

    h = point.proto
    # running sums 2.5, 5.0, 6.4 round to 2, 5, 6: each bucket within 1, the total within 0.5
    expect([c for c in h.positive.bucket_counts if c]) == [2, 3, 1]
    expect(h.count) == 6


def test_many_half_counts_do_not_bias_the_total():
    summary = timer("sampled", [0.001 * 1.5**i for i in range(40)], weights=[1.5] * 40)

    [point] = checked([one_request(OtlpMapper(), [summary])])

    expect(point.proto.count) == 60


def test_an_idle_timer_is_an_empty_histogram():
    [point] = checked([one_request(OtlpMapper(), [timer("idle", [])])])

    expect((point.proto.count, point.proto.HasField("min"), point.proto.HasField("sum"))) == (0, False, False)


def test_cumulative_histograms_merge_at_the_smaller_scale():
    mapper = OtlpMapper(temporality="cumulative")
    first = one_request(mapper, [timer("t", [0.01, 0.02], scale=6)], START, END)
    second = one_request(mapper, [timer("t", [0.5, 3.0, 0.011], scale=4)], END, END + 60)

    points = checked([first, second])

    merged = points[1].proto
    expect((merged.count, merged.scale, merged.start_time_unix_nano)) == (5, 4, nanos(START))
    expect((merged.min, merged.max)) == (0.01, 3.0)
    alone = sketch_of([0.01, 0.02, 0.5, 3.0, 0.011], scale=4)["positive"]
    expect((merged.positive.offset, list(merged.positive.bucket_counts))) == (alone["offset"], alone["counts"])


def test_downscale_merges_pairs_of_buckets_with_floor_indexes():
    expect(downscale(-3, [1, 2, 3, 4], 1)) == (-2, [1, 5, 4])
    expect(downscale(5, [1], 3)) == (0, [1])


def test_a_timer_without_a_sketch_becomes_a_summary_of_its_percentiles():
    summary = timer("legacy", [0.1, 0.2, 0.3])
    del summary["sketch"]

    [point] = checked([one_request(OtlpMapper(), [summary])])

    expect(point.kind) == "summary"
    expect([(q.quantile, q.value) for q in point.proto.quantile_values]) == [
        (0.0, 0.1),
        (0.5, 0.2),
        (0.99, 0.3),
        (1.0, 0.3),
    ]


def test_attributes_are_source_level_and_tags_with_unique_keys():
    summary = counter("c", 1, source="web-1", tags=["env:prod", "canary", "source:tagged", "env:eu"], level="info")

    expect(attribute_pairs(summary)) == [
        ("source", "web-1"),
        ("level", "info"),
        ("env", "prod,eu"),
        ("canary", "true"),
        ("tag.source", "tagged"),
    ]
    checked([one_request(OtlpMapper(), [summary])])


def test_points_of_one_name_share_a_metric_and_requests_split_at_max_points():
    summaries = [counter("hits", i, tags=[f"shard:{i}"]) for i in range(7)] + [gauge("g", 1)]

    requests = OtlpMapper().requests(START, END, summaries, max_points=3)

    expect(
        [
            sum(
                len(m.sum.data_points) + len(m.gauge.data_points)
                for m in r.resource_metrics[0].scope_metrics[0].metrics
            )
            for r in requests
        ]
    ) == [3, 3, 2]
    points = checked(requests)
    expect(sorted(p.value for p in points if p.metric == "hits")) == list(range(7))


def test_resource_and_scope():
    resource = resource_attributes(
        environ={"OTEL_RESOURCE_ATTRIBUTES": "deployment.environment=prod,team=a%20b", "OTEL_SERVICE_NAME": "checkout"},
        host_name="box",
    )
    [point] = checked([one_request(OtlpMapper(resource=resource), [gauge("g", 1)])])

    expect(point.resource) == {
        "deployment.environment": "prod",
        "team": "a b",
        "host.name": "box",
        "service.name": "checkout",
    }
    expect(point.scope[0]) == "zibrato"
    expect(resource_attributes("flag", {"OTEL_SERVICE_NAME": "env"}, "h")["service.name"]) == "flag"
    expect(resource_attributes(None, {}, "h")["service.name"]) == "zibrato"


def test_header_lists_parse_and_errors_do_not_echo_values():
    expect(parse_key_values("Authorization=Bearer%20abc, x-team = ops")) == {
        "Authorization": "Bearer abc",
        "x-team": "ops",
    }
    with pytest.raises(ValueError) as error:
        parse_key_values("a=1,secret-token-without-equals")
    expect(str(error.value)).does_not_contain("secret")


def test_the_receiver_catches_a_count_that_does_not_match_the_buckets():
    request = one_request(OtlpMapper(), [timer("t", [0.1, 0.2])])
    request.resource_metrics[0].scope_metrics[0].metrics[0].exponential_histogram.data_points[0].count = 3

    with pytest.raises(Violation, match="count 3"):
        checked([request])


def test_the_receiver_catches_buckets_shifted_by_one():
    request = one_request(OtlpMapper(), [timer("t", [0.1, 0.2])])
    request.resource_metrics[0].scope_metrics[0].metrics[0].exponential_histogram.data_points[0].positive.offset += 1

    with pytest.raises(Violation, match="lowest populated bucket"):
        checked([request])


def test_the_receiver_catches_overlapping_delta_intervals():
    mapper = OtlpMapper()
    with pytest.raises(Violation, match="overlaps"):
        checked([one_request(mapper, [counter("c", 1)]), one_request(mapper, [counter("c", 1)], START + 30, END + 30)])


def test_exp_histogram_from_sketch_ignores_empty_edge_buckets():
    h = ExpHistogram.from_sketch(
        {
            "scale": 2,
            "zero_count": 0,
            "positive": {"offset": 3, "counts": [0, 0, 2, 0]},
            "negative": {"offset": 0, "counts": []},
            "count": 2,
            "sum": 1.0,
            "min": 0.5,
            "max": 0.5,
        }
    )
    expect((h.positive, h.count)) == ((5, [2]), 2)
    expect(math.isfinite(h.sum)) == True
