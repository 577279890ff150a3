"""The client against a real ZeroMQ PULL socket standing in for the broker (see conftest.py)."""

from __future__ import annotations

import asyncio
import collections
import inspect
import math
import multiprocessing
import os
import subprocess
import sys
import textwrap
import threading
import time
import traceback

import pytest
from expecter import expect

import zibrato.client
import zibrato.instruments
import zibrato.sender
from conftest import Flat, select, values_of, wait_until
from zibrato import Zibrato
from zibrato.testing import client_parts

# Timed code waits on an Event with a timeout: a wait on a condition, never a sleep.
WAIT = 0.05
CLOCK_SLACK = 1e-3  # clock granularity; the point is "about WAIT", not "about 0"


def pause(seconds: float = WAIT) -> None:
    threading.Event().wait(seconds)


# --- the instruments ------------------------------------------------------------


def test_direct_calls_produce_exact_records(broker_pull, make_client):
    z = make_client()
    z.count("info", "signups")
    z.count("info", "signups", 3)
    z.gauge("debug", "queue.depth", 0)
    z.gauge("debug", "queue.depth", -2.5)
    z.timing("info", "db.query", 0.125)

    records = broker_pull.settle(z)

    expect(sorted(records)) == sorted(
        [
            Flat("info", "c", "signups", 1, None, ()),
            Flat("info", "c", "signups", 3, None, ()),
            Flat("debug", "g", "queue.depth", 0, None, ()),
            Flat("debug", "g", "queue.depth", -2.5, None, ()),
            Flat("info", "t", "db.query", 0.125, None, ()),
        ]
    )
    # values of one series keep their order
    expect(values_of(records, "queue.depth")) == [0, -2.5]


def test_gauge_of_zero_is_sent_as_zero(broker_pull, make_client):
    z = make_client()
    z.gauge("info", "zero", 0)
    z.gauge("info", "zero.float", 0.0)

    records = broker_pull.settle(z)

    expect(values_of(records, "zero")) == [0]
    expect(values_of(records, "zero.float")) == [0.0]


def test_integers_beyond_64_bits_travel_as_floats_and_lose_nothing_else(broker_pull, make_client):
    z = make_client()
    z.count("info", "big", 2**64)  # msgpack carries -2**63 .. 2**64-1 as integers
    z.count("info", "big", 2**64 - 1)
    z.gauge("info", "small", -(2**63) - 1)
    z.count("info", "ordinary", 3)

    records = broker_pull.settle(z)

    expect(values_of(records, "big")) == [float(2**64), 2**64 - 1]
    expect(values_of(records, "small")) == [float(-(2**63) - 1)]
    expect(values_of(records, "ordinary")) == [3]
    expect(z.dropped) == 0


def test_a_message_over_the_size_limit_is_split_so_the_broker_takes_it(broker_pull, make_client):
    z = make_client(max_message_size=4096)
    tags = [f"tag{i}:{'v' * 40}" for i in range(20)]  # about 1 kB of tags per record
    for i in range(50):
        z.count("info", f"wide.{i}", i, tags=tags)
    z.timing("info", "many.values", 0.5)
    for _ in range(2000):  # 2000 values of one series: about 18 kB in one record
        z.timing("info", "many.values", 0.25)

    records = broker_pull.settle(z)

    expect(sorted(r.value for r in records if r.name.startswith("wide."))) == list(range(50))
    expect(len(values_of(records, "many.values"))) == 2001
    expect(max(len(frame) for frame in broker_pull.frames)) <= 4096
    expect(z.dropped) == 0


def test_a_measurement_too_large_for_any_message_is_dropped_and_counted(broker_pull, make_client):
    z = make_client(max_message_size=4096)
    huge_tags = [f"t{i}:{'x' * 200}" for i in range(60)]  # 12 kB of tags: no split can help
    z.count("info", "too.wide", 1, tags=huge_tags)
    z.count("info", "fits", 1)

    records = broker_pull.settle(z)

    expect(select(records, "too.wide")) == []
    expect(values_of(records, "fits")) == [1]
    expect(z.dropped) == 1


def test_decorators_and_context_managers_record_their_types(broker_pull, make_client):
    z = make_client()

    @z.time_me("info", "timed.function")
    def timed():
        return "t"

    @z.count_me("warn", "counted.function")
    def counted():
        return "c"

    expect(timed()) == "t"
    expect(counted()) == "c"
    with z.Time_me("info", "timed.block"):
        pass
    with z.Count_me("info", "counted.block", value=4):
        pass

    records = broker_pull.settle(z)

    expect(len(records)) == 4
    [t_fn] = select(records, "timed.function")
    expect((t_fn.level, t_fn.type, t_fn.source, t_fn.tags)) == ("info", "t", None, ())
    expect(select(records, "counted.function")) == [Flat("warn", "c", "counted.function", 1, None, ())]
    [t_block] = select(records, "timed.block")
    expect((t_block.level, t_block.type)) == ("info", "t")
    expect(select(records, "counted.block")) == [Flat("info", "c", "counted.block", 4, None, ())]


def test_count_me_adds_its_value_per_call(broker_pull, make_client):
    z = make_client()

    @z.count_me("info", "bytes", value=4)
    def work():
        pass

    for _ in range(3):
        work()

    expect(values_of(broker_pull.settle(z), "bytes")) == [4, 4, 4]


