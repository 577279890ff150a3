"""zibrato.otel's observable instruments: callbacks off the application's threads, cumulative
totals turned into deltas, and callbacks that raise or hang counted and skipped.

Most tests drive one collection at a time with ``provider.collect()`` (a collect
interval of an hour keeps the collector thread out of the way); one lets the
collector thread run on its own and waits for what it records.
"""

from __future__ import annotations

import gc
import os
import threading

import pytest
from expecter import expect

pytest.importorskip("opentelemetry.metrics")

from opentelemetry.metrics import CallbackOptions, Observation

from conftest import wait_until
from zibrato.otel import MeterProvider
from zibrato.testing import MemoryZibrato

HOUR = 3600.0


@pytest.fixture
def z():
    return MemoryZibrato()


@pytest.fixture
def provider(z):
    made = MeterProvider(z, collect_interval=HOUR, callback_timeout=2.0)
    yield made
    made._collector.stop(final_collection=False)


def reporting(values):
    """A callback that reports the next of ``values`` (each a list of (value, attributes)) per call."""
    rounds = iter(values)

    def callback(options: CallbackOptions):
        return [Observation(value, attributes) for value, attributes in next(rounds)]

    return callback


def test_an_observable_counter_sends_deltas_after_a_baseline_per_attribute_set(z, provider):
    a, b = {"cpu": "0"}, {"cpu": "1"}
    callback = reporting([[(100, a), (50, b)], [(130, a), (50, b)], [(131, a), (80, b)]])
    provider.get_meter("m").create_observable_counter("process.cpu.time", [callback], unit="s")
    for _ in range(3):
        provider.collect()
    counted = z.measurements.assert_counted("process.cpu.time")
    expect([(m.value, m.tags) for m in counted]) == [
        (30, ("cpu:0",)),
        (0, ("cpu:1",)),
        (1, ("cpu:0",)),
        (30, ("cpu:1",)),
    ]


def test_a_decrease_is_a_reset_counted_from_zero(z, provider):
    callback = reporting([[(10, None)], [(15, None)], [(4, None)], [(6, None)]])
    provider.get_meter("m").create_observable_counter("restarts.seen", [callback])
    for _ in range(4):
        provider.collect()
    expect([m.value for m in z.measurements]) == [5, 4, 2]
    expect(provider.figures()["observations.resets"]) == 1


def test_an_observable_up_down_counter_sends_deltas_of_either_sign(z, provider):
    callback = reporting([[(10, None)], [(7, None)], [(12, None)]])
    provider.get_meter("m").create_observable_up_down_counter("queue.items", [callback])
    for _ in range(3):
        provider.collect()
    expect([m.value for m in z.measurements]) == [-3, 5]
    expect(provider.figures()["observations.resets"]) == 0


def test_an_observable_gauge_sends_each_observation(z, provider):
    callback = reporting([[(512, {"type": "rss"}), (2048, {"type": "vms"})], [(600, {"type": "rss"})]])
    provider.get_meter("m").create_observable_gauge("process.memory.usage", [callback], unit="By")
    provider.collect()
    provider.collect()
    expect([(m.type, m.value, m.tags) for m in z.measurements]) == [
        ("gauge", 512, ("type:rss",)),
        ("gauge", 2048, ("type:vms",)),
        ("gauge", 600, ("type:rss",)),
    ]


def test_a_generator_callback_is_sent_the_options(z, provider):
    seen = []

    def generator():
        options = yield
        while True:
            seen.append(options.timeout_millis)
            options = yield [Observation(len(seen))]

    provider.get_meter("m").create_observable_gauge("generated", [generator()])
    provider.collect()
    provider.collect()
    expect(seen) == [2000.0, 2000.0]
    expect([m.value for m in z.measurements]) == [1, 2]


def test_a_raising_callback_is_counted_logged_and_does_not_stop_the_others(z, provider, caplog):
    def broken(options):
        raise RuntimeError("database away")

    meter = provider.get_meter("m")
    meter.create_observable_gauge("broken", [broken])
    meter.create_observable_gauge("fine", [lambda options: [Observation(1)]])
    provider.collect()
    provider.collect()
    expect([m.name for m in z.measurements]) == ["fine", "fine"]
    expect(provider.figures()["callbacks.failed"]) == 2
    expect(caplog.text.count("database away")) == 1  # logged once a minute


def test_bad_observations_are_refused_and_counted(z, provider):
    callback = reporting([[(float("nan"), None), ("7", None), (3, {"ok": "yes"})]])
    provider.get_meter("m").create_observable_gauge("mixed", [callback])
    provider.collect()
    expect([m.value for m in z.measurements]) == [3]
    expect(provider.figures()["refused.value"]) == 2


