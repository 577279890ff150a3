"""The spec-enforcing OTLP receiver catches what it claims to (so the OTLP tests can fail)."""

from __future__ import annotations

import gzip

import pytest
import requests
from expecter import expect
from opentelemetry.proto.collector.metrics.v1.metrics_service_pb2 import (
    ExportMetricsServiceRequest,
    ExportMetricsServiceResponse,
)
from opentelemetry.proto.common.v1.common_pb2 import AnyValue, ArrayValue, KeyValue
from opentelemetry.proto.metrics.v1 import metrics_pb2 as pb

from support.fake_otlp import Fail, FakeOtlp, Partial, Violation, status_message

T0 = 1_800_000_000 * 10**9
MINUTE = 60 * 10**9


def request(*metrics, service="svc") -> ExportMetricsServiceRequest:
    r = ExportMetricsServiceRequest()
    rm = r.resource_metrics.add()
    if service:
        rm.resource.attributes.add(key="service.name").value.string_value = service
    sm = rm.scope_metrics.add()
    sm.scope.name = "zibrato"
    sm.metrics.extend(metrics)
    return r


def a_sum(
    value=1.0,
    start=T0,
    end=T0 + MINUTE,
    temporality=pb.AGGREGATION_TEMPORALITY_DELTA,
    monotonic=True,
    attributes=(("k", "v"),),
) -> pb.Metric:
    m = pb.Metric(name="hits")
    m.sum.aggregation_temporality = temporality
    m.sum.is_monotonic = monotonic
    m.sum.data_points.add(
        start_time_unix_nano=start,
        time_unix_nano=end,
        as_double=value,
        attributes=[KeyValue(key=k, value=AnyValue(string_value=v)) for k, v in attributes],
    )
    return m


def check(*requests_) -> None:
    fake = FakeOtlp()
    for r in requests_:
        fake._streams.update(fake._check(r))


@pytest.mark.parametrize(
    "broken, message",
    [
        (request(a_sum(), service=None), "service.name"),
        (request(a_sum(temporality=pb.AGGREGATION_TEMPORALITY_UNSPECIFIED)), "temporality unspecified"),
        (request(a_sum(value=-1)), "negative"),
        (request(a_sum(start=T0 + 2 * MINUTE)), "after time_unix_nano"),
        (request(a_sum(start=0)), "start_time_unix_nano not set"),
        (request(a_sum(value=float("nan"))), "non-finite"),
        (request(a_sum(attributes=(("k", "a"), ("k", "b")))), "repeated"),
        (request(a_sum(attributes=(("", "a"),))), "empty key"),
        (request(a_sum(), a_sum()), "twice in one request"),
        (request(pb.Metric(name="nothing")), "no data"),
    ],
)
def test_each_rule_is_enforced(broken, message):
    with pytest.raises(Violation, match=message):
        check(broken)


def test_array_attribute_values_are_refused():
    m = a_sum()
    m.sum.data_points[0].attributes.add(key="list").value.array_value.CopyFrom(ArrayValue())
    with pytest.raises(Violation, match="scalar"):
        check(request(m))


def test_a_cumulative_monotonic_sum_must_not_decrease_but_may_reset():
    cumulative = pb.AGGREGATION_TEMPORALITY_CUMULATIVE
    first = request(a_sum(5, T0, T0 + MINUTE, cumulative))
    with pytest.raises(Violation, match="decreased"):
        check(first, request(a_sum(4, T0, T0 + 2 * MINUTE, cumulative)))
    check(first, request(a_sum(1, T0 + MINUTE, T0 + 2 * MINUTE, cumulative)))  # a reset: new start


def test_transport_rules_and_scripted_answers():
    body = request(a_sum()).SerializeToString()
    with FakeOtlp() as fake:
        post = lambda data, **headers: requests.post(fake.url, data=data, timeout=5, headers=headers)  # noqa: E731

        expect(post(body, **{"Content-Type": "application/json"}).status_code) == 415
        expect(post(b"\xff\xff", **{"Content-Type": "application/x-protobuf"}).status_code) == 400
        expect(fake.violations[-1]).contains("undecodable")
        fake.violations.clear()

        fake.script(Fail(503, "later", retry_after=3), Partial(2, "two too old"))
        answer = post(gzip.compress(body), **{"Content-Type": "application/x-protobuf", "Content-Encoding": "gzip"})
        expect((answer.status_code, answer.headers["Retry-After"])) == (503, "3")
        expect(status_message(answer.content)) == "later"
        answer = post(body, **{"Content-Type": "application/x-protobuf"})
        expect(answer.status_code) == 200
        response = ExportMetricsServiceResponse.FromString(answer.content)
        expect((response.partial_success.rejected_data_points, response.partial_success.error_message)) == (
            2,
            "two too old",
        )
        expect([p.value for p in fake.points()]) == [1.0]
        expect(fake.violations) == []
