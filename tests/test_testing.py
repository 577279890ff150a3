"""zibrato.testing: the in-memory client, capture() and the pytest fixture."""

from __future__ import annotations

import asyncio
import threading

import pytest
from expecter import expect

import zibrato.testing
from conftest import values_of
from zibrato.testing import Measurement, MemoryZibrato, capture, client_parts


def sender_threads(client) -> list:
    return [t for t in threading.enumerate() if getattr(t, "buffer", None) is client_parts(client).buffer]


# --- MemoryZibrato ------------------------------------------------------------------


def test_memory_client_remembers_every_measurement_in_order():
    z = MemoryZibrato(source="test", tags={"env": "ci"})

    @z.count_me("info", "signup", value=2, tags=["plan:free"])
    def signup():
        return "welcome"

    expect(signup()) == "welcome"
    z.gauge("debug", "queue", 0)
    z.timing("info", "db", 0.5, source="db-1")

    expect(z.measurements) == [
        Measurement("info", "counter", "signup", 2, "test", ("env:ci", "plan:free")),
        Measurement("debug", "gauge", "queue", 0, "test", ("env:ci",)),
        Measurement("info", "timer", "db", 0.5, "db-1", ("env:ci",)),
    ]


def test_memory_client_opens_no_socket_and_starts_no_thread():
    z = MemoryZibrato()
    z.count("info", "x")
    with z.Time_me("info", "y"):
        pass

    expect(z.flush()) == True
    z.close()
    expect(sender_threads(z)) == []
    expect((z.sent, z.dropped)) == (2, 0)  # handed to the in-memory transport
    z.count("info", "after.close")  # close() does not stop an in-memory client
    expect(len(z.measurements)) == 3


def test_memory_client_rejects_misuse_like_the_real_one():
    z = MemoryZibrato()
    with pytest.raises(ValueError):
        z.time_me("in fo", "x")
    with pytest.raises(TypeError):
        z.count_me("info", "x", value="1")
    expect(z.measurements) == []


def test_memory_client_records_outcomes_and_async_runs():
    z = MemoryZibrato()

    @z.time_me("info", "fetch", outcome=True)
    async def fetch(fail):
        await asyncio.sleep(0)
        if fail:
            raise ValueError("no")

    asyncio.run(fetch(False))
    with pytest.raises(ValueError):
        asyncio.run(fetch(True))

    z.measurements.assert_timed("fetch", count=1, tags=("outcome:ok",))
    z.measurements.assert_timed("fetch", count=1, tags=("outcome:error", "error:ValueError"))


def test_assertions_pass_and_return_what_they_matched():
    z = MemoryZibrato()
    z.count("info", "hits", 2)
    z.count("info", "hits", 3, tags=["page:home"])
    z.gauge("info", "temperature", 20)
    z.gauge("info", "temperature", 0)
    z.timing("debug", "render", 0.1)

    seen = z.measurements
    expect([m.value for m in seen.assert_counted("hits", total=5, count=2)]) == [2, 3]
    expect(len(seen.assert_counted("hits", total=3, tags=("page:home",)))) == 1
    expect(len(seen.assert_gauged("temperature", value=0))) == 2  # the last value counts
    expect(len(seen.assert_timed("render", count=1, level="debug"))) == 1
    expect(len(seen.assert_timed("render"))) == 1


FAILING = {
    "timer never recorded": (
        lambda s: s.assert_timed("missing"),
        ["no timer 'missing' recorded", "seen:", "('counter', 'hits')"],
    ),
    "wrong type": (lambda s: s.assert_timed("hits"), ["no timer 'hits' recorded"]),
    "timer count": (lambda s: s.assert_timed("render", count=2), ["timer 'render' recorded 1 times, expected 2"]),
    "timer level": (lambda s: s.assert_timed("render", level="info"), ["no timer 'render' recorded level='info'"]),
    "counter total": (lambda s: s.assert_counted("hits", total=6), ["counter 'hits' totals 5, expected 6"]),
    "counter count": (lambda s: s.assert_counted("hits", count=1), ["counter 'hits' recorded 2 times, expected 1"]),
    "counter total zero": (lambda s: s.assert_counted("hits", total=0), ["counter 'hits' totals 5, expected 0"]),
    "counter tags": (
        lambda s: s.assert_counted("hits", tags=("page:away",)),
        ["no counter 'hits' recorded", "page:away"],
    ),
    "gauge value": (
        lambda s: s.assert_gauged("temperature", value=20),
        ["gauge 'temperature' last set to 0, expected 20"],
    ),
    "gauge never set": (lambda s: s.assert_gauged("pressure"), ["no gauge 'pressure' recorded"]),
}


