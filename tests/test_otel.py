"""zibrato.otel's synchronous instruments, attributes and refusals, through the real client.

The client is ``MemoryZibrato``: the real client with its in-memory transport, so
each measurement goes through the client's validation and encoding and comes back
decoded as a worker reads it. The process, fork and real-framework tests are in
test_otel_processes.py and test_otel_instrumentation.py.
"""

from __future__ import annotations

import logging

import pytest
from expecter import expect

pytest.importorskip("opentelemetry.metrics")

from opentelemetry import metrics

from zibrato.otel import OVERFLOW_TAG, MeterProvider
from zibrato.testing import MemoryZibrato

ATTRS = {"http.request.method": "GET", "http.route": "/users/{id}", "http.response.status_code": 200}
ATTR_TAGS = ("http.request.method:GET", "http.response.status_code:200", "http.route:/users/{id}")


@pytest.fixture
def z():
    return MemoryZibrato()


@pytest.fixture
def meter(z):
    return MeterProvider(z).get_meter("test.scope", "1.0")


def test_the_provider_and_its_objects_are_the_apis_own_kinds(z):
    provider = MeterProvider(z)
    meter = provider.get_meter("scope", "1", "https://schema", {"a": "b"})
    expect(isinstance(provider, metrics.MeterProvider)) == True
    expect(isinstance(meter, metrics.Meter)) == True
    expect(isinstance(meter.create_counter("c"), metrics.Counter)) == True
    expect(isinstance(meter.create_up_down_counter("u"), metrics.UpDownCounter)) == True
    expect(isinstance(meter.create_histogram("h"), metrics.Histogram)) == True
    expect(isinstance(meter.create_gauge("g"), metrics._Gauge)) == True
    expect(isinstance(meter.create_observable_counter("oc", [lambda o: []]), metrics.ObservableCounter)) == True
    expect((meter.name, meter.version, meter.schema_url)) == ("scope", "1", "https://schema")
    expect(provider.get_meter("scope", "1", "https://schema", {"a": "b"})) == meter  # one meter per scope


def test_counter_adds_with_attributes_as_tags_at_the_providers_level(z):
    meter = MeterProvider(z, level="debug").get_meter("scope")
    counter = meter.create_counter("http.requests", unit="{request}")
    counter.add(1, ATTRS)
    counter.add(2, dict(ATTRS))  # an equal dict: the cached series
    counter.add(3)
    counter.add(0.5, {"flag": True, "list": ["a", "b"], "ratio": 0.25})
    seen = z.measurements.assert_counted("http.requests", level="debug")
    expect([(m.value, m.tags) for m in seen]) == [
        (1, ATTR_TAGS),
        (2, ATTR_TAGS),
        (3, ()),
        (0.5, ("flag:true", "list:a,b", "ratio:0.25")),
    ]


def test_a_dict_changed_after_a_call_records_its_new_set_and_sets_may_alternate(z, meter):
    counter = meter.create_counter("c")
    attributes = {"k": "a"}
    counter.add(1, attributes)
    attributes["k"] = "b"  # the instrument compares with its own copy of the last set
    counter.add(1, attributes)
    for value in ("a", "b", "a"):
        counter.add(1, {"k": value})
    counter.add(1)
    counter.add(1, {"list": [1, 2]})  # an unhashable value: validated every time, still recorded
    counter.add(1, {"list": [1, 2]})
    expect([m.tags for m in z.measurements]) == [("k:a",), ("k:b",), ("k:a",), ("k:b",), ("k:a",), ()] + [
        ("list:1,2",)
    ] * 2


def test_a_counter_refuses_a_negative_value_counts_it_and_never_raises(z, meter, caplog):
    counter = meter.create_counter("jobs")
    with caplog.at_level(logging.WARNING, "zibrato.otel"):
        counter.add(-1, ATTRS)
        counter.add(-2)
    counter.add(4, ATTRS)
    expect([m.value for m in z.measurements]) == [4]
    expect(meter.provider.figures()["refused.negative"]) == 2
    expect(caplog.text.count("negative value")) == 1  # logged once a minute, counted every time