def test_client_source_and_tags_apply_and_per_call_ones_override_and_merge(broker_pull, make_client):
    z = make_client(source="web-1", tags={"env": "prod", "region": "eu"})

    z.count("info", "plain")
    z.count("info", "other.source", source="worker-7")
    z.count("info", "more.tags", tags=["role:api", "env:prod"])
    z.gauge("info", "mapping.tags", 1, tags={"shard": 3})

    @z.time_me("info", "decorated", source="cron", tags=["job:nightly"])
    def job():
        pass

    job()
    with z.Count_me("info", "block", tags=("step:load",)):
        pass

    by_name = {r.name: r for r in broker_pull.settle(z)}

    expect((by_name["plain"].source, by_name["plain"].tags)) == ("web-1", ("env:prod", "region:eu"))
    expect((by_name["other.source"].source, by_name["other.source"].tags)) == ("worker-7", ("env:prod", "region:eu"))
    expect(by_name["more.tags"].tags) == ("env:prod", "region:eu", "role:api")
    expect(by_name["mapping.tags"].tags) == ("env:prod", "region:eu", "shard:3")
    expect((by_name["decorated"].source, by_name["decorated"].tags)) == (
        "cron",
        ("env:prod", "job:nightly", "region:eu"),
    )
    expect((by_name["block"].source, by_name["block"].tags)) == ("web-1", ("env:prod", "region:eu", "step:load"))


def test_decorators_keep_the_function_identity(make_client):
    z = make_client()

    def original(a, b=2):
        """Adds."""
        return a + b

    for decorate in (z.time_me("info", "x"), z.count_me("info", "x"), z.Time_me("info", "x"), z.Count_me("info", "x")):
        wrapped = decorate(original)
        expect(wrapped.__name__) == "original"
        expect(wrapped.__doc__) == "Adds."
        expect(wrapped.__wrapped__ is original) == True
        expect(wrapped(1, b=5)) == 6


def test_decorated_async_function_is_still_a_coroutine_function(make_client):
    z = make_client()

    async def fetch():
        return 1

    expect(inspect.iscoroutinefunction(z.time_me("info", "x")(fetch))) == True
    expect(inspect.iscoroutinefunction(z.count_me("info", "x")(fetch))) == True


def test_decorated_methods_receive_self(broker_pull, make_client):
    z = make_client()

    class Shop:
        def __init__(self):
            self.orders = []

        @z.time_me("info", "shop.order")
        def order(self, item):
            self.orders.append(item)
            return len(self.orders)

        @z.count_me("info", "shop.refund")
        def refund(self):
            return self.orders.pop()

    shop = Shop()
    expect(shop.order("tea")) == 1
    expect(shop.order("cake")) == 2
    expect(shop.refund()) == "cake"
    expect(shop.orders) == ["tea"]

    records = broker_pull.settle(z)
    expect(len(select(records, "shop.order"))) == 2
    expect(values_of(records, "shop.refund")) == [1]


# --- timers ---------------------------------------------------------------------------


def test_timer_records_seconds_from_perf_counter(broker_pull, make_client, monkeypatch):
    z = make_client()
    expect(zibrato.instruments._perf_counter is time.perf_counter) == True  # the clock timers read...
    clock = iter([100.0, 100.25, 200.0, 203.5])  # ...replaced by a fake one
    monkeypatch.setattr(zibrato.instruments, "_perf_counter", lambda: next(clock))

    @z.time_me("info", "fake.clock.function")
    def work():
        pass

    work()
    with z.Time_me("info", "fake.clock.block"):
        pass

    records = broker_pull.settle(z)
    expect(values_of(records, "fake.clock.function")) == [0.25]
    expect(values_of(records, "fake.clock.block")) == [3.5]


def test_timer_measures_real_elapsed_seconds(broker_pull, make_client):
    z = make_client()

    @z.time_me("info", "waits")
    def waits():
        pause()

    waits()
    with z.Time_me("info", "waits.block"):
        pause()

    records = broker_pull.settle(z)
    for name in ("waits", "waits.block"):
        [elapsed] = values_of(records, name)
        expect(elapsed) >= WAIT - CLOCK_SLACK
        expect(elapsed) < 5  # seconds, not milliseconds


def test_timer_records_when_the_function_raises_and_the_exception_propagates_untouched(broker_pull, make_client):
    z = make_client()
    error = KeyError("boom")

    @z.time_me("info", "fails")
    def fails():
        pause()
        raise error

    with pytest.raises(KeyError) as raised:
        fails()
    expect(raised.value is error) == True

    with pytest.raises(KeyError) as raised:
        with z.Time_me("info", "fails.block"):
            raise error
    expect(raised.value is error) == True

    records = broker_pull.settle(z)
    [elapsed] = values_of(records, "fails")
    expect(elapsed) >= WAIT - CLOCK_SLACK
    expect(len(select(records, "fails.block"))) == 1


def test_counter_counts_when_the_function_raises(broker_pull, make_client):
    z = make_client()
    error = RuntimeError("nope")

    @z.count_me("info", "fails.count")
    def fails():
        raise error

    with pytest.raises(RuntimeError) as raised:
        fails()
    expect(raised.value is error) == True

    expect(values_of(broker_pull.settle(z), "fails.count")) == [1]


def test_async_function_is_timed_over_the_awaited_run(broker_pull, make_client):
    z = make_client()

    @z.time_me("info", "async.sleeps")
    async def sleeps():
        await asyncio.sleep(WAIT)
        return "slept"

    expect(asyncio.run(sleeps())) == "slept"

    async def block():
        async with z.Time_me("info", "async.block"):
            await asyncio.sleep(WAIT)

    asyncio.run(block())

    records = broker_pull.settle(z)
    [elapsed] = values_of(records, "async.sleeps")
    expect(elapsed) >= WAIT - CLOCK_SLACK  # timing the coroutine's creation would give ~0
    expect(elapsed) < 5
    [elapsed] = values_of(records, "async.block")
    expect(elapsed) >= WAIT - CLOCK_SLACK


def test_a_callable_object_with_an_async_call_is_timed_over_the_awaited_run(broker_pull, make_client):
    z = make_client()

    class Handler:
        async def __call__(self, reply):
            await asyncio.sleep(WAIT)
            return reply

    handler = z.time_me("info", "async.callable")(Handler())

    expect(asyncio.run(handler("done"))) == "done"

    [elapsed] = values_of(broker_pull.settle(z), "async.callable")
    expect(elapsed) >= WAIT - CLOCK_SLACK  # not the ~0 of creating the coroutine