def test_a_hanging_callback_is_skipped_without_blocking_the_others(z):
    provider = MeterProvider(z, collect_interval=HOUR, callback_timeout=1.0)  # ample for "fine" under load
    release, calls = threading.Event(), []

    def hangs(options):
        calls.append(1)
        release.wait(30)
        return [Observation(99)]

    meter = provider.get_meter("m")
    meter.create_observable_gauge("hangs", [hangs])
    meter.create_observable_gauge("fine", [lambda options: [Observation(1)]])
    try:
        provider.collect()  # waits callback_timeout for "hangs", then runs "fine" on a fresh runner
        provider.collect()  # "hangs" is still inside its first call: not called again
        expect([m.name for m in z.measurements]) == ["fine", "fine"]
        expect(len(calls)) == 1
        figures = provider.figures()
        expect((figures["callbacks.timed_out"], figures["callbacks.skipped"])) == (1, 1)
    finally:
        release.set()
    wait_until(lambda: not provider._collector.instruments[0].callbacks[0].running, timeout=10)
    provider.collect()  # returned at last: called again; its late answer was not recorded
    expect([m.name for m in z.measurements]) == ["fine", "fine", "hangs", "fine"]
    expect(len(calls)) == 2


def test_the_collector_thread_calls_the_callbacks_on_its_own(z):
    provider = MeterProvider(z, collect_interval=0.05)
    threads = set()

    def callback(options):
        threads.add(threading.current_thread().name)
        return [Observation(1)]

    provider.get_meter("m").create_observable_gauge("ticks", [callback])
    try:
        wait_until(lambda: len(z.measurements) >= 3, timeout=10, message="three collections")
    finally:
        provider.shutdown()
    expect(threads) == {"zibrato-otel-callbacks"}  # never the application's thread


def test_the_default_collect_interval_is_the_clients_cadence_rounded_to_a_second(z):
    expect(MeterProvider(z).collect_interval) == 1.0
    expect(MeterProvider(MemoryZibrato()).callback_timeout) == 1.0


def test_shutdown_collects_once_more_so_the_last_deltas_are_sent(z):
    totals = iter([10, 25, 40])
    provider = MeterProvider(z, collect_interval=HOUR)
    provider.get_meter("m").create_observable_counter("done", [lambda o: [Observation(next(totals))]])
    provider.collect()  # the baseline
    provider.shutdown()
    expect([m.value for m in z.measurements]) == [15]


def test_observable_sets_past_the_limit_keep_their_own_deltas_in_the_overflow_series(z):
    provider = MeterProvider(z, collect_interval=HOUR, cardinality_limit=2)
    rounds = [[(10 * user + n, {"user": user}) for user in range(4)] for n in (0, 1, 3)]
    provider.get_meter("m").create_observable_counter("by.user", [reporting(rounds)])
    for _ in range(3):
        provider.collect()
    by_tags: dict = {}
    for m in z.measurements:
        by_tags[m.tags] = by_tags.get(m.tags, 0) + m.value
    # the empty set is one of the 2: user 0 has its own series, users 1-3 share the overflow one,
    # each set's delta computed from its own previous total (never from another set's)
    expect(by_tags) == {("user:0",): 3, ("otel.metric.overflow:true",): 9}
    provider._collector.stop(final_collection=False)


@pytest.mark.skipif(not os.path.exists("/proc/self/statm"), reason="memory, threads and descriptors come from /proc")
def test_process_metrics_are_observed_with_the_conventions_names(z):
    provider = MeterProvider(z, collect_interval=HOUR, process_metrics=True)
    sum(range(200_000))  # some CPU between the baseline and the next collection
    generations = len(gc.get_stats())
    provider.collect()  # baselines for the cumulative ones, values for the gauges
    gc.collect()
    provider.collect()
    provider._collector.stop(final_collection=False)
    kinds = {(m.type, m.name) for m in z.measurements}
    expect(kinds) == {
        ("counter", "process.cpu.time"),
        ("counter", "cpython.gc.collections"),
        ("counter", "cpython.gc.collected_objects"),
        ("gauge", "process.memory.usage"),
        ("gauge", "process.memory.virtual"),
        ("gauge", "process.thread.count"),
        ("gauge", "process.open_file_descriptor.count"),
    }
    cpu_modes = {m.tags for m in z.measurements if m.name == "process.cpu.time"}
    expect(cpu_modes) == {("cpu.mode:system",), ("cpu.mode:user",)}
    collections = [m for m in z.measurements if m.name == "cpython.gc.collections"]
    expect(len(collections)) == generations
    expect(sum(m.value for m in collections) >= 1) == True  # the gc.collect() between the two
    (rss,) = [m.value for m in z.measurements if m.name == "process.memory.usage"][-1:]
    expect(rss > 1_000_000) == True
