"""Issue 22: arbitrary summary records either are refused at decode, counted by reason, or flush
through every destination's mapping without an exception.

Hypothesis builds summary maps two ways: honest ones (a real sketch of
generated values, as a forwarder sends) with one field forged, and maps of
arbitrary fields. Each travels in a real wire message beside an honest
counter, through :func:`zibrato.protocol.decode_plain` as the worker calls it.
"""

from __future__ import annotations

import json
import math

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from support.lanes import examples
from support.summaries import sketch_of
from zibrato import protocol
from zibrato.aggregation import Aggregator, LevelAggregators
from zibrato.backends.console import json_lines, table
from zibrato.backends.graphite import GraphiteMapping
from zibrato.backends.influxdb import InfluxMapping
from zibrato.backends.librato import LibratoMapping
from zibrato.backends.otlp_mapping import OtlpMapper
from zibrato.backends.prometheus_mapping import PrometheusState
from zibrato.backends.statsd import StatsdMapping
from zibrato.destination import Interval
from zibrato.sketch import SetSketch
from zibrato.summary_check import REASONS
from zibrato.web.view import History

NOW = 1_800_000_000.0
INT64 = st.integers(min_value=-(2**63), max_value=2**63 - 1)
NUMBERS = st.one_of(
    st.floats(allow_nan=True, allow_infinity=True),
    st.integers(min_value=-(10**6), max_value=10**6),
    INT64,
    st.sampled_from([0, 1, -1, -5, -1e9, 1e300, 1e308, 0.5]),
)
JUNK = st.one_of(NUMBERS, st.none(), st.text(max_size=5), st.booleans(), st.lists(st.integers(), max_size=3))
VALUES = st.lists(
    st.one_of(
        st.floats(min_value=-1e12, max_value=1e12, allow_nan=False),
        st.floats(min_value=1e-300, max_value=1e150),  # squares stay finite, as a forwarder sends them
    ),
    min_size=1,
    max_size=40,
)


def _fitting_scale(values: list[float], scale: int, most: int = 2048) -> int:
    """The scale, lowered until the values' buckets fit ``most`` per sign (as a real sketch keeps them)."""
    magnitudes = [abs(v) for v in values if v]
    while magnitudes and scale > -10:
        span = math.log2(max(magnitudes)) - math.log2(min(magnitudes))
        if span * 2**scale < most - 2:
            break
        scale -= 1
    return scale


@st.composite
def honest_then_forged(draw: st.DrawFn, forge: bool = True) -> dict:
    """A summary a forwarder could send, then (usually) one field replaced by something drawn."""
    kind = draw(st.sampled_from("cgths"))
    start = NOW - draw(st.sampled_from([1.0, 10.0, 60.0]))
    summary: dict = {"kind": kind, "start": start, "end": NOW}
    if kind == "c":
        summary.update(sum=draw(st.floats(-1e6, 1e6)), count=draw(st.integers(0, 1000)))
    elif kind == "g":
        values = draw(VALUES)
        summary.update(
            last=values[-1], time=NOW - 0.5, count=len(values), min=min(values), max=max(values), sum=sum(values)
        )
    elif kind in "th":
        values = draw(VALUES)
        if draw(st.booleans()):
            summary.update(sum_squares=sum(v * v for v in values), values=values)
        else:
            scale = _fitting_scale(values, draw(st.integers(-10, 20)))
            summary.update(sum_squares=math.fsum(v * v for v in values), sketch=sketch_of(values, scale))
        if kind == "h" and draw(st.booleans()):
            summary["unit"] = draw(st.sampled_from(["ms", "By", "bad unit", ""]))
    elif draw(st.booleans()):
        summary["sketch"] = {"exact": True, "count": 3, "members": draw(st.lists(st.text(min_size=1), max_size=5))}
    else:  # a HyperLogLog sketch, of the workers' precision or another
        members = SetSketch(max_exact=1, precision=draw(st.sampled_from([12, 14])))
        members.update(draw(st.lists(INT64, min_size=2, max_size=20, unique=True)))  # 64-bit: msgpack
        summary["sketch"] = members.to_dict()
    if forge and draw(st.integers(0, 4)):  # mostly forged
        target = summary
        if "sketch" in summary and draw(st.booleans()):
            target = summary["sketch"]
            for side in ("positive", "negative"):
                if side in target and draw(st.booleans()):
                    target = target[side]
                    break
        key = draw(st.sampled_from(sorted(target) + ["scale", "zero_count", "count", "offset", "counts", "extra"]))
        if key == "counts":
            target[key] = draw(st.lists(NUMBERS, max_size=30))
        else:
            target[key] = draw(st.one_of(JUNK, NUMBERS))
    return summary