def test_async_function_raising_is_timed_and_the_exception_propagates(broker_pull, make_client):
    z = make_client()
    error = ValueError("bad")

    @z.time_me("info", "async.fails")
    async def fails():
        await asyncio.sleep(WAIT)
        raise error

    with pytest.raises(ValueError) as raised:
        asyncio.run(fails())
    expect(raised.value is error) == True

    [elapsed] = values_of(broker_pull.settle(z), "async.fails")
    expect(elapsed) >= WAIT - CLOCK_SLACK


def test_generator_is_timed_over_the_full_iteration(broker_pull, make_client):
    z = make_client()

    @z.time_me("info", "gen.timed")
    def produce():
        for i in range(3):
            pause(WAIT / 2)
            yield i
        return "done"

    @z.count_me("info", "gen.counted")
    def produce_counted():
        yield from range(5)

    generator = produce()
    expect(z.flush()) == True
    expect(z.sent) == 0  # creating the generator records nothing...
    expect(list(generator)) == [0, 1, 2]
    expect(list(produce_counted())) == [0, 1, 2, 3, 4]

    records = broker_pull.settle(z)
    [elapsed] = values_of(records, "gen.timed")  # ...one measurement, for the whole iteration
    expect(elapsed) >= 3 * WAIT / 2 - CLOCK_SLACK
    expect(values_of(records, "gen.counted")) == [1]


def test_a_generator_left_early_is_an_ok_outcome(broker_pull, make_client):
    z = make_client()

    @z.time_me("info", "gen.early", outcome=True)
    def produce():
        yield from range(10)

    generator = produce()
    expect(next(generator)) == 0
    generator.close()  # the caller stopped iterating: GeneratorExit, not a failure

    [record] = select(broker_pull.settle(z), "gen.early")
    expect(record.tags) == ("outcome:ok",)


# --- outcome tags --------------------------------------------------------------------


def test_outcome_tags_sync_timers_and_counters(broker_pull, make_client):
    z = make_client(tags=["env:test"])

    @z.time_me("info", "op.time", outcome=True)
    @z.count_me("info", "op.count", outcome=True)
    def op(fail):
        if fail:
            raise ValueError("failed")
        return "ok"

    expect(op(False)) == "ok"
    with pytest.raises(ValueError):
        op(True)
    with z.Time_me("info", "block.time", outcome=True):
        pass
    with pytest.raises(ValueError):
        with z.Count_me("info", "block.count", outcome=True):
            raise ValueError

    records = broker_pull.settle(z)
    ok = ("env:test", "outcome:ok")
    error = ("env:test", "error:ValueError", "outcome:error")
    for name in ("op.time", "op.count"):
        expect(sorted(r.tags for r in select(records, name))) == sorted([ok, error])
    expect([r.tags for r in select(records, "block.time")]) == [ok]
    expect([r.tags for r in select(records, "block.count")]) == [error]


def test_outcome_tags_async_timers_and_counters(broker_pull, make_client):
    z = make_client()

    @z.time_me("info", "aop.time", outcome=True)
    @z.count_me("info", "aop.count", outcome=True)
    async def op(fail):
        await asyncio.sleep(0)
        if fail:
            raise ValueError("failed")
        return "ok"

    expect(asyncio.run(op(False))) == "ok"
    with pytest.raises(ValueError):
        asyncio.run(op(True))

    records = broker_pull.settle(z)
    for name in ("aop.time", "aop.count"):
        expect(sorted(r.tags for r in select(records, name))) == sorted(
            [("outcome:ok",), ("error:ValueError", "outcome:error")]
        )


def test_without_outcome_no_outcome_tags(broker_pull, make_client):
    z = make_client()

    @z.count_me("info", "plain")
    def fails():
        raise ValueError

    with pytest.raises(ValueError):
        fails()

    expect([r.tags for r in select(broker_pull.settle(z), "plain")]) == [()]


# --- misuse raises at once ---------------------------------------------------------------

MISUSE = {
    "level None": (ValueError, lambda z: z.time_me(None, "x")),
    "level empty": (ValueError, lambda z: z.time_me("", "x")),
    "level with a space": (ValueError, lambda z: z.count_me("in fo", "x")),
    "level with a comma": (ValueError, lambda z: z.Time_me("a,b", "x")),
    "level with a NUL": (ValueError, lambda z: z.Count_me("info\x00", "x")),
    "level too long": (ValueError, lambda z: z.time_me("l" * 65, "x")),
    "level not a string": (ValueError, lambda z: z.count(b"info", "x")),
    "level missing": (TypeError, lambda z: z.time_me(name="x")),
    "name empty": (ValueError, lambda z: z.time_me("info", "")),
    "name None": (ValueError, lambda z: z.count_me("info", None)),
    "name too long": (ValueError, lambda z: z.time_me("info", "n" * 256)),
    "name with NUL": (ValueError, lambda z: z.time_me("info", "a\x00b")),
    "name with newline": (ValueError, lambda z: z.count_me("info", "a\nb")),
    "name not UTF-8 encodable": (ValueError, lambda z: z.time_me("info", "a\ud800")),
    "source empty": (ValueError, lambda z: z.time_me("info", "x", source="")),
    "count_me value a string": (TypeError, lambda z: z.count_me("info", "x", value="1")),
    "Count_me value NaN": (ValueError, lambda z: z.Count_me("info", "x", value=math.nan)),
    "count_me value inf": (ValueError, lambda z: z.count_me("info", "x", value=math.inf)),
    "count_me value a bool": (TypeError, lambda z: z.count_me("info", "x", value=True)),
    "count value None": (TypeError, lambda z: z.count("info", "x", None)),
    "gauge value a string": (TypeError, lambda z: z.gauge("x", "y", "3")),
    "gauge value NaN": (ValueError, lambda z: z.gauge("info", "x", float("nan"))),
    "timing negative": (ValueError, lambda z: z.timing("info", "x", -0.001)),
    "timing NaN": (ValueError, lambda z: z.timing("info", "x", math.nan)),
    "tags one string": (TypeError, lambda z: z.time_me("info", "x", tags="env:prod")),
    "tags one string on a direct call": (TypeError, lambda z: z.count("info", "x", tags="env:prod")),
    "tag empty": (ValueError, lambda z: z.count_me("info", "x", tags=[""])),
    "tag with newline": (ValueError, lambda z: z.count("info", "x", tags=["a\nb"])),
    "tag without a key": (ValueError, lambda z: z.count("info", "x", tags=[":prod"])),
    "tag not a string": (ValueError, lambda z: z.count("info", "x", tags=[3])),
    "65 tags": (ValueError, lambda z: z.count_me("info", "x", tags=[f"t:{i}" for i in range(65)])),
    "integer beyond any float": (ValueError, lambda z: z.count("info", "x", 10**400)),
}


