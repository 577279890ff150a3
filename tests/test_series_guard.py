"""Issue 22, item 1 (second line of defence): one series that raises is dropped alone.

The decoder refuses forged summaries (tests/test_hostile_summaries.py); these
tests hand the stages a series that raises anyway, as an unforeseen bug
would, and check that only that series is lost: never the interval, the
cumulative state of the others, or the process.
"""

from __future__ import annotations

import logging

from expecter import expect

from support import summaries as make
from zibrato.aggregation import Aggregator
from zibrato.backends.otlp_mapping import OtlpMapper
from zibrato.backends.prometheus_mapping import PrometheusState


class Unsummarisable:
    """A series state whose summary raises (as a corrupted sketch would)."""

    def __getattr__(self, name):
        raise OverflowError("math range error")


def test_the_aggregator_drops_a_series_that_cannot_be_summarised_and_keeps_the_interval():
    aggregator = Aggregator()
    aggregator.add("c", "honest", None, (), (1, 2, 3))
    aggregator.add("t", "fine", None, (), (0.1, 0.2))
    aggregator._series[("t", "bro\nken", None, ())] = Unsummarisable()
    summaries = aggregator.flush(10.0, 10.0)
    expect([s["name"] for s in summaries]) == ["honest", "fine"]
    expect(summaries[0]["value"]) == 6.0
    expect(aggregator.series_failed) == 1
    expect(aggregator.last_failed) == [("bro\nken", "OverflowError: math range error")]
    aggregator.add("c", "honest", None, (), (4,))  # the next interval is whole
    expect([s["value"] for s in aggregator.flush(20.0, 10.0)]) == [4.0]


def _broken(name: str) -> dict:
    summary = make.timer(name, [0.1, 0.2])
    summary["sketch"] = {"scale": "not a scale", "positive": None}
    return summary


def test_otlp_cumulative_drops_a_series_that_raises_and_keeps_every_running_total(caplog):
    mapper = OtlpMapper("cumulative")
    first = mapper.requests(0.0, 10.0, [make.counter("honest", 5), make.timer("db", [0.1, 0.2])])
    expect(len(first)) == 1
    with caplog.at_level(logging.ERROR, "zibrato.otlp"):
        second = mapper.requests(
            10.0, 20.0, [make.counter("honest", 3), _broken("db"), _broken("new\nseries"), _broken("new\nseries")]
        )
    metrics = {m.name: m for r in second for rm in r.resource_metrics for sm in rm.scope_metrics for m in sm.metrics}
    expect(sorted(metrics)) == ["honest"]
    expect(metrics["honest"].sum.data_points[0].as_double) == 8.0
    expect(mapper.guard.failed) == 3
    third = mapper.requests(20.0, 30.0, [make.timer("db", [0.4])])
    [db] = [m for r in third for rm in r.resource_metrics for sm in rm.scope_metrics for m in sm.metrics]
    expect(db.exponential_histogram.data_points[0].count) == 3  # the running total as it was, plus 1
    logged = [r.getMessage() for r in caplog.records]
    expect(len([m for m in logged if "new\\nseries" in m])) == 1  # once per series, escaped
    expect(any("\n" in m for m in logged)) == False


def test_prometheus_drops_a_series_that_raises_and_keeps_the_others():
    state = PrometheusState()
    state.update([make.counter("honest", 5), make.timer("db", [0.1, 0.2])])
    state.update([make.counter("honest", 3), _broken("db")])
    expect(state.figures["series_failed_mapping"]) == 1
    families = {f.name: f for f in state.families()}
    [total] = [s.value for s in families["honest"].samples if s.name == "honest_total"]
    expect(total) == 8.0
    [count] = [s.value for s in families["db_seconds"].samples if s.name == "db_seconds_count"]  # a timer's family
    expect(count) == 2  # the first interval's, untouched by the broken one


def test_the_worker_counts_a_series_that_cannot_be_summarised_and_logs_its_escaped_name_once(caplog):
    import io

    from zibrato.backends.console import Console
    from zibrato.worker import Worker

    worker = Worker(Console(stream=io.StringIO()), self_level=None)
    with caplog.at_level(logging.ERROR, "zibrato.console"):
        for end in (10.0, 20.0):
            worker.aggregator.add("c", "honest", None, (), (1,))
            worker.aggregator._series[("t", "bro\nken", None, ())] = Unsummarisable()
            interval = worker.flush(end - 10.0, end)
            expect([s["name"] for s in interval.summaries]) == ["honest"]
    expect(worker.figures()["series_failed"]) == 2
    expect(worker.self_figures(1)["series_failed"]) == 2
    [logged] = [r.getMessage() for r in caplog.records if "could not be summarised" in r.getMessage()]
    expect(logged).contains("'bro\\nken'")


def test_every_line_and_json_mapping_drops_a_series_that_raises_and_keeps_the_others():
    from zibrato.backends.graphite import GraphiteMapping
    from zibrato.backends.influxdb import InfluxMapping
    from zibrato.backends.librato import LibratoMapping
    from zibrato.backends.statsd import StatsdMapping
    from zibrato.destination import Interval

    broken = {**make.counter("broken", 1), "value": object()}  # no mapping can write this number
    summaries = [make.counter("honest", 5), broken, make.gauge("depth", 3)]
    interval = Interval(0.0, 60.0, summaries)
    graphite, influx, statsd, librato = GraphiteMapping(), InfluxMapping(), StatsdMapping(), LibratoMapping()
    outputs = {
        "graphite": "".join(graphite.lines(interval)),
        "influx": "".join(influx.lines(interval)),
        "statsd": b"".join(statsd.lines(summaries)).decode(),
        "librato": str(librato.measurements(summaries)),
    }
    for what, text in outputs.items():
        expect((what, "honest" in text and "depth" in text and "broken" not in text)) == (what, True)
    for mapping in (graphite, influx, statsd, librato):
        expect(mapping.guard.failed) == 1