@pytest.mark.parametrize("check, fragments", FAILING.values(), ids=FAILING.keys())
def test_assertions_fail_with_a_helpful_message(check, fragments):
    z = MemoryZibrato()
    z.count("info", "hits", 2)
    z.count("info", "hits", 3, tags=["page:home"])
    z.gauge("info", "temperature", 20)
    z.gauge("info", "temperature", 0)
    z.timing("debug", "render", 0.1)

    with pytest.raises(AssertionError) as failed:
        check(z.measurements)

    for fragment in fragments:
        expect(str(failed.value)).contains(fragment)


# --- capture() ------------------------------------------------------------------------


def test_capture_diverts_an_existing_client_and_restores_it(broker_pull, make_client):
    z = make_client()

    @z.count_me("info", "app.signup")
    def signup(n):
        return n

    signup(1)  # before: to the broker
    with capture(z) as seen:
        signup(2)
        z.gauge("info", "app.users", 10)
    signup(3)  # after: to the broker again

    seen.assert_counted("app.signup", total=1, count=1)
    seen.assert_gauged("app.users", value=10)
    expect(len(seen)) == 2
    records = broker_pull.settle(z)
    expect(values_of(records, "app.signup")) == [1, 1]
    expect(values_of(records, "app.users")) == []


def test_capture_restores_the_client_when_the_block_raises(broker_pull, make_client):
    z = make_client()
    with pytest.raises(RuntimeError):
        with capture(z) as seen:
            z.count("info", "inside")
            raise RuntimeError("test failure")
    z.count("info", "outside")

    expect([m.name for m in seen]) == ["inside"]
    expect(values_of(broker_pull.settle(z), "outside")) == [1]
    expect(values_of(broker_pull.measurements(), "inside")) == []


def test_a_client_closed_inside_capture_stays_closed(make_client):
    z = make_client()
    z.count("info", "before")  # the sender is running: the client records by queueing
    expect(z.flush()) == True
    with capture(z) as seen:
        z.count("info", "inside")
        z.close()

    z.count("info", "after.close")  # dropped and counted, not queued for a sender that is gone

    expect([m.name for m in seen]) == ["inside"]
    expect(z.dropped) == 1
    expect(z.queued) == 0


def test_capture_works_on_a_memory_client_too():
    z = MemoryZibrato()
    with capture(z) as seen:
        z.count("info", "x")
    expect(len(seen)) == 1
    expect(z.measurements) == []  # diverted away from the memory client's own list too


# --- the pytest plugin -------------------------------------------------------------------


def test_fixture_gives_a_fresh_memory_client(zibrato_memory):
    expect(isinstance(zibrato_memory, MemoryZibrato)) == True
    expect(zibrato_memory.measurements) == []
    zibrato_memory.count("info", "fixture.used")
    zibrato_memory.measurements.assert_counted("fixture.used", total=1)


def test_fixture_is_fresh_for_every_test(zibrato_memory):
    expect(zibrato_memory.measurements) == []


def test_fixture_comes_from_the_pytest11_entry_point(request):
    plugin = request.config.pluginmanager.get_plugin("zibrato")
    expect(plugin is zibrato.testing) == True


# --- protocol 1.1 kinds in memory ----------------------------------------------------------


def test_memory_client_records_histograms_sets_and_weights_as_a_worker_reads_them():
    z = MemoryZibrato(random=lambda: 0.0)  # every sampled call kept
    z.histogram("info", "response.size", 5120, unit="bytes")
    z.set("info", "users", "u-1")
    z.set("info", "users", 7)
    z.count("info", "misses", 2, rate=0.25)
    z.count("info", "ratio", 0.5)

    expect(z.measurements) == [
        Measurement("info", "histogram", "response.size", 5120, None, (), 1, "bytes"),
        Measurement("info", "set", "users", "u-1", None, ()),
        Measurement("info", "set", "users", 7, None, ()),
        Measurement("info", "counter", "misses", 2, None, (), 4.0),
        Measurement("info", "counter", "ratio", 0.5, None, ()),
    ]
    z.measurements.assert_histogram("response.size", count=1, unit="bytes")
    z.measurements.assert_set("users", members={"u-1", 7})
    z.measurements.assert_counted("misses", total=8.0)  # value x weight, as a worker counts it
    with pytest.raises(AssertionError, match="units"):
        z.measurements.assert_histogram("response.size", unit="kB")
    with pytest.raises(AssertionError, match="members"):
        z.measurements.assert_set("users", members={"u-1"})