@pytest.mark.parametrize("error, misuse", MISUSE.values(), ids=MISUSE.keys())
def test_misuse_raises_at_once_and_records_nothing(error, misuse, make_client):
    z = make_client()

    with pytest.raises(error):
        misuse(z)  # decorators raise here, before any function is decorated

    expect(z.flush()) == True
    expect((z.sent, z.dropped)) == (0, 0)


def test_longest_valid_name_and_level_are_accepted(broker_pull, make_client):
    z = make_client()
    z.count("l" * 64, "n" * 255)

    expect(len(select(broker_pull.settle(z), "n" * 255, level="l" * 64))) == 1


@pytest.mark.parametrize("port", [0, -1, 65536, "http", "", 1.5j])
def test_invalid_port_raises_at_construction(port):
    with pytest.raises(ValueError):
        Zibrato(port=port)


@pytest.mark.parametrize(
    "option",
    [
        {"interval": 0},
        {"hwm": 0},
        {"batch": 0},
        {"linger": -1},
        {"max_queue": 0},
        {"max_buffer_bytes": 1000},
        {"max_message_size": 100},
    ],
)
def test_invalid_options_raise_at_construction(option):
    with pytest.raises(ValueError):
        Zibrato(**option)


def test_invalid_client_source_or_tags_raise_at_construction():
    with pytest.raises(ValueError):
        Zibrato(source="a\nb")
    with pytest.raises(TypeError):
        Zibrato(tags="env:prod")


def test_environment_chooses_host_and_port(broker_pull, make_client, monkeypatch):
    monkeypatch.setenv("ZIBRATO_HOST", "127.0.0.1")
    monkeypatch.setenv("ZIBRATO_PORT", str(broker_pull.port))

    z = make_client(port=None)
    expect((z.host, z.port, z.endpoint)) == ("127.0.0.1", broker_pull.port, f"tcp://127.0.0.1:{broker_pull.port}")
    z.count("info", "via.environment")
    expect(values_of(broker_pull.settle(z), "via.environment")) == [1]

    monkeypatch.setenv("ZIBRATO_HOST", "metrics.example")
    expect(Zibrato().host) == "metrics.example"


def test_arguments_win_over_the_environment(broker_pull, make_client, monkeypatch, unused_port):
    monkeypatch.setenv("ZIBRATO_HOST", "metrics.example")
    monkeypatch.setenv("ZIBRATO_PORT", str(unused_port))

    z = make_client(host="127.0.0.1", port=broker_pull.port)
    z.count("info", "via.arguments")

    expect(values_of(broker_pull.settle(z), "via.arguments")) == [1]


def test_an_empty_environment_port_means_the_default(monkeypatch):
    monkeypatch.setenv("ZIBRATO_PORT", "")
    expect(Zibrato().port) == zibrato.client.DEFAULT_PORT


def test_invalid_environment_port_raises(monkeypatch):
    monkeypatch.setenv("ZIBRATO_PORT", "not-a-port")
    with pytest.raises(ValueError):
        Zibrato()


# --- never blocks, never raises -------------------------------------------------------------


def test_no_broker_never_blocks_and_counts_what_it_drops(unused_port):
    z = Zibrato(port=unused_port, hwm=5, batch=10, linger=0.2)

    def record():
        for i in range(10_000):
            z.count("info", "nobody.listens", i % 7)

    # In a thread, so that a blocking client fails this test instead of hanging it.
    recorder = threading.Thread(target=record, daemon=True)
    started = time.monotonic()
    recorder.start()
    recorder.join(5)
    expect(recorder.is_alive()) == False
    expect(time.monotonic() - started) < 5

    expect(z.flush(timeout=2)) == True
    expect(z.dropped) > 0
    expect(z.sent + z.dropped) == 10_000

    started = time.monotonic()
    z.close()
    expect(time.monotonic() - started) < z.linger + 0.5
    expect([t for t in threading.enumerate() if getattr(t, "buffer", None) is client_parts(z).buffer]) == []


def test_a_sender_thread_that_cannot_start_drops_counts_and_retries(broker_pull, make_client, monkeypatch):
    z = make_client()

    def no_threads_left(self):
        raise RuntimeError("can't start new thread")

    monkeypatch.setattr(zibrato.sender.Sender, "start", no_threads_left)
    z.count("info", "lost")  # must not raise into the application
    expect(z.dropped) == 1
    monkeypatch.undo()
    z.count("info", "kept")

    records = broker_pull.settle(z)

    expect(values_of(records, "kept")) == [1]
    expect(select(records, "lost")) == []
    expect(z.dropped) == 1


def test_unresolvable_host_never_raises(unused_port):
    z = Zibrato(host="no-such-host.invalid", port=unused_port, linger=0.1)
    z.count("info", "x")
    expect(z.flush(timeout=2)) == True
    z.close()
    expect(z.sent + z.dropped) == 1


# --- delivery across broker restarts ---------------------------------------------------------