@pytest.mark.parametrize("bad", [float("nan"), float("inf"), "3", None, True, 10**400])
def test_values_that_are_not_finite_numbers_are_refused_and_counted(z, meter, bad):
    for kind in ("counter", "up_down_counter", "histogram", "gauge"):
        instrument = getattr(meter, f"create_{kind}")(f"bad.{kind}")
        (getattr(instrument, "add", None) or getattr(instrument, "record", None) or instrument.set)(bad, ATTRS)
    expect(list(z.measurements)) == []
    expect(meter.provider.figures()["refused.value"]) == 4


def test_an_up_down_counter_takes_either_sign(z, meter):
    active = meter.create_up_down_counter("http.server.active_requests", unit="{request}")
    active.add(1, ATTRS)
    active.add(-1, ATTRS)
    expect([m.value for m in z.measurements.assert_counted("http.server.active_requests")]) == [1, -1]


@pytest.mark.parametrize(("unit", "factor"), [("s", 1.0), ("ms", 1e-3), ("us", 1e-6), ("ns", 1e-9)])
def test_a_histogram_of_time_is_a_timer_in_seconds(z, meter, unit, factor):
    duration = meter.create_histogram("http.server.request.duration", unit=unit)
    duration.record(250, ATTRS)
    duration.record(4)
    timed = z.measurements.assert_timed("http.server.request.duration", count=2)
    expect([m.value for m in timed]) == [pytest.approx(250 * factor), pytest.approx(4 * factor)]
    expect(timed[0].tags) == ATTR_TAGS


def test_a_histogram_of_time_refuses_a_negative_duration(z, meter):
    meter.create_histogram("took", unit="ms").record(-3)
    expect(list(z.measurements)) == []
    expect(meter.provider.figures()["refused.negative"]) == 1


def test_other_histograms_keep_their_unit_and_any_sign(z, meter):
    size = meter.create_histogram("http.server.response.body.size", unit="By")
    size.record(5120, ATTRS)
    meter.create_histogram("delta", unit="{item}").record(-2)
    meter.create_histogram("plain").record(7)
    expect([(m.type, m.value, m.unit) for m in z.measurements]) == [
        ("histogram", 5120, "By"),
        ("histogram", -2, "item"),
        ("histogram", 7, None),
    ]


def test_bucket_advisories_are_kept_as_metadata(z, meter):
    boundaries = [0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10]
    histogram = meter.create_histogram("d", unit="s", explicit_bucket_boundaries_advisory=boundaries)
    expect(histogram.explicit_bucket_boundaries_advisory) == tuple(boundaries)
    expect(meter.provider.bucket_advisories()) == {"d": tuple(boundaries)}


def test_a_gauge_sets_the_last_value(z, meter):
    gauge = meter.create_gauge("queue.depth", unit="{item}")
    gauge.set(3, {"queue": "a"})
    gauge.set(-1.5, {"queue": "a"})
    expect([(m.type, m.value, m.tags) for m in z.measurements]) == [
        ("gauge", 3, ("queue:a",)),
        ("gauge", -1.5, ("queue:a",)),
    ]


def test_past_the_cardinality_limit_sets_go_to_the_overflow_series_counted(z):
    meter = MeterProvider(z, cardinality_limit=3).get_meter("scope")
    counter = meter.create_counter("by.user")
    for user in range(6):
        counter.add(1, {"user": user})
    counter.add(1, {"user": 0})  # admitted before the limit: still its own series
    counter.add(1, {"user": 5})  # overflowed before: overflows again, counted again
    tags = [m.tags for m in z.measurements]
    # the attribute-less set counts as one of the 3 (as in the SDK's limit)
    expect(tags) == [("user:0",), ("user:1",)] + [(OVERFLOW_TAG,)] * 4 + [("user:0",), (OVERFLOW_TAG,)]
    expect(meter.provider.figures()["overflowed"]) == 5


def test_the_overflow_series_keeps_the_scope_tag(z):
    meter = MeterProvider(z, cardinality_limit=1, scope_tag="otel.scope.name").get_meter("lib")
    meter.create_counter("c").add(1, {"k": "v"})
    expect(z.measurements[0].tags) == ("otel.metric.overflow:true", "otel.scope.name:lib")


def test_the_scope_is_dropped_by_default_and_tagged_when_asked(z):
    MeterProvider(z).get_meter("opentelemetry.instrumentation.flask").create_counter("a").add(1)
    tagged = MeterProvider(z, scope_tag="otel.scope.name").get_meter("my.lib", attributes={"team": "x"})
    tagged.create_counter("b").add(1, {"k": "v"})
    expect([m.tags for m in z.measurements]) == [(), ("k:v", "otel.scope.name:my.lib", "team:x")]


