"""The OTLP and Prometheus mappings on the real aggregator's sketches (zibrato.sketch, issue 19).

Skipped until the sketch branch is merged; then it checks the contract end to
end: the spec-enforcing receiver accepts what the OTLP mapping makes of real
summaries (both temporalities), and the Prometheus buckets at the default
power-of-two bounds equal the counts of the raw values exactly.
"""

from __future__ import annotations

import random

import pytest
from expecter import expect

pytest.importorskip("zibrato.sketch", reason="zibrato.sketch arrives with the sketch branch (issue 19)")

from support.fake_otlp import FakeOtlp, flatten
from zibrato.aggregation import Aggregator
from zibrato.backends.otlp_mapping import OtlpMapper
from zibrato.backends.prometheus_mapping import DEFAULT_BUCKETS, PrometheusState

END = 1_800_000_060.0


def summaries(values):
    aggregator = Aggregator()
    aggregator.add_records(
        [
            ("t", "db.query", values, "api", ("env:prod",)),
            ("c", "signup", [1, 2, 3], None, ()),
            ("h", "size", [-5.0, 0.0, 1024.0, 3e6], None, (), 2.5, "bytes"),
            ("s", "users", ["a", "b", "a", 7], None, ()),
        ]
    )
    return aggregator.flush(END, 60.0)


@pytest.mark.parametrize("temporality", ["delta", "cumulative"])
def test_real_sketches_pass_the_spec_enforcing_receiver(temporality):
    rng = random.Random(3)
    made = summaries([rng.lognormvariate(-5, 1) for _ in range(20_000)])
    fake, mapper = FakeOtlp(), OtlpMapper(temporality=temporality)

    for i in range(2):
        for request in mapper.requests(END - 60 + 60 * i, END + 60 * i, made):
            fake._streams.update(fake._check(request))

    points = {p.metric: p for p in flatten(request)}
    expect(points["db.query"].proto.count) == 20_000 * (1 if temporality == "delta" else 2)
    expect(points["size"].unit) == "bytes"
    expect(points["users"].value) == 3


def test_prometheus_buckets_equal_the_raw_counts_at_the_default_bounds():
    rng = random.Random(4)
    values = [rng.lognormvariate(-5, 1) for _ in range(50_000)]
    state = PrometheusState()
    state.update(summaries(values))

    [timer] = [s for s in state.lookup("db.query", "api")]
    expect(list(timer.buckets[:-1])) == [
        sum(1 for v in values if low < v <= high) for low, high in zip((-1.0,) + DEFAULT_BUCKETS, DEFAULT_BUCKETS)
    ]