def established_connections_to(port: int) -> int:
    """Client-side TCP connections to ``port`` that are still open (ESTABLISHED or CLOSE_WAIT)."""
    count = 0
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            with open(table) as lines:
                next(lines)
                for line in lines:
                    _, _, remote, state = line.split()[:4]
                    if int(remote.rsplit(":", 1)[1], 16) == port and state in ("01", "08"):
                        count += 1
        except FileNotFoundError:
            continue
    return count


@pytest.mark.skipif(not os.path.exists("/proc/net/tcp"), reason="needs Linux /proc/net/tcp")
def test_broker_restart_within_the_buffering_window_loses_nothing(broker_pull, make_client):
    z = make_client()
    for i in range(10):
        z.count("info", "before.restart", i)
    expect(values_of(broker_pull.settle(z), "before.restart")) == list(range(10))

    broker_pull.close()
    # "Down" means the client has seen its connection go (else bytes already
    # written to the dying connection are lost in the kernel, not by Zibrato).
    wait_until(
        lambda: established_connections_to(broker_pull.port) == 0,
        message="the client to notice that the broker is gone",
    )

    n = 500
    for i in range(n):
        z.count("info", "while.down", i)
        if i % 100 == 0:
            expect(z.flush()) == True  # several messages, not just one
    expect(z.flush()) == True
    expect(z.dropped) == 0

    broker_pull.bind()  # a new PULL socket on the same port
    received = broker_pull.receive_count(n, "while.down")
    expect(sorted(r.value for r in received)) == list(range(n))
    expect(len(select(broker_pull.settle(z), "while.down"))) == n  # and no duplicates
    expect(z.dropped) == 0


# --- threads ---------------------------------------------------------------------------------


@pytest.fixture
def frequent_thread_switches():
    """Switch threads far more often than every 5 ms: races show up in a short test."""
    previous = sys.getswitchinterval()
    sys.setswitchinterval(1e-5)
    yield
    sys.setswitchinterval(previous)


def test_threads_lose_and_duplicate_nothing(broker_pull, make_client, frequent_thread_switches):
    # Drains often, while the threads record; a queue that holds them all (the bound has its own test).
    z = make_client(interval=0.001, max_queue=1_000_000)
    threads, counts, timed_calls = 8, 20_000, 500
    start = threading.Barrier(threads)

    def worker(n):
        tags = (f"thread:{n}",)

        @z.time_me("info", "threads.timed", tags=tags)
        def timed():
            pass

        start.wait()
        for i in range(counts):
            z.count("info", "threads.count", n + 1, tags=tags)
            if i % (counts // timed_calls) == 0:
                timed()

    pool = [threading.Thread(target=worker, args=(n,)) for n in range(threads)]
    for thread in pool:
        thread.start()
    # generous: 160,000 calls switching threads every 10 us, under coverage's tracer on a loaded
    # 2-core machine, once took longer than 10 s (what is asserted is the count, not the speed)
    deadline = time.monotonic() + 120
    for thread in pool:
        thread.join(max(0.0, deadline - time.monotonic()))
        expect(thread.is_alive()) == False

    by_series = collections.defaultdict(list)
    for record in broker_pull.settle(z):
        by_series[record.name, record.tags].append(record.value)
    expect(len(by_series)) == 2 * threads
    for n in range(threads):
        tags = (f"thread:{n}",)
        counted = by_series["threads.count", tags]
        expect(len(counted)) == counts
        expect(sum(counted)) == counts * (n + 1)
        expect(len(by_series["threads.timed", tags])) == timed_calls
    expect(z.dropped) == 0


# --- fork ------------------------------------------------------------------------------------


def wait_for_child(pid: int, timeout: float = 10) -> int:
    deadline = time.monotonic() + timeout
    while True:
        done, status = os.waitpid(pid, os.WNOHANG)
        if done:
            return os.waitstatus_to_exitcode(status)
        if time.monotonic() > deadline:
            os.kill(pid, 9)
            os.waitpid(pid, 0)
            pytest.fail("the forked child did not finish")
        time.sleep(0.005)


def test_fork_parent_and_child_each_deliver_exactly_once(broker_pull, make_client):
    # interval=60: only flush() and close() drain, so what is pending at fork stays pending.
    z = make_client(interval=60, tags=["who:parent"])
    z.count("info", "fork.before")
    expect(z.flush()) == True  # the parent's sender and socket exist before fork
    for i in range(10):
        z.count("info", "fork.pending", i)  # not flushed: the child inherits a copy

    report_read, report_write = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: never return into pytest
        status = 1
        try:
            os.close(report_read)
            for i in range(5):
                z.count("info", "fork.child", i, tags=["who:child"])
            z.flush()
            z.gauge("info", "fork.child.done", 1, tags=["who:child"])
            z.close()
            report = f"{z.sent} {z.dropped}"
            status = 0
        except BaseException:
            report = traceback.format_exc()
        finally:
            try:
                os.write(report_write, report.encode())
            finally:
                os._exit(status)
    os.close(report_write)
    for i in range(7):
        z.count("info", "fork.after", i)
    expect(wait_for_child(pid)) == 0
    with os.fdopen(report_read) as child_report:
        expect(child_report.read()) == "6 0"  # the child sent its own 6, not the parent's pending

    broker_pull.settle(z)  # everything the parent sent, in order on its connection
    broker_pull.receive_count(1, "fork.child.done")  # and everything the child sent, on its own
    records = broker_pull.measurements()

    expect(values_of(records, "fork.before")) == [1]
    expect(sorted(values_of(records, "fork.pending"))) == list(range(10))
    expect(sorted(values_of(records, "fork.after"))) == list(range(7))
    expect(sorted(values_of(records, "fork.child"))) == list(range(5))
    expect({r.tags for r in select(records, "fork.child")}) == {("who:child", "who:parent")}
    expect(values_of(records, "fork.child.done")) == [1]


def test_multiprocessing_fork_child_delivers_without_close(broker_pull, make_client):
    # interval=60: the child's sender never drains on its own; only the exit finalizer does.
    z = make_client(interval=60)
    z.count("info", "mp.parent")
    expect(z.flush()) == True

    def child():
        for i in range(5):
            z.count("info", "mp.child", i)
        # returns normally: no flush(), no close()

    process = multiprocessing.get_context("fork").Process(target=child)
    process.start()
    process.join(10)
    if process.is_alive():
        process.kill()
        pytest.fail("the multiprocessing child did not finish")
    expect(process.exitcode) == 0

    received = broker_pull.receive_count(5, "mp.child")
    expect(sorted(r.value for r in received)) == list(range(5))
    broker_pull.settle(z)
    expect(sorted(values_of(broker_pull.measurements(), "mp.child"))) == list(range(5))


# --- promptness, exit, close, flush --------------------------------------------------------------


def test_a_single_measurement_arrives_promptly_without_flush(broker_pull, make_client):
    z = make_client()
    started = time.monotonic()
    z.gauge("info", "prompt", 42)  # no flush(), no close(): the 50 ms sender delivers it

    received = broker_pull.receive_count(1, "prompt", timeout=1.0)

    expect([r.value for r in received]) == [42]
    expect(z.interval) <= 0.1
    expect(time.monotonic() - started) < 0.3  # "within about 100 ms", with room for a busy CI


def test_measurements_are_delivered_at_normal_interpreter_exit(broker_pull):
    code = textwrap.dedent(f"""
        from zibrato import Zibrato
        z = Zibrato(port={broker_pull.port}, tags=["via:exit"])

        @z.count_me("info", "exit.decorated")
        def work():
            pass

        z.count("info", "exit.first", 1)
        z.flush()  # a message already sent before exit: ZeroMQ's exit hooks are set up by now
        for i in range(100):
            z.count("info", "exit.count", i)
        work()
        z.gauge("info", "exit.gauge", 7)
        # no flush(), no close(): atexit must deliver
    """)
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=20)
    expect(result.returncode) == 0
    expect(result.stderr) == ""

    broker_pull.receive_until(lambda records: len(records) >= 103, what="the exiting process")
    records = broker_pull.records
    expect(sorted(values_of(records, "exit.count"))) == list(range(100))
    expect(values_of(records, "exit.decorated")) == [1]
    expect(values_of(records, "exit.gauge")) == [7]
    expect(values_of(records, "exit.first")) == [1]
    expect({r.tags for r in records}) == {("via:exit",)}