ARBITRARY = st.dictionaries(
    st.sampled_from(
        ["kind", "start", "end", "sum", "count", "last", "time", "min", "max", "sum_squares", "sketch", "values"]
    ),
    st.one_of(JUNK, st.sampled_from("cgths")),
    max_size=10,
)


#: how workers build their aggregator: plain (console, Graphite, InfluxDB, Librato, web),
#: with raw values (statsd), levels kept apart (OTLP, Prometheus)
WORKERS = st.sampled_from(["plain", "values", "levels"])


def flush_through_every_mapping(summaries: list[dict], worker: str) -> None:
    """What each destination's post would make of the interval: raises if any mapping does."""
    interval = Interval(NOW, NOW + 1.0, summaries)
    if worker == "values":
        StatsdMapping(tags="dogstatsd").lines(summaries)
        return
    if worker == "levels":
        for temporality in ("delta", "cumulative"):
            mapper = OtlpMapper(temporality)
            for _ in range(2):  # cumulative state carried over to a second interval
                for request in mapper.requests(NOW, NOW + 1.0, summaries):
                    request.SerializeToString()
                    for resource in request.resource_metrics:
                        for scope in resource.scope_metrics:
                            for metric in scope.metrics:
                                for point in metric.exponential_histogram.data_points:
                                    assert -10 <= point.scale <= 20
        state = PrometheusState()
        state.update(summaries)
        state.families()
        return
    json.loads("[" + ",".join(json_lines(summaries).splitlines()) + "]")
    table(NOW + 1.0, summaries)
    GraphiteMapping(tags="graphite").lines(interval)
    InfluxMapping().lines(interval)
    for api in ("legacy", "tagged"):
        mapping = LibratoMapping(api=api)
        mapping.payload(NOW + 1.0, mapping.measurements(summaries))
    history = History(5)
    history.add(NOW + 1.0, 1.0, summaries)
    json.dumps(history.summary())


def _check(summary: dict, worker: str) -> None:
    records = [("m", "forged", (summary,), None, ()), ("c", "honest", (1,), None, ())]
    try:
        frame = protocol.encode("info", NOW, records)
    except (TypeError, ValueError, OverflowError):
        return  # msgpack cannot carry it: it never reaches a worker
    batch = protocol.decode_plain(frame, NOW + 0.5)
    assert [r[1] for r in batch.records if r[1] == "honest"] == ["honest"]  # never costs the message
    if batch.refused:
        [(name, problem)] = batch.refused
        assert name == "forged" and problem.reason in REASONS
        return
    keep_values = worker == "values"
    make = lambda: Aggregator(include_interval=True, keep_values=keep_values)  # noqa: E731
    aggregator = LevelAggregators(make) if worker == "levels" else make()
    target = aggregator.level("info") if isinstance(aggregator, LevelAggregators) else aggregator
    target.add_records(batch.records)
    summaries = aggregator.flush(NOW + 1.0, 1.0)
    assert aggregator.series_failed == 0, aggregator.last_failed
    assert any(s["name"] == "honest" and s["value"] == 1 for s in summaries)
    flush_through_every_mapping(summaries, worker)


SETTINGS = settings(max_examples=examples(300), deadline=None, suppress_health_check=[HealthCheck.too_slow])


@SETTINGS
@given(honest_then_forged(), WORKERS)
def test_a_forged_field_is_refused_or_flushes_through_every_mapping(summary, worker):
    _check(summary, worker)


@SETTINGS
@given(honest_then_forged(forge=False))
def test_an_honest_summary_is_always_accepted(summary):
    if summary.get("unit") in ("bad unit", ""):
        summary.pop("unit")
    if summary["kind"] == "s" and summary["sketch"].get("precision", 14) != 14:
        summary["sketch"] = {"exact": True, "count": 0, "members": []}
    batch = protocol.decode_plain(protocol.encode("info", NOW, [("m", "honest", (summary,), None, ())]), NOW + 0.5)
    assert batch.refused == ()


@SETTINGS
@given(ARBITRARY, WORKERS)
def test_an_arbitrary_summary_map_is_refused_or_flushes_through_every_mapping(summary, worker):
    _check(summary, worker)