def test_attribute_values_with_control_characters_or_too_long_are_cleaned_not_refused(z, meter):
    meter.create_counter("c").add(1, {"agent": "evil\nline", "long": "x" * 400})
    (measurement,) = z.measurements
    expect(measurement.tags[0]) == "agent:evil_line"
    expect(len(measurement.tags[1])) == 255


def test_attribute_sets_the_client_refuses_are_counted_and_lose_nothing_else(z, meter):
    counter = meter.create_counter("c")
    counter.add(1, {f"k{i}": i for i in range(65)})  # over the client's 64 tags
    counter.add(1, "not a mapping")
    counter.add(1, {"ok": "yes"})
    expect([m.tags for m in z.measurements]) == [("ok:yes",)]
    expect(meter.provider.figures()["refused.attributes"]) == 2


def test_asking_twice_for_an_instrument_returns_the_same_one(meter):
    expect(meter.create_counter("C", "1", "d")) == meter.create_counter("c", "1", "d")
    expect(meter.create_histogram("h", "s") is meter.create_histogram("h", "ms")) == False


def test_a_name_the_client_refuses_gives_a_noop_instrument_counted(z, meter):
    counter = meter.create_counter("bad\nname")
    counter.add(1)
    expect(isinstance(counter, metrics.NoOpCounter)) == True
    expect(list(z.measurements)) == []
    expect(meter.provider.figures()["refused.instruments"]) == 1


def test_the_provider_builds_its_own_client_from_keyword_arguments():
    provider = MeterProvider(host="127.0.0.1", port=5999, source="web-1", level="warn")
    try:
        expect((provider.client.port, provider.client.source, provider.level)) == (5999, "web-1", "warn")
    finally:
        provider.shutdown()
    provider.client.count("info", "after.shutdown")  # the client it built is closed: dropped, counted
    expect(provider.client.dropped) == 1


@pytest.mark.parametrize(
    "options",
    [{"level": "bad level"}, {"cardinality_limit": 0}, {"collect_interval": 0}, {"scope_tag": "a:b"}],
)
def test_bad_provider_options_raise_at_once(z, options):
    with pytest.raises(ValueError):
        MeterProvider(z, **options)


def test_a_client_and_client_arguments_together_raise(z):
    with pytest.raises(TypeError):
        MeterProvider(z, port=1234)


def test_instruments_made_through_the_apis_proxy_before_set_record_after(z):
    # The API's global provider can be set once per process: a child interpreter does it.
    import subprocess
    import sys
    import textwrap

    script = textwrap.dedent("""
        from opentelemetry import metrics
        from zibrato.testing import MemoryZibrato
        from zibrato.otel import MeterProvider

        early = metrics.get_meter("early").create_counter("made.before")  # a proxy instrument
        z = MemoryZibrato()
        metrics.set_meter_provider(MeterProvider(z))
        early.add(2, {"when": "after"})
        metrics.get_meter("late").create_histogram("made.after", unit="ms").record(5)
        print([(m.type, m.name, m.value, m.tags) for m in z.measurements])
    """)
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    expect(done.stdout.strip()) == str(
        [("counter", "made.before", 2, ("when:after",)), ("timer", "made.after", 0.005, ())]
    )


def test_the_environment_alone_can_choose_zibrato_as_the_apis_provider(tmp_path):
    # OTEL_PYTHON_METER_PROVIDER names an entry point of the opentelemetry_meter_provider group:
    # an app changes no line at all; the provider builds its client from $ZIBRATO_HOST/$ZIBRATO_PORT.
    import os
    import subprocess
    import sys
    import textwrap

    script = textwrap.dedent("""
        from opentelemetry import metrics
        provider = metrics.get_meter_provider()
        print(type(provider).__module__, type(provider).__name__, provider.client.port)
    """)
    env = dict(os.environ, OTEL_PYTHON_METER_PROVIDER="zibrato", ZIBRATO_PORT="5999")
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=60, env=env)
    assert done.returncode == 0, done.stderr
    expect(done.stdout.split()) == ["zibrato.otel.provider", "MeterProvider", "5999"]