def test_close_delivers_then_counts_later_measurements_as_dropped(broker_pull, make_client):
    z = make_client(interval=60)  # nothing but close() drains
    for i in range(3):
        z.count("info", "before.close", i)

    z.close()
    z.count("info", "after.close")
    z.gauge("info", "after.close", 1)

    @z.time_me("info", "after.close.timed")
    def late():
        pass

    late()

    expect((z.sent, z.dropped)) == (3, 3)
    received = broker_pull.receive_count(3, "before.close")
    expect(sorted(r.value for r in received)) == [0, 1, 2]
    expect(z.flush()) == True
    z.close()  # twice is harmless
    expect([t for t in threading.enumerate() if getattr(t, "buffer", None) is client_parts(z).buffer]) == []


def test_close_does_not_drop_what_was_recorded_during_a_drain(broker_pull, make_client, monkeypatch):
    """A measurement recorded while the sender is draining, just before close(), is still sent."""
    z = make_client()
    in_drain = threading.Event()
    encode = zibrato.protocol.encode

    def slow_encode(*args):
        sender = threading.current_thread()
        if not in_drain.is_set():
            in_drain.set()
            wait_until(lambda: sender._stopping, message="close() to stop the sender")
        return encode(*args)

    monkeypatch.setattr(zibrato.protocol, "encode", slow_encode)
    z.count("info", "drained.first")
    assert in_drain.wait(5), "the sender never drained"
    z.count("info", "recorded.during.drain")  # after the drain took its snapshot
    z.close()

    expect((z.sent, z.dropped)) == (2, 0)
    broker_pull.receive_count(1, "recorded.during.drain")


def test_context_manager_closes(broker_pull, make_client):
    with make_client(interval=60) as z:
        z.count("info", "in.block", 5)
    z.count("info", "after.block")

    expect((z.sent, z.dropped)) == (1, 1)
    expect(values_of(broker_pull.receive_count(1, "in.block"), "in.block")) == [5]


def test_flush_returns_true_and_delivers(broker_pull, make_client):
    z = make_client(interval=60)  # the periodic drain never comes: only flush() can deliver
    z.count("info", "flushed", 2)

    expect(z.flush()) == True
    expect(z.sent) == 1
    expect(values_of(broker_pull.receive_count(1, "flushed"), "flushed")) == [2]


def test_flush_before_any_measurement_returns_true(make_client):
    expect(make_client().flush()) == True


def test_async_generator_is_timed_over_its_whole_iteration(broker_pull, make_client):
    z = make_client()

    @z.time_me("info", "agen", outcome=True)
    async def numbers():
        for i in range(3):
            await asyncio.sleep(0.02)
            yield i

    async def consume():
        return [i async for i in numbers()]

    expect(asyncio.run(consume())) == [0, 1, 2]
    expect(numbers.__name__) == "numbers"
    records = broker_pull.settle(z)
    timed = [r for r in records if r.name == "agen"]
    expect(len(timed)) == 1
    expect(timed[0].value >= 0.06) == True  # the iteration, not the creation (~2 µs)
    expect(timed[0].tags) == ("outcome:ok",)


# --- the bound on what the client keeps (issue 11, item 3) ---------------------------------------


