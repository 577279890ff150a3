"""The Prometheus mapping: summaries -> metric families -> prometheus_client's exposition, no sockets."""

from __future__ import annotations

import pytest
from expecter import expect
from prometheus_client import exposition, openmetrics
from prometheus_client.openmetrics.parser import text_string_to_metric_families as parse_openmetrics
from prometheus_client.parser import text_string_to_metric_families

from support.summaries import counter, gauge, set_, timer
from zibrato.backends.prometheus_mapping import (
    DEFAULT_BUCKETS,
    PrometheusState,
    bucket_increments,
    label_name,
    metric_name,
    parse_buckets,
)


class Clock:
    def __init__(self, now=1_800_000_000.0):
        self.now = now

    def __call__(self):
        return self.now


class Collector:
    def __init__(self, state):
        self.state = state

    def collect(self):
        return self.state.families()


def scrape(state) -> dict:
    """{(sample name, frozenset(labels)): value} as Prometheus would parse the text format.

    A sample twice (same name and labels) fails the test: Prometheus rejects such a scrape.
    """
    text = exposition.generate_latest(Collector(state)).decode()
    samples = [
        ((s.name, frozenset(s.labels.items())), s.value)
        for family in text_string_to_metric_families(text)
        for s in family.samples
    ]
    got = dict(samples)
    assert len(got) == len(samples), f"duplicate samples in:\n{text}"
    return got


def labels(**kw):
    return frozenset(kw.items())


def test_counters_are_running_totals_since_the_start():
    state = PrometheusState()
    state.update([counter("signup", 5, source="web")])
    state.update([counter("signup", 10, source="web"), counter("signup", 0, count=0, source="web")][:1])
    state.update([counter("signup", 0, count=0, source="web")])

    expect(scrape(state)[("signup_total", labels(source="web"))]) == 15


def test_gauges_keep_their_last_value_and_sets_are_gauges():
    state = PrometheusState()
    state.update([gauge("queue.depth", 4), set_("users", 9)])
    state.update([gauge("queue.depth", -2.5), set_("users", 3)])

    got = scrape(state)
    expect((got[("queue_depth", labels())], got[("users", labels())])) == (-2.5, 3)


def test_timer_buckets_are_exact_on_the_default_power_of_two_bounds():
    values = [0.001, 0.003, 0.125, 0.1, 5.0, 0.0001]  # 0.125 = 2**-3 is a bound itself
    state = PrometheusState()
    state.update([timer("db.query", values[:3])])
    state.update([timer("db.query", values[3:])])

    got = scrape(state)
    for bound in DEFAULT_BUCKETS:
        le = labels(le=repr(bound) if bound != int(bound) else f"{bound:.1f}")
        expect((bound, got[("db_query_seconds_bucket", le)])) == (bound, sum(v <= bound for v in values))
    expect(got[("db_query_seconds_bucket", labels(le="+Inf"))]) == 6
    expect(got[("db_query_seconds_count", labels())]) == 6
    expect(got[("db_query_seconds_sum", labels())]) == pytest.approx(sum(values))


def test_negative_and_zero_histogram_values_count_below_every_positive_bound():
    increments = bucket_increments(timer("delta", [-3.0, 0.0, 0.5], type_="histogram"), (-1.0, 0.0, 1.0))
    expect(increments) == [1, 1, 1, 0]


def test_without_a_sketch_the_raw_values_are_counted_weighted_when_sampled():
    summary = {"type": "timer", "count": 4, "sum": 1.0, "values": [0.01, 2.0]}  # 2 kept of 4
    expect(bucket_increments(summary, (0.1, 1.0))) == [2.0, 0.0, 2.0]


def test_custom_bounds_parse_sorted():
    expect(parse_buckets("0.5, 0.1,1")) == (0.1, 0.5, 1.0)
    with pytest.raises(ValueError):
        parse_buckets("0.1,fast")


def test_names_and_labels_are_made_valid():
    expect(metric_name("db.query")) == "db_query"
    expect(metric_name("5xx-rate")) == "_5xx_rate"
    expect(metric_name("a:b")) == "a_b"
    expect([label_name(k) for k in ("env", "k8s.pod", "__name", "le", "9lives", "quantile")]) == [
        "env",
        "k8s_pod",
        "tag_name",
        "tag_le",
        "_9lives",
        "tag_quantile",
    ]

    state = PrometheusState()
    state.update([counter("http.hits", 1, source="api", level="info", tags=["k8s.pod:a", "k8s_pod:b", "le:x"])])
    [[key, value]] = scrape(state).items()
    expect(key) == ("http_hits_total", labels(source="api", level="info", k8s_pod="a", k8s_pod_2="b", tag_le="x"))
    expect(state.figures["label_collisions"]) == 1


def test_name_collisions_get_a_suffix_and_are_counted():
    state = PrometheusState()
    state.update(
        [
            counter("db.query", 1),
            counter("db_query", 2),
            gauge("db.query_total", 3),
            timer("db.query", [0.5], type_="histogram"),
        ]
    )

    got = scrape(state)
    expect(got[("db_query_total", labels())]) == 1
    expect(got[("db_query_2_total", labels())]) == 2
    expect(got[("db_query_total_2", labels())]) == 3
    expect(got[("db_query_3_count", labels())]) == 1  # a histogram without a unit takes the name as it is
    expect(state.figures["name_collisions"]) == 3


def test_series_of_one_name_share_a_family_by_their_labels():
    state = PrometheusState()
    state.update([counter("hits", 1, source="a"), counter("hits", 2, source="b"), counter("hits", 3)])

    got = scrape(state)
    expect(sorted(v for (name, _), v in got.items() if name == "hits_total")) == [1, 2, 3]
    expect(state.figures["name_collisions"]) == 0


def test_idle_series_expire_and_free_their_name():
    clock = Clock()
    state = PrometheusState(expire=300, clock=clock)
    state.update([counter("old", 1), gauge("kept", 1)])
    clock.now += 200
    state.update([counter("old", 0, count=0), gauge("kept", 2)])
    clock.now += 101

    got = scrape(state)
    expect(sorted(name for name, _ in got)) == ["kept"]
    expect(state.figures["series_expired"]) == 1
    state.update([counter("old", 4)])
    expect(scrape(state)[("old_total", labels())]) == 4  # a new series from zero


def test_openmetrics_rendering_parses():
    state = PrometheusState()
    state.update([counter("signup", 3), timer("db.query", [0.01, 0.2]), gauge("g", 1)])

    text = openmetrics.exposition.generate_latest(Collector(state)).decode()

    families = {f.name: f for f in parse_openmetrics(text)}
    expect(families["signup"].type) == "counter"
    expect(families["db_query_seconds"].type) == "histogram"
    expect(text.rstrip().endswith("# EOF")) == True


def test_a_series_keeps_its_last_summary_and_once_asked_for_its_history():
    state = PrometheusState(history=2)
    for v in (1, 2):
        state.update([timer("t", [v])])

    [series] = state.lookup("t")  # asked for: from now on it keeps two
    expect([h["sum"] for h in series.history]) == [2]
    for v in (3, 4):
        state.update([timer("t", [v])])
    expect([h["sum"] for h in series.history]) == [3, 4]
    expect("sketch" in series.history[-1]) == False


def test_expiry_per_type_with_zero_meaning_the_default():
    clock = Clock()
    state = PrometheusState(expire={"gauge": 10, "counter": 0}, clock=clock)
    state.update([counter("c", 1), gauge("g", 1)])
    clock.now += 11

    expect(sorted(name for name, _ in scrape(state))) == ["c_total"]
    expect(state.expire["counter"]) == 300