def rss_bytes() -> int:
    with open("/proc/self/statm") as statm:
        return int(statm.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


@pytest.mark.skipif(not os.path.exists("/proc/self/statm"), reason="needs Linux /proc")
def test_four_threads_flat_out_stay_within_the_bound_broker_down_then_up(broker_pull, make_client):
    """Queue and ZeroMQ buffer never grow past their bounds; the rest is dropped and counted."""
    broker_pull.close()  # the broker is down while the threads record
    z = make_client(max_queue=40_000, max_buffer_bytes=256 * 1024, max_message_size=64 * 1024)
    threads, calls = 4, 150_000
    recorded = [0] * threads
    highest = {"queued": 0, "held": 0}
    start, stop = threading.Barrier(threads + 1), threading.Event()

    @z.time_me("info", "bound.timed")
    def timed():
        pass

    def record(n):
        start.wait()
        for i in range(calls):
            if i % 2:
                timed()
            else:
                z.count("info", "bound.count", 1, tags=[f"thread:{n}"])
            recorded[n] += 1

    def watch():
        while not stop.is_set():
            highest["queued"] = max(highest["queued"], z.queued)
            highest["held"] = max(highest["held"], client_parts(z).transport.held_bytes)
            stop.wait(0.001)

    rss_before = rss_bytes()
    pool = [threading.Thread(target=record, args=(n,)) for n in range(threads)]
    watcher = threading.Thread(target=watch)
    for thread in pool + [watcher]:
        thread.start()
    start.wait()
    for thread in pool:
        thread.join(60)
        expect(thread.is_alive()) == False
    expect(z.flush(5)) == True
    stop.set()
    watcher.join()
    rss_growth = rss_bytes() - rss_before

    total = threads * calls
    expect(sum(recorded)) == total
    expect(highest["queued"] <= 40_000 + zibrato.sender.SLACK) == True  # appends under way at the switch
    expect(highest["held"] <= 256 * 1024) == True
    expect(z.dropped) > 0
    expect(z.sent + z.dropped) == total  # every measurement either handed to ZeroMQ or counted
    # Unbounded, 600,000 queued measurements are about 54 MB; bounded, the growth stays small.
    expect(rss_growth < 25 * 1024 * 1024) == True

    broker_pull.bind()  # the broker is back: what ZeroMQ held arrives, exactly once
    sent = z.sent
    broker_pull.receive_count(sent, timeout=10)
    expect(len(broker_pull.settle(z, timeout=10))) == sent
    expect(z.dropped) == total - sent


def test_a_full_queue_drops_and_counts_in_every_recording_path(make_client, unused_port):
    z = make_client(port=unused_port, max_queue=10, interval=60)  # the sender never drains by itself

    @z.time_me("info", "full.timed")
    def timed():
        pass

    @z.count_me("info", "full.counted", outcome=True)
    def counted():
        pass

    calls = [
        timed,
        counted,
        lambda: z.count("info", "full.count"),
        lambda: z.gauge("info", "full.gauge", 1),
        lambda: z.timing("info", "full.timing", 0.1),
        lambda: z.histogram("info", "full.h", 5),
        lambda: z.set("info", "full.set", "member"),
        lambda: z.count("info", "full.sampled", rate=1.0),
    ]
    for call in calls:  # the first ten fill the queue
        call()
        call()
    expect(z.queued) == 10
    expect(z.dropped) == 2 * len(calls) - 10
    with z.Time_me("info", "full.block"):
        pass
    expect(z.dropped) == 2 * len(calls) - 9
    expect(z.queued) == 10


# --- one shared Timer, many with-blocks (issue 11, item 18) ------------------------------------------


def test_a_shared_timer_gives_each_with_block_its_own_start(broker_pull, make_client, monkeypatch):
    z = make_client()
    clock = iter([10.0, 11.0, 15.0, 40.0])  # outer starts at 10, inner 11-15, outer ends at 40
    monkeypatch.setattr(zibrato.instruments, "_perf_counter", lambda: next(clock))
    t = z.time_me("info", "shared.timer")

    with t:
        with t:
            pass

    expect(sorted(values_of(broker_pull.settle(z), "shared.timer"))) == [4.0, 30.0]


def test_a_shared_timer_times_blocks_in_threads_independently(broker_pull, make_client):
    z = make_client()
    t = z.time_me("info", "shared.threads")
    long_started, short_done = threading.Event(), threading.Event()

    def long_block():
        with t:
            long_started.set()
            short_done.wait(5)
            pause(0.2)

    def short_block():
        long_started.wait(5)
        with t:
            pass
        short_done.set()

    threads = [threading.Thread(target=long_block), threading.Thread(target=short_block)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(10)

    short, long = sorted(values_of(broker_pull.settle(z), "shared.threads"))
    expect(short) < 0.1  # its own start, not the long block's
    expect(long) >= 0.2 - CLOCK_SLACK


def test_a_shared_timer_in_concurrent_tasks(broker_pull, make_client):
    z = make_client()
    t = z.time_me("info", "shared.tasks")

    async def block(seconds):
        async with t:
            await asyncio.sleep(seconds)

    async def both():
        await asyncio.gather(block(0.2), block(0.01))

    asyncio.run(both())
    short, long = sorted(values_of(broker_pull.settle(z), "shared.tasks"))
    expect(short) < 0.15
    expect(long) >= 0.2 - CLOCK_SLACK


# --- protocol 1.1 kinds: histograms, sets, sample rates, float counters (issue 19) -------------------


def raw_records(broker_pull) -> list:
    """Every record as it arrived on the wire (msgpack-unpacked, no protocol decoder)."""
    import msgpack

    records = []
    for frame in broker_pull.raw_frames:
        level, _, payload = frame.partition(b"\x00")
        version, _time, batch = msgpack.unpackb(payload, raw=False)
        assert version == 1
        records.extend([level.decode(), *record] for record in batch)
    return records


def test_histograms_sets_and_rates_are_encoded_per_protocol_1_1(broker_pull, make_client):
    z = make_client(random=lambda: 0.05)  # every sampled call is kept
    z.histogram("info", "response.size", 5120, unit="bytes", source="api")
    z.histogram("info", "response.size", 880, unit="bytes", source="api")
    z.histogram("info", "queue.wait", -2.5)
    z.set("info", "users.active", "u-17")
    z.set("info", "users.active", 99)
    z.count("info", "cache.miss", 1, rate=0.1)
    z.count("info", "cache.miss", 1)  # same name, another rate: another record
    z.count("info", "bytes.ratio", 0.25)  # floats stay floats
    z.timing("info", "db", 0.5, rate=0.5)
    z.histogram("info", "rows", 7, unit="rows", rate=0.25)

    broker_pull.settle(z, raw=True)
    records = {(r[2], tuple(r[6:])): r for r in raw_records(broker_pull) if r[2] != "zibrato.test.sentinel"}
    expect(records[("response.size", (None, "bytes"))]) == [
        "info",
        "h",
        "response.size",
        [5120, 880],
        "api",
        [],
        None,
        "bytes",
    ]
    expect(records[("queue.wait", ())]) == ["info", "h", "queue.wait", [-2.5], None, []]
    expect(records[("users.active", ())]) == ["info", "s", "users.active", ["u-17", 99], None, []]
    expect(records[("cache.miss", (10.0,))]) == ["info", "c", "cache.miss", [1], None, [], 10.0]
    expect(records[("cache.miss", ())]) == ["info", "c", "cache.miss", [1], None, []]
    expect(records[("bytes.ratio", ())][3]) == [0.25]
    expect(records[("db", (2.0,))]) == ["info", "t", "db", [0.5], None, [], 2.0]
    expect(records[("rows", (4.0, "rows"))]) == ["info", "h", "rows", [7], None, [], 4.0, "rows"]


def test_sampling_keeps_about_rate_of_the_calls_and_weights_them(make_client):
    from zibrato.testing import capture

    draws = iter([0.05, 0.5, 0.09, 0.95] * 25)  # 2 in 4 below rate 0.1? no: 0.05 and 0.09
    z = make_client(random=lambda: next(draws))  # the instruments draw from the client's source too

    @z.count_me("info", "sampled.calls", rate=0.1)
    def call():
        pass

    with capture(z) as seen:
        for _ in range(50):
            call()
        for _ in range(50):
            z.count("info", "sampled.direct", 2, rate=0.1)
    expect(len(seen.find("sampled.calls"))) == 25
    expect({m.weight for m in seen}) == {10.0}
    seen.assert_counted("sampled.direct", total=25 * 2 * 10.0)


RATE_MISUSE = {
    "rate zero": lambda z: z.count("info", "x", rate=0),
    "rate above one": lambda z: z.timing("info", "x", 1, rate=1.5),
    "rate not a number": lambda z: z.time_me("info", "x", rate="0.5"),
    "rate nan": lambda z: z.histogram("info", "x", 1, rate=float("nan")),
    "bad unit": lambda z: z.histogram("info", "x", 1, unit="m s"),
    "unit too long": lambda z: z.histogram("info", "x", 1, unit="u" * 65),
    "histogram nan": lambda z: z.histogram("info", "x", float("nan")),
    "set member a float": lambda z: z.set("info", "x", 1.5),
    "set member empty": lambda z: z.set("info", "x", ""),
    "set member with a newline": lambda z: z.set("info", "x", "a\nb"),
}


@pytest.mark.parametrize("misuse", RATE_MISUSE.values(), ids=RATE_MISUSE.keys())
def test_new_kinds_reject_misuse_at_once(misuse, make_client):
    z = make_client()
    with pytest.raises((ValueError, TypeError)):
        misuse(z)
    expect(z.queued) == 0


def _series(name: str) -> tuple:
    return ("info", "g", name, None, (), None, None)


@pytest.mark.parametrize("pattern", ["runs", "interleaved", "few"])
def test_grouping_keeps_each_series_values_in_recorded_order(pattern):
    """The sender groups by run or by item (sampled); either way a gauge's last value stays last."""
    a, b = _series("a"), _series("b")
    a_again = _series("a")  # equal to a, another object: the same series
    if pattern == "runs":
        items = [(a, i) for i in range(100)] + [(b, i) for i in range(50)] + [(a_again, i) for i in range(100, 130)]
    elif pattern == "interleaved":
        items = [(a if i % 2 else b, i) for i in range(200)]
    else:
        items = [(a, 1), (b, 2), (a_again, 3)]
    grouped = zibrato.sender.group(items)
    expected: dict = {}
    for series, value in items:
        expected.setdefault(series, []).append(value)
    expect(grouped) == expected
    expect(list(grouped)) == list(expected)  # series in order of first appearance


def test_a_drain_raced_by_another_taker_publishes_what_it_popped():
    """close() after a sender that hung may empty the queue mid-drain: nothing popped is lost."""
    from zibrato.testing import MemoryTransport

    tally = zibrato.sender.Tally()
    publisher = zibrato.sender.Publisher(MemoryTransport(), tally, 1000, 1 << 20)
    buffer = zibrato.sender.Buffer(100_000, lambda recorder: None)
    series = _series("raced")
    buffer.items.extend((series, i) for i in range(10))

    class Shrinking(collections.deque):
        def __len__(self):  # the taker saw 20 items; only 10 are there when it pops
            return 20

    buffer.items = Shrinking(buffer.items)
    publisher.drain(buffer)
    expect(tally.sent) == 10


def test_with_time_me_blocks_nest_and_decorate_with_their_own_starts(broker_pull, make_client, monkeypatch):
    # the plain with-block is its own fast class (TimerBlock): it must still nest, and decorate
    z = make_client()
    clock = iter([10.0, 11.0, 15.0, 40.0, 50.0, 52.5])
    monkeypatch.setattr(zibrato.instruments, "_perf_counter", lambda: next(clock))
    with z.Time_me("info", "nested.block"):
        with z.Time_me("info", "nested.block"):
            pass

    @z.Time_me("info", "block.decorates")
    def work():
        return "done"

    expect(work()) == "done"
    records = broker_pull.settle(z)
    expect(sorted(values_of(records, "nested.block"))) == [4.0, 30.0]
    expect(values_of(records, "block.decorates")) == [2.5]
